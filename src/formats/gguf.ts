// GGUF v3 model files: header, metadata and tensor table read from the file's start, tensor data read one tensor at a time.
//
// Written here rather than with @huggingface/gguf: that package parses the header through fetch() and range
// requests (local files behind a flag) and dequantizes nothing, while the format is small (a fixed header,
// typed key/values, a tensor table) and reading it over our own file handle lets every error name the file,
// tensor and type, and lets tensor reads share the handle.

import { open, type FileHandle } from "node:fs/promises";
import { FormatError, fmtShape } from "./errors.ts";
import { dequantize, ggmlByteSize, ggmlType, type GgmlType } from "./gguf_quants.ts";
import { fsError } from "../host/fs_errors.ts";

const MAGIC = 0x46554747; // "GGUF" little-endian
const DEFAULT_ALIGNMENT = 32;
/** Far above any real file's header (SmolLM2's, with a 49k-token vocabulary, is ~3 MB); a larger one is damaged. */
const MAX_HEADER_BYTES = 1 << 30;
const MAX_DIMS = 4; // GGML_MAX_DIMS

export type GgufValue = number | bigint | boolean | string | GgufValue[];

export interface GgufTensorInfo {
  readonly name: string;
  /** Row-major shape, outermost first (torch's order: a [out, in] weight is [out, in]); GGUF stores it reversed. */
  readonly shape: readonly number[];
  readonly type: GgmlType;
  /** Absolute byte offset of the data in the file. */
  readonly offset: number;
  readonly byteLength: number;
}

/** The header ran past the bytes read so far: read more and parse again. */
class NeedMore extends Error {}

/** A cursor over the header bytes, little-endian. */
class Cursor {
  pos = 0;
  private readonly view: DataView;
  constructor(
    private readonly buf: Uint8Array,
    private readonly complete: boolean,
    private readonly file: string,
  ) {
    this.view = new DataView(buf.buffer, buf.byteOffset, buf.byteLength);
  }
  private need(n: number): number {
    if (this.pos + n > this.buf.length) {
      if (!this.complete) throw new NeedMore();
      throw new FormatError(
        `${this.file}: truncated GGUF header (needs byte ${this.pos + n}, file has ${this.buf.length})`,
        {
          file: this.file,
        },
      );
    }
    const p = this.pos;
    this.pos += n;
    return p;
  }
  u8 = () => this.view.getUint8(this.need(1));
  i8 = () => this.view.getInt8(this.need(1));
  u16 = () => this.view.getUint16(this.need(2), true);
  i16 = () => this.view.getInt16(this.need(2), true);
  u32 = () => this.view.getUint32(this.need(4), true);
  i32 = () => this.view.getInt32(this.need(4), true);
  f32 = () => this.view.getFloat32(this.need(4), true);
  f64 = () => this.view.getFloat64(this.need(8), true);
  u64 = () => this.view.getBigUint64(this.need(8), true);
  i64 = () => this.view.getBigInt64(this.need(8), true);
  /** A u64 that must fit a JS number (counts, sizes, offsets). */
  size(what: string): number {
    const v = this.u64();
    if (v > BigInt(Number.MAX_SAFE_INTEGER))
      throw new FormatError(`${this.file}: ${what} is ${v}, too large (is the file damaged?)`, { file: this.file });
    return Number(v);
  }
  str(what: string): string {
    const n = this.size(`length of ${what}`);
    if (n > this.buf.length && this.complete)
      throw new FormatError(`${this.file}: ${what} claims ${n} bytes, past the end of the file`, { file: this.file });
    const p = this.need(n);
    return new TextDecoder("utf-8").decode(this.buf.subarray(p, p + n));
  }
}

const VALUE_TYPES = [
  "UINT8",
  "INT8",
  "UINT16",
  "INT16",
  "UINT32",
  "INT32",
  "FLOAT32",
  "BOOL",
  "STRING",
  "ARRAY",
  "UINT64",
  "INT64",
  "FLOAT64",
] as const;

