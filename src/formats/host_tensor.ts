// Host tensors: raw little-endian bytes in a file dtype (safetensors' spelling), viewed, converted and compared.
import { bf16FromF32Array, bf16ToF32Array, f16FromF32Array, f16ToF32Array } from "../ir/float_bits.ts";
import { byteWidth, checkShape, numel, type HostDType } from "../ir/types.ts";

/**
 * A tensor in host memory: C-order, little-endian element bytes, exactly `numel(shape) * byteWidth(dtype)` long.
 * Raw bytes rather than a typed array so that bf16/f16 travel unconverted and reads need no copy.
 */
export interface HostTensor {
  dtype: HostDType;
  shape: number[];
  data: Uint8Array;
}

/** Bytes of a dense tensor; throws past 2^53 so a corrupt header cannot produce a bogus size. */
export function byteLengthOf(dtype: HostDType, shape: readonly number[]): number {
  const n = checkShape(shape, `a ${dtype} tensor's shape`) * byteWidth(dtype);
  if (!Number.isSafeInteger(n)) throw new RangeError(`tensor of ${dtype}[${shape.join(",")}] is too large`);
  return n;
}

/** A tensor over `data` (not copied), or a zero-filled one; checks that the byte length fits dtype and shape. */
export function hostTensor(dtype: HostDType, shape: readonly number[], data?: Uint8Array): HostTensor {
  const len = byteLengthOf(dtype, shape);
  if (data === undefined) return { dtype, shape: [...shape], data: new Uint8Array(len) };
  if (data.byteLength !== len) {
    throw new RangeError(`${dtype}[${shape.join(",")}] needs ${len} bytes, got ${data.byteLength}`);
  }
  return { dtype, shape: [...shape], data };
}

/** A tensor holding a copy of a typed array's bytes; the element size must match the dtype's (F16/BF16 take Uint16Array bit patterns). */
export function fromTypedArray(dtype: HostDType, shape: readonly number[], arr: ArrayBufferView): HostTensor {
  const elt = "BYTES_PER_ELEMENT" in arr ? (arr as unknown as { BYTES_PER_ELEMENT: number }).BYTES_PER_ELEMENT : 1;
  if (elt !== byteWidth(dtype)) {
    throw new TypeError(
      `a ${arr.constructor.name} (${elt}-byte elements) cannot hold ${dtype} (${byteWidth(dtype)} bytes)`,
    );
  }
  const bytes = new Uint8Array(arr.buffer, arr.byteOffset, arr.byteLength).slice();
  return hostTensor(dtype, shape, bytes);
}

export type TypedArrayOf<D extends HostDType> = D extends "F64"
  ? Float64Array
  : D extends "F32"
    ? Float32Array
    : D extends "F16" | "BF16" | "U16"
      ? Uint16Array
      : D extends "I64"
        ? BigInt64Array
        : D extends "U64"
          ? BigUint64Array
          : D extends "I32"
            ? Int32Array
            : D extends "U32"
              ? Uint32Array
              : D extends "I16"
                ? Int16Array
                : D extends "I8"
                  ? Int8Array
                  : Uint8Array;

const LITTLE_ENDIAN = new Uint8Array(new Uint16Array([1]).buffer)[0] === 1;

/**
 * The tensor's elements as the matching typed array (bit patterns for F16/BF16). Shares memory with `t.data`
 * when it is aligned, else works on a copy; so treat it as read-only unless you own the tensor.
 */
export function typedView<D extends HostDType>(t: HostTensor & { dtype: D }): TypedArrayOf<D>;
export function typedView(t: HostTensor): ArrayBufferView;
export function typedView(t: HostTensor): ArrayBufferView {
  if (!LITTLE_ENDIAN) throw new Error("tessera formats assume a little-endian host");
  const size = byteWidth(t.dtype);
  let d = t.data;
  if (d.byteOffset % size !== 0) d = d.slice();
  const n = d.byteLength / size;
  switch (t.dtype) {
    case "F64":
      return new Float64Array(d.buffer, d.byteOffset, n);
    case "F32":
      return new Float32Array(d.buffer, d.byteOffset, n);
    case "F16":
    case "BF16":
    case "U16":
      return new Uint16Array(d.buffer, d.byteOffset, n);
    case "I64":
      return new BigInt64Array(d.buffer, d.byteOffset, n);
    case "U64":
      return new BigUint64Array(d.buffer, d.byteOffset, n);
    case "I32":
      return new Int32Array(d.buffer, d.byteOffset, n);
    case "U32":
      return new Uint32Array(d.buffer, d.byteOffset, n);
    case "I16":
      return new Int16Array(d.buffer, d.byteOffset, n);
    case "I8":
      return new Int8Array(d.buffer, d.byteOffset, n);
    case "U8":
    case "BOOL":
      return d;
  }
}

// ---- whole-tensor conversions -----------------------------------------------------------------------------------

