// Reverse-mode autodiff: every differentiable op against finite differences, exact closed forms, frozen weights, scan.
import { describe, expect, it } from "vitest";
import { GraphBuilder, type Graph, type Value } from "../../src/ir/graph.ts";
import { interpret, type HostArray } from "../../src/ir/interpret.ts";
import { UNARY_OPS } from "../../src/ir/ops.ts";
import { print } from "../../src/ir/print.ts";
import { formatType, tensorType } from "../../src/ir/types.ts";
import { autodiffPass, valueAndGrad, vjp } from "../../src/passes/autodiff.ts";
import { arr, checkGrad, f32, opGraph, randomArray, rng, s32, vjpValues } from "./gradcheck.ts";

const r = rng(1234);
const rand = (t = f32(2, 3), lo = -1, hi = 1) => randomArray(t, r, lo, hi);
const vals = (a: HostArray) => Array.from(a.data);
const matmul = { lhsBatch: [], rhsBatch: [], lhsContract: [1], rhsContract: [0], outDtype: "f32" } as const;

describe("vjp of element-wise ops vs finite differences", () => {
  const positive = new Set(["log", "sqrt", "rsqrt"]);
  // Piecewise constant ops jump at integers (round: at halves, sign: at 0); they are checked away from the jumps.
  const steps = new Set(["floor", "ceil", "round", "sign"]);
  for (const name of UNARY_OPS.filter((n) => n !== "not" && n !== "abs" && !steps.has(n))) {
    it(name, () => {
      checkGrad(opGraph(name, [f32(2, 3)], {}), [positive.has(name) ? rand(f32(2, 3), 0.5, 2) : rand()]);
    });
  }
  for (const name of steps) {
    it(`${name} (away from its jumps): zero`, () => {
      const x = arr("f32", [5], [-1.7, -0.3, 0.2, 1.3, 2.8]);
      checkGrad(opGraph(name as "floor", [f32(5)], {}), [x]);
    });
  }
  it("abs (away from the kink)", () => {
    checkGrad(opGraph("abs", [f32(4)], {}), [arr("f32", [4], [-1.5, -0.25, 0.3, 2])]);
  });
  for (const name of ["add", "sub", "mul"] as const) {
    it(name, () => checkGrad(opGraph(name, [f32(2, 3), f32(2, 3)], {}), [rand(), rand()]));
  }
  it("div", () => checkGrad(opGraph("div", [f32(2, 3), f32(2, 3)], {}), [rand(), rand(f32(2, 3), 0.5, 2)]));
  it("pow, both operands", () => {
    checkGrad(opGraph("pow", [f32(2, 3), f32(2, 3)], {}), [rand(f32(2, 3), 0.5, 2), rand(f32(2, 3), -1.5, 1.5)]);
  });
  for (const name of ["max", "min"] as const) {
    it(`${name} routes the gradient to the selected operand`, () => {
      const x = arr("f32", [4], [1, -2, 0.5, 3]);
      const y = arr("f32", [4], [0.2, 1, 2, -1]);
      checkGrad(opGraph(name, [f32(4), f32(4)], {}), [x, y]);
    });
  }
  it("select: the gradient follows the predicate; none for the predicate", () => {
    const g = opGraph("select", [tensorType("bool", [4]), f32(4), f32(4)], {});
    checkGrad(g, [arr("bool", [4], [1, 0, 0, 1]), rand(f32(4)), rand(f32(4))]);
  });
});

