// PEFT LoRA adapters (adapter_config.json + adapter_model.safetensors) for Llama: load, validate, save atomically.

import { mkdir, readFile, rmdir, stat } from "node:fs/promises";
import { join } from "node:path";
import { z } from "zod";
import { FormatError, fmtShape, zodFormatError } from "./errors.ts";
import { fromFloat32, toFloat32, type HostTensor } from "./host_tensor.ts";
import { isFloat, type HostDType } from "../ir/types.ts";
import { pendingSafetensors, readSafetensors } from "./safetensors.ts";
import { writeAll, writeFilesAtomic } from "./atomic.ts";
import { LINEAR_PATH, LLAMA_LINEARS, linearFeatures, type LlamaConfig, type LlamaLinear } from "./hf_config.ts";
import { stripBom } from "../host/text.ts";

export const ADAPTER_CONFIG_FILE = "adapter_config.json";
export const ADAPTER_WEIGHTS_FILE = "adapter_model.safetensors";
/** The PEFT release whose on-disk format `saveAdapter` writes (recorded as `peft_version`). */
export const PEFT_FORMAT_VERSION = "0.21.0";

export type LoraModule = LlamaLinear;
export const LORA_MODULES = LLAMA_LINEARS;

/** The subset of PEFT's LoraConfig that changes what an adapter computes or where it applies. */
export interface LoraConfig {
  r: number;
  loraAlpha: number;
  loraDropout: number;
  /** Module-name suffixes (PEFT's list form), or one regex matched against full module names, or "all-linear". */
  targetModules: string[] | string;
  excludeModules: string[] | string | null;
  /** Restricts list-form targets to these decoder layers. */
  layersToTransform: number[] | null;
  layersPattern: string | null;
  /** Per-module rank / alpha overrides: pattern -> value, first match in insertion order wins. */
  rankPattern: Record<string, number>;
  alphaPattern: Record<string, number>;
  /** Scale alpha/sqrt(r) instead of alpha/r. */
  useRslora: boolean;
  initLoraWeights: boolean | string;
  baseModelNameOrPath: string | null;
  revision: string | null;
}

/**
 * One LoRA pair in PEFT's orientation, the torch Linear convention: `A` is lora_A.weight [r, in_features],
 * `B` is lora_B.weight [out_features, r], and the layer computes y = x W^T + scale * (x A^T) B^T.
 * Use `loraPairToMatmul` for the [in, r] / [r, out] forms that right-multiply activations.
 */
export interface LoraPair {
  A: HostTensor;
  B: HostTensor;
}

export interface LoraAdapter {
  config: LoraConfig;
  /** Indexed by decoder layer; a module is present exactly when the config targets it in that layer. */
  layers: Array<Partial<Record<LoraModule, LoraPair>>>;
}

/** Where one LoRA pair goes, and its resolved rank, alpha and scale. */
export interface LoraTarget {
  layer: number;
  module: LoraModule;
  /** Full module name in the base model, e.g. `model.layers.0.self_attn.q_proj`. */
  moduleName: string;
  r: number;
  alpha: number;
  scale: number;
  inFeatures: number;
  outFeatures: number;
}

// ---- adapter_config.json ------------------------------------------------------------------------------------------

const stringOrList = z.union([z.string(), z.array(z.string())]);

const configSchema = z
  .object({
    peft_type: z.literal("LORA").optional(),
    task_type: z.string().nullish(),
    r: z.number().int().positive().optional(),
    lora_alpha: z.number().positive().optional(),
    lora_dropout: z.number().min(0).max(1).optional(),
    target_modules: stringOrList.nullish(),
    exclude_modules: stringOrList.nullish(),
    layers_to_transform: z.union([z.number().int().nonnegative(), z.array(z.number().int().nonnegative())]).nullish(),
    layers_pattern: stringOrList.nullish(),
    rank_pattern: z.record(z.string(), z.number().int().positive()).nullish(),
    alpha_pattern: z.record(z.string(), z.number().positive()).nullish(),
    bias: z.string().optional(),
    use_rslora: z.boolean().optional(),
    use_dora: z.boolean().optional(),
    fan_in_fan_out: z.boolean().optional(),
    lora_bias: z.boolean().optional(),
    modules_to_save: z.array(z.string()).nullish(),
    target_parameters: z.array(z.string()).nullish(),
    init_lora_weights: z.union([z.boolean(), z.string()]).optional(),
    base_model_name_or_path: z.string().nullish(),
    revision: z.string().nullish(),
  })
  .loose();

