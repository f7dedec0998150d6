// Hugging Face Llama `config.json` (transformers 4.x and 5.x forms) as a typed, validated LlamaConfig, plus presets.

import { readFile, stat } from "node:fs/promises";
import { join } from "node:path";
import { z } from "zod";
import { FormatError, zodFormatError } from "./errors.ts";
import { writeFileAtomic, writeAll } from "./atomic.ts";
import { stripBom } from "../host/text.ts";

/** The RoPE scaling kinds transformers defines that Tessera computes (models/rope.ts), as config.json names them. */
export const ROPE_SCALING_KINDS = ["linear", "dynamic", "yarn", "llama3"] as const;
export type RopeScalingKind = (typeof ROPE_SCALING_KINDS)[number];

/**
 * RoPE scaling as transformers' `rope_scaling` / `rope_parameters` describe it. `originalMaxPositionEmbeddings`
 * left out means the model's max_position_embeddings (transformers' default). YaRN's optional fields left out take
 * transformers' defaults (beta_fast 32, beta_slow 1, truncate true, attention factor 0.1 ln(factor) + 1).
 */
export type RopeScaling =
  | { kind: "linear"; factor: number }
  | { kind: "dynamic"; factor: number }
  | {
      kind: "yarn";
      factor: number;
      originalMaxPositionEmbeddings?: number | undefined;
      attentionFactor?: number | undefined;
      betaFast?: number | undefined;
      betaSlow?: number | undefined;
      mscale?: number | undefined;
      mscaleAllDim?: number | undefined;
      truncate?: boolean | undefined;
    }
  | {
      kind: "llama3";
      factor: number;
      lowFreqFactor: number;
      highFreqFactor: number;
      originalMaxPositionEmbeddings?: number | undefined;
    };

/** The architecture numbers Tessera builds a Llama from. Everything not here is fixed: SwiGLU, RMSNorm, no biases, rotate-half RoPE. */
export interface LlamaConfig {
  vocabSize: number;
  hiddenSize: number;
  intermediateSize: number;
  numLayers: number;
  numHeads: number;
  /** Grouped-query attention when smaller than numHeads. */
  numKvHeads: number;
  headDim: number;
  rmsNormEps: number;
  ropeTheta: number;
  /** Absent: plain RoPE. */
  ropeScaling?: RopeScaling | undefined;
  maxPositionEmbeddings: number;
  tieWordEmbeddings: boolean;
  bosTokenId?: number | undefined;
  eosTokenId?: number | number[] | undefined;
  padTokenId?: number | undefined;
  /** The dtype the weights were saved in, when config.json says (`torch_dtype` in 4.x, `dtype` in 5.x). */
  dtype?: "F32" | "F16" | "BF16" | undefined;
}

const posInt = z.number().int().positive();

/**
 * A positive integer no larger than `max`: each bound is far above any Llama there is (Llama 3.1 405B has 126
 * layers, hidden size 16384, 128 heads, a 128k vocabulary), so a value past it is a damaged or hostile file, and
 * refusing it here keeps a size derived from it from exhausting memory.
 */
const sizeField = (max: number) =>
  posInt.max(max, `expected at most ${max} (far larger than any Llama model; is the file damaged?)`);
const tokenId = z.number().int().nonnegative().nullish();

const ropeObject = z
  .object({
    rope_type: z.string().optional(),
    type: z.string().optional(),
    rope_theta: z.number().positive().optional(),
    factor: z.number().positive().nullish(),
    original_max_position_embeddings: posInt.nullish(),
    low_freq_factor: z.number().positive().nullish(),
    high_freq_factor: z.number().positive().nullish(),
    attention_factor: z.number().positive().nullish(),
    beta_fast: z.number().positive().nullish(),
    beta_slow: z.number().positive().nullish(),
    mscale: z.number().nullish(),
    mscale_all_dim: z.number().nullish(),
    truncate: z.boolean().nullish(),
  })
  .loose();

