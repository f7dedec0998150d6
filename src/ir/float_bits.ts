// The one f32/bf16/f16 codec: rounding (to nearest, ties to even) and bit patterns, per float64 value and in bulk.

/*
 * Two rounding sources, one file: the interpreter and the emitter round float64 values (roundBf16, then bf16ToBits);
 * host tensors round float32 arrays bit by bit (bf16FromF32Bits, bf16FromF32Array), as torch's .to(bfloat16) does.
 */

const scratchF = new Float32Array(1);
const scratchU = new Uint32Array(scratchF.buffer);

/**
 * Rounds to a binary float with `fracBits` stored fraction bits, smallest normal exponent `minExp` and largest finite
 * value `maxFinite`, subnormals included. Dividing by a power of two is exact, so the tie test below is exact too.
 */
function roundToFormat(x: number, fracBits: number, minExp: number, maxFinite: number): number {
  if (x === 0 || !Number.isFinite(x)) return x;
  const a = Math.abs(x);
  let e = Math.floor(Math.log2(a));
  // log2 may be off by one next to powers of two.
  if (2 ** e > a) e--;
  else if (2 ** (e + 1) <= a) e++;
  const ulp = 2 ** (Math.max(e, minExp) - fracBits);
  const q = a / ulp;
  const f = Math.floor(q);
  const rem = q - f;
  const n = rem > 0.5 || (rem === 0.5 && f % 2 === 1) ? f + 1 : f;
  const r = n * ulp;
  const out = r > maxFinite ? Infinity : r;
  return x < 0 ? -out : out;
}

export function roundF32(x: number): number {
  return Math.fround(x);
}

export function roundBf16(x: number): number {
  return roundToFormat(x, 7, -126, (2 - 2 ** -7) * 2 ** 127);
}

export function roundF16(x: number): number {
  return roundToFormat(x, 10, -14, 65504);
}

/** The IEEE binary32 bit pattern of `x` rounded to float32. */
export function f32ToBits(x: number): number {
  scratchF[0] = x;
  return scratchU[0]!;
}

export function f32FromBits(bits: number): number {
  scratchU[0] = bits >>> 0;
  return scratchF[0]!;
}

/** Bits of a value already representable in bf16 (bf16 is the upper half of an f32). */
export function bf16ToBits(x: number): number {
  if (Number.isNaN(x)) return 0x7fc0;
  return f32ToBits(x) >>> 16;
}

export function bf16FromBits(bits: number): number {
  return f32FromBits((bits & 0xffff) << 16);
}

/** Bits of a value already representable in f16. */
export function f16ToBits(x: number): number {
  if (Number.isNaN(x)) return 0x7e00;
  const sign = x < 0 || Object.is(x, -0) ? 0x8000 : 0;
  const a = Math.abs(x);
  if (a === Infinity) return sign | 0x7c00;
  if (a === 0) return sign;
  if (a < 2 ** -14) return sign | Math.round(a / 2 ** -24); // subnormal: exact multiple of 2^-24
  let e = Math.floor(Math.log2(a));
  if (2 ** e > a) e--;
  else if (2 ** (e + 1) <= a) e++;
  const frac = Math.round((a / 2 ** e - 1) * 1024);
  return sign | ((e + 15) << 10) | frac;
}

export function f16FromBits(bits: number): number {
  const sign = bits & 0x8000 ? -1 : 1;
  const exp = (bits >> 10) & 0x1f;
  const frac = bits & 0x3ff;
  if (exp === 0) return sign * frac * 2 ** -24;
  if (exp === 0x1f) return frac ? NaN : sign * Infinity;
  return sign * (1 + frac / 1024) * 2 ** (exp - 15);
}

// ---- float32 bit patterns to and from bf16/f16 bit patterns --------------------------------------------------

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

// ---- whole arrays -------------------------------------------------------------------------------------------------

/** bf16 bits of each float32 in `src`, rounded to nearest even, into `out` (a fresh array by default). */
export function bf16FromF32Array(src: Float32Array, out: Uint16Array = new Uint16Array(src.length)): Uint16Array {
  const bits = new Uint32Array(src.buffer, src.byteOffset, src.length);
  for (let i = 0; i < src.length; i++) out[i] = bf16FromF32Bits(bits[i]!);
  return out;
}

/** f16 bits of each float32 in `src`, rounded to nearest even, into `out` (a fresh array by default). */
export function f16FromF32Array(src: Float32Array, out: Uint16Array = new Uint16Array(src.length)): Uint16Array {
  const bits = new Uint32Array(src.buffer, src.byteOffset, src.length);
  for (let i = 0; i < src.length; i++) out[i] = f16FromF32Bits(bits[i]!);
  return out;
}

/** The float32 values of bf16 bit patterns (exact), into `out` (a fresh array by default). */
export function bf16ToF32Array(src: Uint16Array, out: Float32Array = new Float32Array(src.length)): Float32Array {
  const o = new Uint32Array(out.buffer, out.byteOffset, src.length);
  for (let i = 0; i < src.length; i++) o[i] = src[i]! << 16;
  return out;
}

let f16Table: Uint32Array | undefined;

/** The float32 values of f16 bit patterns (exact, NaN payloads kept), into `out` (a fresh array by default). */
export function f16ToF32Array(src: Uint16Array, out: Float32Array = new Float32Array(src.length)): Float32Array {
  if (f16Table === undefined) {
    f16Table = new Uint32Array(65536);
    for (let h = 0; h < 65536; h++) f16Table[h] = f16ToF32Bits(h);
  }
  const o = new Uint32Array(out.buffer, out.byteOffset, src.length);
  for (let i = 0; i < src.length; i++) o[i] = f16Table[src[i]!]!;
  return out;
}
