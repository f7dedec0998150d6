// Dequantization of every supported ggml type against blocks whose values were worked out by hand from ggml's layouts.
import { describe, expect, it } from "vitest";
import { dequantize, ggmlTypeByName } from "../../src/formats/gguf_quants.ts";

// f16 bit patterns of the scales used below.
const H = { one: [0x00, 0x3c], half: [0x00, 0x38], quarter: [0x00, 0x34], minusOne: [0x00, 0xbc] };

function deq(name: string, bytes: number[], n: number): number[] {
  return [...dequantize(ggmlTypeByName(name), Uint8Array.from(bytes), n)];
}

/** A k-quant super-block's 256 expected values: one constant per 32-element sub-block, then single overrides. */
function perSub32(values: number[], overrides: Record<number, number>): number[] {
  const y = values.flatMap((v) => new Array<number>(32).fill(v));
  for (const [i, v] of Object.entries(overrides)) y[Number(i)] = v;
  return y;
}

// qs[j] = j in the low nibble, 15-j in the high nibble: elements 0..15 count up, 16..31 count down.
const NIBBLES = Array.from({ length: 16 }, (_, j) => j | ((15 - j) << 4));

describe("plain float types", () => {
  it("F32 is copied", () => {
    expect(deq("F32", [0, 0, 0x80, 0x3f, 0, 0, 0, 0xc0], 2)).toEqual([1, -2]);
  });
  it("F16: 1, -2, 0.5 and the largest half 65504", () => {
    expect(deq("F16", [0x00, 0x3c, 0x00, 0xc0, 0x00, 0x38, 0xff, 0x7b], 4)).toEqual([1, -2, 0.5, 65504]);
  });
  it("BF16 is the top half of a float32: 1, -2, 0.5, 3.140625", () => {
    expect(deq("BF16", [0x80, 0x3f, 0x00, 0xc0, 0x00, 0x3f, 0x49, 0x40], 4)).toEqual([1, -2, 0.5, 3.140625]);
  });
});

describe("legacy 32-element blocks", () => {
  it("Q4_0: (q - 8) * d, low nibbles first then high nibbles", () => {
    const y = deq("Q4_0", [...H.half, ...NIBBLES], 32);
    expect(y).toEqual([
      -4, -3.5, -3, -2.5, -2, -1.5, -1, -0.5, 0, 0.5, 1, 1.5, 2, 2.5, 3, 3.5, 3.5, 3, 2.5, 2, 1.5, 1, 0.5, 0, -0.5, -1,
      -1.5, -2, -2.5, -3, -3.5, -4,
    ]);
  });

  it("Q4_1: q * d + m", () => {
    const y = deq("Q4_1", [...H.half, ...H.minusOne, ...NIBBLES], 32);
    expect(y).toEqual([
      -1, -0.5, 0, 0.5, 1, 1.5, 2, 2.5, 3, 3.5, 4, 4.5, 5, 5.5, 6, 6.5, 6.5, 6, 5.5, 5, 4.5, 4, 3.5, 3, 2.5, 2, 1.5, 1,
      0.5, 0, -0.5, -1,
    ]);
  });

  // qh = 0x80018001: the fifth bit of elements 0, 15, 16 and 31; qs[0] = 0x21 (element 0 low 1, element 16 high 2).
  const QH = [0x01, 0x80, 0x01, 0x80];
  const QS5 = [0x21, ...new Array<number>(15).fill(0)];

  it("Q5_0: ((q | high bit << 4) - 16) * d", () => {
    const y = deq("Q5_0", [...H.one, ...QH, ...QS5], 32);
    const want = new Array<number>(32).fill(-16);
    want[0] = 1;
    want[15] = 0;
    want[16] = 2;
    want[31] = 0;
    expect(y).toEqual(want);
  });

  it("Q5_1: (q | high bit << 4) * d + m", () => {
    const y = deq("Q5_1", [...H.half, ...H.one, ...QH, ...QS5], 32);
    const want = new Array<number>(32).fill(1);
    want[0] = 9.5;
    want[15] = 9;
    want[16] = 10;
    want[31] = 9;
    expect(y).toEqual(want);
  });

  it("Q8_0: int8 * d, including -128 and 127", () => {
    const qs = Array.from({ length: 32 }, (_, j) => (j - 16) & 0xff);
    qs[0] = 0x80;
    qs[31] = 0x7f;
    const y = deq("Q8_0", [...H.quarter, ...qs], 32);
    const want = Array.from({ length: 32 }, (_, j) => (j - 16) / 4);
    want[0] = -32;
    want[31] = 31.75;
    expect(y).toEqual(want);
  });

  it("several blocks in a row each use their own scale", () => {
    const y = deq(
      "Q8_0",
      [...H.one, ...new Array<number>(32).fill(2), ...H.half, ...new Array<number>(32).fill(2)],
      64,
    );
    expect(y.slice(0, 32)).toEqual(new Array(32).fill(2));
    expect(y.slice(32)).toEqual(new Array(32).fill(1));
  });
});