/** PEFT's default targets for Llama when target_modules is null. */
const LLAMA_DEFAULT_TARGETS = ["q_proj", "v_proj"];

/**
 * Options of newer PEFT releases that change what the adapted model computes and that Tessera does not
 * implement: absent, null, false or empty is fine, anything else is refused rather than silently ignored.
 */
const UNSUPPORTED_OPTIONS: Record<string, string> = {
  layer_replication: "layer replication",
  use_qalora: "QA-LoRA",
  trainable_token_indices: "trainable token embeddings",
  alora_invocation_tokens: "activated LoRA (aLoRA)",
};

function isUnset(v: unknown): boolean {
  if (v === undefined || v === null || v === false) return true;
  if (Array.isArray(v)) return v.length === 0;
  return typeof v === "object" && Object.keys(v as object).length === 0;
}

/** Validates parsed adapter_config.json; `file` labels errors. Refuses options whose effect Tessera does not implement. */
export function parseLoraConfig(json: unknown, file = ADAPTER_CONFIG_FILE): LoraConfig {
  const res = configSchema.safeParse(json);
  if (!res.success) throw zodFormatError(file, res.error.issues, json);
  const c = res.data;
  const fail = (field: string, msg: string): never => {
    throw new FormatError(`${file}: field "${field}": ${msg}`, { file });
  };
  if (c.peft_type === undefined) fail("peft_type", `required field is missing (expected "LORA")`);
  if (c.task_type != null && c.task_type !== "CAUSAL_LM") {
    fail("task_type", `expected "CAUSAL_LM" (or null), got ${JSON.stringify(c.task_type)}`);
  }
  if (c.r === undefined) fail("r", "required field is missing (expected a positive integer)");
  if ((c.bias ?? "none") !== "none")
    fail("bias", `expected "none", got ${JSON.stringify(c.bias)}: LoRA bias training is not supported`);
  if (c.use_dora === true) fail("use_dora", "expected false: DoRA adapters are not supported");
  if (c.fan_in_fan_out === true)
    fail("fan_in_fan_out", "expected false: Llama's projections are torch Linear layers, not Conv1D");
  if (c.lora_bias === true) fail("lora_bias", "expected false: lora_B bias is not supported");
  if (c.modules_to_save != null && c.modules_to_save.length > 0) {
    fail(
      "modules_to_save",
      `expected null or []: fully trained extra modules are not supported, got ${JSON.stringify(c.modules_to_save)}`,
    );
  }
  if (c.target_parameters != null && c.target_parameters.length > 0) {
    fail("target_parameters", "expected null: LoRA on raw parameters is not supported");
  }
  for (const [field, what] of Object.entries(UNSUPPORTED_OPTIONS)) {
    if (!isUnset(c[field])) fail(field, `expected null: ${what} is not supported (got ${JSON.stringify(c[field])})`);
  }
  if (c.layers_pattern != null) {
    const pats = Array.isArray(c.layers_pattern) ? c.layers_pattern : [c.layers_pattern];
    if (!pats.includes("layers"))
      fail(
        "layers_pattern",
        `expected "layers" (Llama's decoder list) or null, got ${JSON.stringify(c.layers_pattern)}`,
      );
  }
  // These initialisations change the base weights too; such an adapter is only right on that modified base
  // unless PEFT converted it to plain LoRA when saving (which also resets this field to true).
  const init = c.init_lora_weights;
  if (typeof init === "string" && /^(pissa|olora|corda|loftq)/i.test(init)) {
    fail(
      "init_lora_weights",
      `${JSON.stringify(init)} adapters need the base weights it modified; save it with PEFT's path_initial_model_for_weight_conversion to get a plain LoRA adapter`,
    );
  }
  const checkRegex = (field: string, src: string) => {
    try {
      new RegExp(src);
    } catch (e) {
      fail(field, `not a regular expression this loader understands (${(e as Error).message})`);
    }
  };
  const targets = c.target_modules ?? LLAMA_DEFAULT_TARGETS;
  if (typeof targets === "string") checkRegex("target_modules", targets);
  else if (targets.length === 0) fail("target_modules", "expected at least one module name");
  if (typeof c.exclude_modules === "string") checkRegex("exclude_modules", c.exclude_modules);
  for (const [k] of Object.entries(c.rank_pattern ?? {})) checkRegex(`rank_pattern.${k}`, k);
  for (const [k] of Object.entries(c.alpha_pattern ?? {})) checkRegex(`alpha_pattern.${k}`, k);
  const ltt = c.layers_to_transform;
  return {
    r: c.r!,
    loraAlpha: c.lora_alpha ?? 8,
    loraDropout: c.lora_dropout ?? 0,
    targetModules: typeof targets === "string" ? targets : [...targets],
    excludeModules:
      c.exclude_modules == null
        ? null
        : typeof c.exclude_modules === "string"
          ? c.exclude_modules
          : [...c.exclude_modules],
    layersToTransform: ltt == null ? null : typeof ltt === "number" ? [ltt] : [...ltt],
    layersPattern: c.layers_pattern == null ? null : "layers",
    rankPattern: { ...(c.rank_pattern ?? {}) },
    alphaPattern: { ...(c.alpha_pattern ?? {}) },
    useRslora: c.use_rslora ?? false,
    initLoraWeights: c.init_lora_weights ?? true,
    baseModelNameOrPath: c.base_model_name_or_path ?? null,
    revision: c.revision ?? null,
  };
}

