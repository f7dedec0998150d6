// Reference interpreter, op by op, against hand-computed expectations (rounding, wraparound, clamping, scan order).
import { describe, expect, it } from "vitest";
import { GraphBuilder, type Graph } from "../../src/ir/graph.ts";
import { hostArray, interpret, type HostArray } from "../../src/ir/interpret.ts";
import type { OpName, OpParams } from "../../src/ir/ops.ts";
import { erf } from "../../src/ir/elementwise.ts";
import { tensorType, type DType, type Shape } from "../../src/ir/types.ts";
import { roundBf16, roundF16 } from "../../src/ir/float_bits.ts";

const h = hostArray;

/** Runs a one-op graph over `args` and returns its results. */
function runOp<N extends OpName>(name: N, args: HostArray[], params: OpParams[N]): HostArray[] {
  const b = new GraphBuilder();
  const ins = args.map((a) => b.input(a.type));
  const outs = b.add(name, ins, params);
  return interpret(b.build(outs), args);
}

function run1<N extends OpName>(name: N, args: HostArray[], params: OpParams[N]): HostArray {
  return runOp(name, args, params)[0]!;
}

/** Result as [dtype, shape, values] for compact assertions. */
function vals(a: HostArray): number[] {
  return Array.from(a.data);
}

function expectArray(a: HostArray, dtype: DType, shape: Shape, values: number[]): void {
  expect(a.type.dtype).toBe(dtype);
  expect([...a.type.shape]).toEqual([...shape]);
  expect(vals(a)).toEqual(values);
}

const P = {} as const;

describe("float rounding", () => {
  it("bf16 rounds to nearest even", () => {
    // bf16 has 8 significant bits: between 1 and 2 the spacing is 2^-7.
    expect(roundBf16(1 + 2 ** -8)).toBe(1); // tie, 1 is even
    expect(roundBf16(1 + 3 * 2 ** -8)).toBe(1 + 2 ** -6); // tie between 1+2^-7 (odd) and 1+2^-6 (even)
    expect(roundBf16(1 + 2 ** -8 + 2 ** -20)).toBe(1 + 2 ** -7); // just above the tie
    expect(roundBf16(-Math.PI)).toBe(-3.140625);
    expect(roundBf16(3.5e38)).toBe(Infinity);
    expect(roundBf16(2 ** -133)).toBe(2 ** -133); // smallest subnormal
    expect(roundBf16(2 ** -135)).toBe(0);
    expect(Object.is(roundBf16(-(2 ** -140)), -0)).toBe(true);
    expect(roundBf16(NaN)).toBeNaN();
  });
  it("f16 rounds to nearest even, overflows to inf, keeps subnormals", () => {
    expect(roundF16(1 + 2 ** -11)).toBe(1);
    expect(roundF16(1 + 3 * 2 ** -11)).toBe(1 + 2 ** -9);
    expect(roundF16(65504)).toBe(65504);
    expect(roundF16(65519)).toBe(65504); // below the midpoint to 65536
    expect(roundF16(65520)).toBe(Infinity); // the tie rounds to even, which is past the largest finite
    expect(roundF16(2 ** -24)).toBe(2 ** -24);
    expect(roundF16(3 * 2 ** -26)).toBe(2 ** -24); // 0.75 ulp
    expect(roundF16(2 ** -25)).toBe(0); // tie to even zero
    expect(roundF16(0.1)).toBe(0.0999755859375);
  });
  it("hostArray rounds its values into the dtype", () => {
    expect(vals(h("f32", [1], [0.1]))).toEqual([Math.fround(0.1)]);
    expect(vals(h("bf16", [1], [0.1]))).toEqual([0.10009765625]);
    expect(vals(h("s32", [2], [2 ** 31, -1]))).toEqual([-(2 ** 31), -1]);
    expect(vals(h("u32", [1], [-1]))).toEqual([2 ** 32 - 1]);
    expect(() => h("f32", [2], [1])).toThrow(/1 values for f32\[2\]/);
  });
});

