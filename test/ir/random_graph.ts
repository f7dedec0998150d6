// Seeded random IR graphs over (nearly) every op, and random inputs for them: fuel for property tests.
//
// Graphs are valid by construction (built through GraphBuilder) and keep values small and finite: operands of
// growing ops pass through tanh when their rough magnitude bound gets large, log/sqrt/rsqrt/div/pow see inputs
// >= 1, dims are 1..4 and tensors at most MAX_NUMEL elements, so every op's result stays exact enough in bf16/f16
// for comparisons. Integer side paths (convert, bit ops, bitcast) are masked back to 0..255 before returning to
// floats. Index operands come from s32/u32 graph inputs, iota, or constants that are sometimes out of range (to
// exercise clamping).
import { GraphBuilder, type Graph, type Value } from "../../src/ir/graph.ts";
import { hostArray, type HostArray } from "../../src/ir/interpret.ts";
import type { BinaryOp, CompareDir, OpName, OpParams, UnaryOp } from "../../src/ir/ops.ts";
import {
  isFloat,
  numel,
  sameShape,
  sameType,
  tensorType,
  type DType,
  type Shape,
  type SourceLoc,
  type TensorType,
} from "../../src/ir/types.ts";
import { mulberry32 } from "../../src/host/random.ts";

/** The seeded generator the random graphs draw from (re-exported for tests). */
export const rng = mulberry32;

export interface RandomGraphOptions {
  /** How many generation steps (each adds one to a few ops); default 12. */
  readonly steps?: number;
  /** Float dtypes to draw the graph's main dtype and converts from; default f32, bf16, f16 (f32 most often). */
  readonly dtypes?: readonly DType[];
  /** Allow scan ops (default true). */
  readonly scan?: boolean;
  /** Attach source locations to some ops (default true). */
  readonly locs?: boolean;
  /** Largest rank of generated tensors (default 3). */
  readonly maxRank?: number;
}

const MAX_NUMEL = 256;
/** Operands above this rough magnitude go through tanh before multiplying, exponentiating or summing. */
const TAME = 8;

type FloatUnaryOp = Exclude<UnaryOp, "not">;

/**
 * How each float unary op is drawn: its operand kept in its domain, and a bound on its result's magnitude. Keyed by
 * the op type, so a new unary op fails to compile here until the random graphs cover it.
 */
const UNARY_RECIPES: { readonly [N in FloatUnaryOp]: (g: Gen, x: Value, b: number) => Value | undefined } = {
  neg: (g, x, b) => g.op("neg", [x], {}, b),
  abs: (g, x, b) => g.op("abs", [x], {}, b),
  sin: (g, x) => g.op("sin", [x], {}, 1),
  cos: (g, x) => g.op("cos", [x], {}, 1),
  tanh: (g, x) => g.op("tanh", [x], {}, 1),
  logistic: (g, x) => g.op("logistic", [x], {}, 1),
  exp: (g, x) => {
    const t = g.tame(x);
    return g.op("exp", [t], {}, Math.exp(Math.min(g.bnd(t), TAME)));
  },
  log: (g, x, b) => g.op("log", [g.atLeastOne(x)], {}, Math.log(b + 1) + 1),
  sqrt: (g, x, b) => g.op("sqrt", [g.atLeastOne(x)], {}, Math.sqrt(b + 1)),
  rsqrt: (g, x) => g.op("rsqrt", [g.atLeastOne(x)], {}, 1),
  erf: (g, x) => g.op("erf", [x], {}, 1),
  log1p: (g, x, b) => g.op("log1p", [g.atLeastOne(x)], {}, Math.log(b + 2) + 1),
  expm1: (g, x) => {
    const t = g.tame(x);
    return g.op("expm1", [t], {}, Math.exp(Math.min(g.bnd(t), TAME)));
  },
  floor: (g, x, b) => g.op("floor", [x], {}, b + 1),
  ceil: (g, x, b) => g.op("ceil", [x], {}, b + 1),
  round: (g, x, b) => g.op("round", [x], {}, b + 1),
  sign: (g, x) => g.op("sign", [x], {}, 1),
};
const FLOAT_UNARY = Object.keys(UNARY_RECIPES) as FloatUnaryOp[];

class Gen {
  readonly b = new GraphBuilder();
  /** Float values available as operands, with a rough bound on their magnitude. */
  readonly pool: Value[] = [];
  readonly bound = new Map<Value, number>();
  private readonly r: () => number;
  private line = 1;

