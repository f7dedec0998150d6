// The closed op set: every op name and its parameters, spelled once in OP_SCHEMA. Rule tables elsewhere are keyed on OpName.
import type { DType } from "./types.ts";
import type { Graph } from "./graph.ts";
import { forEachElementwise } from "./elementwise.ts";

export {
  UNARY_OPS,
  BINARY_OPS,
  ELEMENTWISE_OPS,
  isElementwise,
  type UnaryOp,
  type BinaryOp,
  type ElementwiseOp,
} from "./elementwise.ts";

export type CompareDir = "eq" | "ne" | "lt" | "le" | "gt" | "ge";

/**
 * int: integer; ints: integer array; numbers: any float64 array (constant values); string(s): text (a checkpoint
 * policy, a value's name); graph: a nested Graph; graphs: a non-empty list of nested Graphs (the branches of a cond).
 */
export type ParamKind =
  | "int"
  | "ints"
  | "numbers"
  | "dtype"
  | "dir"
  | "bool"
  | "string"
  | "strings"
  | "graph"
  | "graphs";

/** The TypeScript type of a param of each kind. */
interface KindType {
  int: number;
  ints: readonly number[];
  numbers: readonly number[];
  dtype: DType;
  dir: CompareDir;
  bool: boolean;
  string: string;
  strings: readonly string[];
  graph: Graph;
  graphs: readonly Graph[];
}

const NONE = {} as const;

/**
 * Each op's params, key -> kind: the one place an op's param names are written. OpParams (the types) is derived
 * from it, and the text parser and the verifier check params against it (param_schema.ts). Element-wise ops
 * (ELEMENTWISE in elementwise.ts) take no params. The key order is the order of OP_NAMES.
 */
