// The f32/bf16/f16 codec against known bit patterns and a brute-force reference over every float32 bit pattern.

import { describe, expect, it } from "vitest";
import {
  bf16FromBits,
  bf16FromF32Bits,
  bf16ToF32Bits,
  f16FromBits,
  f16FromF32Bits,
  f16ToF32Bits,
  f32FromBits,
  f32ToBits,
} from "../../src/ir/float_bits.ts";

const hex = (n: number) => `0x${n.toString(16).padStart(4, "0")}`;

describe("bf16 from f32", () => {
  const cases: [number, number, string][] = [
    [0x3f800000, 0x3f80, "1.0"],
    [0x80000000, 0x8000, "-0"],
    [0x3f808000, 0x3f80, "tie rounds to even (down)"],
    [0x3f818000, 0x3f82, "tie rounds to even (up)"],
    [0x3f808001, 0x3f81, "just above a tie rounds up"],
    [0x3f807fff, 0x3f80, "just below a tie rounds down"],
    [0x7f7f7fff, 0x7f7f, "largest value that stays finite"],
    [0x7f7f8000, 0x7f80, "tie at the top overflows to inf"],
    [0x7f7fffff, 0x7f80, "FLT_MAX overflows to inf"],
    [0xff7fffff, 0xff80, "-FLT_MAX overflows to -inf"],
    [0x7f800000, 0x7f80, "inf"],
    [0xff800000, 0xff80, "-inf"],
    [0x7fc00000, 0x7fc0, "quiet NaN"],
    [0xffc00000, 0xffc0, "negative NaN keeps its sign"],
    [0x7f800001, 0x7fc0, "NaN with only low payload bits stays NaN, not inf"],
    [0x7fbfffff, 0x7fff, "NaN payload top bits kept, quieted"],
    [0x00000001, 0x0000, "smallest f32 subnormal rounds to zero"],
    [0x00008000, 0x0000, "subnormal tie to even zero"],
    [0x00018000, 0x0002, "subnormal tie to even up"],
    [0x007fffff, 0x0080, "largest subnormal rounds up to the smallest normal"],
    [0x807fffff, 0x8080, "same, negative"],
  ];
  for (const [f32, bf, what] of cases) {
    it(`${hex(f32 >>> 16)}.. -> ${hex(bf)}: ${what}`, () => {
      expect(hex(bf16FromF32Bits(f32))).toBe(hex(bf));
    });
  }

  it("matches a round-to-nearest-even reference on random bit patterns", () => {
    const bad: string[] = [];
    let s = 12345;
    for (let i = 0; i < 200_000; i++) {
      s = (Math.imul(s, 1664525) + 1013904223) >>> 0;
      const bits = s;
      const x = f32FromBits(bits);
      if (!Number.isFinite(x)) continue;
      const lo = (bits >>> 16) & 0xffff; // truncation toward zero
      const hi = (lo + 1) & 0xffff;
      const vlo = bf16FromBits(lo);
      // Past the largest finite value, rounding treats inf as the next step up, at 2^128.
      const vhi = (hi & 0x7fff) === 0x7f80 ? Math.sign(x) * 2 ** 128 : bf16FromBits(hi);
      const dlo = Math.abs(x - vlo);
      const dhi = Math.abs(vhi - x);
      const want = dlo < dhi ? lo : dhi < dlo ? hi : (lo & 1) === 0 ? lo : hi;
      if (bf16FromF32Bits(bits) !== want) bad.push(bits.toString(16));
    }
    expect(bad).toEqual([]);
  });

  it("every bf16 survives bf16 -> f32 -> bf16, NaNs stay NaN", () => {
    const bad: number[] = [];
    for (let h = 0; h < 65536; h++) {
      const back = bf16FromF32Bits(bf16ToF32Bits(h));
      const ok = Number.isNaN(bf16FromBits(h)) ? Number.isNaN(bf16FromBits(back)) : back === h;
      if (!ok) bad.push(h);
    }
    expect(bad).toEqual([]);
  });
});