/** The tensor's values as float32 (exact from F16/BF16/F32; rounded from F64 and wide integers). Always a fresh array. */
export function toFloat32(t: HostTensor): Float32Array {
  const n = numel(t.shape);
  const out = new Float32Array(n);
  switch (t.dtype) {
    case "F32":
      out.set(typedView(t as HostTensor & { dtype: "F32" }));
      break;
    case "BF16":
      bf16ToF32Array(typedView(t as HostTensor & { dtype: "BF16" }), out);
      break;
    case "F16":
      f16ToF32Array(typedView(t as HostTensor & { dtype: "F16" }), out);
      break;
    case "I64":
    case "U64": {
      const src = typedView(t) as BigInt64Array | BigUint64Array;
      for (let i = 0; i < n; i++) out[i] = Number(src[i]!);
      break;
    }
    default:
      out.set(
        typedView(t) as Float64Array | Int32Array | Uint32Array | Int16Array | Uint16Array | Int8Array | Uint8Array,
      );
  }
  return out;
}

const INT_RANGE: Partial<Record<HostDType, [number, number]>> = {
  I32: [-(2 ** 31), 2 ** 31 - 1],
  U32: [0, 2 ** 32 - 1],
  I16: [-(2 ** 15), 2 ** 15 - 1],
  U16: [0, 2 ** 16 - 1],
  I8: [-128, 127],
  U8: [0, 255],
  I64: [Number.MIN_SAFE_INTEGER, Number.MAX_SAFE_INTEGER],
  U64: [0, Number.MAX_SAFE_INTEGER],
};

/**
 * A tensor of `dtype` from float32 values (or plain numbers). F16/BF16 round to nearest even, overflow to inf,
 * keep NaN; plain numbers go through float32 first for those, so pass float32 data to avoid double rounding.
 * Integer dtypes take only integral values in range (RangeError otherwise); BOOL stores nonzero as 1.
 */
export function fromFloat32(
  values: Float32Array | ArrayLike<number>,
  shape: readonly number[],
  dtype: HostDType = "F32",
): HostTensor {
  const n = checkShape(shape);
  if (values.length !== n) {
    throw new RangeError(`${values.length} values do not fill shape [${shape.join(", ")}] (${n} elements)`);
  }
  const t = hostTensor(dtype, shape);
  switch (dtype) {
    case "F32":
      typedView(t as HostTensor & { dtype: "F32" }).set(values);
      return t;
    case "F64":
      typedView(t as HostTensor & { dtype: "F64" }).set(values);
      return t;
    case "BF16":
    case "F16": {
      const f = values instanceof Float32Array ? values : Float32Array.from(values);
      const o = typedView(t as HostTensor & { dtype: "BF16" });
      if (dtype === "BF16") bf16FromF32Array(f, o);
      else f16FromF32Array(f, o);
      return t;
    }
    case "BOOL": {
      for (let i = 0; i < n; i++) t.data[i] = values[i] !== 0 ? 1 : 0;
      return t;
    }
    default: {
      const [lo, hi] = INT_RANGE[dtype]!;
      for (let i = 0; i < n; i++) {
        const v = values[i]!;
        if (!Number.isInteger(v) || v < lo || v > hi) {
          throw new RangeError(`value ${v} at index ${i} is not representable as ${dtype}`);
        }
      }
      const o = typedView(t);
      if (o instanceof BigInt64Array || o instanceof BigUint64Array) {
        for (let i = 0; i < n; i++) o[i] = BigInt(values[i]!);
      } else {
        (o as Int32Array).set(values);
      }
      return t;
    }
  }
}

/** The tensor's values as plain numbers, exact for every dtype except 64-bit integers past 2^53. */
function numbersOf(t: HostTensor): ArrayLike<number> {
  switch (t.dtype) {
    case "F16":
    case "BF16":
      return toFloat32(t);
    case "I64":
    case "U64": {
      const src = typedView(t) as BigInt64Array | BigUint64Array;
      const out = new Float64Array(src.length);
      for (let i = 0; i < src.length; i++) out[i] = Number(src[i]!);
      return out;
    }
    default:
      return typedView(t) as Float64Array | Float32Array | Int32Array | Uint8Array;
  }
}

/**
 * The tensor in another dtype (the same object when it already is). Values are converted, not bit-cast: F64
 * sources reach F16/BF16 through float32 (so may round twice); integer targets take only integral, in-range values.
 */
export function castTensor(t: HostTensor, dtype: HostDType): HostTensor {
  if (t.dtype === dtype) return t;
  return fromFloat32(numbersOf(t), t.shape, dtype);
}

/** Whether two tensors have the same dtype, shape and bytes (bit-exact, so NaN payloads and -0 count). */
export function tensorsEqual(a: HostTensor, b: HostTensor): boolean {
  if (a.dtype !== b.dtype || a.shape.length !== b.shape.length) return false;
  if (a.shape.some((d, i) => d !== b.shape[i])) return false;
  if (a.data.byteLength !== b.data.byteLength) return false;
  for (let i = 0; i < a.data.byteLength; i++) if (a.data[i] !== b.data[i]) return false;
  return true;
}
