// Dead code elimination: drops ops whose results are unused, unused ys, consts and xs of scans, results and operands of conds and checkpoints (recursively).
import { makeOp, type AnyOp, type Graph, type Op, type Value } from "../ir/graph.ts";
import type { Pass } from "./pass.ts";
import { range } from "../ir/types.ts";
import { makeGraph, mapBody, pickNames, sameList } from "./rewrite.ts";

export const dcePass: Pass = {
  name: "dce",
  description:
    "Removes ops whose results are never used; inside scans also unused ys, consts and xs; of conds unused results and operands.",
  run: dce,
};

/** `g` without dead ops (the same object when nothing is dead). Graph outputs are always live. */
export function dce(g: Graph): Graph {
  const live = new Set<Value>(g.outputs);
  const kept: AnyOp[] = [];
  for (let k = g.ops.length - 1; k >= 0; k--) {
    const op = g.ops[k]!;
    if (!op.outputs.some((v) => live.has(v))) continue;
    const pruned =
      op.name === "scan"
        ? pruneScan(op, live)
        : op.name === "cond"
          ? pruneCond(op, live)
          : op.name === "checkpoint"
            ? pruneCheckpoint(op, live)
            : mapBody(op, dce);
    kept.push(pruned);
    pruned.inputs.forEach((v) => {
      live.add(v);
    });
  }
  kept.reverse();
  if (sameList(kept, g.ops)) return g;
  return makeGraph(g.inputs, kept, g.outputs, g.inputNames, g.outputNames);
}

/**
 * Drops the ys nobody reads, then the body's dead ops, then consts and xs the body no longer reads. Carries
 * stay: a carry feeds the next iteration even when its final value is unused.
 */
function pruneScan(op: Op<"scan">, live: ReadonlySet<Value>): AnyOp {
  const { body, numConsts: nc, numCarry: nh } = op.params;
  const ny = body.outputs.length - nh;
  const keepY = range(ny).filter((j) => live.has(op.outputs[nh + j]!));
  const outIdx = [...range(nh), ...keepY.map((j) => nh + j)];
  const trimmed = dce(keepOutputs(body, outIdx));
  const read = readValues([trimmed]);
  const nx = body.inputs.length - nc - nh;
  const keepC = range(nc).filter((k) => read.has(body.inputs[k]!));
  const keepX = range(nx).filter((j) => read.has(body.inputs[nc + nh + j]!));
  const inIdx = [...keepC, ...range(nh).map((i) => nc + i), ...keepX.map((j) => nc + nh + j)];

  if (inIdx.length === body.inputs.length && keepY.length === ny && trimmed === body) return op;
  return makeOp(
    "scan",
    inIdx.map((i) => op.inputs[i]!),
    { ...op.params, body: keepInputs(trimmed, inIdx), numConsts: keepC.length },
    outIdx.map((i) => op.outputs[i]!),
    op.loc,
  );
}

/** A checkpoint without the results nobody reads (saved values autodiff did not use), its dead ops and unread operands. */
function pruneCheckpoint(op: Op<"checkpoint">, live: ReadonlySet<Value>): AnyOp {
  const { body } = op.params;
  const keepOut = range(op.outputs.length).filter((j) => live.has(op.outputs[j]!));
  const trimmed = dce(keepOutputs(body, keepOut));
  const read = readValues([trimmed]);
  const keepIn = range(op.inputs.length).filter((i) => read.has(body.inputs[i]!));
  if (keepIn.length === op.inputs.length && trimmed === body) return op;
  return makeOp(
    "checkpoint",
    keepIn.map((i) => op.inputs[i]!),
    { ...op.params, body: keepInputs(trimmed, keepIn) },
    keepOut.map((j) => op.outputs[j]!),
    op.loc,
  );
}

/**
 * Drops the results nobody reads from every branch, then each branch's dead ops, then operands no branch reads any
 * more. A cond whose results are all dead was dropped by the caller (branches have no effects).
 */
function pruneCond(op: Op<"cond">, live: ReadonlySet<Value>): AnyOp {
  const { branches } = op.params;
  const keepOut = range(op.outputs.length).filter((j) => live.has(op.outputs[j]!));
  const trimmed = branches.map((b) => dce(keepOutputs(b, keepOut)));
  const read = readValues(trimmed);
  const keepIn = range(op.inputs.length - 1).filter((i) => trimmed.some((b) => read.has(b.inputs[i]!)));
  if (keepIn.length === op.inputs.length - 1 && trimmed.every((b, k) => b === branches[k])) return op;
  const newBranches = trimmed.map((b) => keepInputs(b, keepIn));
  return makeOp(
    "cond",
    [op.inputs[0]!, ...keepIn.map((i) => op.inputs[1 + i]!)],
    { branches: Object.freeze(newBranches) },
    keepOut.map((j) => op.outputs[j]!),
    op.loc,
  );
}

/** `g` returning only its outputs at `idx` (the same graph when that is all of them, in order). */
function keepOutputs(g: Graph, idx: readonly number[]): Graph {
  if (idx.length === g.outputs.length && idx.every((i, k) => i === k)) return g;
  return makeGraph(
    g.inputs,
    g.ops,
    idx.map((i) => g.outputs[i]!),
    g.inputNames,
    pickNames(g.outputNames, idx),
  );
}

/** `g` taking only its inputs at `idx` (the others must be unread). */
function keepInputs(g: Graph, idx: readonly number[]): Graph {
  return makeGraph(
    idx.map((i) => g.inputs[i]!),
    g.ops,
    g.outputs,
    pickNames(g.inputNames, idx),
    g.outputNames,
  );
}

/** Every value the graphs read: their outputs and their ops' operands. */
function readValues(graphs: readonly Graph[]): Set<Value> {
  const read = new Set<Value>();
  for (const g of graphs) {
    for (const v of g.outputs) read.add(v);
    for (const o of g.ops) for (const v of o.inputs) read.add(v);
  }
  return read;
}