describe("vjp of shape ops vs finite differences", () => {
  it("broadcast_in_dim: added and stretched dims are summed", () => {
    checkGrad(opGraph("broadcast_in_dim", [f32(3, 1)], { shape: [2, 3, 4], dims: [1, 2] }), [rand(f32(3, 1))]);
  });
  it("reshape", () => checkGrad(opGraph("reshape", [f32(2, 3)], { shape: [3, 2] }), [rand()]));
  it("transpose", () => checkGrad(opGraph("transpose", [f32(2, 3, 4)], { perm: [2, 0, 1] }), [rand(f32(2, 3, 4))]));
  it("slice with strides", () => {
    const g = opGraph("slice", [f32(5, 7)], { start: [1, 0], limit: [5, 7], stride: [2, 3] });
    checkGrad(g, [rand(f32(5, 7))]);
  });
  it("concatenate", () => {
    checkGrad(opGraph("concatenate", [f32(2, 1), f32(2, 3), f32(2, 2)], { axis: 1 }), [
      rand(f32(2, 1)),
      rand(f32(2, 3)),
      rand(f32(2, 2)),
    ]);
  });
  it("pad: interior, negative low/high, and the padding value", () => {
    const g = opGraph("pad", [f32(3, 4), f32()], { low: [1, -1], high: [-1, 2], interior: [1, 0] });
    checkGrad(g, [rand(f32(3, 4)), rand(f32())]);
  });
  it("reduce_sum", () => checkGrad(opGraph("reduce_sum", [f32(2, 3, 4)], { axes: [0, 2] }), [rand(f32(2, 3, 4))]));
  for (const name of ["reduce_max", "reduce_min"] as const) {
    it(name, () => {
      const x = arr("f32", [3, 4], [0.1, 0.9, -0.4, 0.5, 1.2, -1, 0.3, 0.7, -0.2, 0.25, 0.6, -0.8]);
      checkGrad(opGraph(name, [f32(3, 4)], { axes: [1] }), [x]);
    });
  }
});

describe("vjp of dot_general vs finite differences", () => {
  it("plain matmul", () =>
    checkGrad(opGraph("dot_general", [f32(2, 3), f32(3, 4)], matmul), [rand(f32(2, 3)), rand(f32(3, 4))]));
  it("batch dims first", () => {
    const p = { lhsBatch: [0], rhsBatch: [0], lhsContract: [2], rhsContract: [1], outDtype: "f32" } as const;
    checkGrad(opGraph("dot_general", [f32(2, 3, 4), f32(2, 4, 5)], p), [rand(f32(2, 3, 4)), rand(f32(2, 4, 5))]);
  });
  it("batch and contracting dims in unusual positions", () => {
    const p = { lhsBatch: [1], rhsBatch: [2], lhsContract: [2], rhsContract: [0], outDtype: "f32" } as const;
    checkGrad(opGraph("dot_general", [f32(4, 2, 3), f32(3, 5, 2)], p), [rand(f32(4, 2, 3)), rand(f32(3, 5, 2))]);
  });
  it("two contracting dims paired out of order", () => {
    const p = { lhsBatch: [], rhsBatch: [], lhsContract: [0, 2], rhsContract: [2, 0], outDtype: "f32" } as const;
    checkGrad(opGraph("dot_general", [f32(3, 2, 4), f32(4, 5, 3)], p), [rand(f32(3, 2, 4)), rand(f32(4, 5, 3))]);
  });
});

