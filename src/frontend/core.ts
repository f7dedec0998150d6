// The tracer: Tensor, the Trace each tensor belongs to, the stack of active traces, and `bind` that records ops.
import { GraphBuilder, type Graph, type Value } from "../ir/graph.ts";
import type { OpName, OpParams } from "../ir/ops.ts";
import { formatType, numel, type DType, type Shape, type SourceLoc, type TensorType } from "../ir/types.ts";
import { opLoc } from "./loc.ts";
import { TraceError } from "./errors.ts";
import type { TensorMethods } from "./methods.ts";
import type { PrintNode } from "./debug.ts";

/**
 * One graph being recorded: by `trace`/`jit` at the top, or by `scan`, `valueAndGrad` and `grad` for a nested
 * function. A tensor of an enclosing trace used here is captured: it becomes an extra input of this graph
 * (`captures`), and the transform that owns the trace passes the outer value in.
 */
export class Trace {
  readonly builder = new GraphBuilder();
  /** Parent-trace values captured so far, in order, and the inputs of this graph that stand for them. */
  readonly capturedOuter: Value[] = [];
  readonly capturedInner: Value[] = [];
  private readonly captureMap = new Map<Value, Value>();
  private finished = false;
  /** `debug.print` calls traced here, in program order, their tensors this trace's (see debug.ts). */
  readonly prints: PrintNode<Tensor>[] = [];
  private printsTaken = false;

  constructor(
    readonly parent: Trace | undefined,
    /** What opened this trace (`jit`, `scan`, `valueAndGrad`...), for error messages. */
    readonly label: string,
  ) {}

  get isFinished(): boolean {
    return this.finished;
  }

  /** A fresh graph input of this trace. */
  input(type: TensorType, name?: string): Tensor {
    return new Tensor(this, this.builder.input(type, name));
  }

  /** The value standing for `t` in this trace, capturing it from enclosing traces when needed. */
  lift(t: Tensor, op: string): Value {
    if (t.trace === this) return t.value;
    if (t.trace === concreteTrace)
      throw new TraceError(
        op,
        `operand ${t} is a device array used inside a traced function, which cannot read its values while ` +
          "tracing; pass it to the function as an argument",
      );
    if (!this.parent || !isAncestor(t.trace, this)) {
      const what = t.trace.label === "trace" ? "trace" : `${t.trace.label} trace`;
      const why = t.trace.isFinished
        ? `comes from a ${what} that has already finished (a tensor leaked out of its transform)`
        : `belongs to an unrelated ${what}`;
      throw new TraceError(op, `operand ${formatType(t.value.type)} ${why}`);
    }
    const outer = this.parent.lift(t, op);
    let inner = this.captureMap.get(outer);
    if (!inner) {
      inner = this.builder.input(outer.type);
      this.captureMap.set(outer, inner);
      this.capturedOuter.push(outer);
      this.capturedInner.push(inner);
    }
    return inner;
  }

  /**
   * The prints traced here, for the transform that owns this trace to route out as outputs. A transform that does
   * not take them cannot run them, and `build` then refuses, so no print is ever dropped silently.
   */
  takePrints(): PrintNode<Tensor>[] {
    this.printsTaken = true;
    return this.prints;
  }

  /** Freezes the recorded ops into a Graph; the trace's tensors may no longer be used. */
  build(outputs: readonly Tensor[], outputNames?: readonly string[], op = this.label): Graph {
    if (this.prints.length && !this.printsTaken) throw unsupportedPrint(this.label, this.prints);
    const values = outputs.map((t) => this.lift(t, op));
    this.finished = true;
    return this.builder.build(values, outputNames);
  }
}

const PRINT_UNSUPPORTED: Record<string, string> = {
  whileLoop:
    "its trip count is not known while tracing, so there is no fixed number of values to collect; use scan, or " +
    "foriLoop with number bounds (foriLoop with tensor bounds is a whileLoop)",
  customVjp: "print in the function that calls it, or outside the customVjp function",
};

function unsupportedPrint(label: string, prints: readonly PrintNode<Tensor>[]): TraceError {
  let loc: SourceLoc | undefined;
  const find = (nodes: readonly PrintNode<Tensor>[]): void => {
    for (const n of nodes) {
      if (loc) return;
      if (n.kind === "print") loc = n.loc;
      else if (n.kind === "loop") find(n.children);
      else for (const b of n.branches) find(b);
    }
  };
  find(prints);
  const why = PRINT_UNSUPPORTED[label] ?? "this transform does not route prints out of its body";
  return new TraceError("debug.print", `not supported inside ${label}: ${why}`, [], loc);
}

function isAncestor(a: Trace, b: Trace): boolean {
  for (let t = b.parent; t; t = t.parent) if (t === a) return true;
  return false;
}

const stack: Trace[] = [];

/** The trace device arrays (concrete tensors, array.ts) belong to: never active, it records nothing. */
export const concreteTrace = new Trace(undefined, "concrete");

/** Runs one op on device arrays outside any trace (eager.ts registers it; core.ts cannot import the runtime). */
export type EagerBind = <N extends OpName>(name: N, inputs: readonly Tensor[], params: OpParams[N]) => Tensor[];
let eagerBind: EagerBind | undefined;

