// The element-wise ops described once (operand dtypes, StableHLO op, cost, fusion, interpreter kernel); the per-op tables derive their entries from here.

/** Which operand dtypes an op accepts (infer.ts checks them). */
export type DTypeClass = "float" | "numeric" | "int-or-bool" | "int" | "any";

/** XLA's HloCostAnalysis counts transcendentals apart from FLOPs (cost.ts). */
export type CostKind = "arith" | "transcendental";

type Kernel1 = (a: number) => number;
type Kernel2 = (a: number, b: number) => number;

interface Common<K> {
  readonly dtypes: DTypeClass;
  /** The StableHLO (or CHLO) op it lowers to, one op with the operands and result of the IR op. */
  readonly stablehlo: `stablehlo.${string}` | `chlo.${string}`;
  readonly cost: CostKind;
  /** Whether XLA's loop fusion merges it into a single element-wise user (memory_estimate.ts). */
  readonly fusible: boolean;
  /**
   * The float64 reference computation; the interpreter rounds the result into the result dtype. `int` and `bool`
   * replace it for s32/u32 and bool operands where the float formula would be wrong for them.
   */
  readonly kernel: K;
  readonly int?: K;
  readonly bool?: K;
}

export interface UnaryDescriptor extends Common<Kernel1> {
  readonly arity: 1;
}
export interface BinaryDescriptor extends Common<Kernel2> {
  readonly arity: 2;
}
export type ElementwiseDescriptor = UnaryDescriptor | BinaryDescriptor;

/** Shift amounts are read as unsigned: a negative s32 amount is huge, and anything >= 32 shifts everything out. */
const shiftAmount = (b: number) => b >>> 0;

/**
 * The error function to within a few ulp. |x| < 2: erf(x) = 2/sqrt(pi) exp(-x^2) sum_n 2^n x^(2n+1) / (2n+1)!!,
 * a series of positive terms (no cancellation). |x| >= 2: 1 - erfc(x), erfc from its continued fraction
 * erfc(x) = exp(-x^2)/sqrt(pi) / (x + (1/2)/(x + 1/(x + (3/2)/(x + ...)))), evaluated from the tail (60 terms
 * are exact to double precision from x = 1.8 on); erfc(x) < 5e-3 there, so its own error barely reaches erf.
 */
export function erf(x: number): number {
  if (Number.isNaN(x)) return NaN;
  const a = Math.abs(x);
  let r: number;
  if (a < 2) {
    let term = a;
    let sum = a;
    for (let n = 1; term > sum * 1e-17; n++) {
      term *= (2 * a * a) / (2 * n + 1);
      sum += term;
    }
    r = (2 / Math.sqrt(Math.PI)) * Math.exp(-a * a) * sum;
  } else if (a < 6) {
    let f = a;
    for (let k = 60; k >= 1; k--) f = a + k / 2 / f;
    r = 1 - Math.exp(-a * a) / Math.sqrt(Math.PI) / f;
  } else {
    r = 1; // erfc(6) < 2.2e-17: 1 - erfc rounds to 1
  }
  return x < 0 ? -r : r;
}

/** Nearest integer, ties to the even one (numpy's and StableHLO's round_nearest_even); keeps -0 and the sign of 0 results. */
export function roundHalfEven(a: number): number {
  if (!Number.isFinite(a)) return a;
  const f = Math.floor(a);
  const d = a - f;
  const r = d < 0.5 ? f : d > 0.5 ? f + 1 : f % 2 === 0 ? f : f + 1;
  return r === 0 && (a < 0 || Object.is(a, -0)) ? -0 : r;
}

/** NaN wins, as in XLA's maximum/minimum. */
export const maxOf: Kernel2 = (a, b) => (Number.isNaN(a) || Number.isNaN(b) ? NaN : Math.max(b, a));
export const minOf: Kernel2 = (a, b) => (Number.isNaN(a) || Number.isNaN(b) ? NaN : Math.min(b, a));

/**
 * Every element-wise op: operands of one type (the IR never broadcasts implicitly), one result of that type.
 * The key order is the op order of ops.ts (unary, then binary); a new key here is a new IR op.
 */
