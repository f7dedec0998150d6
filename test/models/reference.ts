// An independent float64 Llama + LoRA written with plain loops over HF-named tensors: the oracle for the model tests.
import type { LlamaConfig } from "../../src/formats/hf_config.ts";

export type Linear = "q" | "k" | "v" | "o" | "gate" | "up" | "down";
const PATH: Record<Linear, string> = {
  q: "self_attn.q_proj",
  k: "self_attn.k_proj",
  v: "self_attn.v_proj",
  o: "self_attn.o_proj",
  gate: "mlp.gate_proj",
  up: "mlp.up_proj",
  down: "mlp.down_proj",
};

/** One LoRA pair in PEFT orientation: A [r, in], B [out, r], y += scale * B (A x). */
export interface RefPair {
  A: Float64Array;
  B: Float64Array;
  r: number;
  scale: number;
}
/** lora[layer][module] */
export type RefLora = Array<Partial<Record<Linear, RefPair>>>;

/** y[t, o] = sum_i x[t, i] W[o, i] (torch Linear, W [out, in]). */
function lin(x: Float64Array, T: number, inF: number, W: Float64Array, outF: number): Float64Array {
  const y = new Float64Array(T * outF);
  for (let t = 0; t < T; t++)
    for (let o = 0; o < outF; o++) {
      let s = 0;
      for (let i = 0; i < inF; i++) s += x[t * inF + i]! * W[o * inF + i]!;
      y[t * outF + o] = s;
    }
  return y;
}

function projection(
  w: Map<string, Float64Array>,
  lora: RefLora | undefined,
  l: number,
  m: Linear,
  x: Float64Array,
  T: number,
  inF: number,
  outF: number,
): Float64Array {
  const y = lin(x, T, inF, w.get(`model.layers.${l}.${PATH[m]}.weight`)!, outF);
  const p = lora?.[l]?.[m];
  if (p) {
    const xa = lin(x, T, inF, p.A, p.r);
    const d = lin(xa, T, p.r, p.B, outF);
    for (let i = 0; i < y.length; i++) y[i]! += p.scale * d[i]!;
  }
  return y;
}

function rms(x: Float64Array, T: number, E: number, w: Float64Array, eps: number): Float64Array {
  const y = new Float64Array(T * E);
  for (let t = 0; t < T; t++) {
    let s = 0;
    for (let i = 0; i < E; i++) s += x[t * E + i]! ** 2;
    const inv = 1 / Math.sqrt(s / E + eps);
    for (let i = 0; i < E; i++) y[t * E + i] = w[i]! * x[t * E + i]! * inv;
  }
  return y;
}

/** RoPE given by its inverse frequencies and a factor on cos and sin (YaRN's), instead of theta. */
export interface RefRope {
  invFreq: ArrayLike<number>;
  scaling: number;
}

/** Rotate-half RoPE in place on [T, H, D] at positions 0..T-1. */
function rope(x: Float64Array, T: number, H: number, D: number, theta: number, given?: RefRope): void {
  const half = D / 2;
  for (let t = 0; t < T; t++)
    for (let h = 0; h < H; h++) {
      const o = (t * H + h) * D;
      for (let i = 0; i < half; i++) {
        const ang = given ? t * given.invFreq[i]! : t / theta ** ((2 * i) / D);
        const c = Math.cos(ang) * (given?.scaling ?? 1),
          s = Math.sin(ang) * (given?.scaling ?? 1);
        const a = x[o + i]!,
          b = x[o + i + half]!;
        x[o + i] = a * c - b * s;
        x[o + i + half] = b * c + a * s;
      }
    }
}

/** Logits [S, V] for one sequence. */
export function refLogits(
  cfg: LlamaConfig,
  w: Map<string, Float64Array>,
  tokens: readonly number[],
  lora?: RefLora,
  ropeOverride?: RefRope,
): Float64Array {
  const T = tokens.length,
    E = cfg.hiddenSize,
    D = cfg.headDim,
    H = cfg.numHeads,
    KV = cfg.numKvHeads,
    I = cfg.intermediateSize,
    V = cfg.vocabSize;
  const G = H / KV;
  const emb = w.get("model.embed_tokens.weight")!;
  let h = new Float64Array(T * E);
  tokens.forEach((tok, t) => {
    h.set(emb.subarray(tok * E, (tok + 1) * E), t * E);
  });
  for (let l = 0; l < cfg.numLayers; l++) {
    const x = rms(h, T, E, w.get(`model.layers.${l}.input_layernorm.weight`)!, cfg.rmsNormEps);
    const q = projection(w, lora, l, "q", x, T, E, H * D);
    const k = projection(w, lora, l, "k", x, T, E, KV * D);
    const v = projection(w, lora, l, "v", x, T, E, KV * D);
    rope(q, T, H, D, cfg.ropeTheta, ropeOverride);
    rope(k, T, KV, D, cfg.ropeTheta, ropeOverride);
    const att = new Float64Array(T * H * D);
    for (let hh = 0; hh < H; hh++) {
      const kh = Math.floor(hh / G);
      for (let i = 0; i < T; i++) {
        const sc = new Float64Array(i + 1);
        let mx = -Infinity;
        for (let j = 0; j <= i; j++) {
          let s = 0;
          for (let d = 0; d < D; d++) s += q[(i * H + hh) * D + d]! * k[(j * KV + kh) * D + d]!;
          sc[j] = s / Math.sqrt(D);
          mx = Math.max(mx, sc[j]!);
        }
        let z = 0;
        for (let j = 0; j <= i; j++) z += sc[j] = Math.exp(sc[j]! - mx);
        for (let j = 0; j <= i; j++)
          for (let d = 0; d < D; d++) att[(i * H + hh) * D + d]! += (sc[j]! / z) * v[(j * KV + kh) * D + d]!;
      }
    }
    const o = projection(w, lora, l, "o", att, T, H * D, E);
    const h1 = h.map((a, i) => a + o[i]!);
    const x2 = rms(h1, T, E, w.get(`model.layers.${l}.post_attention_layernorm.weight`)!, cfg.rmsNormEps);
    const g = projection(w, lora, l, "gate", x2, T, E, I);
    const u = projection(w, lora, l, "up", x2, T, E, I);
    const act = g.map((a, i) => (a / (1 + Math.exp(-a))) * u[i]!);
    const dn = projection(w, lora, l, "down", act, T, I, E);
    h = h1.map((a, i) => a + dn[i]!);
  }
  const hf = rms(h, T, E, w.get("model.norm.weight")!, cfg.rmsNormEps);
  const head = cfg.tieWordEmbeddings ? emb : w.get("lm_head.weight")!;
  return lin(hf, T, E, head, V);
}

/** HF causal-LM loss over a batch: shifted labels, -100 ignored, mean over the rest. */
export function refLoss(
  cfg: LlamaConfig,
  w: Map<string, Float64Array>,
  tokens: number[][],
  labels: number[][],
  lora?: RefLora,
): number {
  const V = cfg.vocabSize;
  let sum = 0,
    count = 0;
  tokens.forEach((seq, b) => {
    const lg = refLogits(cfg, w, seq, lora);
    for (let t = 0; t + 1 < seq.length; t++) {
      const y = labels[b]![t + 1]!;
      if (y === -100) continue;
      let mx = -Infinity;
      for (let c = 0; c < V; c++) mx = Math.max(mx, lg[t * V + c]!);
      let z = 0;
      for (let c = 0; c < V; c++) z += Math.exp(lg[t * V + c]! - mx);
      sum += Math.log(z) + mx - lg[t * V + y]!;
      count++;
    }
  });
  return sum / count;
}