/** A LoraConfig with PEFT's defaults for everything not given. */
export function makeLoraConfig(
  opts: Partial<LoraConfig> & { r: number; targetModules: string[] | string },
): LoraConfig {
  return {
    loraAlpha: 8,
    loraDropout: 0,
    excludeModules: null,
    layersToTransform: null,
    layersPattern: null,
    rankPattern: {},
    alphaPattern: {},
    useRslora: false,
    initLoraWeights: true,
    baseModelNameOrPath: null,
    revision: null,
    ...opts,
  };
}

/** adapter_config.json content with every field PEFT 0.21 needs to load the adapter onto a LlamaForCausalLM. */
export function loraConfigToJson(cfg: LoraConfig): Record<string, unknown> {
  return {
    alpha_pattern: cfg.alphaPattern,
    auto_mapping: null,
    base_model_name_or_path: cfg.baseModelNameOrPath,
    bias: "none",
    exclude_modules: cfg.excludeModules,
    fan_in_fan_out: false,
    inference_mode: true,
    init_lora_weights: cfg.initLoraWeights,
    layers_pattern: cfg.layersPattern,
    layers_to_transform: cfg.layersToTransform,
    lora_alpha: cfg.loraAlpha,
    lora_bias: false,
    lora_dropout: cfg.loraDropout,
    modules_to_save: null,
    peft_type: "LORA",
    peft_version: PEFT_FORMAT_VERSION,
    r: cfg.r,
    rank_pattern: cfg.rankPattern,
    revision: cfg.revision,
    target_modules: cfg.targetModules,
    task_type: "CAUSAL_LM",
    use_dora: false,
    use_rslora: cfg.useRslora,
  };
}

// ---- which modules an adapter targets -----------------------------------------------------------------------------

/** Python's re.fullmatch for the patterns adapters use (JS and Python regex agree on that subset). */
function fullmatch(pattern: string, s: string): boolean {
  return new RegExp(`^(?:${pattern})$`).test(s);
}

/** PEFT's get_pattern_key: the first pattern p (insertion order) with `(.*\.)?(p)$` matching the full module name. */
function patternValue(patterns: Record<string, number>, moduleName: string): number | undefined {
  for (const [p, v] of Object.entries(patterns)) if (fullmatch(`(?:.*\\.)?(?:${p})`, moduleName)) return v;
  return undefined;
}

