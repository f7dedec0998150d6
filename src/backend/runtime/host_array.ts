// The element types the runtime moves, the TypedArray that holds each on the host, and checks on host data.
import { checkShape, ELEMENT_TYPES, type ElementType } from "../../ir/types.ts";
import { RuntimeError } from "./errors.ts";

/** The IR's dtypes plus s64 and u8, which some programs (XLA's own index outputs, byte data) return. */
export const RUNTIME_DTYPES = [
  "f32",
  "bf16",
  "f16",
  "s32",
  "s64",
  "u32",
  "u8",
  "bool",
] as const satisfies readonly ElementType[];
export type RuntimeDType = (typeof RUNTIME_DTYPES)[number];

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
export type HostArray<D extends RuntimeDType = RuntimeDType> = HostArrays[D];

type ArrayCtor = { new (length: number): HostArray; readonly name: string };

export const HOST_ARRAY: { readonly [D in RuntimeDType]: ArrayCtor } = {
  f32: Float32Array,
  bf16: Uint16Array,
  f16: Uint16Array,
  s32: Int32Array,
  s64: BigInt64Array,
  u32: Uint32Array,
  u8: Uint8Array,
  bool: Uint8Array,
};

const BY_PJRT = new Map<number, RuntimeDType>(RUNTIME_DTYPES.map((d) => [ELEMENT_TYPES[d].pjrt, d]));
const BY_XLA = new Map<number, RuntimeDType>(RUNTIME_DTYPES.map((d) => [ELEMENT_TYPES[d].xla, d]));

// Names of the PJRT_Buffer_Type values, for messages about types the runtime does not move.
const PJRT_TYPE_NAMES = [
  "INVALID",
  "PRED",
  "S8",
  "S16",
  "S32",
  "S64",
  "U8",
  "U16",
  "U32",
  "U64",
  "F16",
  "F32",
  "F64",
  "BF16",
  "C64",
  "C128",
  "F8E5M2",
  "F8E4M3FN",
  "F8E4M3B11FNUZ",
  "F8E5M2FNUZ",
  "F8E4M3FNUZ",
  "S4",
  "U4",
  "TOKEN",
  "S2",
  "U2",
  "F8E4M3",
  "F8E3M4",
  "F8E8M0FNU",
  "F4E2M1FN",
];

export function isRuntimeDType(x: unknown): x is RuntimeDType {
  return typeof x === "string" && (RUNTIME_DTYPES as readonly string[]).includes(x);
}

export function checkDType(x: unknown): RuntimeDType {
  if (!isRuntimeDType(x))
    throw new RuntimeError(
      "ERR_DTYPE",
      `unknown dtype ${JSON.stringify(x)}; expected one of ${RUNTIME_DTYPES.join(", ")}`,
    );
  return x;
}

export function dtypeFromPjrt(t: number): RuntimeDType | undefined {
  return BY_PJRT.get(t);
}

export function dtypeFromXla(t: number): RuntimeDType | undefined {
  return BY_XLA.get(t);
}

export function pjrtTypeName(t: number): string {
  return PJRT_TYPE_NAMES[t] ?? `type#${t}`;
}

/** Checks that `data` is the TypedArray kind of `dtype` and holds exactly the elements of `shape`. */
export function checkHostData(data: unknown, dtype: RuntimeDType, shape: readonly number[]): void {
  const count = checkShape(shape);
  const ctor = HOST_ARRAY[dtype];
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
export function allocHost<D extends RuntimeDType>(dtype: D, count: number): HostArray<D> {
  return new HOST_ARRAY[dtype](count) as HostArray<D>;
}