export const ELEMENTWISE = {
  neg: { arity: 1, dtypes: "numeric", stablehlo: "stablehlo.negate", cost: "arith", fusible: true, kernel: (a) => -a },
  abs: { arity: 1, dtypes: "numeric", stablehlo: "stablehlo.abs", cost: "arith", fusible: true, kernel: Math.abs },
  exp: {
    arity: 1,
    dtypes: "float",
    stablehlo: "stablehlo.exponential",
    cost: "transcendental",
    fusible: true,
    kernel: Math.exp,
  },
  log: {
    arity: 1,
    dtypes: "float",
    stablehlo: "stablehlo.log",
    cost: "transcendental",
    fusible: true,
    kernel: Math.log,
  },
  sqrt: {
    arity: 1,
    dtypes: "float",
    stablehlo: "stablehlo.sqrt",
    cost: "transcendental",
    fusible: true,
    kernel: Math.sqrt,
  },
  rsqrt: {
    arity: 1,
    dtypes: "float",
    stablehlo: "stablehlo.rsqrt",
    cost: "transcendental",
    fusible: true,
    kernel: (a) => 1 / Math.sqrt(a),
  },
  tanh: {
    arity: 1,
    dtypes: "float",
    stablehlo: "stablehlo.tanh",
    cost: "transcendental",
    fusible: true,
    kernel: Math.tanh,
  },
  logistic: {
    arity: 1,
    dtypes: "float",
    stablehlo: "stablehlo.logistic",
    cost: "transcendental",
    fusible: true,
    kernel: (a) => 1 / (1 + Math.exp(-a)),
  },
  sin: {
    arity: 1,
    dtypes: "float",
    stablehlo: "stablehlo.sine",
    cost: "transcendental",
    fusible: true,
    kernel: Math.sin,
  },
  cos: {
    arity: 1,
    dtypes: "float",
    stablehlo: "stablehlo.cosine",
    cost: "transcendental",
    fusible: true,
    kernel: Math.cos,
  },
  erf: { arity: 1, dtypes: "float", stablehlo: "chlo.erf", cost: "transcendental", fusible: true, kernel: erf },
  // log(1 + x) and exp(x) - 1 without the cancellation of forming 1 + x or subtracting 1 near x = 0.
  log1p: {
    arity: 1,
    dtypes: "float",
    stablehlo: "stablehlo.log_plus_one",
    cost: "transcendental",
    fusible: true,
    kernel: Math.log1p,
  },
  expm1: {
    arity: 1,
    dtypes: "float",
    stablehlo: "stablehlo.exponential_minus_one",
    cost: "transcendental",
    fusible: true,
    kernel: Math.expm1,
  },
  floor: { arity: 1, dtypes: "float", stablehlo: "stablehlo.floor", cost: "arith", fusible: true, kernel: Math.floor },
  ceil: { arity: 1, dtypes: "float", stablehlo: "stablehlo.ceil", cost: "arith", fusible: true, kernel: Math.ceil },
  round: {
    arity: 1,
    dtypes: "float",
    stablehlo: "stablehlo.round_nearest_even",
    cost: "arith",
    fusible: true,
    kernel: roundHalfEven,
  },
  // -1, 0 or 1 with the operand's zero sign and NaN kept, as stablehlo.sign; floats only (it has no unsigned form).
  sign: { arity: 1, dtypes: "float", stablehlo: "stablehlo.sign", cost: "arith", fusible: true, kernel: Math.sign },
  not: {
    arity: 1,
    dtypes: "int-or-bool",
    stablehlo: "stablehlo.not",
    cost: "arith",
    fusible: true,
    kernel: (a) => ~a,
    bool: (a) => 1 - a,
  },

  add: {
    arity: 2,
    dtypes: "numeric",
    stablehlo: "stablehlo.add",
    cost: "arith",
    fusible: true,
    kernel: (a, b) => a + b,
  },
  sub: {
    arity: 2,
    dtypes: "numeric",
    stablehlo: "stablehlo.subtract",
    cost: "arith",
    fusible: true,
    kernel: (a, b) => a - b,
  },
  mul: {
    arity: 2,
    dtypes: "numeric",
    stablehlo: "stablehlo.multiply",
    cost: "arith",
    fusible: true,
    kernel: (a, b) => a * b,
    // The exact product of two 32-bit integers can exceed 2^53; imul wraps like the hardware.
    int: Math.imul,
  },
  div: {
    arity: 2,
    dtypes: "numeric",
    stablehlo: "stablehlo.divide",
    cost: "arith",
    fusible: true,
    kernel: (a, b) => a / b,
    // XLA: x / 0 is all ones (-1, which wraps to 2^32-1 for u32); INT_MIN / -1 wraps back to INT_MIN.
    int: (a, b) => (b === 0 ? -1 : Math.trunc(a / b)),
  },
  pow: {
    arity: 2,
    dtypes: "float",
    stablehlo: "stablehlo.power",
    cost: "transcendental",
    fusible: true,
    kernel: (a, b) => (a === 1 ? 1 : a ** b),
  },
  max: { arity: 2, dtypes: "numeric", stablehlo: "stablehlo.maximum", cost: "arith", fusible: true, kernel: maxOf },
  min: { arity: 2, dtypes: "numeric", stablehlo: "stablehlo.minimum", cost: "arith", fusible: true, kernel: minOf },
  and: {
    arity: 2,
    dtypes: "int-or-bool",
    stablehlo: "stablehlo.and",
    cost: "arith",
    fusible: true,
    kernel: (a, b) => a & b,
  },
  or: {
    arity: 2,
    dtypes: "int-or-bool",
    stablehlo: "stablehlo.or",
    cost: "arith",
    fusible: true,
    kernel: (a, b) => a | b,
  },
  xor: {
    arity: 2,
    dtypes: "int-or-bool",
    stablehlo: "stablehlo.xor",
    cost: "arith",
    fusible: true,
    kernel: (a, b) => a ^ b,
  },
  shift_left: {
    arity: 2,
    dtypes: "int",
    stablehlo: "stablehlo.shift_left",
    cost: "arith",
    fusible: true,
    kernel: (a, b) => (shiftAmount(b) >= 32 ? 0 : a << shiftAmount(b)),
  },
  shift_right_logical: {
    arity: 2,
    dtypes: "int",
    stablehlo: "stablehlo.shift_right_logical",
    cost: "arith",
    fusible: true,
    kernel: (a, b) => (shiftAmount(b) >= 32 ? 0 : a >>> shiftAmount(b)),
  },
} as const satisfies Record<string, ElementwiseDescriptor>;

