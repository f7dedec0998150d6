// IR text parser: reads print.ts's text form back into a Graph, re-inferring every type through GraphBuilder.
import { TesseraError } from "../errors.ts";
import { GraphBuilder, type Graph, type Value } from "./graph.ts";
import { OpTypeError } from "./errors.ts";
import { isOpName, type OpName } from "./ops.ts";
import { checkParams, paramKinds } from "./param_schema.ts";
import { formatType, isDType, sameType, tensorType, type SourceLoc, type TensorType } from "./types.ts";

/** A syntax or type error in IR text, naming the line. */
export class ParseError extends TesseraError {
  constructor(
    readonly line: number,
    readonly detail: string,
  ) {
    super(`line ${line}: ${detail}`, { code: "ERR_PARSE" });
    this.name = "ParseError";
  }
}

type TokKind = "val" | "ident" | "num" | "str" | "punct" | "eof";
interface Tok {
  readonly kind: TokKind;
  readonly text: string;
  readonly line: number;
  /** Numeric value for "num" and "val" tokens, decoded string for "str". */
  readonly num?: number;
  readonly str?: string;
}

// Sticky patterns, matched at the cursor without copying the rest of the text.
const VAL = /%(\d+)/y;
const NEG_SPECIAL = /-(inf|nan)\b/y;
const NUMBER = /-?(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?/y;
const IDENT = /[A-Za-z_][A-Za-z0-9_]*/y;
const STRING = /"(?:[^"\\\n]|\\.)*"/y;

function matchAt(re: RegExp, text: string, i: number): RegExpExecArray | null {
  re.lastIndex = i;
  return re.exec(text);
}

function tokenize(text: string): Tok[] {
  const toks: Tok[] = [];
  let line = 1;
  let i = 0;
  while (i < text.length) {
    const c = text[i]!;
    if (c === "\n") {
      line++;
      i++;
      continue;
    }
    if (c === " " || c === "\t" || c === "\r") {
      i++;
      continue;
    }
    if (c === "%") {
      const m = matchAt(VAL, text, i);
      if (!m) throw new ParseError(line, `expected a value name like %3 after '%'`);
      toks.push({ kind: "val", text: m[0], line, num: Number(m[1]) });
      i += m[0].length;
      continue;
    }
    if (c === "-" && text[i + 1] === ">") {
      toks.push({ kind: "punct", text: "->", line });
      i += 2;
      continue;
    }
    const special = c === "-" ? matchAt(NEG_SPECIAL, text, i) : null;
    if (special) {
      toks.push({ kind: "num", text: special[0], line, num: special[1] === "inf" ? -Infinity : NaN });
      i += special[0].length;
      continue;
    }
    const num = matchAt(NUMBER, text, i);
    if (num) {
      toks.push({ kind: "num", text: num[0], line, num: Number(num[0]) });
      i += num[0].length;
      continue;
    }
    const ident = matchAt(IDENT, text, i);
    if (ident) {
      toks.push({ kind: "ident", text: ident[0], line });
      i += ident[0].length;
      continue;
    }
    if (c === '"') {
      const m = matchAt(STRING, text, i);
      if (!m) throw new ParseError(line, `unterminated string`);
      let s: string;
      try {
        s = JSON.parse(m[0]) as string;
      } catch {
        throw new ParseError(line, `bad string literal ${m[0]}`);
      }
      toks.push({ kind: "str", text: m[0], line, str: s });
      i += m[0].length;
      continue;
    }
    if ("(){}[],:=@".includes(c)) {
      toks.push({ kind: "punct", text: c, line });
      i++;
      continue;
    }
    throw new ParseError(line, `unexpected character '${c}'`);
  }
  toks.push({ kind: "eof", text: "end of input", line });
  return toks;
}

type PValue = number | boolean | string | PValue[];

/** One graph's names: its own definitions, and the enclosing scopes (visible only to say "not closed"). */
interface Scope {
  readonly values: Map<string, Value>;
  readonly outer: Scope | undefined;
}

class Parser {
  private pos = 0;
  /** Every name defined anywhere so far: printed names are unique across nested graphs. */
  private readonly defined = new Set<string>();

  constructor(private readonly toks: Tok[]) {}

  private peek(ahead = 0): Tok {
    return this.toks[Math.min(this.pos + ahead, this.toks.length - 1)]!;
  }

  private next(): Tok {
    const t = this.peek();
    if (t.kind !== "eof") this.pos++;
    return t;
  }

  private fail(msg: string, tok: Tok = this.peek()): never {
    throw new ParseError(tok.line, msg);
  }

  private isPunct(p: string, ahead = 0): boolean {
    const t = this.peek(ahead);
    return t.kind === "punct" && t.text === p;
  }

  private expectPunct(p: string, what = `'${p}'`): Tok {
    const t = this.peek();
    if (t.kind !== "punct" || t.text !== p) this.fail(`expected ${what}, found '${t.text}'`);
    return this.next();
  }

