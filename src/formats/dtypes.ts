// Host tensors as raw little-endian bytes in safetensors' dtype vocabulary, and the exact bf16/f16 <-> f32 conversions.

/**
 * Element types as safetensors spells them. These are file dtypes, not the IR's (`src/ir/types.ts` has its own,
 * smaller set): a checkpoint may hold I64 or F64 that never reach a device.
 */
export const HOST_DTYPES = [
  "F64",
  "F32",
  "F16",
  "BF16",
  "I64",
  "I32",
  "I16",
  "I8",
  "U64",
  "U32",
  "U16",
  "U8",
  "BOOL",
] as const;
export type HostDType = (typeof HOST_DTYPES)[number];

const SIZES: Record<HostDType, number> = {
  F64: 8,
  F32: 4,
  F16: 2,
  BF16: 2,
  I64: 8,
  I32: 4,
  I16: 2,
  I8: 1,
  U64: 8,
  U32: 4,
  U16: 2,
  U8: 1,
  BOOL: 1,
};

/**
 * A tensor in host memory: C-order, little-endian element bytes, exactly `numel(shape) * dtypeSize(dtype)` long.
 * Raw bytes rather than a typed array so that bf16/f16 travel unconverted and reads need no copy.
 */
export interface HostTensor {
  dtype: HostDType;
  shape: number[];
  data: Uint8Array;
}

export function isHostDType(s: string): s is HostDType {
  return Object.hasOwn(SIZES, s);
}

export function dtypeSize(d: HostDType): number {
  return SIZES[d];
}

export function isFloatDType(d: HostDType): boolean {
  return d === "F64" || d === "F32" || d === "F16" || d === "BF16";
}

export function numel(shape: readonly number[]): number {
  let n = 1;
  for (const d of shape) n *= d;
  return n;
}

/** Bytes of a dense tensor; throws RangeError past 2^53 so a corrupt header cannot produce a bogus size. */
export function byteLengthOf(dtype: HostDType, shape: readonly number[]): number {
  const n = numel(shape) * SIZES[dtype];
  if (!Number.isSafeInteger(n)) throw new RangeError(`tensor of ${dtype}[${shape.join(",")}] is too large`);
  return n;
}

function checkShape(shape: readonly number[]): void {
  for (const d of shape) {
    if (!Number.isSafeInteger(d) || d < 0) throw new RangeError(`invalid shape [${shape.join(", ")}]`);
  }
}

