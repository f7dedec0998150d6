// Lowers an f32 dot_general to the OpenBLAS custom call (native/cpu_gemm.cc): operands brought to [L, B, M, K] x [L, B, K, N] form.
import type { AnyOp, Graph, Op, Value } from "../../ir/graph.ts";
import { range, tensorType, type Shape, type TensorType } from "../../ir/types.ts";
import type { FuncEmitter } from "./emitter.ts";
import { dimsText, tensorTypeText as ty } from "./text.ts";

/** The custom-call targets native/cpu_gemm.cc registers, by whether A and B are stored transposed. */
export const CPU_GEMM_TARGETS = {
  nn: "tessera_sgemm_f32_nn",
  nt: "tessera_sgemm_f32_nt",
  tn: "tessera_sgemm_f32_tn",
  tt: "tessera_sgemm_f32_tt",
} as const;

/** native/cpu_gemm.cc's target for a buffer that is allocated and not written (a scan's stacked outputs). */
export const UNINITIALIZED_TARGET = "tessera_uninitialized";

/** Below this many multiply-adds per product XLA's dot is as fast as the call. */
const MIN_MACS = 1 << 18;
/** Products with fewer rows (a decode step's batch) go to the call only in the few-rows form. */
const MIN_ROWS = 16;
/** The few-rows form gains once B is this big (multiply-adds per row): smaller ones stay with XLA. */
const FEW_ROWS_MIN_B = 1 << 16;

/** dims are the last `dims.length` dims of a rank-`rank` value, in order. */
const trailing = (dims: readonly number[], rank: number) => dims.every((d, i) => d === rank - dims.length + i);

/**
 * Whether the GEMM call computes this dot: f32 operands and result, and either a matrix product big enough to
 * gain (at least MIN_ROWS rows and columns) or a few-rows product x [.., K] by a weight stored [N, K] (as
 * nn.Linear stores it; the decode programs keep their weights so), which native/cpu_gemm.cc streams once where
 * XLA's dot packs all of it for a handful of rows.
 */
export function cpuGemmApplies(op: Op<"dot_general">): boolean {
  const [a, b] = op.inputs as [Value, Value];
  const out = op.outputs[0]!;
  if (a.type.dtype !== "f32" || b.type.dtype !== "f32" || out.type.dtype !== "f32") return false;
  const p = op.params;
  const { m, n, k } = extents(op);
  if (k === 0 || m === 0 || n === 0) return false;
  if (m >= MIN_ROWS) return n >= MIN_ROWS && m * n * k >= MIN_MACS;
  const fewRowsForm =
    p.lhsBatch.length === 0 &&
    trailing(p.lhsContract, a.type.shape.length) &&
    trailing(p.rhsContract, b.type.shape.length);
  return fewRowsForm && n * k >= FEW_ROWS_MIN_B;
}

/** A dot's product sizes: m rows (A's free dims), n columns (B's free dims), k contracted. */
function extents(op: Op<"dot_general">): { m: number; n: number; k: number } {
  const [a, b] = op.inputs as [Value, Value];
  const p = op.params;
  const free = (v: Value, batch: readonly number[], contract: readonly number[]) =>
    range(0, v.type.shape.length).filter((d) => !batch.includes(d) && !contract.includes(d));
  return {
    m: prod(a.type.shape, free(a, p.lhsBatch, p.lhsContract)),
    n: prod(b.type.shape, free(b, p.rhsBatch, p.rhsContract)),
    k: prod(a.type.shape, p.lhsContract),
  };
}

/** An `add` that one GEMM call computes: `base + dot` with `dot` accumulated into `base` (beta 1). */
export interface GemmAdd {
  dot: Op<"dot_general">;
  base: Value;
}

/**
 * The adds of `g` whose one operand is a product the call computes (m, n >= MIN_ROWS) and used by nothing else:
 * each becomes one call that adds the product into the other operand in place, where XLA would write the product
 * and then read it back with the addend to write the sum (a LoRA delta onto its base projection, the gradient
 * contributions of several projections to their shared input). Returns the plan by add, and the dots it absorbs.
 */