/** Rank, alpha and scale of the pair on `moduleName`, with rank_pattern/alpha_pattern and rsLoRA applied. */
export function loraParams(cfg: LoraConfig, moduleName: string): { r: number; alpha: number; scale: number } {
  const r = patternValue(cfg.rankPattern, moduleName) ?? cfg.r;
  const alpha = patternValue(cfg.alphaPattern, moduleName) ?? cfg.loraAlpha;
  return { r, alpha, scale: cfg.useRslora ? alpha / Math.sqrt(r) : alpha / r };
}

/** Every module name of a LlamaForCausalLM (`named_modules()`), which is what PEFT matches targets against. */
function llamaModuleNames(numLayers: number): string[] {
  const names = ["model", "model.embed_tokens", "model.layers", "model.norm", "model.rotary_emb", "lm_head"];
  for (let i = 0; i < numLayers; i++) {
    const p = `model.layers.${i}`;
    names.push(
      p,
      `${p}.self_attn`,
      `${p}.mlp`,
      `${p}.mlp.act_fn`,
      `${p}.input_layernorm`,
      `${p}.post_attention_layernorm`,
    );
    for (const m of LORA_MODULES) names.push(`${p}.${LINEAR_PATH[m]}`);
  }
  return names;
}

const LINEAR_NAME = /^model\.layers\.(\d+)\.(self_attn\.[qkvo]_proj|mlp\.(?:gate|up|down)_proj)$/;
const MODULE_BY_PATH = new Map(LORA_MODULES.map((m) => [LINEAR_PATH[m], m]));

function parseLinearName(name: string): { layer: number; module: LoraModule } | undefined {
  const m = LINEAR_NAME.exec(name);
  if (m === null) return undefined;
  return { layer: Number(m[1]), module: MODULE_BY_PATH.get(m[2]!)! };
}

function suffixMatch(entry: string, name: string): boolean {
  return name === entry || name.endsWith(`.${entry}`);
}

function isExcluded(cfg: LoraConfig, name: string): boolean {
  const ex = cfg.excludeModules;
  if (ex === null) return false;
  if (typeof ex === "string") return fullmatch(ex, name);
  return ex.some((e) => suffixMatch(e, name));
}

/**
 * The modules `cfg` puts LoRA pairs on in a Llama of shape `llama`, following PEFT's matching (list entries
 * match whole names or dotted suffixes, a string is a regex over full names; exclude_modules and
 * layers_to_transform then filter). Every list entry must hit something, and only the seven projection
 * layers may be hit: an adapter aimed elsewhere would silently do nothing or need modules Tessera lacks.
 */
