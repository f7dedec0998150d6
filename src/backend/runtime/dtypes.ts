// Element types the runtime moves: names, PJRT and XLA type numbers, sizes, the TypedArray that holds each.
import { RuntimeError } from "./errors.ts";

export type DType = "f32" | "bf16" | "f16" | "s32" | "s64" | "u32" | "u8" | "bool";

/** The host array of each dtype. bf16 and f16 travel as raw 16-bit patterns; bool (PRED) as one byte, 0 or 1. */
export interface HostArrays {
  f32: Float32Array;
  bf16: Uint16Array;
  f16: Uint16Array;
  s32: Int32Array;
  s64: BigInt64Array;
  u32: Uint32Array;
  u8: Uint8Array;
  bool: Uint8Array;
}
export type HostArray<D extends DType = DType> = HostArrays[D];

type ArrayCtor = { new (length: number): HostArray; readonly name: string };

interface DTypeInfo {
  /** PJRT_Buffer_Type */
  readonly pjrt: number;
  /** xla::PrimitiveType (in HLO protos; differs from PJRT's numbering for bf16) */
  readonly xla: number;
  readonly bytes: number;
  readonly array: ArrayCtor;
}

export const DTYPES: { readonly [D in DType]: DTypeInfo } = {
  f32: { pjrt: 11, xla: 11, bytes: 4, array: Float32Array },
  bf16: { pjrt: 13, xla: 16, bytes: 2, array: Uint16Array },
  f16: { pjrt: 10, xla: 10, bytes: 2, array: Uint16Array },
  s32: { pjrt: 4, xla: 4, bytes: 4, array: Int32Array },
  s64: { pjrt: 5, xla: 5, bytes: 8, array: BigInt64Array },
  u32: { pjrt: 8, xla: 8, bytes: 4, array: Uint32Array },
  u8: { pjrt: 6, xla: 6, bytes: 1, array: Uint8Array },
  bool: { pjrt: 1, xla: 1, bytes: 1, array: Uint8Array },
};

const DTYPE_NAMES = Object.keys(DTYPES) as DType[];
const BY_PJRT = new Map<number, DType>(DTYPE_NAMES.map((d) => [DTYPES[d].pjrt, d]));
const BY_XLA = new Map<number, DType>(DTYPE_NAMES.map((d) => [DTYPES[d].xla, d]));

// Names of the PJRT_Buffer_Type values, for messages about types the runtime does not move.
const PJRT_TYPE_NAMES = [
  "INVALID", "PRED", "S8", "S16", "S32", "S64", "U8", "U16", "U32", "U64", "F16", "F32", "F64", "BF16", "C64",
  "C128", "F8E5M2", "F8E4M3FN", "F8E4M3B11FNUZ", "F8E5M2FNUZ", "F8E4M3FNUZ", "S4", "U4", "TOKEN", "S2", "U2",
  "F8E4M3", "F8E3M4", "F8E8M0FNU", "F4E2M1FN",
];

export function isDType(x: unknown): x is DType {
  return typeof x === "string" && Object.prototype.hasOwnProperty.call(DTYPES, x);
}

export function checkDType(x: unknown): DType {
  if (!isDType(x)) throw new RuntimeError("ERR_DTYPE", `unknown dtype ${JSON.stringify(x)}; expected one of ${DTYPE_NAMES.join(", ")}`);
  return x;
}

export function dtypeFromPjrt(t: number): DType | undefined {
  return BY_PJRT.get(t);
}

export function dtypeFromXla(t: number): DType | undefined {
  return BY_XLA.get(t);
}

export function pjrtTypeName(t: number): string {
  return PJRT_TYPE_NAMES[t] ?? `type#${t}`;
}

/** Validates a shape (non-negative safe integers) and returns its element count. */
export function checkShape(shape: readonly number[], what = "shape"): number {
  if (!Array.isArray(shape)) throw new RuntimeError("ERR_SHAPE", `${what} must be an array of dimension sizes`);
  let n = 1;
  for (const d of shape) {
    if (!Number.isSafeInteger(d) || d < 0) throw new RuntimeError("ERR_SHAPE", `${what} [${shape.join(", ")}] has an invalid dimension ${String(d)}`);
    n *= d;
  }
  if (!Number.isSafeInteger(n)) throw new RuntimeError("ERR_SHAPE", `${what} [${shape.join(", ")}] is too large`);
  return n;
}

/** "f32[4,8]" */
export function formatType(dtype: DType | string, shape: readonly number[]): string {
  return `${dtype}[${shape.join(",")}]`;
}

export function sameShape(a: readonly number[], b: readonly number[]): boolean {
  return a.length === b.length && a.every((d, i) => d === b[i]);
}

/** Checks that `data` is the TypedArray kind of `dtype` and holds exactly the elements of `shape`. */
export function checkHostData(data: unknown, dtype: DType, shape: readonly number[]): void {
  const count = checkShape(shape);
  const ctor = DTYPES[dtype].array;
  if (!(data instanceof ctor)) {
    const got = ArrayBuffer.isView(data) ? data.constructor.name : typeof data;
    throw new RuntimeError("ERR_DTYPE", `dtype ${dtype} needs a ${ctor.name}, got ${got}`);
  }
  if ((data as HostArray).length !== count) {
    throw new RuntimeError(
      "ERR_SHAPE",
      `shape [${shape.join(", ")}] needs ${count} elements, the ${ctor.name} holds ${(data as HostArray).length}`,
    );
  }
}

/** A zero-filled host array of `count` elements of `dtype`. */
export function allocHost<D extends DType>(dtype: D, count: number): HostArray<D> {
  return new DTYPES[dtype].array(count) as HostArray<D>;
}

export function byteSize(dtype: DType, shape: readonly number[]): number {
  return DTYPES[dtype].bytes * shape.reduce((a, b) => a * b, 1);
}
