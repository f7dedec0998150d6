// Spelling of types, numbers, constants and locations in StableHLO/MLIR text, exact to the bit.
import { bf16ToBits, f16ToBits, f32FromBits, f32ToBits, roundBf16, roundF16 } from "../../ir/float_bits.ts";
import { numel, type DType, type SourceLoc, type TensorType } from "../../ir/types.ts";

const ELEMENT: Record<DType, string> = {
  f32: "f32",
  bf16: "bf16",
  f16: "f16",
  s32: "i32",
  u32: "ui32",
  bool: "i1",
};

export function elementType(d: DType): string {
  return ELEMENT[d];
}

/** `tensor<2x3xf32>`; rank 0 is `tensor<f32>`. */
export function tensorTypeText(t: TensorType): string {
  return `tensor<${t.shape.map((d) => `${d}x`).join("")}${ELEMENT[t.dtype]}>`;
}

/** `[0, 2, 1]`: the array spelling of dims in pretty op forms. */
export function dimsText(xs: readonly number[]): string {
  return `[${xs.join(", ")}]`;
}

/** The value a double becomes when stored in `d` (floats rounded to nearest even; ints wrapped; bool 0/1). */
export function roundTo(d: DType, x: number): number {
  switch (d) {
    case "f32":
      return Math.fround(x);
    case "bf16":
      return roundBf16(x);
    case "f16":
      return roundF16(x);
    case "s32":
      return Number.isFinite(x) ? Number(BigInt.asIntN(32, BigInt(Math.trunc(x)))) : 0;
    case "u32":
      return Number.isFinite(x) ? Number(BigInt.asUintN(32, BigInt(Math.trunc(x)))) : 0;
    case "bool":
      return x !== 0 && !Number.isNaN(x) ? 1 : 0;
  }
}

function hex(bits: number, digits: number): string {
  return `0x${bits.toString(16).toUpperCase().padStart(digits, "0")}`;
}

/**
 * Shortest decimal that parses back (double, then rounded to f32, as MLIR's parser does) to exactly `v`, in
 * MLIR's float-literal grammar (always a `.` and an exponent: `1.5e+00`, `1.0e-07`).
 */
function f32Decimal(v: number): string {
  // A parser may round the decimal to f32 directly or through a double; both agree unless the double lands
  // exactly on a midpoint between two f32s, so such spellings are skipped.
  const a = Math.abs(v);
  const bits = f32ToBits(a);
  const mids = [(a + f32FromBits(bits + 1)) / 2, bits > 0 ? (a + f32FromBits(bits - 1)) / 2 : -1];
  for (let p = 1; p <= 17; p++) {
    const s = v.toExponential(p - 1);
    const d = Number(s);
    if (Math.fround(d) === v && !mids.includes(Math.abs(d))) return s.includes(".") ? s : s.replace("e", ".0e");
  }
  throw new Error(`internal: no decimal round-trips f32 ${v}`);
}

/**
 * One element of a `dense<...>` literal for dtype `d` (the value is rounded to `d` first). Finite f32 prints as
 * a round-tripping decimal; non-finite and negative-zero f32, and every bf16/f16, print as hex bits, which MLIR
 * reads as the exact bit pattern.
 */
export function elementLiteral(d: DType, x: number): string {
  const v = roundTo(d, x);
  switch (d) {
    case "f32":
      if (Number.isNaN(v)) return "0x7FC00000";
      if (!Number.isFinite(v) || Object.is(v, -0)) return hex(f32ToBits(v), 8);
      return f32Decimal(v);
    case "bf16":
    case "f16":
      return hex(d === "bf16" ? bf16ToBits(v) : f16ToBits(v), 4);
    case "s32":
    case "u32":
      return String(v);
    case "bool":
      return v ? "true" : "false";
  }
}

/** `dense<...>` for a splat (one value) or full row-major value list of the given type. */
export function denseLiteral(t: TensorType, values: readonly number[]): string {
  const n = numel(t.shape);
  if (n === 0) return "dense<>"; // MLIR's spelling of every empty tensor, whatever its shape
  if (values.length === 1) return `dense<${elementLiteral(t.dtype, values[0]!)}>`;
  if (values.length !== n) {
    throw new Error(`internal: ${values.length} values for shape [${t.shape.join(",")}]`);
  }
  let pos = 0;
  const nest = (dim: number): string => {
    if (dim === t.shape.length) return elementLiteral(t.dtype, values[pos++]!);
    const parts: string[] = [];
    for (let i = 0; i < t.shape[dim]!; i++) parts.push(nest(dim + 1));
    return `[${parts.join(", ")}]`;
  };
  return `dense<${nest(0)}>`;
}

/** An MLIR string literal: quotes and backslashes escaped, control characters as `\XX` hex. */
export function stringLiteral(s: string): string {
  let out = '"';
  for (const ch of s) {
    const c = ch.codePointAt(0)!;
    if (ch === '"' || ch === "\\") out += `\\${ch}`;
    else if (c < 0x20 || c === 0x7f) out += `\\${c.toString(16).toUpperCase().padStart(2, "0")}`;
    else out += ch;
  }
  return `${out}"`;
}

// Ops recorded on one user line share one SourceLoc object (and backward ops share their primal op's), so the
// text of each is built once (per op name, for scoped locations).
const locTexts = new WeakMap<SourceLoc, string>();
const scopedLocTexts = new WeakMap<SourceLoc, Map<string, string>>();

/**
 * `loc("file.ts":12:5)`: a FileLineColLoc, so XLA's messages name the user's line. In a named scope, a NameLoc
 * around it as JAX writes them, `loc("layer0/attention/dot_general"("file.ts":12:5))`: XLA keeps the name as the
 * HLO instruction's op_name, which profiles and dumps show.
 */
export function locText(loc: SourceLoc, opName?: string): string {
  if (loc.scope === undefined) {
    let text = locTexts.get(loc);
    if (text === undefined) {
      text = `loc(${stringLiteral(loc.file)}:${loc.line}:${loc.col})`;
      locTexts.set(loc, text);
    }
    return text;
  }
  let byOp = scopedLocTexts.get(loc);
  if (!byOp) {
    byOp = new Map();
    scopedLocTexts.set(loc, byOp);
  }
  const key = opName ?? "";
  let text = byOp.get(key);
  if (text === undefined) {
    const name = stringLiteral(opName ? `${loc.scope}/${opName}` : loc.scope);
    text = loc.file === "" ? `loc(${name})` : `loc(${name}(${stringLiteral(loc.file)}:${loc.line}:${loc.col}))`;
    byOp.set(key, text);
  }
  return text;
}

/** A symbol name: bare when MLIR's grammar allows it, quoted otherwise. */
export function symbolName(name: string): string {
  return /^[A-Za-z_][A-Za-z0-9_$.-]*$/.test(name) ? `@${name}` : `@${stringLiteral(name)}`;
}
