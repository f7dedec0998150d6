// One lowering rule per IR op: each prints the StableHLO ops that compute it and returns its result names.
import type { Graph, Op, Value } from "../../ir/graph.ts";
import type { CompareDir, OpName } from "../../ir/ops.ts";
import { ELEMENTWISE, forEachElementwise, type ElementwiseOp } from "../../ir/elementwise.ts";
import { isFloat, range, tensorType, type DType, type Shape, type TensorType } from "../../ir/types.ts";
import type { FuncEmitter } from "./emitter.ts";
import { denseLiteral, dimsText, tensorTypeText as ty } from "./text.ts";
import { fmhaBackendConfig, fmhaDims } from "../../ir/cudnn_fmha.ts";
import { UNINITIALIZED_TARGET, cpuGemmApplies, lowerCpuGemm, planGemmAdds } from "./cpu_gemm.ts";

/** Prints `op` into the emitter and returns one StableHLO value reference per IR result. */
export type LowerRule<N extends OpName> = (e: FuncEmitter, op: Op<N>) => string[];

/** Lowers a graph's ops in order; the caller has bound `g.inputs`. */
export function emitOps(e: FuncEmitter, g: Graph): void {
  const outerLoc = e.loc;
  const outerName = e.opName;
  // Adds of a GEMM call's product become one accumulating call; the dot itself prints nothing.
  const gemmAdds = e.cpuGemm ? planGemmAdds(g) : undefined;
  for (const op of g.ops) {
    if (gemmAdds?.absorbed.has(op)) continue;
    e.loc = op.loc;
    e.opName = op.name;
    const undo = e.beforeOp?.(op);
    const fused = gemmAdds?.adds.get(op);
    const refs = fused
      ? [lowerCpuGemm(e, fused.dot, fused.base)]
      : (RULES[op.name] as LowerRule<OpName>)(e, op as Op<OpName>);
    undo?.();
    if (refs.length !== op.outputs.length)
      e.fail(`internal: lowering gave ${refs.length} results, op has ${op.outputs.length}`);
    op.outputs.forEach((v, i) => {
      e.bind(v, e.constrain ? e.constrain(v, refs[i]!) : refs[i]!);
    });
  }
  e.loc = outerLoc;
  e.opName = outerName;
}

const T = (v: Value): string => ty(v.type);

function constant(e: FuncEmitter, t: TensorType, values: readonly number[]): string {
  return e.op1(`stablehlo.constant ${denseLiteral(t, values)} : ${ty(t)}`);
}

function scalar(e: FuncEmitter, dtype: DType, value: number): string {
  return constant(e, tensorType(dtype, []), [value]);
}

function reshape(e: FuncEmitter, ref: string, from: TensorType, shape: Shape): string {
  return e.op1(`stablehlo.reshape ${ref} : (${ty(from)}) -> ${ty(tensorType(from.dtype, shape))}`);
}

/** One StableHLO (or CHLO) op named by the descriptor, with the IR op's operands and result type. */
function elementwise<N extends ElementwiseOp>(name: N): LowerRule<N> {
  const target = ELEMENTWISE[name].stablehlo;
  return (e, op) => {
    const x = op.inputs[0]!;
    // stablehlo.abs takes signed or float operands only; |x| of an unsigned value is x.
    if (name === "abs" && x.type.dtype === "u32") return [e.ref(x)];
    const args = op.inputs.map((v) => e.ref(v)).join(", ");
    // CHLO ops have no short form shared with StableHLO's; the generic form is one grammar for all of them.
    if (target.startsWith("chlo.")) {
      return [e.op1(`"${target}"(${args}) : (${op.inputs.map(T).join(", ")}) -> ${T(op.outputs[0]!)}`)];
    }
    return [e.op1(`${target} ${args} : ${T(x)}`)];
  };
}

/** StableHLO's comparison type for an element type: unsigned for u32 and bool (false < true). */
function compareType(d: DType): string {
  if (isFloat(d)) return "FLOAT";
  return d === "s32" ? "SIGNED" : "UNSIGNED";
}