export function planGemmAdds(g: Graph): { adds: Map<AnyOp, GemmAdd>; absorbed: Set<AnyOp> } {
  const uses = new Map<Value, number>();
  const count = (v: Value) => uses.set(v, (uses.get(v) ?? 0) + 1);
  for (const op of g.ops) op.inputs.forEach(count);
  g.outputs.forEach(count);
  const producer = new Map<Value, AnyOp>();
  for (const op of g.ops) for (const v of op.outputs) producer.set(v, op);
  const adds = new Map<AnyOp, GemmAdd>();
  const absorbed = new Set<AnyOp>();
  // An IR add's operands and result share one type, so the product's shape is the sum's.
  const fusible = (v: Value): Op<"dot_general"> | undefined => {
    const d = producer.get(v);
    if (d?.name !== "dot_general" || absorbed.has(d) || uses.get(v) !== 1) return undefined;
    const dot = d as Op<"dot_general">;
    // Both free extents at least MIN_ROWS: the OpenBLAS form (the few-rows kernel has no addend).
    const { m, n } = extents(dot);
    return cpuGemmApplies(dot) && m >= MIN_ROWS && n >= MIN_ROWS ? dot : undefined;
  };
  for (const op of g.ops) {
    if (op.name !== "add" || op.outputs[0]!.type.dtype !== "f32") continue;
    const [x, y] = op.inputs as [Value, Value];
    // The later-defined operand is absorbed: the other, its addend, is then certainly computed before the call.
    for (const [d, base] of [
      [y, x],
      [x, y],
    ] as const) {
      const dot = fusible(d);
      if (dot) {
        adds.set(op, { dot, base });
        absorbed.add(dot);
        break;
      }
    }
  }
  return { adds, absorbed };
}

const prod = (shape: Shape, dims: readonly number[]) => dims.reduce((n, d) => n * shape[d]!, 1);
const isIdentity = (perm: readonly number[]) => perm.every((p, i) => p === i);

/**
 * One operand as a rank-4 [stack, batch, rows, cols] row-major value for the call, with its s32 index into the
 * stack: its batch dims, then its free and contracted dims in the order that needs no transpose when there is one
 * (`transposed` says which came first). An operand that is one item of a scan's stacked input and needs no
 * transpose is passed as the whole stack and the loop counter, so XLA does not copy the item out.
 */
function asRank4(
  e: FuncEmitter,
  v: Value,
  batch: readonly number[],
  contract: readonly number[],
  contractFirst: boolean,
): { ref: string; index: string; transposed: boolean; type: TensorType } {
  const shape = v.type.shape;
  const free = range(0, shape.length).filter((d) => !batch.includes(d) && !contract.includes(d));
  const freeFirst = [...batch, ...free, ...contract];
  const contractLead = [...batch, ...contract, ...free];
  // The layout the operand already has if either is; else one that keeps its minor dim minor (a copy of whole
  // rows, cheaper than a full transpose); else the natural one (A: free then contract; B: contract then free).
  const natural = contractFirst ? contractLead : freeFirst;
  const other = contractFirst ? freeFirst : contractLead;
  const keepsMinor = (p: readonly number[]) => p[p.length - 1] === shape.length - 1;
  const useOther = isIdentity(other) || (!isIdentity(natural) && !keepsMinor(natural) && keepsMinor(other));
  const perm = useOther ? other : natural;
  const transposed = useOther;
  const firstIsContract = contractFirst !== transposed;
  const rows = firstIsContract ? prod(shape, contract) : prod(shape, free);
  const cols = firstIsContract ? prod(shape, free) : prod(shape, contract);
  const item = [prod(shape, batch), rows, cols];
  const stacked = isIdentity(perm) ? e.stackItems.get(e.ref(v)) : undefined;
  if (stacked) {
    const type = tensorType("f32", [stacked.stackType.shape[0]!, ...item]);
    const ref = e.op1(`stablehlo.reshape ${stacked.stack} : (${ty(stacked.stackType)}) -> ${ty(type)}`);
    return { ref, index: stacked.index, transposed, type };
  }
  let ref = e.ref(v);
  let from = v.type;
  if (!isIdentity(perm)) {
    from = tensorType(
      from.dtype,
      perm.map((d) => shape[d]!),
    );
    ref = e.op1(`stablehlo.transpose ${ref}, dims = ${dimsText(perm)} : (${ty(v.type)}) -> ${ty(from)}`);
  }
  const type = tensorType("f32", [1, ...item]);
  ref = e.op1(`stablehlo.reshape ${ref} : (${ty(from)}) -> ${ty(type)}`);
  return { ref, index: e.op1("stablehlo.constant dense<0> : tensor<i32>"), transposed, type };
}