describe("element-wise", () => {
  it("unary float ops", () => {
    const x = h("f32", [3], [0, 1, 4]);
    expect(vals(run1("neg", [x], P))).toEqual([-0, -1, -4]);
    expect(vals(run1("abs", [h("f32", [2], [-2, 3])], P))).toEqual([2, 3]);
    expect(vals(run1("exp", [x], P))).toEqual([1, Math.fround(Math.E), Math.fround(Math.exp(4))]);
    expect(vals(run1("log", [x], P))).toEqual([-Infinity, 0, Math.fround(Math.log(4))]);
    expect(vals(run1("sqrt", [x], P))).toEqual([0, 1, 2]);
    expect(vals(run1("rsqrt", [x], P))).toEqual([Infinity, 1, 0.5]);
    expect(vals(run1("tanh", [x], P))).toEqual([0, Math.fround(Math.tanh(1)), Math.fround(Math.tanh(4))]);
    expect(vals(run1("logistic", [x], P))).toEqual([
      0.5,
      Math.fround(1 / (1 + Math.exp(-1))),
      Math.fround(1 / (1 + Math.exp(-4))),
    ]);
    expect(vals(run1("sin", [x], P))).toEqual([0, Math.fround(Math.sin(1)), Math.fround(Math.sin(4))]);
    expect(vals(run1("cos", [x], P))).toEqual([1, Math.fround(Math.cos(1)), Math.fround(Math.cos(4))]);
  });
  it("log1p, expm1 keep tiny inputs exact; floor, ceil, round (half to even), sign keep -0, inf and NaN", () => {
    const tiny = h("f32", [3], [1e-10, -1, 3]);
    // Formed as log(1 + x), 1e-10 would be lost: 1 + 1e-10 rounds to 1.
    expect(vals(run1("log1p", [tiny], P))).toEqual([Math.fround(1e-10), -Infinity, Math.fround(Math.log(4))]);
    expect(vals(run1("expm1", [tiny], P))).toEqual([
      Math.fround(1e-10),
      Math.fround(Math.exp(-1) - 1),
      Math.fround(Math.exp(3) - 1),
    ]);
    const x = h("f32", [12], [-2.5, -1.5, -0.5, -0.3, -0, 0.5, 1.5, 2.5, 2.7, Infinity, -Infinity, NaN]);
    const r = vals(run1("round", [x], P));
    expect(r).toEqual([-2, -2, -0, -0, -0, 0, 2, 2, 3, Infinity, -Infinity, NaN]);
    expect(Object.is(r[2], -0) && Object.is(r[3], -0) && Object.is(r[5], 0)).toBe(true);
    expect(vals(run1("floor", [x], P))).toEqual([-3, -2, -1, -1, -0, 0, 1, 2, 2, Infinity, -Infinity, NaN]);
    expect(vals(run1("ceil", [x], P))).toEqual([-2, -1, -0, -0, -0, 1, 2, 3, 3, Infinity, -Infinity, NaN]);
    const sg = vals(run1("sign", [x], P));
    expect(sg).toEqual([-1, -1, -1, -1, -0, 1, 1, 1, 1, 1, -1, NaN]);
    expect(Object.is(sg[4], -0)).toBe(true);
  });
  it("erf to within 2 ulp of Python's math.erf, odd, saturating to +-1", () => {
    // math.erf (CPython, correctly rounded in practice) at points on both sides of the kernel's switch at 2.
    const want: [number, number][] = [
      [1e-8, 1.1283791670955126e-8],
      [0.1, 0.1124629160182849],
      [0.5, 0.5204998778130465],
      [1, 0.8427007929497149],
      [1.5, 0.9661051464753108],
      [2, 0.9953222650189527],
      [1.99, 0.995111413199617],
      [2.5, 0.999593047982555],
      [2.99, 0.9999764743969194],
      [3, 0.9999779095030014],
      [3.5, 0.9999992569016276],
      [4, 0.9999999845827421],
      [5, 0.9999999999984626],
      [-0.7, -0.6778011938374184],
      [-3.2, -0.9999939742388483],
    ];
    for (const [x, y] of want)
      expect(Math.abs(erf(x) - y), `erf(${x})`).toBeLessThanOrEqual(2 * Number.EPSILON * Math.abs(y));
    expect([erf(0), erf(6), erf(-30), erf(Infinity), erf(-Infinity)]).toEqual([0, 1, -1, 1, -1]);
    expect(erf(NaN)).toBeNaN();
    expect(vals(run1("erf", [h("f32", [2], [0.5, -2])], P))).toEqual([
      Math.fround(0.5204998778130465),
      Math.fround(-0.9953222650189527),
    ]);
  });
  it("rounds bf16 and f16 results after each op", () => {
    // 1 + 2^-8 is not a bf16; the sum rounds back to 1 (tie to even), in f32 it would stay.
    const one = h("bf16", [1], [1]);
    const tiny = h("bf16", [1], [2 ** -8]);
    expect(vals(run1("add", [one, tiny], P))).toEqual([1]);
    expect(vals(run1("add", [h("f32", [1], [1]), h("f32", [1], [2 ** -8])], P))).toEqual([1 + 2 ** -8]);
    expect(vals(run1("mul", [h("f16", [1], [300]), h("f16", [1], [300])], P))).toEqual([Infinity]);
    expect(vals(run1("exp", [h("bf16", [1], [1])], P))).toEqual([2.71875]);
    expect(vals(run1("div", [h("f16", [1], [1]), h("f16", [1], [3])], P))).toEqual([0.333251953125]);
  });
  it("not on bool, s32, u32", () => {
    expect(vals(run1("not", [h("bool", [2], [0, 1])], P))).toEqual([1, 0]);
    expect(vals(run1("not", [h("s32", [2], [0, 5])], P))).toEqual([-1, -6]);
    expect(vals(run1("not", [h("u32", [1], [0])], P))).toEqual([2 ** 32 - 1]);
  });
  it("s32 and u32 arithmetic wraps", () => {
    const max = h("s32", [1], [2 ** 31 - 1]);
    const one = h("s32", [1], [1]);
    expect(vals(run1("add", [max, one], P))).toEqual([-(2 ** 31)]);
    expect(vals(run1("sub", [h("s32", [1], [-(2 ** 31)]), one], P))).toEqual([2 ** 31 - 1]);
    expect(vals(run1("mul", [h("s32", [1], [65536]), h("s32", [1], [65537])], P))).toEqual([65536]);
    expect(vals(run1("neg", [h("s32", [1], [-(2 ** 31)])], P))).toEqual([-(2 ** 31)]);
    expect(vals(run1("abs", [h("s32", [1], [-(2 ** 31)])], P))).toEqual([-(2 ** 31)]);
    const umax = h("u32", [1], [2 ** 32 - 1]);
    expect(vals(run1("add", [umax, h("u32", [1], [2])], P))).toEqual([1]);
    expect(vals(run1("sub", [h("u32", [1], [0]), h("u32", [1], [1])], P))).toEqual([2 ** 32 - 1]);
    // 0xffffffff * 0xffffffff = 1 mod 2^32; 0x9e3779b9 * 3 = 0x1daa66d2b -> 0xdaa66d2b
    expect(vals(run1("mul", [umax, umax], P))).toEqual([1]);
    expect(vals(run1("mul", [h("u32", [1], [0x9e3779b9]), h("u32", [1], [3])], P))).toEqual([0xdaa66d2b]);
    expect(vals(run1("neg", [h("u32", [1], [1])], P))).toEqual([2 ** 32 - 1]);
  });
  it("integer division truncates toward zero", () => {
    const a = h("s32", [6], [7, -7, 7, -7, 5, -(2 ** 31)]);
    const b = h("s32", [6], [2, 2, -2, -2, 0, -1]);
    expect(vals(run1("div", [a, b], P))).toEqual([3, -3, -3, 3, -1, -(2 ** 31)]);
    expect(vals(run1("div", [h("u32", [2], [2 ** 32 - 1, 9]), h("u32", [2], [2, 0])], P))).toEqual([
      2 ** 31 - 1,
      2 ** 32 - 1,
    ]);
    expect(vals(run1("div", [h("f32", [1], [-7]), h("f32", [1], [2])], P))).toEqual([-3.5]);
  });
  it("shifts: >= bitwidth gives 0, right shift is logical", () => {
    const x = h("u32", [5], [1, 1, 0x80000000, 0xffffffff, 3]);
    const s = h("u32", [5], [31, 32, 31, 4, 100]);
    expect(vals(run1("shift_left", [x, s], P))).toEqual([0x80000000, 0, 0, 0xfffffff0, 0]);
    expect(vals(run1("shift_right_logical", [x, s], P))).toEqual([0, 0, 1, 0x0fffffff, 0]);
    const y = h("s32", [4], [-1, -8, 1, 1]);
    const t = h("s32", [4], [28, 1, 31, -1]);
    expect(vals(run1("shift_right_logical", [y, t], P))).toEqual([15, 0x7ffffffc, 0, 0]);
    expect(vals(run1("shift_left", [y, t], P))).toEqual([-(2 ** 28), -16, -(2 ** 31), 0]);
  });
  it("bitwise and logical ops", () => {
    const a = h("u32", [2], [0xf0f0f0f0, 12]);
    const b = h("u32", [2], [0xff00ff00, 10]);
    expect(vals(run1("and", [a, b], P))).toEqual([0xf000f000, 8]);
    expect(vals(run1("or", [a, b], P))).toEqual([0xfff0fff0, 14]);
    expect(vals(run1("xor", [a, b], P))).toEqual([0x0ff00ff0, 6]);
    const p = h("bool", [4], [0, 0, 1, 1]);
    const q = h("bool", [4], [0, 1, 0, 1]);
    expect(vals(run1("and", [p, q], P))).toEqual([0, 0, 0, 1]);
    expect(vals(run1("or", [p, q], P))).toEqual([0, 1, 1, 1]);
    expect(vals(run1("xor", [p, q], P))).toEqual([0, 1, 1, 0]);
    expect(vals(run1("and", [h("s32", [1], [-1]), h("s32", [1], [-2])], P))).toEqual([-2]);
  });
  it("max/min propagate NaN; pow", () => {
    const a = h("f32", [3], [1, NaN, -0.5]);
    const b = h("f32", [3], [2, 0, NaN]);
    expect(vals(run1("max", [a, b], P))).toEqual([2, NaN, NaN]);
    expect(vals(run1("min", [a, b], P))).toEqual([1, NaN, NaN]);
    expect(vals(run1("max", [h("s32", [2], [-3, 4]), h("s32", [2], [2, -9])], P))).toEqual([2, 4]);
    expect(vals(run1("pow", [h("f32", [3], [2, 9, 1]), h("f32", [3], [10, 0.5, NaN])], P))).toEqual([1024, 3, 1]);
  });
  it("compare, including NaN", () => {
    const a = h("f32", [3], [1, 2, NaN]);
    const b = h("f32", [3], [2, 2, NaN]);
    const dirs = { eq: [0, 1, 0], ne: [1, 0, 1], lt: [1, 0, 0], le: [1, 1, 0], gt: [0, 0, 0], ge: [0, 1, 0] } as const;
    for (const [dir, want] of Object.entries(dirs)) {
      expectArray(run1("compare", [a, b], { dir: dir as keyof typeof dirs }), "bool", [3], [...want]);
    }
    expect(vals(run1("compare", [h("u32", [1], [2 ** 32 - 1]), h("u32", [1], [1])], { dir: "gt" }))).toEqual([1]);
  });
  it("select", () => {
    const r = run1("select", [h("bool", [3], [1, 0, 1]), h("f32", [3], [1, 2, 3]), h("f32", [3], [-1, -2, -3])], P);
    expectArray(r, "f32", [3], [1, -2, 3]);
  });
});

