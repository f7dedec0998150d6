// The closed op set: every op name, its parameters, and its family. Rule tables elsewhere are keyed on OpName.
import type { DType, Shape } from "./types.ts";
import type { Graph } from "./graph.ts";

export const UNARY_OPS = [
  "neg",
  "abs",
  "exp",
  "log",
  "sqrt",
  "rsqrt",
  "tanh",
  "logistic",
  "sin",
  "cos",
  "not",
] as const;
export type UnaryOp = (typeof UNARY_OPS)[number];

export const BINARY_OPS = [
  "add",
  "sub",
  "mul",
  "div",
  "pow",
  "max",
  "min",
  "and",
  "or",
  "xor",
  "shift_left",
  "shift_right_logical",
] as const;
export type BinaryOp = (typeof BINARY_OPS)[number];

export type CompareDir = "eq" | "ne" | "lt" | "le" | "gt" | "ge";

export interface NoParams {}

/**
 * Parameters of each op. The keys of this interface are the op set: adding an op here makes every
 * rule table (`{ [N in OpName]: ... }`) fail to type-check until it has a rule for the new op.
 */
export interface OpParams {
  // Element-wise, operands of identical type (the IR never broadcasts implicitly).
  neg: NoParams;
  abs: NoParams;
  exp: NoParams;
  log: NoParams;
  sqrt: NoParams;
  rsqrt: NoParams;
  tanh: NoParams;
  logistic: NoParams;
  sin: NoParams;
  cos: NoParams;
  not: NoParams;
  add: NoParams;
  sub: NoParams;
  mul: NoParams;
  div: NoParams;
  pow: NoParams;
  max: NoParams;
  min: NoParams;
  and: NoParams;
  or: NoParams;
  xor: NoParams;
  shift_left: NoParams;
  shift_right_logical: NoParams;
  compare: { readonly dir: CompareDir };
  /** inputs: pred (bool, same shape), on_true, on_false. */
  select: NoParams;
  convert: { readonly dtype: DType };
  /** Reinterpret bits; source and target have the same bit width. */
  bitcast_convert: { readonly dtype: DType };

  // Sources.
  /** `value` has one element (a splat) or numel(shape) elements in row-major order. */
  constant: { readonly dtype: DType; readonly shape: Shape; readonly value: readonly number[] };
  iota: { readonly dtype: DType; readonly shape: Shape; readonly dim: number };

  // Shape manipulation.
  /** operand dim i maps to result dim dims[i] (strictly increasing); size-1 operand dims stretch. */
  broadcast_in_dim: { readonly shape: Shape; readonly dims: readonly number[] };
  reshape: { readonly shape: Shape };
  transpose: { readonly perm: readonly number[] };
  slice: { readonly start: readonly number[]; readonly limit: readonly number[]; readonly stride: readonly number[] };
  concatenate: { readonly axis: number };
  /** inputs: operand, padding value (rank-0, same dtype). Negative low/high crop. */
  pad: { readonly low: readonly number[]; readonly high: readonly number[]; readonly interior: readonly number[] };

  // Reductions over sorted, distinct axes; the reduced axes disappear from the result.
  reduce_sum: { readonly axes: readonly number[] };
  reduce_max: { readonly axes: readonly number[] };
  reduce_min: { readonly axes: readonly number[] };

  /** Result dims: batch, lhs free, rhs free (StableHLO's order). `outDtype` is the accumulation/result type. */
  dot_general: {
    readonly lhsBatch: readonly number[];
    readonly rhsBatch: readonly number[];
    readonly lhsContract: readonly number[];
    readonly rhsContract: readonly number[];
    readonly outDtype: DType;
  };

  // Indexing.
  /** Embedding lookup: operand [N, ...rest], integer indices [...idx] -> [...idx, ...rest]. */
  gather: NoParams;
  /** Transpose of gather: operand [N, ...rest], indices [...idx], updates [...idx, ...rest] -> operand with updates added at rows. */
  scatter_add: NoParams;
  /** numpy take_along_axis: operand and integer indices of equal rank; the result has the indices' shape. */
  take_along_axis: { readonly axis: number };
  /** inputs: operand, then one rank-0 integer start index per dim (clamped into range, as in XLA). */
  dynamic_slice: { readonly sizes: readonly number[] };
  /** inputs: operand, update, then one rank-0 integer start index per dim (clamped). */
  dynamic_update_slice: NoParams;

  // Control and scheduling.
  /**
   * A loop over the leading axis of the `xs`. inputs: consts (numConsts), carries (numCarry), xs (stacked on
   * axis 0, `length` long). body: (consts, carries, x slices) -> (new carries, y slices).
   * outputs: final carries, ys stacked on axis 0. `reverse` walks from the last slice to the first.
   */
  scan: {
    readonly body: Graph;
    readonly length: number;
    readonly numConsts: number;
    readonly numCarry: number;
    readonly reverse: boolean;
  };
  /** Identity on all inputs that XLA may not move computation across (used for rematerialization). */
  optimization_barrier: NoParams;
}

export type OpName = keyof OpParams;

/** Every op name, in the order used for docs and op-count tables. */
export const OP_NAMES: readonly OpName[] = [
  ...UNARY_OPS,
  ...BINARY_OPS,
  "compare",
  "select",
  "convert",
  "bitcast_convert",
  "constant",
  "iota",
  "broadcast_in_dim",
  "reshape",
  "transpose",
  "slice",
  "concatenate",
  "pad",
  "reduce_sum",
  "reduce_max",
  "reduce_min",
  "dot_general",
  "gather",
  "scatter_add",
  "take_along_axis",
  "dynamic_slice",
  "dynamic_update_slice",
  "scan",
  "optimization_barrier",
];

export function isOpName(s: string): s is OpName {
  return (OP_NAMES as readonly string[]).includes(s);
}

export function isUnary(name: OpName): name is UnaryOp {
  return (UNARY_OPS as readonly string[]).includes(name);
}

export function isBinary(name: OpName): name is BinaryOp {
  return (BINARY_OPS as readonly string[]).includes(name);
}
