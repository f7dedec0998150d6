// RoPE frequencies and cos/sin tables for plain and scaled RoPE (linear, dynamic NTK, YaRN, llama3), equal to transformers' in f32.
import { tx, type Tensor } from "tessera";
import type { LlamaConfig, RopeScaling } from "../src/formats/hf_config.ts";

/** What one forward pass needs: inverse frequencies [headDim / 2] and the factor cos and sin are multiplied by. */
export interface RopeParams {
  invFreq: Float32Array;
  /** 1 except for YaRN (its attention factor), which transformers folds into cos and sin. */
  attentionScaling: number;
}

const f32 = Math.fround;

/**
 * RoPE inverse frequencies exactly as transformers computes them in f32: 1 / theta^(arange(0, D, 2) / D), each step
 * rounded to f32.
 */
export function ropeInvFreq(headDim: number, theta: number): Float32Array {
  const out = new Float32Array(headDim / 2);
  for (let i = 0; i < out.length; i++) {
    const e = f32(f32(2 * i) / headDim);
    out[i] = f32(1 / f32(theta ** e));
  }
  return out;
}

/** The pretraining context a scaling stretches: its original_max_position_embeddings, else max_position_embeddings. */
function originalContext(cfg: LlamaConfig, s: RopeScaling): number {
  return (
    ("originalMaxPositionEmbeddings" in s ? s.originalMaxPositionEmbeddings : undefined) ?? cfg.maxPositionEmbeddings
  );
}

/**
 * The longest sequence the model's RoPE is meant for: max_position_embeddings, or with scaling, factor times the
 * original context when that is longer. `train` refuses a --seq past it.
 */
export function ropeContext(cfg: LlamaConfig): number {
  const s = cfg.ropeScaling;
  if (s === undefined) return cfg.maxPositionEmbeddings;
  return Math.max(cfg.maxPositionEmbeddings, Math.floor(s.factor * originalContext(cfg, s)));
}

/**
 * The scaling `--rope-scaling kind:factor` sets: llama3 with Meta's low/high frequency factors 1 and 4, and every
 * kind stretching the model's max_position_embeddings (left out here, so it resolves against the model).
 */
export function ropeScalingFromOption(kind: RopeScaling["kind"], factor: number): RopeScaling {
  return kind === "llama3" ? { kind, factor, lowFreqFactor: 1, highFreqFactor: 4 } : { kind, factor };
}

/**
 * transformers' `_compute_*_parameters` for a sequence of `seq` tokens: host arithmetic in float64 where Python does
 * it on floats, rounded to f32 wherever torch holds an f32 tensor. Only dynamic NTK depends on `seq` (it rescales
 * the base once seq exceeds max_position_embeddings).
 */
export function ropeParameters(cfg: LlamaConfig, seq: number): RopeParams {
  const s = cfg.ropeScaling;
  const dim = cfg.headDim;
  if (s === undefined) return { invFreq: ropeInvFreq(dim, cfg.ropeTheta), attentionScaling: 1 };
  switch (s.kind) {
    case "linear":
      return { invFreq: ropeInvFreq(dim, cfg.ropeTheta).map((f) => f32(f / s.factor)), attentionScaling: 1 };
    case "dynamic":
      return { invFreq: dynamicInvFreq(cfg, s.factor, seq), attentionScaling: 1 };
    case "yarn":
      return yarn(cfg, s);
    case "llama3":
      return { invFreq: llama3InvFreq(cfg, s), attentionScaling: 1 };
  }
}

/**
 * Dynamic NTK: base * ((factor * L / max) - (factor - 1)) ^ (D / (D - 2)) with L = max(seq, max), in float64 (as
 * transformers 5 computes it from a Python int; rounding each step to f32 instead misses 4 of the fixture's 8
 * frequencies by an ulp), then the default frequencies from that base in f32.
 */
function dynamicInvFreq(cfg: LlamaConfig, factor: number, seq: number): Float32Array {
  const max = cfg.maxPositionEmbeddings;
  if (seq <= max) return ropeInvFreq(cfg.headDim, cfg.ropeTheta);
  const dim = cfg.headDim;
  const base = cfg.ropeTheta * ((factor * seq) / max - (factor - 1)) ** (dim / (dim - 2));
  return ropeInvFreq(dim, base);
}

/** YaRN's attention factor ("mscale" in the paper): 0.1 * m * ln(scale) + 1 above scale 1. */
function yarnMscale(scale: number, m = 1): number {
  return scale <= 1 ? 1 : 0.1 * m * Math.log(scale) + 1;
}

/**
 * YaRN: frequencies that turn fewer than beta_slow times over the original context are interpolated (divided by
 * factor), those turning more than beta_fast times are kept, with a linear ramp between; cos and sin are scaled by
 * the attention factor.
 */
