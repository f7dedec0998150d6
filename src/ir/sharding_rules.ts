// Sharding factor rules, one per op: each dimension of each operand and result named as einsum-style factors (Shardy's op sharding rules).
import type { Op } from "./graph.ts";
import type { OpName } from "./ops.ts";
import { forEachElementwise } from "./elementwise.ts";
import type { Shape } from "./types.ts";

/**
 * What a factor lets the partitioner do when it is split over mesh axes:
 * - `pass`: every tensor that has the factor can be split along it and each device works on its piece
 *   (element-wise dims, batch and free dims of a dot, kept dims of a reduction);
 * - `reduction`: only operands have it; split operands give each device a partial result that a collective
 *   combines (contracting dims of a dot, reduced dims, the looked-up dim of an embedding table);
 * - `replicate`: the dim must be whole on every device (a sliced, padded or concatenated dim).
 */
export type FactorKind = "pass" | "reduction" | "replicate";

export interface Factor {
  readonly size: number;
  readonly kind: FactorKind;
  /** How partial results over a reduction factor combine. */
  readonly reduce?: "sum" | "max" | "min";
  /** For the why-trace: `contracting 0`, `batch 1`, `dim 2`. */
  readonly label: string;
}

/**
 * An op's factors and, per operand and per result, each dimension as the list of factors it is made of (major to
 * minor; several for a dimension a reshape merges or splits; none for a size-1 dimension).
 */
export interface OpFactors {
  readonly factors: readonly Factor[];
  readonly operands: readonly (readonly (readonly number[])[])[];
  readonly results: readonly (readonly (readonly number[])[])[];
}

export type FactorRule<N extends OpName> = (op: Op<N>) => OpFactors;

/** Collects factors while a rule is being written. */
class Rule {
  readonly factors: Factor[] = [];
  /** A factor of `size`, or none (-1) for size 1: a size-1 dimension cannot be split. */
  f(size: number, kind: FactorKind, label: string, reduce?: Factor["reduce"]): number {
    if (size <= 1) return -1;
    this.factors.push({ size, kind, label, ...(reduce ? { reduce } : {}) });
    return this.factors.length - 1;
  }
  build(operands: number[][][], results: number[][][]): OpFactors {
    const clean = (t: number[][]) => t.map((d) => d.filter((f) => f >= 0));
    return { factors: this.factors, operands: operands.map(clean), results: results.map(clean) };
  }
}

const dimsOf = (shape: Shape, fs: readonly number[]): number[][] => shape.map((_, d) => [fs[d]!]);

/** Every operand and result share one factor per dimension (operands of another rank, rank-0 indices, get none). */
const elementwise: FactorRule<OpName> = (op) => {
  const r = new Rule();
  const shape = op.outputs[0]!.type.shape;
  const fs = shape.map((n, d) => r.f(n, "pass", `dim ${d}`));
  const same = (t: Shape) => (t.length === shape.length ? dimsOf(t, fs) : t.map(() => []));
  return r.build(
    op.inputs.map((v) => same(v.type.shape)),
    op.outputs.map((v) => same(v.type.shape)),
  );
};

/** Ops without operands: each result dimension is its own factor. */
const source: FactorRule<OpName> = (op) => {
  const r = new Rule();
  return r.build(
    [],
    op.outputs.map((v) => v.type.shape.map((n, d) => [r.f(n, "pass", `dim ${d}`)])),
  );
};

/**
 * Factors shared by two shapes of equal element count (a reshape): walks both shapes merging and splitting dims, as
 * Shardy's compound factors do (`[2,4,32] -> [8,32]` is `(i,j,k) -> ((ij),k)`). Undefined where sizes do not nest
 * (`[6] -> [4,...]`); the caller then keeps the shapes apart.
 */
export function reshapeFactors(
  from: Shape,
  to: Shape,
): { sizes: number[]; from: number[][]; to: number[][] } | undefined {
  const sizes: number[] = [];
  const a: number[][] = from.map(() => []),
    b: number[][] = to.map(() => []);
  let i = 0,
    j = 0;
  let ra = from[0] ?? 1,
    rb = to[0] ?? 1;
  const nextA = () => {
    i++;
    ra = from[i] ?? 1;
  };
  const nextB = () => {
    j++;
    rb = to[j] ?? 1;
  };
  while (i < from.length || j < to.length) {
    if (i < from.length && ra === 1) {
      nextA();
      continue;
    }
    if (j < to.length && rb === 1) {
      nextB();
      continue;
    }
    if (i >= from.length || j >= to.length) return undefined;
    const k = sizes.length;
    if (ra === rb) {
      sizes.push(ra);
      a[i]!.push(k);
      b[j]!.push(k);
      nextA();
      nextB();
    } else if (ra % rb === 0) {
      sizes.push(rb);
      a[i]!.push(k);
      b[j]!.push(k);
      ra /= rb;
      nextB();
    } else if (rb % ra === 0) {
      sizes.push(ra);
      a[i]!.push(k);
      b[j]!.push(k);
      rb /= ra;
      nextA();
    } else {
      return undefined;
    }
  }
  return { sizes, from: a, to: b };
}

