// CSV (csv-parse) and Parquet (hyparquet) data files read as rows of named fields, the same fields a JSONL record has.
import { createReadStream } from "node:fs";
import { parse as parseCsv } from "csv-parse";
import { asyncBufferFromFile, parquetReadObjects } from "hyparquet";
import { describe } from "../errors.ts";
import { DataError } from "./records.ts";

/**
 * Fields that hold arrays (token ids, messages, contexts). A CSV cell can only hold text, so these come as JSON
 * text (`[1, 2, 3]`, `[{"role": "user", ...}]`); Parquet may hold them as lists and structs or as JSON text too.
 */
export const ARRAY_FIELDS = ["input_ids", "labels", "prompt_ids", "answer_ids", "messages", "contexts"] as const;

/**
 * One table row as a record: JSON text in the array fields parsed, int64 values as numbers. A CSV cell cannot be
 * null, so an empty one (`csv`) is a field the row does not have: a file may mix record forms, one per row.
 */
export function rowRecord(row: Record<string, unknown>, file: string, n: number, csv = false): Record<string, unknown> {
  const out: Record<string, unknown> = {};
  for (const [k, raw] of Object.entries(row)) {
    if (csv && raw === "") continue;
    let v = plain(raw);
    if ((ARRAY_FIELDS as readonly string[]).includes(k) && typeof v === "string") {
      if (v.trim() === "") v = null;
      else {
        try {
          v = JSON.parse(v);
        } catch (e) {
          throw new DataError(
            `field "${k}" is not valid JSON (${(e as Error).message}); in a CSV or Parquet string column it must be a JSON array`,
            file,
            n,
            "row",
          );
        }
      }
    }
    out[k] = v;
  }
  return out;
}

/** Parquet values as JSON values: bigint -> number, typed arrays -> arrays, nested lists and structs likewise. */
function plain(v: unknown): unknown {
  if (typeof v === "bigint") return Number(v);
  if (ArrayBuffer.isView(v) && !(v instanceof DataView))
    return Array.from(v as unknown as ArrayLike<number | bigint>, plain);
  if (Array.isArray(v)) return v.map(plain);
  if (v !== null && typeof v === "object" && Object.getPrototypeOf(v) === Object.prototype)
    return Object.fromEntries(Object.entries(v).map(([k, x]) => [k, plain(x)]));
  return v;
}

const readError = (file: string, e: unknown, what: string): DataError => {
  if (e instanceof DataError) return e;
  const code = (e as NodeJS.ErrnoException).code;
  return new DataError(
    code === "ENOENT"
      ? "no such file"
      : code === "EISDIR"
        ? `is a directory, expected a ${what} file`
        : `cannot read as ${what} (${e instanceof Error ? e.message : describe(e)})`,
    file,
  );
};

/** Every data row of a CSV file with a header line, in order (1-based row numbers, the header not counted). */
export async function readCsvRows(
  file: string,
  onRow: (row: Record<string, unknown>, n: number) => void,
): Promise<number> {
  let n = 0;
  try {
    const parser = createReadStream(file).pipe(
      parseCsv({ columns: true, bom: true, skip_empty_lines: true, relax_quotes: false }),
    );
    for await (const row of parser as AsyncIterable<Record<string, string>>) {
      n++;
      onRow(rowRecord(row, file, n, true), n);
    }
  } catch (e) {
    if (e instanceof DataError) throw e;
    if ((e as { code?: string }).code?.startsWith("CSV_"))
      throw new DataError(`not valid CSV: ${(e as Error).message}`, file, n + 1, "row");
    throw readError(file, e, "CSV");
  }
  return n;
}

/** Every row of a Parquet file (all row groups), in order (1-based row numbers). */
export async function readParquetRows(
  file: string,
  onRow: (row: Record<string, unknown>, n: number) => void,
): Promise<number> {
  let rows: Record<string, unknown>[];
  try {
    rows = (await parquetReadObjects({ file: await asyncBufferFromFile(file) })) as Record<string, unknown>[];
  } catch (e) {
    throw readError(file, e, "Parquet");
  }
  rows.forEach((row, i) => {
    onRow(rowRecord(row, file, i + 1), i + 1);
  });
  return rows.length;
}
