// Execution cases for the emitter: small graphs covering every op (batched a few per module) with seeded inputs.
import { GraphBuilder, type Graph, type Value } from "../../src/ir/graph.ts";
import { hostArray, type HostArray } from "../../src/ir/interpret.ts";
import { bf16FromBits, bf16ToBits, f16FromBits, f16ToBits } from "../../src/ir/float_bits.ts";
import { numel, tensorType, type DType, type Shape } from "../../src/ir/types.ts";
import { mulberry32 as rng } from "../../src/host/random.ts";

export { rng };

export interface Tolerance {
  readonly rtol: number;
  readonly atol: number;
}

export interface ExecCase {
  readonly name: string;
  readonly graph: Graph;
  readonly args: readonly HostArray[];
  /** Float tolerance; integer and bool outputs always compare exactly. */
  readonly tol: Tolerance;
}

type Gen = (i: number) => number;

/** Collects a graph and the arguments for its inputs. */
class CaseBuilder {
  readonly b = new GraphBuilder();
  readonly args: HostArray[] = [];
  readonly outs: Value[] = [];
  readonly rand: () => number;

  constructor(seed: number) {
    this.rand = rng(seed);
  }

  input(dtype: DType, shape: Shape, gen: Gen): Value {
    const values = Array.from({ length: numel(shape) }, (_, i) => gen(i));
    this.args.push(hostArray(dtype, shape, values));
    return this.b.input(tensorType(dtype, shape));
  }
  uniform(lo: number, hi: number): Gen {
    return () => lo + (hi - lo) * this.rand();
  }
  int(lo: number, hi: number): Gen {
    return () => lo + Math.floor((hi - lo + 1) * this.rand());
  }
  /** Half-integers in [-2, 2]: many ties and zeros, for comparisons and bool conversion. */
  grid(): Gen {
    return () => (Math.floor(this.rand() * 9) - 4) / 2;
  }
  out(...vs: Value[]): void {
    this.outs.push(...vs);
  }
  done(name: string, tol: Tolerance): ExecCase {
    return { name, graph: this.b.build(this.outs), args: this.args, tol };
  }
}

const SPECIALS = [NaN, Infinity, -Infinity, 0, -0, 1, -1, 2.5, -2.5, 1e-3, 3, -3];

export type FloatDType = "f32" | "bf16";

export function floatTolerance(dt: FloatDType): Tolerance {
  // bf16: XLA computes in f32 and may keep f32 between fused ops (excess precision); allow ~2 bf16 ulps.
  return dt === "f32" ? { rtol: 2e-6, atol: 1e-6 } : { rtol: 1.6e-2, atol: 1e-2 };
}

function unaryCase(dt: FloatDType): ExecCase {
  const c = new CaseBuilder(1);
  const x = c.input(dt, [3, 8], c.uniform(-4, 4));
  const p = c.input(dt, [3, 8], c.uniform(0.05, 6));
  for (const n of ["neg", "abs", "exp", "tanh", "logistic", "sin", "cos", "erf"] as const) c.out(c.b.add1(n, [x], {}));
  for (const n of ["expm1", "floor", "ceil", "round", "sign"] as const) c.out(c.b.add1(n, [x], {}));
  c.out(c.b.add1("log1p", [p], {}));
  for (const n of ["log", "sqrt", "rsqrt"] as const) c.out(c.b.add1(n, [p], {}));
  const s = c.input(dt, [SPECIALS.length], (i) => SPECIALS[i]!);
  for (const n of ["neg", "abs", "exp", "tanh", "logistic", "sqrt", "erf"] as const) c.out(c.b.add1(n, [s], {}));
  // The specials hold the ties 2.5 and -2.5 (to even: 2, -2), +-0, +-inf and NaN.
  for (const n of ["log1p", "expm1", "floor", "ceil", "round", "sign"] as const) c.out(c.b.add1(n, [s], {}));
  return c.done(`unary ${dt}`, dt === "f32" ? { rtol: 1e-5, atol: 1e-6 } : floatTolerance(dt));
}