function yarn(cfg: LlamaConfig, s: Extract<RopeScaling, { kind: "yarn" }>): RopeParams {
  const dim = cfg.headDim;
  const base = cfg.ropeTheta;
  const factor = s.factor;
  const orig = originalContext(cfg, s);
  let attentionScaling = s.attentionFactor;
  if (attentionScaling === undefined) {
    attentionScaling =
      s.mscale && s.mscaleAllDim
        ? yarnMscale(factor, s.mscale) / yarnMscale(factor, s.mscaleAllDim)
        : yarnMscale(factor);
  }
  const betaFast = s.betaFast ?? 32;
  const betaSlow = s.betaSlow ?? 1;
  // The dimension index at which a frequency turns `rotations` times over the original context (float64 in Python).
  const correctionDim = (rotations: number) =>
    (dim * Math.log(orig / (rotations * 2 * Math.PI))) / (2 * Math.log(base));
  let low = correctionDim(betaFast);
  let high = correctionDim(betaSlow);
  if (s.truncate ?? true) {
    low = Math.floor(low);
    high = Math.ceil(high);
  }
  low = Math.max(low, 0);
  high = Math.min(high, dim - 1);
  if (low === high) high += 0.001; // transformers' guard against a zero-width ramp
  const half = dim / 2;
  const invFreq = new Float32Array(half);
  for (let i = 0; i < half; i++) {
    const posFreq = f32(base ** f32(f32(2 * i) / dim));
    const extrapolation = f32(1 / posFreq);
    const interpolation = f32(1 / f32(f32(factor) * posFreq));
    const ramp = Math.min(1, Math.max(0, f32(f32(i - f32(low)) / f32(high - low))));
    const keep = f32(1 - ramp); // the share of the unscaled frequency
    invFreq[i] = f32(f32(interpolation * f32(1 - keep)) + f32(extrapolation * keep));
  }
  return { invFreq, attentionScaling };
}

/**
 * Llama 3.1: wavelengths longer than original / low_freq_factor are divided by factor, shorter than original /
 * high_freq_factor kept, and those between interpolated smoothly.
 */
function llama3InvFreq(cfg: LlamaConfig, s: Extract<RopeScaling, { kind: "llama3" }>): Float32Array {
  const orig = originalContext(cfg, s);
  const lowWavelen = orig / s.lowFreqFactor;
  const highWavelen = orig / s.highFreqFactor;
  return ropeInvFreq(cfg.headDim, cfg.ropeTheta).map((inv) => {
    const wavelen = f32(f32(2 * Math.PI) / inv);
    if (wavelen > f32(lowWavelen)) return f32(inv / s.factor);
    if (wavelen < f32(highWavelen)) return inv;
    const smooth = f32(f32(f32(f32(orig) / wavelen) - s.lowFreqFactor) / f32(s.highFreqFactor - s.lowFreqFactor));
    return f32(f32(f32(f32(1 - smooth) * inv) / s.factor) + f32(smooth * inv));
  });
}

/**
 * cos and sin [seq, headDim] on the host, as transformers' LlamaRotaryEmbedding returns them in f32: angle =
 * position * inv_freq in f32, the half repeated, times the attention scaling. A reference for the traced tables.
 */
export function ropeTablesHost(p: RopeParams, seq: number): { cos: Float32Array; sin: Float32Array } {
  const half = p.invFreq.length;
  const dim = 2 * half;
  const scale = f32(p.attentionScaling);
  const cos = new Float32Array(seq * dim);
  const sin = new Float32Array(seq * dim);
  for (let t = 0; t < seq; t++)
    for (let i = 0; i < half; i++) {
      const ang = f32(t * p.invFreq[i]!);
      const c = f32(f32(Math.cos(ang)) * scale);
      const s = f32(f32(Math.sin(ang)) * scale);
      cos[t * dim + i] = cos[t * dim + half + i] = c;
      sin[t * dim + i] = sin[t * dim + half + i] = s;
    }
  return { cos, sin };
}

/**
 * cos and sin of position * inv_freq for positions 0..S-1, traced in f32: each [S, D] (the half repeated), times
 * YaRN's attention scaling. The frequencies are constants (computed on the host for this S); the tables are computed
 * by the program, so a long sequence does not put S x D constants into it.
 */
export function ropeTables(cfg: LlamaConfig, seq: number): [Tensor, Tensor] {
  const p = ropeParameters(cfg, seq);
  const half = cfg.headDim / 2;
  const pos = tx.iota([seq, half], 0, "f32");
  const freqs = pos.mul(tx.constant(p.invFreq).reshape([1, half]));
  const ang = tx.concatenate([freqs, freqs], -1);
  if (p.attentionScaling === 1) return [ang.cos(), ang.sin()];
  const scale = f32(p.attentionScaling);
  return [ang.cos().mul(scale), ang.sin().mul(scale)];
}

/**
 * ropeTables at explicit positions [B, S] (s32), e.g. restarting at each record of a packed row: cos and sin
 * [B, S, D], each row equal to the table's row at that position (the angle is the same f32 product either way),
 * so positions 0..S-1 reproduce ropeTables exactly. `seq` is the sequence length the parameters are for.
 */
export function ropeTablesAt(cfg: LlamaConfig, seq: number, positions: Tensor): [Tensor, Tensor] {
  const p = ropeParameters(cfg, seq);
  const half = cfg.headDim / 2;
  const [B, S] = [positions.shape[0]!, positions.shape[1]!];
  const pos = positions.astype("f32").reshape([B, S, 1]);
  const freqs = pos.mul(tx.constant(p.invFreq).reshape([1, 1, half]));
  const ang = tx.concatenate([freqs, freqs], -1);
  if (p.attentionScaling === 1) return [ang.cos(), ang.sin()];
  const scale = f32(p.attentionScaling);
  return [ang.cos().mul(scale), ang.sin().mul(scale)];
}