const schema = z
  .object({
    model_type: z.string().optional(),
    vocab_size: sizeField(1 << 24),
    hidden_size: sizeField(1 << 18),
    intermediate_size: sizeField(1 << 20),
    num_hidden_layers: sizeField(4096),
    num_attention_heads: sizeField(4096),
    num_key_value_heads: sizeField(4096).nullish(),
    head_dim: sizeField(1 << 16).nullish(),
    rms_norm_eps: z.number().positive().optional(),
    rope_theta: z.number().positive().optional(),
    rope_parameters: ropeObject.nullish(),
    rope_scaling: ropeObject.nullish(),
    max_position_embeddings: posInt.optional(),
    tie_word_embeddings: z.boolean().optional(),
    hidden_act: z.string().optional(),
    attention_bias: z.boolean().optional(),
    mlp_bias: z.boolean().optional(),
    attention_dropout: z.number().optional(),
    bos_token_id: tokenId,
    eos_token_id: z.union([z.number().int().nonnegative(), z.array(z.number().int().nonnegative())]).nullish(),
    pad_token_id: tokenId,
    torch_dtype: z.string().nullish(),
    dtype: z.string().nullish(),
  })
  .loose();

const DTYPE_NAMES: Record<string, "F32" | "F16" | "BF16"> = {
  float32: "F32",
  float16: "F16",
  bfloat16: "BF16",
};

/**
 * Validates parsed config.json content. `file` only labels errors, which name it, the field, and what was expected.
 * Defaults follow transformers' LlamaConfig where a field is absent.
 */
export function parseLlamaConfig(json: unknown, file = "config.json"): LlamaConfig {
  const r = schema.safeParse(json);
  if (!r.success) throw zodFormatError(file, r.error.issues, json);
  const c = r.data;
  const fail = (field: string, msg: string): never => {
    throw new FormatError(`${file}: field "${field}": ${msg}`, { file });
  };

  if (c.model_type !== undefined && c.model_type !== "llama") {
    fail(
      "model_type",
      `expected "llama", got ${JSON.stringify(c.model_type)}: only the Llama architecture is supported`,
    );
  }
  if ((c.hidden_act ?? "silu") !== "silu") {
    fail("hidden_act", `expected "silu" (Llama's SwiGLU MLP), got ${JSON.stringify(c.hidden_act)}`);
  }
  if (c.attention_bias === true)
    fail("attention_bias", "expected false: attention projections with bias are not supported");
  if (c.mlp_bias === true) fail("mlp_bias", "expected false: MLP projections with bias are not supported");
  if ((c.attention_dropout ?? 0) !== 0) {
    fail("attention_dropout", `expected 0: attention dropout is not supported (got ${c.attention_dropout})`);
  }

  // RoPE: transformers 4.x has top-level rope_theta and optional rope_scaling; 5.x folds both into rope_parameters.
  let ropeScaling: RopeScaling | undefined;
  let ropeScalingKey = "";
  for (const key of ["rope_scaling", "rope_parameters"] as const) {
    const rp = c[key];
    if (rp === null || rp === undefined) continue;
    const scaling = parseRopeScaling(rp, key, fail);
    if (scaling === undefined) continue;
    if (ropeScaling !== undefined && JSON.stringify(ropeScaling) !== JSON.stringify(scaling)) {
      fail(
        key,
        `${JSON.stringify(rp)} disagrees with ${ropeScalingKey} ${JSON.stringify(c[ropeScalingKey as typeof key])}`,
      );
    }
    ropeScaling = scaling;
    ropeScalingKey = key;
  }
  const nested = c.rope_parameters?.rope_theta;
  if (nested !== undefined && c.rope_theta !== undefined && nested !== c.rope_theta) {
    fail("rope_parameters.rope_theta", `${nested} disagrees with top-level rope_theta ${c.rope_theta}`);
  }
  const ropeTheta = nested ?? c.rope_theta ?? 10000;

  const numHeads = c.num_attention_heads;
  const numKvHeads = c.num_key_value_heads ?? numHeads;
  if (numHeads % numKvHeads !== 0) {
    fail("num_key_value_heads", `expected a divisor of num_attention_heads (${numHeads}), got ${numKvHeads}`);
  }
  let headDim = c.head_dim;
  if (headDim === undefined || headDim === null) {
    if (c.hidden_size % numHeads !== 0) {
      fail(
        "head_dim",
        `missing, and hidden_size ${c.hidden_size} is not a multiple of num_attention_heads ${numHeads}`,
      );
    }
    headDim = c.hidden_size / numHeads;
  }
  const dtypeName = c.dtype ?? c.torch_dtype ?? undefined;
  const cfg: LlamaConfig = {
    vocabSize: c.vocab_size,
    hiddenSize: c.hidden_size,
    intermediateSize: c.intermediate_size,
    numLayers: c.num_hidden_layers,
    numHeads,
    numKvHeads,
    headDim,
    rmsNormEps: c.rms_norm_eps ?? 1e-6,
    ropeTheta,
    maxPositionEmbeddings: c.max_position_embeddings ?? 2048,
    tieWordEmbeddings: c.tie_word_embeddings ?? false,
  };
  if (ropeScaling !== undefined) cfg.ropeScaling = ropeScaling;
  if (c.bos_token_id != null) cfg.bosTokenId = c.bos_token_id;
  if (c.eos_token_id != null) cfg.eosTokenId = c.eos_token_id;
  if (c.pad_token_id != null) cfg.padTokenId = c.pad_token_id;
  if (dtypeName != null && DTYPE_NAMES[dtypeName] !== undefined) cfg.dtype = DTYPE_NAMES[dtypeName];
  return cfg;
}

