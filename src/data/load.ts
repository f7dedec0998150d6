// Any training data file (JSONL, CSV, Parquet; token ids or text) read into TrainRecords, tokenized once and cached.
import { createHash } from "node:crypto";
import { createReadStream } from "node:fs";
import { extname } from "node:path";
import { cacheKey, encodeCache, readCache, writeCache } from "./cache.ts";
import { loadJsonl } from "./jsonl.ts";
import { DataError, type TrainRecord } from "./records.ts";
import { readCsvRows, readParquetRows } from "./tables.ts";
import { parseAnyRecord, RECORD_FORMS, type RecordContext, type RecordKind } from "./text_records.ts";

export type DataFormat = "jsonl" | "csv" | "parquet";

/** The reader for a file name: .parquet, .csv, anything else JSON lines (.jsonl, .json). */
export function dataFormat(file: string): DataFormat {
  const ext = extname(file).toLowerCase();
  return ext === ".parquet" ? "parquet" : ext === ".csv" ? "csv" : "jsonl";
}

export interface DataFileContext extends RecordContext {
  /** Folder of the tokenized-records cache; undefined never caches. */
  cacheDir?: string;
}

export interface LoadedDataFile {
  records: TrainRecord[];
  /** Hex sha256 of the file's bytes. */
  sha256: string;
  format: DataFormat;
  /** Records per form, in the order first seen. */
  kinds: Partial<Record<RecordKind, number>>;
  /**
   * "read": the records came from the cache; "new": text was tokenized now (saveCache writes the cache); "none":
   * only token-id records, nothing to cache.
   */
  cache: "read" | "new" | "none";
  /** Writes the cache of a "new" load into cacheDir and returns its path (undefined when there is nothing to write). */
  saveCache(): Promise<string | undefined>;
}

/**
 * Reads `file` (by its extension: JSONL, CSV or Parquet) into records of any form text_records.ts knows. With a
 * tokenizer and a cacheDir, a file tokenized before with the same tokenizer, chat template and RAG template is
 * read from the cache instead (the key is the file's sha256, so an edited file is tokenized afresh). Nothing is
 * written here: the caller calls saveCache once it writes its outputs. The first bad record throws a DataError
 * naming `file:line` (JSONL) or `file:row N` (CSV, Parquet) and the field.
 */
export async function loadDataFile(file: string, ctx: DataFileContext): Promise<LoadedDataFile> {
  const format = dataFormat(file);
  const sha256 = await hashFile(file, format);
  const tokenizer = "encode" in ctx.tokenizer ? ctx.tokenizer : undefined;
  const key =
    tokenizer && ctx.cacheDir !== undefined
      ? cacheKey({
          dataSha256: sha256,
          tokenizer: tokenizer.identity,
          ragTemplate: ctx.ragTemplate,
          vocabSize: ctx.vocabSize,
        })
      : undefined;
  if (key !== undefined) {
    const hit = await readCache(ctx.cacheDir!, key, file);
    if (hit)
      return {
        records: hit.records,
        sha256,
        format,
        kinds: hit.kinds,
        cache: "read",
        saveCache: async () => undefined,
      };
  }
  const kinds: Partial<Record<RecordKind, number>> = {};
  let tokenized = false;
  const unit = format === "jsonl" ? "line" : "row";
  const take = (json: unknown, n: number): TrainRecord => {
    const p = parseAnyRecord(json, { file, n, unit }, ctx);
    kinds[p.kind] = (kinds[p.kind] ?? 0) + 1;
    tokenized ||= p.tokenized;
    return p.record;
  };
  let records: TrainRecord[];
  if (format === "jsonl") {
    records = (
      await loadJsonl(file, {
        vocabSize: ctx.vocabSize,
        parse: (json, _file, line) => take(json, line),
        forms: RECORD_FORMS,
      })
    ).records;
  } else {
    records = [];
    const onRow = (row: Record<string, unknown>, n: number) => {
      records.push(take(row, n));
    };
    const rows = format === "csv" ? await readCsvRows(file, onRow) : await readParquetRows(file, onRow);
    if (rows === 0)
      throw new DataError(`no rows (expected a column per field of one record form: ${RECORD_FORMS})`, file);
  }
  const cache = tokenized && key !== undefined ? "new" : "none";
  const saveCache = async () =>
    cache === "new" ? await writeCache(ctx.cacheDir!, key!, encodeCache(key!, records, unit, kinds)) : undefined;
  return { records, sha256, format, kinds, cache, saveCache };
}

/** The sha256 of a file's bytes, streamed. */
async function hashFile(file: string, format: DataFormat): Promise<string> {
  const hash = createHash("sha256");
  try {
    for await (const chunk of createReadStream(file, { highWaterMark: 1 << 22 }) as AsyncIterable<Buffer>)
      hash.update(chunk);
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    const what = format === "jsonl" ? ".jsonl" : `.${format}`;
    throw new DataError(
      code === "ENOENT"
        ? "no such file"
        : code === "EISDIR"
          ? `is a directory, expected a ${what} file`
          : `cannot read (${(e as Error).message})`,
      file,
    );
  }
  return hash.digest("hex");
}

/** "12 messages, 3 text" for the data summary line. */
export function describeKinds(kinds: Partial<Record<RecordKind, number>>): string {
  return Object.entries(kinds)
    .map(([k, n]) => `${n} ${k}`)
    .join(", ");
}