function compare(e: FuncEmitter, dir: CompareDir, a: string, b: string, t: TensorType): string {
  const out = ty(tensorType("bool", t.shape));
  return e.op1(
    `stablehlo.compare ${dir.toUpperCase()}, ${a}, ${b}, ${compareType(t.dtype)} : (${ty(t)}, ${ty(t)}) -> ${out}`,
  );
}

const REDUCE_BODY = { reduce_sum: "add", reduce_max: "maximum", reduce_min: "minimum" } as const;

/** The identity of each reduction: 0, -inf/+inf for floats, the integer type's min/max. */
function reduceInit(kind: keyof typeof REDUCE_BODY, d: DType): number {
  if (kind === "reduce_sum") return 0;
  const max = kind === "reduce_max";
  if (isFloat(d)) return max ? -Infinity : Infinity;
  if (d === "s32") return max ? -(2 ** 31) : 2 ** 31 - 1;
  return max ? 0 : 2 ** 32 - 1;
}

function reduce<N extends keyof typeof REDUCE_BODY>(kind: N): LowerRule<N> {
  return (e, op) => {
    const x = op.inputs[0]!;
    const init = scalar(e, x.type.dtype, reduceInit(kind, x.type.dtype));
    const st = ty(tensorType(x.type.dtype, []));
    return [
      e.op1(
        `stablehlo.reduce(${e.ref(x)} init: ${init}) applies stablehlo.${REDUCE_BODY[kind]} across dimensions = ${dimsText(op.params.axes)} : (${T(x)}, ${st}) -> ${T(op.outputs[0]!)}`,
      ),
    ];
  };
}

/**
 * Start indices of dynamic_slice / dynamic_update_slice must share one type in StableHLO; the IR allows mixed
 * s32/u32. Mixed u32 indices are capped at 2^31-1 (still clamped to the top by XLA) and converted to s32.
 */
function startIndices(e: FuncEmitter, idx: readonly Value[]): { refs: string; types: string[] } {
  const mixed = idx.some((v) => v.type.dtype !== idx[0]!.type.dtype);
  const refs = idx.map((v) => {
    if (!mixed || v.type.dtype === "s32") return e.ref(v);
    const cap = scalar(e, "u32", 2 ** 31 - 1);
    const capped = e.op1(`stablehlo.minimum ${e.ref(v)}, ${cap} : ${T(v)}`);
    return e.op1(`stablehlo.convert ${capped} : (${T(v)}) -> tensor<i32>`);
  });
  return { refs: refs.map((r) => `, ${r}`).join(""), types: idx.map((v) => (mixed ? "tensor<i32>" : T(v))) };
}

/** `"stablehlo.gather"` in generic form; `dn` lists the dimension-number fields, empty ones left out. */
function gather(
  e: FuncEmitter,
  operand: string,
  indices: string,
  dn: [string, readonly number[] | number][],
  sliceSizes: readonly number[],
  types: string,
): string {
  const fields = dn
    .filter(([, v]) => typeof v === "number" || v.length > 0)
    .map(([k, v]) => `${k} = ${typeof v === "number" ? v : dimsText(v)}`)
    .join(", ");
  return e.op1(
    `"stablehlo.gather"(${operand}, ${indices}) <{dimension_numbers = #stablehlo.gather<${fields}>, indices_are_sorted = false, slice_sizes = array<i64: ${sliceSizes.join(", ")}>}> : ${types}`,
  );
}

