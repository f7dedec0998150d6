// ggml's tensor types as stored in GGUF files, and dequantization of the supported ones into float32 (as ggml does it).
//
// The block layouts and formulas are those of ggml-quants.c (dequantize_row_*). Products and sums are rounded to
// float32 at each step, as ggml's C code and gguf-py's numpy code compute them, so a dequantized value is the
// one llama.cpp and transformers see, not a float64 approximation of it.

import { f16ToF32Array } from "../ir/float_bits.ts";

export interface GgmlType {
  readonly id: number;
  readonly name: string;
  /** Elements per block (1 for plain float types). */
  readonly blockSize: number;
  /** Bytes per block. */
  readonly typeSize: number;
  /** Whether this reader can turn it into float32. */
  readonly supported: boolean;
}

const QK = 32; // legacy block size
const QK_K = 256; // k-quant super-block size

function t(id: number, name: string, blockSize: number, typeSize: number, supported: boolean): GgmlType {
  return { id, name, blockSize, typeSize, supported };
}

/** Every type id ggml defines (so an unsupported one is named, not just numbered). */
export const GGML_TYPES: ReadonlyMap<number, GgmlType> = new Map(
  [
    t(0, "F32", 1, 4, true),
    t(1, "F16", 1, 2, true),
    t(2, "Q4_0", QK, 18, true),
    t(3, "Q4_1", QK, 20, true),
    t(6, "Q5_0", QK, 22, true),
    t(7, "Q5_1", QK, 24, true),
    t(8, "Q8_0", QK, 34, true),
    t(9, "Q8_1", QK, 36, false),
    t(10, "Q2_K", QK_K, 84, false),
    t(11, "Q3_K", QK_K, 110, false),
    t(12, "Q4_K", QK_K, 144, true),
    t(13, "Q5_K", QK_K, 176, true),
    t(14, "Q6_K", QK_K, 210, true),
    t(15, "Q8_K", QK_K, 292, false),
    t(16, "IQ2_XXS", QK_K, 66, false),
    t(17, "IQ2_XS", QK_K, 74, false),
    t(18, "IQ3_XXS", QK_K, 98, false),
    t(19, "IQ1_S", QK_K, 50, false),
    t(20, "IQ4_NL", QK, 18, false),
    t(21, "IQ3_S", QK_K, 110, false),
    t(22, "IQ2_S", QK_K, 82, false),
    t(23, "IQ4_XS", QK_K, 136, false),
    t(24, "I8", 1, 1, false),
    t(25, "I16", 1, 2, false),
    t(26, "I32", 1, 4, false),
    t(27, "I64", 1, 8, false),
    t(28, "F64", 1, 8, false),
    t(29, "IQ1_M", QK_K, 56, false),
    t(30, "BF16", 1, 2, true),
    t(34, "TQ1_0", QK_K, 54, false),
    t(35, "TQ2_0", QK_K, 66, false),
  ].map((x) => [x.id, x]),
);

/** The type for an id, or undefined for an id ggml does not define. */
export function ggmlType(id: number): GgmlType | undefined {
  return GGML_TYPES.get(id);
}

/** A type by name (tests and messages). */
export function ggmlTypeByName(name: string): GgmlType {
  for (const x of GGML_TYPES.values()) if (x.name === name) return x;
  throw new Error(`no ggml type named ${name}`);
}

/** Bytes `n` elements of `type` take (n a multiple of the block size). */
export function ggmlByteSize(type: GgmlType, n: number): number {
  return (n / type.blockSize) * type.typeSize;
}

const f = Math.fround;

// One shared scratch for reading a single half at an arbitrary byte offset.
const h16 = new Uint16Array(1);
const h32 = new Float32Array(1);
function half(b: Uint8Array, o: number): number {
  h16[0] = b[o]! | (b[o + 1]! << 8);
  f16ToF32Array(h16, h32);
  return h32[0]!;
}

function deqQ4_0(b: Uint8Array, y: Float32Array, nb: number): void {
  for (let i = 0, o = 0; i < nb; i++, o += 18) {
    const d = half(b, o);
    const base = i * QK;
    for (let j = 0; j < 16; j++) {
      const q = b[o + 2 + j]!;
      y[base + j] = f(((q & 0xf) - 8) * d);
      y[base + j + 16] = f(((q >> 4) - 8) * d);
    }
  }
}

