// Shape ops: reshape, transpose and their conveniences, python-style slicing, concatenate/stack/split, pad.
import { numel } from "../../ir/types.ts";
import { bind1, type Tensor, type SliceSpec, type TensorLike } from "../core.ts";
import { TraceError } from "../errors.ts";
import { broadcastTo as broadcastToImpl, full } from "./elementwise.ts";
import { atUserLoc } from "../loc.ts";

/** `axis` in [-rank, rank) made non-negative; throws naming `op` otherwise. */
export function normAxis(op: string, axis: number, rank: number, x?: Tensor): number {
  if (!Number.isInteger(axis) || axis < -rank || axis >= rank) {
    throw new TraceError(op, `axis ${axis} is out of range for rank ${rank}`, x ? [x.type] : []);
  }
  return axis < 0 ? axis + rank : axis;
}

/** Axes normalized, sorted and checked distinct; `undefined` means all axes. */
export function normAxes(op: string, axes: number | readonly number[] | undefined, rank: number, x?: Tensor): number[] {
  if (axes === undefined) return Array.from({ length: rank }, (_, i) => i);
  const list = (typeof axes === "number" ? [axes] : [...axes]).map((a) => normAxis(op, a, rank, x));
  list.sort((a, b) => a - b);
  for (let i = 1; i < list.length; i++) {
    if (list[i] === list[i - 1]) throw new TraceError(op, `axis ${list[i]} is repeated`, x ? [x.type] : []);
  }
  return list;
}

export function broadcastTo(x: Tensor, shape: readonly number[]): Tensor {
  return broadcastToImpl(x, shape, "broadcastTo");
}

/** numpy reshape; one entry may be -1 (inferred). */
export function reshape(x: Tensor, shape: readonly number[]): Tensor {
  const holes = shape.filter((d) => d === -1).length;
  let target = [...shape];
  if (holes > 1) throw new TraceError("reshape", `at most one -1 allowed, got [${shape.join(",")}]`, [x.type]);
  if (holes === 1) {
    const known = numel(shape.filter((d) => d !== -1));
    if (known === 0 || x.size % known !== 0) {
      throw new TraceError("reshape", `cannot infer -1 in [${shape.join(",")}] for ${x.size} elements`, [x.type]);
    }
    target = shape.map((d) => (d === -1 ? x.size / known : d));
  }
  if (target.length === x.ndim && target.every((d, i) => d === x.shape[i])) return x;
  if (numel(target) !== x.size) {
    throw new TraceError(
      "reshape",
      `cannot reshape ${x.size} elements to [${shape.join(",")}] (${numel(target)} elements)`,
      [x.type],
    );
  }
  return bind1("reshape", [x], { shape: target });
}

/** Permutes axes; the default reverses them (numpy). */
export function transpose(x: Tensor, perm?: readonly number[]): Tensor {
  const p = perm ? perm.map((a) => normAxis("transpose", a, x.ndim, x)) : x.shape.map((_, i) => x.ndim - 1 - i);
  if (p.length !== x.ndim || new Set(p).size !== p.length) {
    throw new TraceError("transpose", `[${perm?.join(",")}] is not a permutation of ${x.ndim} axes`, [x.type]);
  }
  if (p.every((a, i) => a === i)) return x;
  return bind1("transpose", [x], { perm: p });
}

export function swapaxes(x: Tensor, a: number, b: number): Tensor {
  const i = normAxis("swapaxes", a, x.ndim, x);
  const j = normAxis("swapaxes", b, x.ndim, x);
  const perm = x.shape.map((_, k) => (k === i ? j : k === j ? i : k));
  return transpose(x, perm);
}

/** Moves axis `from` to position `to`, keeping the others in order. */
export function moveaxis(x: Tensor, from: number, to: number): Tensor {
  const f = normAxis("moveaxis", from, x.ndim, x);
  const t = normAxis("moveaxis", to, x.ndim, x);
  const rest = x.shape.map((_, i) => i).filter((i) => i !== f);
  rest.splice(t, 0, f);
  return transpose(x, rest);
}

/** Inserts size-1 axes at the given positions of the result (numpy expand_dims). */
export function expandDims(x: Tensor, axis: number | readonly number[]): Tensor {
  return atUserLoc(() => {
    const rank = x.ndim + (typeof axis === "number" ? 1 : axis.length);
    const axes = normAxes("expandDims", axis, rank, x);
    const shape: number[] = [];
    let k = 0;
    for (let i = 0; i < rank; i++) shape.push(axes.includes(i) ? 1 : x.shape[k++]!);
    return reshape(x, shape);
  });
}

/** Removes size-1 axes (all of them, or the given ones, which must have size 1). */
export function squeeze(x: Tensor, axis?: number | readonly number[]): Tensor {
  return atUserLoc(() => {
    const axes =
      axis === undefined ? x.shape.flatMap((d, i) => (d === 1 ? [i] : [])) : normAxes("squeeze", axis, x.ndim, x);
    for (const a of axes) {
      if (x.shape[a] !== 1) throw new TraceError("squeeze", `axis ${a} has size ${x.shape[a]}, not 1`, [x.type]);
    }
    return reshape(
      x,
      x.shape.filter((_, i) => !axes.includes(i)),
    );
  });
}