const scan: LowerRule<"scan"> = (e, op) => {
  const { body, length, numConsts, numCarry, reverse } = op.params;
  const consts = op.inputs.slice(0, numConsts);
  const carries = op.inputs.slice(numConsts, numConsts + numCarry);
  const xs = op.inputs.slice(numConsts + numCarry);
  const ysTypes = op.outputs.slice(numCarry).map((v) => v.type);
  if (length === 0) {
    // No iteration: carries pass through, ys are empty (and a size-1 dynamic_slice of xs would be invalid).
    return [...carries.map((v) => e.ref(v)), ...ysTypes.map((t) => constant(e, t, []))];
  }
  const i32 = tensorType("s32", []);
  const counter0 = scalar(e, "s32", reverse ? length - 1 : 0);
  // Every element of a stacked output is written by some iteration, so where Tessera's CPU calls are registered
  // they start uninitialized (side-effecting, so XLA does not merge two into one buffer); else zero-filled.
  const ys0 = ysTypes.map((t) =>
    e.cpuGemm
      ? e.op1(
          `stablehlo.custom_call @${UNINITIALIZED_TARGET}() {api_version = 4 : i32, backend_config = {}, has_side_effect = true} : () -> ${ty(t)}`,
        )
      : constant(e, t, [0]),
  );
  const init = [counter0, ...[...consts, ...carries, ...xs].map((v) => e.ref(v)), ...ys0];
  const types = [i32, ...[...consts, ...carries, ...xs].map((v) => v.type), ...ysTypes];
  const args = types.map(() => e.blockArg());
  const typeList = types.map(ty).join(", ");
  const { lhs, refs } = e.results(types.length);
  const loc = e.locSuffix();
  e.line(`${lhs} = stablehlo.while(${args.map((a, k) => `${a} = ${init[k]}`).join(", ")}) : ${typeList}`);
  const [counter] = args as [string];
  // Loop state: counter, consts, carries, xs, ys accumulators.
  const offsets = {
    consts: 1,
    carries: 1 + numConsts,
    xs: 1 + numConsts + numCarry,
    ys: 1 + numConsts + numCarry + xs.length,
  };
  const at = (group: keyof typeof offsets, k: number): string => args[offsets[group] + k]!;
  e.indented(() => {
    e.line(`cond {`);
    e.indented(() => {
      const bound = scalar(e, "s32", reverse ? 0 : length);
      const go = compare(e, reverse ? "ge" : "lt", counter, bound, i32);
      e.line(`stablehlo.return ${go} : tensor<i1>`);
    });
    e.line(`} do {`);
    e.indented(() => {
      const zero = scalar(e, "s32", 0);
      const slices = xs.map((x, k) => {
        const rest = x.type.shape.slice(1);
        const one = tensorType(x.type.dtype, [1, ...rest]);
        const starts = [counter, ...rest.map(() => zero)].join(", ");
        const idxTypes = [i32, ...rest.map(() => i32)].map(ty).join(", ");
        const s = e.op1(
          `stablehlo.dynamic_slice ${at("xs", k)}, ${starts}, sizes = ${dimsText(one.shape)} : (${T(x)}, ${idxTypes}) -> ${ty(one)}`,
        );
        const item = reshape(e, s, one, rest);
        e.stackItems.set(item, { stack: at("xs", k), index: counter, stackType: x.type });
        return item;
      });
      const bodyArgs = [
        ...consts.map((_, k) => at("consts", k)),
        ...carries.map((_, k) => at("carries", k)),
        ...slices,
      ];
      body.inputs.forEach((v, k) => {
        e.bind(v, bodyArgs[k]!);
      });
      emitOps(e, body);
      const newCarries = body.outputs.slice(0, numCarry).map((v) => e.ref(v));
      const newYs = body.outputs.slice(numCarry).map((y, k) => {
        const stacked = ysTypes[k]!;
        const r = reshape(e, e.ref(y), y.type, [1, ...y.type.shape]);
        const starts = [counter, ...y.type.shape.map(() => zero)].join(", ");
        const idxTypes = [i32, ...y.type.shape.map(() => i32)].map(ty).join(", ");
        const upd = ty(tensorType(y.type.dtype, [1, ...y.type.shape]));
        return e.op1(
          `stablehlo.dynamic_update_slice ${at("ys", k)}, ${r}, ${starts} : (${ty(stacked)}, ${upd}, ${idxTypes}) -> ${ty(stacked)}`,
        );
      });
      const one = scalar(e, "s32", 1);
      const next = e.op1(`stablehlo.${reverse ? "subtract" : "add"} ${counter}, ${one} : tensor<i32>`);
      const yielded = [
        next,
        ...consts.map((_, k) => at("consts", k)),
        ...newCarries,
        ...xs.map((_, k) => at("xs", k)),
        ...newYs,
      ];
      e.line(`stablehlo.return ${yielded.join(", ")} : ${typeList}`);
    });
    e.line(`}${loc}`);
  });
  const first = 1 + numConsts;
  return [...refs.slice(first, first + numCarry), ...refs.slice(first + numCarry + xs.length)];
};

