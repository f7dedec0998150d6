// Triangular masks (tril/triu) and cumulative sums/products along an axis, composed from iota, select, pad and slice.
import { bind1, type Tensor } from "../core.ts";
import { TraceError } from "../errors.ts";
import { atUserLoc } from "../loc.ts";
import { iota } from "./creation.ts";
import { add, full, ge, le, mul, sub, where } from "./elementwise.ts";
import { normAxis, reshape } from "./shape.ts";

function triangle(op: string, x: Tensor, k: number, lower: boolean): Tensor {
  if (x.ndim < 2) throw new TraceError(op, `needs rank >= 2, got rank ${x.ndim}`, [x.type]);
  if (!Number.isInteger(k)) throw new TraceError(op, `k must be an integer, got ${k}`, [x.type]);
  const r = x.ndim - 2;
  const rows = iota(x.shape, r, "s32");
  const cols = iota(x.shape, r + 1, "s32");
  // Keep element (i, j) where j - i <= k (tril) or j - i >= k (triu), over the last two axes as numpy does.
  const diff = sub(cols, rows);
  const keep = lower ? le(diff, k) : ge(diff, k);
  return where(keep, x, full(x.shape, 0, x.dtype));
}

/** The lower triangle of the last two axes: elements above the k-th diagonal zeroed (jnp.tril). */
export function tril(x: Tensor, k = 0): Tensor {
  return atUserLoc(() => triangle("tril", x, k, true));
}

/** The upper triangle of the last two axes: elements below the k-th diagonal zeroed (jnp.triu). */
export function triu(x: Tensor, k = 0): Tensor {
  return atUserLoc(() => triangle("triu", x, k, false));
}

/*
 * An inclusive scan by doubling (Hillis-Steele): log2(n) steps, each combining x with itself shifted by 2^s along
 * the axis (the shifted-in elements are the identity). Pad and slice are differentiable, so the gradient follows.
 */
function scan(op: string, x: Tensor, axis: number, combine: (a: Tensor, b: Tensor) => Tensor, identity: number) {
  const a = normAxis(op, axis, x.ndim, x);
  if (x.dtype === "bool") throw new TraceError(op, "cannot accumulate bool; convert with astype first", [x.type]);
  const n = x.shape[a]!;
  let acc = x;
  for (let s = 1; s < n; s *= 2) {
    const v = full([], identity, x.dtype);
    const shifted = bind1("pad", [acc, v], {
      low: x.shape.map((_, i) => (i === a ? s : 0)),
      high: x.shape.map((_, i) => (i === a ? -s : 0)),
      interior: x.shape.map(() => 0),
    });
    acc = combine(acc, shifted);
  }
  return acc;
}

/** Running sum along `axis`; without one, over `x` flattened to 1-D (jnp.cumsum). */
export function cumsum(x: Tensor, axis?: number): Tensor {
  return atUserLoc(() =>
    axis === undefined ? scan("cumsum", reshape(x, [x.size]), 0, add, 0) : scan("cumsum", x, axis, add, 0),
  );
}

/** Running product along `axis`; without one, over `x` flattened to 1-D (jnp.cumprod). */
export function cumprod(x: Tensor, axis?: number): Tensor {
  return atUserLoc(() =>
    axis === undefined ? scan("cumprod", reshape(x, [x.size]), 0, mul, 1) : scan("cumprod", x, axis, mul, 1),
  );
}
