// safetensors files and multi-shard checkpoints: validated headers, tensors read on demand, atomic writes.

import { mkdir, open, readFile, stat, readdir, type FileHandle } from "node:fs/promises";
import { basename, dirname, join, resolve } from "node:path";
import { FormatError, fmtShape } from "./errors.ts";
import { byteLengthOf, hostTensor, type HostTensor } from "./host_tensor.ts";
import { isHostDType, HOST_DTYPES, type HostDType } from "../ir/types.ts";
import { writeAll, writeFileAtomic, writeFilesAtomic, type PendingFile } from "./atomic.ts";
import { stripBom } from "../host/text.ts";

/** The reference implementation refuses headers above this; so do we, so a garbage length fails fast. */
export const MAX_HEADER_BYTES = 100_000_000;

export interface TensorInfo {
  dtype: HostDType;
  shape: number[];
  byteLength: number;
  /** [start, end) within the data region, which begins right after the header. */
  dataOffsets: [number, number];
}

/** A tensor to be written whose bytes are produced only when the writer reaches it, e.g. converted from a shard. */
export interface LazyTensor {
  dtype: HostDType;
  shape: number[];
  load(): Promise<Uint8Array>;
}

export type TensorSource = HostTensor | LazyTensor;
export type TensorMap<T = TensorSource> = Record<string, T> | Map<string, T>;

export interface ParsedHeader {
  metadata: Record<string, string>;
  tensors: Map<string, TensorInfo>;
  /** Names in data-offset order, i.e. the order their bytes sit in the file. */
  order: string[];
}

// ---- reading ------------------------------------------------------------------------------------------------------

const utf8 = new TextDecoder("utf-8", { fatal: true });

function isObject(v: unknown): v is Record<string, unknown> {
  return typeof v === "object" && v !== null && !Array.isArray(v);
}

function isCount(v: unknown): v is number {
  return typeof v === "number" && Number.isSafeInteger(v) && v >= 0;
}

/**
 * Parses and validates a header against the size of the data region that follows it: every tensor's dtype,
 * shape and offsets, offsets matching dtype x shape, tensors packed with no gap or overlap, and the last one
 * ending exactly at the end of the file (as the reference reader requires).
 */
export function parseHeader(headerBytes: Uint8Array, file: string, dataRegionBytes: number): ParsedHeader {
  const fail: Fail = (msg, tensor) => {
    throw new FormatError(`${file}: ${msg}`, tensor === undefined ? { file } : { file, tensor });
  };
  const json = headerObject(headerBytes, fail);
  let metadata: Record<string, string> = {};
  const tensors = new Map<string, TensorInfo>();
  for (const [name, entry] of Object.entries(json)) {
    if (name === "__metadata__") metadata = headerMetadata(entry, fail);
    else tensors.set(name, tensorEntry(name, entry, fail));
  }
  const order = packedOrder(tensors, dataRegionBytes, fail);
  return { metadata, tensors, order };
}

/** Throws a FormatError naming the file (and the tensor, when given). */
type Fail = (msg: string, tensor?: string) => never;

function headerObject(headerBytes: Uint8Array, fail: Fail): Record<string, unknown> {
  let text: string;
  try {
    text = utf8.decode(headerBytes);
  } catch {
    return fail("safetensors header is not valid UTF-8");
  }
  let json: unknown;
  try {
    json = JSON.parse(text);
  } catch (e) {
    return fail(`safetensors header is not valid JSON (${(e as Error).message})`);
  }
  if (!isObject(json)) return fail("safetensors header must be a JSON object of tensor entries");
  return json;
}

function headerMetadata(entry: unknown, fail: Fail): Record<string, string> {
  if (!isObject(entry)) return fail(`"__metadata__" must be an object of strings, got ${JSON.stringify(entry)}`);
  const metadata: Record<string, string> = {};
  for (const [k, v] of Object.entries(entry)) {
    if (typeof v !== "string")
      return fail(`"__metadata__" value for "${k}" must be a string, got ${JSON.stringify(v)}`);
    metadata[k] = v;
  }
  return metadata;
}