/** Emits `g`'s ops with its inputs standing for `refs` and returns its output references. */
function inline(e: FuncEmitter, g: Graph, refs: readonly string[]): string[] {
  g.inputs.forEach((v, k) => {
    e.bind(v, refs[k]!);
  });
  emitOps(e, g);
  return g.outputs.map((v) => e.ref(v));
}

/**
 * `stablehlo.if` for a bool index (IR branches [false, true]; the if's regions are true, then false), else
 * `stablehlo.case` (out-of-range indices run the last branch, as in the IR). The regions take no arguments: they
 * read the operands from the enclosing scope, as JAX's lowering of lax.cond does.
 */
const cond: LowerRule<"cond"> = (e, op) => {
  if (op.outputs.length === 0) return []; // nothing observable: branches have no effects
  const [index, ...operands] = op.inputs as [Value, ...Value[]];
  const refs = operands.map((v) => e.ref(v));
  const isIf = index.type.dtype === "bool";
  const regions = isIf ? [op.params.branches[1]!, op.params.branches[0]!] : op.params.branches;
  const outTypes = op.outputs.map(T).join(", ");
  const { lhs, refs: results } = e.results(op.outputs.length);
  const loc = e.locSuffix();
  e.line(`${lhs} = "stablehlo.${isIf ? "if" : "case"}"(${e.ref(index)}) ({`);
  regions.forEach((g, k) => {
    e.indented(() => {
      const outs = inline(e, g, refs);
      e.line(`stablehlo.return ${outs.join(", ")} : ${g.outputs.map(T).join(", ")}`);
    });
    e.line(k === regions.length - 1 ? `}) : (${T(index)}) -> (${outTypes})${loc}` : "}, {");
  });
  return results;
};

/** `stablehlo.while` over (consts, carries): consts ride along in the loop state unchanged, as in scan. */
const whileLoop: LowerRule<"while"> = (e, op) => {
  const { cond: condGraph, body } = op.params;
  const types = op.inputs.map((v) => v.type);
  const args = types.map(() => e.blockArg());
  const typeList = types.map(ty).join(", ");
  const { lhs, refs } = e.results(types.length);
  const loc = e.locSuffix();
  e.line(`${lhs} = stablehlo.while(${args.map((a, k) => `${a} = ${e.ref(op.inputs[k]!)}`).join(", ")}) : ${typeList}`);
  const nc = op.params.numConsts;
  e.indented(() => {
    e.line(`cond {`);
    e.indented(() => {
      const [go] = inline(e, condGraph, args);
      e.line(`stablehlo.return ${go} : tensor<i1>`);
    });
    e.line(`} do {`);
    e.indented(() => {
      const next = inline(e, body, args);
      e.line(`stablehlo.return ${[...args.slice(0, nc), ...next].join(", ")} : ${typeList}`);
    });
    e.line(`}${loc}`);
  });
  return refs.slice(nc);
};

/** A row-major (operand) or XLA-layout (result) minor-to-major list as the custom call's layout attribute. */
const layoutAttr = (m: readonly number[]) =>
  `dense<${m.length === 1 ? m[0] : `[${m.join(", ")}]`}> : tensor<${m.length}xindex>`;

/**
 * The cuDNN flash-attention custom call as JAX lowers jax.nn.dot_product_attention(..., implementation="cudnn")
 * for the cuda platform (api_version 2, a Python-json backend_config, explicit layouts): operands row-major,
 * BNTH results laid out as BTNH ({3,1,2,0}, so the transposes after it are free), and a u8[0] workspace result
 * that the IR op leaves out.
 */