const ROW_MAJOR_4 = "dense<[3, 2, 1, 0]> : tensor<4xindex>";
const SCALAR = "dense<> : tensor<0xindex>";
const ROW_MAJOR_3 = "dense<[2, 1, 0]> : tensor<3xindex>";

/**
 * Prints the call for `op` (cpuGemmApplies holds) and returns the result reshaped to the dot's output; with `base`
 * (planGemmAdds), the call's result is base + the product, computed in base's buffer.
 */
export function lowerCpuGemm(e: FuncEmitter, op: Op<"dot_general">, base?: Value): string {
  const [a, b] = op.inputs as [Value, Value];
  const p = op.params;
  // Contracting pairs in A's storage order, so a contiguous contraction in both operands needs no transpose.
  const pairs = p.lhsContract.map((d, i) => [d, p.rhsContract[i]!] as const).sort((x, y) => x[0] - y[0]);
  const A = asRank4(
    e,
    a,
    p.lhsBatch,
    pairs.map(([l]) => l),
    false,
  );
  const B = asRank4(
    e,
    b,
    p.rhsBatch,
    pairs.map(([, r]) => r),
    true,
  );
  const [, batch, r, c] = A.type.shape as [number, number, number, number];
  const m = A.transposed ? c : r;
  const n = B.transposed ? B.type.shape[2]! : B.type.shape[3]!;
  const c3 = tensorType("f32", [batch, m, n]);
  const target = CPU_GEMM_TARGETS[`${A.transposed ? "t" : "n"}${B.transposed ? "t" : "n"}`];
  const i32 = "tensor<i32>";
  const addend = base ? `, ${e.op1(`stablehlo.reshape ${e.ref(base)} : (${ty(base.type)}) -> ${ty(c3)}`)}` : "";
  const addendType = base ? `, ${ty(c3)}` : "";
  const layouts = `operand_layouts = [${ROW_MAJOR_4}, ${ROW_MAJOR_4}, ${SCALAR}, ${SCALAR}${base ? `, ${ROW_MAJOR_3}` : ""}]`;
  // The addend's buffer is the result's (XLA copies it first when the addend lives on): C += A @ B in place.
  const alias = base
    ? ", output_operand_aliases = [#stablehlo.output_operand_alias<output_tuple_indices = [], operand_index = 4, operand_tuple_indices = []>]"
    : "";
  const call = e.op1(
    `stablehlo.custom_call @${target}(${A.ref}, ${B.ref}, ${A.index}, ${B.index}${addend}) {api_version = 4 : i32, backend_config = {}, ${layouts}${alias}, result_layouts = [${ROW_MAJOR_3}]} : (${ty(A.type)}, ${ty(B.type)}, ${i32}, ${i32}${addendType}) -> ${ty(c3)}`,
  );
  return e.op1(`stablehlo.reshape ${call} : (${ty(c3)}) -> ${ty(op.outputs[0]!.type)}`);
}
