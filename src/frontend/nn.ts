// tx.nn: the neural-network helpers a JAX user reaches for in jax.nn (activations, norms, losses, initializers).
import { erf } from "../ir/elementwise.ts";
import { isFloat, isInteger, type DType } from "../ir/types.ts";
import type { Tensor } from "./core.ts";
import { TraceError } from "./errors.ts";
import { atUserLoc } from "./loc.ts";
import * as rd from "./ops/reduce.ts";
import { full, where } from "./ops/elementwise.ts";
import { takeAlongAxis, take } from "./ops/indexing.ts";
import { normal as randomNormal, uniform } from "./random.ts";

export { silu } from "./ops/elementwise.ts";
export { dropout } from "./random.ts";

/** max(x, 0). */
export function relu(x: Tensor): Tensor {
  return atUserLoc(() => x.maximum(0));
}

/**
 * GELU. `approximate: true` (the default, as jax.nn.gelu) is the tanh form
 * 0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3))); `approximate: false` is the exact 0.5 x (1 + erf(x / sqrt 2)).
 */
export function gelu(x: Tensor, opts: { approximate?: boolean } = {}): Tensor {
  return atUserLoc(() => {
    if (opts.approximate ?? true) {
      const inner = x.add(x.mul(x).mul(x).mul(0.044715)).mul(Math.sqrt(2 / Math.PI));
      return x.mul(0.5).mul(inner.tanh().add(1));
    }
    return x.mul(0.5).mul(x.mul(Math.SQRT1_2).erf().add(1));
  });
}

/** softmax along `axis` (default last), numerically stable; the shift carries no gradient (tx.softmax). */
export function softmax(x: Tensor, axis = -1): Tensor {
  return rd.softmax(x, axis, "nn.softmax");
}

/** log(sum(exp(x))) along `axis` (default last, unlike tx.logsumexp's all axes), without keeping it. */
export function logsumexp(x: Tensor, axis: number | readonly number[] = -1): Tensor {
  return rd.logsumexp(x, axis, {}, "nn.logsumexp");
}

/** x - logsumexp(x) along `axis` (default last). */
export function logSoftmax(x: Tensor, axis = -1): Tensor {
  return rd.logSoftmax(x, axis, "nn.logSoftmax");
}

function checkFloat(op: string, x: Tensor): void {
  if (!isFloat(x.dtype)) throw new TraceError(op, `needs a float tensor, got ${x.dtype}`, [x.type]);
}

/** Normalization statistics are taken in f32 whatever the input dtype (bf16 means lose too much). */
function inF32(x: Tensor, f: (x32: Tensor) => Tensor): Tensor {
  return x.dtype === "f32" ? f(x) : f(x.astype("f32")).astype(x.dtype);
}

export interface LayerNormOpts {
  /** Multiplies the normalized x, broadcast against it (shape [..., D] or [D]). */
  readonly scale?: Tensor;
  /** Added after scale. */
  readonly bias?: Tensor;
  /** Default 1e-5 (torch's and flax's LayerNorm default is 1e-5 and 1e-6; pass the one you need). */
  readonly eps?: number;
}

/** (x - mean) / sqrt(var + eps) * scale + bias over the last axis (biased variance, as torch and flax). */
export function layerNorm(x: Tensor, opts: LayerNormOpts = {}): Tensor {
  return atUserLoc(() => {
    checkFloat("nn.layerNorm", x);
    const y = inF32(x, (x32) => {
      const mu = x32.mean(-1, { keepdims: true });
      const d = x32.sub(mu);
      const v = d.square().mean(-1, { keepdims: true });
      return d.mul(v.add(opts.eps ?? 1e-5).rsqrt());
    });
    const scaled = opts.scale ? y.mul(opts.scale) : y;
    return opts.bias ? scaled.add(opts.bias) : scaled;
  });
}

/** x / sqrt(mean(x^2) + eps) * scale over the last axis (Llama's RMSNorm; eps default 1e-6). */
export function rmsNorm(x: Tensor, opts: { readonly scale?: Tensor; readonly eps?: number } = {}): Tensor {
  return atUserLoc(() => {
    checkFloat("nn.rmsNorm", x);
    const y = inF32(x, (x32) =>
      x32.mul(
        x32
          .square()
          .mean(-1, { keepdims: true })
          .add(opts.eps ?? 1e-6)
          .rsqrt(),
      ),
    );
    return opts.scale ? y.mul(opts.scale) : y;
  });
}

export interface CrossEntropyOpts {
  /** Labels equal to this are left out of the loss and of the mean's count (torch's ignore_index, e.g. -100). */
  readonly ignoreIndex?: number;
  /** Mixes the one-hot target with the uniform distribution: (1 - s) * onehot + s / classes (torch's). */
  readonly labelSmoothing?: number;
}

/**
 * Mean cross-entropy of `logits` [..., classes] against integer `labels` [...], over the labels that are not
 * `ignoreIndex` (0 when every label is ignored, where torch gives NaN).
 */
