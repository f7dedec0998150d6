// Test helper: writes small GGUF v3 files byte by byte (an independent writer, so the reader is checked against the spec).
import { writeFile } from "node:fs/promises";

export type MetaValue =
  | { type: "u32"; value: number }
  | { type: "i32"; value: number }
  | { type: "f32"; value: number }
  | { type: "u64"; value: number }
  | { type: "bool"; value: boolean }
  | { type: "str"; value: string }
  | { type: "f64"; value: number }
  | { type: "u8"; value: number }
  | { type: "arr_str"; value: string[] }
  | { type: "arr_i32"; value: number[] };

export interface RawTensor {
  name: string;
  /** Row-major shape (outermost first); written reversed, as GGUF stores it. */
  shape: number[];
  typeId: number;
  bytes: Uint8Array;
}

class Out {
  private parts: number[] = [];
  get length(): number {
    return this.parts.length;
  }
  bytes(b: Uint8Array | number[]): void {
    for (const x of b) this.parts.push(x);
  }
  num(v: number, n: number, kind: "u" | "i" | "f"): void {
    const dv = new DataView(new ArrayBuffer(n));
    if (kind === "f") n === 4 ? dv.setFloat32(0, v, true) : dv.setFloat64(0, v, true);
    else if (n === 8) dv.setBigUint64(0, BigInt(v), true);
    else if (n === 4) kind === "u" ? dv.setUint32(0, v, true) : dv.setInt32(0, v, true);
    else dv.setUint8(0, v);
    this.bytes(new Uint8Array(dv.buffer) as unknown as number[]);
  }
  str(s: string): void {
    const b = new TextEncoder().encode(s);
    this.num(b.length, 8, "u");
    this.bytes(b);
  }
  pad(alignment: number): void {
    while (this.parts.length % alignment !== 0) this.parts.push(0);
  }
  done(): Uint8Array {
    return Uint8Array.from(this.parts);
  }
}

function writeMeta(o: Out, v: MetaValue): void {
  switch (v.type) {
    case "u8":
      o.num(0, 4, "u");
      o.num(v.value, 1, "u");
      return;
    case "u32":
      o.num(4, 4, "u");
      o.num(v.value, 4, "u");
      return;
    case "i32":
      o.num(5, 4, "u");
      o.num(v.value, 4, "i");
      return;
    case "f32":
      o.num(6, 4, "u");
      o.num(v.value, 4, "f");
      return;
    case "bool":
      o.num(7, 4, "u");
      o.num(v.value ? 1 : 0, 1, "u");
      return;
    case "str":
      o.num(8, 4, "u");
      o.str(v.value);
      return;
    case "u64":
      o.num(10, 4, "u");
      o.num(v.value, 8, "u");
      return;
    case "f64":
      o.num(12, 4, "u");
      o.num(v.value, 8, "f");
      return;
    case "arr_str":
      o.num(9, 4, "u");
      o.num(8, 4, "u");
      o.num(v.value.length, 8, "u");
      for (const s of v.value) o.str(s);
      return;
    case "arr_i32":
      o.num(9, 4, "u");
      o.num(5, 4, "u");
      o.num(v.value.length, 8, "u");
      for (const x of v.value) o.num(x, 4, "i");
      return;
  }
}

/** The bytes of a GGUF v3 file with these metadata and tensors (alignment from general.alignment, else 32). */
export function ggufBytes(meta: Record<string, MetaValue>, tensors: RawTensor[]): Uint8Array {
  const align = meta["general.alignment"]?.value as number | undefined;
  const alignment = align ?? 32;
  const o = new Out();
  o.bytes([0x47, 0x47, 0x55, 0x46]);
  o.num(3, 4, "u");
  o.num(tensors.length, 8, "u");
  o.num(Object.keys(meta).length, 8, "u");
  for (const [k, v] of Object.entries(meta)) {
    o.str(k);
    writeMeta(o, v);
  }
  let rel = 0;
  const offsets: number[] = [];
  for (const t of tensors) {
    offsets.push(rel);
    rel += Math.ceil(t.bytes.length / alignment) * alignment;
  }
  tensors.forEach((t, i) => {
    o.str(t.name);
    o.num(t.shape.length, 4, "u");
    for (const d of [...t.shape].reverse()) o.num(d, 8, "u");
    o.num(t.typeId, 4, "u");
    o.num(offsets[i]!, 8, "u");
  });
  o.pad(alignment);
  for (const t of tensors) {
    o.bytes(t.bytes);
    o.pad(alignment);
  }
  return o.done();
}

export async function writeGguf(path: string, meta: Record<string, MetaValue>, tensors: RawTensor[]): Promise<void> {
  await writeFile(path, ggufBytes(meta, tensors));
}

/** Float32 values as F32 tensor bytes. */
export function f32Bytes(v: Float32Array | number[]): Uint8Array {
  return new Uint8Array(Float32Array.from(v).buffer);
}