function deqQ4_1(b: Uint8Array, y: Float32Array, nb: number): void {
  for (let i = 0, o = 0; i < nb; i++, o += 20) {
    const d = half(b, o);
    const m = half(b, o + 2);
    const base = i * QK;
    for (let j = 0; j < 16; j++) {
      const q = b[o + 4 + j]!;
      y[base + j] = f(f((q & 0xf) * d) + m);
      y[base + j + 16] = f(f((q >> 4) * d) + m);
    }
  }
}

function u32(b: Uint8Array, o: number): number {
  return (b[o]! | (b[o + 1]! << 8) | (b[o + 2]! << 16) | (b[o + 3]! << 24)) >>> 0;
}

function deqQ5_0(b: Uint8Array, y: Float32Array, nb: number): void {
  for (let i = 0, o = 0; i < nb; i++, o += 22) {
    const d = half(b, o);
    const qh = u32(b, o + 2);
    const base = i * QK;
    for (let j = 0; j < 16; j++) {
      const q = b[o + 6 + j]!;
      const h0 = ((qh >>> j) << 4) & 0x10;
      const h1 = (qh >>> (j + 12)) & 0x10;
      y[base + j] = f((((q & 0xf) | h0) - 16) * d);
      y[base + j + 16] = f((((q >> 4) | h1) - 16) * d);
    }
  }
}

function deqQ5_1(b: Uint8Array, y: Float32Array, nb: number): void {
  for (let i = 0, o = 0; i < nb; i++, o += 24) {
    const d = half(b, o);
    const m = half(b, o + 2);
    const qh = u32(b, o + 4);
    const base = i * QK;
    for (let j = 0; j < 16; j++) {
      const q = b[o + 8 + j]!;
      const h0 = ((qh >>> j) << 4) & 0x10;
      const h1 = (qh >>> (j + 12)) & 0x10;
      y[base + j] = f(f(((q & 0xf) | h0) * d) + m);
      y[base + j + 16] = f(f(((q >> 4) | h1) * d) + m);
    }
  }
}

function deqQ8_0(b: Uint8Array, y: Float32Array, nb: number): void {
  for (let i = 0, o = 0; i < nb; i++, o += 34) {
    const d = half(b, o);
    const base = i * QK;
    for (let j = 0; j < QK; j++) y[base + j] = f(((b[o + 2 + j]! << 24) >> 24) * d);
  }
}

/** The 6-bit scale and min of sub-block `j` (0..7) packed into a k-quant's 12 scale bytes at `s`. */
function scaleMinK4(b: Uint8Array, s: number, j: number): [number, number] {
  if (j < 4) return [b[s + j]! & 63, b[s + j + 4]! & 63];
  return [(b[s + j + 4]! & 0xf) | ((b[s + j - 4]! >> 6) << 4), (b[s + j + 4]! >> 4) | ((b[s + j]! >> 6) << 4)];
}

function deqQ4_K(b: Uint8Array, y: Float32Array, nb: number): void {
  for (let i = 0, o = 0; i < nb; i++, o += 144) {
    const d = half(b, o);
    const dmin = half(b, o + 2);
    const sc = o + 4;
    let q = o + 16;
    let out = i * QK_K;
    for (let is = 0; is < 8; is += 2, q += 32) {
      const [s1, m1] = scaleMinK4(b, sc, is);
      const [s2, m2] = scaleMinK4(b, sc, is + 1);
      const d1 = f(d * s1),
        mm1 = f(dmin * m1),
        d2 = f(d * s2),
        mm2 = f(dmin * m2);
      for (let l = 0; l < 32; l++) y[out++] = f(f(d1 * (b[q + l]! & 0xf)) - mm1);
      for (let l = 0; l < 32; l++) y[out++] = f(f(d2 * (b[q + l]! >> 4)) - mm2);
    }
  }
}

