// Tensor's methods: the tx ops with `this` as the first operand, installed on Tensor.prototype (core.ts declares them).
import type { DType } from "../ir/types.ts";
import { UNARY_OPS } from "../ir/ops.ts";
import { Tensor, type SliceSpec, type TensorLike } from "./core.ts";
import { TraceError } from "./errors.ts";
import * as el from "./ops/elementwise.ts";
import * as sh from "./ops/shape.ts";
import * as rd from "./ops/reduce.ts";
import * as la from "./ops/linalg.ts";
import * as ix from "./ops/indexing.ts";
import * as cu from "./ops/cumulative.ts";
import * as so from "./ops/sort.ts";
import type * as numpy from "./numpy.ts";

/** Fails to compile when a unary op's tx function (UNARY_API in ops/elementwise.ts) is not exported by numpy.ts. */
export type UnaryFunctionsExported = Pick<typeof numpy, el.UnaryName>;

/** Every Tensor method; the unary element-wise ones come from UNARY_API. */
export interface TensorMethods extends el.UnaryMethods {
  /** Slices along axis 0, so `const [k1, k2] = random.split(key)` destructures. */
  [Symbol.iterator](): Iterator<Tensor>;

  add(o: TensorLike): Tensor;
  sub(o: TensorLike): Tensor;
  mul(o: TensorLike): Tensor;
  div(o: TensorLike): Tensor;
  pow(o: TensorLike): Tensor;
  maximum(o: TensorLike): Tensor;
  minimum(o: TensorLike): Tensor;
  square(): Tensor;
  reciprocal(): Tensor;
  silu(): Tensor;
  clip(lo: TensorLike, hi: TensorLike): Tensor;
  eq(o: TensorLike): Tensor;
  ne(o: TensorLike): Tensor;
  lt(o: TensorLike): Tensor;
  le(o: TensorLike): Tensor;
  gt(o: TensorLike): Tensor;
  ge(o: TensorLike): Tensor;
  astype(dtype: DType): Tensor;

  reshape(shape: readonly number[]): Tensor;
  transpose(perm?: readonly number[]): Tensor;
  /** All axes reversed (numpy `.T`). */
  readonly T: Tensor;
  /** The last two axes swapped (numpy `.mT`). */
  readonly mT: Tensor;
  swapaxes(a: number, b: number): Tensor;
  expandDims(axis: number | readonly number[]): Tensor;
  squeeze(axis?: number | readonly number[]): Tensor;
  broadcastTo(shape: readonly number[]): Tensor;
  slice(...specs: SliceSpec[]): Tensor;
  flatten(): Tensor;

  sum(axis?: number | readonly number[], opts?: rd.ReduceOpts): Tensor;
  mean(axis?: number | readonly number[], opts?: rd.ReduceOpts): Tensor;
  max(axis?: number | readonly number[], opts?: rd.ReduceOpts): Tensor;
  min(axis?: number | readonly number[], opts?: rd.ReduceOpts): Tensor;

  argmax(axis?: number, opts?: rd.ReduceOpts): Tensor;
  argmin(axis?: number, opts?: rd.ReduceOpts): Tensor;
  var(axis?: number | readonly number[], opts?: rd.VarOpts): Tensor;
  std(axis?: number | readonly number[], opts?: rd.VarOpts): Tensor;
  cumsum(axis?: number): Tensor;
  cumprod(axis?: number): Tensor;
  sort(axis?: number): Tensor;
  argsort(axis?: number): Tensor;
  logsumexp(axis?: number | readonly number[], opts?: rd.ReduceOpts): Tensor;
  softmax(axis?: number): Tensor;
  logSoftmax(axis?: number): Tensor;

  matmul(o: Tensor): Tensor;
  take(ids: Tensor, axis?: number): Tensor;
}

type NonUnary = Omit<TensorMethods, keyof el.UnaryMethods>;

