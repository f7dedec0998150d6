// debug.print (jax.debug.print): printed values leave a compiled program as hidden outputs, printed when it runs.
import type { DType, SourceLoc } from "../ir/types.ts";
import { describe } from "../errors.ts";
import type { DeviceArray } from "./array.ts";
import { concreteTrace, currentTrace, Tensor } from "./core.ts";
import { formatArray } from "./debug_format.ts";
import { TraceError } from "./errors.ts";
import { opLoc } from "./loc.ts";
import { isPlainObject } from "./tree.ts";

/*
 * Design: the values a print shows become extra outputs of the program ("hidden outputs"), and the host formats
 * and writes them once the program has run, in program order. The alternative, an XLA host callback (a custom
 * call into a host function), needs the PJRT FFI extension and the XLA FFI headers, which no pinned wheel ships
 * (shared/notes/pjrt.md), would be CPU-only, and would need its own lowering on every plugin. Outputs need none
 * of that and work alike on every backend, and they are side-effect free as far as the passes can tell, yet
 * nothing can remove them: DCE keeps outputs, CSE merges only equal values, and autodiff gives outputs after the
 * loss no cotangent (a print never changes a gradient, and under grad it shows the primal).
 *
 * Each transform that owns a nested trace routes its body's prints out (Trace.takePrints) and records how:
 * `scan` (and foriLoop with number bounds) stacks them as extra ys, printed once per iteration in iteration
 * order; `cond`/`switch` adds each branch's values as extra results (zeros from the branches not taken) and
 * prints those of the branch its index chose (per example under vmap, where JAX's batched cond runs and prints
 * both branches); `vmap` batches them and prints once per example where the print runs, as JAX does;
 * `valueAndGrad`/`grad` and `checkpoint` pass them out as auxiliary results. A trace whose owner cannot route them
 * refuses to build (whileLoop: no static trip count; customVjp), a TraceError at the print's line. The cost:
 * a print in a scan body keeps every iteration's value until the program ends (length × size).
 */

/** One `{}` field's argument: a traced value (T), or a JS value formatted at trace time. */
export type PrintArg<T> =
  | { readonly kind: "value"; readonly value: T; readonly dtype: DType }
  | { readonly kind: "text"; readonly text: string };

/** A piece of a parsed format string: literal text, or the index of the argument a field shows. */
export type FormatPart = string | number;

/**
 * The prints of one trace, in program order. Under a `loop` (scan, vmap) each value carries one more leading axis
 * per enclosing loop; a `branch` prints the branches[index] nodes, index an s32 or bool scalar (stacked likewise).
 */
export type PrintNode<T> =
  | {
      readonly kind: "print";
      readonly parts: readonly FormatPart[];
      readonly args: readonly PrintArg<T>[];
      readonly loc: SourceLoc | undefined;
    }
  | {
      readonly kind: "loop";
      readonly length: number;
      readonly reverse: boolean;
      /** vmap's loop over examples (not a loop the program runs), so an outer vmap does not reach inside it. */
      readonly batch?: boolean;
      readonly children: readonly PrintNode<T>[];
    }
  | { readonly kind: "branch"; readonly index: T; readonly branches: readonly (readonly PrintNode<T>[])[] };

/** Every traced value the nodes hold, in a fixed order (mapPrints walks the same order). */
export function printLeaves<T>(nodes: readonly PrintNode<T>[]): T[] {
  const out: T[] = [];
  mapPrints(nodes, (t) => {
    out.push(t);
    return t;
  });
  return out;
}

/** The same nodes with each traced value replaced by `f(value, i)`, `i` counting in printLeaves order. */
export function mapPrints<T, U>(nodes: readonly PrintNode<T>[], f: (t: T, i: number) => U): PrintNode<U>[] {
  let i = 0;
  const walk = (ns: readonly PrintNode<T>[]): PrintNode<U>[] =>
    ns.map((n): PrintNode<U> => {
      if (n.kind === "print")
        return {
          ...n,
          args: n.args.map((a): PrintArg<U> => (a.kind === "text" ? a : { ...a, value: f(a.value, i++) })),
        };
      if (n.kind === "loop") return { ...n, children: walk(n.children) };
      const index = f(n.index, i++);
      return { kind: "branch", index, branches: n.branches.map(walk) };
    });
  return walk(nodes);
}

/** A body's prints with their values replaced by the owner op's results `outs[from]`, `outs[from + 1]`, ... */
export function rebind(
  nodes: readonly PrintNode<Tensor>[],
  outs: readonly Tensor[],
  from: number,
): PrintNode<Tensor>[] {
  return mapPrints(nodes, (_, i) => outs[from + i]!);
}

/**
 * vmap's prints: the nodes of the per-example function, printed once per example of `size` where they run, as
 * JAX unrolls a batched print (inside a scan body: every example of an iteration before the next iteration).
 * A print, branch or inner vmap under `depth` scan loops gets its per-example loop there, so `f(i, depth)` must
 * give leaf `i` (printLeaves order) with its batch axis moved to `depth`. Nested vmaps print example-major.
 */