/** One tensor entry, checked on its own: dtype, shape, and offsets spanning exactly dtype x shape bytes. */
function tensorEntry(name: string, entry: unknown, fail: Fail): TensorInfo {
  const where = `tensor "${name}"`;
  if (!isObject(entry)) return fail(`${where}: entry must be an object with dtype, shape, data_offsets`, name);
  const { dtype, shape, data_offsets: offs } = entry;
  if (typeof dtype !== "string" || !isHostDType(dtype)) {
    return fail(`${where} has unknown dtype ${JSON.stringify(dtype)} (supported: ${HOST_DTYPES.join(", ")})`, name);
  }
  if (!Array.isArray(shape) || !shape.every(isCount)) {
    return fail(`${where}: shape must be a list of non-negative integers, got ${JSON.stringify(shape)}`, name);
  }
  if (!Array.isArray(offs) || offs.length !== 2 || !isCount(offs[0]) || !isCount(offs[1]) || offs[1] < offs[0]) {
    return fail(
      `${where}: data_offsets must be [start, end] with 0 <= start <= end, got ${JSON.stringify(offs)}`,
      name,
    );
  }
  let byteLength: number;
  try {
    byteLength = byteLengthOf(dtype, shape as number[]);
  } catch {
    return fail(`${where}: ${dtype}${fmtShape(shape as number[])} is too large to address`, name);
  }
  const [start, end] = offs as [number, number];
  if (end - start !== byteLength) {
    return fail(
      `${where}: ${dtype}${fmtShape(shape as number[])} needs ${byteLength} bytes but data_offsets [${start}, ${end}] span ${end - start}`,
      name,
    );
  }
  return { dtype, shape: [...(shape as number[])], byteLength, dataOffsets: [start, end] };
}

/** Names in data-offset order, checked to tile the data region exactly: no gap, no overlap, nothing after. */
function packedOrder(tensors: Map<string, TensorInfo>, dataRegionBytes: number, fail: Fail): string[] {
  const order = [...tensors.keys()].sort((a, b) => {
    const x = tensors.get(a)!.dataOffsets;
    const y = tensors.get(b)!.dataOffsets;
    return x[0] - y[0] || x[1] - y[1];
  });
  let pos = 0;
  let prev: string | undefined;
  for (const name of order) {
    const [start, end] = tensors.get(name)!.dataOffsets;
    if (start < pos) {
      return fail(
        `tensor "${name}" data_offsets [${start}, ${end}] overlap tensor "${prev}" (which ends at ${pos})`,
        name,
      );
    }
    if (start > pos) {
      const after = prev === undefined ? "the start of the data region" : `tensor "${prev}"`;
      return fail(
        `tensor "${name}" data_offsets [${start}, ${end}] leave a gap of ${start - pos} bytes after ${after}`,
        name,
      );
    }
    pos = end;
    prev = name;
  }
  if (pos > dataRegionBytes) {
    const last = order[order.length - 1]!;
    return fail(
      `file is truncated: tensor "${last}" ends at byte ${pos} of the data region but only ${dataRegionBytes} bytes follow the header`,
      last,
    );
  }
  if (pos < dataRegionBytes) {
    return fail(`${dataRegionBytes - pos} unexpected bytes after the last tensor (data region should be ${pos} bytes)`);
  }
  return order;
}

/** Reads exactly `buf.byteLength` bytes at `position`, or explains that the file ended early. */
async function readExactly(
  fh: FileHandle,
  buf: Uint8Array,
  position: number,
  file: string,
  what: string,
): Promise<void> {
  let off = 0;
  while (off < buf.byteLength) {
    const len = Math.min(buf.byteLength - off, 1 << 30);
    const { bytesRead } = await fh.read(buf, off, len, position + off);
    if (bytesRead === 0) {
      throw new FormatError(`${file}: file ended while reading ${what} (got ${off} of ${buf.byteLength} bytes)`, {
        file,
      });
    }
    off += bytesRead;
  }
}