function binaryCase(dt: FloatDType): ExecCase {
  const c = new CaseBuilder(2);
  const { b } = c;
  const x = c.input(dt, [4, 6], c.uniform(-3, 3));
  const y = c.input(dt, [4, 6], c.uniform(-3, 3));
  const nz = c.input(dt, [4, 6], () => (c.rand() < 0.5 ? -1 : 1) * (0.5 + 2.5 * c.rand()));
  const p = c.input(dt, [4, 6], c.uniform(0.1, 3));
  for (const n of ["add", "sub", "mul", "max", "min"] as const) c.out(b.add1(n, [x, y], {}));
  c.out(b.add1("div", [x, nz], {}), b.add1("pow", [p, x], {}));
  // NaN / inf / signed zero through max, min and compare.
  const s = c.input(dt, [SPECIALS.length], (i) => SPECIALS[i]!);
  const t = c.input(dt, [SPECIALS.length], (i) => SPECIALS[(i + 3) % SPECIALS.length]!);
  c.out(b.add1("max", [s, t], {}), b.add1("min", [s, t], {}));
  const g1 = c.input(dt, [5, 5], c.grid());
  const g2 = c.input(dt, [5, 5], c.grid());
  for (const dir of ["eq", "ne", "lt", "le", "gt", "ge"] as const) {
    c.out(b.add1("compare", [g1, g2], { dir }), b.add1("compare", [s, t], { dir }));
  }
  const pred = b.add1("compare", [x, y], { dir: "lt" });
  c.out(b.add1("select", [pred, x, y], {}));
  return c.done(`binary ${dt}`, dt === "f32" ? { rtol: 1e-5, atol: 1e-6 } : floatTolerance(dt));
}

function convertCase(dt: FloatDType): ExecCase {
  const c = new CaseBuilder(3);
  const { b } = c;
  const x = c.input(dt, [4, 6], c.uniform(-100, 100));
  const g = c.input(dt, [5, 5], c.grid());
  const p = c.input(dt, [4, 6], c.uniform(0, 1000));
  const other: DType = dt === "f32" ? "bf16" : "f32";
  c.out(
    b.add1("convert", [x], { dtype: "s32" }), // truncates toward zero
    b.add1("convert", [p], { dtype: "u32" }),
    b.add1("convert", [g], { dtype: "bool" }), // x != 0
    b.add1("convert", [x], { dtype: other }),
    b.add1("convert", [x], { dtype: "f16" }),
  );
  const i = c.input("s32", [6], c.int(-300, 300));
  const u = c.input("u32", [6], c.int(0, 2 ** 32 - 1));
  const q = c.input("bool", [6], c.int(0, 1));
  c.out(
    b.add1("convert", [i], { dtype: dt }),
    b.add1("convert", [u], { dtype: dt }),
    b.add1("convert", [q], { dtype: dt }),
  );
  c.out(b.add1("bitcast_convert", [x], { dtype: dt === "f32" ? "s32" : "f16" }));
  c.out(
    b.add1("bitcast_convert", [b.add1("bitcast_convert", [x], { dtype: dt === "f32" ? "u32" : "f16" })], { dtype: dt }),
  );
  return c.done(`convert ${dt}`, floatTolerance(dt));
}

function intCase(dt: "s32" | "u32"): ExecCase {
  const c = new CaseBuilder(dt === "s32" ? 4 : 5);
  const { b } = c;
  const [lo, hi] = dt === "s32" ? [-(2 ** 31), 2 ** 31 - 1] : [0, 2 ** 32 - 1];
  const x = c.input(dt, [4, 5], c.int(lo, hi)); // full range: add/mul wrap
  const y = c.input(dt, [4, 5], c.int(lo, hi));
  const small = c.input(dt, [4, 5], c.int(dt === "s32" ? -1000 : 0, 1000));
  const nz = c.input(dt, [4, 5], () => (dt === "s32" && c.rand() < 0.5 ? -1 : 1) * (1 + Math.floor(c.rand() * 40)));
  const sh = c.input(dt, [4, 5], c.int(0, 40)); // shifts of 32 and more give 0
  for (const n of ["add", "sub", "mul", "max", "min", "and", "or", "xor"] as const) c.out(b.add1(n, [x, y], {}));
  c.out(b.add1("div", [small, nz], {}), b.add1("shift_left", [x, sh], {}), b.add1("shift_right_logical", [x, sh], {}));
  c.out(b.add1("neg", [x], {}), b.add1("abs", [small], {}), b.add1("not", [x], {}));
  for (const dir of ["eq", "ne", "lt", "le", "gt", "ge"] as const) c.out(b.add1("compare", [x, y], { dir }));
  c.out(b.add1("convert", [x], { dtype: dt === "s32" ? "u32" : "s32" }), b.add1("convert", [small], { dtype: "bool" }));
  c.out(b.add1("bitcast_convert", [x], { dtype: "f32" }));
  c.out(b.add1("iota", [], { dtype: dt, shape: [3, 4], dim: 1 }));
  c.out(
    b.add1("reduce_sum", [x], { axes: [1] }),
    b.add1("reduce_max", [x], { axes: [0] }),
    b.add1("reduce_min", [x], { axes: [0, 1] }),
  );
  c.out(
    b.add1("dot_general", [small, small], {
      lhsBatch: [],
      rhsBatch: [],
      lhsContract: [1],
      rhsContract: [1],
      outDtype: dt,
    }),
  );
  c.out(b.add1("constant", [], { dtype: dt, shape: [3], value: [lo, hi, 7] }));
  return c.done(`integer ${dt}`, { rtol: 0, atol: 0 });
}