/**
 * One `rope_scaling` / `rope_parameters` object as a RopeScaling; undefined for plain RoPE ("default"). `key` names
 * the field in errors; `fail` throws the FormatError.
 */
function parseRopeScaling(
  rp: z.output<typeof ropeObject>,
  key: string,
  fail: (field: string, msg: string) => never,
): RopeScaling | undefined {
  const typeField = `${key}.${rp.rope_type !== undefined ? "rope_type" : "type"}`;
  const type = rp.rope_type ?? rp.type ?? "default";
  if (type === "default") return undefined;
  if (!(ROPE_SCALING_KINDS as readonly string[]).includes(type)) {
    fail(
      typeField,
      `expected "default" or one of ${ROPE_SCALING_KINDS.map((k) => `"${k}"`).join(", ")}, got ${JSON.stringify(type)}: that RoPE scaling is not supported`,
    );
  }
  const kind = type as RopeScalingKind;
  const need = (field: "factor" | "low_freq_factor" | "high_freq_factor"): number => {
    const v = rp[field];
    if (v === null || v === undefined) fail(`${key}.${field}`, `missing: rope_type "${kind}" needs a number > 0`);
    return v;
  };
  const opt = <T>(v: T | null | undefined): T | undefined => (v === null ? undefined : v);
  const factor = need("factor");
  switch (kind) {
    case "linear":
    case "dynamic":
      return { kind, factor };
    case "yarn": {
      const y: RopeScaling = { kind, factor };
      // Only the fields the file gives, so that two spellings of the same settings compare equal.
      const fields = {
        originalMaxPositionEmbeddings: opt(rp.original_max_position_embeddings),
        attentionFactor: opt(rp.attention_factor),
        betaFast: opt(rp.beta_fast),
        betaSlow: opt(rp.beta_slow),
        mscale: opt(rp.mscale),
        mscaleAllDim: opt(rp.mscale_all_dim),
        truncate: opt(rp.truncate),
      };
      for (const [k, v] of Object.entries(fields)) if (v !== undefined) Object.assign(y, { [k]: v });
      return y;
    }
    case "llama3": {
      const l: RopeScaling = {
        kind,
        factor,
        lowFreqFactor: need("low_freq_factor"),
        highFreqFactor: need("high_freq_factor"),
      };
      if (l.highFreqFactor <= l.lowFreqFactor) {
        fail(
          `${key}.high_freq_factor`,
          `expected more than low_freq_factor ${l.lowFreqFactor}, got ${l.highFreqFactor}`,
        );
      }
      const orig = opt(rp.original_max_position_embeddings);
      if (orig !== undefined) l.originalMaxPositionEmbeddings = orig;
      return l;
    }
  }
}

