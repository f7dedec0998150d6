// Element-wise ops with numpy broadcasting and Tessera's promotion rule: tensors never mix dtypes, JS numbers adopt.
import { UNARY_OPS, type BinaryOp, type CompareDir, type UnaryOp } from "../../ir/ops.ts";
import { isFloat, isInteger, sameShape, type DType, type Shape, type TensorType } from "../../ir/types.ts";
import { bind1, Tensor, type TensorLike } from "../core.ts";
import { TraceError } from "../errors.ts";
import { atUserLoc, located } from "../loc.ts";

/*
 * Promotion, in full:
 * - Tensor operands of one op must share a dtype; f32 + bf16 or s32 + f32 is an error (convert with `astype`).
 * - A JS number takes the dtype of the tensor operands (like a Python scalar in JAX): `x.mul(2)` on bf16 stays bf16.
 *   It must be representable: an integer within range for s32/u32, 0 or 1 for bool.
 * - With only numbers, the result is f32.
 * Shapes broadcast as in numpy: align trailing dims; a dim of size 1 (or a missing leading dim) stretches.
 */

/** The numpy broadcast of `shapes`; throws naming `op` and the operands when they are incompatible. */
export function broadcastShapes(op: string, shapes: readonly Shape[], types: readonly TensorType[] = []): Shape {
  const rank = Math.max(0, ...shapes.map((s) => s.length));
  const out: number[] = new Array<number>(rank).fill(1);
  for (const s of shapes) {
    for (let i = 0; i < s.length; i++) {
      const j = rank - s.length + i;
      const d = s[i]!;
      if (d === out[j] || d === 1) continue;
      if (out[j] === 1) out[j] = d;
      else {
        const list = shapes.map((x) => `[${x.join(",")}]`).join(" and ");
        throw new TraceError(
          op,
          `cannot broadcast shapes ${list} (dim ${j} from the right-aligned end: ${out[j]} vs ${d})`,
          types,
        );
      }
    }
  }
  return out;
}

/** `x` broadcast to `shape` with one broadcast_in_dim, or `x` itself when it already has that shape. */
export function broadcastTo(x: Tensor, shape: readonly number[], op = "broadcastTo"): Tensor {
  if (sameShape(x.shape, shape)) return x;
  const offset = shape.length - x.ndim;
  const ok = offset >= 0 && x.shape.every((d, i) => d === 1 || d === shape[offset + i]);
  if (!ok)
    throw new TraceError(op, `cannot broadcast ${x.dtype}[${x.shape.join(",")}] to [${shape.join(",")}]`, [x.type]);
  return bind1("broadcast_in_dim", [x], { shape: [...shape], dims: x.shape.map((_, i) => offset + i) });
}

function checkScalar(op: string, v: number, dtype: DType, types: readonly TensorType[]): void {
  const bad = (why: string) => new TraceError(op, `the number ${v} ${why}`, types);
  if (isInteger(dtype)) {
    if (!Number.isInteger(v))
      throw bad(`is not an integer, so it cannot adopt the ${dtype} tensor's dtype (use astype)`);
    const [lo, hi] = dtype === "u32" ? [0, 2 ** 32 - 1] : [-(2 ** 31), 2 ** 31 - 1];
    if (v < lo || v > hi) throw bad(`is out of range for ${dtype}`);
  } else if (dtype === "bool" && v !== 0 && v !== 1) {
    throw bad(`cannot be a bool (only 0 and 1 can)`);
  }
}

/** Why a value cannot be an operand; a device array gets the fix spelled out. */
export function notATensor(o: unknown): string {
  const name = typeof o === "object" && o !== null ? o.constructor?.name : undefined;
  if (name === "DeviceArray")
    return "operand is a DeviceArray, which cannot be used inside a trace: pass it to the jit function as an argument";
  return `operand is ${name ? `a ${name}` : `${typeof o} ${String(o)}`}, not a Tensor or a number`;
}

/** A splat constant (one value repeated over `shape`). */
export function full(shape: readonly number[], value: number, dtype: DType = "f32"): Tensor {
  return bind1("constant", [], { dtype, shape: [...shape], value: [value] });
}

/**
 * Operands of an element-wise op brought to one dtype and one shape: tensors checked for a common dtype and
 * broadcast, numbers turned into splat constants. `dtypeHint` is used when every operand is a number.
 */
export function unify(op: string, operands: readonly TensorLike[], dtypeHint: DType = "f32"): Tensor[] {
  const tensors = operands.filter((o): o is Tensor => o instanceof Tensor);
  const types = tensors.map((t) => t.type);
  const dtype = tensors.length ? tensors[0]!.dtype : dtypeHint;
  for (const t of tensors) {
    if (t.dtype !== dtype) {
      throw new TraceError(
        op,
        `operand dtypes differ (${dtype} vs ${t.dtype}); Tessera never promotes between tensor dtypes, convert one with astype`,
        types,
      );
    }
  }
  for (const o of operands) {
    if (typeof o === "number") checkScalar(op, o, dtype, types);
    else if (!(o instanceof Tensor)) throw new TraceError(op, notATensor(o), types);
  }
  const shape = broadcastShapes(
    op,
    tensors.map((t) => t.shape),
    types,
  );
  return operands.map((o) => (typeof o === "number" ? full(shape, o, dtype) : broadcastTo(o, shape, op)));
}