  private expectIdent(what: string, word?: string): Tok {
    const t = this.peek();
    if (t.kind !== "ident" || (word !== undefined && t.text !== word)) this.fail(`expected ${what}, found '${t.text}'`);
    return this.next();
  }

  private expectInt(what: string): number {
    const t = this.peek();
    if (t.kind !== "num" || !Number.isInteger(t.num)) this.fail(`expected ${what} (an integer), found '${t.text}'`);
    this.next();
    return t.num!;
  }

  private commaList<T>(close: string, item: () => T): T[] {
    const items: T[] = [];
    if (this.isPunct(close)) return items;
    items.push(item());
    while (this.isPunct(",")) {
      this.next();
      items.push(item());
    }
    return items;
  }

  parseType(): TensorType {
    const t = this.expectIdent("a type like f32[2,3]");
    if (!isDType(t.text)) this.fail(`unknown dtype '${t.text}'`, t);
    this.expectPunct("[", `'[' after dtype ${t.text}`);
    const shape = this.commaList("]", () => {
      const d = this.expectInt("a dimension size");
      if (d < 0) this.fail(`negative dimension ${d}`);
      return d;
    });
    this.expectPunct("]");
    return tensorType(t.text, shape);
  }

  private optString(): string | undefined {
    if (this.peek().kind !== "str") return undefined;
    return this.next().str!;
  }

  private define(scope: Scope, tok: Tok, v: Value): void {
    if (this.defined.has(tok.text)) this.fail(`value ${tok.text} is defined twice`, tok);
    this.defined.add(tok.text);
    scope.values.set(tok.text, v);
  }

  private use(scope: Scope): Value {
    const t = this.peek();
    if (t.kind !== "val") this.fail(`expected a value like %3, found '${t.text}'`);
    this.next();
    const v = scope.values.get(t.text);
    if (v) return v;
    for (let s = scope.outer; s; s = s.outer) {
      if (s.values.has(t.text))
        this.fail(`${t.text} is defined outside this nested graph; nested graphs are closed`, t);
    }
    this.fail(`value ${t.text} is used before it is defined`, t);
  }

  /** `(inputs) -> (result types) { stmts return vals }`, the part shared by `func` and graph params. */
  parseGraphRest(outer: Scope | undefined): Graph {
    const scope: Scope = { values: new Map(), outer };
    const b = new GraphBuilder();
    this.expectPunct("(", "'(' opening the inputs");
    this.commaList(")", () => {
      const nameTok = this.peek();
      if (nameTok.kind !== "val") this.fail(`expected an input like %0: f32[2], found '${nameTok.text}'`);
      this.next();
      this.expectPunct(":", `':' after ${nameTok.text}`);
      const type = this.parseType();
      this.define(scope, nameTok, b.input(type, this.optString()));
    });
    this.expectPunct(")");
    this.expectPunct("->", "'->' before the result types");
    this.expectPunct("(", "'(' opening the result types");
    const results = this.commaList(")", () => {
      const line = this.peek().line;
      return { type: this.parseType(), name: this.optString(), line };
    });
    this.expectPunct(")");
    this.expectPunct("{", "'{' opening the graph body");
    while (!(this.peek().kind === "ident" && this.peek().text === "return")) {
      if (this.peek().kind === "eof" || this.isPunct("}")) this.fail(`expected 'return' before the end of the graph`);
      this.parseStmt(b, scope);
    }
    const retTok = this.next();
    const outs = this.isPunct("}") ? [] : this.commaList("}", () => this.use(scope));
    this.expectPunct("}", "'}' closing the graph");
    if (outs.length !== results.length)
      this.fail(`return gives ${outs.length} values, the signature declares ${results.length}`, retTok);
    outs.forEach((v, i) => {
      if (!sameType(v.type, results[i]!.type)) {
        this.fail(`result ${i} is declared ${formatType(results[i]!.type)} but returns ${formatType(v.type)}`, retTok);
      }
    });
    const names = results.map((r) => r.name ?? "");
    return b.build(outs, names);
  }

