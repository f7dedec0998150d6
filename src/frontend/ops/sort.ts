// Sorting along an axis: sort, argsort and topK (jnp.sort, jnp.argsort, jax.lax.top_k), all on the one `sort` IR op.
import { bind, Tensor } from "../core.ts";
import { TraceError } from "../errors.ts";
import { atUserLoc } from "../loc.ts";
import { iota } from "./creation.ts";
import { normAxis, slice } from "./shape.ts";

export interface SortOpts {
  /** Largest first (NaNs then come first, as their total order is above +inf). */
  descending?: boolean;
  /** Equal keys keep their order (default true, as jnp.sort). */
  stable?: boolean;
}

function check(op: string, x: Tensor): void {
  if (!(x instanceof Tensor)) throw new TraceError(op, `expects a Tensor, got ${typeof x}`);
  if (x.ndim === 0) throw new TraceError(op, "cannot sort a rank-0 tensor", [x.type]);
}

function sortWithIndices(op: string, x: Tensor, axis: number, opts: SortOpts): [Tensor, Tensor] {
  check(op, x);
  const dimension = normAxis(op, axis, x.ndim, x);
  const [values, indices] = bind("sort", [x, iota(x.shape, dimension, "s32")], {
    dimension,
    descending: opts.descending ?? false,
    stable: opts.stable ?? true,
  });
  return [values!, indices!];
}

/** `x` sorted along `axis` (default last), ascending; floats in total order, NaNs last. */
export function sort(x: Tensor, axis = -1, opts: SortOpts = {}): Tensor {
  return atUserLoc(() => {
    check("sort", x);
    const dimension = normAxis("sort", axis, x.ndim, x);
    return bind("sort", [x], { dimension, descending: opts.descending ?? false, stable: opts.stable ?? true })[0]!;
  });
}

/** The s32 indices that sort `x` along `axis` (default last); ties keep their order unless `stable: false`. */
export function argsort(x: Tensor, axis = -1, opts: SortOpts = {}): Tensor {
  return atUserLoc(() => sortWithIndices("argsort", x, axis, opts)[1]);
}

/**
 * The `k` largest entries along the last axis and their s32 indices, largest first, ties by lower index
 * (jax.lax.top_k): `const [values, indices] = topK(logits, 50)`.
 */
export function topK(x: Tensor, k: number): [Tensor, Tensor] {
  return atUserLoc(() => {
    check("topK", x);
    const n = x.shape[x.ndim - 1]!;
    if (!Number.isInteger(k) || k < 0 || k > n)
      throw new TraceError("topK", `k must be an integer in [0, ${n}] (the last axis), got ${k}`, [x.type]);
    const [values, indices] = sortWithIndices("topK", x, -1, { descending: true, stable: true });
    const head = x.shape.map((_, i) => (i === x.ndim - 1 ? ([0, k] as [number, number]) : null));
    return [slice(values, ...head), slice(indices, ...head)];
  });
}