describe("convert and bitcast", () => {
  it("float -> int truncates toward zero and saturates; NaN -> 0", () => {
    const x = h("f32", [6], [2.7, -2.7, 3e9, -3e9, NaN, -0.5]);
    expect(vals(run1("convert", [x], { dtype: "s32" }))).toEqual([2, -2, 2 ** 31 - 1, -(2 ** 31), 0, 0]);
    expect(vals(run1("convert", [x], { dtype: "u32" }))).toEqual([2, 0, 3e9, 0, 0, 0]);
  });
  it("to and from bool, between ints, to narrow floats", () => {
    expect(vals(run1("convert", [h("f32", [4], [0, -0, 0.1, NaN])], { dtype: "bool" }))).toEqual([0, 0, 1, 1]);
    expect(vals(run1("convert", [h("bool", [2], [1, 0])], { dtype: "f32" }))).toEqual([1, 0]);
    expect(vals(run1("convert", [h("s32", [2], [-1, 7])], { dtype: "u32" }))).toEqual([2 ** 32 - 1, 7]);
    expect(vals(run1("convert", [h("u32", [1], [2 ** 32 - 2])], { dtype: "s32" }))).toEqual([-2]);
    expect(vals(run1("convert", [h("s32", [1], [16777217])], { dtype: "f32" }))).toEqual([16777216]);
    expect(vals(run1("convert", [h("s32", [1], [257])], { dtype: "bf16" }))).toEqual([256]);
    expect(vals(run1("convert", [h("f32", [1], [1 / 3])], { dtype: "f16" }))).toEqual([0.333251953125]);
  });
  it("bitcast_convert reinterprets bits", () => {
    expect(vals(run1("bitcast_convert", [h("f32", [3], [1, -2, 0.5])], { dtype: "u32" }))).toEqual([
      0x3f800000, 0xc0000000, 0x3f000000,
    ]);
    expect(vals(run1("bitcast_convert", [h("s32", [1], [0x40490fdb])], { dtype: "f32" }))).toEqual([
      Math.fround(Math.PI),
    ]);
    expect(vals(run1("bitcast_convert", [h("u32", [1], [0xbf800000])], { dtype: "s32" }))).toEqual([0xbf800000 | 0]);
    // bf16 1.0 is 0x3f80, read as f16 that is 1.875
    expect(vals(run1("bitcast_convert", [h("bf16", [1], [1])], { dtype: "f16" }))).toEqual([1.875]);
    // f16 1.0 is 0x3c00, read as bf16 that is 2^-7; f16 -65504 is 0xfbff: bf16 exponent 0xf7, fraction 0x7f
    expect(vals(run1("bitcast_convert", [h("f16", [2], [1, -65504])], { dtype: "bf16" }))).toEqual([
      2 ** -7,
      -(2 ** 120) * 1.9921875,
    ]);
  });
});

