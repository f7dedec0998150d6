// Shape and dtype rules: one per op, checking operands and deriving result types (StableHLO's constraints).
import { RuleError } from "./errors.ts";
import { describeElementwise, forEachElementwise, type DTypeClass, type ElementwiseOp } from "./elementwise.ts";
import type { OpName, OpParams } from "./ops.ts";
import type { Graph } from "./graph.ts";
import { fmhaBwdResultTypes, fmhaDims, fmhaResultTypes } from "./cudnn_fmha.ts";
import {
  bitWidth,
  checkShape as checkShapeOf,
  formatType,
  isFloat,
  isInteger,
  numel,
  sameShape,
  sameType,
  ShapeError,
  tensorType,
  type DType,
  type Shape,
  type TensorType,
} from "./types.ts";

type TypeRule<N extends OpName> = (inputs: readonly TensorType[], params: OpParams[N]) => TensorType[];

function fail(msg: string): never {
  throw new RuleError(msg);
}

function arity(inputs: readonly TensorType[], n: number): void {
  if (inputs.length !== n) fail(`expects ${n} operand${n === 1 ? "" : "s"}, got ${inputs.length}`);
}

function checkAxes(axes: readonly number[], rank: number, what: string): void {
  axes.forEach((a, i) => {
    if (!Number.isInteger(a) || a < 0 || a >= rank) fail(`${what} ${a} is out of range for rank ${rank}`);
    if (i > 0 && a <= axes[i - 1]!) fail(`${what} must be sorted and distinct, got [${axes.join(",")}]`);
  });
}

/** The one shape check (ir/types.ts), its ShapeError reported as this op's rule error. */
function checkShape(shape: Shape, what: string): void {
  try {
    checkShapeOf(shape, what);
  } catch (e) {
    if (e instanceof ShapeError) fail(e.message);
    throw e;
  }
}

function dtypeOk(d: DType, cls: DTypeClass): boolean {
  switch (cls) {
    case "float":
      return isFloat(d);
    case "numeric":
      return d !== "bool";
    case "int-or-bool":
      return isInteger(d) || d === "bool";
    case "int":
      return isInteger(d);
    case "any":
      return true;
  }
}

/** Operands of one type, of the op's dtype class; the result has that type too. */
function elementwise(op: ElementwiseOp): TypeRule<ElementwiseOp> {
  const { arity: n, dtypes } = describeElementwise(op);
  return (inputs) => {
    arity(inputs, n);
    const t = inputs[0]!;
    if (n === 2 && !sameType(t, inputs[1]!))
      fail(`operands must have the same type, got ${formatType(t)} and ${formatType(inputs[1]!)}`);
    if (!dtypeOk(t.dtype, dtypes))
      fail(n === 1 ? `needs a ${dtypes} operand, got ${t.dtype}` : `needs ${dtypes} operands, got ${t.dtype}`);
    return [t];
  };
}

function reduce(
  inputs: readonly TensorType[],
  params: { readonly axes: readonly number[] },
  numericOnly: boolean,
): TensorType[] {
  arity(inputs, 1);
  const t = inputs[0]!;
  checkAxes(params.axes, t.shape.length, "axis");
  if (numericOnly && t.dtype === "bool") fail(`cannot reduce bool`);
  return [
    tensorType(
      t.dtype,
      t.shape.filter((_, i) => !params.axes.includes(i)),
    ),
  ];
}

function scalarIndices(inputs: readonly TensorType[], from: number, rank: number): void {
  if (inputs.length - from !== rank)
    fail(`expects ${rank} start indices (one per dimension), got ${inputs.length - from}`);
  for (let i = from; i < inputs.length; i++) {
    const t = inputs[i]!;
    if (t.shape.length !== 0 || !isInteger(t.dtype))
      fail(`start index ${i - from} must be a rank-0 integer, got ${formatType(t)}`);
  }
}

