// Reductions with axis/keepdims (sum, mean, max, min, argmax, argmin, var, std) and the numerically stable logsumexp/softmax family.
import { isFloat, type DType } from "../../ir/types.ts";
import { bind1, type Tensor } from "../core.ts";
import { add, astype, div, exp, log, maximum, minimum, mul, sqrt, sub, where, eq } from "./elementwise.ts";
import { normAxes, normAxis, reshape } from "./shape.ts";
import { iota } from "./creation.ts";
import { TraceError } from "../errors.ts";
import { atUserLoc } from "../loc.ts";

export interface ReduceOpts {
  /** Keep reduced axes as size 1 (numpy keepdims), so the result broadcasts against the input. */
  keepdims?: boolean;
}

type Axes = number | readonly number[] | undefined;

function keep(x: Tensor, r: Tensor, axes: readonly number[], keepdims: boolean | undefined): Tensor {
  return keepdims
    ? reshape(
        r,
        x.shape.map((d, i) => (axes.includes(i) ? 1 : d)),
      )
    : r;
}

// bf16/f16 sums accumulate in f32 and round once at the end, as JAX and PyTorch do: a 4096-wide bf16 sum
// accumulated in bf16 loses most of its mantissa.
function accumulator(d: DType): DType {
  return d === "bf16" || d === "f16" ? "f32" : d;
}

/** Sum over `axis` (default: all axes). bf16/f16 inputs accumulate in f32. */
export function sum(x: Tensor, axis?: Axes, opts: ReduceOpts = {}): Tensor {
  return atUserLoc(() => {
    const axes = normAxes("sum", axis, x.ndim, x);
    if (axes.length === 0) return x;
    if (x.dtype === "bool") throw new TraceError("sum", "cannot sum bool; convert with astype first", [x.type]);
    const acc = accumulator(x.dtype);
    const r = astype(bind1("reduce_sum", [astype(x, acc)], { axes }), x.dtype);
    return keep(x, r, axes, opts.keepdims);
  });
}

/** Mean over `axis` (default: all axes), accumulated like `sum`; integer and bool means are f32, as numpy's. */
export function mean(x: Tensor, axis?: Axes, opts: ReduceOpts = {}): Tensor {
  return atUserLoc(() => {
    if (!isFloat(x.dtype)) return mean(astype(x, "f32"), axis, opts);
    const axes = normAxes("mean", axis, x.ndim, x);
    if (axes.length === 0) return x;
    const n = axes.reduce((p, a) => p * x.shape[a]!, 1);
    const acc = accumulator(x.dtype);
    const s = bind1("reduce_sum", [astype(x, acc)], { axes });
    const r = astype(div(s, n), x.dtype);
    return keep(x, r, axes, opts.keepdims);
  });
}

/** Maximum over `axis` (default: all axes); NaN propagates. */
export function max(x: Tensor, axis?: Axes, opts: ReduceOpts = {}): Tensor {
  return atUserLoc(() => {
    const axes = normAxes("max", axis, x.ndim, x);
    if (axes.length === 0) return x;
    return keep(x, bind1("reduce_max", [x], { axes }), axes, opts.keepdims);
  });
}

/** Minimum over `axis` (default: all axes); NaN propagates. */
export function min(x: Tensor, axis?: Axes, opts: ReduceOpts = {}): Tensor {
  return atUserLoc(() => {
    const axes = normAxes("min", axis, x.ndim, x);
    if (axes.length === 0) return x;
    return keep(x, bind1("reduce_min", [x], { axes }), axes, opts.keepdims);
  });
}

/** Index (s32) of the first maximum along one axis. */
export function argmax(x: Tensor, axis = -1, opts: ReduceOpts = {}): Tensor {
  return atUserLoc(() => {
    const a = normAxis("argmax", axis, x.ndim, x);
    const m = max(x, a, { keepdims: true });
    const idx = iota(x.shape, a, "s32");
    const first = min(where(eq(x, m), idx, x.shape[a]!), a);
    return keep(x, first, [a], opts.keepdims);
  });
}