export function loraTargets(cfg: LoraConfig, llama: LlamaConfig, file = ADAPTER_CONFIG_FILE): LoraTarget[] {
  const fail = (field: string, msg: string): never => {
    throw new FormatError(`${file}: field "${field}": ${msg}`, { file });
  };
  if (cfg.layersToTransform !== null) {
    for (const l of cfg.layersToTransform) {
      if (l >= llama.numLayers)
        fail(
          "layers_to_transform",
          `layer ${l} is past the model's ${llama.numLayers} layers (0..${llama.numLayers - 1})`,
        );
    }
  }
  const all = llamaModuleNames(llama.numLayers);
  const unsupported = (name: string, field: string): never =>
    fail(
      field,
      `matches module "${name}", which is not a projection LoRA applies to here (supported: ${LORA_MODULES.map((m) => LINEAR_PATH[m].split(".")[1]).join(", ")})`,
    );
  const chosen = new Set<string>();
  // PEFT expands the string "all-linear" into the suffix names of every linear layer but the output head.
  const targets =
    typeof cfg.targetModules === "string" && cfg.targetModules.toLowerCase() === "all-linear"
      ? LORA_MODULES.map((m) => LINEAR_PATH[m].split(".")[1]!)
      : cfg.targetModules;
  if (typeof targets === "string") {
    const hits = all.filter((n) => fullmatch(targets, n) && !isExcluded(cfg, n));
    if (hits.length === 0)
      fail(
        "target_modules",
        `regex ${JSON.stringify(targets)} matches no module of a Llama model (e.g. "model.layers.0.self_attn.q_proj")`,
      );
    for (const n of hits) {
      if (parseLinearName(n) === undefined) unsupported(n, "target_modules");
      chosen.add(n);
    }
  } else {
    for (const entry of targets) {
      const hits = all.filter((n) => suffixMatch(entry, n));
      if (hits.length === 0) {
        fail(
          "target_modules",
          `entry ${JSON.stringify(entry)} matches no module of a Llama model (its projections are q_proj, k_proj, v_proj, o_proj, gate_proj, up_proj, down_proj)`,
        );
      }
      for (const n of hits) {
        if (isExcluded(cfg, n)) continue;
        const lin = parseLinearName(n);
        if (lin === undefined) unsupported(n, "target_modules");
        // PEFT applies layers_to_transform only to suffix matches, not to exact full names.
        if (n !== entry && cfg.layersToTransform !== null && !cfg.layersToTransform.includes(lin!.layer)) continue;
        chosen.add(n);
      }
    }
  }
  const feats = linearFeatures(llama);
  const out: LoraTarget[] = [];
  for (const moduleName of all) {
    if (!chosen.has(moduleName)) continue;
    const { layer, module } = parseLinearName(moduleName)!;
    out.push({
      layer,
      module,
      moduleName,
      ...loraParams(cfg, moduleName),
      inFeatures: feats[module].in,
      outFeatures: feats[module].out,
    });
  }
  return out;
}

// ---- tensor names -------------------------------------------------------------------------------------------------

/** PEFT's saved key, e.g. `base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight`. */
export function peftKey(layer: number, module: LoraModule, which: "A" | "B"): string {
  return `base_model.model.model.layers.${layer}.${LINEAR_PATH[module]}.lora_${which}.weight`;
}

const PEFT_KEY = /^base_model\.model\.(model\.layers\.\d+\.[a-z_]+\.[a-z_]+)\.lora_([AB])\.weight$/;

function keyHint(key: string): string {
  if (key.includes("lora_magnitude_vector")) return " (a DoRA magnitude vector: DoRA is not supported)";
  if (key.includes("lora_embedding")) return " (LoRA on embeddings is not supported)";
  if (key.includes("lm_head")) return " (LoRA on lm_head is not supported)";
  if (key.includes("modules_to_save")) return " (modules_to_save is not supported)";
  if (key.endsWith(".bias")) return " (LoRA biases are not supported)";
  if (/\.lora_[AB]\.[^.]+\.weight$/.test(key)) return " (has an adapter name inside the key; PEFT saves without it)";
  return "";
}

// ---- building and validating the structured form ----------------------------------------------------------------

/**
 * Arranges PEFT-keyed tensors into a LoraAdapter and checks them against `cfg` and `llama`: every key
 * recognised, every layer index in range, every targeted module with both A and B, nothing untargeted,
 * float dtypes, and A [r, in] / B [out, r] with the module's features and the configured (or rank_pattern) rank.
 */
