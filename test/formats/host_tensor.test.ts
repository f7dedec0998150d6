// Host tensor helpers for every file dtype: sizes, typed views, float32 conversions, casts and equality.

import { describe, expect, it } from "vitest";
import { HOST_DTYPES, byteWidth } from "../../src/ir/types.ts";
import { bf16FromBits, bf16FromF32Bits, f32FromBits, f32ToBits } from "../../src/ir/float_bits.ts";
import {
  castTensor,
  fromFloat32,
  fromTypedArray,
  hostTensor,
  tensorsEqual,
  toFloat32,
  typedView,
} from "../../src/formats/host_tensor.ts";

const hex = (n: number) => `0x${n.toString(16).padStart(4, "0")}`;

describe("host tensors", () => {
  it("knows every dtype's size", () => {
    expect(HOST_DTYPES.map((d) => [d, byteWidth(d)])).toEqual([
      ["F64", 8],
      ["F32", 4],
      ["F16", 2],
      ["BF16", 2],
      ["I64", 8],
      ["I32", 4],
      ["I16", 2],
      ["I8", 1],
      ["U64", 8],
      ["U32", 4],
      ["U16", 2],
      ["U8", 1],
      ["BOOL", 1],
    ]);
  });

  it("fromFloat32 -> toFloat32 is exact for representable values in every dtype", () => {
    const vals = [0, 1, -1, 2, 100, -128, 127];
    for (const d of HOST_DTYPES) {
      const v =
        d.startsWith("U") || d === "BOOL" ? vals.map((x) => (d === "BOOL" ? (x === 0 ? 0 : 1) : Math.abs(x))) : vals;
      const t = fromFloat32(v, [7], d);
      expect(t.data.byteLength).toBe(7 * byteWidth(d));
      expect(Array.from(toFloat32(t))).toEqual(v);
    }
  });

  it("writes little-endian bytes", () => {
    expect(Array.from(fromFloat32([1], [1], "F32").data)).toEqual([0, 0, 0x80, 0x3f]);
    expect(Array.from(fromFloat32([1], [1], "BF16").data)).toEqual([0x80, 0x3f]);
    expect(Array.from(fromFloat32([1], [1], "F16").data)).toEqual([0x00, 0x3c]);
    expect(Array.from(fromFloat32([-2], [1], "I64").data)).toEqual([0xfe, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff]);
    expect(Array.from(fromFloat32([258], [1], "I16").data)).toEqual([2, 1]);
  });

  it("rounds bf16/f16 per element and keeps specials", () => {
    const x = new Float32Array([1 + 2 ** -11, 65520, NaN, -Infinity, 2 ** -25]);
    expect(
      Array.from(typedView(fromFloat32(x, [5], "F16") as { dtype: "F16"; shape: number[]; data: Uint8Array })).map(hex),
    ).toEqual(["0x3c00", "0x7c00", "0x7e00", "0xfc00", "0x0000"]);
    const b = fromFloat32(new Float32Array([f32FromBits(0x3f808000), f32FromBits(0x3f818000)]), [2], "BF16");
    expect(Array.from(toFloat32(b))).toEqual([1, f32FromBits(0x3f820000)]);
  });

  it("rejects values an integer dtype cannot hold", () => {
    expect(() => fromFloat32([1.5], [1], "I32")).toThrow(/1.5 at index 0 is not representable as I32/);
    expect(() => fromFloat32([300], [1], "U8")).toThrow(/300 at index 0 is not representable as U8/);
    expect(() => fromFloat32([1, 2], [3], "F32")).toThrow(/2 values do not fill shape \[3\]/);
  });

  it("casts between dtypes by value", () => {
    const t = fromFloat32(new Float32Array([1.5, -2.25, 3e38]), [3], "F32");
    expect(Array.from(toFloat32(castTensor(t, "BF16")))).toEqual([
      1.5,
      -2.25,
      bf16FromBits(bf16FromF32Bits(f32ToBits(3e38))),
    ]);
    expect(Array.from(toFloat32(castTensor(t, "F16")))).toEqual([1.5, -2.25, Infinity]);
    expect(castTensor(t, "F32")).toBe(t);
    const big = fromFloat32([16777217, -5], [2], "I64");
    expect(
      Array.from(typedView(castTensor(big, "I32") as { dtype: "I32"; shape: number[]; data: Uint8Array })),
    ).toEqual([16777217, -5]);
    expect(
      Array.from(typedView(castTensor(big, "F64") as { dtype: "F64"; shape: number[]; data: Uint8Array })),
    ).toEqual([16777217, -5]);
  });

  it("handles unaligned data and typed-array construction", () => {
    const buf = new Uint8Array(9);
    buf.set(fromFloat32([3.5, -1], [2], "F32").data, 1);
    const t = hostTensor("F32", [2], buf.subarray(1));
    expect(Array.from(toFloat32(t))).toEqual([3.5, -1]);
    const u = fromTypedArray("I32", [2, 2], new Int32Array([1, 2, 3, 4]));
    expect(Array.from(toFloat32(u))).toEqual([1, 2, 3, 4]);
    expect(() => fromTypedArray("F16", [2], new Float32Array(2))).toThrow(/cannot hold F16/);
    expect(() => hostTensor("F32", [2], new Uint8Array(7))).toThrow(/needs 8 bytes, got 7/);
    expect(tensorsEqual(u, fromTypedArray("I32", [2, 2], new Int32Array([1, 2, 3, 4])))).toBe(true);
    expect(tensorsEqual(u, fromTypedArray("I32", [4], new Int32Array([1, 2, 3, 4])))).toBe(false);
  });
});
