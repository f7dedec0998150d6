// IR text printer: a deterministic, round-tripping text form of a Graph (parse.ts reads it back).
//
// Example:
//
//   func @main(%0: f32[2,3] "x", %1: f32[3], %2: f32[4,3]) -> (f32[2,3] "y", f32[4,3], f32[3]) {
//     %3: f32[2,3] = broadcast_in_dim %1 {dims=[1], shape=[2,3]}
//     %4: f32[2,3] = add %0, %3 loc("model.ts":3:5)
//     %5: f32[3] = constant {dtype=f32, shape=[3], value=[0.1,-0,nan]}
//     %6: f32[3], %7: f32[4,3] = scan %1, %2 {length=4, numCarry=1, numConsts=0, reverse=false} body (%8: f32[3], %9: f32[3]) -> (f32[3], f32[3]) {
//       %10: f32[3] = mul %8, %9
//       return %10, %10
//     }
//     return %4, %7, %5
//   }
//
// Grammar (whitespace is insignificant to the parser, except that an op's operands sit on the op's line; no comments):
//
//   graph    := "func" "@" IDENT sig "{" stmt* "return" vals? "}"
//   sig      := "(" (VAL ":" type STRING?) ,* ")" "->" "(" (type STRING?) ,* ")"
//   stmt     := (VAL ":" type) ,+ "=" OPNAME vals? attrs? loc? gparam*      an op with results
//             | OPNAME vals? attrs? loc? gparam*                          an op without results
//   vals     := VAL ("," VAL)*
//   attrs    := "{" (KEY "=" pval) ,* "}"           non-graph params, sorted by key
//   pval     := NUMBER | "inf" | "-inf" | "nan" | "true" | "false" | IDENT | STRING | "[" pval ,* "]"
//   gparam   := KEY sig "{" stmt* "return" vals? "}" graph-valued params (the scan `body`), sorted by key; a
//                                                    list of graphs (cond's `branches`) repeats its key per graph
//   loc      := "loc" "(" STRING ":" INT ":" INT ")"
//             | "loc" "(" STRING "(" STRING ":" INT ":" INT ")" ")"   in a namedScope: the scope path, then the place
//             | "loc" "(" STRING ")"                                   a scope with no place (location capture off)
//   type     := DTYPE "[" (INT ("," INT)*)? "]"    f32[2,3]; a scalar is f32[]
//   VAL      := "%" INT                             numbered 0, 1, ... in order of first appearance
//   STRING   := a JSON string literal               input/output names, file names
//
// Numbers print as float64 shortest round-trip text (`String(x)`), `-0`, `inf`, `-inf`, `nan`. Arrays print
// without spaces. Values are numbered in one sequence across nested graphs (a body's values continue the count),
// graph inputs first; a value used but never defined (an invalid graph) is numbered where it is first used.
// Nested graphs are indented two spaces per level. Locations print unless `{ locs: false }`.
import type { AnyOp, Graph, Value } from "./graph.ts";
import { paramKinds } from "./param_schema.ts";
import { formatType, type SourceLoc } from "./types.ts";

export interface PrintOptions {
  /** Print `loc(...)` on ops that have one (default true). */
  readonly locs?: boolean;
}

/** Float64 shortest round-trip text, with the spellings the parser reads for the special values. */
export function formatNumber(x: number): string {
  if (Number.isNaN(x)) return "nan";
  if (x === Infinity) return "inf";
  if (x === -Infinity) return "-inf";
  if (Object.is(x, -0)) return "-0";
  return String(x);
}

const IDENT = /^[A-Za-z_][A-Za-z0-9_]*$/;
const RESERVED = new Set(["inf", "nan", "true", "false"]);

function formatParamValue(v: unknown): string {
  if (typeof v === "number") return formatNumber(v);
  if (typeof v === "boolean") return String(v);
  if (typeof v === "string") return IDENT.test(v) && !RESERVED.has(v) ? v : JSON.stringify(v);
  if (Array.isArray(v)) return `[${v.map(formatParamValue).join(",")}]`;
  throw new Error(`print: cannot print param value ${String(v)}`);
}