export function adapterFromTensors(
  cfg: LoraConfig,
  tensors: Map<string, HostTensor>,
  llama: LlamaConfig,
  files: { config?: string; weights?: string } = {},
): LoraAdapter {
  const wfile = files.weights ?? ADAPTER_WEIGHTS_FILE;
  const cfile = files.config ?? ADAPTER_CONFIG_FILE;
  const fail = (tensor: string, msg: string): never => {
    throw new FormatError(`${wfile}: tensor "${tensor}": ${msg}`, { file: wfile, tensor });
  };
  const targets = loraTargets(cfg, llama, cfile);
  const byName = new Map(targets.map((t) => [t.moduleName, t]));
  for (const key of tensors.keys()) {
    const m = PEFT_KEY.exec(key);
    const lin = m === null ? undefined : parseLinearName(m[1]!);
    if (m === null || lin === undefined) {
      fail(key, `not a LoRA weight of a Llama projection${keyHint(key)}; expected keys like "${peftKey(0, "q", "A")}"`);
    }
    if (lin!.layer >= llama.numLayers)
      fail(key, `layer ${lin!.layer} is past the model's ${llama.numLayers} layers (0..${llama.numLayers - 1})`);
    if (!byName.has(m![1]!)) {
      fail(key, `module "${m![1]}" is not targeted by ${cfile} (target_modules: ${JSON.stringify(cfg.targetModules)})`);
    }
  }
  const layers: Array<Partial<Record<LoraModule, LoraPair>>> = Array.from({ length: llama.numLayers }, () => ({}));
  for (const t of targets) {
    const kA = peftKey(t.layer, t.module, "A");
    const kB = peftKey(t.layer, t.module, "B");
    const A = tensors.get(kA);
    const B = tensors.get(kB);
    if (A === undefined)
      fail(kA, `missing: ${cfile} targets "${t.moduleName}", which needs lora_A [${t.r}, ${t.inFeatures}]`);
    if (B === undefined)
      fail(kB, `missing: ${cfile} targets "${t.moduleName}", which needs lora_B [${t.outFeatures}, ${t.r}]`);
    checkPair(t, kA, A!, kB, B!, cfg, cfile, fail);
    layers[t.layer]![t.module] = { A: A!, B: B! };
  }
  return { config: cfg, layers };
}

function checkPair(
  t: LoraTarget,
  kA: string,
  A: HostTensor,
  kB: string,
  B: HostTensor,
  cfg: LoraConfig,
  cfile: string,
  fail: (tensor: string, msg: string) => never,
): void {
  const rankSource =
    patternValue(cfg.rankPattern, t.moduleName) !== undefined ? `rank_pattern in ${cfile}` : `r in ${cfile}`;
  for (const [key, x] of [
    [kA, A],
    [kB, B],
  ] as const) {
    if (!isFloat(x.dtype)) fail(key, `dtype ${x.dtype} is not a float type`);
    if (x.shape.length !== 2) fail(key, `expected a 2-D tensor, got shape ${fmtShape(x.shape)}`);
  }
  if (A.shape[0] !== t.r) {
    fail(
      kA,
      `rank ${A.shape[0]} (shape ${fmtShape(A.shape)}) disagrees with ${rankSource}, which gives ${t.r} for "${t.moduleName}"`,
    );
  }
  if (B.shape[1] !== t.r) {
    fail(
      kB,
      `rank ${B.shape[1]} (shape ${fmtShape(B.shape)}) disagrees with ${rankSource}, which gives ${t.r} for "${t.moduleName}"`,
    );
  }
  if (A.shape[1] !== t.inFeatures) {
    fail(kA, `shape ${fmtShape(A.shape)}, expected [${t.r}, ${t.inFeatures}] ([r, in_features] of "${t.moduleName}")`);
  }
  if (B.shape[0] !== t.outFeatures) {
    fail(
      kB,
      `shape ${fmtShape(B.shape)}, expected [${t.outFeatures}, ${t.r}] ([out_features, r] of "${t.moduleName}")`,
    );
  }
}

/** The adapter's tensors under PEFT's key names. */
export function adapterTensors(adapter: LoraAdapter): Map<string, HostTensor> {
  const out = new Map<string, HostTensor>();
  adapter.layers.forEach((layer, i) => {
    for (const m of LORA_MODULES) {
      const p = layer[m];
      if (p === undefined) continue;
      out.set(peftKey(i, m, "A"), p.A);
      out.set(peftKey(i, m, "B"), p.B);
    }
  });
  return out;
}

// ---- files --------------------------------------------------------------------------------------------------------

/** Reads and validates `dir/adapter_config.json` alone. */
export async function loadLoraConfig(dir: string): Promise<LoraConfig> {
  const file = join(dir, ADAPTER_CONFIG_FILE);
  let json: unknown;
  try {
    json = JSON.parse(stripBom(await readFile(file, "utf8")));
  } catch (e) {
    throw new FormatError(`${file}: cannot read adapter config (${(e as Error).message})`, { file, cause: e });
  }
  return parseLoraConfig(json, file);
}