describe("sources and shape ops", () => {
  it("constant, splat and full", () => {
    expectArray(
      run1("constant", [], { dtype: "f32", shape: [2, 2], value: [0.1] }),
      "f32",
      [2, 2],
      Array(4).fill(Math.fround(0.1)),
    );
    expectArray(run1("constant", [], { dtype: "s32", shape: [3], value: [1, -2, 3] }), "s32", [3], [1, -2, 3]);
    expectArray(run1("constant", [], { dtype: "bf16", shape: [], value: [Math.PI] }), "bf16", [], [3.140625]);
  });
  it("iota along a dim", () => {
    expectArray(run1("iota", [], { dtype: "s32", shape: [2, 3], dim: 1 }), "s32", [2, 3], [0, 1, 2, 0, 1, 2]);
    expectArray(run1("iota", [], { dtype: "f32", shape: [2, 3], dim: 0 }), "f32", [2, 3], [0, 0, 0, 1, 1, 1]);
  });
  it("broadcast_in_dim, including size-1 stretch", () => {
    const x = h("f32", [3], [1, 2, 3]);
    expectArray(run1("broadcast_in_dim", [x], { shape: [2, 3], dims: [1] }), "f32", [2, 3], [1, 2, 3, 1, 2, 3]);
    expectArray(run1("broadcast_in_dim", [x], { shape: [3, 2], dims: [0] }), "f32", [3, 2], [1, 1, 2, 2, 3, 3]);
    const y = h("f32", [2, 1], [5, 6]);
    expectArray(
      run1("broadcast_in_dim", [y], { shape: [2, 2, 3], dims: [0, 2] }),
      "f32",
      [2, 2, 3],
      [5, 5, 5, 5, 5, 5, 6, 6, 6, 6, 6, 6],
    );
    expectArray(run1("broadcast_in_dim", [h("f32", [], [7])], { shape: [2], dims: [] }), "f32", [2], [7, 7]);
  });
  it("reshape and transpose", () => {
    const x = h("f32", [2, 3], [1, 2, 3, 4, 5, 6]);
    expectArray(run1("reshape", [x], { shape: [3, 2] }), "f32", [3, 2], [1, 2, 3, 4, 5, 6]);
    expectArray(run1("transpose", [x], { perm: [1, 0] }), "f32", [3, 2], [1, 4, 2, 5, 3, 6]);
    const y = h("s32", [2, 2, 2], [0, 1, 2, 3, 4, 5, 6, 7]);
    // result dim d is operand dim perm[d], so out[i,j,k] = y[j,k,i] = 4j + 2k + i
    expectArray(run1("transpose", [y], { perm: [2, 0, 1] }), "s32", [2, 2, 2], [0, 2, 4, 6, 1, 3, 5, 7]);
  });
  it("slice with strides", () => {
    const x = h("f32", [3, 4], [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11]);
    expectArray(run1("slice", [x], { start: [0, 1], limit: [3, 4], stride: [2, 2] }), "f32", [2, 2], [1, 3, 9, 11]);
    expectArray(run1("slice", [x], { start: [1, 0], limit: [2, 4], stride: [1, 1] }), "f32", [1, 4], [4, 5, 6, 7]);
    expectArray(run1("slice", [x], { start: [1, 1], limit: [1, 3], stride: [1, 1] }), "f32", [0, 2], []);
  });
  it("concatenate along inner and outer axes", () => {
    const a = h("f32", [2, 1], [1, 2]);
    const b = h("f32", [2, 2], [3, 4, 5, 6]);
    expectArray(run1("concatenate", [a, b], { axis: 1 }), "f32", [2, 3], [1, 3, 4, 2, 5, 6]);
    expectArray(run1("concatenate", [h("s32", [1], [9]), h("s32", [2], [8, 7])], { axis: 0 }), "s32", [3], [9, 8, 7]);
  });
  it("pad with low/high/interior, including negative low and high", () => {
    const x = h("f32", [3], [1, 2, 3]);
    const z = h("f32", [], [0]);
    expectArray(run1("pad", [x, z], { low: [1], high: [2], interior: [1] }), "f32", [8], [0, 1, 0, 2, 0, 3, 0, 0]);
    expectArray(run1("pad", [x, z], { low: [-1], high: [0], interior: [1] }), "f32", [4], [0, 2, 0, 3]);
    expectArray(run1("pad", [x, z], { low: [-2], high: [-1], interior: [1] }), "f32", [2], [2, 0]);
    const y = h("s32", [2, 2], [1, 2, 3, 4]);
    const nine = h("s32", [], [9]);
    expectArray(
      run1("pad", [y, nine], { low: [0, 1], high: [1, -1], interior: [0, 0] }),
      "s32",
      [3, 2],
      [9, 1, 9, 3, 9, 9],
    );
  });
});

