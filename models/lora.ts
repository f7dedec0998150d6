// LoRA for the Llama model: adapter layout from a PEFT config, (x·A)·B·scale in the DSL, merge/unmerge, host conversions.
import { tx, type Tensor, type TensorSpec } from "tessera";
import { linearFeatures, type LlamaConfig, type LlamaLinear } from "../src/formats/hf_config.ts";
import { fromFloat32, hostTensor, toFloat32, type HostTensor } from "../src/formats/host_tensor.ts";
import type { HostDType } from "../src/ir/types.ts";
import { loraTargets, makeLoraConfig, type LoraAdapter, type LoraConfig, type LoraPair } from "../src/formats/peft.ts";
import { FormatError } from "../src/formats/errors.ts";
import type { LayerAdapter, LlamaWeights } from "./llama.ts";
import { matmulF32Acc } from "./stable.ts";
import { mulberry32 } from "../src/host/random.ts";

export { mulberry32 };

type DType = Tensor["dtype"];

const MODULE_ORDER: readonly LlamaLinear[] = ["q", "k", "v", "o", "gate", "up", "down"];

/**
 * Where an adapter applies and how, fixed at trace time. Factors are stacked over all layers with one rank per
 * module (the largest any layer uses): a layer the adapter skips, or a smaller rank_pattern rank, is zero padding,
 * which contributes nothing and receives zero gradient, so the stacked form computes exactly the PEFT adapter.
 */
export interface LoraLayout {
  numLayers: number;
  /** Targeted modules in a fixed order (q, k, v, o, gate, up, down). */
  modules: LlamaLinear[];
  /** Stacked rank per module. */
  rank: Partial<Record<LlamaLinear, number>>;
  /** Each layer's true rank per module; 0 where the module is not adapted in that layer. */
  ranks: Partial<Record<LlamaLinear, number[]>>;
  /** Each layer's scale per module (alpha/r, or alpha/sqrt(r) with rsLoRA); 0 where not adapted. */
  scale: Partial<Record<LlamaLinear, number[]>>;
  dropout: number;
  /** The PEFT config this layout was derived from, kept for saving the adapter. */
  config: LoraConfig;
}

/** Stacked adapter weights: per module, A [L, in, r] and B [L, r, out] (x @ A @ B right-multiplies activations). */
export type LoraWeights<T = Tensor> = Partial<Record<LlamaLinear, { a: T; b: T }>>;

/**
 * The layout of a PEFT LoRA config on a Llama of shape `llama`. Throws a FormatError naming `file` when the
 * config targets modules the model lacks (see formats/peft.ts loraTargets).
 */
export function loraLayout(cfg: LoraConfig, llama: LlamaConfig, file?: string): LoraLayout {
  const targets = loraTargets(cfg, llama, file);
  const L = llama.numLayers;
  const rank: LoraLayout["rank"] = {},
    ranks: LoraLayout["ranks"] = {},
    scale: LoraLayout["scale"] = {};
  for (const t of targets) {
    ranks[t.module] ??= new Array<number>(L).fill(0);
    scale[t.module] ??= new Array<number>(L).fill(0);
    ranks[t.module]![t.layer] = t.r;
    scale[t.module]![t.layer] = t.scale;
    rank[t.module] = Math.max(rank[t.module] ?? 0, t.r);
  }
  const modules = MODULE_ORDER.filter((m) => rank[m] !== undefined);
  return { numLayers: L, modules, rank, ranks, scale, dropout: cfg.loraDropout, config: cfg };
}

/** A layout from plain options: `{ r: 16, alpha: 32, targets: ["q", "v"] }` on every layer. */
export function simpleLoraLayout(
  llama: LlamaConfig,
  opts: { r: number; alpha: number; targets: readonly LlamaLinear[]; dropout?: number; rslora?: boolean },
): LoraLayout {
  const cfg = makeLoraConfig({
    r: opts.r,
    loraAlpha: opts.alpha,
    loraDropout: opts.dropout ?? 0,
    useRslora: opts.rslora ?? false,
    targetModules: opts.targets.map((m) => `${m}_proj`),
  });
  return loraLayout(cfg, llama);
}

/** The [in, out] features of each module's linear. */
function features(llama: LlamaConfig, m: LlamaLinear): { in: number; out: number } {
  return linearFeatures(llama)[m];
}

/** Shapes of the stacked factors. */
export function loraShapes(layout: LoraLayout, llama: LlamaConfig): LoraWeights<number[]> {
  const out: LoraWeights<number[]> = {};
  for (const m of layout.modules) {
    const f = features(llama, m),
      r = layout.rank[m]!;
    out[m] = { a: [layout.numLayers, f.in, r], b: [layout.numLayers, r, f.out] };
  }
  return out;
}

/** Abstract adapter weights for tracing (f32 master weights by default). */
export function loraSpecs(layout: LoraLayout, llama: LlamaConfig, dtype: DType = "f32"): LoraWeights<TensorSpec> {
  const out: LoraWeights<TensorSpec> = {};
  for (const [m, s] of Object.entries(loraShapes(layout, llama)) as [LlamaLinear, { a: number[]; b: number[] }][]) {
    out[m] = { a: tx.spec(dtype, s.a), b: tx.spec(dtype, s.b) };
  }
  return out;
}

/**
 * The LoRA path of one linear, (dropout(x) @ A * scale) @ B: low-rank all the way, W + AB is never formed. The
 * scale multiplies the rank-r intermediate, the cheapest place for it.
 */
export function loraDelta(x: Tensor, ad: LayerAdapter): Tensor {
  const xin = ad.dropout > 0 && ad.key ? tx.dropout(x, ad.dropout, ad.key) : x;
  const xa = matmulF32Acc(xin, ad.a);
  return matmulF32Acc(xa.mul(ad.scale), ad.b);
}

