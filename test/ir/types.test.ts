// The one dtype vocabulary: names in both spellings, sizes, kinds, PJRT/XLA numbers; checkShape and range.
import { describe, expect, it } from "vitest";
import {
  bitWidth,
  byteWidth,
  checkShape,
  DTYPES,
  ELEMENT_TYPES,
  fromHostDType,
  HOST_DTYPES,
  isFloat,
  isHostDType,
  isInteger,
  range,
  ShapeError,
  toHostDType,
} from "../../src/ir/types.ts";

describe("element types", () => {
  it("name each type once, in the IR's spelling and safetensors'", () => {
    expect(HOST_DTYPES).toEqual([
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
    ]);
    for (const h of HOST_DTYPES) expect(toHostDType(fromHostDType(h))).toBe(h);
    expect(DTYPES.map(toHostDType)).toEqual(["F32", "BF16", "F16", "I32", "U32", "BOOL"]);
    expect(isHostDType("BF16")).toBe(true);
    expect(isHostDType("bf16")).toBe(false);
  });

  it("answer sizes and kinds in either spelling", () => {
    expect([byteWidth("bf16"), byteWidth("BF16"), byteWidth("I64"), byteWidth("bool")]).toEqual([2, 2, 8, 1]);
    expect([bitWidth("f32"), bitWidth("f16"), bitWidth("bool")]).toEqual([32, 16, 8]);
    expect(DTYPES.filter((d) => isFloat(d))).toEqual(["f32", "bf16", "f16"]);
    expect(DTYPES.filter((d) => isInteger(d))).toEqual(["s32", "u32"]);
    expect([isFloat("F64"), isInteger("U8"), isInteger("BOOL")]).toEqual([true, true, false]);
  });

  it("carry PJRT's and XLA's numbers, which differ only for bf16", () => {
    // PJRT_Buffer_Type (pjrt_c_api.h) and xla::PrimitiveType (xla_data.proto).
    expect(ELEMENT_TYPES.bf16).toMatchObject({ pjrt: 13, xla: 16 });
    expect(ELEMENT_TYPES.f32).toMatchObject({ pjrt: 11, xla: 11 });
    expect(ELEMENT_TYPES.bool).toMatchObject({ pjrt: 1, xla: 1 });
    const t = Object.values(ELEMENT_TYPES);
    expect(new Set(t.map((i) => i.pjrt)).size).toBe(t.length);
    expect(t.filter((i) => i.pjrt !== i.xla).map((i) => i.safetensors)).toEqual(["BF16"]);
  });
});

describe("checkShape", () => {
  it("counts elements and names the bad dimension", () => {
    expect(checkShape([2, 3, 0])).toBe(0);
    expect(checkShape([])).toBe(1);
    expect(() => checkShape([2, -1], "arg x")).toThrow(new ShapeError("arg x [2, -1] has an invalid dimension -1"));
    expect(() => checkShape([1.5])).toThrow(expect.objectContaining({ code: "ERR_SHAPE" }));
    expect(() => checkShape([2 ** 30, 2 ** 30])).toThrow("shape [1073741824, 1073741824] is too large");
  });
});

describe("range", () => {
  it("counts from 0, or between bounds, empty when reversed", () => {
    expect(range(3)).toEqual([0, 1, 2]);
    expect(range(2, 5)).toEqual([2, 3, 4]);
    expect(range(5, 2)).toEqual([]);
    expect(range(0)).toEqual([]);
  });
});