type Table = typeof ELEMENTWISE;
export type ElementwiseOp = keyof Table;
export type UnaryOp = { [N in ElementwiseOp]: Table[N]["arity"] extends 1 ? N : never }[ElementwiseOp];
export type BinaryOp = { [N in ElementwiseOp]: Table[N]["arity"] extends 2 ? N : never }[ElementwiseOp];

export const ELEMENTWISE_OPS = Object.keys(ELEMENTWISE) as ElementwiseOp[];
export const UNARY_OPS = ELEMENTWISE_OPS.filter((n): n is UnaryOp => ELEMENTWISE[n].arity === 1);
export const BINARY_OPS = ELEMENTWISE_OPS.filter((n): n is BinaryOp => ELEMENTWISE[n].arity === 2);

export function isElementwise(name: string): name is ElementwiseOp {
  return Object.hasOwn(ELEMENTWISE, name);
}

/** The descriptor of `name`, typed loosely enough to read any field (kernels of either arity). */
export function describeElementwise(name: ElementwiseOp): ElementwiseDescriptor {
  return ELEMENTWISE[name];
}

/**
 * A table with the same entry for every element-wise op, to spread into a `{ [N in OpName]: ... }` table:
 * `{ ...forEachElementwise((n) => rule(n)), compare: ..., }`.
 */
export function forEachElementwise<R>(entry: (name: ElementwiseOp) => R): { [N in ElementwiseOp]: R } {
  return Object.fromEntries(ELEMENTWISE_OPS.map((n) => [n, entry(n)])) as { [N in ElementwiseOp]: R };
}
