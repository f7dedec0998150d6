// The tracer: Tensor, the Trace each tensor belongs to, the stack of active traces, and `bind` that records ops.
import { GraphBuilder, type Graph, type Value } from "../ir/graph.ts";
import type { OpName, OpParams } from "../ir/ops.ts";
import { formatType, numel, type DType, type Shape, type TensorType } from "../ir/types.ts";
import { opLoc } from "./loc.ts";
import { TraceError } from "./errors.ts";
import * as el from "./ops/elementwise.ts";
import * as sh from "./ops/shape.ts";
import * as rd from "./ops/reduce.ts";
import * as la from "./ops/linalg.ts";
import * as ix from "./ops/indexing.ts";

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

  /** Freezes the recorded ops into a Graph; the trace's tensors may no longer be used. */
  build(outputs: readonly Tensor[], outputNames?: readonly string[], op = this.label): Graph {
    const values = outputs.map((t) => this.lift(t, op));
    this.finished = true;
    return this.builder.build(values, outputNames);
  }
}

function isAncestor(a: Trace, b: Trace): boolean {
  for (let t = b.parent; t; t = t.parent) if (t === a) return true;
  return false;
}

const stack: Trace[] = [];

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
      "called outside of a trace: tensors exist only while a function runs under jit, trace, scan or valueAndGrad",
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
 * A traced tensor: the IR value it stands for, in the trace that recorded it. Methods are the free functions of
 * the `tx` namespace with `this` as the first operand.
 */
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
  toString(): string {
    return `Tensor<${formatType(this.value.type)}>`;
  }

  /** Slices along axis 0, so `const [k1, k2] = random.split(key)` destructures. */
  *[Symbol.iterator](): Iterator<Tensor> {
    if (this.ndim === 0) throw new TraceError("iterate", "cannot iterate over a rank-0 tensor", [this.type]);
    for (let i = 0; i < this.shape[0]!; i++) yield sh.slice(this, i);
  }

  add(o: TensorLike): Tensor { return el.add(this, o); }
  sub(o: TensorLike): Tensor { return el.sub(this, o); }
  mul(o: TensorLike): Tensor { return el.mul(this, o); }
  div(o: TensorLike): Tensor { return el.div(this, o); }
  pow(o: TensorLike): Tensor { return el.pow(this, o); }
  maximum(o: TensorLike): Tensor { return el.maximum(this, o); }
  minimum(o: TensorLike): Tensor { return el.minimum(this, o); }
  neg(): Tensor { return el.neg(this); }
  abs(): Tensor { return el.abs(this); }
  exp(): Tensor { return el.exp(this); }
  log(): Tensor { return el.log(this); }
  sqrt(): Tensor { return el.sqrt(this); }
  rsqrt(): Tensor { return el.rsqrt(this); }
  tanh(): Tensor { return el.tanh(this); }
  sigmoid(): Tensor { return el.sigmoid(this); }
  sin(): Tensor { return el.sin(this); }
  cos(): Tensor { return el.cos(this); }
  square(): Tensor { return el.square(this); }
  reciprocal(): Tensor { return el.reciprocal(this); }
  silu(): Tensor { return el.silu(this); }
  clip(lo: TensorLike, hi: TensorLike): Tensor { return el.clip(this, lo, hi); }
  eq(o: TensorLike): Tensor { return el.eq(this, o); }
  ne(o: TensorLike): Tensor { return el.ne(this, o); }
  lt(o: TensorLike): Tensor { return el.lt(this, o); }
  le(o: TensorLike): Tensor { return el.le(this, o); }
  gt(o: TensorLike): Tensor { return el.gt(this, o); }
  ge(o: TensorLike): Tensor { return el.ge(this, o); }
  astype(dtype: DType): Tensor { return el.astype(this, dtype); }

  reshape(shape: readonly number[]): Tensor { return sh.reshape(this, shape); }
  transpose(perm?: readonly number[]): Tensor { return sh.transpose(this, perm); }
  /** All axes reversed (numpy `.T`). */
  get T(): Tensor { return sh.transpose(this); }
  /** The last two axes swapped (numpy `.mT`). */
  get mT(): Tensor { return sh.swapaxes(this, -1, -2); }
  swapaxes(a: number, b: number): Tensor { return sh.swapaxes(this, a, b); }
  expandDims(axis: number | readonly number[]): Tensor { return sh.expandDims(this, axis); }
  squeeze(axis?: number | readonly number[]): Tensor { return sh.squeeze(this, axis); }
  broadcastTo(shape: readonly number[]): Tensor { return sh.broadcastTo(this, shape); }
  slice(...specs: SliceSpec[]): Tensor { return sh.slice(this, ...specs); }
  flatten(): Tensor { return sh.reshape(this, [-1]); }

  sum(axis?: number | readonly number[], opts?: rd.ReduceOpts): Tensor { return rd.sum(this, axis, opts); }
  mean(axis?: number | readonly number[], opts?: rd.ReduceOpts): Tensor { return rd.mean(this, axis, opts); }
  max(axis?: number | readonly number[], opts?: rd.ReduceOpts): Tensor { return rd.max(this, axis, opts); }
  min(axis?: number | readonly number[], opts?: rd.ReduceOpts): Tensor { return rd.min(this, axis, opts); }

  argmax(axis = -1, opts?: rd.ReduceOpts): Tensor { return rd.argmax(this, axis, opts); }
  logsumexp(axis?: number | readonly number[], opts?: rd.ReduceOpts): Tensor { return rd.logsumexp(this, axis, opts); }
  softmax(axis = -1): Tensor { return rd.softmax(this, axis); }
  logSoftmax(axis = -1): Tensor { return rd.logSoftmax(this, axis); }

  matmul(o: Tensor): Tensor { return la.matmul(this, o); }
  take(ids: Tensor, axis = 0): Tensor { return ix.take(this, ids, axis); }
}
