// Counter-based RNG: Threefry-2x32 from u32 IR ops, JAX-style keys (u32[2]), split/foldIn, uniform/normal/bernoulli/dropout/gumbel/categorical/randint/permutation/choice.
import { isFloat, numel, type DType } from "../ir/types.ts";
import { Tensor, type TensorLike } from "./core.ts";
import { TraceError } from "./errors.ts";
import {
  add,
  astype,
  bitcast,
  bitwiseAnd,
  bitwiseOr,
  bitwiseXor,
  cos,
  div,
  full,
  log,
  lt,
  maximum,
  mul,
  neg,
  shiftLeft,
  shiftRightLogical,
  sqrt,
  sub,
  where,
} from "./ops/elementwise.ts";
import { constant, iota } from "./ops/creation.ts";
import { reshape, slice, stack } from "./ops/shape.ts";
import { argmax, sum } from "./ops/reduce.ts";
import { cumsum } from "./ops/cumulative.ts";
import { argsort, topK } from "./ops/sort.ts";
import { take } from "./ops/indexing.ts";
import { gt, le, minimum, remainder } from "./ops/elementwise.ts";
import { atUserLoc } from "./loc.ts";
import { array, type DeviceArray } from "./array.ts";

/*
 * Keys are u32[2] tensors, as JAX's raw threefry keys; `key(seed)` is [seed >> 32, seed & 0xffffffff]. Splitting
 * and bit generation follow JAX's partitionable scheme (jax_threefry_partitionable, the default since JAX 0.5):
 * element i of a draw hashes the counter (0, i) under the key, and 32-bit draws are bits0 ^ bits1. uniform is
 * bit-compatible with jax.random.uniform for f32 and bf16; normal uses Box-Muller, not JAX's erfinv.
 */

const ROTATIONS = [
  [13, 15, 26, 6],
  [17, 29, 16, 24],
] as const;

function rotl(x: Tensor, r: number): Tensor {
  return bitwiseOr(shiftLeft(x, r), shiftRightLogical(x, 32 - r));
}

/**
 * Threefry-2x32 with 20 rounds (Salmon et al. 2011, Random123): hashes counters (x0, x1) under key (k0, k1).
 * All operands are u32 and broadcast together.
 */
export function threefry2x32(k0: Tensor, k1: Tensor, x0: Tensor, x1: Tensor): [Tensor, Tensor] {
  return atUserLoc(() => {
    for (const t of [k0, k1, x0, x1]) {
      if (t.dtype !== "u32")
        throw new TraceError("threefry2x32", `operands must be u32, got ${t.dtype}`, [
          k0.type,
          k1.type,
          x0.type,
          x1.type,
        ]);
    }
    const ks = [k0, k1, bitwiseXor(bitwiseXor(k0, k1), 0x1bd11bda)];
    let a = add(x0, ks[0]!);
    let b = add(x1, ks[1]!);
    for (let i = 0; i < 5; i++) {
      for (const r of ROTATIONS[i % 2]!) {
        a = add(a, b);
        b = bitwiseXor(rotl(b, r), a);
      }
      a = add(a, ks[(i + 1) % 3]!);
      b = add(add(b, ks[(i + 2) % 3]!), i + 1);
    }
    return [a, b];
  });
}

function checkKey(op: string, key: Tensor): void {
  if (!(key instanceof Tensor) || key.dtype !== "u32" || key.ndim !== 1 || key.shape[0] !== 2) {
    throw new TraceError(
      op,
      `expects a key: a u32[2] tensor from random.key or random.split, got ${key instanceof Tensor ? `${key.dtype}[${key.shape.join(",")}]` : typeof key}`,
      key instanceof Tensor ? [key.type] : [],
    );
  }
}

function keyWords(key: Tensor): [Tensor, Tensor] {
  return [slice(key, 0), slice(key, 1)];
}

/** A key from an integer seed (a number, or a rank-0 s32/u32 tensor), inside a trace; `keyArray` makes one outside. */
export function key(seed: TensorLike): Tensor {
  return atUserLoc(() => {
    if (typeof seed === "number") return constant(new Uint32Array(seedWords(seed)));
    if (seed.ndim !== 0 || (seed.dtype !== "s32" && seed.dtype !== "u32"))
      throw new TraceError("random.key", "seed must be a rank-0 s32 or u32", [seed.type]);
    const lo = seed.dtype === "u32" ? seed : bitcast(seed, "u32");
    const hi =
      seed.dtype === "u32" ? full([], 0, "u32") : where(lt(seed, 0), full([], 0xffffffff, "u32"), full([], 0, "u32"));
    return stack([hi, lo]);
  });
}