  private inputCount = 0;

  /** `nested`: building a scan body, whose inputs are fixed, so index operands come from iota and constants. */
  constructor(
    seed: number,
    readonly opts: Required<RandomGraphOptions>,
    readonly nested = false,
  ) {
    this.r = rng(seed);
  }

  // --- random helpers -------------------------------------------------------------------------------------------
  int(lo: number, hi: number): number {
    return lo + Math.floor(this.r() * (hi - lo + 1));
  }
  chance(p: number): boolean {
    return this.r() < p;
  }
  pick<T>(xs: readonly T[]): T {
    return xs[Math.floor(this.r() * xs.length)]!;
  }
  shuffle<T>(xs: readonly T[]): T[] {
    const a = [...xs];
    for (let i = a.length - 1; i > 0; i--) {
      const j = this.int(0, i);
      [a[i], a[j]] = [a[j]!, a[i]!];
    }
    return a;
  }
  shape(rank: number): number[] {
    return Array.from({ length: rank }, () => this.int(1, 4));
  }
  floatDtype(): DType {
    const ds = this.opts.dtypes;
    return ds.includes("f32") && this.chance(0.6) ? "f32" : this.pick(ds);
  }

  // --- building ---------------------------------------------------------------------------------------------------
  private loc(): SourceLoc | undefined {
    this.line++;
    return this.opts.locs && this.chance(0.3)
      ? { file: "random.ts", line: this.line, col: this.int(1, 40) }
      : undefined;
  }

  add<N extends OpName>(name: N, inputs: readonly Value[], params: OpParams[N]): Value[] {
    return this.b.add(name, inputs, params, this.loc());
  }

  /** Adds a one-result op; float results join the pool with magnitude bound `bound`. */
  op<N extends OpName>(name: N, inputs: readonly Value[], params: OpParams[N], bound: number): Value {
    const v = this.add(name, inputs, params)[0]!;
    if (isFloat(v.type.dtype)) {
      this.pool.push(v);
      this.bound.set(v, bound);
    }
    return v;
  }

  input(type: TensorType, bound: number): Value {
    const v = this.b.input(type, !this.nested && this.chance(0.3) ? `in${this.inputCount++}` : undefined);
    if (isFloat(type.dtype)) {
      this.pool.push(v);
      this.bound.set(v, bound);
    }
    return v;
  }

  bnd(v: Value): number {
    return this.bound.get(v) ?? 1;
  }

  /** `v`, or tanh(v) when its magnitude bound is large. */
  tame(v: Value): Value {
    return this.bnd(v) > TAME ? this.op("tanh", [v], {}, 1) : v;
  }

  scalar(dtype: DType, value: number): Value {
    return this.add("constant", [], { dtype, shape: [], value: [value] })[0]!;
  }

  /** A constant of type `t` holding `value` everywhere: a splat constant or a broadcast scalar. */
  splat(t: TensorType, value: number): Value {
    if (this.chance(0.5)) return this.add("constant", [], { dtype: t.dtype, shape: t.shape, value: [value] })[0]!;
    return this.add("broadcast_in_dim", [this.scalar(t.dtype, value)], { shape: t.shape, dims: [] })[0]!;
  }

  /** abs(v) + 1: a value >= 1 of v's type, safe for log, sqrt, rsqrt, division and pow bases. */
  atLeastOne(v: Value): Value {
    const a = this.op("abs", [v], {}, this.bnd(v));
    return this.op("add", [a, this.splat(v.type, 1)], {}, this.bnd(v) + 1);
  }

  /** A float value of exactly type `t`: from the pool, or made from `like` (which has type t) or constants. */
  partner(like: Value): Value {
    const same = this.pool.filter(
      (v) => v !== like && v.type.dtype === like.type.dtype && sameShape(v.type.shape, like.type.shape),
    );
    if (same.length && this.chance(0.7)) return this.pick(same);
    switch (this.int(0, 3)) {
      case 0:
        return this.op("sin", [like], {}, 1);
      case 1: {
        // Full-precision float64 values half the time, so that the text form must print numbers exactly.
        const full = this.chance(0.5);
        const vals = Array.from({ length: numel(like.type.shape) }, () =>
          full ? this.r() * 4 - 2 : this.int(-8, 8) / 4,
        );
        return this.op("constant", [], { dtype: like.type.dtype, shape: like.type.shape, value: vals }, 2);
      }
      case 2: {
        if (like.type.shape.length === 0) return this.op("cos", [like], {}, 1);
        const dim = this.int(0, like.type.shape.length - 1);
        const io = this.add("iota", [], { dtype: like.type.dtype, shape: like.type.shape, dim })[0]!;
        return this.op("mul", [io, this.splat(like.type, 0.5)], {}, 2);
      }
      default:
        return this.op("neg", [like], {}, this.bnd(like));
    }
  }