export function perExample<T, U>(
  nodes: readonly PrintNode<T>[],
  size: number,
  f: (i: number, depth: number) => U,
): PrintNode<U>[] {
  let i = 0;
  const walk = (ns: readonly PrintNode<T>[], depth: number): PrintNode<U>[] =>
    ns.map(
      (n): PrintNode<U> =>
        n.kind === "loop" && !n.batch
          ? { ...n, children: walk(n.children, depth + 1) }
          : { kind: "loop", length: size, reverse: false, batch: true, children: mapPrints([n], () => f(i++, depth)) },
    );
  return walk(nodes, 0);
}

/** Parses a Python-style format: `{}` in order, `{0}` by position, `{name}` from a trailing object; `{{`/`}}` escape. */
function parseFormat(fmt: string, positional: number, names: readonly string[]): FormatPart[] {
  const parts: FormatPart[] = [];
  let text = "";
  let auto = 0;
  let mode: "auto" | "manual" | undefined;
  const used = new Set<number>();
  for (let i = 0; i < fmt.length; i++) {
    const c = fmt[i]!;
    if (c === "}") {
      if (fmt[i + 1] !== "}")
        throw new TraceError(
          "debug.print",
          `single '}' at position ${i} of the format; write '}}' for a literal brace`,
        );
      text += "}";
      i++;
      continue;
    }
    if (c !== "{") {
      text += c;
      continue;
    }
    if (fmt[i + 1] === "{") {
      text += "{";
      i++;
      continue;
    }
    const end = fmt.indexOf("}", i);
    if (end < 0) throw new TraceError("debug.print", `unclosed '{' at position ${i} of the format`);
    const field = fmt.slice(i + 1, end);
    i = end;
    if (/[:!]/.test(field))
      throw new TraceError(
        "debug.print",
        `format field {${field}}: conversions and format specs are not supported; use {}, {0} or {name}`,
      );
    let arg: number;
    if (field === "" || /^\d+$/.test(field)) {
      const m = field === "" ? "auto" : "manual";
      if (mode && mode !== m)
        throw new TraceError(
          "debug.print",
          "the format mixes automatic {} and numbered {0} fields; use one kind (as Python's str.format requires)",
        );
      mode = m;
      arg = field === "" ? auto++ : Number(field);
      if (arg >= positional)
        throw new TraceError(
          "debug.print",
          field === ""
            ? `the format has more {} fields than the ${positional} value${positional === 1 ? "" : "s"} given`
            : `the format's field {${field}} has no value: ${positional} positional value${positional === 1 ? " was" : "s were"} given`,
        );
    } else {
      const k = names.indexOf(field);
      if (k < 0)
        throw new TraceError(
          "debug.print",
          `the format's field {${field}} has no value: ${names.length ? `the named values are ${names.join(", ")}` : "pass named values as a last argument { name: value }"}`,
        );
      arg = positional + k;
    }
    used.add(arg);
    if (text) parts.push(text);
    text = "";
    parts.push(arg);
  }
  if (text) parts.push(text);
  for (let a = 0; a < positional; a++)
    if (!used.has(a)) {
      const fields = [...used].filter((u) => u < positional).length;
      throw new TraceError(
        "debug.print",
        mode === "manual"
          ? `value ${a} is not used by the format`
          : `the format has ${fields} {} field${fields === 1 ? "" : "s"} but ${positional} values were given`,
      );
    }
  names.forEach((n, k) => {
    if (!used.has(positional + k))
      throw new TraceError("debug.print", `the named value ${n} is not used by the format`);
  });
  return parts;
}

/** A JS value a field shows as it is, fixed at trace time. */
function staticText(x: unknown, what: string): string {
  if (typeof x === "number" || typeof x === "boolean" || typeof x === "bigint") return String(x);
  if (typeof x === "string") return x;
  throw new TraceError(
    "debug.print",
    `${what} is ${describe(x)}; print tensors, numbers, booleans or strings (print a tree's leaves one by one)`,
  );
}

/**
 * `debug.print(fmt, ...values)`: prints `fmt` with each `{}` replaced by the next value, when the computation runs
 * (jax.debug.print). Inside jit, grad, scan, foriLoop, cond/switch and vmap it prints each time the step runs,
 * in program order: once per scan iteration, once per example under vmap, only from the branch taken. Outside a
 * trace, on device arrays, it prints as soon as their values are ready. Values are written as numpy writes them
 * (`0.5`, `[1. 2. 3.]`). `{0}` picks a value by position; `{name}` takes it from a last argument `{ name: value }`.
 * Printing never changes a result or a gradient; under grad it shows the forward (primal) values.
 */