function readValue(c: Cursor, type: number, key: string, file: string): GgufValue {
  switch (type) {
    case 0:
      return c.u8();
    case 1:
      return c.i8();
    case 2:
      return c.u16();
    case 3:
      return c.i16();
    case 4:
      return c.u32();
    case 5:
      return c.i32();
    case 6:
      return c.f32();
    case 7:
      return c.u8() !== 0;
    case 8:
      return c.str(`metadata "${key}"`);
    case 9: {
      const elt = c.u32();
      const n = c.size(`length of metadata array "${key}"`);
      if (elt === 9) throw new FormatError(`${file}: metadata "${key}": nested arrays are not supported`, { file });
      const out: GgufValue[] = new Array(n);
      for (let i = 0; i < n; i++) out[i] = readValue(c, elt, key, file);
      return out;
    }
    case 10: {
      const v = c.u64();
      return v <= BigInt(Number.MAX_SAFE_INTEGER) ? Number(v) : v;
    }
    case 11: {
      const v = c.i64();
      return v <= BigInt(Number.MAX_SAFE_INTEGER) && v >= BigInt(Number.MIN_SAFE_INTEGER) ? Number(v) : v;
    }
    case 12:
      return c.f64();
    default:
      throw new FormatError(
        `${file}: metadata "${key}" has value type ${type}, expected one of 0..12 (${VALUE_TYPES.join(", ")})`,
        { file },
      );
  }
}

interface Parsed {
  version: number;
  metadata: Map<string, GgufValue>;
  tensors: GgufTensorInfo[];
  alignment: number;
  dataOffset: number;
}

function parseHeader(buf: Uint8Array, complete: boolean, file: string, fileSize: number): Parsed {
  const c = new Cursor(buf, complete, file);
  const magic = c.u32();
  if (magic !== MAGIC) throw new FormatError(`${file}: not a GGUF file (the first 4 bytes are not "GGUF")`, { file });
  const version = c.u32();
  if (version !== 2 && version !== 3)
    throw new FormatError(`${file}: GGUF version ${version}, expected 3 (or 2)`, { file });
  const nTensors = c.size("tensor count");
  const nKv = c.size("metadata count");
  const metadata = new Map<string, GgufValue>();
  for (let i = 0; i < nKv; i++) {
    const key = c.str(`metadata key #${i}`);
    const type = c.u32();
    metadata.set(key, readValue(c, type, key, file));
  }
  const alignment = metadata.get("general.alignment") ?? DEFAULT_ALIGNMENT;
  if (typeof alignment !== "number" || alignment <= 0 || alignment % 8 !== 0)
    throw new FormatError(`${file}: metadata "general.alignment" is ${String(alignment)}, expected a multiple of 8`, {
      file,
    });
  const raw: { name: string; shape: number[]; type: GgmlType; rel: number }[] = [];
  const seen = new Set<string>();
  for (let i = 0; i < nTensors; i++) {
    const name = c.str(`name of tensor #${i}`);
    const nd = c.u32();
    if (nd < 1 || nd > MAX_DIMS)
      throw new FormatError(`${file}: tensor "${name}" has ${nd} dimensions, expected 1..${MAX_DIMS}`, {
        file,
        tensor: name,
      });
    const ne: number[] = [];
    for (let d = 0; d < nd; d++) ne.push(c.size(`dimension ${d} of tensor "${name}"`));
    const typeId = c.u32();
    const rel = c.size(`offset of tensor "${name}"`);
    const type = ggmlType(typeId);
    if (!type)
      throw new FormatError(`${file}: tensor "${name}" has ggml type id ${typeId}, which ggml does not define`, {
        file,
        tensor: name,
      });
    if (seen.has(name)) throw new FormatError(`${file}: tensor "${name}" appears twice`, { file, tensor: name });
    seen.add(name);
    if (ne.some((d) => d < 1) || ne[0]! % type.blockSize !== 0)
      throw new FormatError(
        `${file}: tensor "${name}" (${type.name}) has dimensions ${fmtShape(ne)}: rows of ${ne[0]} elements, expected a positive multiple of ${type.name}'s block of ${type.blockSize}`,
        { file, tensor: name },
      );
    if (rel % alignment !== 0)
      throw new FormatError(`${file}: tensor "${name}" starts at data offset ${rel}, not a multiple of ${alignment}`, {
        file,
        tensor: name,
      });
    raw.push({ name, shape: [...ne].reverse(), type, rel });
  }
  const dataOffset = Math.ceil(c.pos / alignment) * alignment;
  const tensors = raw.map((r): GgufTensorInfo => {
    const n = r.shape.reduce((a, b) => a * b, 1);
    const byteLength = ggmlByteSize(r.type, n);
    const offset = dataOffset + r.rel;
    if (offset + byteLength > fileSize)
      throw new FormatError(
        `${file}: tensor "${r.name}" (${r.type.name} ${fmtShape(r.shape)}) needs bytes ${offset}..${offset + byteLength}, past the end of the file (${fileSize} bytes): truncated?`,
        { file, tensor: r.name },
      );
    return { name: r.name, shape: r.shape, type: r.type, offset, byteLength };
  });
  return { version, metadata, tensors, alignment, dataOffset };
}