/** RoPE scaling as config.json spells it (transformers' snake_case field names), for rope_scaling / rope_parameters. */
export function ropeScalingToJson(s: RopeScaling): Record<string, unknown> {
  const out: Record<string, unknown> = { rope_type: s.kind, factor: s.factor };
  if (s.kind === "llama3") Object.assign(out, { low_freq_factor: s.lowFreqFactor, high_freq_factor: s.highFreqFactor });
  const names: Record<string, string> = {
    originalMaxPositionEmbeddings: "original_max_position_embeddings",
    attentionFactor: "attention_factor",
    betaFast: "beta_fast",
    betaSlow: "beta_slow",
    mscale: "mscale",
    mscaleAllDim: "mscale_all_dim",
    truncate: "truncate",
  };
  for (const [k, v] of Object.entries(s)) if (names[k] !== undefined && v !== undefined) out[names[k]] = v;
  return out;
}

/** Reads `config.json` from a checkpoint directory, or the given JSON file. */
export async function loadLlamaConfig(path: string): Promise<LlamaConfig> {
  const file = (await stat(path).catch(() => undefined))?.isDirectory() ? join(path, "config.json") : path;
  let text: string;
  try {
    text = await readFile(file, "utf8");
  } catch (e) {
    throw new FormatError(`${file}: cannot read model config (${(e as Error).message})`, { file, cause: e });
  }
  let json: unknown;
  try {
    json = JSON.parse(stripBom(text));
  } catch (e) {
    throw new FormatError(`${file}: not valid JSON (${(e as Error).message})`, { file, cause: e });
  }
  return parseLlamaConfig(json, file);
}

/**
 * config.json content for `cfg` that both transformers 4.x (top-level rope_theta) and 5.x (rope_parameters)
 * read the same way.
 */
export function llamaConfigToJson(cfg: LlamaConfig): Record<string, unknown> {
  const dtypeName =
    cfg.dtype === undefined ? "float32" : { F32: "float32", F16: "float16", BF16: "bfloat16" }[cfg.dtype];
  return {
    architectures: ["LlamaForCausalLM"],
    model_type: "llama",
    vocab_size: cfg.vocabSize,
    hidden_size: cfg.hiddenSize,
    intermediate_size: cfg.intermediateSize,
    num_hidden_layers: cfg.numLayers,
    num_attention_heads: cfg.numHeads,
    num_key_value_heads: cfg.numKvHeads,
    head_dim: cfg.headDim,
    hidden_act: "silu",
    rms_norm_eps: cfg.rmsNormEps,
    rope_theta: cfg.ropeTheta,
    rope_scaling: cfg.ropeScaling === undefined ? null : ropeScalingToJson(cfg.ropeScaling),
    rope_parameters:
      cfg.ropeScaling === undefined
        ? { rope_type: "default", rope_theta: cfg.ropeTheta }
        : { ...ropeScalingToJson(cfg.ropeScaling), rope_theta: cfg.ropeTheta },
    max_position_embeddings: cfg.maxPositionEmbeddings,
    tie_word_embeddings: cfg.tieWordEmbeddings,
    attention_bias: false,
    attention_dropout: 0.0,
    mlp_bias: false,
    pretraining_tp: 1,
    bos_token_id: cfg.bosTokenId ?? null,
    eos_token_id: cfg.eosTokenId ?? null,
    pad_token_id: cfg.padTokenId ?? null,
    torch_dtype: dtypeName,
    dtype: dtypeName,
    use_cache: true,
  };
}