describe("k-quants (256-element super-blocks)", () => {
  // Twelve scale bytes giving (scale, min) per sub-block 0..7 = (1,0) (2,1) (3,2) (4,3) (1,2) (3,4) (5,0) (22,39):
  // sub-blocks 0..3 take 6 bits of bytes 0..7; 4..7 take nibbles of bytes 8..11 plus the top two bits of bytes 0..7
  // (byte 3's 0x40 adds 16 to scale 7, byte 7's 0x80 adds 32 to min 7).
  const SCALES = [1, 2, 3, 4 | 0x40, 0, 1, 2, 3 | 0x80, 0x21, 0x43, 0x05, 0x76];
  // With q = 0 every value is -dmin * min (dmin = 0.5).
  const ZERO_Q = [0, -0.5, -1, -1.5, -1, -2, 0, -19.5];

  it("Q4_K: d * scale * q - dmin * min, 6-bit packed scales", () => {
    const qs = new Array<number>(128).fill(0);
    qs[0] = 0xf1; // element 0: q 1 in sub-block 0; element 32: q 15 in sub-block 1
    qs[127] = 0xa7; // element 223: q 7 in sub-block 6; element 255: q 10 in sub-block 7
    const y = deq("Q4_K", [...H.one, ...H.half, ...SCALES, ...qs], 256);
    expect(y).toEqual(perSub32(ZERO_Q, { 0: 1, 32: 29.5, 223: 35, 255: 200.5 }));
  });

  it("Q5_K: the fifth bit comes from qh, one bit pair per 64 elements", () => {
    const qh = new Array<number>(32).fill(0);
    qh[0] = 0x01; // element 0 (+16)
    qh[31] = 0x80; // element 255 (+16): the high bit of the last 64-element chunk
    const qs = new Array<number>(128).fill(0);
    qs[0] = 0xf1;
    qs[127] = 0xa7;
    const y = deq("Q5_K", [...H.one, ...H.half, ...SCALES, ...qh, ...qs], 256);
    expect(y).toEqual(perSub32(ZERO_Q, { 0: 17, 32: 29.5, 223: 35, 255: 552.5 }));
  });

  it("Q6_K: d * int8 scale * (6-bit q - 32), one scale per 16 elements", () => {
    const ql = new Array<number>(128).fill(0);
    const qh = new Array<number>(64).fill(0);
    ql[0] = 0x5a; // element 0: low 10; element 64: high 5
    qh[0] = 0xe4; // bit pairs 0,1,2,3 -> elements 0, 32, 64, 96
    ql[127] = 0xff; // second half, l = 31: elements 191 and 255
    qh[63] = 0xff; // second half, l = 31: elements 159, 191, 223, 255
    const scales = Array.from({ length: 16 }, (_, i) => i + 1);
    scales[15] = 0xfe; // -2
    const y = deq("Q6_K", [...ql, ...qh, ...scales, ...H.half], 256);
    // q = 0 everywhere else, i.e. -32: each 16-element group g gives 0.5 * scale[g] * -32.
    const want = Array.from({ length: 256 }, (_, e) => (e >> 4 === 15 ? 32 : -16 * ((e >> 4) + 1)));
    Object.assign(want, { 0: -11, 32: -24, 64: 12.5, 96: 56, 159: 80, 191: 186, 223: 112, 255: -31 });
    expect(y).toEqual(want);
  });
});

describe("dequantize's own checks", () => {
  it("refuses a length that is not whole blocks, or too few bytes", () => {
    expect(() => dequantize(ggmlTypeByName("Q4_0"), new Uint8Array(18), 16)).toThrow(/16 elements of Q4_0/);
    expect(() => dequantize(ggmlTypeByName("Q4_0"), new Uint8Array(17), 32)).toThrow(/from 17 bytes/);
  });
});
