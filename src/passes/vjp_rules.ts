// Vector-Jacobian product rules, one per op: given the cotangents of an op's results, emit its operands' cotangents.
import type { Op, Value } from "../ir/graph.ts";
import type { ElementwiseOp, OpName } from "../ir/ops.ts";
import { numel, range, tensorType, type TensorType } from "../ir/types.ts";
import type { Emitter } from "./emitter.ts";
import { TesseraError } from "../errors.ts";

/** A cotangent, or undefined where none flows (a zero that is never materialized). */
export type Ct = Value | undefined;

export interface VjpCtx {
  readonly e: Emitter;
  /** Values the primal pass saved for this op (for scan: the carries entering each iteration, stacked). */
  readonly residuals: readonly Value[] | undefined;
}

/**
 * `cts[i]` is the cotangent of result i (at least one is defined); `needs[i]` says whether operand i is
 * differentiated (a float value that depends on a `wrt` input). Returns one entry per operand, defined at
 * least where `needs` is true; each has the operand's type.
 */
export type VjpRule<N extends OpName> = (
  ctx: VjpCtx,
  op: Op<N>,
  cts: readonly Ct[],
  needs: readonly boolean[],
) => readonly Ct[];

/** The raw cuDNN attention ops have no VJP of their own: models/attention.ts wraps them in a customVjp. */
function fmhaNotDifferentiable(_ctx: VjpCtx, op: Op<"cudnn_fmha" | "cudnn_fmha_bwd">): readonly Ct[] {
  throw new TesseraError(
    `${op.name} is differentiated through cudnnAttention (models/attention.ts), whose backward is cudnn_fmha_bwd; the raw op has no VJP`,
    { code: "ERR_AUTODIFF" },
  );
}

/** Ops whose outputs carry no gradient: integer/bool results, bit reinterpretation, sources. */
const none = (): readonly Ct[] => [];

/** Single-result ops: the rule gets the one cotangent and returns each operand's (only where needed). */
function single<N extends OpName>(
  f: (e: Emitter, ct: Value, op: Op<N>, needs: readonly boolean[]) => readonly Ct[],
): VjpRule<N> {
  return (ctx, op, cts, needs) => f(ctx.e, cts[0]!, op, needs);
}

function unary<N extends OpName>(f: (e: Emitter, ct: Value, x: Value, z: Value) => Value): VjpRule<N> {
  return single<N>((e, ct, op) => [f(e, ct, op.inputs[0]!, op.outputs[0]!)]);
}

/** For binary ops; each closure runs only when its operand is needed. */
function binary<N extends OpName>(
  dx: (e: Emitter, ct: Value, x: Value, y: Value, z: Value) => Value,
  dy: (e: Emitter, ct: Value, x: Value, y: Value, z: Value) => Value,
): VjpRule<N> {
  return single<N>((e, ct, op, needs) => {
    const [x, y] = op.inputs as [Value, Value];
    const z = op.outputs[0]!;
    return [needs[0] ? dx(e, ct, x, y, z) : undefined, needs[1] ? dy(e, ct, x, y, z) : undefined];
  });
}

/**
 * max/min: the gradient goes to the operand that was selected; where both are equal it is split in half,
 * as JAX does (`_balanced_eq`), so that max(x, x) has gradient 1 in x.
 */
function chooser(e: Emitter, ct: Value, self: Value, other: Value, z: Value): Value {
  const weight = e.select(
    e.compare("eq", self, z),
    e.select(e.compare("eq", other, z), e.like(z, 0.5), e.like(z, 1)),
    e.like(z, 0),
  );
  return e.mul(ct, weight);
}

/** The dims of a rank-`rank` tensor that survive a reduction over `axes`. */
function keptDims(rank: number, axes: readonly number[]): number[] {
  return range(rank).filter((d) => !axes.includes(d));
}