/** The words of `key(seed)` computed on the host: [seed >> 32, seed & 0xffffffff]. */
function seedWords(seed: number): [number, number] {
  if (!Number.isSafeInteger(seed)) throw new TraceError("random.key", `seed ${seed} must be a safe integer`);
  const hi = seed < 0 ? 0xffffffff - Math.floor(-seed / 2 ** 32) : Math.floor(seed / 2 ** 32);
  return [hi >>> 0, seed >>> 0];
}

/** `key(seed)` as a device array, made outside any trace, to pass into jit functions. */
export function keyArray(seed: number): DeviceArray {
  return array(new Uint32Array(seedWords(seed)));
}

/** `num` new keys, stacked as u32[num, 2] (destructure with `const [a, b] = random.split(key)`). */
export function split(key: Tensor, num = 2): Tensor {
  return atUserLoc(() => {
    checkKey("random.split", key);
    const [k0, k1] = keyWords(key);
    const [b0, b1] = threefry2x32(k0, k1, full([num], 0, "u32"), iota([num], 0, "u32"));
    return stack([b0, b1], 1);
  });
}

/** A key derived from `key` and an integer (a step number, a layer index). */
export function foldIn(key: Tensor, data: TensorLike): Tensor {
  return atUserLoc(() => {
    checkKey("random.foldIn", key);
    const [k0, k1] = keyWords(key);
    const d = typeof data === "number" ? full([], data >>> 0, "u32") : astype(data, "u32");
    const [b0, b1] = threefry2x32(k0, k1, full([], 0, "u32"), d);
    return stack([b0, b1]);
  });
}

/** `shape` of uniformly random u32 words. */
export function bits(key: Tensor, shape: readonly number[]): Tensor {
  return atUserLoc(() => {
    checkKey("random.bits", key);
    const [k0, k1] = keyWords(key);
    const n = numel(shape);
    const [b0, b1] = threefry2x32(k0, k1, full([n], 0, "u32"), iota([n], 0, "u32"));
    return reshape(bitwiseXor(b0, b1), shape);
  });
}

export interface UniformOpts {
  dtype?: DType;
  minval?: number;
  maxval?: number;
}

const MANTISSA: Partial<Record<DType, number>> = { f32: 23, bf16: 7, f16: 10 };

/**
 * Uniform floats in [minval, maxval) (default [0, 1)): random mantissa bits under exponent 0 give [1, 2), minus 1.
 * 16-bit dtypes use 16 random bits, as JAX does.
 */
export function uniform(key: Tensor, shape: readonly number[], opts: UniformOpts = {}): Tensor {
  return atUserLoc(() => {
    const dtype = opts.dtype ?? "f32";
    const nmant = MANTISSA[dtype];
    if (nmant === undefined) throw new TraceError("random.uniform", `dtype must be a float, got ${dtype}`);
    const minval = opts.minval ?? 0,
      maxval = opts.maxval ?? 1;
    let b = bits(key, shape);
    // The mantissa bits of a 1.xxx f32: 16-bit dtypes take theirs from the low 16 random bits, placed at the top of
    // the f32 mantissa so the value is exact in the target dtype.
    b =
      nmant === 23
        ? shiftRightLogical(b, 9)
        : shiftLeft(shiftRightLogical(bitwiseAnd(b, 0xffff), 16 - nmant), 23 - nmant);
    const one = astype(bitcast(bitwiseOr(b, 0x3f800000), "f32"), dtype);
    const f = sub(one, 1);
    const scaled = minval === 0 && maxval === 1 ? f : add(mul(f, maxval - minval), minval);
    return minval === 0 && maxval === 1 ? scaled : maximum(scaled, minval);
  });
}

/** Standard normal samples (Box-Muller on two uniform draws, computed in f32). */
export function normal(key: Tensor, shape: readonly number[], opts: { dtype?: DType } = {}): Tensor {
  return atUserLoc(() => {
    const dtype = opts.dtype ?? "f32";
    if (!isFloat(dtype)) throw new TraceError("random.normal", `dtype must be a float, got ${dtype}`);
    const [ka, kb] = split(key);
    const u1 = sub(1, uniform(ka!, shape)); // (0, 1]: log(u1) is finite
    const u2 = uniform(kb!, shape);
    const r = sqrt(mul(neg(log(u1)), 2));
    return astype(mul(r, cos(mul(u2, 2 * Math.PI))), dtype);
  });
}

