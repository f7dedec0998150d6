// IR verifier: checks SSA order, single definition, closed nested graphs, params and re-inferred types of a Graph.
import type { AnyOp, Graph, Value } from "./graph.ts";
import { inferTypes } from "./infer.ts";
import { isOpName } from "./ops.ts";
import { checkParams } from "./param_schema.ts";
import { nameValues } from "./print.ts";
import { formatType, sameType, type TensorType } from "./types.ts";

/** Every problem found in a graph; value names (%N) are those `print` gives, so they match an IR dump. */
export class VerifyError extends Error {
  constructor(
    readonly problems: readonly string[],
    readonly passName?: string,
  ) {
    const prefix = passName ? `after pass '${passName}': ` : "";
    super(problems.length === 1 ? prefix + problems[0] : `${prefix}${problems.length} problems:\n  ${problems.join("\n  ")}`);
    this.name = "VerifyError";
  }
}

class Checker {
  readonly problems: string[] = [];
  /** Every value defined anywhere in the graph tree, to catch a value defined twice across nesting levels. */
  private readonly definedAnywhere = new Set<Value>();

  constructor(private readonly names: Map<Value, string>) {}

  private name(v: Value): string {
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
    // Where each value is defined in this graph, to tell "used before defined" from "never defined".
    const defIndex = new Map<Value, number>();
    g.ops.forEach((op, k) => op.outputs.forEach((v) => defIndex.has(v) || defIndex.set(v, k)));

    const use = (v: Value, where: string, what: string) => {
      if (scope.has(v)) return;
      const n = this.name(v);
      if (outer.some((s) => s.has(v))) this.problems.push(`${where}: ${what} ${n} is defined outside this nested graph (nested graphs must be closed)`);
      else if (defIndex.has(v)) this.problems.push(`${where}: ${what} ${n} is used before it is defined (by op #${defIndex.get(v)})`);
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

    g.ops.forEach((op, k) => {
      const where = `${at}op #${k} '${op.name}'`;
      op.inputs.forEach((v, j) => use(v, where, `operand ${j}`));
      this.op(op, where, outer, scope);
      op.outputs.forEach((v) => {
        this.define(v, where);
        scope.add(v);
      });
    });
    g.outputs.forEach((v, i) => use(v, `${at}return`, `output ${i}`));
  }

  private op(op: AnyOp, where: string, outer: readonly ReadonlySet<Value>[], scope: ReadonlySet<Value>): void {
    if (!isOpName(op.name)) {
      this.problems.push(`${where}: unknown op`);
      return;
    }
    const paramProblems = checkParams(op.name, op.params);
    for (const p of paramProblems) this.problems.push(`${where}: ${p}`);
    if (paramProblems.length) return; // type rules assume well-formed params
    if (op.name === "scan") {
      this.graph(op.params.body, [...outer, scope], `${where} body: `);
    }
    let inferred: TensorType[];
    try {
      inferred = inferTypes(op.name, op.inputs.map((v) => v.type), op.params as never);
    } catch (e) {
      this.problems.push(`${where}: ${e instanceof Error ? e.message : String(e)}`);
      return;
    }
    if (inferred.length !== op.outputs.length) {
      this.problems.push(`${where}: has ${op.outputs.length} results, its type rule gives ${inferred.length}`);
      return;
    }
    op.outputs.forEach((v, i) => {
      const t = inferred[i]!;
      if (!sameType(v.type, t)) {
        const which = op.outputs.length === 1 ? "result" : `result ${i}`;
        this.problems.push(`${where}: ${which} type ${formatType(v.type)} differs from inferred ${formatType(t)}`);
      }
    });
  }
}

/** Throws a VerifyError listing every problem in `g` (and its nested graphs); returns quietly if there are none. */
export function verify(g: Graph): void {
  const c = new Checker(nameValues(g));
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