const reshape: FactorRule<"reshape"> = (op) => {
  const r = new Rule();
  const from = op.inputs[0]!.type.shape,
    to = op.outputs[0]!.type.shape;
  const f = reshapeFactors(from, to);
  if (!f) {
    return r.build(
      [from.map((n, d) => [r.f(n, "replicate", `operand dim ${d}`)])],
      [to.map((n, d) => [r.f(n, "replicate", `result dim ${d}`)])],
    );
  }
  const ids = f.sizes.map((n, k) => r.f(n, "pass", `reshape factor ${k}`));
  return r.build([f.from.map((fs) => fs.map((k) => ids[k]!))], [f.to.map((fs) => fs.map((k) => ids[k]!))]);
};

const broadcastInDim: FactorRule<"broadcast_in_dim"> = (op) => {
  const r = new Rule();
  const { shape, dims } = op.params;
  const fs = shape.map((n, d) => r.f(n, "pass", `dim ${d}`));
  const x = op.inputs[0]!.type.shape;
  return r.build([x.map((n, i) => (n === shape[dims[i]!] ? [fs[dims[i]!]!] : []))], [dimsOf(shape, fs)]);
};

const transpose: FactorRule<"transpose"> = (op) => {
  const r = new Rule();
  const x = op.inputs[0]!.type.shape;
  const fs = x.map((n, d) => r.f(n, "pass", `operand dim ${d}`));
  return r.build([dimsOf(x, fs)], [op.params.perm.map((p) => [fs[p]!])]);
};

/** Dims kept whole (`keep(d)`) pass through; the others must be replicated on the operand and on the result. */
function partlyWhole(op: Op<OpName>, keep: (d: number) => boolean, what: string): OpFactors {
  const r = new Rule();
  const x = op.inputs[0]!.type.shape;
  const y = op.outputs[0]!.type.shape;
  const fs = x.map((n, d) => (keep(d) ? r.f(n, "pass", `dim ${d}`) : -1));
  const xin = x.map((n, d) => [keep(d) ? fs[d]! : r.f(n, "replicate", `${what} dim ${d}`)]);
  const yout = y.map((n, d) => [keep(d) ? fs[d]! : r.f(n, "replicate", `${what} dim ${d}`)]);
  const rest = op.inputs
    .slice(1)
    .map((v) =>
      v.type.shape.length === x.length
        ? v.type.shape.map((n, d) => [keep(d) ? fs[d]! : r.f(n, "replicate", `${what} dim ${d}`)])
        : v.type.shape.map(() => []),
    );
  return r.build([xin, ...rest], [yout]);
}

const slice: FactorRule<"slice"> = (op) => {
  const x = op.inputs[0]!.type.shape;
  const { start, limit, stride } = op.params;
  return partlyWhole(op, (d) => start[d] === 0 && limit[d] === x[d] && stride[d] === 1, "sliced");
};

const pad: FactorRule<"pad"> = (op) => {
  const { low, high, interior } = op.params;
  return partlyWhole(op, (d) => low[d] === 0 && high[d] === 0 && interior[d] === 0, "padded");
};

const concatenate: FactorRule<"concatenate"> = (op) => {
  const r = new Rule();
  const { axis } = op.params;
  const y = op.outputs[0]!.type.shape;
  const fs = y.map((n, d) => (d === axis ? -1 : r.f(n, "pass", `dim ${d}`)));
  const dims = (t: Shape) => t.map((n, d) => [d === axis ? r.f(n, "replicate", `concatenated dim ${d}`) : fs[d]!]);
  return r.build(
    op.inputs.map((v) => dims(v.type.shape)),
    [dims(y)],
  );
};

