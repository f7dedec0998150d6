// Rounding float64 values to f32/bf16/f16 (round to nearest, ties to even) and reading/writing their bit patterns.

const f32Scratch = new DataView(new ArrayBuffer(4));

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

export function f32ToBits(x: number): number {
  f32Scratch.setFloat32(0, x);
  return f32Scratch.getUint32(0);
}

export function f32FromBits(bits: number): number {
  f32Scratch.setUint32(0, bits >>> 0);
  return f32Scratch.getFloat32(0);
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