  /** An s32/u32 value of `shape` for indexing: a graph input, an iota, or constants in [-1, 5]. */
  indices(shape: Shape): Value {
    const dtype: DType = this.chance(0.8) ? "s32" : "u32";
    const k = this.int(this.nested ? 1 : 0, 2);
    if (k === 0) return this.input(tensorType(dtype, shape), 0);
    if (k === 1 && shape.length > 0)
      return this.add("iota", [], { dtype, shape, dim: this.int(0, shape.length - 1) })[0]!;
    const lo = dtype === "s32" ? -1 : 0;
    return this.add("constant", [], {
      dtype,
      shape,
      value: Array.from({ length: numel(shape) }, () => this.int(lo, 5)),
    })[0]!;
  }

  /** A float operand from the pool, preferring recent values so that chains grow deep. */
  operand(pred: (v: Value) => boolean = () => true): Value | undefined {
    const ok = this.pool.filter(pred);
    if (!ok.length) return undefined;
    const recent = ok.slice(-4);
    return this.chance(0.6) ? this.pick(recent) : this.pick(ok);
  }

  // --- recipes: each adds a few ops, or returns false when it does not apply to what the pool holds ---------------
  readonly recipes: [number, () => boolean][] = [
    [3, () => this.unaryRecipe()],
    [4, () => this.binaryRecipe()],
    [1, () => this.compareSelect()],
    [1, () => this.convertFloat()],
    [1, () => this.intPath()],
    [0.5, () => this.bitcastPath()],
    [1, () => this.broadcast()],
    [1, () => this.reshape()],
    [1, () => this.transpose()],
    [1, () => this.slice()],
    [1, () => this.concatenate()],
    [1, () => this.pad()],
    [1.5, () => this.reduce()],
    [1.5, () => this.dot()],
    [1, () => this.gatherScatter()],
    [1, () => this.takeAlongAxis()],
    [1, () => this.dynamicSlices()],
    [0.5, () => this.barrier()],
    [0.5, () => this.sort()],
    [0.7, () => this.scan()],
    [0.4, () => this.stopGradient()],
    [0.7, () => this.cond()],
    [0.4, () => this.whileLoop()],
    [0.5, () => this.customVjp()],
    [0.5, () => this.checkpoint()],
  ];

  step(): void {
    const total = this.recipes.reduce((s, [w]) => s + w, 0);
    for (let attempt = 0; attempt < 20; attempt++) {
      let x = this.r() * total;
      let recipe = this.recipes[0]!;
      for (const candidate of this.recipes) {
        x -= candidate[0];
        if (x < 0) {
          recipe = candidate;
          break;
        }
      }
      if (recipe[1]()) return;
    }
  }

  unaryRecipe(): boolean {
    const x = this.operand();
    if (!x) return false;
    const name = this.pick(FLOAT_UNARY);
    return !!UNARY_RECIPES[name](this, x, this.bnd(x));
  }

  binaryRecipe(): boolean {
    const x0 = this.operand();
    if (!x0) return false;
    const op = this.pick(["add", "sub", "mul", "div", "max", "min", "pow"] as const);
    const x = op === "mul" || op === "pow" ? this.tame(x0) : x0;
    let y = this.partner(x);
    if (op === "mul") y = this.tame(y);
    const bx = this.bnd(x);
    const by = this.bnd(y);
    switch (op) {
      case "add":
      case "sub":
        return !!this.op(op, [x, y], {}, bx + by);
      case "max":
      case "min":
        return !!this.op(op, [x, y], {}, Math.max(bx, by));
      case "mul":
        return !!this.op("mul", [x, y], {}, bx * by);
      case "div":
        return !!this.op("div", [x, this.atLeastOne(y)], {}, bx);
      case "pow": {
        const e = this.op("tanh", [y], {}, 1);
        return !!this.op("pow", [this.atLeastOne(x), e], {}, bx + 1);
      }
    }
  }