/** A tensor over `data` (not copied), or a zero-filled one; checks that the byte length fits dtype and shape. */
export function hostTensor(dtype: HostDType, shape: readonly number[], data?: Uint8Array): HostTensor {
  checkShape(shape);
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
  if (elt !== SIZES[dtype]) {
    throw new TypeError(`a ${arr.constructor.name} (${elt}-byte elements) cannot hold ${dtype} (${SIZES[dtype]} bytes)`);
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
  const size = SIZES[t.dtype];
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

// ---- scalar bit conversions -------------------------------------------------------------------------------------

const scratchF = new Float32Array(1);
const scratchU = new Uint32Array(scratchF.buffer);

/** The IEEE binary32 bit pattern of `x` rounded to float32. */
export function f32ToBits(x: number): number {
  scratchF[0] = x;
  return scratchU[0]!;
}

export function bitsToF32(bits: number): number {
  scratchU[0] = bits >>> 0;
  return scratchF[0]!;
}

/** bfloat16 bits from float32 bits, round-to-nearest-even; NaN stays NaN (quiet, sign kept) rather than rounding to inf. */
export function bf16FromF32Bits(b: number): number {
  b >>>= 0;
  if ((b & 0x7fffffff) > 0x7f800000) return ((b >>> 16) | 0x0040) & 0xffff;
  return ((b + 0x7fff + ((b >>> 16) & 1)) >>> 16) & 0xffff;
}

/** float32 bits of a bfloat16: bf16 is the top half of f32, so this is exact. */
export function bf16ToF32Bits(h: number): number {
  return ((h & 0xffff) << 16) >>> 0;
}

/** IEEE binary16 bits from float32 bits, round-to-nearest-even, with gradual underflow and overflow to inf. */
export function f16FromF32Bits(b: number): number {
  b >>>= 0;
  const sign = (b >>> 16) & 0x8000;
  const exp = (b >>> 23) & 0xff;
  const mant = b & 0x7fffff;
  if (exp === 0xff) return sign | 0x7c00 | (mant !== 0 ? 0x200 | (mant >>> 13) : 0);
  const e = exp - 112; // rebias 127 -> 15
  if (e >= 31) return sign | 0x7c00;
  if (e <= 0) {
    // Below 2^-25 everything rounds to zero (2^-25 itself is a tie that goes to the even zero).
    if (e < -10) return sign;
    const m = mant | 0x800000;
    const shift = 14 - e; // 14..24: drops the bits below the subnormal unit 2^-24
    const half = 1 << (shift - 1);
    const rem = m & ((1 << shift) - 1);
    let r = m >>> shift;
    if (rem > half || (rem === half && (r & 1) === 1)) r++;
    return sign | r; // a carry into 0x400 is exactly the smallest normal
  }
  let r = (e << 10) | (mant >>> 13);
  const rem = mant & 0x1fff;
  if (rem > 0x1000 || (rem === 0x1000 && (r & 1) === 1)) r++; // a carry may reach 0x7c00 = inf, as it should
  return sign | r;
}

/** float32 bits of a binary16 (exact: every f16 is an f32); NaN payloads are kept. */
export function f16ToF32Bits(h: number): number {
  const sign = (h & 0x8000) << 16;
  const e = (h >>> 10) & 0x1f;
  const m = h & 0x3ff;
  if (e === 0x1f) return (sign | 0x7f800000 | (m << 13)) >>> 0;
  if (e === 0) {
    if (m === 0) return sign >>> 0;
    return (sign | f32ToBits(m * 2 ** -24)) >>> 0;
  }
  return (sign | ((e + 112) << 23) | (m << 13)) >>> 0;
}

export function f32ToBf16(x: number): number {
  return bf16FromF32Bits(f32ToBits(x));
}

export function bf16ToF32(h: number): number {
  return bitsToF32(bf16ToF32Bits(h));
}

export function f32ToF16(x: number): number {
  return f16FromF32Bits(f32ToBits(x));
}

export function f16ToF32(h: number): number {
  return bitsToF32(f16ToF32Bits(h));
}

// ---- whole-tensor conversions -----------------------------------------------------------------------------------

let f16Table: Uint32Array | undefined;
function f16ToF32Table(): Uint32Array {
  if (f16Table === undefined) {
    f16Table = new Uint32Array(65536);
    for (let h = 0; h < 65536; h++) f16Table[h] = f16ToF32Bits(h);
  }
  return f16Table;
}

/** The tensor's values as float32 (exact from F16/BF16/F32; rounded from F64 and wide integers). Always a fresh array. */
export function toFloat32(t: HostTensor): Float32Array {
  const n = numel(t.shape);
  const out = new Float32Array(n);
  switch (t.dtype) {
    case "F32":
      out.set(typedView(t as HostTensor & { dtype: "F32" }));
      break;
    case "BF16": {
      const src = typedView(t as HostTensor & { dtype: "BF16" });
      const o = new Uint32Array(out.buffer);
      for (let i = 0; i < n; i++) o[i] = src[i]! << 16;
      break;
    }
    case "F16": {
      const src = typedView(t as HostTensor & { dtype: "F16" });
      const o = new Uint32Array(out.buffer);
      const table = f16ToF32Table();
      for (let i = 0; i < n; i++) o[i] = table[src[i]!]!;
      break;
    }
    case "I64":
    case "U64": {
      const src = typedView(t) as BigInt64Array | BigUint64Array;
      for (let i = 0; i < n; i++) out[i] = Number(src[i]!);
      break;
    }
    default:
      out.set(typedView(t) as Float64Array | Int32Array | Uint32Array | Int16Array | Uint16Array | Int8Array | Uint8Array);
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
  checkShape(shape);
  const n = numel(shape);
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
      const bits = new Uint32Array(f.buffer, f.byteOffset, n);
      const o = typedView(t as HostTensor & { dtype: "BF16" });
      if (dtype === "BF16") for (let i = 0; i < n; i++) o[i] = bf16FromF32Bits(bits[i]!);
      else for (let i = 0; i < n; i++) o[i] = f16FromF32Bits(bits[i]!);
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