/** Index (s32) of the first minimum along one axis (jnp.argmin). */
export function argmin(x: Tensor, axis = -1, opts: ReduceOpts = {}): Tensor {
  return atUserLoc(() => {
    const a = normAxis("argmin", axis, x.ndim, x);
    const m = min(x, a, { keepdims: true });
    const idx = iota(x.shape, a, "s32");
    const first = min(where(eq(x, m), idx, x.shape[a]!), a);
    return keep(x, first, [a], opts.keepdims);
  });
}

export interface VarOpts extends ReduceOpts {
  /** Delta degrees of freedom: the divisor is N - ddof (0: population variance, as jnp.var's default). */
  ddof?: number;
}

/** Variance over `axis` (default: all axes), mean((x - mean(x))^2) * N / (N - ddof); integer inputs give f32. */
export function variance(x: Tensor, axis?: Axes, opts: VarOpts = {}): Tensor {
  return atUserLoc(() => {
    if (!isFloat(x.dtype)) return variance(astype(x, "f32"), axis, opts);
    const axes = normAxes("var", axis, x.ndim, x);
    const n = axes.reduce((p, a) => p * x.shape[a]!, 1);
    const ddof = opts.ddof ?? 0;
    const d = sub(x, mean(x, axes, { keepdims: true }));
    const ss = sum(mul(d, d), axes, { keepdims: opts.keepdims });
    // n - ddof <= 0 gives inf/NaN, as numpy does.
    return div(ss, n - ddof);
  });
}

/** Standard deviation: sqrt(var(x, axis, { ddof })) (jnp.std). */
export function std(x: Tensor, axis?: Axes, opts: VarOpts = {}): Tensor {
  return atUserLoc(() => sqrt(variance(x, axis, opts)));
}

/*
 * Any shift s gives the same softmax and logsumexp (x - s cancels exactly); the max is used only so exp cannot
 * overflow. Differentiated through reduce_max, though, the shift costs the backward pass a mask over the whole
 * input (where x equals its max) times a cotangent that is zero in exact arithmetic: two or three extra passes
 * over [tokens, vocab] logits or [B, H, S, S] scores. As JAX and PyTorch do, the gradient stops at the shift. The
 * max is clamped to the dtype's finite range, so a fully masked row (all -inf) gives logsumexp -inf rather than
 * NaN from -inf - -inf. tx.nn's softmax family is this one.
 */
function stableShift(op: string, x: Tensor, axes: readonly number[]): Tensor {
  if (!isFloat(x.dtype)) throw new TraceError(op, `needs a float tensor, got ${x.dtype}`, [x.type]);
  const big = x.dtype === "f16" ? 65504 : 3.3e38;
  const m = minimum(maximum(max(x, axes, { keepdims: true }), -big), big);
  return bind1("stop_gradient", [m], {});
}

/** log(sum(exp(x))) over `axis` (default: all axes), stable (see stableShift). */
export function logsumexp(x: Tensor, axis?: Axes, opts: ReduceOpts = {}, op = "logsumexp"): Tensor {
  return atUserLoc(() => {
    const axes = normAxes(op, axis, x.ndim, x);
    const shift = stableShift(op, x, axes);
    const r = add(log(sum(exp(sub(x, shift)), axes, { keepdims: true })), shift);
    return opts.keepdims
      ? r
      : reshape(
          r,
          x.shape.filter((_, i) => !axes.includes(i)),
        );
  });
}

/** exp(x - max) / sum(exp(x - max)) along `axis` (default last). */
export function softmax(x: Tensor, axis = -1, op = "softmax"): Tensor {
  return atUserLoc(() => {
    const a = normAxis(op, axis, x.ndim, x);
    const e = exp(sub(x, stableShift(op, x, [a])));
    return div(e, sum(e, a, { keepdims: true }));
  });
}

/** x - logsumexp(x) along `axis` (default last). */
export function logSoftmax(x: Tensor, axis = -1, op = "logSoftmax"): Tensor {
  return atUserLoc(() => {
    const a = normAxis(op, axis, x.ndim, x);
    return sub(x, logsumexp(x, a, { keepdims: true }, op));
  });
}
