// Element types (the one dtype vocabulary of every layer), shapes, tensor types and source locations.
import { TesseraError } from "../errors.ts";

/** What one element type is, for the IR, the runtime (PJRT/XLA type numbers) and files (the safetensors name). */
export interface ElementTypeInfo {
  readonly bytes: number;
  readonly kind: "float" | "signed" | "unsigned" | "bool";
  /** How safetensors headers (and HF, PEFT) spell it. */
  readonly safetensors: string;
  /** PJRT_Buffer_Type */
  readonly pjrt: number;
  /** xla::PrimitiveType (in HLO protos; differs from PJRT's numbering for bf16) */
  readonly xla: number;
}

/**
 * Every element type tessera names anywhere. The IR computes on DTYPES; the runtime also moves s64 and u8; a
 * checkpoint may hold any of them (F64, I16...) even though only DTYPES ever reach a traced program.
 */
export const ELEMENT_TYPES = {
  f64: { bytes: 8, kind: "float", safetensors: "F64", pjrt: 12, xla: 12 },
  f32: { bytes: 4, kind: "float", safetensors: "F32", pjrt: 11, xla: 11 },
  f16: { bytes: 2, kind: "float", safetensors: "F16", pjrt: 10, xla: 10 },
  bf16: { bytes: 2, kind: "float", safetensors: "BF16", pjrt: 13, xla: 16 },
  s64: { bytes: 8, kind: "signed", safetensors: "I64", pjrt: 5, xla: 5 },
  s32: { bytes: 4, kind: "signed", safetensors: "I32", pjrt: 4, xla: 4 },
  s16: { bytes: 2, kind: "signed", safetensors: "I16", pjrt: 3, xla: 3 },
  s8: { bytes: 1, kind: "signed", safetensors: "I8", pjrt: 2, xla: 2 },
  u64: { bytes: 8, kind: "unsigned", safetensors: "U64", pjrt: 9, xla: 9 },
  u32: { bytes: 4, kind: "unsigned", safetensors: "U32", pjrt: 8, xla: 8 },
  u16: { bytes: 2, kind: "unsigned", safetensors: "U16", pjrt: 7, xla: 7 },
  u8: { bytes: 1, kind: "unsigned", safetensors: "U8", pjrt: 6, xla: 6 },
  bool: { bytes: 1, kind: "bool", safetensors: "BOOL", pjrt: 1, xla: 1 },
} as const satisfies Record<string, ElementTypeInfo>;
export type ElementType = keyof typeof ELEMENT_TYPES;
const ELEMENT_TYPE_NAMES = Object.keys(ELEMENT_TYPES) as ElementType[];

/** The element types of IR values. */
export const DTYPES = ["f32", "bf16", "f16", "s32", "u32", "bool"] as const satisfies readonly ElementType[];
export type DType = (typeof DTYPES)[number];

/** Element types as files spell them (safetensors headers); a host tensor's dtype. */
export type HostDType = (typeof ELEMENT_TYPES)[ElementType]["safetensors"];
export const HOST_DTYPES: readonly HostDType[] = ELEMENT_TYPE_NAMES.map((t) => ELEMENT_TYPES[t].safetensors);
const BY_HOST_NAME = new Map<string, ElementType>(ELEMENT_TYPE_NAMES.map((t) => [ELEMENT_TYPES[t].safetensors, t]));

export function isHostDType(s: string): s is HostDType {
  return BY_HOST_NAME.has(s);
}

/** The element type a file dtype names (`"BF16"` gives `"bf16"`). */
export function fromHostDType(d: HostDType): ElementType {
  return BY_HOST_NAME.get(d)!;
}

export function toHostDType(t: ElementType): HostDType {
  return ELEMENT_TYPES[t].safetensors;
}

/** The table row of a dtype in either spelling (`"f32"` or `"F32"`). */
function info(d: ElementType | HostDType): ElementTypeInfo {
  return ELEMENT_TYPES[d in ELEMENT_TYPES ? (d as ElementType) : fromHostDType(d as HostDType)];
}

/** Bytes per element. */
export function byteWidth(d: ElementType | HostDType): number {
  return info(d).bytes;
}

export type Shape = readonly number[];

export interface TensorType {
  readonly dtype: DType;
  readonly shape: Shape;
}

/** Where the user's program created an op: reported in errors and emitted as StableHLO `loc(...)`. */
export interface SourceLoc {
  /** The user's file; "" when only a scope is known (location capture off). */
  readonly file: string;
  readonly line: number;
  readonly col: number;
  /** The `namedScope` path the op was traced in (`layer0/attention`), as jax.named_scope names it. */
  readonly scope?: string;
}

export function isDType(s: string): s is DType {
  return (DTYPES as readonly string[]).includes(s);
}

export function isFloat(d: ElementType | HostDType): boolean {
  return info(d).kind === "float";
}

export function isInteger(d: ElementType | HostDType): boolean {
  const k = info(d).kind;
  return k === "signed" || k === "unsigned";
}

/** Bits per element, used by bitcast_convert and memory estimates. */
export function bitWidth(d: ElementType | HostDType): number {
  return 8 * info(d).bytes;
}

export function numel(shape: Shape): number {
  let n = 1;
  for (const d of shape) n *= d;
  return n;
}

/** A shape given from outside a traced program (an argument, a file header, host data) that no tensor can have. */
export class ShapeError extends TesseraError {
  constructor(message: string) {
    super(message, { code: "ERR_SHAPE" });
  }
}

/** Checks that every dimension is a non-negative safe integer and the element count is too; returns the count. */
export function checkShape(shape: Shape, what = "shape"): number {
  if (!Array.isArray(shape)) throw new ShapeError(`${what} must be an array of dimension sizes`);
  let n = 1;
  for (const d of shape) {
    if (!Number.isSafeInteger(d) || d < 0)
      throw new ShapeError(`${what} [${shape.join(", ")}] has an invalid dimension ${String(d)}`);
    n *= d;
  }
  if (!Number.isSafeInteger(n)) throw new ShapeError(`${what} [${shape.join(", ")}] is too large`);
  return n;
}

/** `range(n)` is 0, 1, ..., n-1; `range(from, to)` is from, ..., to-1 (empty when to <= from). */
export function range(from: number, to?: number): number[] {
  const [lo, hi] = to === undefined ? [0, from] : [from, to];
  return Array.from({ length: Math.max(hi - lo, 0) }, (_, i) => lo + i);
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
export function formatType(t: { readonly dtype: string; readonly shape: Shape }): string {
  return `${t.dtype}[${t.shape.join(",")}]`;
}

export function formatLoc(loc: SourceLoc): string {
  if (loc.file === "") return loc.scope ?? "";
  return `${loc.file}:${loc.line}:${loc.col}`;
}

/** ` in layer0/attention` for a scoped location (put before ` at file:line:col` in messages), else "". */
export function scopeSuffix(loc: SourceLoc | undefined): string {
  return loc?.scope ? ` in ${loc.scope}` : "";
}
