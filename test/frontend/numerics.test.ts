// The rounding and log/exp ops as tx functions and Tensor methods, and numpy's integer promotion (div, floorDiv, mod, mean).
import { describe, expect, it } from "vitest";
import { array, jit, spec, trace, tx, type Tensor } from "./api.ts";
import { tensorType } from "../../src/ir/types.ts";
import { host, run } from "./helpers.ts";

describe("log1p, expm1, floor, ceil, round, sign", () => {
  it("are tx functions and Tensor methods with numpy's values", () => {
    const xs = [-2.5, -0.5, 0.5, 1.5, 2.7, 1e-8];
    const x = host("f32", [6], xs);
    const f = (t: Tensor) => [t.floor(), t.ceil(), t.round(), t.sign(), tx.expm1(t), tx.log1p(tx.abs(t))];
    const [fl, ce, ro, sg, em, lp] = run(f, [x]);
    const x32 = xs.map(Math.fround);
    expect(fl).toEqual(x32.map(Math.floor));
    expect(ce).toEqual(x32.map(Math.ceil).map((v) => (v === 0 ? -0 : v)));
    expect(ro).toEqual([-2, -0, 0, 2, 3, 0]);
    expect(sg).toEqual([-1, -1, 1, 1, 1, 1]);
    expect(em).toEqual(x32.map((v) => Math.fround(Math.expm1(v))));
    expect(lp).toEqual(x32.map((v) => Math.fround(Math.log1p(Math.abs(v)))));
  });
});

describe("integer division and means (numpy's promotion)", () => {
  // Every sign combination, exact and inexact quotients, and INT32-sized operands.
  const as = [7, -7, 7, -7, 6, -6, 0, 2147483647, -2147483648, 1];
  const bs = [2, 2, -2, -2, 3, 3, -5, 10, 7, -1];
  const a = host("s32", [10], as);
  const b = host("s32", [10], bs);

  it("div of integers is true division to f32", () => {
    const { graph } = trace((x: Tensor, y: Tensor) => tx.div(x, y), [spec("s32", [10]), spec("s32", [10])]);
    expect(graph.outputs[0]!.type.dtype).toBe("f32");
    expect(run((x: Tensor, y: Tensor) => x.div(y), [a, b])[0]).toEqual(
      as.map((v, i) => Math.fround(Math.fround(v) / bs[i]!)),
    );
    expect(run((x: Tensor, y: Tensor) => x.div(y), [host("bool", [2], [1, 0]), host("bool", [2], [1, 1])])[0]).toEqual([
      1, 0,
    ]);
  });

  it("floorDiv and remainder (mod) are Python's // and % for integers, in their dtype", () => {
    const { graph } = trace(
      (x: Tensor, y: Tensor) => [tx.floorDiv(x, y), tx.mod(x, y)],
      [spec("s32", [10]), spec("s32", [10])],
    );
    expect(graph.outputs.map((o) => o.type.dtype)).toEqual(["s32", "s32"]);
    const [q, r] = run((x: Tensor, y: Tensor) => [tx.floorDiv(x, y), tx.remainder(x, y)], [a, b]);
    // Python: floor of the exact quotient (BigInt keeps the int32 extremes exact), and a - q * b.
    const pyQ = as.map((v, i) => {
      const n = BigInt(v);
      const d = BigInt(bs[i]!);
      const t = n / d; // truncates
      return Number(n % d !== 0n && n < 0n !== d < 0n ? t - 1n : t);
    });
    expect(q).toEqual(pyQ);
    expect(r).toEqual(as.map((v, i) => v - pyQ[i]! * bs[i]!));
    expect(r!.slice(0, 4)).toEqual([1, 1, -1, -1]);
    expect(tx.mod).toBe(tx.remainder);
  });

  it("floorDiv and remainder of floats; u32 floorDiv; bool is refused", () => {
    const x = host("f32", [4], [7.5, -7.5, 7.5, -7.5]);
    const y = host("f32", [4], [2, 2, -2, -2]);
    const [q, r] = run((s: Tensor, t: Tensor) => [tx.floorDiv(s, t), tx.remainder(s, t)], [x, y]);
    expect(q).toEqual([3, -4, -4, 3]);
    expect(r).toEqual([1.5, 0.5, -0.5, -1.5]);
    expect(run((s: Tensor) => tx.floorDiv(s, 4), [host("u32", [2], [4294967295, 9])])[0]).toEqual([1073741823, 2]);
    expect(() => trace((s: Tensor) => tx.floorDiv(s, s), [spec("bool", [2])])).toThrow(
      /floorDiv: needs numbers, got bool/,
    );
  });

  it("the mean of integers and bools is f32", () => {
    const [m, mb] = run(
      (x: Tensor, f: Tensor) => [x.mean(), f.mean()],
      [host("s32", [4], [1, 2, 3, 5]), host("bool", [4], [1, 0, 1, 1])],
    );
    expect(m).toEqual([2.75]);
    expect(mb).toEqual([0.75]);
    const { graph } = trace((x: Tensor) => x.mean(0, { keepdims: true }), [spec("s32", [4, 2])]);
    expect(graph.outputs[0]!.type).toEqual(tensorType("f32", [1, 2]));
  });
});

describe("on PJRT CPU", () => {
  it("integer floorDiv/remainder, true div and tx.nn ops compile through XLA and equal the interpreter", async () => {
    const f = (a: Tensor, b: Tensor, x: Tensor, y: Tensor) => [
      tx.floorDiv(a, b),
      tx.remainder(a, b),
      a.div(b),
      tx.nn.gelu(x),
      tx.nn.gelu(x, { approximate: false }),
      tx.nn.logSoftmax(x),
      tx.nn.layerNorm(x),
      tx.nn.rmsNorm(x),
      tx.nn.crossEntropy(x, y, { ignoreIndex: -100, labelSmoothing: 0.1 }),
    ];
    const as = [7, -7, 7, -7, 2147483647, -2147483648];
    const bs = [2, 2, -2, -2, 10, 7];
    const xs = [0.5, -1.25, 3, 2, -0.75, 1e3];
    const args = [host("s32", [6], as), host("s32", [6], bs), host("f32", [2, 3], xs), host("s32", [2], [2, -100])];
    const want = run(f, args);
    const got = await jit(f)(
      array(as, { dtype: "s32" }),
      array(bs, { dtype: "s32" }),
      array(xs, { shape: [2, 3] }),
      array([2, -100], { dtype: "s32" }),
    );
    for (let k = 0; k < want.length; k++) {
      const g = Array.from(await got[k]!.toArray());
      g.forEach((v, i) => {
        expect(Math.abs(v - want[k]![i]!), `output ${k}[${i}]: ${v} vs ${want[k]![i]}`).toBeLessThanOrEqual(
          1e-5 * (1 + Math.abs(v)),
        );
      });
    }
  });
});