/** Ties split the gradient evenly, as JAX does: ct * mask / count(mask). */
function reduceChooser(e: Emitter, ct: Value, op: Op<"reduce_max" | "reduce_min">): Value {
  const x = op.inputs[0]!;
  const z = op.outputs[0]!;
  const kept = keptDims(x.type.shape.length, op.params.axes);
  const mask = e.convert(e.compare("eq", x, e.broadcast(z, x.type.shape, kept)), x.type.dtype);
  const counts = e.reduceSum(mask, op.params.axes);
  return e.mul(mask, e.broadcast(e.div(ct, counts), x.type.shape, kept));
}

/**
 * The cotangent of one dot_general operand ("target"): contract the result cotangent with the other operand
 * over the other operand's free dims, keeping batch dims, then transpose to the target's dim order. The product
 * can be written with the cotangent on either side; the side is chosen so that the larger operand needs no
 * transpose (dotCopyCost). For a plain matmul's lhs that keeps the cotangent first; for a LoRA `A` (x [T, in] @
 * A [in, r]) it computes (ct^T x)^T, transposing the small [T, r] cotangent and [r, in] result instead of the
 * [T, in] activation, which XLA CPU otherwise copies in full every layer. The product runs in the operands'
 * dtype with the original accumulation dtype, then converts.
 */
function dotTranspose(e: Emitter, ct: Value, op: Op<"dot_general">, targetIsLhs: boolean): Value {
  const p = op.params;
  const [lhs, rhs] = op.inputs as [Value, Value];
  const [target, other] = targetIsLhs ? [lhs, rhs] : [rhs, lhs];
  const [tBatch, oBatch, tContract, oContract] = targetIsLhs
    ? [p.lhsBatch, p.rhsBatch, p.lhsContract, p.rhsContract]
    : [p.rhsBatch, p.lhsBatch, p.rhsContract, p.lhsContract];
  const nb = tBatch.length;
  const tFree = keptDims(target.type.shape.length, [...tBatch, ...tContract]);
  const oFree = keptDims(other.type.shape.length, [...oBatch, ...oContract]);
  // Positions of the other operand's free dims in the cotangent (result order: batch, lhs free, rhs free).
  const oFreeInCt = oFree.map((_, i) => (targetIsLhs ? nb + tFree.length + i : nb + i));
  const c = e.convert(ct, other.type.dtype);
  // The other operand's contracting dims survive in ascending order; each stands for the target dim it met.
  const oContractAsTarget = [...oContract].sort((a, b) => a - b).map((d) => tContract[oContract.indexOf(d)]!);
  const ctBatch = range(nb);
  const ctSide = { batch: ctBatch, contract: oFreeInCt, shape: c.type.shape };
  const otherSide = { batch: oBatch, contract: oFree, shape: other.type.shape };
  // Product dims (batch, lhs free, rhs free) as target dims, with the cotangent first or second.
  const ctFirstDims = [...tBatch, ...tFree, ...oContractAsTarget];
  const ctSecondDims = [...tBatch, ...oContractAsTarget, ...tFree];
  const cost = (first: DotSide, second: DotSide, dims: number[]) =>
    dotCopyCost(first, second) + (isIdentity(dims) ? 0 : numel(target.type.shape));
  const ctFirstCost = cost(ctSide, otherSide, ctFirstDims);
  const ctSecondCost = cost(otherSide, ctSide, ctSecondDims);
  // Ties keep the cotangent on the target's side (lhs: first), the form a plain matmul needs no transpose in.
  // 16-bit products keep it always: the older XLA CPU (xla-cpu-pjrt) cannot run some of the swapped bf16 dots
  // ("Unsupported element type for DotThunk: BF16 x BF16 = F32"), and a GPU reads either operand transposed.
  const swappable = other.type.dtype === "f32";
  const ctFirst = targetIsLhs ? !swappable || ctFirstCost <= ctSecondCost : swappable && ctFirstCost < ctSecondCost;
  const [first, second] = ctFirst ? [ctSide, otherSide] : [otherSide, ctSide];
  const prod = e.op("dot_general", ctFirst ? [c, other] : [other, c], {
    lhsBatch: first.batch,
    rhsBatch: second.batch,
    lhsContract: first.contract,
    rhsContract: second.contract,
    outDtype: ct.type.dtype,
  });
  const prodToTarget = ctFirst ? ctFirstDims : ctSecondDims;
  const perm = range(prodToTarget.length).map((d) => prodToTarget.indexOf(d));
  return e.convert(e.transpose(prod, perm), target.type.dtype);
}