  compareSelect(): boolean {
    const x = this.operand();
    if (!x) return false;
    const y = this.partner(x);
    const dir = this.pick<CompareDir>(["eq", "ne", "lt", "le", "gt", "ge"]);
    const p = this.add("compare", [x, y], { dir })[0]!;
    const q = this.chance(0.3) ? this.add("not", [p], {})[0]! : p;
    this.op("select", [q, x, y], {}, Math.max(this.bnd(x), this.bnd(y)));
    return true;
  }

  convertFloat(): boolean {
    const x = this.operand();
    if (!x) return false;
    const to = this.pick(this.opts.dtypes.filter((d) => d !== x.type.dtype));
    if (!to) return false;
    this.op("convert", [this.tame(x)], { dtype: to }, Math.min(this.bnd(x), TAME));
    return true;
  }

  /** float -> s32/u32, integer arithmetic and bit ops, masked to 0..255, back to float. */
  intPath(): boolean {
    const x = this.operand();
    if (!x) return false;
    const idt: DType = this.chance(0.5) ? "s32" : "u32";
    const scaled = this.op("mul", [this.tame(x), this.splat(x.type, 4)], {}, 4 * TAME);
    let v = this.add("convert", [scaled], { dtype: idt })[0]!;
    const other = () => {
      const k = this.int(0, 2);
      if (k === 0) return this.add("convert", [this.partner(x)], { dtype: idt })[0]!;
      if (k === 1 || v.type.shape.length === 0) return this.splat(v.type, this.int(0, 40));
      return this.add("iota", [], { dtype: idt, shape: v.type.shape, dim: this.int(0, v.type.shape.length - 1) })[0]!;
    };
    for (let i = this.int(1, 3); i > 0; i--) {
      const op = this.pick<BinaryOp | "not" | "neg" | "abs">([
        "add",
        "sub",
        "mul",
        "div",
        "max",
        "min",
        "and",
        "or",
        "xor",
        "shift_left",
        "shift_right_logical",
        "not",
        "neg",
        "abs",
      ]);
      if (op === "not" || op === "neg" || op === "abs") v = this.add(op, [v], {})[0]!;
      else v = this.add(op, [v, other()], {})[0]!;
    }
    if (this.chance(0.3)) {
      const p = this.add("compare", [v, other()], { dir: this.pick<CompareDir>(["lt", "ge", "eq"]) })[0]!;
      v = this.add("select", [p, v, other()], {})[0]!;
    }
    const masked = this.add("and", [v, this.splat(v.type, 255)], {})[0]!;
    this.op("convert", [masked], { dtype: x.type.dtype }, 255);
    return true;
  }

  /** f32 -> u32/s32 bits -> top byte of the exponent field -> float, and an f32 -> bits -> f32 identity. */
  bitcastPath(): boolean {
    const x = this.operand((v) => v.type.dtype === "f32");
    if (!x) return false;
    const it: DType = this.chance(0.5) ? "u32" : "s32";
    const bits = this.add("bitcast_convert", [x], { dtype: it })[0]!;
    if (this.chance(0.5)) {
      this.op("bitcast_convert", [bits], { dtype: "f32" }, this.bnd(x));
      return true;
    }
    const hi = this.add("shift_right_logical", [bits, this.splat(bits.type, 23)], {})[0]!;
    const byte = this.add("and", [hi, this.splat(bits.type, 255)], {})[0]!;
    this.op("convert", [byte], { dtype: "f32" }, 255);
    return true;
  }

  broadcast(): boolean {
    const x = this.operand((v) => v.type.shape.length < this.opts.maxRank);
    if (!x) return false;
    const xs = x.type.shape;
    const at = this.int(0, xs.length);
    const size = this.int(1, 3);
    const shape = [...xs.slice(0, at), size, ...xs.slice(at)];
    if (numel(shape) > MAX_NUMEL) return false;
    const dims = xs.map((_, i) => (i < at ? i : i + 1));
    // Sometimes stretch a size-1 operand dim too.
    const stretch = xs.indexOf(1);
    if (stretch >= 0 && this.chance(0.5)) shape[dims[stretch]!] = this.int(2, 3);
    if (numel(shape) > MAX_NUMEL) return false;
    this.op("broadcast_in_dim", [x], { shape, dims }, this.bnd(x));
    return true;
  }

