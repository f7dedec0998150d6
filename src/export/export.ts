// `tessera export` as a library: a Llama (HF folder or GGUF, optionally with a LoRA adapter merged in) written as an HF checkpoint folder.
import { copyFile, mkdir, readdir, readFile, rename, rm, stat, writeFile } from "node:fs/promises";
import { basename, join, relative, resolve, sep } from "node:path";
import { TesseraError } from "../errors.ts";
import { jit } from "../index.ts";
import { siblingPath } from "../formats/atomic.ts";
import { GgufFile } from "../formats/gguf.ts";
import { saveHfCheckpoint } from "../formats/hf_checkpoint.ts";
import { llamaConfigToJson, type LlamaConfig } from "../formats/hf_config.ts";
import { castTensor, type HostTensor } from "../formats/host_tensor.ts";
import { resolveModel, type ModelSource } from "../formats/model_fetch.ts";
import { ADAPTER_CONFIG_FILE, loadAdapter } from "../formats/peft.ts";
import { INDEX_FILE } from "../formats/safetensors.ts";
import { fsError } from "../host/fs_errors.ts";
import { stripBom } from "../host/text.ts";
import { treeFromDevice, treeToDevice } from "../host/transfer.ts";
import { ggufTokenizerJson, withAddedSpecials } from "../text/tokenizer.ts";
import { loraFromAdapter, mergeLora, type LoraLayout, type LoraWeights } from "../../models/lora.ts";
import type { LlamaLayers, LlamaWeights } from "../../models/llama.ts";
import { llamaToHf, loadGgufLlamaWeights, loadLlamaWeights, type WeightDType } from "../../models/weights.ts";

export type ExportDType = WeightDType;

export interface ExportOptions {
  /** What `--model` accepts: a catalogued name (fetched on first use), a .gguf file, or an HF checkpoint folder. */
  model: string;
  /** A PEFT LoRA adapter folder (or a `tessera train` --out, whose adapter/ is used) to merge into the weights. */
  adapter?: string | undefined;
  out: string;
  /** The weights' dtype in the export; default the source's (an HF folder's config.json dtype, F32 for a GGUF). */
  dtype?: ExportDType | undefined;
  /** Largest safetensors shard in bytes before the weights are split over several files with an index (default 2 GB). */
  maxShardBytes?: number | undefined;
  /** Replace a non-empty `out` (only once the new export is complete). */
  overwrite?: boolean | undefined;
}

export interface ExportResult {
  out: string;
  source: ModelSource;
  config: LlamaConfig;
  dtype: ExportDType;
  /** The adapter folder merged in, and what it adapted; null when the base was converted as it is. */
  merged: { dir: string; modules: string[]; ranks: number[] } | null;
  /** Every file of the export, sorted. */
  files: string[];
  /** Safetensors files holding the weights (1: model.safetensors, no index). */
  shards: number;
  tensors: number;
  weightBytes: number;
}

export const DEFAULT_MAX_SHARD_BYTES = 2_000_000_000;

/** Tokenizer-side files of an HF folder that an export carries over unchanged (whichever the folder has). */
const HF_TOKENIZER_FILES = [
  "tokenizer.json",
  "tokenizer_config.json",
  "special_tokens_map.json",
  "chat_template.jinja",
  "chat_template.json",
  "tokenizer.model",
  "added_tokens.json",
  "vocab.json",
  "merges.txt",
  "generation_config.json",
] as const;

function exportError(message: string, code = "ERR_EXPORT"): TesseraError {
  return new TesseraError(message, { code });
}

/** Parses `--max-shard-size`: bytes, or a number with KB/MB/GB (powers of 1000) or KiB/MiB/GiB, as HF's max_shard_size. */
export function parseShardSize(text: string): number | undefined {
  const m = /^\s*(\d+(?:\.\d+)?)\s*(B|KB|MB|GB|KIB|MIB|GIB)?\s*$/i.exec(text);
  if (!m) return undefined;
  const unit = (m[2] ?? "B").toUpperCase();
  const mult: Record<string, number> = { B: 1, KB: 1e3, MB: 1e6, GB: 1e9, KIB: 1024, MIB: 1024 ** 2, GIB: 1024 ** 3 };
  const v = Math.floor(Number(m[1]) * mult[unit]!);
  return v >= 1 ? v : undefined;
}