function reduction(kind: "sum" | "max" | "min"): FactorRule<"reduce_sum" | "reduce_max" | "reduce_min"> {
  return (op) => {
    const r = new Rule();
    const x = op.inputs[0]!.type.shape;
    const axes = op.params.axes;
    const fs = x.map((n, d) =>
      axes.includes(d) ? r.f(n, "reduction", `reduced dim ${d}`, kind) : r.f(n, "pass", `dim ${d}`),
    );
    return r.build([dimsOf(x, fs)], [x.flatMap((_, d) => (axes.includes(d) ? [] : [[fs[d]!]]))]);
  };
}

const dotGeneral: FactorRule<"dot_general"> = (op) => {
  const r = new Rule();
  const [a, b] = [op.inputs[0]!.type.shape, op.inputs[1]!.type.shape];
  const p = op.params;
  const lhs: number[] = a.map(() => -1),
    rhs: number[] = b.map(() => -1);
  const res: number[] = [];
  p.lhsBatch.forEach((d, i) => {
    const f = r.f(a[d]!, "pass", `batch ${i}`);
    lhs[d] = f;
    rhs[p.rhsBatch[i]!] = f;
    res.push(f);
  });
  p.lhsContract.forEach((d, i) => {
    const f = r.f(a[d]!, "reduction", `contracting ${i}`, "sum");
    lhs[d] = f;
    rhs[p.rhsContract[i]!] = f;
  });
  a.forEach((n, d) => {
    if (p.lhsBatch.includes(d) || p.lhsContract.includes(d)) return;
    const f = r.f(n, "pass", `lhs free ${d}`);
    lhs[d] = f;
    res.push(f);
  });
  b.forEach((n, d) => {
    if (p.rhsBatch.includes(d) || p.rhsContract.includes(d)) return;
    const f = r.f(n, "pass", `rhs free ${d}`);
    rhs[d] = f;
    res.push(f);
  });
  return r.build([lhs.map((f) => [f]), rhs.map((f) => [f])], [res.map((f) => [f])]);
};

/**
 * Embedding lookup: index dims and row dims pass through; a table split over its rows gives each device the rows it
 * holds (zeros elsewhere), summed by an all-reduce, as XLA's partitioner does for a trivially sliced gather.
 */
const gather: FactorRule<"gather"> = (op) => {
  const r = new Rule();
  const [x, idx] = [op.inputs[0]!.type.shape, op.inputs[1]!.type.shape];
  const rowsF = r.f(x[0]!, "reduction", "looked-up rows", "sum");
  const idxF = idx.map((n, d) => r.f(n, "pass", `index dim ${d}`));
  const restF = x.slice(1).map((n, d) => r.f(n, "pass", `row dim ${d + 1}`));
  return r.build([[[rowsF], ...restF.map((f) => [f])], idxF.map((f) => [f])], [[...idxF, ...restF].map((f) => [f])]);
};

/** Transpose of gather: updates split along index dims scatter partial sums into the (whole-row) result. */
const scatterAdd: FactorRule<"scatter_add"> = (op) => {
  const r = new Rule();
  const [x, idx] = [op.inputs[0]!.type.shape, op.inputs[1]!.type.shape];
  const rowsF = r.f(x[0]!, "replicate", "scattered rows");
  const idxF = idx.map((n, d) => r.f(n, "reduction", `index dim ${d}`, "sum"));
  const restF = x.slice(1).map((n, d) => r.f(n, "pass", `row dim ${d + 1}`));
  const xd = [[rowsF], ...restF.map((f) => [f])];
  return r.build([xd, idxF.map((f) => [f]), [...idxF, ...restF].map((f) => [f])], [xd]);
};

/** Along `axis`, the operand's dim is looked up (split: masked lookup + all-reduce) and the indices' dim passes. */
const takeAlongAxis: FactorRule<"take_along_axis"> = (op) => {
  const r = new Rule();
  const [x, idx] = [op.inputs[0]!.type.shape, op.inputs[1]!.type.shape];
  const { axis } = op.params;
  const fs = x.map((n, d) => (d === axis ? -1 : r.f(n, "pass", `dim ${d}`)));
  const lookedUp = r.f(x[axis]!, "reduction", `looked-up dim ${axis}`, "sum");
  const picked = r.f(idx[axis]!, "pass", `index dim ${axis}`);
  const withAxis = (f: number) => x.map((_, d) => [d === axis ? f : fs[d]!]);
  return r.build([withAxis(lookedUp), withAxis(picked)], [withAxis(picked)]);
};