export function print(fmt: string, ...values: unknown[]): void {
  const loc = opLoc();
  if (typeof fmt !== "string")
    throw new TraceError("debug.print", `the format must be a string, got ${describe(fmt)}`, [], loc);
  const usesNames = /\{[A-Za-z_]\w*\}/.test(fmt.replace(/\{\{/g, ""));
  let named: Record<string, unknown> = {};
  let positional = values;
  const last = values[values.length - 1];
  if (usesNames && isPlainObject(last)) {
    named = last as Record<string, unknown>;
    positional = values.slice(0, -1);
  }
  const names = Object.keys(named);
  const parts = parseFormat(fmt, positional.length, names);
  const all = [...positional, ...names.map((n) => named[n])];
  const trace = currentTrace();
  const args = all.map((x, i): PrintArg<Tensor> => {
    const what = i < positional.length ? `value ${i}` : `named value ${names[i - positional.length]}`;
    if (!(x instanceof Tensor)) return { kind: "text", text: staticText(x, what) };
    if (trace) return { kind: "value", value: new Tensor(trace, trace.lift(x, "debug.print")), dtype: x.dtype };
    if (x.trace !== concreteTrace)
      throw new TraceError(
        "debug.print",
        `${what} is a traced tensor, but no trace is active (a tensor leaked out of its transform?)`,
      );
    return { kind: "value", value: x, dtype: x.dtype };
  });
  const node: PrintNode<Tensor> = { kind: "print", parts, args, loc };
  if (trace) {
    trace.prints.push(node);
    return;
  }
  // Eager: the arrays' values arrive in the background; the line is written in order with every other print.
  void schedulePrints([node] as PrintNode<DeviceArray>[], (a) => a).catch(reportPrintFailure);
}

/** A print that runs detached from any call (eager) reports a failed download instead of rejecting unseen. */
export function reportPrintFailure(e: unknown): void {
  process.stderr.write(`tessera: debug.print failed: ${e instanceof Error ? e.message : String(e)}\n`);
}

/** A downloaded value: its elements and full shape (loop axes first). */
interface HostValue {
  readonly data: ArrayLike<number>;
  readonly shape: readonly number[];
}

/** The lines the nodes print, given each value downloaded. */
function render(nodes: readonly PrintNode<HostValue>[]): string[] {
  const lines: string[] = [];
  // `at` indexes the loop axes entered so far: a value's leading axes.
  const walk = (ns: readonly PrintNode<HostValue>[], at: readonly number[]): void => {
    for (const n of ns) {
      if (n.kind === "loop") {
        for (let k = 0; k < n.length; k++) walk(n.children, [...at, n.reverse ? n.length - 1 - k : k]);
      } else if (n.kind === "branch") {
        const i = Number(slice(n.index, at).data[0]);
        walk(n.branches[Math.min(Math.max(i, 0), n.branches.length - 1)]!, at);
      } else {
        let s = "";
        for (const p of n.parts) {
          if (typeof p === "string") s += p;
          else {
            const a = n.args[p]!;
            if (a.kind === "text") s += a.text;
            else {
              const v = slice(a.value, at);
              s += formatArray(a.dtype, v.data, v.shape);
            }
          }
        }
        lines.push(s);
      }
    }
  };
  walk(nodes, []);
  return lines;
}

/** The element of `v` at the leading indices `at`. */
function slice(v: HostValue, at: readonly number[]): HostValue {
  if (at.length === 0) return v;
  const shape = v.shape.slice(at.length);
  const size = shape.reduce((a, b) => a * b, 1);
  let off = 0;
  at.forEach((i, d) => {
    off = off * v.shape[d]! + i;
  });
  const data = v.data as Float32Array;
  return { data: data.subarray(off * size, (off + 1) * size), shape };
}

type Sink = (text: string) => void;
const stdoutSink: Sink = (text) => {
  process.stdout.write(text);
};
let sink: Sink = stdoutSink;
let chain: Promise<void> = Promise.resolve();

/**
 * Where printed lines go (default: process.stdout), e.g. a logger or a test's buffer; `undefined` restores stdout.
 * Each print is one call with its text and a newline.
 */
export function setSink(fn: Sink | undefined): void {
  sink = fn ?? stdoutSink;
}

/**
 * Downloads the values and writes the lines after every print scheduled before (so the text follows program
 * order across calls); resolves once written. `arrayOf` picks each value's device array.
 */
export function schedulePrints<T>(nodes: readonly PrintNode<T>[], arrayOf: (t: T) => DeviceArray): Promise<void> {
  const arrays = printLeaves(nodes).map(arrayOf);
  const values = Promise.all(
    arrays.map(async (a): Promise<HostValue> => ({ data: await a.toArray(), shape: a.shape })),
  );
  values.catch(() => {});
  const job = chain.then(async () => {
    const host = await values;
    for (const line of render(mapPrints(nodes, (_, i) => host[i]!))) sink(`${line}\n`);
  });
  chain = job.catch(() => {});
  return job;
}

/** Resolves once every print scheduled so far has been written (jax.effects_barrier). */
export function effectsBarrier(): Promise<void> {
  return chain;
}