/** `inner` is `outer` or somewhere inside it. */
function within(inner: string, outer: string): boolean {
  const rel = relative(outer, inner);
  return rel === "" || (!rel.startsWith(`..${sep}`) && rel !== ".." && !rel.startsWith(sep));
}

/** The PEFT folder `dir` names: itself, or the adapter/ a `tessera train` run left in it. */
async function adapterDir(dir: string): Promise<string> {
  const has = async (d: string) => (await stat(join(d, ADAPTER_CONFIG_FILE)).catch(() => undefined))?.isFile();
  if (await has(dir)) return resolve(dir);
  if (await has(join(dir, "adapter"))) return resolve(dir, "adapter");
  const exists = (await stat(dir).catch(() => undefined)) !== undefined;
  throw exportError(
    `--adapter ${dir}: ${exists ? `no ${ADAPTER_CONFIG_FILE} in it nor in ${join(dir, "adapter")}` : "no such file or directory"} (expected a PEFT LoRA adapter folder, or a tessera train --out)`,
    "ERR_ADAPTER",
  );
}

/** The check before anything is read: --out must not hold the sources, and is empty unless --overwrite. */
async function checkOut(out: string, sources: string[], overwrite: boolean): Promise<void> {
  for (const s of sources) {
    if (within(s, out) || within(out, s))
      throw exportError(
        `--out ${out} overlaps the input ${s}: write the export to a folder of its own`,
        "ERR_OUT_OVERLAPS_INPUT",
      );
  }
  const st = await stat(out).catch(() => undefined);
  if (st === undefined) return;
  if (!st.isDirectory()) throw exportError(`--out ${out}: is a file, expected a folder for the export`, "ERR_FS");
  const names = await readdir(out).catch((e) => {
    throw fsError(e, out, "read the output folder");
  });
  if (names.length > 0 && !overwrite)
    throw exportError(
      `--out ${out} is not empty (${names.slice(0, 4).join(", ")}${names.length > 4 ? ", ..." : ""}): pass --overwrite to replace it (it is replaced only once the export is complete)`,
      "ERR_OUT_NOT_EMPTY",
    );
}

/** The adapter folded into the layers, W + scale·(A·B) per layer in f32 (models/lora.ts mergeLora), on the device. */
async function mergeOnDevice(
  weights: LlamaWeights<HostTensor>,
  lora: LoraWeights<HostTensor>,
  layout: LoraLayout,
): Promise<LlamaWeights<HostTensor>> {
  const merge = jit(
    (layers: LlamaLayers, factors: LoraWeights) => mergeLora({ layers } as LlamaWeights, factors, layout).layers,
  ) as unknown as (layers: unknown, factors: unknown) => Promise<unknown>;
  const out = await merge(treeToDevice(weights.layers as never), treeToDevice(lora as never));
  const layers = (await treeFromDevice(out)) as unknown as LlamaLayers<HostTensor>;
  return { ...weights, layers };
}

type Files = Map<string, Uint8Array | { copyFrom: string }>;

const jsonBytes = (v: unknown) => new TextEncoder().encode(`${JSON.stringify(v, null, 2)}\n`);

/** generation_config.json as transformers writes it from a model config: the special token ids generate() uses. */
function generationConfig(cfg: LlamaConfig): Record<string, unknown> {
  const out: Record<string, unknown> = {};
  if (cfg.bosTokenId !== undefined) out.bos_token_id = cfg.bosTokenId;
  if (cfg.eosTokenId !== undefined) out.eos_token_id = cfg.eosTokenId;
  if (cfg.padTokenId !== undefined) out.pad_token_id = cfg.padTokenId;
  return out;
}