const dynamicSlice: FactorRule<"dynamic_slice"> = (op) =>
  partlyWhole(op, (d) => op.params.sizes[d] === op.inputs[0]!.type.shape[d], "sliced");

const dynamicUpdateSlice: FactorRule<"dynamic_update_slice"> = (op) =>
  partlyWhole(op, (d) => op.inputs[1]!.type.shape[d] === op.inputs[0]!.type.shape[d], "updated");

/**
 * A scan's carries pass straight through (operand k, result k); consts, xs and ys get their own factors here, and
 * the propagator ties them to the body's inputs and outputs (xs and ys along their stacked axis 0, which the loop
 * slices and so must stay whole).
 */
const scan: FactorRule<"scan"> = (op) => {
  const r = new Rule();
  const { numConsts, numCarry } = op.params;
  const carryF = op.inputs
    .slice(numConsts, numConsts + numCarry)
    .map((v) => v.type.shape.map((n, d) => r.f(n, "pass", `carry dim ${d}`)));
  const own = (t: Shape, stacked: boolean, what: string) =>
    t.map((n, d) => [r.f(n, stacked && d === 0 ? "replicate" : "pass", `${what} dim ${d}`)]);
  const operands = op.inputs.map((v, i) => {
    if (i < numConsts) return own(v.type.shape, false, "const");
    if (i < numConsts + numCarry) return carryF[i - numConsts]!.map((f) => [f]);
    return own(v.type.shape, true, "xs");
  });
  const results = op.outputs.map((v, k) => (k < numCarry ? carryF[k]!.map((f) => [f]) : own(v.type.shape, true, "ys")));
  return r.build(operands, results);
};

/** Every operand and result shares one factor per dim; the sorted dim must stay whole (XLA's need_replication). */
const sort: FactorRule<"sort"> = (op) => {
  const r = new Rule();
  const shape = op.inputs[0]!.type.shape;
  const fs = shape.map((n, d) => [r.f(n, d === op.params.dimension ? "replicate" : "pass", `dim ${d}`)]);
  return r.build(
    op.inputs.map(() => fs),
    op.outputs.map(() => fs),
  );
};

/** Operand i and result i are the same value. */
const barrier: FactorRule<"optimization_barrier"> = (op) => {
  const r = new Rule();
  const per = op.inputs.map((v) => v.type.shape.map((n, d) => [r.f(n, "pass", `dim ${d}`)]));
  return r.build(per, per);
};

/**
 * Ops with branches or an unbounded loop (cond, while, custom_vjp): every dim of every operand and result is its own
 * replicated factor, so propagation never splits across them. Correct for any body; XLA may still shard inside.
 */
const opaque: FactorRule<OpName> = (op) => {
  const r = new Rule();
  const own = (v: { type: { shape: Shape } }) => v.type.shape.map((n, d) => [r.f(n, "replicate", `dim ${d}`)]);
  return r.build(op.inputs.map(own), op.outputs.map(own));
};

const e = elementwise;

/** One rule per op: a new op in OpParams fails to compile here until its sharding factors are stated. */
export const FACTOR_RULES: { [N in OpName]: FactorRule<N> } = {
  ...forEachElementwise(() => e),
  compare: e,
  select: e,
  convert: e,
  bitcast_convert: e,
  constant: source,
  iota: source,
  broadcast_in_dim: broadcastInDim,
  reshape,
  transpose,
  slice,
  concatenate,
  pad,
  reduce_sum: reduction("sum"),
  reduce_max: reduction("max"),
  reduce_min: reduction("min"),
  dot_general: dotGeneral,
  gather,
  scatter_add: scatterAdd,
  take_along_axis: takeAlongAxis,
  dynamic_slice: dynamicSlice,
  dynamic_update_slice: dynamicUpdateSlice,
  scan,
  sort,
  optimization_barrier: barrier,
  stop_gradient: e,
  cond: opaque,
  while: opaque,
  custom_vjp: opaque,
  // The lowering inlines checkpoint ops before propagation (passes/remat.ts); a graph that still has one is opaque.
  checkpoint: opaque,
  checkpoint_name: e,
  // XLA has no partitioning rule for the cuDNN custom call (JAX shards it by hand): replicated.
  cudnn_fmha: opaque,
  cudnn_fmha_bwd: opaque,
};

/** The factors of one op. */
export function opFactors(op: Op<OpName>): OpFactors {
  return (FACTOR_RULES[op.name] as FactorRule<OpName>)(op);
}