/**
 * One open safetensors file. `open` reads and validates only the header; `read` fetches one tensor with a
 * positioned read, so a multi-GB checkpoint never sits in the JS heap whole. Reads may run concurrently.
 */
export class SafetensorsFile {
  private closed = false;

  private constructor(
    readonly path: string,
    private readonly fh: FileHandle,
    private readonly header: ParsedHeader,
    /** Absolute file offset of the data region. */
    readonly dataStart: number,
  ) {}

  static async open(path: string): Promise<SafetensorsFile> {
    let fh: FileHandle;
    try {
      fh = await open(path, "r");
    } catch (e) {
      throw new FormatError(`${path}: cannot open safetensors file (${(e as Error).message})`, {
        file: path,
        cause: e,
      });
    }
    try {
      const st = await fh.stat();
      if (!st.isFile()) throw new FormatError(`${path}: not a regular file`, { file: path });
      const size = st.size;
      if (size < 8)
        throw new FormatError(`${path}: file is ${size} bytes, too short for a safetensors header`, { file: path });
      const lenBuf = new Uint8Array(8);
      await readExactly(fh, lenBuf, 0, path, "the header length");
      const n64 = new DataView(lenBuf.buffer).getBigUint64(0, true);
      if (n64 > BigInt(size - 8)) {
        throw new FormatError(
          `${path}: header length ${n64} (first 8 bytes) exceeds the ${size - 8} bytes after it: truncated or not a safetensors file`,
          { file: path },
        );
      }
      const n = Number(n64);
      if (n > MAX_HEADER_BYTES) {
        throw new FormatError(`${path}: header length ${n} exceeds the ${MAX_HEADER_BYTES}-byte limit`, { file: path });
      }
      const headerBytes = new Uint8Array(n);
      await readExactly(fh, headerBytes, 8, path, "the header");
      const header = parseHeader(headerBytes, path, size - 8 - n);
      return new SafetensorsFile(path, fh, header, 8 + n);
    } catch (e) {
      await fh.close().catch(() => {});
      throw e;
    }
  }

  get metadata(): Record<string, string> {
    return { ...this.header.metadata };
  }

  /** Tensor names in the order their data sits in the file (reading in this order is sequential I/O). */
  keys(): string[] {
    return [...this.header.order];
  }

  has(name: string): boolean {
    return this.header.tensors.has(name);
  }

  info(name: string): TensorInfo {
    const t = this.header.tensors.get(name);
    if (t === undefined)
      throw new FormatError(`${this.path}: no tensor named "${name}"`, { file: this.path, tensor: name });
    return { ...t, shape: [...t.shape], dataOffsets: [...t.dataOffsets] };
  }

  /** Reads one tensor into a fresh (so aligned) buffer. */
  async read(name: string): Promise<HostTensor> {
    if (this.closed) throw new Error(`${this.path}: read("${name}") after close()`);
    const info = this.info(name);
    const data = new Uint8Array(info.byteLength);
    await readExactly(this.fh, data, this.dataStart + info.dataOffsets[0], this.path, `tensor "${name}"`);
    return hostTensor(info.dtype, info.shape, data);
  }

  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    await this.fh.close();
  }
}

/** Parses a whole safetensors file held in memory; tensors are copies, independent of `bytes`. */
export function parseSafetensors(
  bytes: Uint8Array,
  file = "<buffer>",
): { metadata: Record<string, string>; tensors: Map<string, HostTensor> } {
  if (bytes.byteLength < 8)
    throw new FormatError(`${file}: ${bytes.byteLength} bytes, too short for a safetensors header`, { file });
  const n64 = new DataView(bytes.buffer, bytes.byteOffset, 8).getBigUint64(0, true);
  if (n64 > BigInt(bytes.byteLength - 8)) {
    throw new FormatError(
      `${file}: header length ${n64} (first 8 bytes) exceeds the ${bytes.byteLength - 8} bytes after it`,
      { file },
    );
  }
  const n = Number(n64);
  if (n > MAX_HEADER_BYTES)
    throw new FormatError(`${file}: header length ${n} exceeds the ${MAX_HEADER_BYTES}-byte limit`, { file });
  const header = parseHeader(bytes.subarray(8, 8 + n), file, bytes.byteLength - 8 - n);
  const tensors = new Map<string, HostTensor>();
  for (const name of header.order) {
    const info = header.tensors.get(name)!;
    const data = bytes.slice(8 + n + info.dataOffsets[0], 8 + n + info.dataOffsets[1]);
    tensors.set(name, hostTensor(info.dtype, info.shape, data));
  }
  return { metadata: header.metadata, tensors };
}

