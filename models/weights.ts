// Host-side Llama weights: an HF checkpoint or a GGUF streamed into the stacked [L, in, out] tree, back to HF names, random init.
import { byteWidth, numel } from "../src/ir/types.ts";
import { fromFloat32, hostTensor, type HostTensor } from "../src/formats/host_tensor.ts";
import { HfCheckpoint } from "../src/formats/hf_checkpoint.ts";
import { GgufLlama } from "../src/formats/gguf_llama.ts";
import { LINEAR_PATH, type LlamaConfig, type LlamaLinear } from "../src/formats/hf_config.ts";
import { FormatError } from "../src/formats/errors.ts";
import { LINEARS, llamaShapes, type LlamaLayers, type LlamaWeights } from "./llama.ts";
import { mulberry32, normalSamples } from "../src/host/random.ts";

export type WeightDType = "F32" | "BF16" | "F16";

/** Element-size-generic 2-D transpose of `rows x cols` elements from `src` at `srcOff` into `dst` at `dstOff`. */
function transposeInto(
  src: Uint8Array,
  dst: Uint8Array,
  rows: number,
  cols: number,
  elt: number,
  dstOff: number,
): void {
  if (elt === 4) {
    const s = new Uint32Array(src.buffer, src.byteOffset, rows * cols);
    const d = new Uint32Array(dst.buffer, dst.byteOffset + dstOff * 4, rows * cols);
    for (let i = 0; i < rows; i++) for (let j = 0; j < cols; j++) d[j * rows + i] = s[i * cols + j]!;
  } else if (elt === 2) {
    const s = new Uint16Array(src.buffer, src.byteOffset, rows * cols);
    const d = new Uint16Array(dst.buffer, dst.byteOffset + dstOff * 2, rows * cols);
    for (let i = 0; i < rows; i++) for (let j = 0; j < cols; j++) d[j * rows + i] = s[i * cols + j]!;
  } else {
    throw new Error(`transpose of ${elt}-byte elements is not supported`);
  }
}

/** A tensor's bytes copied to a fresh, aligned buffer (safetensors data may sit at any offset). */
function aligned(t: HostTensor): Uint8Array {
  return t.data.byteOffset % 4 === 0 ? t.data : t.data.slice();
}

function transposed(t: HostTensor): HostTensor {
  const [rows, cols] = t.shape as [number, number];
  const out = hostTensor(t.dtype, [cols, rows]);
  transposeInto(aligned(t), out.data, rows, cols, byteWidth(t.dtype), 0);
  return out;
}

const LAYER_NAME = /^model\.layers\.(\d+)\.(.+)\.weight$/;
const BY_PATH = new Map<string, keyof LlamaLayers>([
  ...LINEARS.map((m) => [LINEAR_PATH[m], m] as [string, keyof LlamaLayers]),
  ["input_layernorm", "inputNorm"],
  ["post_attention_layernorm", "postNorm"],
]);

/**
 * Opens an HF Llama checkpoint (config.json + safetensors, one file or sharded), validates every tensor against
 * the config (a wrong shape, a missing or extra tensor, a truncated file: a FormatError naming file and tensor),
 * and streams the weights one tensor at a time into the stacked layout, converted to `dtype`. Linear weights are
 * transposed from torch's [out, in] to [in, out]; a tied head is the embedding transposed.
 */
export async function loadLlamaWeights(
  dir: string,
  opts: { dtype?: WeightDType } = {},
): Promise<{ config: LlamaConfig; weights: LlamaWeights<HostTensor> }> {
  const ckpt = await HfCheckpoint.open(dir);
  try {
    const cfg = ckpt.config;
    const dtype: WeightDType = opts.dtype ?? cfg.dtype ?? "F32";
    return { config: cfg, weights: await stackLlamaWeights(cfg, dtype, ckpt.tensors(dtype), dir) };
  } finally {
    await ckpt.close();
  }
}

/**
 * A llama-architecture GGUF file (see src/formats/gguf_llama.ts) streamed into the stacked layout like an HF
 * checkpoint: each tensor dequantized to float32, q/k rows un-permuted, converted to `dtype` (default F32).
 */
export async function loadGgufLlamaWeights(
  path: string,
  opts: { dtype?: WeightDType } = {},
): Promise<{ config: LlamaConfig; weights: LlamaWeights<HostTensor> }> {
  const gguf = await GgufLlama.open(path);
  try {
    const dtype: WeightDType = opts.dtype ?? "F32";
    return { config: gguf.config, weights: await stackLlamaWeights(gguf.config, dtype, gguf.tensors(dtype), path) };
  } finally {
    await gguf.close();
  }
}