describe("reductions and dot_general", () => {
  const x = h("f32", [2, 3], [1, 2, 3, 4, 5, 6]);
  it("reduce over one, several, and no axes", () => {
    expectArray(run1("reduce_sum", [x], { axes: [1] }), "f32", [2], [6, 15]);
    expectArray(run1("reduce_sum", [x], { axes: [0] }), "f32", [3], [5, 7, 9]);
    expectArray(run1("reduce_sum", [x], { axes: [0, 1] }), "f32", [], [21]);
    expectArray(run1("reduce_max", [x], { axes: [0] }), "f32", [3], [4, 5, 6]);
    expectArray(run1("reduce_min", [x], { axes: [1] }), "f32", [2], [1, 4]);
    expectArray(run1("reduce_sum", [x], { axes: [] }), "f32", [2, 3], [1, 2, 3, 4, 5, 6]);
  });
  it("empty reductions give the identity; max propagates NaN; sums wrap for s32", () => {
    const e = h("f32", [2, 0], []);
    expectArray(run1("reduce_max", [e], { axes: [1] }), "f32", [2], [-Infinity, -Infinity]);
    expectArray(run1("reduce_min", [e], { axes: [1] }), "f32", [2], [Infinity, Infinity]);
    expectArray(run1("reduce_sum", [e], { axes: [1] }), "f32", [2], [0, 0]);
    expectArray(run1("reduce_max", [h("s32", [0], [])], { axes: [0] }), "s32", [], [-(2 ** 31)]);
    expectArray(run1("reduce_max", [h("f32", [3], [1, NaN, 2])], { axes: [0] }), "f32", [], [NaN]);
    expectArray(run1("reduce_sum", [h("s32", [2], [2 ** 31 - 1, 2])], { axes: [0] }), "s32", [], [-(2 ** 31) + 1]);
  });
  it("reduce_sum in bf16 rounds once at the end", () => {
    // 256 + 1 + 1 = 258 exactly; bf16 holds 258 (8 significant bits: 258 = 0b100000010).
    expectArray(run1("reduce_sum", [h("bf16", [3], [256, 1, 1])], { axes: [0] }), "bf16", [], [258]);
  });
  it("dot_general: matmul, contracting on dim 0, outDtype", () => {
    const a = h("f32", [2, 3], [1, 2, 3, 4, 5, 6]);
    const b = h("f32", [3, 2], [7, 8, 9, 10, 11, 12]);
    const mm = { lhsBatch: [], rhsBatch: [], lhsContract: [1], rhsContract: [0], outDtype: "f32" } as const;
    expectArray(run1("dot_general", [a, b], mm), "f32", [2, 2], [58, 64, 139, 154]);
    // a^T a: contract dim 0 of both -> [3,3]
    const ata = { lhsBatch: [], rhsBatch: [], lhsContract: [0], rhsContract: [0], outDtype: "f32" } as const;
    expectArray(run1("dot_general", [a, a], ata), "f32", [3, 3], [17, 22, 27, 22, 29, 36, 27, 36, 45]);
    // outer product (no contraction)
    const outer = { lhsBatch: [], rhsBatch: [], lhsContract: [], rhsContract: [], outDtype: "f32" } as const;
    expectArray(
      run1("dot_general", [h("f32", [2], [1, 2]), h("f32", [3], [1, 10, 100])], outer),
      "f32",
      [2, 3],
      [1, 10, 100, 2, 20, 200],
    );
    // bf16 operands, f32 result: 1.00390625 is not a bf16 but the f32 sum keeps it
    const bf = { lhsBatch: [], rhsBatch: [], lhsContract: [0], rhsContract: [0], outDtype: "f32" } as const;
    expectArray(
      run1("dot_general", [h("bf16", [2], [1, 2 ** -8]), h("bf16", [2], [1, 1])], bf),
      "f32",
      [],
      [1.00390625],
    );
    expectArray(
      run1("dot_general", [h("bf16", [2], [1, 2 ** -8]), h("bf16", [2], [1, 1])], { ...bf, outDtype: "bf16" }),
      "bf16",
      [],
      [1],
    );
  });
  it("dot_general with batch dims not leading", () => {
    // lhs [M=2, B=2, K=2], rhs [K=2, B=2, N=1]; out[b, m, n] = sum_k lhs[m,b,k] * rhs[k,b,n]
    const lhs = h("f32", [2, 2, 2], [1, 2, 3, 4, 5, 6, 7, 8]);
    const rhs = h("f32", [2, 2, 1], [1, 10, 100, 1000]);
    const p = { lhsBatch: [1], rhsBatch: [1], lhsContract: [2], rhsContract: [0], outDtype: "f32" } as const;
    // b=0: m=0: 1*1+2*100=201; m=1: 5*1+6*100=605. b=1: m=0: 3*10+4*1000=4030; m=1: 7*10+8*1000=8070
    expectArray(run1("dot_general", [lhs, rhs], p), "f32", [2, 2, 1], [201, 605, 4030, 8070]);
  });
  it("dot_general on s32 wraps", () => {
    const p = { lhsBatch: [], rhsBatch: [], lhsContract: [0], rhsContract: [0], outDtype: "s32" } as const;
    expectArray(run1("dot_general", [h("s32", [2], [65536, 1]), h("s32", [2], [65536, 5])], p), "s32", [], [5]);
  });
});