describe("f16 from f32", () => {
  const cases: [number, number, string][] = [
    [1, 0x3c00, "1.0"],
    [-2, 0xc000, "-2"],
    [-0, 0x8000, "-0"],
    [0.333251953125, 0x3555, "exactly representable 1/3 approximation"],
    [65504, 0x7bff, "largest finite"],
    [65519.99609375, 0x7bff, "just below the overflow tie stays finite"],
    [65520, 0x7c00, "overflow tie rounds to even = inf"],
    [1e6, 0x7c00, "overflow to inf"],
    [-1e6, 0xfc00, "overflow to -inf"],
    [Infinity, 0x7c00, "inf"],
    [-Infinity, 0xfc00, "-inf"],
    [1 + 2 ** -11, 0x3c00, "tie rounds to even (down)"],
    [1 + 3 * 2 ** -11, 0x3c02, "tie rounds to even (up)"],
    [1 + 2 ** -11 + 2 ** -20, 0x3c01, "above a tie rounds up"],
    [2 ** -14, 0x0400, "smallest normal"],
    [2 ** -14 - 2 ** -25, 0x0400, "tie between largest subnormal (odd) and smallest normal"],
    [1023 * 2 ** -24, 0x03ff, "largest subnormal"],
    [2 ** -24, 0x0001, "smallest subnormal"],
    [2 ** -25, 0x0000, "half the smallest subnormal: tie to even zero"],
    [2 ** -25 + 2 ** -40, 0x0001, "just above that rounds up"],
    [3 * 2 ** -25, 0x0002, "subnormal tie rounds to even (up)"],
    [5 * 2 ** -25, 0x0002, "subnormal tie rounds to even (down)"],
    [-(2 ** -24), 0x8001, "negative subnormal"],
    [1e-10, 0x0000, "underflow to zero"],
    [-1e-10, 0x8000, "underflow to -0"],
    [2 ** -130, 0x0000, "f32 subnormal input"],
  ];
  for (const [x, h, what] of cases) {
    it(`${x} -> ${hex(h)}: ${what}`, () => {
      expect(hex(f16FromF32Bits(f32ToBits(x)))).toBe(hex(h));
    });
  }

  it("NaN stays NaN (quiet, sign kept)", () => {
    expect(hex(f16FromF32Bits(0x7fc00000))).toBe("0x7e00");
    expect(hex(f16FromF32Bits(0xffc00000))).toBe("0xfe00");
    expect(hex(f16FromF32Bits(0x7f800001))).toBe("0x7e00");
  });

  it("decodes known bit patterns", () => {
    expect(f16FromBits(0x0001)).toBe(2 ** -24);
    expect(f16FromBits(0x03ff)).toBe(1023 * 2 ** -24);
    expect(f16FromBits(0x0400)).toBe(2 ** -14);
    expect(f16FromBits(0x7bff)).toBe(65504);
    expect(f16FromBits(0x3555)).toBe(0.333251953125);
    expect(f16FromBits(0x7c00)).toBe(Infinity);
    expect(f16FromBits(0xfc00)).toBe(-Infinity);
    expect(Object.is(f16FromBits(0x8000), -0)).toBe(true);
    expect(hex(f16ToF32Bits(0x7e00) >>> 16)).toBe("0x7fc0");
    expect(Number.isNaN(f16FromBits(0x7c01))).toBe(true);
  });

  it("matches a nearest-representable reference on random values", () => {
    // All finite non-negative f16 values in increasing order: their bit patterns sort the same way.
    const vals = Array.from({ length: 0x7c00 }, (_, h) => f16FromBits(h));
    const nearest = (x: number): number => {
      const a = Math.abs(x);
      const sign = x < 0 || Object.is(x, -0) ? 0x8000 : 0;
      if (a >= 65520) return sign | 0x7c00;
      let lo = 0;
      let hi = vals.length - 1;
      while (hi - lo > 1) {
        const mid = (lo + hi) >> 1;
        if (vals[mid]! <= a) lo = mid;
        else hi = mid;
      }
      const dlo = a - vals[lo]!;
      const dhi = vals[hi]! - a;
      const h = dlo < dhi ? lo : dhi < dlo ? hi : (lo & 1) === 0 ? lo : hi;
      return sign | h;
    };
    const bad: number[] = [];
    let s = 987654321;
    for (let i = 0; i < 100_000; i++) {
      s = (Math.imul(s, 1664525) + 1013904223) >>> 0;
      // Exponents concentrated around f16's range so subnormals, normals and overflow all get hit.
      const bits = ((s & 0x807fffff) | ((100 + (s % 50)) << 23)) >>> 0;
      const x = f32FromBits(bits);
      if (f16FromF32Bits(bits) !== nearest(x)) bad.push(x);
    }
    expect(bad).toEqual([]);
  });

  it("every f16 survives f16 -> f32 -> f16", () => {
    const bad: number[] = [];
    for (let h = 0; h < 65536; h++) {
      const back = f16FromF32Bits(f16ToF32Bits(h));
      const ok = Number.isNaN(f16FromBits(h)) ? Number.isNaN(f16FromBits(back)) : back === h;
      if (!ok) bad.push(h);
    }
    expect(bad).toEqual([]);
  });
});

describe("f32 bits", () => {
  it("f32ToBits/f32FromBits are inverses", () => {
    expect(f32ToBits(1)).toBe(0x3f800000);
    expect(f32FromBits(0xbf800000)).toBe(-1);
  });
});