/** `loc("f.ts":3:5)`; in a named scope MLIR's name form `loc("layer0/attention"("f.ts":3:5))` (no file: `loc("layer0")`). */
export function formatLocText(loc: SourceLoc): string {
  const at = `${JSON.stringify(loc.file)}:${loc.line}:${loc.col}`;
  if (loc.scope === undefined) return `loc(${at})`;
  return loc.file === "" ? `loc(${JSON.stringify(loc.scope)})` : `loc(${JSON.stringify(loc.scope)}(${at}))`;
}

class Printer {
  readonly names = new Map<Value, string>();
  private readonly lines: string[] = [];

  constructor(private readonly opts: Required<PrintOptions>) {}

  name(v: Value): string {
    let n = this.names.get(v);
    if (n === undefined) {
      n = `%${this.names.size}`;
      this.names.set(v, n);
    }
    return n;
  }

  /** `(%0: f32[2] "x", ...) -> (f32[2] "y", ...)`; names the inputs, so call it before printing the ops. */
  signature(g: Graph): string {
    const ins = g.inputs.map((v, i) => `${this.name(v)}: ${formatType(v.type)}${nameSuffix(g.inputNames?.[i])}`);
    const outs = g.outputs.map((v, i) => `${formatType(v.type)}${nameSuffix(g.outputNames?.[i])}`);
    return `(${ins.join(", ")}) -> (${outs.join(", ")})`;
  }

  /** Prints the ops and return of `g` (signature already printed), then the closing brace at `indent`. */
  body(g: Graph, indent: string): void {
    const inner = `${indent}  `;
    for (const op of g.ops) this.op(op, inner);
    const ret = g.outputs.map((v) => this.name(v)).join(", ");
    this.lines.push(`${inner}return${ret ? ` ${ret}` : ""}`);
    this.lines.push(`${indent}}`);
  }

  op(op: AnyOp, indent: string): void {
    // Operands are named before results: an operand that was never defined gets the earlier number.
    const operands = op.inputs.map((v) => this.name(v)).join(", ");
    const results = op.outputs.map((v) => `${this.name(v)}: ${formatType(v.type)}`).join(", ");
    const kinds = paramKinds(op.name);
    const params = op.params as unknown as Record<string, unknown>;
    const keys = Object.keys(params).sort();
    const attrKeys = keys.filter((k) => kinds[k] !== "graph" && kinds[k] !== "graphs");
    // A list of graphs (cond's branches) prints as the same key once per graph, in order.
    const graphKeys = keys.flatMap((k) =>
      kinds[k] === "graph"
        ? [[k, params[k] as Graph] as const]
        : kinds[k] === "graphs"
          ? (params[k] as Graph[]).map((g) => [k, g] as const)
          : [],
    );
    let line = indent + (results ? `${results} = ` : "") + op.name;
    if (operands) line += ` ${operands}`;
    if (attrKeys.length) line += ` {${attrKeys.map((k) => `${k}=${formatParamValue(params[k])}`).join(", ")}}`;
    if (this.opts.locs && op.loc) line += ` ${formatLocText(op.loc)}`;
    if (graphKeys.length === 0) {
      this.lines.push(line);
      return;
    }
    // Each nested graph opens on the line before it: `... body (sig) {`, closing with `}` at this op's indent.
    graphKeys.forEach(([k, sub]) => {
      this.lines.push(`${line} ${k} ${this.signature(sub)} {`);
      this.body(sub, indent);
      line = this.lines.pop()!; // continue a further graph param on the closing-brace line
    });
    this.lines.push(line);
  }

  graph(g: Graph): string {
    this.lines.push(`func @main${this.signature(g)} {`);
    this.body(g, "");
    return `${this.lines.join("\n")}\n`;
  }
}

function nameSuffix(n: string | undefined): string {
  return n ? ` ${JSON.stringify(n)}` : "";
}

/** The text form of `g` (see the grammar at the top of this file). */
export function print(g: Graph, opts: PrintOptions = {}): string {
  return new Printer({ locs: opts.locs ?? true }).graph(g);
}

/** The `%N` name `print` gives each value of `g` and of its nested graphs, for messages that match a dump. */
export function nameValues(g: Graph): Map<Value, string> {
  const p = new Printer({ locs: false });
  p.graph(g);
  return p.names;
}