export function crossEntropy(logits: Tensor, labels: Tensor, opts: CrossEntropyOpts = {}): Tensor {
  return atUserLoc(() => {
    const op = "nn.crossEntropy";
    checkFloat(op, logits);
    if (!isInteger(labels.dtype))
      throw new TraceError(op, `labels must be integer class ids, got ${labels.dtype}`, [logits.type, labels.type]);
    const want = logits.shape.slice(0, -1);
    if (labels.ndim !== want.length || labels.shape.some((d, i) => d !== want[i]))
      throw new TraceError(op, `labels must have the logits' shape without the class axis, [${want.join(",")}]`, [
        logits.type,
        labels.type,
      ]);
    const s = opts.labelSmoothing ?? 0;
    if (!(s >= 0 && s <= 1)) throw new TraceError(op, `labelSmoothing ${s} must be in [0, 1]`);
    const logp = logSoftmax(logits.astype("f32"));
    const valid = opts.ignoreIndex === undefined ? undefined : labels.ne(opts.ignoreIndex);
    // Ignored positions gather class 0 (any in-range id) and are then masked out.
    const ids = valid ? where(valid, labels, 0) : labels;
    let loss = takeAlongAxis(logp, ids.astype("s32").expandDims(-1), -1).squeeze(-1).neg();
    if (s > 0) loss = loss.mul(1 - s).add(logp.mean(-1).mul(-s));
    if (!valid) return loss.mean();
    const count = valid.astype("f32").sum();
    return where(valid, loss, 0).sum().div(count.maximum(1));
  });
}

/** Rows of `table` [vocab, ...] picked by integer `ids` (any shape): [...ids.shape, ...]. */
export function embedding(table: Tensor, ids: Tensor): Tensor {
  return take(table, ids, 0);
}

/** An initializer as jax.nn.initializers returns one: a threefry key, a shape and a dtype (default f32). */
export type Initializer = (key: Tensor, shape: readonly number[], dtype?: DType) => Tensor;

/*
 * The inverse error function, by Giles' single-precision polynomials ("Approximating the erfinv function", 2010),
 * the approximation XLA uses for ErfInv; accurate to a few f32 ulps on (-1, 1). It maps uniform samples to
 * truncated normal ones.
 */
function erfinv(x: Tensor): Tensor {
  const w = x.neg().add(1).mul(x.add(1)).log().neg();
  const poly = (t: Tensor, cs: readonly number[]) =>
    cs.slice(1).reduce((p, c) => p.mul(t).add(c), full(t.shape, cs[0]!, t.dtype));
  const small = poly(
    w.sub(2.5),
    [
      2.81022636e-8, 3.43273939e-7, -3.5233877e-6, -4.39150654e-6, 0.00021858087, -0.00125372503, -0.00417768164,
      0.246640727, 1.50140941,
    ],
  );
  // sqrt of a clamped w so the unused branch stays finite where w < 5.
  const big = poly(
    w.maximum(5).sqrt().sub(3),
    [
      -0.000200214257, 0.000100950558, 0.00134934322, -0.00367342844, 0.00573950773, -0.0076224613, 0.00943887047,
      1.00167406, 2.83297682,
    ],
  );
  return where(w.lt(5), small, big).mul(x);
}

function sampleTruncatedNormal(key: Tensor, shape: readonly number[], lo: number, hi: number, dtype: DType): Tensor {
  // Uniform on [erf(lo/sqrt2), erf(hi/sqrt2)] through sqrt2 * erfinv is a standard normal truncated to [lo, hi].
  const a = erf(lo / Math.SQRT2);
  const b = erf(hi / Math.SQRT2);
  const u = uniform(key, shape, { dtype: "f32", minval: a, maxval: b });
  return erfinv(u).mul(Math.SQRT2).maximum(lo).minimum(hi).astype(dtype);
}

/** Fans as JAX computes them: in = shape[-2], out = shape[-1], both times the product of the other dims. */
function fans(op: string, shape: readonly number[]): { fanIn: number; fanOut: number } {
  if (shape.length < 2)
    throw new TraceError(op, `needs a shape of rank >= 2 to know its fans, got [${shape.join(",")}]`);
  const receptive = shape.slice(0, -2).reduce((a, b) => a * b, 1);
  return { fanIn: shape[shape.length - 2]! * receptive, fanOut: shape[shape.length - 1]! * receptive };
}

// The standard deviation of a standard normal truncated to [-2, 2], which he/truncated initializers divide by.
const TRUNC_STD = 0.87962566103423978;

/** jax.nn.initializers, each a factory of an Initializer. */
export const initializers = {
  zeros:
    (): Initializer =>
    (_key, shape, dtype = "f32") =>
      full(shape, 0, dtype),
  ones:
    (): Initializer =>
    (_key, shape, dtype = "f32") =>
      full(shape, 1, dtype),
  /** N(0, stddev^2), stddev default 1e-2. */
  normal:
    (stddev = 1e-2): Initializer =>
    (key, shape, dtype = "f32") =>
      atUserLoc(() => randomNormal(key, shape).mul(stddev).astype(dtype)),
  /** N(0, stddev^2) truncated to two standard deviations (stddev default 1e-2, as JAX: not rescaled). */
  truncatedNormal:
    (stddev = 1e-2): Initializer =>
    (key, shape, dtype = "f32") =>
      atUserLoc(() => sampleTruncatedNormal(key, shape, -2, 2, "f32").mul(stddev).astype(dtype)),
  /** Uniform on +-sqrt(6 / (fanIn + fanOut)). */
  glorotUniform:
    (): Initializer =>
    (key, shape, dtype = "f32") =>
      atUserLoc(() => {
        const { fanIn, fanOut } = fans("nn.initializers.glorotUniform", shape);
        const limit = Math.sqrt(6 / (fanIn + fanOut));
        return uniform(key, shape, { dtype: "f32", minval: -limit, maxval: limit }).astype(dtype);
      }),
  /** Truncated normal with variance 2 / fanIn (JAX's he_normal: variance scaling 2, fan_in, truncated_normal). */
  heNormal:
    (): Initializer =>
    (key, shape, dtype = "f32") =>
      atUserLoc(() => {
        const { fanIn } = fans("nn.initializers.heNormal", shape);
        const std = Math.sqrt(2 / fanIn) / TRUNC_STD;
        return sampleTruncatedNormal(key, shape, -2, 2, "f32").mul(std).astype(dtype);
      }),
};
