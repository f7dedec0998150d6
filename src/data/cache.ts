// The tokenized-records cache: a data file tokenized once per (file bytes, tokenizer, template), read back by later runs.
import { createHash } from "node:crypto";
import { mkdir, readFile } from "node:fs/promises";
import { join } from "node:path";
import { writeAll, writeFileAtomic } from "../formats/atomic.ts";
import { locationSuffix, type TrainRecord } from "./records.ts";

/** The cache folder's name inside --out; out_dir.ts counts it as neither run output nor leftover. */
export const DATA_CACHE_DIR = ".tessera-data-cache";

/** Bumped whenever how records are rendered, tokenized or masked changes, so older caches are not read. */
export const CACHE_FORMAT = 1;
const MAGIC = "TSRDATA1";

/** What decides the tokenized records: the file's bytes and everything that renders and tokenizes them. */
export interface CacheKeyParts {
  dataSha256: string;
  tokenizer: string;
  ragTemplate: string;
  vocabSize: number;
}

export function cacheKey(p: CacheKeyParts): string {
  const parts = [CACHE_FORMAT, p.dataSha256, p.tokenizer, p.ragTemplate, p.vocabSize];
  return createHash("sha256").update(JSON.stringify(parts)).digest("hex");
}

export const cacheFile = (dir: string, key: string) => join(dir, `${key}.bin`);

/** Records with where each came from as a number (line or row), so a cache read under another file name says so. */
export interface CachedRecords {
  records: TrainRecord[];
  kinds: Record<string, number>;
}

interface Header {
  key: string;
  count: number;
  unit: "line" | "row";
  kinds: Record<string, number>;
}

/**
 * Layout: MAGIC, u32 header length, the JSON header (padded to 4 bytes), then per record 4 int32s (length,
 * answerStart or -1, line/row number, 1 when labels are the ids themselves), then all ids, then the labels that
 * are not the ids.
 */
export function encodeCache(
  key: string,
  records: readonly TrainRecord[],
  unit: "line" | "row",
  kinds: Record<string, number>,
): Uint8Array {
  const header: Header = { key, count: records.length, unit, kinds };
  const json = new TextEncoder().encode(JSON.stringify(header));
  const headLen = 8 + 4 + Math.ceil(json.length / 4) * 4;
  const meta = new Int32Array(records.length * 4);
  let idsLen = 0;
  let labelsLen = 0;
  records.forEach((r, i) => {
    const shared = r.labels === r.ids;
    meta[i * 4] = r.ids.length;
    meta[i * 4 + 1] = r.answerStart ?? -1;
    meta[i * 4 + 2] = lineOf(r.source);
    meta[i * 4 + 3] = shared ? 1 : 0;
    idsLen += r.ids.length;
    if (!shared) labelsLen += r.labels.length;
  });
  const body = new Int32Array(meta.length + idsLen + labelsLen);
  body.set(meta);
  let at = meta.length;
  for (const r of records) {
    body.set(r.ids, at);
    at += r.ids.length;
  }
  for (const r of records) {
    if (r.labels === r.ids) continue;
    body.set(r.labels, at);
    at += r.labels.length;
  }
  const out = new Uint8Array(headLen + body.byteLength);
  out.set(new TextEncoder().encode(MAGIC));
  new DataView(out.buffer).setUint32(8, json.length, true);
  out.set(json, 12);
  out.set(new Uint8Array(body.buffer), headLen);
  return out;
}

/** The number at the end of a record's source (`file:12`, `file:row 12`). */
function lineOf(source: string): number {
  const m = /(\d+)$/.exec(source);
  return m ? Number(m[1]) : 0;
}

/** The records of a cache file, named after `file`; undefined when it is not a readable cache for `key`. */
export function decodeCache(bytes: Uint8Array, key: string, file: string): CachedRecords | undefined {
  if (bytes.length < 12 || new TextDecoder().decode(bytes.subarray(0, 8)) !== MAGIC) return undefined;
  const jsonLen = new DataView(bytes.buffer, bytes.byteOffset).getUint32(8, true);
  const headLen = 8 + 4 + Math.ceil(jsonLen / 4) * 4;
  if (headLen > bytes.length || (bytes.length - headLen) % 4 !== 0) return undefined;
  let header: Header;
  try {
    header = JSON.parse(new TextDecoder().decode(bytes.subarray(12, 12 + jsonLen))) as Header;
  } catch {
    return undefined;
  }
  if (header.key !== key) return undefined;
  // A copy, aligned for Int32Array whatever the Buffer's offset in Node's pool (Buffer's own slice would share memory).
  const body = new Int32Array(Uint8Array.prototype.slice.call(bytes, headLen).buffer);
  const n = header.count;
  if (body.length < n * 4) return undefined;
  let idsAt = n * 4;
  let total = 0;
  let labelsTotal = 0;
  for (let i = 0; i < n; i++) {
    total += body[i * 4]!;
    if (body[i * 4 + 3] !== 1) labelsTotal += body[i * 4]!;
  }
  if (body.length !== n * 4 + total + labelsTotal) return undefined;
  let labelsAt = idsAt + total;
  const records: TrainRecord[] = [];
  for (let i = 0; i < n; i++) {
    const len = body[i * 4]!;
    const answerStart = body[i * 4 + 1]!;
    const ids = body.subarray(idsAt, idsAt + len);
    idsAt += len;
    let labels = ids;
    if (body[i * 4 + 3] !== 1) {
      labels = body.subarray(labelsAt, labelsAt + len);
      labelsAt += len;
    }
    const source = `${file}${locationSuffix(body[i * 4 + 2]!, header.unit)}`;
    records.push(answerStart >= 0 ? { ids, labels, answerStart, source } : { ids, labels, source });
  }
  return { records, kinds: header.kinds };
}

/** Reads the cache for `key` from `dir`; undefined when there is none (or it is not readable: it is then rebuilt). */
export async function readCache(dir: string, key: string, file: string): Promise<CachedRecords | undefined> {
  const bytes = await readFile(cacheFile(dir, key)).catch(() => undefined);
  return bytes === undefined ? undefined : decodeCache(bytes, key, file);
}

/** Writes the cache for `key` into `dir` (created if needed), atomically: a killed run never leaves half a cache. */
export async function writeCache(dir: string, key: string, bytes: Uint8Array): Promise<string> {
  await mkdir(dir, { recursive: true });
  const path = cacheFile(dir, key);
  await writeFileAtomic(path, (fh) => writeAll(fh, bytes));
  return path;
}