const METHODS: NonUnary & ThisType<Tensor> = {
  *[Symbol.iterator]() {
    if (this.ndim === 0) throw new TraceError("iterate", "cannot iterate over a rank-0 tensor", [this.type]);
    for (let i = 0; i < this.shape[0]!; i++) yield sh.slice(this, i);
  },

  add(o) {
    return el.add(this, o);
  },
  sub(o) {
    return el.sub(this, o);
  },
  mul(o) {
    return el.mul(this, o);
  },
  div(o) {
    return el.div(this, o);
  },
  pow(o) {
    return el.pow(this, o);
  },
  maximum(o) {
    return el.maximum(this, o);
  },
  minimum(o) {
    return el.minimum(this, o);
  },
  square() {
    return el.square(this);
  },
  reciprocal() {
    return el.reciprocal(this);
  },
  silu() {
    return el.silu(this);
  },
  clip(lo, hi) {
    return el.clip(this, lo, hi);
  },
  eq(o) {
    return el.eq(this, o);
  },
  ne(o) {
    return el.ne(this, o);
  },
  lt(o) {
    return el.lt(this, o);
  },
  le(o) {
    return el.le(this, o);
  },
  gt(o) {
    return el.gt(this, o);
  },
  ge(o) {
    return el.ge(this, o);
  },
  astype(dtype) {
    return el.astype(this, dtype);
  },

  reshape(shape) {
    return sh.reshape(this, shape);
  },
  transpose(perm) {
    return sh.transpose(this, perm);
  },
  get T() {
    return sh.transpose(this);
  },
  get mT() {
    return sh.swapaxes(this, -1, -2);
  },
  swapaxes(a, b) {
    return sh.swapaxes(this, a, b);
  },
  expandDims(axis) {
    return sh.expandDims(this, axis);
  },
  squeeze(axis) {
    return sh.squeeze(this, axis);
  },
  broadcastTo(shape) {
    return sh.broadcastTo(this, shape);
  },
  slice(...specs) {
    return sh.slice(this, ...specs);
  },
  flatten() {
    return sh.reshape(this, [-1]);
  },

  sum(axis, opts) {
    return rd.sum(this, axis, opts);
  },
  mean(axis, opts) {
    return rd.mean(this, axis, opts);
  },
  max(axis, opts) {
    return rd.max(this, axis, opts);
  },
  min(axis, opts) {
    return rd.min(this, axis, opts);
  },

  argmax(axis = -1, opts) {
    return rd.argmax(this, axis, opts);
  },
  argmin(axis = -1, opts) {
    return rd.argmin(this, axis, opts);
  },
  var(axis, opts) {
    return rd.variance(this, axis, opts);
  },
  std(axis, opts) {
    return rd.std(this, axis, opts);
  },
  cumsum(axis) {
    return cu.cumsum(this, axis);
  },
  cumprod(axis) {
    return cu.cumprod(this, axis);
  },
  sort(axis = -1) {
    return so.sort(this, axis);
  },
  argsort(axis = -1) {
    return so.argsort(this, axis);
  },
  logsumexp(axis, opts) {
    return rd.logsumexp(this, axis, opts);
  },
  softmax(axis = -1) {
    return rd.softmax(this, axis);
  },
  logSoftmax(axis = -1) {
    return rd.logSoftmax(this, axis);
  },

  matmul(o) {
    return la.matmul(this, o);
  },
  take(ids, axis = 0) {
    return ix.take(this, ids, axis);
  },
};

const UNARY_METHODS = Object.fromEntries(
  UNARY_OPS.filter((n) => el.UNARY_API[n].method).map((n) => {
    const fn = el.UNARY_FNS[el.UNARY_API[n].name];
    return [
      el.UNARY_API[n].name,
      function (this: Tensor) {
        return fn(this);
      },
    ];
  }),
);

// Property descriptors rather than Object.assign, which would call the T and mT getters instead of copying them.
Object.defineProperties(Tensor.prototype, {
  ...Object.getOwnPropertyDescriptors(METHODS),
  ...Object.getOwnPropertyDescriptors(UNARY_METHODS),
});
