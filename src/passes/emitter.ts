// A GraphBuilder with short helpers for the ops that gradient rules emit; every op gets the location it is told.
import { GraphBuilder, type Value } from "../ir/graph.ts";
import type { CompareDir, NoParams, OpName, OpParams } from "../ir/ops.ts";
import { sameShape, type DType, type Shape, type SourceLoc, type TensorType } from "../ir/types.ts";

const NO_PARAMS: NoParams = Object.freeze({});

export class Emitter {
  /** Location given to emitted ops: the primal op's, so errors in gradient code point at the user's line. */
  loc: SourceLoc | undefined;

  constructor(
    readonly b: GraphBuilder = new GraphBuilder(),
    loc?: SourceLoc,
  ) {
    this.loc = loc;
  }

  op<N extends OpName>(name: N, inputs: readonly Value[], params: OpParams[N]): Value {
    return this.b.add1(name, inputs, params, this.loc);
  }

  ops<N extends OpName>(name: N, inputs: readonly Value[], params: OpParams[N]): Value[] {
    return this.b.add(name, inputs, params, this.loc);
  }

  /** A splat constant: one value repeated over `t.shape`. */
  full(t: TensorType, x: number): Value {
    return this.op("constant", [], { dtype: t.dtype, shape: t.shape, value: [x] });
  }

  zeros(t: TensorType): Value {
    return this.full(t, 0);
  }

  /** A splat constant of `v`'s type. */
  like(v: Value, x: number): Value {
    return this.full(v.type, x);
  }

  scalar(dtype: DType, x: number): Value {
    return this.op("constant", [], { dtype, shape: [], value: [x] });
  }

  add(a: Value, b: Value): Value {
    return this.op("add", [a, b], NO_PARAMS);
  }
  sub(a: Value, b: Value): Value {
    return this.op("sub", [a, b], NO_PARAMS);
  }
  mul(a: Value, b: Value): Value {
    return this.op("mul", [a, b], NO_PARAMS);
  }
  div(a: Value, b: Value): Value {
    return this.op("div", [a, b], NO_PARAMS);
  }
  max(a: Value, b: Value): Value {
    return this.op("max", [a, b], NO_PARAMS);
  }
  min(a: Value, b: Value): Value {
    return this.op("min", [a, b], NO_PARAMS);
  }
  neg(a: Value): Value {
    return this.op("neg", [a], NO_PARAMS);
  }
  compare(dir: CompareDir, a: Value, b: Value): Value {
    return this.op("compare", [a, b], { dir });
  }
  select(pred: Value, onTrue: Value, onFalse: Value): Value {
    return this.op("select", [pred, onTrue, onFalse], NO_PARAMS);
  }
  convert(a: Value, dtype: DType): Value {
    return a.type.dtype === dtype ? a : this.op("convert", [a], { dtype });
  }
  broadcast(a: Value, shape: Shape, dims: readonly number[]): Value {
    return this.op("broadcast_in_dim", [a], { shape, dims });
  }
  reshape(a: Value, shape: Shape): Value {
    return sameShape(a.type.shape, shape) ? a : this.op("reshape", [a], { shape });
  }
  transpose(a: Value, perm: readonly number[]): Value {
    return perm.every((p, i) => p === i) ? a : this.op("transpose", [a], { perm });
  }
  /** reduce_sum, skipped when there is nothing to reduce. */
  reduceSum(a: Value, axes: readonly number[]): Value {
    return axes.length === 0 ? a : this.op("reduce_sum", [a], { axes });
  }
  slice(a: Value, start: readonly number[], limit: readonly number[], stride: readonly number[]): Value {
    return this.op("slice", [a], { start, limit, stride });
  }
  pad(a: Value, padValue: Value, low: readonly number[], high: readonly number[], interior: readonly number[]): Value {
    return this.op("pad", [a, padValue], { low, high, interior });
  }
  barrier(vs: readonly Value[]): Value[] {
    return this.ops("optimization_barrier", vs, NO_PARAMS);
  }
  noParams<N extends OpName>(name: N, inputs: readonly Value[]): Value {
    return this.op(name, inputs, NO_PARAMS as OpParams[N]);
  }
}