/** @internal Installs the eager executor (eager.ts, loaded with the public API). */
export function setEagerBind(fn: EagerBind): void {
  eagerBind = fn;
}

/** The innermost active trace, or undefined outside every transform. */
export function currentTrace(): Trace | undefined {
  return stack[stack.length - 1];
}

/** The innermost active trace; `op` outside any trace is an error. */
export function requireTrace(op: string): Trace {
  const t = currentTrace();
  if (!t) {
    throw new TraceError(
      op,
      "called outside of a trace: tensors exist only while a function runs under jit, trace, scan or valueAndGrad " +
        "(ops on device arrays run eagerly, but this one needs a trace: wrap the call in jit)",
    );
  }
  return t;
}

/** Runs `fn` with `trace` as the innermost active trace. */
export function withTrace<T>(trace: Trace, fn: () => T): T {
  stack.push(trace);
  try {
    return fn();
  } finally {
    stack.pop();
  }
}

/** Records an IR op in the innermost trace, at the user's current source line. */
export function bind<N extends OpName>(name: N, inputs: readonly Tensor[], params: OpParams[N]): Tensor[] {
  // Outside every trace, ops on device arrays (and constants) run at once, as JAX's eager mode does.
  if (stack.length === 0 && eagerBind && inputs.every((t) => t.trace === concreteTrace))
    return eagerBind(name, inputs, params);
  const trace = requireTrace(name);
  const values = inputs.map((t) => trace.lift(t, name));
  return trace.builder.add(name, values, params, opLoc()).map((v) => new Tensor(trace, v));
}

export function bind1<N extends OpName>(name: N, inputs: readonly Tensor[], params: OpParams[N]): Tensor {
  const outs = bind(name, inputs, params);
  return outs[0]!;
}

/** A tensor operand or a JS number (which takes the dtype of the tensor it meets; see elementwise.ts). */
export type TensorLike = Tensor | number;

/** A slice of one dimension: an index (drops the dim), `null` (all of it) or `[start, stop, step]`, python-style. */
export type SliceSpec = number | null | undefined | readonly [(number | null)?, (number | null)?, (number | null)?];

/**
 * A traced tensor: the IR value it stands for, in the trace that recorded it. Its methods (the free functions of
 * the `tx` namespace with `this` as the first operand) are declared by TensorMethods and installed by methods.ts,
 * so that this module does not import the ops, which import it.
 */
export interface Tensor extends TensorMethods {}

// biome-ignore lint/suspicious/noUnsafeDeclarationMerging: the interface above declares the methods methods.ts installs on the prototype at load time (see the comment above), so the merge is backed at run time
export class Tensor {
  constructor(
    readonly trace: Trace,
    readonly value: Value,
  ) {}

  get dtype(): DType {
    return this.value.type.dtype;
  }
  get shape(): Shape {
    return this.value.type.shape;
  }
  get ndim(): number {
    return this.value.type.shape.length;
  }
  get size(): number {
    return numel(this.value.type.shape);
  }
  get type(): TensorType {
    return this.value.type;
  }
  /** For debugging and our own messages; `${x}` and `"" + x` throw (see below), so call this explicitly. */
  toString(): string {
    return `Tensor<${formatType(this.value.type)}>`;
  }

  /*
   * As in JAX, where tracers and concrete arrays are one Array type: every tensor has the read-back methods, so
   * results of ops on device arrays (typed Tensor) can be read; a DeviceArray (array.ts) implements them, and a
   * traced tensor throws at the caller's line, having no value while its function is traced.
   */
  /** The values, row-major (a device array's; see DeviceArray.toArray). */
  toArray(): Promise<Float32Array | Int32Array | Uint32Array | Uint8Array> {
    throw noValueError(this, "toArray");
  }
  /** The single value of a one-element array. */
  item(): Promise<number> {
    throw noValueError(this, "item");
  }
  /** Same as `toArray()`. */
  data(): Promise<Float32Array | Int32Array | Uint32Array | Uint8Array> {
    throw noValueError(this, "data");
  }

  /*
   * A traced tensor has no value until the compiled function runs, so `if (x.sum() > 0)`, `+x` or `${x}` would
   * branch on, compute with or print nothing of it, silently (JS would compare NaN or a type name). Every implicit
   * conversion goes through Symbol.toPrimitive; valueOf throws too for explicit calls.
   */
  [Symbol.toPrimitive](hint: string): never {
    throw coercionError(this, hint);
  }
  valueOf(): never {
    throw coercionError(this, "number");
  }
}

function noValueError(t: Tensor, method: string): TraceError {
  return new TraceError(
    method,
    `${t.toString()} is traced: it has no value while its function is traced (under jit, grad, scan...); return it from ` +
      "the jitted function and read the result, or run op by op with disableJit",
  );
}

function coercionError(t: Tensor, hint: string): TraceError {
  const as = hint === "string" ? "a string" : hint === "number" ? "a number" : "a primitive (== or +)";
  return new TraceError(
    "Tensor",
    `a ${formatType(t.type)} tensor was used as ${as}, but a traced tensor has no value while the function is traced: ` +
      "select values with where(c, a, b), branch with cond(pred, trueFn, falseFn, ...operands) (or switchCase), " +
      "loop with whileLoop(condFn, bodyFn, init) or foriLoop; call .toString() to print its type",
  );
}