function boolCase(): ExecCase {
  const c = new CaseBuilder(6);
  const { b } = c;
  const p = c.input("bool", [8], c.int(0, 1));
  const q = c.input("bool", [8], c.int(0, 1));
  for (const n of ["and", "or", "xor"] as const) c.out(b.add1(n, [p, q], {}));
  c.out(b.add1("not", [p], {}));
  for (const dir of ["eq", "lt", "ge"] as const) c.out(b.add1("compare", [p, q], { dir }));
  c.out(
    b.add1("select", [p, q, b.add1("not", [q], {})], {}),
    b.add1("convert", [p], { dtype: "s32" }),
    b.add1("convert", [p], { dtype: "bool" }),
  );
  c.out(b.add1("constant", [], { dtype: "bool", shape: [2, 2], value: [1, 0, 0, 1] }));
  return c.done("bool", { rtol: 0, atol: 0 });
}

function shapeCase(dt: FloatDType): ExecCase {
  const c = new CaseBuilder(7);
  const { b } = c;
  const x = c.input(dt, [2, 3, 4], c.uniform(-3, 3));
  const r = c.input(dt, [3, 1], c.uniform(-3, 3));
  const v = c.input(dt, [], () => 9);
  c.out(
    b.add1("constant", [], { dtype: dt, shape: [2, 3], value: [0.1, -2, 1e-3, NaN, Infinity, -0] }),
    b.add1("constant", [], { dtype: dt, shape: [4], value: [1 / 3] }),
    b.add1("iota", [], { dtype: dt, shape: [2, 5], dim: 0 }),
    b.add1("broadcast_in_dim", [r], { shape: [2, 3, 5], dims: [1, 2] }), // size-1 dim stretches
    b.add1("reshape", [x], { shape: [4, 6] }),
    b.add1("transpose", [x], { perm: [2, 0, 1] }),
    b.add1("slice", [x], { start: [0, 1, 0], limit: [2, 3, 4], stride: [1, 1, 3] }),
    b.add1("slice", [x], { start: [1, 0, 1], limit: [2, 3, 4], stride: [1, 2, 2] }),
    b.add1("concatenate", [x, x, b.add1("slice", [x], { start: [0, 0, 0], limit: [2, 1, 4], stride: [1, 1, 1] })], {
      axis: 1,
    }),
    b.add1("pad", [x, v], { low: [0, 1, -1], high: [1, -1, 2], interior: [0, 1, 1] }),
  );
  return c.done(`shape ${dt}`, { rtol: 0, atol: 0 });
}

function reduceCase(dt: FloatDType): ExecCase {
  const c = new CaseBuilder(8);
  const { b } = c;
  const x = c.input(dt, [3, 4, 5], c.uniform(-3, 3));
  const e = c.input(dt, [0, 3], () => 0);
  const s = c.input(dt, [2, 6], (i) => SPECIALS[i]!);
  for (const n of ["reduce_sum", "reduce_max", "reduce_min"] as const) {
    c.out(
      b.add1(n, [x], { axes: [1] }),
      b.add1(n, [x], { axes: [0, 2] }),
      b.add1(n, [x], { axes: [0, 1, 2] }),
      b.add1(n, [e], { axes: [0] }),
    );
  }
  c.out(
    b.add1("reduce_max", [s], { axes: [1] }),
    b.add1("reduce_min", [s], { axes: [1] }),
    b.add1("reduce_sum", [x], { axes: [] }),
  );
  return c.done(`reduce ${dt}`, dt === "f32" ? { rtol: 1e-5, atol: 1e-5 } : { rtol: 3e-2, atol: 0.1 });
}