describe("vjp of indexing ops vs finite differences", () => {
  it("gather: repeated and out-of-range (clamped) rows accumulate", () => {
    const g = opGraph("gather", [f32(5, 3), s32(2, 2)], {});
    checkGrad(g, [rand(f32(5, 3)), arr("s32", [2, 2], [1, 7, 1, -2])]);
  });
  it("scatter_add: operand and updates; out-of-range rows are dropped", () => {
    const g = opGraph("scatter_add", [f32(4, 3), s32(3), f32(3, 3)], {});
    const args = [rand(f32(4, 3)), arr("s32", [3], [1, 5, 1]), rand(f32(3, 3))];
    checkGrad(g, args);
    const cts = [arr("f32", [4, 3], [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12])];
    expect(vals(vjpValues(g, [2], args, cts)[0]!)).toEqual([4, 5, 6, 0, 0, 0, 4, 5, 6]);
  });
  it("take_along_axis (indices clamped like the forward)", () => {
    const g = opGraph("take_along_axis", [f32(3, 4), s32(3, 2)], { axis: 1 });
    checkGrad(g, [rand(f32(3, 4)), arr("s32", [3, 2], [0, 3, 2, 2, 9, -1])]);
  });
  it("take_along_axis on axis 0 of a rank-3 operand", () => {
    const g = opGraph("take_along_axis", [f32(3, 2, 2), s32(4, 2, 2)], { axis: 0 });
    checkGrad(g, [rand(f32(3, 2, 2)), arr("s32", [4, 2, 2], [0, 1, 2, 0, 2, 2, 1, 1, 0, 0, 0, 2, 1, 2, 1, 0])]);
  });
  it("dynamic_slice with a clamped start", () => {
    const g = opGraph("dynamic_slice", [f32(5, 4), s32(), s32()], { sizes: [3, 2] });
    checkGrad(g, [rand(f32(5, 4)), arr("s32", [], [3]), arr("s32", [], [1])]);
  });
  it("dynamic_update_slice: operand and update, clamped start", () => {
    const g = opGraph("dynamic_update_slice", [f32(5, 4), f32(2, 3), s32(), s32()], {});
    checkGrad(g, [rand(f32(5, 4)), rand(f32(2, 3)), arr("s32", [], [1]), arr("s32", [], [2])]);
  });
  it("optimization_barrier passes cotangents through a barrier", () => {
    const b = new GraphBuilder();
    const x = b.input(f32(3));
    const i = b.input(s32(3));
    const y = b.input(f32(3));
    const [bx, , by] = b.add("optimization_barrier", [x, i, y], {});
    const g = b.build([b.add1("mul", [bx!, by!], {})]);
    checkGrad(g, [rand(f32(3)), arr("s32", [3], [1, 2, 3]), rand(f32(3))]);
    expect(vjp(g, [0, 2]).ops.filter((op) => op.name === "optimization_barrier")).toHaveLength(2);
  });
});

describe("vjp: exact closed forms", () => {
  it("d/dx sum(x*x) = 2x", () => {
    const b = new GraphBuilder();
    const x = b.input(f32(3));
    const g = b.build([b.add1("reduce_sum", [b.add1("mul", [x, x], {})], { axes: [0] })]);
    const [loss, grad] = interpret(valueAndGrad(g, [0]), [arr("f32", [3], [1, -2, 0.5])]);
    expect(vals(loss!)).toEqual([5.25]);
    expect(vals(grad!)).toEqual([2, -4, 1]);
  });
  it("ties: reduce_max splits evenly, max(x, x) gives 1", () => {
    const rm = opGraph("reduce_max", [f32(3)], { axes: [0] });
    expect(vals(vjpValues(rm, [0], [arr("f32", [3], [1, 3, 3])], [arr("f32", [], [1])])[0]!)).toEqual([0, 0.5, 0.5]);
    const b = new GraphBuilder();
    const x = b.input(f32(2));
    const g = b.build([b.add1("max", [x, x], {})]);
    expect(vals(vjpValues(g, [0], [arr("f32", [2], [1, -1])], [arr("f32", [2], [1, 1])])[0]!)).toEqual([1, 1]);
  });
  it("abs has slope +1 at 0; pow is finite at x = 0", () => {
    const abs = opGraph("abs", [f32(1)], {});
    expect(vals(vjpValues(abs, [0], [arr("f32", [1], [0])], [arr("f32", [1], [1])])[0]!)).toEqual([1]);
    const pow = opGraph("pow", [f32(2), f32(2)], {});
    const [dx, dy] = vjpValues(
      pow,
      [0, 1],
      [arr("f32", [2], [0, 0]), arr("f32", [2], [0, 2])],
      [arr("f32", [2], [1, 1])],
    );
    expect(vals(dx!)).toEqual([0, 0]);
    expect(vals(dy!)).toEqual([0, 0]);
  });
  it("convert casts the cotangent back; bitcast_convert cuts the gradient", () => {
    const g = opGraph("convert", [f32(2)], { dtype: "f16" });
    const [d] = vjpValues(g, [0], [arr("f32", [2], [1, 2])], [arr("f16", [2], [0.5, 3])]);
    expect(d!.type.dtype).toBe("f32");
    expect(vals(d!)).toEqual([0.5, 3]);
    const b = new GraphBuilder();
    const x = b.input(f32(2));
    const bits = b.add1("bitcast_convert", [x], { dtype: "s32" });
    const back = b.add1("bitcast_convert", [bits], { dtype: "f32" });
    const cut = b.build([b.add1("add", [x, back], {})]);
    expect(vals(vjpValues(cut, [0], [arr("f32", [2], [1, 2])], [arr("f32", [2], [1, 1])])[0]!)).toEqual([1, 1]);
  });
  it("bf16 matmul accumulating in f32: cotangents are bf16, computed with f32 accumulation", () => {
    const p = { ...matmul, outDtype: "f32" } as const;
    const g = opGraph("dot_general", [tensorType("bf16", [1, 2]), tensorType("bf16", [2, 1])], p);
    const x = arr("bf16", [1, 2], [1, 2]);
    const w = arr("bf16", [2, 1], [3, 4]);
    const [dx, dw] = vjpValues(g, [0, 1], [x, w], [arr("f32", [1, 1], [0.5])]);
    expect(formatType(dx!.type)).toBe("bf16[1,2]");
    expect(vals(dx!)).toEqual([1.5, 2]);
    expect(vals(dw!)).toEqual([0.5, 1]);
  });
  it("backward ops carry the location of the op they differentiate", () => {
    const b = new GraphBuilder();
    const x = b.input(f32(2));
    const loc = { file: "model.ts", line: 7, col: 3 };
    const g = b.build([b.add1("reduce_sum", [b.add1("tanh", [x], {}, loc)], { axes: [0] })]);
    const backward = valueAndGrad(g, [0]).ops.slice(g.ops.length + 1); // after the seed and the primal ops
    const tanhVjp = backward.filter((op) => op.name === "sub" || op.name === "mul");
    expect(tanhVjp.length).toBeGreaterThan(0);
    for (const op of tanhVjp) expect(op.loc).toEqual(loc);
  });
  it("fan-out: a value used twice gets the sum of both cotangents", () => {
    const b = new GraphBuilder();
    const x = b.input(f32(2));
    const t = b.add1("tanh", [x], {});
    const g = b.build([b.add1("mul", [t, t], {}), t]);
    checkGrad(g, [rand(f32(2))]);
  });
});