/** Reads a whole file into memory: for adapters and fixtures, not for base checkpoints (use SafetensorsFile). */
export async function readSafetensors(
  path: string,
): Promise<{ metadata: Record<string, string>; tensors: Map<string, HostTensor> }> {
  const f = await SafetensorsFile.open(path);
  try {
    const tensors = new Map<string, HostTensor>();
    for (const name of f.keys()) tensors.set(name, await f.read(name));
    return { metadata: f.metadata, tensors };
  } finally {
    await f.close();
  }
}

// ---- writing ------------------------------------------------------------------------------------------------------

/**
 * The reference writer's dtype order (its enum order, "increasing alignment"); it lays tensors out by this,
 * descending, then by name. Following it makes our files byte-identical to Python's for the same tensors.
 */
const WRITE_RANK: Record<HostDType, number> = {
  BOOL: 0,
  U8: 1,
  I8: 2,
  I16: 3,
  U16: 4,
  F16: 5,
  BF16: 6,
  I32: 7,
  U32: 8,
  F32: 9,
  F64: 10,
  I64: 11,
  U64: 12,
};

function entriesOf<T>(tensors: TensorMap<T>): [string, T][] {
  return tensors instanceof Map ? [...tensors.entries()] : Object.entries(tensors);
}

function isLazy(t: TensorSource): t is LazyTensor {
  return typeof (t as LazyTensor).load === "function";
}

interface Layout {
  header: Uint8Array;
  order: [string, TensorSource][];
  dataBytes: number;
}

/** Validates the tensors and builds the padded header; throws before any file is touched. */
function layout(tensors: TensorMap, metadata: Record<string, string> | undefined, file: string): Layout {
  const entries = entriesOf(tensors);
  for (const [name, t] of entries) {
    const fail = (msg: string): never => {
      throw new FormatError(`${file}: cannot write tensor "${name}": ${msg}`, { file, tensor: name });
    };
    if (name === "" || name === "__metadata__") fail("reserved or empty name");
    if (!isHostDType(t.dtype)) fail(`unknown dtype ${JSON.stringify(t.dtype)}`);
    if (!Array.isArray(t.shape) || !t.shape.every(isCount)) fail(`invalid shape ${JSON.stringify(t.shape)}`);
    const want = byteLengthOf(t.dtype, t.shape);
    if (!isLazy(t) && t.data.byteLength !== want) {
      fail(`${t.dtype}${fmtShape(t.shape)} needs ${want} bytes, data has ${t.data.byteLength}`);
    }
  }
  if (metadata !== undefined) {
    for (const [k, v] of Object.entries(metadata)) {
      if (typeof v !== "string") throw new FormatError(`${file}: metadata value for "${k}" must be a string`, { file });
    }
  }
  entries.sort(([an, a], [bn, b]) => WRITE_RANK[b.dtype] - WRITE_RANK[a.dtype] || (an < bn ? -1 : an > bn ? 1 : 0));
  const head: Record<string, unknown> = {};
  if (metadata !== undefined) head.__metadata__ = metadata;
  let offset = 0;
  for (const [name, t] of entries) {
    const n = byteLengthOf(t.dtype, t.shape);
    head[name] = { dtype: t.dtype, shape: t.shape, data_offsets: [offset, offset + n] };
    offset += n;
  }
  const json = new TextEncoder().encode(JSON.stringify(head));
  // Pad with spaces so the data region starts 8-byte aligned (a valid JSON tail, and what the reference does).
  const padded = new Uint8Array(json.byteLength + ((8 - (json.byteLength % 8)) % 8)).fill(0x20);
  padded.set(json);
  const header = new Uint8Array(8 + padded.byteLength);
  new DataView(header.buffer).setBigUint64(0, BigInt(padded.byteLength), true);
  header.set(padded, 8);
  return { header, order: entries, dataBytes: offset };
}