/** q, k, v of a cuDNN attention op: their dims, or the rule's error. */
function fmhaInputs(inputs: readonly TensorType[]) {
  const d = fmhaDims(inputs[0]!, inputs[1]!, inputs[2]!);
  if (typeof d === "string") fail(d);
  return d;
}

const RULES: { [N in OpName]: TypeRule<N> } = {
  ...forEachElementwise(elementwise),

  compare: (inputs) => {
    arity(inputs, 2);
    const [a, b] = inputs as [TensorType, TensorType];
    if (!sameType(a, b)) fail(`operands must have the same type, got ${formatType(a)} and ${formatType(b)}`);
    return [tensorType("bool", a.shape)];
  },
  select: (inputs) => {
    arity(inputs, 3);
    const [p, a, b] = inputs as [TensorType, TensorType, TensorType];
    if (p.dtype !== "bool") fail(`predicate must be bool, got ${formatType(p)}`);
    if (!sameType(a, b)) fail(`branches must have the same type, got ${formatType(a)} and ${formatType(b)}`);
    if (!sameShape(p.shape, a.shape))
      fail(`predicate shape [${p.shape.join(",")}] differs from branch shape [${a.shape.join(",")}]`);
    return [a];
  },
  convert: (inputs, { dtype }) => {
    arity(inputs, 1);
    return [tensorType(dtype, inputs[0]!.shape)];
  },
  bitcast_convert: (inputs, { dtype }) => {
    arity(inputs, 1);
    const t = inputs[0]!;
    if (bitWidth(t.dtype) !== bitWidth(dtype))
      fail(`bit widths differ: ${t.dtype} is ${bitWidth(t.dtype)} bits, ${dtype} is ${bitWidth(dtype)}`);
    return [tensorType(dtype, t.shape)];
  },

  constant: (inputs, { dtype, shape, value }) => {
    arity(inputs, 0);
    checkShape(shape, "shape");
    if (value.length !== 1 && value.length !== numel(shape))
      fail(`has ${value.length} values for shape [${shape.join(",")}]`);
    return [tensorType(dtype, shape)];
  },
  iota: (inputs, { dtype, shape, dim }) => {
    arity(inputs, 0);
    checkShape(shape, "shape");
    if (dim < 0 || dim >= shape.length) fail(`dim ${dim} is out of range for shape [${shape.join(",")}]`);
    if (dtype === "bool") fail(`cannot count in bool`);
    return [tensorType(dtype, shape)];
  },

  broadcast_in_dim: (inputs, { shape, dims }) => {
    arity(inputs, 1);
    const t = inputs[0]!;
    checkShape(shape, "shape");
    if (dims.length !== t.shape.length)
      fail(`needs one target dim per operand dim: ${dims.length} dims for rank ${t.shape.length}`);
    checkAxes(dims, shape.length, "target dim");
    dims.forEach((d, i) => {
      const s = t.shape[i]!;
      if (s !== 1 && s !== shape[d])
        fail(
          `operand dim ${i} (size ${s}) cannot broadcast to result dim ${d} (size ${shape[d]}) of [${shape.join(",")}]`,
        );
    });
    return [tensorType(t.dtype, shape)];
  },
  reshape: (inputs, { shape }) => {
    arity(inputs, 1);
    const t = inputs[0]!;
    checkShape(shape, "shape");
    if (numel(shape) !== numel(t.shape))
      fail(
        `cannot reshape ${formatType(t)} (${numel(t.shape)} elements) to [${shape.join(",")}] (${numel(shape)} elements)`,
      );
    return [tensorType(t.dtype, shape)];
  },
  transpose: (inputs, { perm }) => {
    arity(inputs, 1);
    const t = inputs[0]!;
    const sorted = [...perm].sort((a, b) => a - b);
    if (perm.length !== t.shape.length || sorted.some((p, i) => p !== i))
      fail(`perm [${perm.join(",")}] is not a permutation of rank ${t.shape.length}`);
    return [
      tensorType(
        t.dtype,
        perm.map((p) => t.shape[p]!),
      ),
    ];
  },
  slice: (inputs, { start, limit, stride }) => {
    arity(inputs, 1);
    const t = inputs[0]!;
    const r = t.shape.length;
    if (start.length !== r || limit.length !== r || stride.length !== r)
      fail(`start/limit/stride need ${r} entries each`);
    const shape = t.shape.map((d, i) => {
      const s = start[i]!,
        l = limit[i]!,
        st = stride[i]!;
      if (!(0 <= s && s <= l && l <= d)) fail(`dim ${i}: need 0 <= start (${s}) <= limit (${l}) <= size (${d})`);
      if (st < 1) fail(`dim ${i}: stride ${st} must be >= 1`);
      return Math.ceil((l - s) / st);
    });
    return [tensorType(t.dtype, shape)];
  },
  concatenate: (inputs, { axis }) => {
    if (inputs.length < 1) fail(`needs at least one operand`);
    const first = inputs[0]!;
    if (axis < 0 || axis >= first.shape.length) fail(`axis ${axis} is out of range for rank ${first.shape.length}`);
    let total = 0;
    for (const t of inputs) {
      if (t.dtype !== first.dtype || t.shape.length !== first.shape.length) fail(`operands must share dtype and rank`);
      t.shape.forEach((d, i) => {
        if (i !== axis && d !== first.shape[i])
          fail(`operands differ in dim ${i} (${d} vs ${first.shape[i]}), only axis ${axis} may differ`);
      });
      total += t.shape[axis]!;
    }
    return [
      tensorType(
        first.dtype,
        first.shape.map((d, i) => (i === axis ? total : d)),
      ),
    ];
  },
  pad: (inputs, { low, high, interior }) => {
    arity(inputs, 2);
    const [t, v] = inputs as [TensorType, TensorType];
    if (v.shape.length !== 0 || v.dtype !== t.dtype)
      fail(`padding value must be a rank-0 ${t.dtype}, got ${formatType(v)}`);
    const r = t.shape.length;
    if (low.length !== r || high.length !== r || interior.length !== r)
      fail(`low/high/interior need ${r} entries each`);
    const shape = t.shape.map((d, i) => {
      if (interior[i]! < 0) fail(`interior padding must be >= 0`);
      const n = low[i]! + high[i]! + d + Math.max(d - 1, 0) * interior[i]!;
      if (n < 0) fail(`dim ${i} would have negative size ${n}`);
      return n;
    });
    return [tensorType(t.dtype, shape)];
  },

  reduce_sum: (inputs, params) => reduce(inputs, params, true),
  reduce_max: (inputs, params) => reduce(inputs, params, true),
  reduce_min: (inputs, params) => reduce(inputs, params, true),

  dot_general: (inputs, p) => {
    arity(inputs, 2);
    const [a, b] = inputs as [TensorType, TensorType];
    if (a.dtype !== b.dtype) fail(`operand dtypes differ: ${a.dtype} vs ${b.dtype}`);
    if (a.dtype === "bool") fail(`cannot multiply bool`);
    if (p.lhsBatch.length !== p.rhsBatch.length) fail(`batch dims differ in count: [${p.lhsBatch}] vs [${p.rhsBatch}]`);
    if (p.lhsContract.length !== p.rhsContract.length)
      fail(`contracting dims differ in count: [${p.lhsContract}] vs [${p.rhsContract}]`);
    const lhsUsed = [...p.lhsBatch, ...p.lhsContract];
    const rhsUsed = [...p.rhsBatch, ...p.rhsContract];
    for (const [used, t, side] of [
      [lhsUsed, a, "lhs"],
      [rhsUsed, b, "rhs"],
    ] as const) {
      if (new Set(used).size !== used.length) fail(`${side} dims repeat: [${used.join(",")}]`);
      for (const d of used)
        if (d < 0 || d >= t.shape.length) fail(`${side} dim ${d} is out of range for ${formatType(t)}`);
    }
    p.lhsBatch.forEach((d, i) => {
      const e = p.rhsBatch[i]!;
      if (a.shape[d] !== b.shape[e])
        fail(`batch dims must match: lhs dim ${d} = ${a.shape[d]}, rhs dim ${e} = ${b.shape[e]}`);
    });
    p.lhsContract.forEach((d, i) => {
      const e = p.rhsContract[i]!;
      if (a.shape[d] !== b.shape[e])
        fail(`contracting dims must match: lhs dim ${d} = ${a.shape[d]}, rhs dim ${e} = ${b.shape[e]}`);
    });
    const batch = p.lhsBatch.map((d) => a.shape[d]!);
    const lhsFree = a.shape.filter((_, i) => !lhsUsed.includes(i));
    const rhsFree = b.shape.filter((_, i) => !rhsUsed.includes(i));
    return [tensorType(p.outDtype, [...batch, ...lhsFree, ...rhsFree])];
  },

  gather: (inputs) => {
    arity(inputs, 2);
    const [t, idx] = inputs as [TensorType, TensorType];
    if (t.shape.length < 1) fail(`operand must have rank >= 1`);
    if (!isInteger(idx.dtype)) fail(`indices must be integers, got ${formatType(idx)}`);
    return [tensorType(t.dtype, [...idx.shape, ...t.shape.slice(1)])];
  },
  scatter_add: (inputs) => {
    arity(inputs, 3);
    const [t, idx, upd] = inputs as [TensorType, TensorType, TensorType];
    if (!isInteger(idx.dtype)) fail(`indices must be integers, got ${formatType(idx)}`);
    const want = [...idx.shape, ...t.shape.slice(1)];
    if (upd.dtype !== t.dtype || !sameShape(upd.shape, want))
      fail(`updates must be ${formatType(tensorType(t.dtype, want))}, got ${formatType(upd)}`);
    return [t];
  },
  take_along_axis: (inputs, { axis }) => {
    arity(inputs, 2);
    const [t, idx] = inputs as [TensorType, TensorType];
    if (!isInteger(idx.dtype)) fail(`indices must be integers, got ${formatType(idx)}`);
    if (idx.shape.length !== t.shape.length)
      fail(`indices rank ${idx.shape.length} differs from operand rank ${t.shape.length}`);
    if (axis < 0 || axis >= t.shape.length) fail(`axis ${axis} is out of range for rank ${t.shape.length}`);
    t.shape.forEach((d, i) => {
      if (i !== axis && idx.shape[i] !== d)
        fail(`indices dim ${i} (${idx.shape[i]}) must equal operand dim ${i} (${d})`);
    });
    return [tensorType(t.dtype, idx.shape)];
  },
  dynamic_slice: (inputs, { sizes }) => {
    if (inputs.length < 1) fail(`needs an operand`);
    const t = inputs[0]!;
    scalarIndices(inputs, 1, t.shape.length);
    if (sizes.length !== t.shape.length) fail(`sizes need ${t.shape.length} entries, got ${sizes.length}`);
    sizes.forEach((s, i) => {
      if (s < 0 || s > t.shape[i]!) fail(`size ${s} in dim ${i} exceeds operand size ${t.shape[i]}`);
    });
    return [tensorType(t.dtype, sizes)];
  },
  dynamic_update_slice: (inputs) => {
    if (inputs.length < 2) fail(`needs an operand and an update`);
    const [t, u] = inputs as [TensorType, TensorType];
    if (u.dtype !== t.dtype || u.shape.length !== t.shape.length)
      fail(`update ${formatType(u)} must match operand ${formatType(t)} in dtype and rank`);
    u.shape.forEach((d, i) => {
      if (d > t.shape[i]!) fail(`update dim ${i} (${d}) exceeds operand dim (${t.shape[i]})`);
    });
    scalarIndices(inputs, 2, t.shape.length);
    return [t];
  },

  scan: (inputs, { body, length, numConsts, numCarry }) => {
    const numXs = inputs.length - numConsts - numCarry;
    if (numXs < 0) fail(`has ${inputs.length} operands, fewer than numConsts + numCarry = ${numConsts + numCarry}`);
    const xs = inputs.slice(numConsts + numCarry);
    for (const x of xs) {
      if (x.shape.length < 1 || x.shape[0] !== length)
        fail(`scanned operand ${formatType(x)} must have leading dim ${length}`);
    }
    const expectIn = [
      ...inputs.slice(0, numConsts + numCarry),
      ...xs.map((x) => tensorType(x.dtype, x.shape.slice(1))),
    ];
    if (body.inputs.length !== expectIn.length)
      fail(`body takes ${body.inputs.length} inputs, expected ${expectIn.length} (consts, carries, x slices)`);
    body.inputs.forEach((v, i) => {
      if (!sameType(v.type, expectIn[i]!))
        fail(`body input ${i} is ${formatType(v.type)}, expected ${formatType(expectIn[i]!)}`);
    });
    if (body.outputs.length < numCarry)
      fail(`body returns ${body.outputs.length} values, fewer than numCarry = ${numCarry}`);
    const carries = inputs.slice(numConsts, numConsts + numCarry);
    body.outputs.slice(0, numCarry).forEach((v, i) => {
      if (!sameType(v.type, carries[i]!))
        fail(`body carry output ${i} is ${formatType(v.type)}, expected ${formatType(carries[i]!)}`);
    });
    const ys = body.outputs.slice(numCarry).map((v) => tensorType(v.type.dtype, [length, ...v.type.shape]));
    return [...carries, ...ys];
  },
  sort: (inputs, { dimension }) => {
    if (inputs.length < 1) fail(`needs at least one operand`);
    const t = inputs[0]!;
    if (dimension < 0 || dimension >= t.shape.length)
      fail(`dimension ${dimension} is out of range for rank ${t.shape.length}`);
    inputs.forEach((u, i) => {
      if (!sameShape(u.shape, t.shape))
        fail(`operand ${i} is ${formatType(u)}, expected the shape of ${formatType(t)}`);
    });
    return [...inputs];
  },
  optimization_barrier: (inputs) => [...inputs],
  stop_gradient: (inputs) => {
    arity(inputs, 1);
    return [inputs[0]!];
  },
  cond: (inputs, { branches }) => {
    if (inputs.length < 1) fail(`needs an index operand`);
    const index = inputs[0]!;
    if (index.shape.length !== 0 || (index.dtype !== "bool" && index.dtype !== "s32"))
      fail(`index must be a rank-0 bool or s32, got ${formatType(index)}`);
    if (index.dtype === "bool" && branches.length !== 2)
      fail(`a bool index selects between 2 branches [false, true], got ${branches.length}`);
    if (branches.length === 0) fail(`needs at least one branch`);
    const operands = inputs.slice(1);
    const first = branches[0]!.outputs.map((v) => v.type);
    branches.forEach((b, k) => {
      graphTakes(b, operands, `branch ${k}`);
      if (b.outputs.length !== first.length)
        fail(`branch ${k} returns ${b.outputs.length} values, branch 0 returns ${first.length}`);
      b.outputs.forEach((v, i) => {
        if (!sameType(v.type, first[i]!))
          fail(`branch ${k} result ${i} is ${formatType(v.type)}, branch 0 gives ${formatType(first[i]!)}`);
      });
    });
    return first;
  },
  while: (inputs, { cond, body, numConsts }) => {
    if (numConsts < 0 || numConsts > inputs.length)
      fail(`numConsts ${numConsts} is out of range for ${inputs.length} operands`);
    const carries = inputs.slice(numConsts);
    if (carries.length === 0) fail(`needs at least one carry`);
    graphTakes(cond, inputs, "cond");
    graphTakes(body, inputs, "body");
    const pred = cond.outputs[0];
    if (cond.outputs.length !== 1 || pred?.type.dtype !== "bool" || pred.type.shape.length !== 0)
      fail(`cond must return one rank-0 bool, got (${cond.outputs.map((v) => formatType(v.type)).join(", ")})`);
    if (body.outputs.length !== carries.length)
      fail(`body returns ${body.outputs.length} values for ${carries.length} carries`);
    body.outputs.forEach((v, i) => {
      if (!sameType(v.type, carries[i]!))
        fail(`body carry output ${i} is ${formatType(v.type)}, expected ${formatType(carries[i]!)}`);
    });
    return carries;
  },
  checkpoint: (inputs, { body }) => {
    graphTakes(body, inputs, "body");
    return body.outputs.map((v) => v.type);
  },
  checkpoint_name: (inputs) => {
    arity(inputs, 1);
    return [inputs[0]!];
  },
  custom_vjp: (inputs, { body, fwd, bwd, numConsts }) => {
    if (numConsts < 0 || numConsts > inputs.length)
      fail(`numConsts ${numConsts} is out of range for ${inputs.length} operands`);
    graphTakes(body, inputs, "body");
    graphTakes(fwd, inputs, "fwd");
    const outs = body.outputs.map((v) => v.type);
    if (fwd.outputs.length < outs.length)
      fail(`fwd returns ${fwd.outputs.length} values, fewer than the body's ${outs.length} results`);
    fwd.outputs.slice(0, outs.length).forEach((v, i) => {
      if (!sameType(v.type, outs[i]!))
        fail(`fwd result ${i} is ${formatType(v.type)}, the body gives ${formatType(outs[i]!)}`);
    });
    const residuals = fwd.outputs.slice(outs.length).map((v) => v.type);
    graphTakes(bwd, [...inputs.slice(0, numConsts), ...residuals, ...outs], "bwd");
    const operands = inputs.slice(numConsts);
    if (bwd.outputs.length !== operands.length)
      fail(`bwd returns ${bwd.outputs.length} cotangents for ${operands.length} operands`);
    bwd.outputs.forEach((v, i) => {
      if (!sameType(v.type, operands[i]!))
        fail(`bwd cotangent ${i} is ${formatType(v.type)}, operand ${i} is ${formatType(operands[i]!)}`);
    });
    return outs;
  },
  cudnn_fmha: (inputs, { scale, stats }) => {
    arity(inputs, 3);
    if (scale.length !== 1) fail(`scale must hold one number, got ${scale.length}`);
    return fmhaResultTypes(inputs[0]!, fmhaInputs(inputs), stats);
  },
  cudnn_fmha_bwd: (inputs, { scale }) => {
    arity(inputs, 6);
    if (scale.length !== 1) fail(`scale must hold one number, got ${scale.length}`);
    const d = fmhaInputs(inputs);
    const [q, , , stats, dO, o] = inputs as TensorType[];
    if (formatType(stats!) !== `f32[${d.B},${d.N},${d.T}]`)
      fail(`stats must be f32[${d.B},${d.N},${d.T}], got ${formatType(stats!)}`);
    for (const [name, t] of [
      ["dO", dO!],
      ["O", o!],
    ] as const)
      if (!sameType(t, q!)) fail(`${name} must be ${formatType(q!)} like q, got ${formatType(t)}`);
    return fmhaBwdResultTypes(q!, d);
  },
};

/** A nested graph must take exactly `types` as its inputs. */
function graphTakes(g: Graph, types: readonly TensorType[], what: string): void {
  if (g.inputs.length !== types.length) fail(`${what} takes ${g.inputs.length} inputs, expected ${types.length}`);
  g.inputs.forEach((v, i) => {
    if (!sameType(v.type, types[i]!))
      fail(`${what} input ${i} is ${formatType(v.type)}, expected ${formatType(types[i]!)}`);
  });
}

/** Result types of `name` applied to operands of `inputs` types; throws RuleError when the rules are broken. */
export function inferTypes<N extends OpName>(
  name: N,
  inputs: readonly TensorType[],
  params: OpParams[N],
): TensorType[] {
  return RULES[name](inputs, params);
}