function dotCase(dt: FloatDType): ExecCase {
  const c = new CaseBuilder(9);
  const { b } = c;
  const a = c.input(dt, [4, 8], c.uniform(-2, 2));
  const w = c.input(dt, [8, 5], c.uniform(-2, 2));
  const q = c.input(dt, [2, 4, 8], c.uniform(-2, 2));
  const k = c.input(dt, [2, 3, 8], c.uniform(-2, 2));
  const dg = (l: Value, r: Value, lb: number[], rb: number[], lc: number[], rc: number[], outDtype: DType = dt) =>
    b.add1("dot_general", [l, r], { lhsBatch: lb, rhsBatch: rb, lhsContract: lc, rhsContract: rc, outDtype });
  c.out(
    dg(a, w, [], [], [1], [0]),
    dg(a, w, [], [], [1], [0], "f32"),
    dg(q, k, [0], [0], [2], [2]), // attention scores: [2,4,3]
    dg(k, q, [0], [0], [2], [2], "f32"),
    dg(w, a, [], [], [0], [1]), // contracting a non-last dim: [5,4]
    dg(a, b.add1("slice", [w], { start: [0, 0], limit: [1, 5], stride: [1, 1] }), [], [], [], []), // outer product
  );
  return c.done(`dot_general ${dt}`, dt === "f32" ? { rtol: 1e-5, atol: 1e-5 } : { rtol: 3e-2, atol: 0.15 });
}

function indexCase(dt: FloatDType): ExecCase {
  const c = new CaseBuilder(10);
  const { b } = c;
  const table = c.input(dt, [6, 4], c.uniform(-3, 3));
  const ids = c.input("s32", [3, 5], (i) => [0, 5, 2, -1, 6, 9, 3, 3, 1, 4, 0, 2, 2, 7, -5][i]!); // some out of range
  const uids = c.input("u32", [4], (i) => [5, 0, 3, 100][i]!);
  const upd = c.input(dt, [3, 5, 4], c.uniform(-3, 3));
  c.out(b.add1("gather", [table, ids], {}), b.add1("gather", [table, uids], {}));
  c.out(b.add1("scatter_add", [table, ids, upd], {})); // repeated rows add up; out-of-range rows drop
  const vec = c.input(dt, [6], c.uniform(-3, 3));
  c.out(b.add1("gather", [vec, ids], {}), b.add1("scatter_add", [vec, ids, b.add1("gather", [vec, ids], {})], {}));
  const logits = c.input(dt, [2, 3, 7], c.uniform(-3, 3));
  const lab = c.input("s32", [2, 3, 1], (i) => [0, 6, 3, 8, -2, 5][i]!);
  const lab2 = c.input("s32", [2, 2, 7], c.int(-1, 3));
  c.out(b.add1("take_along_axis", [logits, lab], { axis: 2 }), b.add1("take_along_axis", [logits, lab2], { axis: 1 }));
  const m = c.input(dt, [5, 6], c.uniform(-3, 3));
  const u = c.input(dt, [2, 3], c.uniform(-3, 3));
  const s = (v: number) => b.add1("constant", [], { dtype: "s32", shape: [], value: [v] });
  const us = (v: number) => b.add1("constant", [], { dtype: "u32", shape: [], value: [v] });
  c.out(
    b.add1("dynamic_slice", [m, s(1), s(2)], { sizes: [2, 3] }),
    b.add1("dynamic_slice", [m, s(-3), s(10)], { sizes: [2, 3] }), // clamped to [0, 3]
    b.add1("dynamic_slice", [m, us(4), s(1)], { sizes: [2, 3] }), // mixed index types; clamped to 3
    b.add1("dynamic_update_slice", [m, u, s(2), s(1)], {}),
    b.add1("dynamic_update_slice", [m, u, s(7), s(-1)], {}), // clamped to [3, 0]
    b.add1("dynamic_update_slice", [m, u, us(2 ** 32 - 1), us(2)], {}),
  );
  return c.done(`indexing ${dt}`, floatTolerance(dt));
}