function sliceBound(v: number | null | undefined, dim: number, dflt: number): number {
  if (v === null || v === undefined) return dflt;
  const r = v < 0 ? v + dim : v;
  return Math.min(Math.max(r, 0), dim);
}

/**
 * Python-style slicing, one spec per leading dim (missing trailing specs take the whole dim): an integer index
 * (negative counts from the end; the dim is dropped), `null` for the whole dim, or `[start, stop, step]` with
 * python's clamping and negative bounds. Negative steps are not supported.
 * `x.slice(null, [0, 4])` is `x[:, 0:4]`; `x.slice(-1)` is `x[-1]`.
 */
export function slice(x: Tensor, ...specs: SliceSpec[]): Tensor {
  return atUserLoc(() => {
    if (specs.length > x.ndim)
      throw new TraceError("slice", `${specs.length} slice specs for rank ${x.ndim}`, [x.type]);
    const start: number[] = [],
      limit: number[] = [],
      stride: number[] = [];
    const drop: number[] = [];
    x.shape.forEach((d, i) => {
      const s = specs[i];
      if (typeof s === "number") {
        if (!Number.isInteger(s) || s < -d || s >= d)
          throw new TraceError("slice", `index ${s} is out of range for dim ${i} of size ${d}`, [x.type]);
        const k = s < 0 ? s + d : s;
        start.push(k);
        limit.push(k + 1);
        stride.push(1);
        drop.push(i);
      } else if (s === null || s === undefined) {
        start.push(0);
        limit.push(d);
        stride.push(1);
      } else {
        const step = s[2] ?? 1;
        if (!Number.isInteger(step) || step < 1)
          throw new TraceError("slice", `step ${step} in dim ${i} must be a positive integer`, [x.type]);
        const a = sliceBound(s[0], d, 0);
        const b = Math.max(a, sliceBound(s[1], d, d));
        start.push(a);
        limit.push(b);
        stride.push(step);
      }
    });
    const whole = start.every((s, i) => s === 0 && limit[i] === x.shape[i] && stride[i] === 1);
    const sliced = whole ? x : bind1("slice", [x], { start, limit, stride });
    return drop.length
      ? reshape(
          sliced,
          sliced.shape.filter((_, i) => !drop.includes(i)),
        )
      : sliced;
  });
}

/** Joins tensors of one dtype along an existing axis. */
export function concatenate(xs: readonly Tensor[], axis = 0): Tensor {
  if (xs.length === 0) throw new TraceError("concatenate", "needs at least one tensor");
  if (xs.length === 1) return xs[0]!;
  const a = normAxis("concatenate", axis, xs[0]!.ndim, xs[0]);
  return bind1("concatenate", xs, { axis: a });
}

/** Joins same-shaped tensors along a new axis. */
export function stack(xs: readonly Tensor[], axis = 0): Tensor {
  return atUserLoc(() => {
    if (xs.length === 0) throw new TraceError("stack", "needs at least one tensor");
    const rank = xs[0]!.ndim + 1;
    const a = normAxis("stack", axis, rank, xs[0]);
    return concatenate(
      xs.map((x) => expandDims(x, a)),
      a,
    );
  });
}

/**
 * numpy split: `sections` equal parts (the dim must divide evenly), or cut at the given sorted indices.
 * Fused QKV projections split this way: `split(qkv, [dq, dq + dk], -1)`.
 */
export function split(x: Tensor, sections: number | readonly number[], axis = 0): Tensor[] {
  return atUserLoc(() => {
    const a = normAxis("split", axis, x.ndim, x);
    const d = x.shape[a]!;
    let cuts: number[];
    if (typeof sections === "number") {
      if (!Number.isInteger(sections) || sections < 1 || d % sections !== 0) {
        throw new TraceError("split", `dim ${a} of size ${d} does not split into ${sections} equal parts`, [x.type]);
      }
      cuts = Array.from({ length: sections - 1 }, (_, i) => ((i + 1) * d) / sections);
    } else cuts = [...sections];
    const bounds = [0, ...cuts, d];
    const out: Tensor[] = [];
    for (let i = 0; i + 1 < bounds.length; i++) {
      const specs: SliceSpec[] = x.shape.map(() => null);
      specs[a] = [bounds[i]!, bounds[i + 1]!];
      out.push(slice(x, ...specs));
    }
    return out;
  });
}

/**
 * numpy pad with a constant: `widths` is one `[before, after]` per dim (or one pair for all dims).
 * Negative widths crop.
 */
export function pad(
  x: Tensor,
  widths: readonly (readonly [number, number])[] | readonly [number, number],
  value: TensorLike = 0,
): Tensor {
  return atUserLoc(() => {
    const pairs: (readonly [number, number])[] =
      typeof widths[0] === "number"
        ? x.shape.map(() => widths as readonly [number, number])
        : [...(widths as readonly (readonly [number, number])[])];
    if (pairs.length !== x.ndim)
      throw new TraceError("pad", `${pairs.length} [before, after] pairs for rank ${x.ndim}`, [x.type]);
    const v = typeof value === "number" ? full([], value, x.dtype) : value;
    if (v.ndim !== 0 || v.dtype !== x.dtype)
      throw new TraceError("pad", `padding value must be a rank-0 ${x.dtype}`, [x.type, v.type]);
    return bind1("pad", [x, v], {
      low: pairs.map((p) => p[0]),
      high: pairs.map((p) => p[1]),
      interior: pairs.map(() => 0),
    });
  });
}