function fmhaCall(
  e: FuncEmitter,
  op: Op<"cudnn_fmha" | "cudnn_fmha_bwd">,
  target: string,
  backward: boolean,
): string[] {
  const [q, k, v] = op.inputs as [Value, Value, Value];
  const d = fmhaDims(q.type, k.type, v.type);
  if (typeof d === "string") throw new Error(`internal: ${op.name}: ${d}`);
  const config = fmhaBackendConfig(q.type, d, op.params, backward).replace(/[\\"]/g, (c) =>
    c === '"' ? "\\22" : "\\5C",
  );
  const rowMajor = (t: Value) => Array.from({ length: t.type.shape.length }, (_, i) => t.type.shape.length - 1 - i);
  const resultLayout = (t: Value) => (t.type.shape.length === 4 ? [3, 1, 2, 0] : rowMajor(t));
  const operands = op.inputs.map((x) => e.ref(x)).join(", ");
  const attrs = [
    "api_version = 2 : i32",
    `backend_config = "${config}"`,
    `operand_layouts = [${op.inputs.map((x) => layoutAttr(rowMajor(x))).join(", ")}]`,
    `result_layouts = [${[...op.outputs.map((x) => layoutAttr(resultLayout(x))), layoutAttr([0])].join(", ")}]`,
  ];
  const types = `(${op.inputs.map(T).join(", ")}) -> (${[...op.outputs.map(T), "tensor<0xui8>"].join(", ")})`;
  const refs = e.op(
    op.outputs.length + 1,
    `stablehlo.custom_call @${target}(${operands}) {${attrs.join(", ")}} : ${types}`,
  );
  return refs.slice(0, op.outputs.length);
}

export const RULES: { [N in OpName]: LowerRule<N> } = {
  ...forEachElementwise(elementwise),

  compare: (e, op) => {
    const [a, b] = op.inputs as [Value, Value];
    return [compare(e, op.params.dir, e.ref(a), e.ref(b), a.type)];
  },
  select: (e, op) => {
    const [p, a, b] = op.inputs as [Value, Value, Value];
    return [e.op1(`stablehlo.select ${e.ref(p)}, ${e.ref(a)}, ${e.ref(b)} : ${T(p)}, ${T(a)}`)];
  },
  convert: (e, op) => {
    const x = op.inputs[0]!;
    const to = op.params.dtype;
    if (to === x.type.dtype) return [e.ref(x)];
    // x != 0 is the IR's meaning of a cast to bool; say it as a comparison rather than trust convert's i1 rule.
    if (to === "bool") return [compare(e, "ne", e.ref(x), constant(e, x.type, [0]), x.type)];
    return [e.op1(`stablehlo.convert ${e.ref(x)} : (${T(x)}) -> ${T(op.outputs[0]!)}`)];
  },
  bitcast_convert: (e, op) => {
    const x = op.inputs[0]!;
    if (op.params.dtype === x.type.dtype) return [e.ref(x)];
    return [e.op1(`stablehlo.bitcast_convert ${e.ref(x)} : (${T(x)}) -> ${T(op.outputs[0]!)}`)];
  },

  constant: (e, op) => [constant(e, op.outputs[0]!.type, op.params.value)],
  iota: (e, op) => [e.op1(`stablehlo.iota dim = ${op.params.dim} : ${T(op.outputs[0]!)}`)],

  broadcast_in_dim: (e, op) => {
    const x = op.inputs[0]!;
    return [
      e.op1(
        `stablehlo.broadcast_in_dim ${e.ref(x)}, dims = ${dimsText(op.params.dims)} : (${T(x)}) -> ${T(op.outputs[0]!)}`,
      ),
    ];
  },
  reshape: (e, op) => [reshape(e, e.ref(op.inputs[0]!), op.inputs[0]!.type, op.params.shape)],
  transpose: (e, op) => {
    const x = op.inputs[0]!;
    return [
      e.op1(`stablehlo.transpose ${e.ref(x)}, dims = ${dimsText(op.params.perm)} : (${T(x)}) -> ${T(op.outputs[0]!)}`),
    ];
  },
  slice: (e, op) => {
    const x = op.inputs[0]!;
    const { start, limit, stride } = op.params;
    const ranges = start.map((s, i) => `${s}:${limit[i]}${stride[i] === 1 ? "" : `:${stride[i]}`}`);
    return [e.op1(`stablehlo.slice ${e.ref(x)} [${ranges.join(", ")}] : (${T(x)}) -> ${T(op.outputs[0]!)}`)];
  },
  concatenate: (e, op) => {
    const refs = op.inputs.map((v) => e.ref(v)).join(", ");
    const types = op.inputs.map(T).join(", ");
    return [e.op1(`stablehlo.concatenate ${refs}, dim = ${op.params.axis} : (${types}) -> ${T(op.outputs[0]!)}`)];
  },
  pad: (e, op) => {
    const [x, v] = op.inputs as [Value, Value];
    const { low, high, interior } = op.params;
    return [
      e.op1(
        `stablehlo.pad ${e.ref(x)}, ${e.ref(v)}, low = ${dimsText(low)}, high = ${dimsText(high)}, interior = ${dimsText(interior)} : (${T(x)}, ${T(v)}) -> ${T(op.outputs[0]!)}`,
      ),
    ];
  },

  reduce_sum: reduce("reduce_sum"),
  reduce_max: reduce("reduce_max"),
  reduce_min: reduce("reduce_min"),

  dot_general: (e, op) => {
    if (e.cpuGemm && cpuGemmApplies(op)) return [lowerCpuGemm(e, op)];
    const [a, b] = op.inputs as [Value, Value];
    const p = op.params;
    const batch = p.lhsBatch.length ? `batching_dims = ${dimsText(p.lhsBatch)} x ${dimsText(p.rhsBatch)}, ` : "";
    const contract = `contracting_dims = ${dimsText(p.lhsContract)} x ${dimsText(p.rhsContract)}`;
    return [
      e.op1(
        `stablehlo.dot_general ${e.ref(a)}, ${e.ref(b)}, ${batch}${contract}, precision = [DEFAULT, DEFAULT] : (${T(a)}, ${T(b)}) -> ${T(op.outputs[0]!)}`,
      ),
    ];
  },

  gather: (e, op) => {
    // Rows of operand [N, ...rest] picked by indices [...idx]; index_vector_dim = rank(idx) means each index is
    // a 1-vector, so no reshape is needed. XLA clamps out-of-range rows, as the IR specifies.
    const [x, idx] = op.inputs as [Value, Value];
    const r = idx.type.shape.length;
    const rest = x.type.shape.slice(1);
    return [
      gather(
        e,
        e.ref(x),
        e.ref(idx),
        [
          ["offset_dims", range(r, r + rest.length)],
          ["collapsed_slice_dims", [0]],
          ["start_index_map", [0]],
          ["index_vector_dim", r],
        ],
        [1, ...rest],
        `(${T(x)}, ${T(idx)}) -> ${T(op.outputs[0]!)}`,
      ),
    ];
  },
  scatter_add: (e, op) => {
    // Adds update rows into operand rows; out-of-range rows are dropped, as XLA's scatter does.
    const [x, idx, upd] = op.inputs as [Value, Value, Value];
    const r = idx.type.shape.length;
    const rest = x.type.shape.slice(1);
    const st = ty(tensorType(x.type.dtype, []));
    const { lhs, refs } = e.results(1);
    const a = e.blockArg();
    const b = e.blockArg();
    const sum = e.results(1).lhs;
    const dn = [
      `update_window_dims = ${dimsText(range(r, r + rest.length))}`,
      `inserted_window_dims = [0]`,
      `scatter_dims_to_operand_dims = [0]`,
      `index_vector_dim = ${r}`,
    ];
    if (rest.length === 0) dn.shift();
    e.line(
      `${lhs} = "stablehlo.scatter"(${e.ref(x)}, ${e.ref(idx)}, ${e.ref(upd)}) <{indices_are_sorted = false, scatter_dimension_numbers = #stablehlo.scatter<${dn.join(", ")}>, unique_indices = false}> ({`,
    );
    e.line(`^bb0(${a}: ${st}, ${b}: ${st}):`);
    e.indented(() => {
      e.line(`${sum} = stablehlo.add ${a}, ${b} : ${st}`);
      e.line(`stablehlo.return ${sum} : ${st}`);
    });
    e.line(`}) : (${T(x)}, ${T(idx)}, ${T(upd)}) -> ${T(x)}${e.locSuffix()}`);
    return refs;
  },
  take_along_axis: (e, op) => {
    // result[..., i_axis, ...] = operand[..., idx[..., i_axis, ...], ...]: a gather whose other dims are batch
    // dims pairing operand and indices one to one, each index a 1-vector along `axis` (clamped by XLA).
    const [x, idx] = op.inputs as [Value, Value];
    const rank = x.type.shape.length;
    const { axis } = op.params;
    const batch = range(0, rank).filter((d) => d !== axis);
    return [
      gather(
        e,
        e.ref(x),
        e.ref(idx),
        [
          ["collapsed_slice_dims", [axis]],
          ["operand_batching_dims", batch],
          ["start_indices_batching_dims", batch],
          ["start_index_map", [axis]],
          ["index_vector_dim", rank],
        ],
        x.type.shape.map(() => 1),
        `(${T(x)}, ${T(idx)}) -> ${T(op.outputs[0]!)}`,
      ),
    ];
  },
  dynamic_slice: (e, op) => {
    const [x, ...idx] = op.inputs as [Value, ...Value[]];
    const s = startIndices(e, idx);
    const types = [T(x), ...s.types].join(", ");
    return [
      e.op1(
        `stablehlo.dynamic_slice ${e.ref(x)}${s.refs}, sizes = ${dimsText(op.params.sizes)} : (${types}) -> ${T(op.outputs[0]!)}`,
      ),
    ];
  },
  dynamic_update_slice: (e, op) => {
    const [x, u, ...idx] = op.inputs as [Value, Value, ...Value[]];
    const s = startIndices(e, idx);
    const types = [T(x), T(u), ...s.types].join(", ");
    return [e.op1(`stablehlo.dynamic_update_slice ${e.ref(x)}, ${e.ref(u)}${s.refs} : (${types}) -> ${T(x)}`)];
  },

  scan,
  sort: (e, op) => {
    // The comparator sees one (lhs, rhs) pair of rank-0 values per operand and orders by the first operand only;
    // TOTALORDER puts NaNs last for floats, as jnp.sort does.
    const key = op.inputs[0]!;
    const kt = tensorType(key.type.dtype, []);
    const scalarTypes = op.inputs.map((v) => ty(tensorType(v.type.dtype, [])));
    const { lhs, refs } = e.results(op.inputs.length);
    const args = op.inputs.flatMap(() => [e.blockArg(), e.blockArg()]);
    const { dimension, descending, stable } = op.params;
    const operands = op.inputs.map((v) => e.ref(v)).join(", ");
    e.line(`${lhs} = "stablehlo.sort"(${operands}) <{dimension = ${dimension} : i64, is_stable = ${stable}}> ({`);
    e.line(`^bb0(${args.map((a, i) => `${a}: ${scalarTypes[i >> 1]}`).join(", ")}):`);
    e.indented(() => {
      const type = isFloat(kt.dtype) ? "TOTALORDER" : compareType(kt.dtype);
      const less = e.results(1).lhs;
      e.line(
        `${less} = stablehlo.compare ${descending ? "GT" : "LT"}, ${args[0]}, ${args[1]}, ${type} : (${ty(kt)}, ${ty(kt)}) -> tensor<i1>`,
      );
      e.line(`stablehlo.return ${less} : tensor<i1>`);
    });
    const types = op.inputs.map(T).join(", ");
    e.line(`}) : (${types}) -> (${types})${e.locSuffix()}`);
    return refs;
  },
  optimization_barrier: (e, op) => {
    if (op.inputs.length === 0) return [];
    const refs = op.inputs.map((v) => e.ref(v)).join(", ");
    return e.op(op.inputs.length, `stablehlo.optimization_barrier ${refs} : ${op.inputs.map(T).join(", ")}`);
  },
  // Only autodiff reads it; the program computes the identity.
  stop_gradient: (e, op) => [e.ref(op.inputs[0]!)],
  cond,
  while: whileLoop,
  // What runs when nothing was differentiated: the primal function, inline (autodiff replaced differentiated ones).
  custom_vjp: (e, op) =>
    inline(
      e,
      op.params.body,
      op.inputs.map((v) => e.ref(v)),
    ),
  // After autodiff a checkpoint is its body (the lowering inlines them before; kept for custom pass lists).
  checkpoint: (e, op) =>
    inline(
      e,
      op.params.body,
      op.inputs.map((v) => e.ref(v)),
    ),
  checkpoint_name: (e, op) => [e.ref(op.inputs[0]!)],
  cudnn_fmha: (e, op) => fmhaCall(e, op, "__cudnn$fmhaSoftmax", false),
  cudnn_fmha_bwd: (e, op) => fmhaCall(e, op, "__cudnn$fmhaSoftmaxBackward", true),
};
