// Helpers shared by passes: assembling graphs from op lists, substituting values, recursing into nested graphs.
import { Value, makeOp, mapSubgraphs, type AnyOp, type Graph } from "../ir/graph.ts";

/** A frozen Graph from parts; names are kept only when some are non-empty, as GraphBuilder does. */
export function makeGraph(
  inputs: readonly Value[],
  ops: readonly AnyOp[],
  outputs: readonly Value[],
  inputNames?: readonly string[],
  outputNames?: readonly string[],
): Graph {
  const g: Graph = {
    inputs: Object.freeze([...inputs]),
    ops: Object.freeze([...ops]),
    outputs: Object.freeze([...outputs]),
    ...(inputNames?.some((n) => n !== "") ? { inputNames: Object.freeze([...inputNames]) } : {}),
    ...(outputNames?.some((n) => n !== "") ? { outputNames: Object.freeze([...outputNames]) } : {}),
  };
  return Object.freeze(g);
}

/** `names[i]` for each index, "" where the graph has no names: used when a pass drops or reorders inputs/outputs. */
export function pickNames(names: readonly string[] | undefined, indices: readonly number[]): string[] {
  return indices.map((i) => names?.[i] ?? "");
}

/** The op with its inputs replaced through `subst` (the same object when nothing changes). */
export function substituteInputs(op: AnyOp, subst: ReadonlyMap<Value, Value>): AnyOp {
  if (!op.inputs.some((v) => subst.has(v))) return op;
  return makeOp(
    op.name,
    op.inputs.map((v) => subst.get(v) ?? v),
    op.params,
    op.outputs,
    op.loc,
  );
}

/** The op with its nested graphs transformed by `f` (the same object when `f` returns each unchanged). */
export function mapBody(op: AnyOp, f: (body: Graph) => Graph): AnyOp {
  return mapSubgraphs(op, f);
}

/** True when both lists hold the same objects in the same order (passes use it to return `g` unchanged). */
export function sameList<T>(a: readonly T[], b: readonly T[]): boolean {
  return a.length === b.length && a.every((x, i) => x === b[i]);
}

/**
 * A copy of `g` with fresh values everywhere (nested bodies included). A value is defined once in a whole graph
 * tree, so a pass that needs a second copy of a scan body (autodiff's backward scan) must clone it.
 */
export function cloneGraph(g: Graph): Graph {
  const fresh = new Map<Value, Value>();
  const copy = (v: Value): Value => {
    const c = new Value(v.type);
    fresh.set(v, c);
    return c;
  };
  const inputs = g.inputs.map(copy);
  const ops = g.ops.map((op) => {
    const inputs = op.inputs.map((v) => fresh.get(v) ?? v);
    const params = mapSubgraphs(op, cloneGraph).params;
    return makeOp(op.name, inputs, params as never, op.outputs.map(copy), op.loc);
  });
  return makeGraph(
    inputs,
    ops,
    g.outputs.map((v) => fresh.get(v) ?? v),
    g.inputNames,
    g.outputNames,
  );
}
