// The text writer lowering rules print into: SSA naming, indentation, per-op locations, value bindings.
import { EXIT, TesseraError } from "../../errors.ts";
import type { AnyOp, Value } from "../../ir/graph.ts";
import type { OpName } from "../../ir/ops.ts";
import { formatLoc, type SourceLoc, type TensorType } from "../../ir/types.ts";
import { locText } from "./text.ts";

/** A graph that cannot be printed as StableHLO: names the op (if any) and the user's line. */
export class EmitError extends TesseraError {
  constructor(
    readonly op: OpName | undefined,
    readonly detail: string,
    readonly loc?: SourceLoc,
  ) {
    // A verified graph the emitter cannot print means a missing rule or a bad donation map: a bug of ours.
    super(`stablehlo: ${op ? `${op}: ` : ""}${detail}${loc ? ` at ${formatLoc(loc)}` : ""}`, {
      code: "ERR_EMIT",
      exitCode: EXIT.internal,
    });
    this.name = "EmitError";
  }
}

/**
 * Collects the lines of one function body. SSA names come from one counter for the whole function, so values
 * in nested regions (scan bodies) never shadow outer ones.
 */
export class FuncEmitter {
  private readonly out: string[] = [];
  private depth: number;
  private counter = 0;
  private readonly env = new Map<Value, string>();
  /** Location of the IR op being lowered; every line printed for it carries this location. */
  loc: SourceLoc | undefined;
  /** Name of the IR op being lowered, for error messages. */
  opName: OpName | undefined;
  /** Called for each op result once printed: may print more (a sharding constraint) and return the ref to use. */
  constrain: ((v: Value, ref: string) => string) | undefined;
  /** Called before an op is lowered: may print lines (operand resharding) and return what undoes its rebinding. */
  beforeOp: ((op: AnyOp) => (() => void) | undefined) | undefined;
  /** Lower f32 dot_generals to the OpenBLAS custom call and start scan outputs uninitialized (EmitOptions.cpuGemm). */
  cpuGemm = false;
  /**
   * Scan-body refs that are one item of a stacked scan input (`dynamic_slice` at the loop counter, reshaped): the
   * GEMM call reads such an operand inside the stack instead of XLA copying the slice out.
   */
  readonly stackItems = new Map<string, { stack: string; index: string; stackType: TensorType }>();

  constructor(
    private readonly withLocs: boolean,
    baseDepth: number,
  ) {
    this.depth = baseDepth;
  }

  bind(v: Value, ref: string): void {
    this.env.set(v, ref);
  }

  ref(v: Value): string {
    const r = this.env.get(v);
    if (r === undefined) this.fail(`uses a value that no earlier op or input defines`);
    return r;
  }

  fail(detail: string): never {
    throw new EmitError(this.opName, detail, this.loc);
  }

  /** A fresh name for a block argument (`%it3`). */
  blockArg(): string {
    return `%it${this.counter++}`;
  }

  /** ` loc(...)` for the current op, or nothing. */
  locSuffix(): string {
    return this.withLocs && this.loc ? ` ${locText(this.loc, this.opName)}` : "";
  }

  line(text: string): void {
    this.out.push(`${"  ".repeat(this.depth)}${text}`);
  }

  /** Prints the lines `body` emits one level deeper. */
  indented(body: () => void): void {
    this.depth++;
    try {
      body();
    } finally {
      this.depth--;
    }
  }

  /** Reserves result names: `%5` for one result, `%5:3` (refs `%5#0`...) for several. */
  results(n: number): { lhs: string; refs: string[] } {
    const id = `%${this.counter++}`;
    if (n === 1) return { lhs: id, refs: [id] };
    return { lhs: `${id}:${n}`, refs: Array.from({ length: n }, (_, i) => `${id}#${i}`) };
  }

  /** Prints `%r = <text> loc(...)` and returns the result references. */
  op(numResults: number, text: string): string[] {
    const { lhs, refs } = this.results(numResults);
    this.line(`${lhs} = ${text}${this.locSuffix()}`);
    return refs;
  }

  /** `op` for one result. */
  op1(text: string): string {
    return this.op(1, text)[0]!;
  }

  lines(): readonly string[] {
    return this.out;
  }
}