/** bool samples that are true with probability `p` (a number, or a float tensor broadcast to `shape`). */
export function bernoulli(key: Tensor, p: TensorLike = 0.5, shape?: readonly number[]): Tensor {
  return atUserLoc(() => {
    const s = shape ?? (p instanceof Tensor ? p.shape : []);
    const dt = p instanceof Tensor ? p.dtype : "f32";
    return lt(uniform(key, s, { dtype: dt }), p);
  });
}

/** Inverted dropout: zeroes each element with probability `rate` and scales the rest by 1/(1 - rate). */
export function dropout(x: Tensor, rate: number, key: Tensor): Tensor {
  return atUserLoc(() => {
    if (!(rate >= 0 && rate <= 1)) throw new TraceError("dropout", `rate ${rate} must be in [0, 1]`, [x.type]);
    if (rate === 0) return x;
    if (rate === 1) return full(x.shape, 0, x.dtype);
    const keep = bernoulli(key, 1 - rate, x.shape);
    return where(keep, div(x, 1 - rate), 0);
  });
}

/** Standard Gumbel samples, -log(-log(u)) with u uniform in [tiny, 1) as JAX draws them (finite everywhere). */
export function gumbel(key: Tensor, shape: readonly number[], opts: { dtype?: DType } = {}): Tensor {
  return atUserLoc(() => {
    const dtype = opts.dtype ?? "f32";
    if (!isFloat(dtype)) throw new TraceError("random.gumbel", `dtype must be a float, got ${dtype}`);
    const u = uniform(key, shape, { minval: 1.1754943508222875e-38, maxval: 1 });
    return astype(neg(log(neg(log(u)))), dtype);
  });
}

/**
 * Indices (s32) drawn from the categorical distribution softmax(logits) along `axis` (default last), one per slice:
 * the Gumbel-max trick, argmax(logits + gumbel), as jax.random.categorical. Logits of -inf are never drawn.
 */
export function categorical(key: Tensor, logits: Tensor, axis = -1): Tensor {
  return atUserLoc(() => {
    checkKey("random.categorical", key);
    if (!isFloat(logits.dtype))
      throw new TraceError("random.categorical", `logits must be floats, got ${logits.dtype}`, [logits.type]);
    const noisy = add(astype(logits, "f32"), gumbel(key, logits.shape));
    return argmax(noisy, axis);
  });
}

function rank0Int(op: string, v: TensorLike, what: string, dtype: "s32" | "u32"): Tensor {
  const [lo, hi] = dtype === "s32" ? [-(2 ** 31), 2 ** 31] : [0, 2 ** 32];
  if (typeof v === "number") {
    if (!Number.isSafeInteger(v) || v < lo || v >= hi)
      throw new TraceError(op, `${what} ${v} must be a ${dtype} integer`);
    return full([], v, dtype);
  }
  if (v.dtype !== dtype || v.ndim !== 0) throw new TraceError(op, `${what} must be a rank-0 ${dtype}`, [v.type]);
  return v;
}

/**
 * Integers uniform in [minval, maxval), s32 (default) or u32 (jax.random.randint, same algorithm: two 32-bit draws
 * combined modulo the span, so spans near 2^32 stay nearly unbiased). maxval <= minval gives minval, as JAX.
 */
export function randint(
  key: Tensor,
  shape: readonly number[],
  minval: TensorLike,
  maxval: TensorLike,
  dtype: "s32" | "u32" = "s32",
): Tensor {
  return atUserLoc(() => {
    checkKey("random.randint", key);
    if (dtype !== "s32" && dtype !== "u32")
      throw new TraceError("random.randint", `dtype must be s32 or u32, got ${dtype}`);
    const lo = rank0Int("random.randint", minval, "minval", dtype);
    const hi = rank0Int("random.randint", maxval, "maxval", dtype);
    const [k1, k2] = split(key);
    const higher = bits(k1!, shape);
    const lower = bits(k2!, shape);
    // hi - lo < 2^32, and s32 subtraction wraps, so its bits read as u32 are the exact span; 1 when empty.
    const diff = sub(hi, lo);
    const span = where(gt(hi, lo), dtype === "u32" ? diff : bitcast(diff, "u32"), full([], 1, "u32"));
    // 2^32 mod span, as (2^16 mod span)^2 mod span so nothing overflows.
    let multiplier = remainder(full([], 2 ** 16, "u32"), span);
    multiplier = remainder(mul(multiplier, multiplier), span);
    const offset = remainder(add(mul(remainder(higher, span), multiplier), remainder(lower, span)), span);
    return add(lo, dtype === "u32" ? offset : bitcast(offset, "s32"));
  });
}

