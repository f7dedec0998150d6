// HostTensors through the device and the interpreter bit for bit, the dtypes that cannot go, and bf16/f16 rounding on upload.
import { describe, expect, it } from "vitest";
import { array } from "../../src/frontend/array.ts";
import { fromFloat32, tensorsEqual, toFloat32, type HostTensor } from "../../src/formats/host_tensor.ts";
import {
  fromDevice,
  fromInterp,
  HostDTypeError,
  toDevice,
  toInterp,
  treeFromDevice,
  treeToDevice,
} from "../../src/host/transfer.ts";

const VALUES = [1.5, -0, 3.140625, -65504, Infinity, 2 ** -24, 0];

function tensors(): Record<string, HostTensor> {
  return {
    f32: fromFloat32(new Float32Array([...VALUES, 0.1]), [2, 4], "F32"),
    bf16: fromFloat32(new Float32Array([...VALUES, 0.1]), [8], "BF16"),
    f16: fromFloat32(new Float32Array([...VALUES, 0.1]), [8], "F16"),
    s32: fromFloat32([-(2 ** 31), -1, 0, 2 ** 31 - 1], [4], "I32"),
    u32: fromFloat32([0, 1, 2 ** 32 - 1], [3], "U32"),
    bool: fromFloat32([1, 0, 1], [3], "BOOL"),
  };
}

describe("host tensors", () => {
  it("go to the device and back bit for bit, as a tree", async () => {
    const t = tensors();
    const back = (await treeFromDevice(treeToDevice(t))) as Record<string, HostTensor>;
    for (const [k, v] of Object.entries(t)) expect(tensorsEqual(back[k]!, v), k).toBe(true);
  });

  it("go through the interpreter's arrays bit for bit", () => {
    for (const [k, v] of Object.entries(tensors())) expect(tensorsEqual(fromInterp(toInterp(v)), v), k).toBe(true);
  });

  it("of a file-only dtype are refused with the dtype named", () => {
    const t = fromFloat32([1, 2], [2], "F64");
    expect(() => toDevice(t)).toThrow(HostDTypeError);
    expect(() => toDevice(t)).toThrow(
      "a host tensor has dtype F64, which no program computes on; expected one of F32, BF16, F16, I32, U32, BOOL",
    );
    expect(() => toInterp(fromFloat32([1], [1], "I64"))).toThrow(
      expect.objectContaining({ code: "ERR_DTYPE", exitCode: 1 }),
    );
  });
});

describe("numbers uploaded as 16-bit floats", () => {
  it("round to nearest, ties to even, as the ArrayOpts doc says", async () => {
    // bf16 keeps 7 fraction bits: 1 + 2^-8 is a tie (to 1), 1 + 3*2^-8 a tie (to 1 + 2^-6), 1 + 2^-8 + 2^-12 rounds up.
    const bf = await fromDevice(
      array([1 + 2 ** -8, 1 + 3 * 2 ** -8, 1 + 2 ** -8 + 2 ** -12, 3.5e38], { dtype: "bf16" }),
    );
    expect(Array.from(toFloat32(bf))).toEqual([1, 1 + 2 ** -6, 1 + 2 ** -7, Infinity]);
    const h = await array([1 + 2 ** -11, 1 + 3 * 2 ** -11, 65520, 0.1], { dtype: "f16" }).toArray();
    expect(Array.from(h)).toEqual([1, 1 + 2 ** -9, Infinity, 0.0999755859375]);
  });
});
