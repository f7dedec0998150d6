// Test helpers: seeded random host arrays and a gradient check of vjp against central finite differences.
import { expect } from "vitest";
import { GraphBuilder, type Graph } from "../../src/ir/graph.ts";
import { hostArray, interpret, type HostArray } from "../../src/ir/interpret.ts";
import type { OpName, OpParams } from "../../src/ir/ops.ts";
import { isFloat, numel, tensorType, type DType, type Shape, type TensorType } from "../../src/ir/types.ts";
import { parse } from "../../src/ir/parse.ts";
import { print } from "../../src/ir/print.ts";
import { verify } from "../../src/ir/verify.ts";
import { vjp } from "../../src/passes/autodiff.ts";
import { mulberry32 as rng } from "../../src/host/random.ts";

export { rng };

/** Uniform values in [lo, hi) (integers for integer dtypes). */
export function randomArray(t: TensorType, r: () => number, lo = -1, hi = 1): HostArray {
  const n = numel(t.shape);
  const vals = Array.from({ length: n }, () => lo + (hi - lo) * r());
  return hostArray(t.dtype, t.shape, isFloat(t.dtype) ? vals : vals.map(Math.floor));
}

export const f32 = (...shape: number[]): TensorType => tensorType("f32", shape);
export const s32 = (...shape: number[]): TensorType => tensorType("s32", shape);
export const arr = (dtype: DType, shape: Shape, values: number[]): HostArray => hostArray(dtype, shape, values);

/** A graph of one op applied to fresh inputs of the given types; outputs are the op's results. */
export function opGraph<N extends OpName>(name: N, inputs: readonly TensorType[], params: OpParams[N]): Graph {
  const b = new GraphBuilder();
  const ins = inputs.map((t) => b.input(t));
  return b.build(b.add(name, ins, params));
}

/**
 * The analytic gradients of `sum_k <ct_k, g_k(args)>` w.r.t. each wrt input, via vjp and the interpreter; the vjp
 * graph must also verify and survive a print -> parse -> print round trip.
 */
export function vjpValues(
  g: Graph,
  wrt: readonly number[],
  args: readonly HostArray[],
  cts: readonly HostArray[],
): HostArray[] {
  const grad = vjp(g, wrt);
  verify(grad);
  expect(print(parse(print(grad)))).toBe(print(grad));
  const outs = interpret(grad, [...args, ...cts]);
  return outs.slice(g.outputs.length);
}

function dotWithCts(outs: readonly HostArray[], cts: readonly HostArray[]): number {
  let s = 0;
  outs.forEach((o, k) => {
    if (!isFloat(o.type.dtype)) return;
    for (let i = 0; i < o.data.length; i++) s += o.data[i]! * cts[k]!.data[i]!;
  });
  return s;
}

export interface GradCheckOptions {
  /** Indices of the inputs to differentiate (default: every float input). */
  readonly wrt?: readonly number[];
  /** Finite-difference step (default 1e-2: large enough that f32 rounding of the outputs stays ~1e-5). */
  readonly step?: number;
  readonly atol?: number;
  readonly rtol?: number;
  readonly seed?: number;
}

/**
 * Checks vjp(g) against central finite differences of L(x) = sum_k <ct_k, g_k(x)> with random cotangents ct.
 * The interpreter rounds to f32 after each op, so the step is large (1e-2): the truncation error O(step^2)
 * then dominates the rounding error (~1e-7 / step), and a wrong rule (a sign, a factor, a transpose) is off by
 * far more than the tolerance. Inputs are perturbed by exactly representable amounts.
 */
export function checkGrad(g: Graph, args: readonly HostArray[], opts: GradCheckOptions = {}): void {
  const wrt = opts.wrt ?? g.inputs.flatMap((v, i) => (isFloat(v.type.dtype) ? [i] : []));
  const step = opts.step ?? 1e-2;
  const atol = opts.atol ?? 2e-3;
  const rtol = opts.rtol ?? 1e-2;
  const r = rng(opts.seed ?? 7);
  const cts = g.outputs.map((o) => randomArray(o.type, r));
  const analytic = vjpValues(g, wrt, args, cts);
  const loss = (xs: readonly HostArray[]) => dotWithCts(interpret(g, xs), cts);
  wrt.forEach((inputIdx, k) => {
    const x = args[inputIdx]!;
    const grad = analytic[k]!;
    expect(grad.type).toEqual(x.type);
    for (let i = 0; i < x.data.length; i++) {
      const plus = Float64Array.from(x.data);
      const minus = Float64Array.from(x.data);
      plus[i] = Math.fround(x.data[i]! + step);
      minus[i] = Math.fround(x.data[i]! - step);
      const with_ = (d: Float64Array) => args.map((a, j) => (j === inputIdx ? { type: a.type, data: d } : a));
      const fd = (loss(with_(plus)) - loss(with_(minus))) / (plus[i]! - minus[i]!);
      const an = grad.data[i]!;
      if (!(Math.abs(fd - an) <= atol + rtol * Math.abs(fd))) {
        throw new Error(`gradient of input ${inputIdx} element ${i}: vjp ${an}, finite differences ${fd}`);
      }
    }
  });
}