function unary(name: UnaryOp) {
  return located((x: TensorLike): Tensor => {
    const [a] = unify(name, [x]);
    return bind1(name, [a!], {});
  });
}

function binary(name: BinaryOp, op: string = name) {
  return located((x: TensorLike, y: TensorLike): Tensor => {
    const [a, b] = unify(op, [x, y]);
    return bind1(name, [a!, b!], {});
  });
}

function compare(dir: CompareDir) {
  return located((x: TensorLike, y: TensorLike): Tensor => {
    const [a, b] = unify(dir, [x, y]);
    return bind1("compare", [a!, b!], { dir });
  });
}

export const add = binary("add");
export const sub = binary("sub");
export const mul = binary("mul");
/**
 * True division, as numpy's and JAX's `/`: integer and bool operands divide as f32 (s32 7 / 2 is f32 3.5). The
 * integer quotient is floorDiv.
 */
export const div = located((x: TensorLike, y: TensorLike): Tensor => {
  const [a, b] = unify("div", [x, y]);
  if (isFloat(a!.dtype)) return bind1("div", [a!, b!], {});
  return bind1("div", [astype(a!, "f32"), astype(b!, "f32")], {});
});

function noBool(op: string, a: Tensor, b: Tensor): void {
  if (a.dtype === "bool")
    throw new TraceError(op, "needs numbers, got bool operands; convert with astype", [a.type, b.type]);
}

/**
 * numpy's floor_divide (Python's `//`): the quotient rounded toward -inf, in the operands' dtype; exact for
 * integers (XLA's division truncates toward zero; the quotient is one less where the signs differ and it was
 * inexact). Integer division by zero gives XLA's -1 (or -2 for negative dividends), not an error.
 */
export const floorDiv = located((x: TensorLike, y: TensorLike): Tensor => {
  const [a, b] = unify("floorDiv", [x, y]);
  noBool("floorDiv", a!, b!);
  const q = bind1("div", [a!, b!], {});
  if (isFloat(a!.dtype)) return floor(q);
  if (a!.dtype === "u32") return q;
  const r = sub(a!, mul(q, b!));
  return where(logicalAnd(ne(r, 0), bitwiseXor(lt(r, 0), lt(b!, 0))), sub(q, 1), q);
});

/**
 * numpy's remainder (Python's `%`): x - floorDiv(x, y) * y, with the sign of y. Exact for integers; for floats it
 * is x - y * floor(x / y), which loses precision when the quotient is large (numpy's fmod-based form has no op here).
 */
export const remainder = located((x: TensorLike, y: TensorLike): Tensor => {
  const [a, b] = unify("remainder", [x, y]);
  noBool("remainder", a!, b!);
  return sub(a!, mul(floorDiv(a!, b!), b!));
});

/** numpy's alias of remainder. */
export const mod = remainder;
export const maximum = binary("max", "maximum");
export const minimum = binary("min", "minimum");
export const bitwiseAnd = binary("and", "bitwiseAnd");
export const bitwiseOr = binary("or", "bitwiseOr");
export const bitwiseXor = binary("xor", "bitwiseXor");
/** Shifts of integers by integer amounts; a shift of the bit width or more gives 0 (XLA semantics). */
export const shiftLeft = binary("shift_left", "shiftLeft");
export const shiftRightLogical = binary("shift_right_logical", "shiftRightLogical");

/**
 * Each unary IR op's tx function name and whether it is also a Tensor method (where numpy's ndarray has one).
 * The functions and methods are generated from this table.
 */
export const UNARY_API = {
  neg: { name: "neg", method: true },
  abs: { name: "abs", method: true },
  exp: { name: "exp", method: true },
  log: { name: "log", method: true },
  sqrt: { name: "sqrt", method: true },
  rsqrt: { name: "rsqrt", method: true },
  tanh: { name: "tanh", method: true },
  // 1 / (1 + exp(-x)).
  logistic: { name: "sigmoid", method: true },
  sin: { name: "sin", method: true },
  cos: { name: "cos", method: true },
  erf: { name: "erf", method: true },
  log1p: { name: "log1p", method: true },
  expm1: { name: "expm1", method: true },
  floor: { name: "floor", method: true },
  ceil: { name: "ceil", method: true },
  round: { name: "round", method: true },
  sign: { name: "sign", method: true },
  not: { name: "bitwiseNot", method: false },
} as const satisfies { readonly [N in UnaryOp]: { readonly name: string; readonly method: boolean } };