describe("gradients only for what is asked", () => {
  // y = x @ W_frozen + (x @ A) @ B; only A and B are trained.
  function lora(): { g: Graph; wShape: string } {
    const b = new GraphBuilder();
    const x = b.input(f32(3, 8), "x");
    const w = b.input(f32(8, 6), "W");
    const a = b.input(f32(8, 2), "A");
    const bb = b.input(f32(2, 6), "B");
    const base = b.add1("dot_general", [x, w], matmul);
    const low = b.add1("dot_general", [b.add1("dot_general", [x, a], matmul), bb], matmul);
    const y = b.add1("add", [base, low], {});
    return {
      g: b.build([b.add1("reduce_sum", [b.add1("mul", [y, y], {})], { axes: [0, 1] })], ["loss"]),
      wShape: "f32[8,6]",
    };
  }

  it("the frozen weight gets no dot_general producing its shape, and A/B gradients are right", () => {
    const { g, wShape } = lora();
    const grad = valueAndGrad(g, [2, 3]);
    const dots = grad.ops.filter((op) => op.name === "dot_general").map((op) => formatType(op.outputs[0]!.type));
    expect(dots).not.toContain(wShape);
    expect(dots).toEqual(["f32[3,6]", "f32[3,2]", "f32[3,6]", "f32[3,2]", "f32[2,6]", "f32[2,8]"]);
    expect(grad.outputNames).toEqual(["loss", "grad.A", "grad.B"]);
    const args = [rand(f32(3, 8)), rand(f32(8, 6)), rand(f32(8, 2)), rand(f32(2, 6))];
    checkGrad(g, args, { wrt: [2, 3] });
  });

  it("a LoRA A's gradient transposes the small cotangent, not the [T, in] activation (XLA CPU copies an lhs contracted on its leading dim)", () => {
    const b = new GraphBuilder();
    const x = b.input(f32(64, 32), "x");
    const a = b.input(f32(32, 4), "A");
    const y = b.add1("dot_general", [x, a], matmul);
    const g = b.build([b.add1("reduce_sum", [b.add1("mul", [y, y], {})], { axes: [0, 1] })], ["loss"]);
    const grad = valueAndGrad(g, [1]);
    const dots = grad.ops.filter((op) => op.name === "dot_general").slice(1);
    expect(dots).toHaveLength(1);
    const [dot] = dots as [(typeof dots)[number]];
    // (ct^T x)^T: the [64, 4] cotangent first, contracted on T; x contracted on T as a GEMM's [K, N] rhs.
    expect(dot.inputs.map((v) => formatType(v.type))).toEqual(["f32[64,4]", "f32[64,32]"]);
    expect(dot.params).toMatchObject({ lhsContract: [0], rhsContract: [0] });
    expect(formatType(dot.outputs[0]!.type)).toBe("f32[4,32]");
    checkGrad(g, [rand(f32(64, 32)), rand(f32(32, 4))], { wrt: [1] });
  });

  it("a wrt input that the output does not depend on gets zeros", () => {
    const b = new GraphBuilder();
    const x = b.input(f32(2));
    b.input(f32(3));
    const g = b.build([b.add1("reduce_sum", [x], { axes: [0] })]);
    const out = interpret(valueAndGrad(g, [1]), [arr("f32", [2], [1, 2]), arr("f32", [3], [1, 2, 3])]);
    expect(vals(out[1]!)).toEqual([0, 0, 0]);
  });

  it("auxiliary outputs are returned but not differentiated", () => {
    const b = new GraphBuilder();
    const x = b.input(f32(2));
    const aux = b.add1("exp", [x], {});
    const g = b.build([b.add1("reduce_sum", [x], { axes: [0] }), aux], ["loss", "aux"]);
    const vg = valueAndGrad(g, [0]);
    expect(vg.ops.some((op) => op.name === "mul")).toBe(false); // exp's rule (ct * exp x) never ran
    const out = interpret(vg, [arr("f32", [2], [0, 1])]);
    expect(vals(out[2]!)).toEqual([1, 1]);
  });
});