function controlCase(dt: FloatDType): ExecCase {
  const c = new CaseBuilder(11);
  const { b } = c;
  // Inner body: (w, h, x) -> (tanh(h * w + x), h * w).
  const ib = new GraphBuilder();
  const w = ib.input(tensorType(dt, [3]));
  const h = ib.input(tensorType(dt, [3]));
  const x = ib.input(tensorType(dt, [3]));
  const hw = ib.add1("mul", [h, w], {});
  const inner = ib.build([ib.add1("tanh", [ib.add1("add", [hw, x], {})], {}), hw]);
  // Outer body: (w, step, h, xs_t) -> (h', step, ys of the inner scan reversed): a scan within a scan.
  const ob = new GraphBuilder();
  const ow = ob.input(tensorType(dt, [3]));
  const oc = ob.input(tensorType("s32", []));
  const oh = ob.input(tensorType(dt, [3]));
  const oxs = ob.input(tensorType(dt, [2, 3]));
  const [h2, ys] = ob.add("scan", [ow, oh, oxs], {
    body: inner,
    length: 2,
    numConsts: 1,
    numCarry: 1,
    reverse: true,
  }) as [Value, Value];
  const one = ob.add1("constant", [], { dtype: "s32", shape: [], value: [1] });
  const outer = ob.build([ob.add1("add", [oc, one], {}), h2!, ys!]);
  const W = c.input(dt, [3], c.uniform(-1, 1));
  const H = c.input(dt, [3], c.uniform(-1, 1));
  const XS = c.input(dt, [4, 3], c.uniform(-1, 1));
  const XSS = c.input(dt, [5, 2, 3], c.uniform(-1, 1));
  const zero = b.add1("constant", [], { dtype: "s32", shape: [], value: [0] });
  c.out(...b.add("scan", [W, H, XS], { body: inner, length: 4, numConsts: 1, numCarry: 1, reverse: false }));
  c.out(...b.add("scan", [W, H, XS], { body: inner, length: 4, numConsts: 1, numCarry: 1, reverse: true }));
  c.out(...b.add("scan", [W, zero, H, XSS], { body: outer, length: 5, numConsts: 1, numCarry: 2, reverse: false }));
  c.out(
    ...b.add("scan", [W, H, b.add1("slice", [XS], { start: [0, 0], limit: [0, 3], stride: [1, 1] })], {
      body: inner,
      length: 0,
      numConsts: 1,
      numCarry: 1,
      reverse: false,
    }),
  );
  c.out(...b.add("optimization_barrier", [W, zero], {}));
  // A checkpoint left in the graph (no inline pass) is its body, inlined; a named value is its operand.
  const cb = new GraphBuilder();
  const [cw, ch] = [cb.input(tensorType(dt, [3])), cb.input(tensorType(dt, [3]))];
  const named = cb.add1("checkpoint_name", [cb.add1("mul", [cw, ch], {})], { name: "h" });
  const ckpt = cb.build([cb.add1("tanh", [named], {}), ch]);
  c.out(...b.add("checkpoint", [W, H], { body: ckpt, policy: "saveOnlyTheseNames", names: ["h"] }));
  c.out(b.add1("checkpoint_name", [W], { name: "w" }));
  return c.done(`scan ${dt}`, dt === "f32" ? { rtol: 1e-5, atol: 1e-5 } : { rtol: 5e-2, atol: 5e-2 });
}