export const OP_SCHEMA = {
  ...forEachElementwise((): typeof NONE => NONE),
  compare: { dir: "dir" },
  /** inputs: pred (bool, same shape), on_true, on_false. */
  select: NONE,
  convert: { dtype: "dtype" },
  /** Reinterpret bits; source and target have the same bit width. */
  bitcast_convert: { dtype: "dtype" },

  // Sources.
  /** `value` has one element (a splat) or numel(shape) elements in row-major order. */
  constant: { dtype: "dtype", shape: "ints", value: "numbers" },
  iota: { dtype: "dtype", shape: "ints", dim: "int" },

  // Shape manipulation.
  /** operand dim i maps to result dim dims[i] (strictly increasing); size-1 operand dims stretch. */
  broadcast_in_dim: { shape: "ints", dims: "ints" },
  reshape: { shape: "ints" },
  transpose: { perm: "ints" },
  slice: { start: "ints", limit: "ints", stride: "ints" },
  concatenate: { axis: "int" },
  /** inputs: operand, padding value (rank-0, same dtype). Negative low/high crop. */
  pad: { low: "ints", high: "ints", interior: "ints" },

  // Reductions over sorted, distinct axes; the reduced axes disappear from the result.
  reduce_sum: { axes: "ints" },
  reduce_max: { axes: "ints" },
  reduce_min: { axes: "ints" },

  /** Result dims: batch, lhs free, rhs free (StableHLO's order). `outDtype` is the accumulation/result type. */
  dot_general: { lhsBatch: "ints", rhsBatch: "ints", lhsContract: "ints", rhsContract: "ints", outDtype: "dtype" },

  // Indexing.
  /** Embedding lookup: operand [N, ...rest], integer indices [...idx] -> [...idx, ...rest]. */
  gather: NONE,
  /** Transpose of gather: operand [N, ...rest], indices [...idx], updates [...idx, ...rest] -> operand with updates added at rows. */
  scatter_add: NONE,
  /** numpy take_along_axis: operand and integer indices of equal rank; the result has the indices' shape. */
  take_along_axis: { axis: "int" },
  /** inputs: operand, then one rank-0 integer start index per dim (clamped into range, as in XLA). */
  dynamic_slice: { sizes: "ints" },
  /** inputs: operand, update, then one rank-0 integer start index per dim (clamped). */
  dynamic_update_slice: NONE,

  /**
   * Sorts its operands (all one shape) together along `dimension`, ordered by the first: floats in total order
   * (-NaN < -inf < ... < -0 < +0 < ... < inf < NaN), `descending` reverses it; `stable` keeps equal keys in operand
   * order. One result per operand. Sorting a value with an s32 iota gives argsort.
   */
  sort: { dimension: "int", descending: "bool", stable: "bool" },

  // Control and scheduling.
  /**
   * A loop over the leading axis of the `xs`. inputs: consts (numConsts), carries (numCarry), xs (stacked on
   * axis 0, `length` long). body: (consts, carries, x slices) -> (new carries, y slices).
   * outputs: final carries, ys stacked on axis 0. `reverse` walks from the last slice to the first.
   */
  scan: { body: "graph", length: "int", numConsts: "int", numCarry: "int", reverse: "bool" },
  /** Identity on all inputs that XLA may not move computation across (used for rematerialization). */
  optimization_barrier: NONE,
  /** Identity forward; no cotangent flows back through it (JAX's stop_gradient). */
  stop_gradient: NONE,
  /**
   * Runs one of `branches` (StableHLO's if/case). inputs: index, then the operands every branch takes (each
   * branch: operands -> results, all branches of one result type list). The index is a rank-0 bool with two
   * branches [false, true], or a rank-0 s32 (out of range runs the last branch, as stablehlo.case does).
   */
  cond: { branches: "graphs" },
  /**
   * A loop while `cond` holds (StableHLO's while). inputs: consts (numConsts), carries. cond: (consts, carries) ->
   * bool[]; body: (consts, carries) -> new carries. outputs: the final carries.
   */
  while: { cond: "graph", body: "graph", numConsts: "int" },
  /**
   * A function with its own gradient (JAX's custom_vjp). inputs: consts (numConsts: values the functions close
   * over, not differentiated), operands. body: (consts, operands) -> outputs, what runs when nothing is
   * differentiated; fwd: (consts, operands) -> (outputs, residuals); bwd: (consts, residuals, one cotangent per
   * output) -> one cotangent per operand. Autodiff replaces it by fwd and bwd; the emitter inlines body.
   */
  custom_vjp: { body: "graph", fwd: "graph", bwd: "graph", numConsts: "int" },
  /**
   * Rematerialization (JAX's jax.checkpoint / remat): runs `body` (operands -> results). Differentiating it keeps
   * from the forward pass only the operands and what `policy` saves of the body's top-level ops (`nothingSaveable`,
   * `dotsSaveable`, `dotsWithNoBatchDimsSaveable`, `saveOnlyTheseNames` with `names`, `everythingSaveable`); the
   * backward pass recomputes the rest behind an optimization_barrier. Without autodiff it is its body, inlined.
   */
  checkpoint: { body: "graph", policy: "string", names: "strings" },
  /** Identity that names its operand for a `saveOnlyTheseNames` policy (JAX's checkpoint_name). */
  checkpoint_name: { name: "string" },

  // cuDNN fused attention (GPU only; layouts and semantics in cudnn_fmha.ts). `scale` holds one number.
  /** inputs: q [B, T, N, H], k, v [B, S, K, H]. outputs: out [B, N, T, H], then (if `stats`) stats f32[B, N, T]. */
  cudnn_fmha: { scale: "numbers", causal: "bool", stats: "bool" },
  /** inputs: q, k, v, stats, dO and O [B, T, N, H]. outputs: dq [B, N, T, H], dk and dv [B, K, S, H]. */
  cudnn_fmha_bwd: { scale: "numbers", causal: "bool" },
} as const satisfies Record<string, Readonly<Record<string, ParamKind>>>;

type Schema = typeof OP_SCHEMA;

export type OpName = keyof Schema;

export type NoParams = Record<never, never>;

/**
 * Parameters of each op, derived from OP_SCHEMA: adding an op there makes every rule table
 * (`{ [N in OpName]: ... }`) fail to type-check until it has a rule for the new op.
 */
export type OpParams = {
  readonly [N in OpName]: { readonly [K in keyof Schema[N]]: KindType[Schema[N][K] & ParamKind] };
};

/** Every op name, in the order used for docs and op-count tables. */
export const OP_NAMES = Object.keys(OP_SCHEMA) as readonly OpName[];

export function isOpName(s: string): s is OpName {
  return Object.hasOwn(OP_SCHEMA, s);
}