/**
 * An open GGUF file. `open` reads only the header; `read`/`readF32` fetch one tensor's bytes at a time, so
 * memory holds one tensor (and its float32 copy), never the file.
 */
export class GgufFile {
  private readonly byName: Map<string, GgufTensorInfo>;

  private constructor(
    readonly path: string,
    private readonly fh: FileHandle,
    readonly version: number,
    readonly metadata: ReadonlyMap<string, GgufValue>,
    readonly tensors: readonly GgufTensorInfo[],
    readonly alignment: number,
  ) {
    this.byName = new Map(tensors.map((t) => [t.name, t]));
  }

  static async open(path: string): Promise<GgufFile> {
    let fh: FileHandle;
    try {
      fh = await open(path, "r");
    } catch (e) {
      throw fsError(e, path, "open the GGUF file");
    }
    try {
      const size = (await fh.stat()).size;
      // Read a first guess of the header; when parsing runs past it, double and parse again.
      let want = Math.min(size, 1 << 20);
      for (;;) {
        const buf = new Uint8Array(want);
        const { bytesRead } = await fh.read(buf, 0, want, 0);
        const complete = want >= size;
        try {
          const p = parseHeader(buf.subarray(0, bytesRead), complete, path, size);
          return new GgufFile(path, fh, p.version, p.metadata, p.tensors, p.alignment);
        } catch (e) {
          if (!(e instanceof NeedMore)) throw e;
          if (want >= MAX_HEADER_BYTES)
            throw new FormatError(`${path}: GGUF header larger than ${MAX_HEADER_BYTES} bytes (is the file damaged?)`, {
              file: path,
            });
          want = Math.min(size, want * 2);
        }
      }
    } catch (e) {
      await fh.close();
      throw e;
    }
  }

  has(name: string): boolean {
    return this.byName.has(name);
  }

  info(name: string): GgufTensorInfo {
    const t = this.byName.get(name);
    if (!t) throw new FormatError(`${this.path}: no tensor "${name}"`, { file: this.path, tensor: name });
    return t;
  }

  /** A metadata value, or undefined when the key is absent. */
  get(key: string): GgufValue | undefined {
    return this.metadata.get(key);
  }

  /** The stored bytes of one tensor, as in the file (quantized blocks for quantized types). */
  async readRaw(name: string): Promise<Uint8Array> {
    const t = this.info(name);
    const buf = new Uint8Array(t.byteLength);
    const { bytesRead } = await this.fh.read(buf, 0, t.byteLength, t.offset);
    if (bytesRead !== t.byteLength)
      throw new FormatError(`${this.path}: tensor "${name}": file ended after ${bytesRead} of ${t.byteLength} bytes`, {
        file: this.path,
        tensor: name,
      });
    return buf;
  }

  /** One tensor as float32 in row-major order, dequantized; an unsupported type is an error naming it. */
  async readF32(name: string): Promise<Float32Array> {
    const t = this.info(name);
    if (!t.type.supported)
      throw new FormatError(
        `${this.path}: tensor "${name}" has type ${t.type.name}, which Tessera cannot dequantize (supported: F32, F16, BF16, Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, Q4_K, Q5_K, Q6_K)`,
        { file: this.path, tensor: name },
      );
    const n = t.shape.reduce((a, b) => a * b, 1);
    return dequantize(t.type, await this.readRaw(name), n);
  }

  close(): Promise<void> {
    return this.fh.close();
  }
}