describe("errors", () => {
  it("valueAndGrad needs a rank-0 float output 0 and names its type", () => {
    const g = opGraph("exp", [f32(2)], {});
    expect(() => valueAndGrad(g, [0])).toThrow("valueAndGrad: output 0 must be a rank-0 float (the loss), got f32[2]");
  });
  it("wrt must name float inputs", () => {
    const b = new GraphBuilder();
    const x = b.input(f32(2), "x");
    b.input(s32(2), "ids");
    const g = b.build([b.add1("reduce_sum", [x], { axes: [0] })]);
    expect(() => valueAndGrad(g, [1])).toThrow(
      "valueAndGrad: wrt input 1 (ids) is s32[2]; only float inputs have gradients",
    );
    expect(() => vjp(g, [5])).toThrow("vjp: wrt index 5 is out of range for 2 inputs");
  });
  it("autodiffPass is the pass form of valueAndGrad", () => {
    const b = new GraphBuilder();
    const x = b.input(f32(2));
    const g = b.build([b.add1("reduce_sum", [x], { axes: [0] })]);
    const pass = autodiffPass([0]);
    expect(pass.name).toBe("autodiff");
    expect(print(pass.run(g))).toBe(print(valueAndGrad(g, [0])));
  });
});

describe("scan", () => {
  /** h' = tanh(h @ Wh + x_t @ Wx + b); ys = h'. consts Wh, Wx, b; carry h; xs [5, 2]. */
  function rnn(reverse: boolean): Graph {
    const bb = new GraphBuilder();
    const wh = bb.input(f32(3, 3));
    const wx = bb.input(f32(2, 3));
    const bias = bb.input(f32(3));
    const h = bb.input(f32(3));
    const x = bb.input(f32(2));
    const vec = { lhsBatch: [], rhsBatch: [], lhsContract: [0], rhsContract: [0], outDtype: "f32" } as const;
    const pre = bb.add1(
      "add",
      [bb.add1("add", [bb.add1("dot_general", [h, wh], vec), bb.add1("dot_general", [x, wx], vec)], {}), bias],
      {},
    );
    const hn = bb.add1("tanh", [pre], {});
    const body = bb.build([hn, hn]);

    const b = new GraphBuilder();
    const ins = [f32(3, 3), f32(2, 3), f32(3), f32(3), f32(5, 2)].map((t) => b.input(t));
    const [hT, ys] = b.add("scan", ins, { body, length: 5, numConsts: 3, numCarry: 1, reverse });
    return b.build([hT!, ys!]);
  }
  const rnnArgs = () => [rand(f32(3, 3)), rand(f32(2, 3)), rand(f32(3)), rand(f32(3)), rand(f32(5, 2))];

  it("a 5-step RNN: gradients of consts, initial carry and xs vs finite differences", () => {
    checkGrad(rnn(false), rnnArgs());
  });
  it("the same RNN scanning in reverse", () => {
    checkGrad(rnn(true), rnnArgs());
  });
  it("frozen consts get no accumulator; integer carries are not differentiated", () => {
    // body: (w, frozen; n: s32, h; x) -> (n + 1, h * w + x * frozen; h)
    const bb = new GraphBuilder();
    const w = bb.input(f32(2));
    const frozen = bb.input(f32(2));
    const n = bb.input(s32());
    const h = bb.input(f32(2));
    const x = bb.input(f32(2));
    const one = bb.add1("constant", [], { dtype: "s32", shape: [], value: [1] });
    const hn = bb.add1("add", [bb.add1("mul", [h, w], {}), bb.add1("mul", [x, frozen], {})], {});
    const body = bb.build([bb.add1("add", [n, one], {}), hn, h]);
    const b = new GraphBuilder();
    const ins = [f32(2), f32(2), s32(), f32(2), f32(4, 2)].map((t) => b.input(t));
    const outs = b.add("scan", ins, { body, length: 4, numConsts: 2, numCarry: 2, reverse: false });
    const g = b.build(outs);
    const args = [rand(f32(2)), rand(f32(2)), arr("s32", [], [0]), rand(f32(2)), rand(f32(4, 2))];
    checkGrad(g, args, { wrt: [0, 3] });
    const scans = vjp(g, [0, 3]).ops.filter((op) => op.name === "scan");
    expect(scans).toHaveLength(2); // the primal (saving carries) and the backward scan
    const back = scans[1]!;
    if (back.name !== "scan") throw new Error("unreachable");
    // carries: the cotangent of h and one accumulator for w; none for the s32 counter or the frozen const.
    expect(back.params.numCarry).toBe(2);
    expect(back.params.reverse).toBe(true);
    expect(back.outputs.slice(0, 2).map((v: Value) => formatType(v.type))).toEqual(["f32[2]", "f32[2]"]);
  });
  it("a scan nested in a scan body", () => {
    // inner: carry c, xs row [3] -> c * row; outer: carry h, xs [2, 3] -> inner scan over the row, h + result
    const ib = new GraphBuilder();
    const c = ib.input(f32());
    const e = ib.input(f32());
    const inner = ib.build([ib.add1("mul", [c, ib.add1("sin", [e], {})], {})]);
    const ob = new GraphBuilder();
    const h = ob.input(f32());
    const row = ob.input(f32(3));
    const [prod] = ob.add("scan", [h, row], { body: inner, length: 3, numConsts: 0, numCarry: 1, reverse: false });
    const outer = ob.build([ob.add1("add", [h, prod!], {})]);
    const b = new GraphBuilder();
    const ins = [b.input(f32()), b.input(f32(2, 3))];
    const g = b.build(b.add("scan", ins, { body: outer, length: 2, numConsts: 0, numCarry: 1, reverse: false }));
    checkGrad(g, [rand(f32(), 0.5, 1.5), rand(f32(2, 3))]);
  });
});
