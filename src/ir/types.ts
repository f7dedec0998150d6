// Element types, shapes, tensor types and source locations: the vocabulary every IR value is described in.

export const DTYPES = ["f32", "bf16", "f16", "s32", "u32", "bool"] as const;
export type DType = (typeof DTYPES)[number];

export type Shape = readonly number[];

export interface TensorType {
  readonly dtype: DType;
  readonly shape: Shape;
}

/** Where the user's program created an op: reported in errors and emitted as StableHLO `loc(...)`. */
export interface SourceLoc {
  readonly file: string;
  readonly line: number;
  readonly col: number;
}

export function isDType(s: string): s is DType {
  return (DTYPES as readonly string[]).includes(s);
}

export function isFloat(d: DType): boolean {
  return d === "f32" || d === "bf16" || d === "f16";
}

export function isInteger(d: DType): boolean {
  return d === "s32" || d === "u32";
}

/** Bits per element, used by bitcast_convert and memory estimates. */
export function bitWidth(d: DType): number {
  switch (d) {
    case "f32":
    case "s32":
    case "u32":
      return 32;
    case "bf16":
    case "f16":
      return 16;
    case "bool":
      return 8;
  }
}

export function numel(shape: Shape): number {
  let n = 1;
  for (const d of shape) n *= d;
  return n;
}

export function tensorType(dtype: DType, shape: Shape): TensorType {
  return { dtype, shape: Object.freeze([...shape]) };
}

export function sameShape(a: Shape, b: Shape): boolean {
  if (a === b) return true;
  if (a.length !== b.length) return false;
  for (let i = 0; i < a.length; i++) if (a[i] !== b[i]) return false;
  return true;
}

export function sameType(a: TensorType, b: TensorType): boolean {
  return a.dtype === b.dtype && sameShape(a.shape, b.shape);
}

/** `f32[2,3]`, the form used in IR text and in every error message. */
export function formatType(t: TensorType): string {
  return `${t.dtype}[${t.shape.join(",")}]`;
}

export function formatLoc(loc: SourceLoc): string {
  return `${loc.file}:${loc.line}:${loc.col}`;
}