/**
 * The tokenizer files transformers' own GGUF loader would give: tokenizer.json (built from the metadata as
 * src/text/tokenizer.ts does, with BOS/EOS insertion baked into its post-processor), tokenizer_config.json with
 * the chat template, special_tokens_map.json; a generic fast tokenizer, so nothing class-specific reinterprets it.
 */
async function ggufTokenizerFiles(path: string, cfg: LlamaConfig, files: Files): Promise<void> {
  const g = await GgufFile.open(path);
  let built: ReturnType<typeof ggufTokenizerJson>;
  try {
    built = ggufTokenizerJson(path, (k) => g.get(k));
  } finally {
    await g.close();
  }
  const { config, template } = built;
  const json = withAddedSpecials(built.json, config);
  const tokenOf = (t: typeof config.bos_token) =>
    t === null || t === undefined || typeof t === "string" ? t : t.content;
  const specials: Record<string, string> = {};
  for (const k of ["bos_token", "eos_token", "unk_token", "pad_token"] as const) {
    const t = tokenOf(config[k]);
    if (t !== undefined && t !== null) specials[k] = t;
  }
  const added = (json.added_tokens ?? []) as { id: number; content: string }[];
  const tokenizerConfig: Record<string, unknown> = {
    tokenizer_class: "PreTrainedTokenizerFast",
    ...specials,
    add_bos_token: config.add_bos_token ?? false,
    add_eos_token: config.add_eos_token ?? false,
    clean_up_tokenization_spaces: false,
    model_max_length: cfg.maxPositionEmbeddings,
    added_tokens_decoder: Object.fromEntries(added.map(({ id, ...rest }) => [String(id), rest])),
  };
  if (template !== undefined) tokenizerConfig.chat_template = template;
  files.set("tokenizer.json", jsonBytes(json));
  files.set("tokenizer_config.json", jsonBytes(tokenizerConfig));
  files.set("special_tokens_map.json", jsonBytes(specials));
  files.set("generation_config.json", jsonBytes(generationConfig(cfg)));
}

/** An HF folder's tokenizer files, copied; a generation_config.json made from config.json when it has none. */
async function hfTokenizerFiles(dir: string, cfg: LlamaConfig, files: Files): Promise<void> {
  for (const name of HF_TOKENIZER_FILES) {
    const p = join(dir, name);
    if ((await stat(p).catch(() => undefined))?.isFile()) files.set(name, { copyFrom: p });
  }
  if (!files.has("generation_config.json")) files.set("generation_config.json", jsonBytes(generationConfig(cfg)));
}

/**
 * config.json: Tessera's reading of the model (llamaConfigToJson) in the export's dtype; for an HF source, on top
 * of its own config.json, so fields Tessera does not read (initializer_range, transformers_version...) survive.
 */
async function configJson(source: ModelSource, cfg: LlamaConfig): Promise<Record<string, unknown>> {
  const ours = llamaConfigToJson(cfg);
  if (source.kind !== "hf") return ours;
  const file = join(source.path, "config.json");
  const theirs = JSON.parse(stripBom(await readFile(file, "utf8"))) as Record<string, unknown>;
  return { ...theirs, ...ours };
}

/**
 * Moves the finished export `tmp` to `out`: an empty or absent `out` is replaced in one rename; a non-empty one
 * (--overwrite) is moved aside first, brought back if the rename fails, and deleted after.
 */
async function putInPlace(tmp: string, out: string): Promise<void> {
  const st = await stat(out).catch(() => undefined);
  if (st === undefined) {
    await rename(tmp, out);
    return;
  }
  const aside = siblingPath(out, "old");
  await rename(out, aside);
  try {
    await rename(tmp, out);
  } catch (e) {
    await rename(aside, out).catch(() => {});
    throw e;
  }
  await rm(aside, { recursive: true, force: true });
}