/** One operand of a dot_general: its batch and contracting dims, in the pairing order, and its shape. */
interface DotSide {
  readonly batch: readonly number[];
  readonly contract: readonly number[];
  readonly shape: readonly number[];
}

/**
 * Elements a dot_general's operands must be transposed by before a GEMM can read them: XLA (and a BLAS call)
 * reads an lhs laid out [batch..., free..., contracting...] and an rhs laid out [batch..., contracting...,
 * free...] or [batch..., free..., contracting...] (a transposed B is a GEMM flag); any other order is copied.
 */
function dotCopyCost(lhs: DotSide, rhs: DotSide): number {
  const free = (s: DotSide) => keptDims(s.shape.length, [...s.batch, ...s.contract]);
  const lhsOk = isIdentity([...lhs.batch, ...free(lhs), ...lhs.contract]);
  const rhsOk =
    isIdentity([...rhs.batch, ...rhs.contract, ...free(rhs)]) ||
    isIdentity([...rhs.batch, ...free(rhs), ...rhs.contract]);
  return (lhsOk ? 0 : numel(lhs.shape)) + (rhsOk ? 0 : numel(rhs.shape));
}

function isIdentity(dims: readonly number[]): boolean {
  return dims.every((d, i) => d === i);
}

/** Integer indices clamped into [0, n-1], so that scatter/one-hot gradients see the rows gather read. */
function clampIndices(e: Emitter, idx: Value, n: number): Value {
  if (n === 0) return idx;
  return e.min(e.max(idx, e.like(idx, 0)), e.like(idx, n - 1));
}

/**
 * The VJPs of the element-wise ops (ELEMENTWISE in ir/elementwise.ts), keyed by the same type so a new one fails
 * to compile until it has a rule. Kept here rather than in the descriptor: they build IR with the passes' Emitter,
 * and ir/ must not import passes/.
 */
export const ELEMENTWISE_VJP: { [N in ElementwiseOp]: VjpRule<N> } = {
  neg: unary((e, ct) => e.neg(ct)),
  // JAX's rule: the subgradient at 0 is +1.
  abs: unary((e, ct, x) => e.select(e.compare("ge", x, e.like(x, 0)), ct, e.neg(ct))),
  exp: unary((e, ct, _x, z) => e.mul(ct, z)),
  log: unary((e, ct, x) => e.div(ct, x)),
  sqrt: unary((e, ct, _x, z) => e.mul(ct, e.div(e.like(z, 0.5), z))),
  rsqrt: unary((e, ct, x, z) => e.mul(ct, e.mul(e.like(z, -0.5), e.div(z, x)))),
  tanh: unary((e, ct, _x, z) => e.mul(ct, e.sub(e.like(z, 1), e.mul(z, z)))),
  logistic: unary((e, ct, _x, z) => e.mul(ct, e.mul(z, e.sub(e.like(z, 1), z)))),
  sin: unary((e, ct, x) => e.mul(ct, e.noParams("cos", [x]))),
  cos: unary((e, ct, x) => e.mul(e.neg(ct), e.noParams("sin", [x]))),
  // d/dx erf(x) = 2/sqrt(pi) exp(-x^2).
  erf: unary((e, ct, x) =>
    e.mul(ct, e.mul(e.like(x, 2 / Math.sqrt(Math.PI)), e.noParams("exp", [e.neg(e.mul(x, x))]))),
  ),
  // d/dx log(1 + x) = 1 / (1 + x); d/dx (exp(x) - 1) = exp(x) = z + 1.
  log1p: unary((e, ct, x) => e.div(ct, e.add(x, e.like(x, 1)))),
  expm1: unary((e, ct, _x, z) => e.mul(ct, e.add(z, e.like(z, 1)))),
  // Piecewise constant: zero almost everywhere, as JAX's rules.
  floor: none,
  ceil: none,
  round: none,
  sign: none,
  not: none,

  add: binary(
    (_e, ct) => ct,
    (_e, ct) => ct,
  ),
  sub: binary(
    (_e, ct) => ct,
    (e, ct) => e.neg(ct),
  ),
  mul: binary(
    (e, ct, _x, y) => e.mul(ct, y),
    (e, ct, x) => e.mul(x, ct),
  ),
  div: binary(
    (e, ct, _x, y) => e.div(ct, y),
    (e, ct, x, y) => e.div(e.mul(e.neg(ct), x), e.mul(y, y)),
  ),
  // JAX's rules: d/dx is 0 where y == 0 (even at x == 0); d/dy uses log(1) where x == 0 so 0^y gives 0, not NaN.
  pow: binary(
    (e, ct, x, y) => {
      const dzdx = e.mul(y, e.noParams("pow", [x, e.sub(y, e.like(y, 1))]));
      return e.mul(ct, e.select(e.compare("eq", y, e.like(y, 0)), e.like(y, 0), dzdx));
    },
    (e, ct, x, _y, z) => {
      const safeX = e.select(e.compare("eq", x, e.like(x, 0)), e.like(x, 1), x);
      return e.mul(ct, e.mul(z, e.noParams("log", [safeX])));
    },
  ),
  max: binary(
    (e, ct, x, y, z) => chooser(e, ct, x, y, z),
    (e, ct, x, y, z) => chooser(e, ct, y, x, z),
  ),
  min: binary(
    (e, ct, x, y, z) => chooser(e, ct, x, y, z),
    (e, ct, x, y, z) => chooser(e, ct, y, x, z),
  ),
  and: none,
  or: none,
  xor: none,
  shift_left: none,
  shift_right_logical: none,
};