  reshape(): boolean {
    const x = this.operand();
    if (!x) return false;
    const n = numel(x.type.shape);
    // Factor n into up to maxRank dims.
    const shape: number[] = [];
    let rest = n;
    while (rest > 1 && shape.length < this.opts.maxRank - 1) {
      const divisors = [1, 2, 3, 4].filter((d) => rest % d === 0 && d <= rest);
      const d = this.pick(divisors);
      if (d === 1 && this.chance(0.5)) break;
      shape.push(d);
      rest /= d;
    }
    shape.push(rest);
    const final = this.chance(0.2) && n === 1 ? [] : this.shuffle(shape);
    this.op("reshape", [x], { shape: final }, this.bnd(x));
    return true;
  }

  transpose(): boolean {
    const x = this.operand((v) => v.type.shape.length >= 2);
    if (!x) return false;
    const perm = this.shuffle(x.type.shape.map((_, i) => i));
    this.op("transpose", [x], { perm }, this.bnd(x));
    return true;
  }

  slice(): boolean {
    const x = this.operand((v) => v.type.shape.length >= 1);
    if (!x) return false;
    const start: number[] = [];
    const limit: number[] = [];
    const stride: number[] = [];
    for (const d of x.type.shape) {
      const s = this.int(0, d - 1);
      start.push(s);
      limit.push(this.int(s + 1, d));
      stride.push(this.int(1, 2));
    }
    this.op("slice", [x], { start, limit, stride }, this.bnd(x));
    return true;
  }

  concatenate(): boolean {
    const x = this.operand((v) => v.type.shape.length >= 1);
    if (!x) return false;
    const axis = this.int(0, x.type.shape.length - 1);
    const parts = [x, this.partner(x)];
    if (this.chance(0.3)) parts.push(x);
    if (numel(x.type.shape) * parts.length > MAX_NUMEL) return false;
    this.op("concatenate", parts, { axis }, Math.max(...parts.map((p) => this.bnd(p))));
    return true;
  }

  pad(): boolean {
    const x = this.operand((v) => v.type.shape.length >= 1);
    if (!x) return false;
    const low: number[] = [];
    const high: number[] = [];
    const interior: number[] = [];
    const shape: number[] = [];
    for (const d of x.type.shape) {
      const i = this.int(0, 1);
      let lo = this.int(-1, 2);
      let hi = this.int(-1, 2);
      const inner = d + Math.max(d - 1, 0) * i;
      if (lo + hi + inner < 1) lo = hi = 0;
      low.push(lo);
      high.push(hi);
      interior.push(i);
      shape.push(lo + hi + inner);
    }
    if (numel(shape) > MAX_NUMEL) return false;
    const pv = this.scalar(x.type.dtype, this.pick([0, 1, -0.5]));
    this.op("pad", [x, pv], { low, high, interior }, Math.max(this.bnd(x), 1));
    return true;
  }

  reduce(): boolean {
    const x0 = this.operand((v) => v.type.shape.length >= 1);
    if (!x0) return false;
    const op = this.pick(["reduce_sum", "reduce_max", "reduce_min"] as const);
    const x = op === "reduce_sum" ? this.tame(x0) : x0;
    const axes = x.type.shape.map((_, i) => i).filter(() => this.chance(0.5));
    const n = numel(axes.map((a) => x.type.shape[a]!));
    this.op(op, [x], { axes }, op === "reduce_sum" ? this.bnd(x) * n : this.bnd(x));
    return true;
  }

  dot(): boolean {
    const x0 = this.operand((v) => v.type.shape.length >= 1);
    if (!x0) return false;
    const x = this.tame(x0);
    const r = x.type.shape.length;
    // rhs: x itself or a transposed partner, so that matching dims exist; batch and contracting dims drawn from x.
    const dims = this.shuffle(x.type.shape.map((_, i) => i));
    const nBatch = r >= 2 && this.chance(0.4) ? 1 : 0;
    const nContract = this.int(0, Math.min(2, r - nBatch));
    const lhsBatch = dims.slice(0, nBatch);
    const lhsContract = dims.slice(nBatch, nBatch + nContract);
    const free = x.type.shape.filter((_, i) => !lhsBatch.includes(i) && !lhsContract.includes(i));
    if (numel([...lhsBatch.map((d) => x.type.shape[d]!), ...free, ...free]) > MAX_NUMEL) return false;
    let y = this.tame(this.partner(x));
    let perm = x.type.shape.map((_, i) => i);
    if (r >= 2 && this.chance(0.5)) {
      perm = this.shuffle(perm);
      y = this.add("transpose", [y], { perm })[0]!;
    }
    // y dim j holds x dim perm[j]; find where each chosen x dim went.
    const where = (d: number) => perm.indexOf(d);
    const rhsBatch = lhsBatch.map(where);
    const rhsContract = lhsContract.map(where);
    const params: OpParams["dot_general"] = {
      lhsBatch,
      rhsBatch,
      lhsContract,
      rhsContract,
      outDtype: this.chance(0.25) ? this.floatDtype() : x.type.dtype,
    };
    const k = numel(lhsContract.map((d) => x.type.shape[d]!));
    this.op("dot_general", [x, y], params, this.bnd(x) * this.bnd(y) * k);
    return true;
  }