describe("indexing", () => {
  it("gather clamps indices", () => {
    const x = h("f32", [3, 2], [1, 2, 3, 4, 5, 6]);
    const idx = h("s32", [2, 2], [2, 0, -4, 9]);
    expectArray(run1("gather", [x, idx], P), "f32", [2, 2, 2], [5, 6, 1, 2, 1, 2, 5, 6]);
  });
  it("scatter_add accumulates repeated rows and drops out-of-range ones", () => {
    const x = h("f32", [3, 2], [0, 0, 0, 0, 1, 1]);
    const idx = h("s32", [4], [2, 0, 2, 3]);
    const upd = h("f32", [4, 2], [1, 2, 3, 4, 5, 6, 100, 100]);
    expectArray(run1("scatter_add", [x, idx, upd], P), "f32", [3, 2], [3, 4, 0, 0, 7, 9]);
  });
  it("take_along_axis on inner and outer axes, clamping", () => {
    const x = h("f32", [2, 3], [1, 2, 3, 4, 5, 6]);
    expectArray(run1("take_along_axis", [x, h("s32", [2, 2], [2, 0, 1, 7])], { axis: 1 }), "f32", [2, 2], [3, 1, 5, 6]);
    expectArray(run1("take_along_axis", [x, h("s32", [1, 3], [1, 0, -1])], { axis: 0 }), "f32", [1, 3], [4, 2, 3]);
  });
  it("dynamic_slice clamps start indices into [0, dim - size]", () => {
    const x = h("f32", [3, 4], [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11]);
    const s = (v: number) => h("s32", [], [v]);
    expectArray(run1("dynamic_slice", [x, s(1), s(1)], { sizes: [2, 2] }), "f32", [2, 2], [5, 6, 9, 10]);
    expectArray(run1("dynamic_slice", [x, s(5), s(-3)], { sizes: [2, 2] }), "f32", [2, 2], [4, 5, 8, 9]);
    expectArray(
      run1("dynamic_slice", [x, h("u32", [], [2 ** 32 - 1]), s(3)], { sizes: [1, 3] }),
      "f32",
      [1, 3],
      [9, 10, 11],
    );
  });
  it("dynamic_update_slice clamps start indices", () => {
    const x = h("f32", [2, 3], [0, 0, 0, 0, 0, 0]);
    const u = h("f32", [1, 2], [7, 8]);
    const s = (v: number) => h("s32", [], [v]);
    expectArray(run1("dynamic_update_slice", [x, u, s(1), s(0)], P), "f32", [2, 3], [0, 0, 0, 7, 8, 0]);
    expectArray(run1("dynamic_update_slice", [x, u, s(-1), s(9)], P), "f32", [2, 3], [0, 7, 8, 0, 0, 0]);
  });
});