/** Degenerate shapes: rank-0 operands, one-operand concatenate, empty results, scans with only carries or only xs. */
function edgeCase(): ExecCase {
  const c = new CaseBuilder(12);
  const { b } = c;
  const s = c.input("f32", [], () => 0.75);
  const v = c.input("f32", [5], c.uniform(-2, 2));
  const i = c.input("s32", [3], (k) => [4, -1, 9][k]!);
  c.out(
    b.add1("dynamic_slice", [s], { sizes: [] }),
    b.add1("dynamic_update_slice", [s, b.add1("neg", [s], {})], {}),
    b.add1("slice", [s], { start: [], limit: [], stride: [] }),
    b.add1("transpose", [s], { perm: [] }),
    b.add1("reduce_sum", [s], { axes: [] }),
    b.add1("reshape", [s], { shape: [1, 1] }),
    b.add1("broadcast_in_dim", [s], { shape: [2], dims: [] }),
    b.add1("pad", [s, s], { low: [], high: [], interior: [] }),
    b.add1("concatenate", [v], { axis: 0 }),
    b.add1("take_along_axis", [v, i], { axis: 0 }),
    b.add1("gather", [v, b.add1("reshape", [i], { shape: [3, 1, 1] })], {}),
    b.add1("iota", [], { dtype: "f32", shape: [0, 2], dim: 1 }),
    b.add1("reduce_max", [b.add1("iota", [], { dtype: "f32", shape: [0, 2], dim: 1 })], { axes: [0] }), // -inf
  );
  const carryOnly = new GraphBuilder();
  const h = carryOnly.input(tensorType("f32", []));
  c.out(
    ...b.add("scan", [s], {
      body: carryOnly.build([carryOnly.add1("cos", [h], {})]),
      length: 3,
      numConsts: 0,
      numCarry: 1,
      reverse: false,
    }),
  );
  const xsOnly = new GraphBuilder();
  const x = xsOnly.input(tensorType("f32", []));
  c.out(
    ...b.add("scan", [v], {
      body: xsOnly.build([xsOnly.add1("exp", [x], {})]),
      length: 5,
      numConsts: 0,
      numCarry: 0,
      reverse: true,
    }),
  );
  return c.done("degenerate shapes", { rtol: 1e-5, atol: 1e-6 });
}

/** Every op at least once, in f32 and bf16 where the op takes floats: a dozen or so modules in all. */
export function opCases(): ExecCase[] {
  const cases: ExecCase[] = [intCase("s32"), intCase("u32"), boolCase(), edgeCase()];
  for (const dt of ["f32", "bf16"] as const) {
    cases.push(
      unaryCase(dt),
      binaryCase(dt),
      convertCase(dt),
      shapeCase(dt),
      reduceCase(dt),
      dotCase(dt),
      indexCase(dt),
      controlCase(dt),
    );
  }
  return cases;
}

/** Host array as the typed array a PJRT buffer of its dtype holds (bf16/f16 as raw Uint16 bits). */
export function toTyped(a: HostArray): Float32Array | Uint16Array | Int32Array | Uint32Array | Uint8Array {
  const d = a.data;
  switch (a.type.dtype) {
    case "f32":
      return Float32Array.from(d);
    case "bf16":
      return Uint16Array.from(d, bf16ToBits);
    case "f16":
      return Uint16Array.from(d, f16ToBits);
    case "s32":
      return Int32Array.from(d);
    case "u32":
      return Uint32Array.from(d);
    case "bool":
      return Uint8Array.from(d);
  }
}

/** The inverse of toTyped. */
export function fromTyped(dtype: DType, shape: Shape, t: ArrayLike<number>): HostArray {
  const conv = dtype === "bf16" ? bf16FromBits : dtype === "f16" ? f16FromBits : (x: number) => x;
  return { type: tensorType(dtype, shape), data: Float64Array.from(t, conv) };
}

/** First mismatch between an executed and an interpreted array, or undefined when they agree. */
export function mismatch(got: HostArray, want: HostArray, tol: Tolerance): string | undefined {
  if (got.type.dtype !== want.type.dtype || got.type.shape.join() !== want.type.shape.join()) {
    return `type ${got.type.dtype}[${got.type.shape}] vs ${want.type.dtype}[${want.type.shape}]`;
  }
  const exact = want.type.dtype === "s32" || want.type.dtype === "u32" || want.type.dtype === "bool";
  for (let i = 0; i < want.data.length; i++) {
    const g = got.data[i]!;
    const w = want.data[i]!;
    if (Number.isNaN(w) || Number.isNaN(g)) {
      if (Number.isNaN(w) && Number.isNaN(g)) continue;
    } else if (exact || !Number.isFinite(w) || !Number.isFinite(g)) {
      if (g === w) continue;
    } else if (Math.abs(g - w) <= tol.atol + tol.rtol * Math.abs(w)) {
      continue;
    }
    return `element ${i}: got ${g}, want ${w}`;
  }
  return undefined;
}