function writerFor(l: Layout, file: string): (fh: FileHandle) => Promise<void> {
  return async (fh) => {
    await writeAll(fh, l.header);
    for (const [name, t] of l.order) {
      const data = isLazy(t) ? await t.load() : t.data;
      const want = byteLengthOf(t.dtype, t.shape);
      if (data.byteLength !== want) {
        throw new FormatError(`${file}: tensor "${name}" loaded ${data.byteLength} bytes, expected ${want}`, {
          file,
          tensor: name,
        });
      }
      await writeAll(fh, data);
    }
  };
}

/** The complete file as bytes (small files, tests); same layout as `writeSafetensors`. */
export function serializeSafetensors(tensors: TensorMap<HostTensor>, metadata?: Record<string, string>): Uint8Array {
  const l = layout(tensors, metadata, "<buffer>");
  const out = new Uint8Array(l.header.byteLength + l.dataBytes);
  out.set(l.header);
  let pos = l.header.byteLength;
  for (const [, t] of l.order) {
    out.set((t as HostTensor).data, pos);
    pos += (t as HostTensor).data.byteLength;
  }
  return out;
}

export interface WriteOptions {
  /** `__metadata__`; Python's torch writer puts {"format": "pt"}, which some loaders check for. */
  metadata?: Record<string, string>;
}

/**
 * Writes a safetensors file atomically: a temp file in the same directory, renamed over `path` only once
 * complete, so a crash or error leaves either the old file or the new one. Tensors are laid out as the
 * reference writer does (dtype alignment descending, then name), one at a time.
 */
export async function writeSafetensors(path: string, tensors: TensorMap, opts: WriteOptions = {}): Promise<void> {
  const l = layout(tensors, opts.metadata, path);
  await writeFileAtomic(path, writerFor(l, path));
}

/** A safetensors file as a member of a multi-file atomic write (see writeFilesAtomic). */
export function pendingSafetensors(path: string, tensors: TensorMap, opts: WriteOptions = {}): PendingFile {
  const l = layout(tensors, opts.metadata, path);
  return { target: path, write: writerFor(l, path) };
}

// ---- multi-file checkpoints ---------------------------------------------------------------------------------------

export const SINGLE_FILE = "model.safetensors";
export const INDEX_FILE = "model.safetensors.index.json";

/**
 * A checkpoint directory as one tensor namespace: either `model.safetensors`, or
 * `model.safetensors.index.json` whose `weight_map` names the shard holding each tensor. Opening reads every
 * shard's header and checks the index against them; tensor data is read on demand.
 */
export class Checkpoint {
  private constructor(
    readonly dir: string,
    /** The index file, when the checkpoint is sharded. */
    readonly indexPath: string | undefined,
    private readonly shards: SafetensorsFile[],
    private readonly where: Map<string, SafetensorsFile>,
  ) {}