/**
 * The base weights with the adapter folded in: W + scale * A @ B per layer (sign -1 takes it back out). Computed in
 * f32 and rounded once to the weights' dtype, as PEFT's merge does for bf16 bases.
 */
export function mergeLora(w: LlamaWeights, lora: LoraWeights, layout: LoraLayout, sign: 1 | -1 = 1): LlamaWeights {
  const layers = { ...w.layers };
  for (const m of layout.modules) {
    const f = lora[m]!;
    const delta = tx.einsum("lir,lro->lio", f.a.astype("f32"), f.b.astype("f32"));
    const s = tx.constant(new Float32Array(layout.scale[m]!.map((v) => v * sign))).reshape([layout.numLayers, 1, 1]);
    const base = layers[m];
    layers[m] = base.astype("f32").add(delta.mul(s)).astype(base.dtype);
  }
  return { ...w, layers };
}

/** The inverse of mergeLora (exact up to rounding). */
export function unmergeLora(w: LlamaWeights, lora: LoraWeights, layout: LoraLayout): LlamaWeights {
  return mergeLora(w, lora, layout, -1);
}

// ---- host conversions: PEFT orientation <-> stacked [L, in, r] / [L, r, out] f32 ---------------------------------

/**
 * Stacked f32 factors from a loaded PEFT adapter: A^T and B^T of each layer placed in the leading [in, r_l] and
 * [r_l, out] corner of that layer's slot, zeros elsewhere.
 */
export function loraFromAdapter(
  adapter: LoraAdapter,
  llama: LlamaConfig,
  file?: string,
): { layout: LoraLayout; weights: LoraWeights<HostTensor> } {
  const layout = loraLayout(adapter.config, llama, file);
  const weights: LoraWeights<HostTensor> = {};
  for (const m of layout.modules) {
    const f = features(llama, m),
      R = layout.rank[m]!;
    const A = new Float32Array(layout.numLayers * f.in * R);
    const B = new Float32Array(layout.numLayers * R * f.out);
    for (let l = 0; l < layout.numLayers; l++) {
      const pair = adapter.layers[l]?.[m];
      const r = layout.ranks[m]![l]!;
      if (r === 0) continue;
      if (!pair) throw new FormatError(`adapter has no ${m} pair for layer ${l} although its config targets it`);
      const a = toFloat32(pair.A),
        b = toFloat32(pair.B); // [r, in], [out, r]
      const aOff = l * f.in * R,
        bOff = l * R * f.out;
      for (let i = 0; i < f.in; i++) for (let k = 0; k < r; k++) A[aOff + i * R + k] = a[k * f.in + i]!;
      for (let k = 0; k < r; k++) for (let o = 0; o < f.out; o++) B[bOff + k * f.out + o] = b[o * r + k]!;
    }
    weights[m] = { a: fromFloat32(A, [layout.numLayers, f.in, R]), b: fromFloat32(B, [layout.numLayers, R, f.out]) };
  }
  return { layout, weights };
}

/** A PEFT adapter (lora_A [r, in], lora_B [out, r] per targeted layer, in `dtype`) from stacked factors. */
export function loraToAdapter(
  layout: LoraLayout,
  weights: LoraWeights<HostTensor>,
  llama: LlamaConfig,
  dtype: HostDType = "F32",
): LoraAdapter {
  const layers: LoraAdapter["layers"] = Array.from({ length: layout.numLayers }, () => ({}));
  for (const m of layout.modules) {
    const f = features(llama, m),
      R = layout.rank[m]!;
    const w = weights[m];
    if (!w) throw new Error(`loraToAdapter: no weights for module ${m}`);
    const A = toFloat32(w.a),
      B = toFloat32(w.b);
    for (let l = 0; l < layout.numLayers; l++) {
      const r = layout.ranks[m]![l]!;
      if (r === 0) continue;
      const a = new Float32Array(r * f.in),
        b = new Float32Array(f.out * r);
      const aOff = l * f.in * R,
        bOff = l * R * f.out;
      for (let i = 0; i < f.in; i++) for (let k = 0; k < r; k++) a[k * f.in + i] = A[aOff + i * R + k]!;
      for (let k = 0; k < r; k++) for (let o = 0; o < f.out; o++) b[o * r + k] = B[bOff + k * f.out + o]!;
      const pair: LoraPair = { A: fromFloat32(a, [r, f.in], dtype), B: fromFloat32(b, [f.out, r], dtype) };
      layers[l]![m] = pair;
    }
  }
  return { config: layout.config, layers };
}

/**
 * Fresh factors as PEFT initializes them: A ~ U(-1/sqrt(in), 1/sqrt(in)) (kaiming_uniform with a = sqrt(5)), B = 0,
 * so the adapted model starts equal to the base. Deterministic in `seed`.
 */
export function initLora(layout: LoraLayout, llama: LlamaConfig, seed = 0): LoraWeights<HostTensor> {
  const rand = mulberry32(seed);
  const out: LoraWeights<HostTensor> = {};
  for (const m of layout.modules) {
    const f = features(llama, m),
      R = layout.rank[m]!;
    const A = new Float32Array(layout.numLayers * f.in * R);
    const bound = 1 / Math.sqrt(f.in);
    for (let l = 0; l < layout.numLayers; l++) {
      const r = layout.ranks[m]![l]!;
      for (let i = 0; i < f.in; i++) for (let k = 0; k < r; k++) A[l * f.in * R + i * R + k] = (2 * rand() - 1) * bound;
    }
    out[m] = { a: fromFloat32(A, [layout.numLayers, f.in, R]), b: hostTensor("F32", [layout.numLayers, R, f.out]) };
  }
  return out;
}