describe("scan and optimization_barrier", () => {
  /** Cumulative sum scan: consts [scale], carry acc, xs [L,2] -> carry, ys = acc*scale after adding x. */
  function cumsum(reverse: boolean): Graph {
    const body = new GraphBuilder();
    const scale = body.input(tensorType("f32", [2]));
    const acc = body.input(tensorType("f32", [2]));
    const x = body.input(tensorType("f32", [2]));
    const acc2 = body.add1("add", [acc, x], {});
    const y = body.add1("mul", [acc2, scale], {});
    const bodyG = body.build([acc2, y]);

    const b = new GraphBuilder();
    const s = b.input(tensorType("f32", [2]));
    const init = b.input(tensorType("f32", [2]));
    const xs = b.input(tensorType("f32", [3, 2]));
    const outs = b.add("scan", [s, init, xs], { body: bodyG, length: 3, numConsts: 1, numCarry: 1, reverse });
    return b.build(outs);
  }
  const args = [h("f32", [2], [1, 10]), h("f32", [2], [0, 0]), h("f32", [3, 2], [1, 2, 3, 4, 5, 6])];
  it("forward", () => {
    const [carry, ys] = interpret(cumsum(false), args);
    expectArray(carry!, "f32", [2], [9, 12]);
    expectArray(ys!, "f32", [3, 2], [1, 20, 4, 60, 9, 120]);
  });
  it("reverse walks from the last slice, ys stay at their slice index", () => {
    const [carry, ys] = interpret(cumsum(true), args);
    expectArray(carry!, "f32", [2], [9, 12]);
    expectArray(ys!, "f32", [3, 2], [9, 120, 8, 100, 5, 60]);
  });
  it("zero-length scan returns the initial carry", () => {
    const body = new GraphBuilder();
    const c = body.input(tensorType("s32", []));
    const x = body.input(tensorType("s32", []));
    const bodyG = body.build([body.add1("add", [c, x], {}), x]);
    const b = new GraphBuilder();
    const init = b.input(tensorType("s32", []));
    const xs = b.input(tensorType("s32", [0]));
    const g = b.build(b.add("scan", [init, xs], { body: bodyG, length: 0, numConsts: 0, numCarry: 1, reverse: false }));
    const [carry, ys] = interpret(g, [h("s32", [], [4]), h("s32", [0], [])]);
    expectArray(carry!, "s32", [], [4]);
    expectArray(ys!, "s32", [0], []);
  });
  it("optimization_barrier is the identity on all operands", () => {
    const [a, b] = runOp("optimization_barrier", [h("f32", [1], [1.5]), h("s32", [2], [3, 4])], P);
    expectArray(a!, "f32", [1], [1.5]);
    expectArray(b!, "s32", [2], [3, 4]);
  });
});

describe("argument checking", () => {
  const b = new GraphBuilder();
  const x = b.input(tensorType("f32", [2, 3]), "x");
  const g = b.build([b.add1("neg", [x], {})]);
  it("names the input index and both types", () => {
    expect(() => interpret(g, [h("f32", [3, 2], [1, 2, 3, 4, 5, 6])])).toThrow(
      'interpret: input 0 "x" expects f32[2,3], got f32[3,2]',
    );
    expect(() => interpret(g, [h("bf16", [2, 3], [1, 2, 3, 4, 5, 6])])).toThrow("expects f32[2,3], got bf16[2,3]");
  });
  it("checks the argument count", () => {
    expect(() => interpret(g, [])).toThrow("graph takes 1 inputs, got 0 arguments");
  });
});