/** Loads a PEFT LoRA adapter directory and validates it against the base model's config. */
export async function loadAdapter(dir: string, llama: LlamaConfig): Promise<LoraAdapter> {
  const config = await loadLoraConfig(dir);
  const weights = join(dir, ADAPTER_WEIGHTS_FILE);
  if ((await stat(weights).catch(() => undefined)) === undefined) {
    const bin = join(dir, "adapter_model.bin");
    const hint = (await stat(bin).catch(() => undefined))
      ? " (found adapter_model.bin: re-save it with safe_serialization=True)"
      : "";
    throw new FormatError(`${weights}: adapter weights not found${hint}`, { file: weights });
  }
  const { tensors } = await readSafetensors(weights);
  return adapterFromTensors(config, tensors, llama, { config: join(dir, ADAPTER_CONFIG_FILE), weights });
}

/**
 * Writes `dir/adapter_config.json` and `dir/adapter_model.safetensors` as one unit: everything is validated
 * first, both files go to temp names and only then replace the old ones (which come back if a rename fails),
 * so `dir` never holds a half-written adapter. Tensors are written bit for bit as given.
 */
export async function saveAdapter(dir: string, adapter: LoraAdapter, llama: LlamaConfig): Promise<void> {
  const cfile = join(dir, ADAPTER_CONFIG_FILE);
  const wfile = join(dir, ADAPTER_WEIGHTS_FILE);
  const tensors = adapterTensors(adapter);
  // Same checks as loading (layer range included), so whatever we write is something we and PEFT read back.
  adapterFromTensors(adapter.config, tensors, llama, { config: cfile, weights: wfile });
  const configText = `${JSON.stringify(loraConfigToJson(adapter.config), null, 2)}\n`;
  const weights = pendingSafetensors(wfile, tensors, { metadata: { format: "pt" } });

  const existed = (await stat(dir).catch(() => undefined)) !== undefined;
  await mkdir(dir, { recursive: true });
  try {
    await writeFilesAtomic([
      weights,
      { target: cfile, write: (fh) => writeAll(fh, new TextEncoder().encode(configText)) },
    ]);
  } catch (e) {
    if (!existed) await rmdir(dir).catch(() => {});
    throw e;
  }
}

// ---- orientation helpers ------------------------------------------------------------------------------------------

function transposeF32(src: Float32Array, rows: number, cols: number): Float32Array {
  const out = new Float32Array(src.length);
  for (let i = 0; i < rows; i++) for (let j = 0; j < cols; j++) out[j * rows + i] = src[i * cols + j]!;
  return out;
}

/**
 * Float32 copies for right-multiplying activations: A [in, r] = lora_A.weight^T and B [r, out] = lora_B.weight^T,
 * so that delta_y = scale * (x @ A) @ B.
 */
export function loraPairToMatmul(pair: LoraPair): { A: HostTensor; B: HostTensor } {
  const [r, inF] = pair.A.shape as [number, number];
  const [outF, r2] = pair.B.shape as [number, number];
  return {
    A: fromFloat32(transposeF32(toFloat32(pair.A), r, inF), [inF, r]),
    B: fromFloat32(transposeF32(toFloat32(pair.B), outF, r2), [r2, outF]),
  };
}

/** The inverse of loraPairToMatmul: PEFT-orientation tensors in `dtype` from A [in, r] and B [r, out]. */
export function loraPairFromMatmul(A: HostTensor, B: HostTensor, dtype: HostDType = "F32"): LoraPair {
  const [inF, r] = A.shape as [number, number];
  const [r2, outF] = B.shape as [number, number];
  if (A.shape.length !== 2 || B.shape.length !== 2 || r !== r2) {
    throw new RangeError(`LoRA factors do not chain: A ${fmtShape(A.shape)}, B ${fmtShape(B.shape)}`);
  }
  return {
    A: fromFloat32(transposeF32(toFloat32(A), inF, r), [r, inF], dtype),
    B: fromFloat32(transposeF32(toFloat32(B), r, outF), [outF, r], dtype),
  };
}