/** Rounds of sorting by fresh 32-bit keys that make a collision (which would bias the order) unlikely, as JAX's _shuffle. */
function shuffleRounds(n: number): number {
  return Math.max(1, Math.ceil((3 * Math.log(Math.max(1, n))) / Math.log(2 ** 32)));
}

/**
 * A random permutation (jax.random.permutation): of arange(n) for a number, or of `x`'s rows (axis 0) for a tensor.
 * Sorts by random u32 keys, in as many rounds as JAX takes.
 */
export function permutation(key: Tensor, x: number | Tensor): Tensor {
  return atUserLoc(() => {
    checkKey("random.permutation", key);
    if (typeof x === "number") {
      if (!Number.isSafeInteger(x) || x < 0)
        throw new TraceError("random.permutation", `n ${x} must be an integer >= 0`);
      let perm = iota([x], 0, "s32");
      let k = key;
      for (let r = 0; r < shuffleRounds(x); r++) {
        const [next, sub_] = split(k);
        k = next!;
        perm = take(perm, argsort(bits(sub_!, [x])), 0);
      }
      return perm;
    }
    if (!(x instanceof Tensor) || x.ndim === 0)
      throw new TraceError(
        "random.permutation",
        "x must be a number or a tensor of rank >= 1",
        x instanceof Tensor ? [x.type] : [],
      );
    return take(x, permutation(key, x.shape[0]!), 0);
  });
}

export interface ChoiceOpts {
  /** Draw with replacement (default true, as JAX). */
  replace?: boolean;
  /** Probabilities of each of the n entries (f32[n], summing to 1); uniform when absent. */
  p?: Tensor;
}

/**
 * `shape` draws from arange(n) (a number) or from the rows of `a` (jax.random.choice): with replacement, uniform
 * (randint) or by inverting p's CDF; without, a prefix of a permutation or, with p, the Gumbel top-k.
 */
export function choice(key: Tensor, a: number | Tensor, shape: readonly number[] = [], opts: ChoiceOpts = {}): Tensor {
  return atUserLoc(() => {
    checkKey("random.choice", key);
    const op = "random.choice";
    if (a instanceof Tensor && a.ndim === 0) throw new TraceError(op, "a must have rank >= 1", [a.type]);
    const n = typeof a === "number" ? a : a.shape[0]!;
    if (!Number.isSafeInteger(n) || n < 0) throw new TraceError(op, `n ${n} must be an integer >= 0`);
    const count = numel(shape);
    const replace = opts.replace ?? true;
    const p = opts.p;
    if (p !== undefined && (!(p instanceof Tensor) || !isFloat(p.dtype) || p.ndim !== 1 || p.shape[0] !== n))
      throw new TraceError(op, `p must be a float tensor of shape [${n}]`, p instanceof Tensor ? [p.type] : []);
    if (n === 0 && count > 0) throw new TraceError(op, "cannot take a non-empty sample from an empty population");
    if (!replace && count > n)
      throw new TraceError(op, `cannot take a sample of ${count} > ${n} without replacement (replace: false)`);
    let idx: Tensor;
    if (replace && p === undefined) idx = randint(key, shape, 0, n);
    else if (replace) {
      // Inverse CDF: the index of the first cumulative probability above u * total.
      const cdf = cumsum(astype(p!, "f32"), 0);
      const total = slice(cdf, n - 1);
      const u = mul(uniform(key, [count]), total);
      const below = le(reshape(cdf, [1, n]), reshape(u, [count, 1]));
      idx = reshape(minimum(sum(astype(below, "s32"), 1), n - 1), shape);
    } else if (p === undefined) idx = reshape(slice(permutation(key, n), [0, count]), shape);
    else {
      const noisy = add(log(astype(p, "f32")), gumbel(key, [n]));
      idx = reshape(topK(noisy, count)[1], shape);
    }
    return typeof a === "number" ? idx : take(a, idx, 0);
  });
}