  gatherScatter(): boolean {
    const x = this.operand((v) => v.type.shape.length >= 1);
    if (!x) return false;
    const idxShape = this.shape(this.int(0, 2));
    const rest = x.type.shape.slice(1);
    if (numel([...idxShape, ...rest]) > MAX_NUMEL) return false;
    const idx = this.indices(idxShape);
    const g = this.op("gather", [x, idx], {}, this.bnd(x));
    if (this.chance(0.5)) {
      const upd = this.op("mul", [this.tame(g), this.splat(g.type, 0.5)], {}, 1);
      this.op("scatter_add", [x, idx, upd], {}, this.bnd(x) + numel(idxShape));
    }
    return true;
  }

  takeAlongAxis(): boolean {
    const x = this.operand((v) => v.type.shape.length >= 1);
    if (!x) return false;
    const axis = this.int(0, x.type.shape.length - 1);
    const idxShape = x.type.shape.map((d, i) => (i === axis ? this.int(1, 4) : d));
    if (numel(idxShape) > MAX_NUMEL) return false;
    this.op("take_along_axis", [x, this.indices(idxShape)], { axis }, this.bnd(x));
    return true;
  }

  /** A rank-0 start index: a constant (sometimes out of range) or a scalar integer input. */
  startIndex(): Value {
    if (this.nested || this.chance(0.6)) return this.scalar("s32", this.int(-1, 4));
    return this.input(tensorType(this.chance(0.7) ? "s32" : "u32", []), 0);
  }

  dynamicSlices(): boolean {
    const x = this.operand((v) => v.type.shape.length >= 1);
    if (!x) return false;
    const sizes = x.type.shape.map((d) => this.int(1, d));
    const starts = () => x.type.shape.map(() => this.startIndex());
    if (this.chance(0.5)) {
      this.op("dynamic_slice", [x, ...starts()], { sizes }, this.bnd(x));
      return true;
    }
    const upd = this.partner(x);
    const small = this.add("slice", [upd], { start: sizes.map(() => 0), limit: sizes, stride: sizes.map(() => 1) })[0]!;
    this.op("dynamic_update_slice", [x, small, ...starts()], {}, Math.max(this.bnd(x), this.bnd(upd)));
    return true;
  }

  /** A sort along a random dim, sometimes carrying a same-shaped partner (the values follow the key's order). */
  sort(): boolean {
    const x = this.operand((v) => v.type.shape.length >= 1);
    if (!x) return false;
    const ins = this.chance(0.5) ? [x] : [x, this.partner(x)];
    const params = { dimension: this.int(0, x.type.shape.length - 1), descending: this.chance(0.5), stable: true };
    const outs = this.add("sort", ins, params);
    outs.forEach((o, i) => {
      this.pool.push(o);
      this.bound.set(o, this.bnd(ins[i]!));
    });
    return true;
  }

  barrier(): boolean {
    const x = this.operand();
    if (!x) return false;
    const ins = this.chance(0.5) ? [x] : [x, this.indices([2])];
    const outs = this.add("optimization_barrier", ins, {});
    this.pool.push(outs[0]!);
    this.bound.set(outs[0]!, this.bnd(x));
    return true;
  }

