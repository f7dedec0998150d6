// Number, type and location spelling: every float literal must read back as exactly the value the IR holds.
import { describe, expect, it } from "vitest";
import {
  denseLiteral,
  elementLiteral,
  locText,
  roundTo,
  stringLiteral,
  symbolName,
  tensorTypeText,
} from "../../src/backend/stablehlo/text.ts";
import { tensorType as tt } from "../../src/ir/types.ts";

/** Reads a literal back the way MLIR does: hex is the bit pattern, decimals round (via a double) to the type. */
function readF32(lit: string): number {
  if (lit.startsWith("0x")) {
    const v = new DataView(new ArrayBuffer(4));
    v.setUint32(0, parseInt(lit, 16));
    return v.getFloat32(0);
  }
  expect(lit).toMatch(/^-?\d+\.\d+e[-+]\d+$/); // MLIR's float grammar: a '.' is required
  return Math.fround(Number(lit));
}

function bf16FromHex(lit: string): number {
  const v = new DataView(new ArrayBuffer(4));
  v.setUint32(0, parseInt(lit, 16) << 16);
  return v.getFloat32(0);
}

describe("element literals", () => {
  it("spell element types as MLIR does", () => {
    expect(tensorTypeText(tt("f32", []))).toBe("tensor<f32>");
    expect(tensorTypeText(tt("bool", [2, 0, 3]))).toBe("tensor<2x0x3xi1>");
    expect(["bf16", "f16", "s32", "u32"].map((d) => tensorTypeText(tt(d as "s32", [1])))).toEqual([
      "tensor<1xbf16>",
      "tensor<1xf16>",
      "tensor<1xi32>",
      "tensor<1xui32>",
    ]);
  });

  it("f32 decimals are short and read back bit-exactly", () => {
    expect(elementLiteral("f32", 0.1)).toBe("1.0e-1");
    expect(elementLiteral("f32", 1 / 3)).toBe("3.3333334e-1");
    expect(elementLiteral("f32", 3.4028234663852886e38)).toBe("3.4028235e+38");
    expect(elementLiteral("f32", 2 ** -149)).toBe("1.0e-45");
    let seed = 7;
    const rnd = () => {
      seed = (seed * 16807) % 2147483647;
      return seed / 2147483647;
    };
    for (let i = 0; i < 2000; i++) {
      const v = Math.fround((rnd() - 0.5) * 10 ** Math.floor(rnd() * 80 - 40));
      expect(readF32(elementLiteral("f32", v))).toBe(v);
    }
  });

  it("non-finite and negative-zero f32 are hex bit patterns", () => {
    expect(elementLiteral("f32", Infinity)).toBe("0x7F800000");
    expect(elementLiteral("f32", -Infinity)).toBe("0xFF800000");
    expect(elementLiteral("f32", NaN)).toBe("0x7FC00000");
    expect(elementLiteral("f32", -0)).toBe("0x80000000");
    expect(elementLiteral("f32", 1e39)).toBe("0x7F800000"); // overflows f32
  });

  it("bf16 and f16 are hex bits of the value rounded once, to nearest even", () => {
    expect(elementLiteral("bf16", 1)).toBe("0x3F80");
    expect(elementLiteral("bf16", -Infinity)).toBe("0xFF80");
    expect(elementLiteral("bf16", 1 + 2 ** -8)).toBe("0x3F80"); // tie -> even
    expect(elementLiteral("bf16", 1 + 2 ** -8 + 2 ** -30)).toBe("0x3F81"); // just above the tie: f32 would round it down to the tie first
    expect(bf16FromHex(elementLiteral("bf16", 0.1))).toBe(0.10009765625);
    expect(elementLiteral("f16", 65504)).toBe("0x7BFF");
    expect(elementLiteral("f16", 65520)).toBe("0x7C00"); // rounds up to infinity
    expect(elementLiteral("f16", 2 ** -24)).toBe("0x0001");
    expect(elementLiteral("f16", -2)).toBe("0xC000");
    expect(elementLiteral("f16", NaN)).toBe("0x7E00");
  });

  it("integers wrap into their type, bools are true/false", () => {
    expect(roundTo("s32", 2 ** 31 + 5)).toBe(-(2 ** 31) + 5);
    expect(elementLiteral("u32", -1)).toBe("4294967295");
    expect(elementLiteral("s32", -7.9)).toBe("-7");
    expect(elementLiteral("bool", 2)).toBe("true");
    expect(elementLiteral("bool", 0)).toBe("false");
  });

  it("dense literals nest row-major and splat single values", () => {
    expect(denseLiteral(tt("s32", [2, 3]), [1, 2, 3, 4, 5, 6])).toBe("dense<[[1, 2, 3], [4, 5, 6]]>");
    expect(denseLiteral(tt("s32", [2, 3]), [7])).toBe("dense<7>");
    expect(denseLiteral(tt("s32", [0]), [])).toBe("dense<>");
    expect(denseLiteral(tt("f32", [2, 0]), [0])).toBe("dense<>");
    expect(() => denseLiteral(tt("s32", [2]), [1, 2, 3])).toThrow(/3 values for shape \[2\]/);
  });
});

describe("strings, locations, symbols", () => {
  it("escapes quotes, backslashes and control characters", () => {
    expect(stringLiteral('a"b\\c\nd')).toBe('"a\\"b\\\\c\\0Ad"');
    expect(locText({ file: "m.ts", line: 3, col: 9 })).toBe('loc("m.ts":3:9)');
  });

  it("quotes symbol names that are not identifiers", () => {
    expect(symbolName("jit_step.v2")).toBe("@jit_step.v2");
    expect(symbolName("2x")).toBe('@"2x"');
  });
});