  private parseStmt(b: GraphBuilder, scope: Scope): void {
    const first = this.peek();
    const line = first.line;
    const defs: { tok: Tok; type: TensorType }[] = [];
    if (first.kind === "val") {
      for (;;) {
        const tok = this.next();
        if (tok.kind !== "val") this.fail(`expected a result like %3, found '${tok.text}'`, tok);
        this.expectPunct(":", `':' after ${tok.text}`);
        defs.push({ tok, type: this.parseType() });
        if (!this.isPunct(",")) break;
        this.next();
      }
      this.expectPunct("=", "'=' after the results");
    }
    const nameTok = this.expectIdent("an op name");
    if (!isOpName(nameTok.text)) this.fail(`unknown op '${nameTok.text}'`, nameTok);
    const name: OpName = nameTok.text;
    // Operands sit on the op's line: a following statement's results must not read as operands of an op without any.
    const inputs =
      this.peek().kind === "val" && this.peek().line === nameTok.line ? this.commaList("", () => this.use(scope)) : [];
    const params: Record<string, unknown> = {};
    if (this.isPunct("{")) {
      this.next();
      this.commaList("}", () => {
        const key = this.expectIdent("a param name").text;
        this.expectPunct("=", `'=' after ${key}`);
        if (key in params) this.fail(`param '${key}' is given twice`);
        params[key] = this.parseParamValue();
      });
      this.expectPunct("}", "'}' closing the params");
    }
    let loc: SourceLoc | undefined;
    if (this.peek().kind === "ident" && this.peek().text === "loc") loc = this.parseLoc();
    const kinds = paramKinds(name);
    for (;;) {
      const t = this.peek();
      const kind = t.kind === "ident" ? kinds[t.text] : undefined;
      if (kind !== "graph" && kind !== "graphs") break;
      const key = this.next().text;
      if (kind === "graphs") {
        // One graph per occurrence of the key, in order (cond's branches).
        const list = (params[key] as Graph[] | undefined) ?? [];
        list.push(this.parseGraphRest(scope));
        params[key] = list;
        continue;
      }
      if (key in params) this.fail(`param '${key}' is given twice`);
      params[key] = this.parseGraphRest(scope);
    }
    const problems = checkParams(name, params);
    if (problems.length) throw new ParseError(line, `${name}: ${problems.join("; ")}`);

    let outs: Value[];
    try {
      outs = b.add(name, inputs, params as never, loc);
    } catch (e) {
      if (e instanceof OpTypeError) throw new ParseError(line, e.message);
      throw e;
    }
    if (outs.length !== defs.length)
      throw new ParseError(line, `${name} has ${outs.length} results, the text names ${defs.length}`);
    outs.forEach((v, i) => {
      const d = defs[i]!;
      if (!sameType(v.type, d.type)) {
        throw new ParseError(
          line,
          `${name} result ${d.tok.text} is written ${formatType(d.type)} but inferred ${formatType(v.type)}`,
        );
      }
      this.define(scope, d.tok, v);
    });
  }

  private parseParamValue(): PValue {
    const t = this.next();
    if (t.kind === "num") return t.num!;
    if (t.kind === "str") return t.str!;
    if (t.kind === "ident") {
      if (t.text === "inf") return Infinity;
      if (t.text === "nan") return NaN;
      if (t.text === "true") return true;
      if (t.text === "false") return false;
      return t.text;
    }
    if (t.kind === "punct" && t.text === "[") {
      const items = this.commaList("]", () => this.parseParamValue());
      this.expectPunct("]", "']' closing the array");
      return items;
    }
    this.fail(`expected a param value, found '${t.text}'`, t);
  }

  private parseLoc(): SourceLoc {
    this.next();
    this.expectPunct("(", "'(' after loc");
    const first = this.peek();
    if (first.kind !== "str") this.fail(`expected a quoted file name in loc(...), found '${first.text}'`);
    this.next();
    // A scoped location: the scope path, then the place in parentheses, or nothing more (no place was captured).
    const after = this.peek();
    if (after.kind === "punct" && after.text === ")") {
      this.next();
      return { file: "", line: 0, col: 0, scope: first.str! };
    }
    if (after.kind === "punct" && after.text === "(") {
      this.next();
      const place = this.parseFileLineCol();
      this.expectPunct(")", "')' closing the scoped place");
      this.expectPunct(")", "')' closing loc(...)");
      return { ...place, scope: first.str! };
    }
    this.expectPunct(":", "':' after the file name");
    const line = this.expectInt("a line number");
    this.expectPunct(":", "':' after the line number");
    const col = this.expectInt("a column number");
    this.expectPunct(")", "')' closing loc(...)");
    return { file: first.str!, line, col };
  }

  private parseFileLineCol(): SourceLoc {
    const file = this.peek();
    if (file.kind !== "str") this.fail(`expected a quoted file name in loc(...), found '${file.text}'`);
    this.next();
    this.expectPunct(":", "':' after the file name");
    const line = this.expectInt("a line number");
    this.expectPunct(":", "':' after the line number");
    const col = this.expectInt("a column number");
    return { file: file.str!, line, col };
  }

  parseModule(): Graph {
    this.expectIdent("'func'", "func");
    this.expectPunct("@", "'@' before the function name");
    this.expectIdent("a function name");
    const g = this.parseGraphRest(undefined);
    if (this.peek().kind !== "eof") this.fail(`unexpected '${this.peek().text}' after the end of the function`);
    return g;
  }
}

/** Reads IR text (print.ts's grammar) into a Graph; throws ParseError naming the line on any error. */
export function parse(text: string): Graph {
  return new Parser(tokenize(text)).parseModule();
}
