// Training records (token ids with per-token labels) and the rules that fit one into a fixed sequence length.
import { TesseraError } from "../errors.ts";

/** Labels with this value take no loss (HF's ignore_index). */
export const IGNORE = -100;

/**
 * One training sequence before padding: token ids and a label per token (HF convention: unshifted, -100 where no
 * loss is taken). `answerStart` is set for prompt/answer records: tokens from there on are the answer, which
 * truncation keeps in preference to the start of the prompt.
 */
export interface TrainRecord {
  ids: Int32Array;
  labels: Int32Array;
  answerStart?: number;
  /** Where the record came from, for messages: `file:line` or `synthetic #i`. */
  source: string;
}

/**
 * A data file (or record) is not what the trainer expects; the message names the file and the line (JSONL:
 * `file:12`) or the row (CSV, Parquet: `file:row 12`, the first data row being 1).
 */
export class DataError extends TesseraError {
  constructor(
    message: string,
    readonly file: string,
    readonly line?: number,
    readonly unit: "line" | "row" = "line",
  ) {
    super(`${file}${locationSuffix(line, unit)}: ${message}`, { code: "ERR_DATA" });
  }
}

/** `:12` for a line, `:row 12` for a table row, "" for the whole file. */
export function locationSuffix(n: number | undefined, unit: "line" | "row"): string {
  return n === undefined ? "" : unit === "line" ? `:${n}` : `:row ${n}`;
}

/**
 * The record cut to at most `seq` tokens, by these rules:
 *   - input_ids/labels records keep their first `seq` tokens;
 *   - prompt/answer records keep the answer (its first `seq - 1` tokens if it is that long) and as much of the
 *     end of the prompt as fits: a long context loses its oldest tokens, the question next to the answer stays.
 * Returns the (possibly shared) ids and labels and whether anything was cut. Padding happens when batching.
 */
export function fitRecord(r: TrainRecord, seq: number): { ids: Int32Array; labels: Int32Array; truncated: boolean } {
  const n = r.ids.length;
  if (n <= seq) return { ids: r.ids, labels: r.labels, truncated: false };
  if (r.answerStart === undefined)
    return { ids: r.ids.subarray(0, seq), labels: r.labels.subarray(0, seq), truncated: true };
  const answerLen = n - r.answerStart;
  const keepAnswer = Math.min(answerLen, seq - 1);
  const keepPrompt = Math.min(r.answerStart, seq - keepAnswer);
  const from = r.answerStart - keepPrompt;
  const to = r.answerStart + keepAnswer;
  return { ids: r.ids.subarray(from, to), labels: r.labels.subarray(from, to), truncated: true };
}

/**
 * How many tokens of the fitted record take a loss. HF's loss shifts labels left, so the label at position 0 is
 * never predicted: a record needs a non-ignored label at position 1 or later to teach anything.
 */
export function lossTokens(labels: Int32Array): number {
  let n = 0;
  for (let i = 1; i < labels.length; i++) if (labels[i] !== IGNORE) n++;
  return n;
}