  /** `path` may be a directory, a `.safetensors` file or an index `.json`. */
  static async open(path: string): Promise<Checkpoint> {
    const st = await stat(path).catch((e: Error) => {
      throw new FormatError(`${path}: cannot open checkpoint (${e.message})`, { file: path, cause: e });
    });
    if (st.isDirectory()) {
      const single = join(path, SINGLE_FILE);
      if (await isFile(single)) return Checkpoint.fromFiles(path, undefined, [await SafetensorsFile.open(single)]);
      const index = join(path, INDEX_FILE);
      if (await isFile(index)) return Checkpoint.openIndex(index);
      const names = await readdir(path);
      const hint = names.some((n) => n.endsWith(".bin") || n.endsWith(".pt"))
        ? " (found PyTorch pickle weights: convert them to safetensors first)"
        : "";
      throw new FormatError(`${path}: no ${SINGLE_FILE} or ${INDEX_FILE} in this directory${hint}`, { file: path });
    }
    if (path.endsWith(".json")) return Checkpoint.openIndex(path);
    return Checkpoint.fromFiles(dirname(path), undefined, [await SafetensorsFile.open(path)]);
  }

  private static fromFiles(dir: string, indexPath: string | undefined, shards: SafetensorsFile[]): Checkpoint {
    const where = new Map<string, SafetensorsFile>();
    for (const s of shards) for (const k of s.keys()) where.set(k, s);
    return new Checkpoint(dir, indexPath, shards, where);
  }

  static async openIndex(indexPath: string): Promise<Checkpoint> {
    const dir = dirname(indexPath);
    const fail = (msg: string, tensor?: string): never => {
      throw new FormatError(
        `${indexPath}: ${msg}`,
        tensor === undefined ? { file: indexPath } : { file: indexPath, tensor },
      );
    };
    let json: unknown;
    try {
      json = JSON.parse(stripBom(await readFile(indexPath, "utf8")));
    } catch (e) {
      return fail(`cannot read index (${(e as Error).message})`);
    }
    if (!isObject(json) || !isObject(json.weight_map)) return fail(`must be an object with a "weight_map" object`);
    const byShard = new Map<string, string[]>();
    for (const [name, shard] of Object.entries(json.weight_map)) {
      if (typeof shard !== "string" || shard === "" || shard.includes("/") || shard.includes("\\") || shard === "..") {
        return fail(
          `weight_map entry for "${name}" must be a file name in the same directory, got ${JSON.stringify(shard)}`,
          name,
        );
      }
      let list = byShard.get(shard);
      if (list === undefined) {
        list = [];
        byShard.set(shard, list);
      }
      list.push(name);
    }
    if (byShard.size === 0) return fail("weight_map is empty");
    const shards: SafetensorsFile[] = [];
    try {
      for (const [shard, names] of byShard) {
        const p = join(dir, shard);
        if (!(await isFile(p))) {
          const more = names.length > 1 ? ` and ${names.length - 1} more` : "";
          fail(`shard "${shard}" (holding "${names[0]}"${more}) does not exist in ${dir}`, names[0]);
        }
        shards.push(await SafetensorsFile.open(p));
      }
      const found = new Map<string, SafetensorsFile[]>();
      for (const s of shards) {
        for (const k of s.keys()) {
          const list = found.get(k);
          if (list === undefined) found.set(k, [s]);
          else list.push(s);
        }
      }
      const where = new Map<string, SafetensorsFile>();
      for (const [k, [s, other]] of found) {
        const shard = basename(s!.path);
        if (other !== undefined)
          fail(`tensor "${k}" appears in two shards, "${shard}" and "${basename(other.path)}"`, k);
        const listed = json.weight_map[k];
        if (listed === undefined) fail(`shard "${shard}" holds tensor "${k}" that weight_map does not list`, k);
        if (listed !== shard) fail(`tensor "${k}" is mapped to "${listed as string}" but is stored in "${shard}"`, k);
        where.set(k, s!);
      }
      for (const [shard, names] of byShard) {
        for (const name of names) {
          if (!where.has(name)) fail(`tensor "${name}" is mapped to shard "${shard}", which does not contain it`, name);
        }
      }
      return new Checkpoint(dir, indexPath, shards, where);
    } catch (e) {
      await Promise.all(shards.map((s) => s.close().catch(() => {})));
      throw e;
    }
  }

  /** Shard paths, in index order. */
  get files(): string[] {
    return this.shards.map((s) => s.path);
  }