/**
 * Exports a Llama as a Hugging Face checkpoint folder that `AutoModelForCausalLM.from_pretrained(out)` loads:
 * config.json (LlamaForCausalLM), safetensors weights (sharded with model.safetensors.index.json past
 * `maxShardBytes`), tokenizer files and generation_config.json. A GGUF is dequantized (q/k rows already in HF's
 * order by the loader); an adapter is merged in f32 and the result cast once to `dtype`. Everything is read and
 * checked before anything is written; the folder is built under a temporary name beside `out` and renamed into
 * place, so `out` holds either what it held before or the whole export.
 */
export async function exportModel(opts: ExportOptions, log: (line: string) => void = () => {}): Promise<ExportResult> {
  const out = resolve(opts.out);
  const source = await resolveModel(opts.model, log);
  const aDir = opts.adapter === undefined ? undefined : await adapterDir(opts.adapter);
  await checkOut(out, [source.path, ...(aDir ? [aDir] : [])], opts.overwrite ?? false);

  log(`reading ${source.kind === "gguf" ? "the GGUF (dequantizing to f32)" : "the checkpoint"} ${source.path}`);
  const loaded =
    source.kind === "gguf"
      ? await loadGgufLlamaWeights(source.path)
      : await loadLlamaWeights(source.path, { dtype: "F32" });
  const config = loaded.config;
  let weights = loaded.weights;
  const dtype: ExportDType = opts.dtype ?? (source.kind === "hf" ? (config.dtype ?? "F32") : "F32");

  let merged: ExportResult["merged"] = null;
  if (aDir !== undefined) {
    const adapter = await loadAdapter(aDir, config);
    const { layout, weights: lora } = loraFromAdapter(adapter, config, join(aDir, ADAPTER_CONFIG_FILE));
    log(`merging ${aDir} (W + scale·B·A in f32, on ${layout.modules.join(",")})`);
    weights = await mergeOnDevice(weights, lora, layout);
    merged = { dir: aDir, modules: layout.modules, ranks: layout.modules.map((m) => layout.rank[m]!) };
  }

  const files: Files = new Map();
  if (source.kind === "gguf") await ggufTokenizerFiles(source.path, config, files);
  else await hfTokenizerFiles(source.path, config, files);
  const outConfig: LlamaConfig = { ...config, dtype };
  const cfgJson = await configJson(source, outConfig);

  const tensors = new Map<string, HostTensor>();
  let weightBytes = 0;
  for (const [name, t] of llamaToHf(config, weights)) {
    const c = castTensor(t, dtype);
    tensors.set(name, c);
    weightBytes += c.data.byteLength;
  }

  const parent = resolve(out, "..");
  await mkdir(parent, { recursive: true }).catch((e) => {
    throw fsError(e, parent, "create the folder of");
  });
  const tmp = siblingPath(out, "tmp");
  log(`writing ${tensors.size} tensors (${dtype}) to ${basename(out)}`);
  try {
    await mkdir(tmp);
    await saveHfCheckpoint(tmp, outConfig, tensors, {
      maxShardBytes: opts.maxShardBytes ?? DEFAULT_MAX_SHARD_BYTES,
    });
    await writeFile(join(tmp, "config.json"), jsonBytes(cfgJson));
    for (const [name, content] of files) {
      if (content instanceof Uint8Array) await writeFile(join(tmp, name), content);
      else await copyFile(content.copyFrom, join(tmp, name));
    }
    await putInPlace(tmp, out);
  } catch (e) {
    await rm(tmp, { recursive: true, force: true }).catch(() => {});
    if (e instanceof TesseraError) throw e;
    throw fsError(e, out, "write the export to");
  }
  const names = (await readdir(out)).sort();
  const shards = names.includes(INDEX_FILE) ? names.filter((n) => /^model-\d+-of-\d+\.safetensors$/.test(n)).length : 1;
  return { out, source, config: outConfig, dtype, merged, files: names, shards, tensors: tensors.size, weightBytes };
}
