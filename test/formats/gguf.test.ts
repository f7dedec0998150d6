// The GGUF reader on files written byte by byte: metadata of each value type, shapes, alignment, and every bad file named.
import { afterEach, describe, expect, it } from "vitest";
import { mkdtemp, rm, truncate, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { GgufFile } from "../../src/formats/gguf.ts";
import { FormatError } from "../../src/formats/errors.ts";
import { f32Bytes, ggufBytes, writeGguf, type MetaValue, type RawTensor } from "./gguf_writer.ts";

const dirs: string[] = [];
afterEach(async () => {
  while (dirs.length) await rm(dirs.pop()!, { recursive: true, force: true });
});
async function tmp(name: string): Promise<string> {
  const d = await mkdtemp(join(tmpdir(), "tessera-gguf-"));
  dirs.push(d);
  return join(d, name);
}

async function rejection(p: Promise<unknown>): Promise<FormatError> {
  const e = await p.then(
    () => undefined,
    (e: unknown) => e,
  );
  expect(e).toBeInstanceOf(FormatError);
  return e as FormatError;
}

const META: Record<string, MetaValue> = {
  "general.architecture": { type: "str", value: "llama" },
  "llama.block_count": { type: "u32", value: 2 },
  "some.i32": { type: "i32", value: -7 },
  "some.f32": { type: "f32", value: 0.25 },
  "some.u64": { type: "u64", value: 1234567890123 },
  "some.f64": { type: "f64", value: 1e-300 },
  "some.bool": { type: "bool", value: true },
  "some.u8": { type: "u8", value: 200 },
  "tokenizer.ggml.tokens": { type: "arr_str", value: ["<s>", "héllo", ""] },
  "some.ints": { type: "arr_i32", value: [1, -2, 3] },
};

// A 3x4 F32 matrix, a 2x32 Q8_0 matrix (scale 1 and 0.5, all q = 2), and a vector of 5 F32 (odd size: padding).
const MATRIX = [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12];
const Q8 = Uint8Array.from([0x00, 0x3c, ...new Array(32).fill(2), 0x00, 0x38, ...new Array(32).fill(2)]);
const TENSORS: RawTensor[] = [
  { name: "m", shape: [3, 4], typeId: 0, bytes: f32Bytes(MATRIX) },
  { name: "q", shape: [2, 32], typeId: 8, bytes: Q8 },
  { name: "v", shape: [5], typeId: 0, bytes: f32Bytes([0.5, 1.5, 2.5, 3.5, 4.5]) },
];

describe("GgufFile", () => {
  it("reads metadata of every value type, tensor shapes outermost first, and tensor data", async () => {
    const path = await tmp("a.gguf");
    await writeGguf(path, META, TENSORS);
    const g = await GgufFile.open(path);
    try {
      expect(g.version).toBe(3);
      expect(g.get("general.architecture")).toBe("llama");
      expect(g.get("llama.block_count")).toBe(2);
      expect(g.get("some.i32")).toBe(-7);
      expect(g.get("some.f32")).toBe(0.25);
      expect(g.get("some.u64")).toBe(1234567890123);
      expect(g.get("some.f64")).toBe(1e-300);
      expect(g.get("some.bool")).toBe(true);
      expect(g.get("some.u8")).toBe(200);
      expect(g.get("tokenizer.ggml.tokens")).toEqual(["<s>", "héllo", ""]);
      expect(g.get("some.ints")).toEqual([1, -2, 3]);
      expect(g.get("absent")).toBeUndefined();
      expect(g.tensors.map((t) => [t.name, t.shape, t.type.name])).toEqual([
        ["m", [3, 4], "F32"],
        ["q", [2, 32], "Q8_0"],
        ["v", [5], "F32"],
      ]);
      expect(g.tensors.every((t) => t.offset % 32 === 0)).toBe(true);
      expect([...(await g.readF32("m"))]).toEqual(MATRIX);
      expect([...(await g.readF32("q"))]).toEqual([...new Array(32).fill(2), ...new Array(32).fill(1)]);
      expect([...(await g.readF32("v"))]).toEqual([0.5, 1.5, 2.5, 3.5, 4.5]);
      expect(g.info("q").byteLength).toBe(68);
    } finally {
      await g.close();
    }
  });

  it("honours general.alignment", async () => {
    const path = await tmp("aligned.gguf");
    await writeGguf(path, { "general.alignment": { type: "u32", value: 64 } }, TENSORS);
    const g = await GgufFile.open(path);
    try {
      expect(g.alignment).toBe(64);
      expect(g.tensors.every((t) => t.offset % 64 === 0)).toBe(true);
      expect([...(await g.readF32("v"))]).toEqual([0.5, 1.5, 2.5, 3.5, 4.5]);
    } finally {
      await g.close();
    }
  });

  it("reads a header larger than its first read (a big vocabulary)", async () => {
    const path = await tmp("big.gguf");
    const tokens = Array.from({ length: 120_000 }, (_, i) => `token-${i}`);
    await writeGguf(path, { "tokenizer.ggml.tokens": { type: "arr_str", value: tokens } }, TENSORS.slice(0, 1));
    const g = await GgufFile.open(path);
    try {
      expect((g.get("tokenizer.ggml.tokens") as string[])[119_999]).toBe("token-119999");
      expect([...(await g.readF32("m"))]).toEqual(MATRIX);
    } finally {
      await g.close();
    }
  });
});

describe("mixed k-quant files", () => {
  it("k-quant tensors with 256-element rows sit next to legacy-type tensors whose rows are not", async () => {
    // A Q4_K super-block with d = 1, dmin = 0, scale 1 for every sub-block, all q = 3: every value 3.
    const scales = [1, 1, 1, 1, 0, 0, 0, 0, 0x11, 0x11, 0x11, 0x11]; // scale 1 everywhere (mins do not matter)
    const q4k = Uint8Array.from([0x00, 0x3c, 0x00, 0x00, ...scales, ...new Array(128).fill(0x33)]);
    // A Q5_0 block with d = 0.5, no high bits, all q = 0: every value -8.
    const q50 = Uint8Array.from([0x00, 0x38, 0, 0, 0, 0, ...new Array(16).fill(0)]);
    const path = await tmp("mixed.gguf");
    await writeGguf(path, {}, [
      { name: "k", shape: [1, 256], typeId: 12, bytes: q4k },
      { name: "legacy", shape: [3, 32], typeId: 6, bytes: Uint8Array.from([...q50, ...q50, ...q50]) },
    ]);
    const g = await GgufFile.open(path);
    try {
      expect([...(await g.readF32("k"))]).toEqual(new Array(256).fill(3));
      expect([...(await g.readF32("legacy"))]).toEqual(new Array(96).fill(-8));
    } finally {
      await g.close();
    }
    await writeGguf(path, {}, [{ name: "k", shape: [1, 96], typeId: 12, bytes: new Uint8Array(144) }]);
    expect((await rejection(GgufFile.open(path))).message).toMatch(
      /tensor "k" \(Q4_K\) has dimensions \[96, 1\]: rows of 96 elements, expected a positive multiple of Q4_K's block of 256/,
    );
  });
});

describe("bad files are named", () => {
  it("an unsupported type names the file, the tensor and the type", async () => {
    const path = await tmp("q2k.gguf");
    await writeGguf(path, {}, [
      { name: "blk.0.ffn_up.weight", shape: [1, 256], typeId: 10, bytes: new Uint8Array(84) },
    ]);
    const g = await GgufFile.open(path);
    try {
      const e = await rejection(g.readF32("blk.0.ffn_up.weight"));
      expect(e.message).toContain(path);
      expect(e.message).toMatch(/tensor "blk\.0\.ffn_up\.weight" has type Q2_K, which Tessera cannot dequantize/);
      expect(e.tensor).toBe("blk.0.ffn_up.weight");
    } finally {
      await g.close();
    }
  });

  it("a type id ggml does not define", async () => {
    const path = await tmp("t99.gguf");
    await writeGguf(path, {}, [{ name: "x", shape: [4], typeId: 99, bytes: new Uint8Array(16) }]);
    expect((await rejection(GgufFile.open(path))).message).toMatch(/tensor "x" has ggml type id 99/);
  });

  it("not a GGUF file, or a version other than 2/3", async () => {
    const path = await tmp("nope.gguf");
    await writeFile(path, "PK\u0003\u0004 this is a zip");
    expect((await rejection(GgufFile.open(path))).message).toBe(
      `${path}: not a GGUF file (the first 4 bytes are not "GGUF")`,
    );
    const bytes = ggufBytes({}, []);
    bytes[4] = 1;
    await writeFile(path, bytes);
    expect((await rejection(GgufFile.open(path))).message).toMatch(/GGUF version 1, expected 3/);
  });

  it("a truncated file: in the header, or in a tensor's data", async () => {
    const path = await tmp("cut.gguf");
    await writeGguf(path, META, TENSORS);
    await truncate(path, 40);
    expect((await rejection(GgufFile.open(path))).message).toMatch(/truncated GGUF header/);
    await writeGguf(path, META, TENSORS);
    const full = ggufBytes(META, TENSORS).length;
    await truncate(path, full - 40);
    expect((await rejection(GgufFile.open(path))).message).toMatch(
      /tensor "v" \(F32 \[5\]\) needs bytes .* past the end/,
    );
  });

  it("a row length that is not whole blocks of its type", async () => {
    const path = await tmp("rows.gguf");
    await writeGguf(path, {}, [{ name: "w", shape: [2, 48], typeId: 8, bytes: new Uint8Array(102) }]);
    expect((await rejection(GgufFile.open(path))).message).toMatch(
      /tensor "w" \(Q8_0\) has dimensions \[48, 2\]: rows of 48 elements, expected a positive multiple of Q8_0's block of 32/,
    );
  });

  it("a missing file", async () => {
    const path = await tmp("absent.gguf");
    const e = await GgufFile.open(path).then(
      () => undefined,
      (e: unknown) => e as Error,
    );
    expect(e?.message).toContain(path);
  });
});