  /** A scan whose body carries tanh(carry + x_t) and emits a few randomly built ops per step. */
  scan(): boolean {
    if (!this.opts.scan) return false;
    const xs = this.operand((v) => v.type.shape.length >= 1 && v.type.shape.length <= this.opts.maxRank);
    if (!xs) return false;
    const length = xs.type.shape[0]!;
    const slice = tensorType(xs.type.dtype, xs.type.shape.slice(1));
    const useConst = this.chance(0.5);
    const init = this.op("reduce_max", [xs], { axes: [0] }, this.bnd(xs));
    const k = useConst ? this.partner(init) : undefined;

    const inner = new Gen(Math.floor(this.r() * 2 ** 32), { ...this.opts, scan: false }, true);
    const bk = useConst ? inner.input(slice, this.bnd(k!)) : undefined;
    const bc = inner.input(slice, 1);
    const bx = inner.input(slice, this.bnd(xs));
    const sum = inner.op("add", [bc, bx], {}, 1 + this.bnd(xs));
    const carry = inner.op(
      "tanh",
      [bk ? inner.op("mul", [inner.tame(sum), inner.tame(bk)], {}, TAME * TAME) : sum],
      {},
      1,
    );
    for (let i = inner.int(1, 3); i > 0; i--) inner.step();
    const ys = [inner.pool[inner.pool.length - 1]!];
    if (inner.chance(0.3)) ys.push(inner.pick(inner.pool));
    if (ys.some((y) => numel(y.type.shape) * length > MAX_NUMEL)) return false;
    const body = inner.b.build([carry, ...ys]);

    const initTamed = this.op("tanh", [init], {}, 1);
    const outs = this.add("scan", [...(k ? [k] : []), initTamed, xs], {
      body,
      length,
      numConsts: k ? 1 : 0,
      numCarry: 1,
      reverse: this.chance(0.5),
    });
    outs.forEach((v, i) => {
      this.pool.push(v);
      this.bound.set(v, i === 0 ? 1 : Math.max(...ys.map((y) => inner.bnd(y))));
    });
    return true;
  }

  /** stop_gradient of any float value (top level only, where the gradient checks can see and skip it). */
  stopGradient(): boolean {
    if (this.nested) return false;
    const x = this.operand();
    if (!x) return false;
    this.op("stop_gradient", [x], {}, this.bnd(x));
    return true;
  }

  /**
   * A cond over 2 (bool constant index) or 3 (s32 constant index, sometimes out of range) branches, each
   * tanh(x + a few random ops of x): constant indices keep finite differences from straddling a branch switch.
   */
  cond(): boolean {
    if (this.nested) return false;
    const x = this.operand();
    if (!x) return false;
    const useBool = this.chance(0.5);
    const n = useBool ? 2 : 3;
    const index = useBool ? this.scalar("bool", this.int(0, 1)) : this.scalar("s32", this.int(-1, 3));
    const branches = Array.from({ length: n }, () => {
      const inner = new Gen(Math.floor(this.r() * 2 ** 32), { ...this.opts, scan: false }, true);
      const bx = inner.input(x.type, this.bnd(x));
      for (let i = inner.int(0, 2); i > 0; i--) inner.step();
      const same = inner.pool.filter((v) => sameType(v.type, x.type));
      const other = inner.tame(inner.pick(same));
      const out = inner.op("tanh", [inner.op("add", [inner.tame(bx), other], {}, 2 * TAME)], {}, 1);
      return inner.b.build([out]);
    });
    const [out] = this.add("cond", [index, x], { branches });
    this.pool.push(out!);
    this.bound.set(out!, 1);
    return true;
  }

  /** A while over integer carries (i, acc) summing i < a constant bound: integers keep it off every gradient path. */
  whileLoop(): boolean {
    if (this.nested) return false;
    const x = this.operand();
    if (!x) return false;
    const mk = () => new Gen(Math.floor(this.r() * 2 ** 32), { ...this.opts, scan: false }, true);
    const limit = this.scalar("s32", this.int(0, 4));
    const c = mk();
    const [cl, ci] = [c.b.input(tensorType("s32", [])), c.b.input(tensorType("s32", []))];
    c.b.input(tensorType("s32", []));
    const cond = c.b.build(c.b.add("compare", [ci, cl], { dir: "lt" }));
    const bd = mk();
    const [, bi, bacc] = [0, 1, 2].map(() => bd.b.input(tensorType("s32", [])));
    const one = bd.scalar("s32", 1);
    const body = bd.b.build([bd.b.add("add", [bi!, one], {})[0]!, bd.b.add("add", [bacc!, bi!], {})[0]!]);
    const zero = this.scalar("s32", 0);
    const [, acc] = this.add("while", [limit, zero, zero], { cond, body, numConsts: 1 });
    const scale = this.add("convert", [acc!], { dtype: x.type.dtype })[0]!;
    const b = this.add("broadcast_in_dim", [scale], { shape: x.type.shape, dims: [] })[0]!;
    this.op("mul", [this.tame(x), b], {}, TAME * 10);
    return true;
  }

