// IR verifier: checks SSA order, single definition, closed nested graphs, params and re-inferred types of a Graph.
import { EXIT, TesseraError } from "../errors.ts";
import { subgraphs, type AnyOp, type Graph, type Value } from "./graph.ts";
import { inferTypes } from "./infer.ts";
import { isOpName } from "./ops.ts";
import { checkParams } from "./param_schema.ts";
import { nameValues } from "./print.ts";
import { formatType, sameType, type TensorType } from "./types.ts";

/** Every problem found in a graph; value names (%N) are those `print` gives, so they match an IR dump. */
export class VerifyError extends TesseraError {
  constructor(
    readonly problems: readonly string[],
    readonly passName?: string,
  ) {
    const prefix = passName ? `after pass '${passName}': ` : "";
    // Graphs are built type-checked, so an invalid one is a bug in a pass or a builder, not in the user's model.
    super(
      problems.length === 1
        ? prefix + problems[0]
        : `${prefix}${problems.length} problems:\n  ${problems.join("\n  ")}`,
      { code: "ERR_VERIFY", exitCode: EXIT.internal },
    );
    this.name = "VerifyError";
  }
}

class Checker {
  readonly problems: string[] = [];
  /** Every value defined anywhere in the graph tree, to catch a value defined twice across nesting levels. */
  private readonly definedAnywhere = new Set<Value>();
  // Numbering every value costs as much as printing the graph, so it is done only once a problem is found.
  private names: Map<Value, string> | undefined;

  constructor(private readonly root: Graph) {}

  private name(v: Value): string {
    this.names ??= nameValues(this.root);
    return this.names.get(v) ?? "%?";
  }

  private define(v: Value, where: string): void {
    if (this.definedAnywhere.has(v)) this.problems.push(`${where}: ${this.name(v)} is defined twice`);
    this.definedAnywhere.add(v);
  }

  /**
   * Checks `g` with `outer` holding the scopes of enclosing graphs (visible to no one: nested graphs are closed).
   * `at` prefixes messages for nested graphs, e.g. "op #3 'scan' body: ".
   */
  graph(g: Graph, outer: readonly ReadonlySet<Value>[], at: string): void {
    const scope = new Set<Value>();
    // Where each value is defined in this graph, to tell "used before defined" from "never defined" (built on
    // the first bad use only).
    let defIndex: Map<Value, number> | undefined;

    // Only called for a value not in scope, so message strings are built only when there is a problem.
    const misuse = (v: Value, where: string, what: string) => {
      if (!defIndex) {
        defIndex = new Map<Value, number>();
        g.ops.forEach((op, k) => {
          op.outputs.forEach((o) => {
            defIndex!.has(o) || defIndex!.set(o, k);
          });
        });
      }
      const n = this.name(v);
      if (outer.some((s) => s.has(v)))
        this.problems.push(
          `${where}: ${what} ${n} is defined outside this nested graph (nested graphs must be closed)`,
        );
      else if (defIndex.has(v))
        this.problems.push(`${where}: ${what} ${n} is used before it is defined (by op #${defIndex.get(v)})`);
      else this.problems.push(`${where}: ${what} ${n} is never defined`);
    };

    g.inputs.forEach((v, i) => {
      this.define(v, `${at}input ${i}`);
      scope.add(v);
    });
    if (g.inputNames && g.inputNames.length !== g.inputs.length) {
      this.problems.push(`${at}graph has ${g.inputs.length} inputs but ${g.inputNames.length} input names`);
    }
    if (g.outputNames && g.outputNames.length !== g.outputs.length) {
      this.problems.push(`${at}graph has ${g.outputs.length} outputs but ${g.outputNames.length} output names`);
    }

    // Plain loops: this runs after every pass over every op, mostly as cold code.
    const ops = g.ops;
    for (let k = 0; k < ops.length; k++) {
      const op = ops[k]!;
      const inputs = op.inputs;
      for (let j = 0; j < inputs.length; j++)
        if (!scope.has(inputs[j]!)) misuse(inputs[j]!, opWhere(at, k, op), `operand ${j}`);
      this.op(op, at, k, outer, scope);
      const outputs = op.outputs;
      for (let j = 0; j < outputs.length; j++) {
        const v = outputs[j]!;
        if (this.definedAnywhere.has(v)) this.define(v, opWhere(at, k, op));
        else this.definedAnywhere.add(v);
        scope.add(v);
      }
    }
    g.outputs.forEach((v, i) => {
      scope.has(v) || misuse(v, `${at}return`, `output ${i}`);
    });
  }

  private op(op: AnyOp, at: string, k: number, outer: readonly ReadonlySet<Value>[], scope: ReadonlySet<Value>): void {
    if (!isOpName(op.name)) {
      this.problems.push(`${opWhere(at, k, op)}: unknown op`);
      return;
    }
    const paramProblems = checkParams(op.name, op.params);
    for (const p of paramProblems) this.problems.push(`${opWhere(at, k, op)}: ${p}`);
    if (paramProblems.length) return; // type rules assume well-formed params
    const names = subgraphNames(op);
    subgraphs(op).forEach((g, i) => {
      this.graph(g, [...outer, scope], `${opWhere(at, k, op)} ${names[i]}: `);
    });
    let inferred: TensorType[];
    try {
      inferred = inferTypes(
        op.name,
        op.inputs.map((v) => v.type),
        op.params as never,
      );
    } catch (e) {
      this.problems.push(`${opWhere(at, k, op)}: ${e instanceof Error ? e.message : String(e)}`);
      return;
    }
    if (inferred.length !== op.outputs.length) {
      this.problems.push(
        `${opWhere(at, k, op)}: has ${op.outputs.length} results, its type rule gives ${inferred.length}`,
      );
      return;
    }
    for (let i = 0; i < inferred.length; i++) {
      const v = op.outputs[i]!,
        t = inferred[i]!;
      if (!sameType(v.type, t)) {
        const which = op.outputs.length === 1 ? "result" : `result ${i}`;
        this.problems.push(
          `${opWhere(at, k, op)}: ${which} type ${formatType(v.type)} differs from inferred ${formatType(t)}`,
        );
      }
    }
  }
}

/** What each of `subgraphs(op)` is called in messages (`body`, `branch 1`), in the same order. */
function subgraphNames(op: AnyOp): string[] {
  switch (op.name) {
    case "cond":
      return op.params.branches.map((_, i) => `branch ${i}`);
    case "while":
      return ["body", "cond"];
    case "custom_vjp":
      return ["body", "bwd", "fwd"];
    default:
      return ["body"];
  }
}

/** The prefix of a problem with op #k of a graph (`at` names the enclosing op for a nested graph). */
function opWhere(at: string, k: number, op: AnyOp): string {
  return `${at}op #${k} '${op.name}'`;
}

/** Throws a VerifyError listing every problem in `g` (and its nested graphs); returns quietly if there are none. */
export function verify(g: Graph): void {
  const c = new Checker(g);
  c.graph(g, [], "");
  if (c.problems.length) throw new VerifyError(c.problems);
}

/** `verify`, with the pass that produced `g` named in the error: for the pass manager. */
export function verifyAfter(passName: string, g: Graph): void {
  try {
    verify(g);
  } catch (e) {
    if (e instanceof VerifyError) throw new VerifyError(e.problems, passName);
    throw e;
  }
}
