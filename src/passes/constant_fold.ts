// Constant folding: evaluates small ops whose operands are all constants with the reference interpreter.
import { makeOp, type AnyOp, type Graph, type Op, type Value } from "../ir/graph.ts";
import { interpret } from "../ir/interpret.ts";
import type { OpName } from "../ir/ops.ts";
import { numel } from "../ir/types.ts";
import type { Pass } from "./pass.ts";
import { makeGraph, mapBody, sameList } from "./rewrite.ts";

/** Results larger than this stay ops: a literal of a million elements would bloat the IR and the emitted module. */
export const MAX_FOLDED_ELEMENTS = 1024;

export const constantFoldPass: Pass = {
  name: "constant-fold",
  description: `Replaces ops whose operands are all constants by their value (results up to ${MAX_FOLDED_ELEMENTS} elements).`,
  run: constantFold,
};

/** Sources stay as they are (iota is already compact), scans are loops, barriers must not disappear. */
const NEVER_FOLDED = new Set<OpName>([
  "constant",
  "iota",
  "scan",
  "optimization_barrier",
  // Loops and branches stay control flow (a while may not end); custom_vjp keeps its bwd for a later autodiff.
  "cond",
  "while",
  "custom_vjp",
]);

/** Ops that only move elements: a splat operand gives a splat result of any size, folded without evaluation. */
const MOVES_ONLY = new Set<OpName>(["broadcast_in_dim", "reshape", "transpose", "slice"]);

/**
 * Each folded op becomes a `constant` defining the same result value, so users need no rewriting. The
 * interpreter computes in float64 and rounds to the result dtype, so folded values are exactly what the op
 * gives at run time (bf16 results are bf16-rounded). The now-unused operand constants are left to DCE.
 */
export function constantFold(g: Graph): Graph {
  const constants = new Map<Value, Op<"constant">>();
  const ops = g.ops.map((original) => {
    const op = mapBody(original, constantFold);
    const folded = op.name === "constant" ? op : fold(op, constants);
    if (folded) constants.set(folded.outputs[0]!, folded);
    return folded ?? op;
  });
  if (sameList(ops, g.ops)) return g;
  return makeGraph(g.inputs, ops, g.outputs, g.inputNames, g.outputNames);
}

function fold(op: AnyOp, constants: ReadonlyMap<Value, Op<"constant">>): Op<"constant"> | undefined {
  if (NEVER_FOLDED.has(op.name) || op.outputs.length !== 1) return undefined;
  const operands = op.inputs.map((v) => constants.get(v));
  if (!operands.every((c) => c !== undefined)) return undefined;
  const out = op.outputs[0]!;
  const first = operands[0];
  if (MOVES_ONLY.has(op.name) && first && first.params.value.length === 1)
    return constantOp(out, first.params.value, op);
  if (numel(out.type.shape) > MAX_FOLDED_ELEMENTS) return undefined;
  const defs = [...new Set(operands)];
  const [result] = interpret(makeGraph([], [...defs, op], [out]), []);
  return constantOp(out, splatIfUniform(Array.from(result!.data)), op);
}

function constantOp(out: Value, value: readonly number[], replaced: AnyOp): Op<"constant"> {
  const { dtype, shape } = out.type;
  return makeOp("constant", [], { dtype, shape, value }, [out], replaced.loc) as Op<"constant">;
}

/** One value when all are the same (Object.is: NaN equals NaN, -0 differs from 0), as a splat constant. */
function splatIfUniform(values: number[]): number[] {
  return values.length > 1 && values.every((x) => Object.is(x, values[0])) ? [values[0]!] : values;
}