  /**
   * A checkpoint (any policy) over a few random ops of x, their last result named "h" and squashed by tanh: the
   * gradient checks then cover its rematerialized backward pass (what is saved, what is recomputed).
   */
  checkpoint(): boolean {
    const x = this.operand();
    if (!x) return false;
    const inner = new Gen(Math.floor(this.r() * 2 ** 32), { ...this.opts, scan: false }, true);
    inner.input(x.type, this.bnd(x));
    for (let i = inner.int(1, 3); i > 0; i--) inner.step();
    const last = inner.pool[inner.pool.length - 1]!;
    const named = inner.op("checkpoint_name", [last], { name: "h" }, inner.bnd(last));
    const body = inner.b.build([inner.op("tanh", [named], {}, 1)]);
    const policy = this.pick([
      "nothingSaveable",
      "dotsSaveable",
      "dotsWithNoBatchDimsSaveable",
      "saveOnlyTheseNames",
      "everythingSaveable",
    ] as const);
    const [out] = this.add("checkpoint", [x], { body, policy, names: ["h"] });
    this.pool.push(out!);
    this.bound.set(out!, 1);
    return true;
  }

  /** custom_vjp of tanh: fwd saves the result, bwd computes ct * (1 - y^2), so the gradient check holds. */
  customVjp(): boolean {
    const x = this.operand();
    if (!x) return false;
    const mk = () => new Gen(Math.floor(this.r() * 2 ** 32), { ...this.opts, scan: false }, true);
    const body = mk();
    const bx = body.b.input(x.type);
    const bodyG = body.b.build(body.b.add("tanh", [bx], {}));
    const fwd = mk();
    const fx = fwd.b.input(x.type);
    const fy = fwd.b.add("tanh", [fx], {})[0]!;
    const fwdG = fwd.b.build([fy, fy]);
    const bwd = mk();
    const [ry, ct] = [bwd.b.input(x.type), bwd.b.input(x.type)];
    const one = bwd.splat(x.type, 1);
    const d = bwd.b.add("sub", [one, bwd.b.add("mul", [ry, ry], {})[0]!], {})[0]!;
    const bwdG = bwd.b.build(bwd.b.add("mul", [ct, d], {}));
    this.op("custom_vjp", [x], { body: bodyG, fwd: fwdG, bwd: bwdG, numConsts: 0 }, 1);
    return true;
  }
}

/** A valid random graph, the same for the same seed and options. */
export function randomGraph(seed: number, opts: RandomGraphOptions = {}): Graph {
  const full: Required<RandomGraphOptions> = {
    steps: opts.steps ?? 12,
    dtypes: opts.dtypes ?? ["f32", "bf16", "f16"],
    scan: opts.scan ?? true,
    locs: opts.locs ?? true,
    maxRank: opts.maxRank ?? 3,
  };
  const gen = new Gen(seed, full);
  const main = gen.floatDtype();
  for (let i = gen.int(1, 3); i > 0; i--) gen.input(tensorType(main, gen.shape(gen.int(0, full.maxRank))), 2);
  for (let i = 0; i < full.steps; i++) gen.step();
  // Outputs: the last value (so the longest chain is live) and up to two others.
  const outs = [gen.pool[gen.pool.length - 1]!];
  for (let i = gen.int(0, 2); i > 0; i--) outs.push(gen.pick(gen.pool));
  const names = gen.chance(0.3) ? outs.map((_, i) => `out${i}`) : undefined;
  return gen.b.build(outs, names);
}

/**
 * Random arguments for `g`: floats uniform in [-2, 2] (rounded to their dtype), s32/u32 in [0, 3] (indices into
 * dims of size 1..4; larger dims still get small indices, smaller dims get clamped ones), bool 0/1.
 */
export function randomInputs(g: Graph, seed: number): HostArray[] {
  const r = rng(seed);
  return g.inputs.map((v) => {
    const { dtype, shape } = v.type;
    const n = numel(shape);
    const vals = new Array<number>(n);
    for (let i = 0; i < n; i++) {
      if (isFloat(dtype)) vals[i] = r() * 4 - 2;
      else if (dtype === "bool") vals[i] = r() < 0.5 ? 0 : 1;
      else vals[i] = Math.floor(r() * 4);
    }
    return hostArray(dtype, shape, vals);
  });
}