/** Writes `dir/config.json` atomically. */
export async function saveLlamaConfig(dir: string, cfg: LlamaConfig): Promise<void> {
  const text = `${JSON.stringify(llamaConfigToJson(cfg), null, 2)}\n`;
  await writeFileAtomic(join(dir, "config.json"), (fh) => writeAll(fh, new TextEncoder().encode(text)));
}

// ---- the linear layers of one decoder layer ---------------------------------------------------------------------

export const LLAMA_LINEARS = ["q", "k", "v", "o", "gate", "up", "down"] as const;
export type LlamaLinear = (typeof LLAMA_LINEARS)[number];

/** Module path inside a decoder layer, as in HF parameter names (`model.layers.{i}.<path>.weight`). */
export const LINEAR_PATH: Record<LlamaLinear, string> = {
  q: "self_attn.q_proj",
  k: "self_attn.k_proj",
  v: "self_attn.v_proj",
  o: "self_attn.o_proj",
  gate: "mlp.gate_proj",
  up: "mlp.up_proj",
  down: "mlp.down_proj",
};

/** in/out features of each linear layer; torch stores its weight as [out, in]. */
export function linearFeatures(cfg: LlamaConfig): Record<LlamaLinear, { in: number; out: number }> {
  const E = cfg.hiddenSize;
  const q = cfg.numHeads * cfg.headDim;
  const kv = cfg.numKvHeads * cfg.headDim;
  const I = cfg.intermediateSize;
  return {
    q: { in: E, out: q },
    k: { in: E, out: kv },
    v: { in: E, out: kv },
    o: { in: q, out: E },
    gate: { in: E, out: I },
    up: { in: E, out: I },
    down: { in: I, out: E },
  };
}

// ---- presets ----------------------------------------------------------------------------------------------------

function llama2(
  numLayers: number,
  hiddenSize: number,
  numHeads: number,
  numKvHeads: number,
  intermediateSize: number,
): LlamaConfig {
  return Object.freeze({
    vocabSize: 32000,
    hiddenSize,
    intermediateSize,
    numLayers,
    numHeads,
    numKvHeads,
    headDim: hiddenSize / numHeads,
    rmsNormEps: 1e-5,
    ropeTheta: 10000,
    maxPositionEmbeddings: 4096,
    tieWordEmbeddings: false,
    bosTokenId: 1,
    eosTokenId: 2,
  });
}

export const LLAMA2_7B: LlamaConfig = llama2(32, 4096, 32, 32, 11008);
export const LLAMA2_13B: LlamaConfig = llama2(40, 5120, 40, 40, 13824);
export const LLAMA2_70B: LlamaConfig = llama2(80, 8192, 64, 8, 28672);

/** The shapes of ../shared/fixtures/llama-tiny-a. */
export const LLAMA_TINY_A: LlamaConfig = Object.freeze({
  vocabSize: 512,
  hiddenSize: 64,
  intermediateSize: 172,
  numLayers: 2,
  numHeads: 4,
  numKvHeads: 4,
  headDim: 16,
  rmsNormEps: 1e-5,
  ropeTheta: 10000,
  maxPositionEmbeddings: 128,
  tieWordEmbeddings: false,
  bosTokenId: 1,
  eosTokenId: 2,
  dtype: "F32",
});

export const LLAMA_PRESETS: Readonly<Record<string, LlamaConfig>> = Object.freeze({
  "llama2-7b": LLAMA2_7B,
  "llama2-13b": LLAMA2_13B,
  "llama2-70b": LLAMA2_70B,
  "tiny-a": LLAMA_TINY_A,
});
