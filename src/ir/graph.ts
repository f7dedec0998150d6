// The IR itself: immutable SSA values, ops and graphs, and the builder that type-checks each op as it is added.
import type { OpName, OpParams } from "./ops.ts";
import { inferTypes } from "./infer.ts";
import { OpTypeError, RuleError } from "./errors.ts";
import type { SourceLoc, TensorType } from "./types.ts";

/** An SSA value. Identity is the object itself; printers give it a name from first use. */
export class Value {
  constructor(readonly type: TensorType) {
    Object.freeze(this);
  }
}

export interface Op<N extends OpName = OpName> {
  readonly name: N;
  readonly inputs: readonly Value[];
  readonly params: OpParams[N];
  readonly outputs: readonly Value[];
  readonly loc?: SourceLoc;
}

/** Any op, discriminated on `name` so that `switch (op.name)` narrows `op.params`. */
export type AnyOp = { [N in OpName]: Op<N> }[OpName];

export interface Graph {
  readonly inputs: readonly Value[];
  readonly ops: readonly AnyOp[];
  readonly outputs: readonly Value[];
  /** Optional human names (parameter-tree paths) for inputs and outputs, kept by passes and printed. */
  readonly inputNames?: readonly string[];
  readonly outputNames?: readonly string[];
}

/** Appends type-checked ops; `build` freezes the result into a Graph. */
export class GraphBuilder {
  private readonly inputs: Value[] = [];
  private readonly inputNames: string[] = [];
  private readonly ops: AnyOp[] = [];

  input(type: TensorType, name?: string): Value {
    const v = new Value(type);
    this.inputs.push(v);
    this.inputNames.push(name ?? "");
    return v;
  }

  /** Adds an op, inferring its result types; throws OpTypeError if the operands break the op's rules. */
  add<N extends OpName>(name: N, inputs: readonly Value[], params: OpParams[N], loc?: SourceLoc): Value[] {
    const types = inputs.map((v) => v.type);
    let outTypes: TensorType[];
    try {
      outTypes = inferTypes(name, types, params);
    } catch (e) {
      if (e instanceof RuleError) throw new OpTypeError(name, e.message, types, loc);
      throw e;
    }
    const outputs = outTypes.map((t) => new Value(t));
    this.push(makeOp(name, inputs, params, outputs, loc));
    return outputs;
  }

  /** `add` for ops with exactly one result. */
  add1<N extends OpName>(name: N, inputs: readonly Value[], params: OpParams[N], loc?: SourceLoc): Value {
    const outs = this.add(name, inputs, params, loc);
    if (outs.length !== 1) throw new Error(`internal: ${name} has ${outs.length} results, expected 1`);
    return outs[0]!;
  }

  /** How many ops were added so far; with `opsFrom`, the ops one piece of tracing added (tx.checkpoint). */
  get opCount(): number {
    return this.ops.length;
  }

  opsFrom(start: number): readonly AnyOp[] {
    return this.ops.slice(start);
  }

  /** Appends an op that is already typed (passes copying ops across graphs). */
  push(op: AnyOp): void {
    this.ops.push(op);
  }

  build(outputs: readonly Value[], outputNames?: readonly string[]): Graph {
    const g: Graph = {
      inputs: Object.freeze([...this.inputs]),
      ops: Object.freeze([...this.ops]),
      outputs: Object.freeze([...outputs]),
      ...(this.inputNames.some((n) => n !== "") ? { inputNames: Object.freeze([...this.inputNames]) } : {}),
      ...(outputNames?.some((n) => n !== "") ? { outputNames: Object.freeze([...outputNames]) } : {}),
    };
    return Object.freeze(g);
  }
}

export function makeOp<N extends OpName>(
  name: N,
  inputs: readonly Value[],
  params: OpParams[N],
  outputs: readonly Value[],
  loc?: SourceLoc,
): AnyOp {
  const op: Op<N> = {
    name,
    inputs: Object.freeze([...inputs]),
    params,
    outputs: Object.freeze([...outputs]),
    ...(loc ? { loc } : {}),
  };
  return Object.freeze(op) as unknown as AnyOp;
}

/** A graph with the same ops but other inputs/outputs metadata; ops are shared, never copied. */
export function withOps(g: Graph, ops: readonly AnyOp[], outputs: readonly Value[] = g.outputs): Graph {
  return Object.freeze({ ...g, ops: Object.freeze([...ops]), outputs: Object.freeze([...outputs]) });
}

/** How many times each value is used as an operand or graph output (nested graphs are separate scopes). */
export function useCounts(g: Graph): Map<Value, number> {
  const counts = new Map<Value, number>();
  const use = (v: Value) => counts.set(v, (counts.get(v) ?? 0) + 1);
  for (const op of g.ops) op.inputs.forEach(use);
  g.outputs.forEach(use);
  return counts;
}

/** Nested graphs of an op (a scan's body, a cond's branches...), in param-key order, for passes that recurse. */
export function subgraphs(op: AnyOp): Graph[] {
  switch (op.name) {
    case "scan":
      return [op.params.body];
    case "cond":
      return [...op.params.branches];
    case "while":
      return [op.params.body, op.params.cond];
    case "custom_vjp":
      return [op.params.body, op.params.bwd, op.params.fwd];
    case "checkpoint":
      return [op.params.body];
    default:
      return [];
  }
}

/**
 * The op with each nested graph replaced by `f(graph)` (the same object when `f` changes none). Passes that only
 * clean bodies (simplify, cse, fold) use it; those that change an op's interface (dce, autodiff) have own rules.
 */
export function mapSubgraphs(op: AnyOp, f: (g: Graph) => Graph): AnyOp {
  switch (op.name) {
    case "scan": {
      const body = f(op.params.body);
      return body === op.params.body ? op : makeOp("scan", op.inputs, { ...op.params, body }, op.outputs, op.loc);
    }
    case "cond": {
      const branches = op.params.branches.map(f);
      if (branches.every((b, i) => b === op.params.branches[i])) return op;
      return makeOp("cond", op.inputs, { branches: Object.freeze(branches) }, op.outputs, op.loc);
    }
    case "while": {
      const cond = f(op.params.cond);
      const body = f(op.params.body);
      if (cond === op.params.cond && body === op.params.body) return op;
      return makeOp("while", op.inputs, { ...op.params, cond, body }, op.outputs, op.loc);
    }
    case "custom_vjp": {
      const { body, fwd, bwd } = op.params;
      const next = { ...op.params, body: f(body), fwd: f(fwd), bwd: f(bwd) };
      if (next.body === body && next.fwd === fwd && next.bwd === bwd) return op;
      return makeOp("custom_vjp", op.inputs, next, op.outputs, op.loc);
    }
    case "checkpoint": {
      const body = f(op.params.body);
      return body === op.params.body ? op : makeOp("checkpoint", op.inputs, { ...op.params, body }, op.outputs, op.loc);
    }
    default:
      return op;
  }
}