type UnaryApi = typeof UNARY_API;
export type UnaryName = UnaryApi[UnaryOp]["name"];
/** The Tensor methods of the unary ops: `x.exp()`. */
export type UnaryMethods = {
  [N in UnaryOp as UnaryApi[N]["method"] extends true ? UnaryApi[N]["name"] : never]: () => Tensor;
};

/** The tx function of every unary op, by its name. */
export const UNARY_FNS = Object.fromEntries(UNARY_OPS.map((n) => [UNARY_API[n].name, unary(n)])) as {
  readonly [K in UnaryName]: (x: TensorLike) => Tensor;
};

// numpy.ts re-exports these; methods.ts checks that none is missing.
export const {
  neg,
  abs,
  exp,
  log,
  sqrt,
  rsqrt,
  tanh,
  sigmoid,
  sin,
  cos,
  erf,
  log1p,
  expm1,
  floor,
  ceil,
  round,
  sign,
  bitwiseNot,
} = UNARY_FNS;

export const eq = compare("eq");
export const ne = compare("ne");
export const lt = compare("lt");
export const le = compare("le");
export const gt = compare("gt");
export const ge = compare("ge");

function requireBool(op: string, xs: readonly TensorLike[]): void {
  for (const x of xs) {
    if (x instanceof Tensor && x.dtype !== "bool")
      throw new TraceError(op, `needs bool operands, got ${x.dtype}`, [x.type]);
  }
}

export function logicalAnd(x: TensorLike, y: TensorLike): Tensor {
  return atUserLoc(() => {
    requireBool("logicalAnd", [x, y]);
    const [a, b] = unify("logicalAnd", [x, y], "bool");
    return bind1("and", [a!, b!], {});
  });
}
export function logicalOr(x: TensorLike, y: TensorLike): Tensor {
  return atUserLoc(() => {
    requireBool("logicalOr", [x, y]);
    const [a, b] = unify("logicalOr", [x, y], "bool");
    return bind1("or", [a!, b!], {});
  });
}
export function logicalNot(x: Tensor): Tensor {
  requireBool("logicalNot", [x]);
  return bind1("not", [x], {});
}

export function square(x: Tensor): Tensor {
  return mul(x, x);
}

export function reciprocal(x: Tensor): Tensor {
  return div(1, x);
}

/** x * sigmoid(x), Llama's MLP activation. */
export function silu(x: Tensor): Tensor {
  return atUserLoc(() => {
    return mul(x, sigmoid(x));
  });
}

/**
 * x ** y. A number exponent with a cheaper exact form is rewritten (0, 1, 2, 0.5, -0.5, -1): besides being faster
 * this keeps gradients finite at x = 0, where the general pow rule's log(x) would give NaN.
 */
export function pow(x: TensorLike, y: TensorLike): Tensor {
  return atUserLoc(() => {
    if (x instanceof Tensor && typeof y === "number") {
      if (y === 1) return x;
      if (y === 2) return mul(x, x);
      if (isFloat(x.dtype)) {
        if (y === 0) return full(x.shape, 1, x.dtype);
        if (y === 0.5) return sqrt(x);
        if (y === -0.5) return rsqrt(x);
        if (y === -1) return div(1, x);
      }
    }
    const [a, b] = unify("pow", [x, y]);
    return bind1("pow", [a!, b!], {});
  });
}

/** numpy where: picks `x` where `cond` is true, else `y`; all three broadcast together. */
export function where(cond: Tensor, x: TensorLike, y: TensorLike): Tensor {
  return atUserLoc(() => {
    if (!(cond instanceof Tensor) || cond.dtype !== "bool") {
      throw new TraceError(
        "where",
        `condition must be a bool Tensor, got ${cond instanceof Tensor ? cond.dtype : typeof cond}`,
      );
    }
    const [a, b] = unify("where", [x, y]);
    const shape = broadcastShapes("where", [cond.shape, a!.shape], [cond.type, a!.type]);
    return bind1(
      "select",
      [broadcastTo(cond, shape, "where"), broadcastTo(a!, shape, "where"), broadcastTo(b!, shape, "where")],
      {},
    );
  });
}

/** Element type conversion (float -> int truncates toward zero; float -> bool is x != 0); a no-op for the same dtype. */
export function astype(x: TensorLike, dtype: DType): Tensor {
  if (typeof x === "number") return full([], x, dtype);
  if (x.dtype === dtype) return x;
  return bind1("convert", [x], { dtype });
}

/** Reinterprets the bits as another dtype of the same width (f32 <-> u32/s32, bf16/f16 between themselves). */
export function bitcast(x: Tensor, dtype: DType): Tensor {
  if (x.dtype === dtype) return x;
  return bind1("bitcast_convert", [x], { dtype });
}

/** Clamps into [lo, hi]. */
export function clip(x: Tensor, lo: TensorLike, hi: TensorLike): Tensor {
  return atUserLoc(() => {
    return minimum(maximum(x, lo), hi);
  });
}