/** HF-named tensors in torch's layout (already checked against `cfg`) into the stacked [L, in, out] tree. */
async function stackLlamaWeights(
  cfg: LlamaConfig,
  dtype: WeightDType,
  tensors: AsyncIterable<{ name: string; tensor: HostTensor }>,
  where: string,
): Promise<LlamaWeights<HostTensor>> {
  const shapes = llamaShapes(cfg);
  const elt = byteWidth(dtype);
  const layers = Object.fromEntries(
    (Object.keys(shapes.layers) as (keyof LlamaLayers)[]).map((k) => [k, hostTensor(dtype, shapes.layers[k])]),
  ) as unknown as LlamaLayers<HostTensor>;
  let embed: HostTensor | undefined, norm: HostTensor | undefined, head: HostTensor | undefined;
  for await (const { name, tensor } of tensors) {
    if (name === "model.embed_tokens.weight")
      embed = tensor.data.byteOffset % 4 === 0 ? tensor : { ...tensor, data: tensor.data.slice() };
    else if (name === "model.norm.weight") norm = tensor;
    else if (name === "lm_head.weight") head = transposed(tensor);
    else {
      const m = LAYER_NAME.exec(name);
      const key = m ? BY_PATH.get(m[2]!) : undefined;
      if (!m || !key) throw new FormatError(`${where}: unexpected tensor "${name}"`, { file: where, tensor: name });
      const l = Number(m[1]);
      const slot = layers[key];
      const per = slot.shape.slice(1).reduce((a, b) => a * b, 1);
      if (key === "inputNorm" || key === "postNorm") slot.data.set(tensor.data, l * per * elt);
      else transposeInto(aligned(tensor), slot.data, tensor.shape[0]!, tensor.shape[1]!, elt, l * per);
    }
  }
  if (!embed || !norm) throw new FormatError(`${where}: checkpoint lacks the embedding or final norm`, { file: where });
  if (cfg.tieWordEmbeddings) head = transposed(embed);
  if (!head)
    throw new FormatError(`${where}: checkpoint lacks "lm_head.weight"`, { file: where, tensor: "lm_head.weight" });
  return { embed, layers, norm, head };
}

/** The weights under HF names in torch's layout ([out, in] linears), e.g. for saving or comparing a merged model. */
export function llamaToHf(cfg: LlamaConfig, w: LlamaWeights<HostTensor>): Map<string, HostTensor> {
  const out = new Map<string, HostTensor>();
  out.set("model.embed_tokens.weight", w.embed);
  for (let l = 0; l < cfg.numLayers; l++) {
    const p = `model.layers.${l}`;
    out.set(`${p}.input_layernorm.weight`, layerSlice(w.layers.inputNorm, l));
    out.set(`${p}.post_attention_layernorm.weight`, layerSlice(w.layers.postNorm, l));
    for (const m of LINEARS) out.set(`${p}.${LINEAR_PATH[m]}.weight`, transposed(layerSlice(w.layers[m], l)));
  }
  out.set("model.norm.weight", w.norm);
  if (!cfg.tieWordEmbeddings) out.set("lm_head.weight", transposed(w.head));
  return out;
}

/** Layer `l` of a stacked tensor (a copy). */
export function layerSlice(t: HostTensor, l: number): HostTensor {
  const inner = t.shape.slice(1);
  const bytes = inner.reduce((a, b) => a * b, 1) * byteWidth(t.dtype);
  return hostTensor(t.dtype, inner, t.data.slice(l * bytes, (l + 1) * bytes));
}

/** Which tensor a random init is drawing: the embeddings, one projection (stacked over layers), or the head. */
export type RandomPart = "embed" | LlamaLinear | "head";

/**
 * Random weights for benchmarks and tests: N(0, std^2) matrices (Box-Muller over a seeded PRNG), norms of ones.
 * `std` is one number (default 0.02) or a std per part and shape. Deterministic in `seed`; meant for small models
 * (it is plain JS). The draws go projections, embeddings, head, in that order.
 */
export function randomLlamaWeights(
  cfg: LlamaConfig,
  opts: { seed?: number; dtype?: WeightDType; std?: number | ((part: RandomPart, shape: number[]) => number) } = {},
): LlamaWeights<HostTensor> {
  const rand = mulberry32(opts.seed ?? 0);
  const std = opts.std ?? 0.02;
  const stdOf = typeof std === "number" ? () => std : std;
  const dtype = opts.dtype ?? "F32";
  const normal = (part: RandomPart, shape: number[]) =>
    fromFloat32(normalSamples(rand, numel(shape), stdOf(part, shape)), shape, dtype);
  const ones = (shape: number[]) => fromFloat32(new Float32Array(numel(shape)).fill(1), shape, dtype);
  const s = llamaShapes(cfg);
  const l = s.layers;
  const linears = Object.fromEntries(LINEARS.map((m: LlamaLinear) => [m, normal(m, l[m])])) as Record<
    LlamaLinear,
    HostTensor
  >;
  return {
    embed: normal("embed", s.embed),
    layers: { inputNorm: ones(l.inputNorm), postNorm: ones(l.postNorm), ...linears },
    norm: ones(s.norm),
    head: normal("head", s.head),
  };
}