  /** All tensor names, shard by shard in file order (the order that reads sequentially). */
  keys(): string[] {
    return this.shards.flatMap((s) => s.keys());
  }

  has(name: string): boolean {
    return this.where.has(name);
  }

  private shardOf(name: string): SafetensorsFile {
    const s = this.where.get(name);
    if (s === undefined) {
      const file = this.indexPath ?? this.shards[0]!.path;
      throw new FormatError(`${file}: checkpoint has no tensor named "${name}"`, { file, tensor: name });
    }
    return s;
  }

  /** Dtype, shape and offsets, plus the file that holds the tensor. */
  info(name: string): TensorInfo & { file: string } {
    const s = this.shardOf(name);
    return { ...s.info(name), file: s.path };
  }

  async read(name: string): Promise<HostTensor> {
    return this.shardOf(name).read(name);
  }

  async close(): Promise<void> {
    await Promise.all(this.shards.map((s) => s.close()));
  }
}

async function isFile(p: string): Promise<boolean> {
  return (await stat(p).catch(() => undefined))?.isFile() ?? false;
}

export interface CheckpointWriteOptions extends WriteOptions {
  /** Largest shard in bytes before splitting (a tensor larger than this gets a shard of its own); default 5 GB like HF. */
  maxShardBytes?: number;
  /** More files (e.g. config.json) to replace in the same all-or-nothing step as the weights. */
  extraFiles?: PendingFile[];
}

/**
 * Writes tensors as `model.safetensors`, or, past `maxShardBytes`, as `model-0000i-of-0000N.safetensors` shards
 * plus `model.safetensors.index.json`; all files atomically together, including the removal of weight files of an
 * earlier save that the new one does not use, so the directory never holds two competing layouts.
 */
export async function writeCheckpoint(
  dir: string,
  tensors: TensorMap,
  opts: CheckpointWriteOptions = {},
): Promise<void> {
  const max = opts.maxShardBytes ?? 5_000_000_000;
  const entries = entriesOf(tensors).sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0));
  const groups: [string, TensorSource][][] = [[]];
  let size = 0;
  let total = 0;
  for (const e of entries) {
    const n = byteLengthOf(e[1].dtype, e[1].shape);
    total += n;
    if (size > 0 && size + n > max) {
      groups.push([]);
      size = 0;
    }
    groups[groups.length - 1]!.push(e);
    size += n;
  }
  const metadata = opts.metadata ?? { format: "pt" };
  const files: PendingFile[] = [];
  const keep = new Set<string>();
  if (groups.length === 1) {
    files.push(pendingSafetensors(join(dir, SINGLE_FILE), new Map(groups[0]), { metadata }));
    keep.add(SINGLE_FILE);
  } else {
    const weightMap: Record<string, string> = {};
    const width = Math.max(5, String(groups.length).length);
    groups.forEach((g, i) => {
      const name = `model-${String(i + 1).padStart(width, "0")}-of-${String(groups.length).padStart(width, "0")}.safetensors`;
      for (const [k] of g) weightMap[k] = name;
      files.push(pendingSafetensors(join(dir, name), new Map(g), { metadata }));
      keep.add(name);
    });
    const index = `${JSON.stringify({ metadata: { total_size: total }, weight_map: weightMap }, null, 2)}\n`;
    files.push({ target: join(dir, INDEX_FILE), write: (fh) => writeAll(fh, new TextEncoder().encode(index)) });
    keep.add(INDEX_FILE);
  }
  // Weight files of an earlier save in the other layout go in the same step: left behind, model.safetensors
  // would shadow a new index (loaders try it first), and a stale index would point at missing shards.
  const stale = /^model(-\d+-of-\d+)?\.safetensors(\.index\.json)?$/;
  const remove = (await readdir(resolve(dir)).catch(() => [] as string[]))
    .filter((name) => stale.test(name) && !keep.has(name))
    .map((name) => join(dir, name));
  await mkdir(dir, { recursive: true });
  await writeFilesAtomic([...files, ...(opts.extraFiles ?? [])], { remove });
}