function deqQ5_K(b: Uint8Array, y: Float32Array, nb: number): void {
  for (let i = 0, o = 0; i < nb; i++, o += 176) {
    const d = half(b, o);
    const dmin = half(b, o + 2);
    const sc = o + 4;
    const qh = o + 16;
    let ql = o + 48;
    let out = i * QK_K;
    let u1 = 1,
      u2 = 2;
    for (let is = 0; is < 8; is += 2, ql += 32, u1 <<= 2, u2 <<= 2) {
      const [s1, m1] = scaleMinK4(b, sc, is);
      const [s2, m2] = scaleMinK4(b, sc, is + 1);
      const d1 = f(d * s1),
        mm1 = f(dmin * m1),
        d2 = f(d * s2),
        mm2 = f(dmin * m2);
      for (let l = 0; l < 32; l++) y[out++] = f(f(d1 * ((b[ql + l]! & 0xf) + (b[qh + l]! & u1 ? 16 : 0))) - mm1);
      for (let l = 0; l < 32; l++) y[out++] = f(f(d2 * ((b[ql + l]! >> 4) + (b[qh + l]! & u2 ? 16 : 0))) - mm2);
    }
  }
}

function deqQ6_K(b: Uint8Array, y: Float32Array, nb: number): void {
  for (let i = 0, o = 0; i < nb; i++, o += 210) {
    const d = half(b, o + 208);
    let ql = o;
    let qh = o + 128;
    let sc = o + 192;
    let out = i * QK_K;
    for (let n = 0; n < QK_K; n += 128, ql += 64, qh += 32, sc += 8, out += 128) {
      for (let l = 0; l < 32; l++) {
        const is = l >> 4;
        const h = b[qh + l]!;
        const q1 = ((b[ql + l]! & 0xf) | ((h & 3) << 4)) - 32;
        const q2 = ((b[ql + l + 32]! & 0xf) | (((h >> 2) & 3) << 4)) - 32;
        const q3 = ((b[ql + l]! >> 4) | (((h >> 4) & 3) << 4)) - 32;
        const q4 = ((b[ql + l + 32]! >> 4) | (((h >> 6) & 3) << 4)) - 32;
        const s = (k: number) => (b[sc + is + k]! << 24) >> 24; // int8 scales
        y[out + l] = f(f(d * s(0)) * q1);
        y[out + l + 32] = f(f(d * s(2)) * q2);
        y[out + l + 64] = f(f(d * s(4)) * q3);
        y[out + l + 96] = f(f(d * s(6)) * q4);
      }
    }
  }
}

function deqF32(b: Uint8Array, y: Float32Array, n: number): void {
  new Uint8Array(y.buffer, y.byteOffset, n * 4).set(b.subarray(0, n * 4));
}

function deqF16(b: Uint8Array, y: Float32Array, n: number): void {
  const u = new Uint16Array(n);
  new Uint8Array(u.buffer).set(b.subarray(0, n * 2));
  f16ToF32Array(u, y);
}

function deqBF16(b: Uint8Array, y: Float32Array, n: number): void {
  const out = new Uint32Array(y.buffer, y.byteOffset, n);
  for (let i = 0; i < n; i++) out[i] = ((b[2 * i]! | (b[2 * i + 1]! << 8)) << 16) >>> 0;
}

const DEQUANT: Readonly<Record<string, (b: Uint8Array, y: Float32Array, blocks: number) => void>> = {
  F32: deqF32,
  F16: deqF16,
  BF16: deqBF16,
  Q4_0: deqQ4_0,
  Q4_1: deqQ4_1,
  Q5_0: deqQ5_0,
  Q5_1: deqQ5_1,
  Q8_0: deqQ8_0,
  Q4_K: deqQ4_K,
  Q5_K: deqQ5_K,
  Q6_K: deqQ6_K,
};

/**
 * `n` elements of `type` stored in `bytes` as float32. The caller has checked that the type is supported, that
 * `n` is a multiple of its block size and that `bytes` holds them (GgufFile.read does, naming the tensor).
 */
export function dequantize(type: GgmlType, bytes: Uint8Array, n: number): Float32Array {
  const fn = DEQUANT[type.name];
  if (!fn || n % type.blockSize !== 0 || bytes.length < ggmlByteSize(type, n)) {
    throw new Error(`dequantize: cannot read ${n} elements of ${type.name} from ${bytes.length} bytes`);
  }
  const y = new Float32Array(n);
  fn(bytes, y, n / type.blockSize);
  return y;
}