/** Ops with nested graphs: their rules need the whole autodiff machinery and live in autodiff.ts. */
export type BodyOpName = "scan" | "cond" | "while" | "custom_vjp" | "checkpoint";

/** Every op except those with bodies (BodyOpName). */
export const VJP_RULES: { [N in Exclude<OpName, BodyOpName>]: VjpRule<N> } = {
  ...ELEMENTWISE_VJP,
  compare: none,

  select: single((e, ct, op, needs) => {
    const [pred] = op.inputs as [Value];
    const zero = needs[1] || needs[2] ? e.like(ct, 0) : undefined;
    return [
      undefined,
      needs[1] ? e.select(pred, ct, zero!) : undefined,
      needs[2] ? e.select(pred, zero!, ct) : undefined,
    ];
  }),
  // Cast the cotangent back; only float -> float converts are ever differentiated (other operands or results
  // are integers or bools, which carry no gradient).
  convert: single((e, ct, op) => [e.convert(ct, op.inputs[0]!.type.dtype)]),
  bitcast_convert: none,
  constant: none,
  iota: none,

  // Sum over the dims the broadcast added or stretched, then reshape to restore stretched size-1 dims.
  broadcast_in_dim: single((e, ct, op) => {
    const x = op.inputs[0]!;
    const { shape, dims } = op.params;
    const summed = range(shape.length).filter((d) => {
      const i = dims.indexOf(d);
      return i < 0 || (x.type.shape[i] === 1 && shape[d] !== 1);
    });
    return [e.reshape(e.reduceSum(ct, summed), x.type.shape)];
  }),
  reshape: single((e, ct, op) => [e.reshape(ct, op.inputs[0]!.type.shape)]),
  transpose: single((e, ct, op) => {
    const perm = op.params.perm;
    return [
      e.transpose(
        ct,
        range(perm.length).map((d) => perm.indexOf(d)),
      ),
    ];
  }),
  // Scatter the cotangent back with zeros: low padding = start, interior = stride - 1, high fills the rest.
  slice: single((e, ct, op) => {
    const x = op.inputs[0]!;
    const { start, stride } = op.params;
    const n = ct.type.shape;
    const high = x.type.shape.map((d, i) => d - start[i]! - (n[i]! === 0 ? 0 : (n[i]! - 1) * stride[i]! + 1));
    const interior = stride.map((s) => s - 1);
    return [e.pad(ct, e.scalar(ct.type.dtype, 0), start, high, interior)];
  }),
  concatenate: single((e, ct, op, needs) => {
    const axis = op.params.axis;
    let offset = 0;
    return op.inputs.map((x, i) => {
      const size = x.type.shape[axis]!;
      const begin = offset;
      offset += size;
      if (!needs[i]) return undefined;
      const start = ct.type.shape.map((_, d) => (d === axis ? begin : 0));
      const limit = ct.type.shape.map((s, d) => (d === axis ? begin + size : s));
      return e.slice(
        ct,
        start,
        limit,
        ct.type.shape.map(() => 1),
      );
    });
  }),
  // Operand: undo the edge padding (negative pads crop; positive ones restore what a negative pad cropped, as
  // zeros), then take every (interior + 1)-th element. Padding value: everything not taken from the operand.
  pad: single((e, ct, op, needs) => {
    const [x] = op.inputs as [Value];
    const { low, high, interior } = op.params;
    const rank = x.type.shape.length;
    const edges = low.some((l) => l !== 0) || high.some((h) => h !== 0);
    const unpadded = edges
      ? e.pad(
          ct,
          e.scalar(ct.type.dtype, 0),
          low.map((l) => -l),
          high.map((h) => -h),
          low.map(() => 0),
        )
      : ct;
    const ctX = interior.some((i) => i !== 0)
      ? e.slice(
          unpadded,
          unpadded.type.shape.map(() => 0),
          unpadded.type.shape,
          interior.map((i) => i + 1),
        )
      : unpadded;
    const ctPad = needs[1] ? e.sub(e.reduceSum(ct, range(rank)), e.reduceSum(ctX, range(rank))) : undefined;
    return [needs[0] ? ctX : undefined, ctPad];
  }),

  reduce_sum: single((e, ct, op) => {
    const x = op.inputs[0]!;
    return [e.broadcast(ct, x.type.shape, keptDims(x.type.shape.length, op.params.axes))];
  }),
  reduce_max: single((e, ct, op) => [reduceChooser(e, ct, op)]),
  reduce_min: single((e, ct, op) => [reduceChooser(e, ct, op)]),

  dot_general: single((e, ct, op, needs) => [
    needs[0] ? dotTranspose(e, ct, op, true) : undefined,
    needs[1] ? dotTranspose(e, ct, op, false) : undefined,
  ]),

  // gather reads clamped rows, so the gradient is added into the same clamped rows.
  gather: single((e, ct, op) => {
    const [x, idx] = op.inputs as [Value, Value];
    const rows = clampIndices(e, idx, x.type.shape[0]!);
    return [e.noParams("scatter_add", [e.zeros(x.type), rows, ct])];
  }),
  // Each update row was added into operand row idx, so it reads that row back; scatter drops out-of-range
  // rows (XLA semantics) while gather would clamp them, hence the mask.
  scatter_add: single((e, ct, op, needs) => {
    const [x, idx, upd] = op.inputs as [Value, Value, Value];
    if (!needs[2]) return [ct, undefined, undefined];
    const inRange = e.noParams("and", [
      e.compare("ge", idx, e.like(idx, 0)),
      e.compare("lt", idx, e.like(idx, x.type.shape[0]!)),
    ]);
    const rows = e.broadcast(inRange, upd.type.shape, range(idx.type.shape.length));
    const ctUpd = e.select(rows, e.noParams("gather", [ct, idx]), e.zeros(upd.type));
    return [needs[0] ? ct : undefined, undefined, ctUpd];
  }),
  // A one-hot of the (clamped) indices over a new dim after `axis`, times the broadcast cotangent, summed over
  // the indices' `axis`: shapes stay [..., M, D, ...] (M indices, D operand entries), the small case in practice
  // (cross-entropy picks one class per row). Chosen over scatter because it is plain element-wise IR.
  take_along_axis: single((e, ct, op) => {
    const [x, idx] = op.inputs as [Value, Value];
    const axis = op.params.axis;
    const d = x.type.shape[axis]!;
    const rank = idx.type.shape.length;
    const wide = [...idx.type.shape.slice(0, axis + 1), d, ...idx.type.shape.slice(axis + 1)];
    const dims = range(rank).map((i) => (i <= axis ? i : i + 1));
    const positions = e.op("iota", [], { dtype: idx.type.dtype, shape: wide, dim: axis + 1 });
    const hits = e.compare("eq", e.broadcast(clampIndices(e, idx, d), wide, dims), positions);
    const spread = e.mul(e.convert(hits, x.type.dtype), e.broadcast(ct, wide, dims));
    return [e.reduceSum(spread, [axis])];
  }),
  // Both slicing ops clamp their starts the same way, so writing back at the same starts hits the same window.
  dynamic_slice: single((e, ct, op) => {
    const [x, ...starts] = op.inputs as [Value, ...Value[]];
    return [e.noParams("dynamic_update_slice", [e.zeros(x.type), ct, ...starts])];
  }),
  dynamic_update_slice: single((e, ct, op, needs) => {
    const [, update, ...starts] = op.inputs as [Value, Value, ...Value[]];
    const ctOperand = needs[0] ? e.noParams("dynamic_update_slice", [ct, e.zeros(update.type), ...starts]) : undefined;
    const ctUpdate = needs[1] ? e.op("dynamic_slice", [ct, ...starts], { sizes: update.type.shape }) : undefined;
    return [ctOperand, ctUpdate, ...starts.map(() => undefined)];
  }),

  // A permutation along `dimension`, as JAX's sort JVP: sort an iota with the key (the same order the forward
  // took), invert that permutation by sorting it with another iota, and gather each cotangent back through it.
  sort: (ctx, op, cts, needs) => {
    const { e } = ctx;
    const key = op.inputs[0]!;
    const { dimension, descending, stable } = op.params;
    const shape = key.type.shape;
    const positions = () => e.op("iota", [], { dtype: "s32", shape, dim: dimension });
    const perm = e.ops("sort", [key, positions()], { dimension, descending, stable })[1]!;
    const inverse = e.ops("sort", [perm, positions()], { dimension, descending: false, stable: false })[1]!;
    return op.inputs.map((x, i) => {
      if (!needs[i]) return undefined;
      const ct = cts[i];
      if (ct === undefined) return e.zeros(x.type);
      return e.op("take_along_axis", [ct, inverse], { axis: dimension });
    });
  },
  // Identity: cotangents go back through a barrier of their own, keeping the backward schedule pinned as well.
  optimization_barrier: (ctx, op, cts, needs) => {
    const idx = range(op.inputs.length).filter((i) => needs[i]);
    if (idx.every((i) => cts[i] === undefined)) return [];
    const outs = ctx.e.barrier(idx.map((i) => cts[i] ?? ctx.e.zeros(op.outputs[i]!.type)));
    const result: Ct[] = op.inputs.map(() => undefined);
    idx.forEach((i, k) => {
      result[i] = outs[k];
    });
    return result;
  },
  // JAX's stop_gradient: the value passes, its cotangent does not (autodiff also treats its result as inactive).
  stop_gradient: none,
  // A name for the remat policy: the identity.
  checkpoint_name: (_ctx, _op, cts) => [cts[0]],
  // Differentiated only through cudnnAttention's customVjp, whose bwd is the backward custom call.
  cudnn_fmha: fmhaNotDifferentiable,
  cudnn_fmha_bwd: fmhaNotDifferentiable,
};

/** Whether `name`'s results never carry a gradient (its VJP is `none`), whatever its operands. */
export function carriesNoGradient(name: Exclude<OpName, BodyOpName>): boolean {
  return VJP_RULES[name] === none;
}

/** `[length, ...t.shape]`: a value stacked over the iterations of a scan. */
export function stackedType(t: TensorType, length: number): TensorType {
  return tensorType(t.dtype, [length, ...t.shape]);
}
