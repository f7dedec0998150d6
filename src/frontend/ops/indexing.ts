// Indexing: embedding lookup (take), takeAlongAxis, oneHot, scatterAdd, and dynamic (traced-index) slices.
import { isInteger } from "../../ir/types.ts";
import { bind1, Tensor, type TensorLike } from "../core.ts";
import { TraceError } from "../errors.ts";
import { astype, broadcastShapes, broadcastTo, eq, full } from "./elementwise.ts";
import { expandDims, moveaxis, normAxis, reshape, transpose } from "./shape.ts";
import { iota } from "./creation.ts";
import { atUserLoc } from "../loc.ts";

function requireIntegerIndices(op: string, ids: Tensor, others: Tensor[] = []): void {
  if (!(ids instanceof Tensor) || !isInteger(ids.dtype)) {
    throw new TraceError(
      op,
      `indices must be an s32 or u32 Tensor, got ${ids instanceof Tensor ? ids.dtype : typeof ids}`,
      [...others.map((o) => o.type), ...(ids instanceof Tensor ? [ids.type] : [])],
    );
  }
}

/**
 * numpy take: `take(table, ids, axis)` has shape table.shape[:axis] + ids.shape + table.shape[axis+1:].
 * Axis 0 is one gather (embedding lookup: [vocab, d] and [b, s] -> [b, s, d]). Out-of-range ids are clamped.
 */
export function take(table: Tensor, ids: Tensor, axis = 0): Tensor {
  return atUserLoc(() => {
    requireIntegerIndices("take", ids, [table]);
    const a = normAxis("take", axis, table.ndim, table);
    if (a === 0) return bind1("gather", [table, ids], {});
    const g = bind1("gather", [moveaxis(table, a, 0), ids], {});
    const ni = ids.ndim;
    const perm = [
      ...Array.from({ length: a }, (_, i) => ni + i),
      ...Array.from({ length: ni }, (_, i) => i),
      ...Array.from({ length: table.ndim - 1 - a }, (_, i) => ni + a + i),
    ];
    return transpose(g, perm);
  });
}

/**
 * numpy take_along_axis: picks `x` values at `idx` along `axis`; the other dims of `x` and `idx` broadcast.
 * Cross-entropy picks each token's log-probability with `takeAlongAxis(logp, labels.expandDims(-1), -1)`.
 */
export function takeAlongAxis(x: Tensor, idx: Tensor, axis: number): Tensor {
  return atUserLoc(() => {
    requireIntegerIndices("takeAlongAxis", idx, [x]);
    if (idx.ndim !== x.ndim)
      throw new TraceError("takeAlongAxis", `indices rank ${idx.ndim} differs from operand rank ${x.ndim}`, [
        x.type,
        idx.type,
      ]);
    const a = normAxis("takeAlongAxis", axis, x.ndim, x);
    const outer = broadcastShapes(
      "takeAlongAxis",
      [x.shape.map((d, i) => (i === a ? 1 : d)), idx.shape.map((d, i) => (i === a ? 1 : d))],
      [x.type, idx.type],
    );
    const xb = broadcastTo(
      x,
      outer.map((d, i) => (i === a ? x.shape[a]! : d)),
      "takeAlongAxis",
    );
    const ib = broadcastTo(
      idx,
      outer.map((d, i) => (i === a ? idx.shape[a]! : d)),
      "takeAlongAxis",
    );
    return bind1("take_along_axis", [xb, ib], { axis: a });
  });
}

/** [..., n] one-hot rows for integer `ids` (ids outside [0, n) give all-zero rows). */
export function oneHot(ids: Tensor, n: number, dtype: Tensor["dtype"] = "f32"): Tensor {
  return atUserLoc(() => {
    requireIntegerIndices("oneHot", ids);
    const classes = iota([...ids.shape, n], ids.ndim, ids.dtype);
    return astype(eq(expandDims(ids, -1), classes), dtype);
  });
}

/** Adds `updates` into rows `ids` of `x` (the transpose of take on axis 0); repeated ids accumulate. */
export function scatterAdd(x: Tensor, ids: Tensor, updates: Tensor): Tensor {
  requireIntegerIndices("scatterAdd", ids, [x, updates]);
  return bind1("scatter_add", [x, ids, updates], {});
}

function startIndices(op: string, x: Tensor, starts: readonly TensorLike[]): Tensor[] {
  if (starts.length !== x.ndim)
    throw new TraceError(op, `needs ${x.ndim} start indices (one per dim), got ${starts.length}`, [x.type]);
  return starts.map((s) => {
    if (typeof s === "number") return full([], s, "s32");
    if (s.ndim !== 0 || !isInteger(s.dtype))
      throw new TraceError(op, `start indices must be rank-0 integers`, [x.type, s.type]);
    return s;
  });
}

/** A `sizes`-shaped window of `x` at traced `starts` (clamped so the window fits, as XLA does). */
export function dynamicSlice(x: Tensor, starts: readonly TensorLike[], sizes: readonly number[]): Tensor {
  return atUserLoc(() => {
    return bind1("dynamic_slice", [x, ...startIndices("dynamicSlice", x, starts)], { sizes: [...sizes] });
  });
}

/** `x` with `update` written at traced `starts` (clamped so it fits). */
export function dynamicUpdateSlice(x: Tensor, update: Tensor, starts: readonly TensorLike[]): Tensor {
  return atUserLoc(() => {
    return bind1("dynamic_update_slice", [x, update, ...startIndices("dynamicUpdateSlice", x, starts)], {});
  });
}

/** `x[i]` for a traced (or constant) index on axis 0: layer `i` of stacked weights. */
export function dynamicIndex(x: Tensor, i: TensorLike): Tensor {
  return atUserLoc(() => {
    const starts = x.shape.map((_, k) => (k === 0 ? i : 0));
    return reshape(dynamicSlice(x, starts, [1, ...x.shape.slice(1)]), x.shape.slice(1));
  });
}
