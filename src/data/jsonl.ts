// JSONL training data with token ids (no tokenizer yet): input_ids/labels or prompt_ids/answer_ids records, validated per line.
import { createHash } from "node:crypto";
import { createReadStream } from "node:fs";
import { describe } from "../errors.ts";
import { DataError, IGNORE, locationSuffix, type TrainRecord } from "./records.ts";

export interface JsonlOptions {
  /** Token ids must lie in [0, vocabSize). */
  vocabSize: number;
  /** Turns one line's JSON into a record (default: parseRecord, the token-id forms); throws a DataError if it cannot. */
  parse?: (json: unknown, file: string, line: number) => TrainRecord;
  /** The record forms `parse` accepts, for the message about a file with no records. */
  forms?: string;
}

const FORMS =
  'a JSON object with "input_ids" (and optionally "labels", -100 where no loss is taken), or with "prompt_ids" and "answer_ids" (loss on the answer only)';

/**
 * One line's record. Token ids must be integers in [0, vocabSize); labels the same or -100 and as many as the
 * ids; answers non-empty. Fields other than the four above are ignored (ids, text, metadata are common).
 */
export function parseRecord(
  json: unknown,
  file: string,
  line: number,
  opts: JsonlOptions,
  unit: "line" | "row" = "line",
): TrainRecord {
  const fail = (msg: string): never => {
    throw new DataError(msg, file, line, unit);
  };
  if (typeof json !== "object" || json === null || Array.isArray(json))
    fail(`expected ${FORMS}; got ${describe(json)}`);
  const o = json as Record<string, unknown>;
  const V = opts.vocabSize;
  const ids = (field: string, allowIgnore = false): Int32Array => {
    const v = o[field];
    if (!Array.isArray(v)) fail(`field "${field}" must be an array of integer token ids, got ${describe(v)}`);
    const arr = v as unknown[];
    const out = new Int32Array(arr.length);
    for (let i = 0; i < arr.length; i++) {
      const x = arr[i];
      if (typeof x !== "number" || !Number.isInteger(x))
        fail(`"${field}"[${i}] is ${describe(x)}, expected an integer token id`);
      const n = x as number;
      if (allowIgnore && n === IGNORE) {
        out[i] = n;
        continue;
      }
      if (n < 0 || n >= V) {
        fail(
          `"${field}"[${i}] = ${n} is outside the model's vocabulary (token ids 0..${V - 1}${allowIgnore ? ", or -100 for no loss" : ""})`,
        );
      }
      out[i] = n;
    }
    return out;
  };
  const hasA = "input_ids" in o || "labels" in o;
  const hasB = "prompt_ids" in o || "answer_ids" in o;
  if (hasA && hasB) fail(`has both "input_ids"/"labels" and "prompt_ids"/"answer_ids"; use one form per record`);
  const source = `${file}${locationSuffix(line, unit)}`;
  if (hasB) {
    if (!("prompt_ids" in o))
      fail(`missing field "prompt_ids" (a record with "answer_ids" needs the prompt too; it may be [])`);
    if (!("answer_ids" in o)) fail(`missing field "answer_ids" (the tokens the loss is taken on)`);
    const prompt = ids("prompt_ids");
    const answer = ids("answer_ids");
    if (answer.length === 0) fail(`"answer_ids" is empty: a record needs at least one answer token`);
    const all = new Int32Array(prompt.length + answer.length);
    all.set(prompt);
    all.set(answer, prompt.length);
    const labels = new Int32Array(all.length).fill(IGNORE);
    labels.set(answer, prompt.length);
    return { ids: all, labels, answerStart: prompt.length, source };
  }
  if (!("input_ids" in o)) fail(`missing field "input_ids": expected ${FORMS}`);
  const input = ids("input_ids");
  if (input.length === 0) fail(`"input_ids" is empty`);
  // Shared, not copied: records are never written to, and a copy would double the memory of a large file.
  if (!("labels" in o) || o.labels === null) return { ids: input, labels: input, source };
  const labels = ids("labels", true);
  if (labels.length !== input.length)
    fail(`"labels" has ${labels.length} entries but "input_ids" has ${input.length}; they must match one to one`);
  return { ids: input, labels, source };
}

/** A UTF-8 byte order mark, which editors on Windows put at the start of a file; JSON.parse rejects it. */
const BOM = "\uFEFF";

/** One line's record, or undefined for a blank line; `lineNo` is 1-based. A BOM is stripped from line 1. */
function parseLine(line: string, lineNo: number, file: string, opts: JsonlOptions): TrainRecord | undefined {
  let raw = line.endsWith("\r") ? line.slice(0, -1) : line;
  if (lineNo === 1 && raw.startsWith(BOM)) raw = raw.slice(1);
  if (raw.trim() === "") return undefined;
  let json: unknown;
  try {
    json = JSON.parse(raw);
  } catch (e) {
    throw new DataError(`not valid JSON (${(e as Error).message})`, file, lineNo);
  }
  return opts.parse ? opts.parse(json, file, lineNo) : parseRecord(json, file, lineNo, opts);
}

function noRecords(file: string, opts: JsonlOptions): DataError {
  return new DataError(`no records (expected one JSON object per line: ${opts.forms ?? FORMS})`, file);
}

/** Every record of a JSONL text (blank lines skipped); the first bad line throws a DataError naming file:line. */
export function parseJsonl(text: string, file: string, opts: JsonlOptions): TrainRecord[] {
  const out: TrainRecord[] = [];
  const lines = text.split("\n");
  for (let i = 0; i < lines.length; i++) {
    const r = parseLine(lines[i]!, i + 1, file, opts);
    if (r) out.push(r);
  }
  if (out.length === 0) throw noRecords(file, opts);
  return out;
}

/**
 * Reads and validates a JSONL file line by line from a stream, so a file of any size that fits in memory as
 * records can be read (a whole-file string stops at V8's ~512 MB limit). `sha256` is the hex digest of the
 * file's bytes, computed on the same stream.
 */
export async function loadJsonl(file: string, opts: JsonlOptions): Promise<{ records: TrainRecord[]; sha256: string }> {
  const records: TrainRecord[] = [];
  const hash = createHash("sha256");
  // Bytes of the line being read that came in earlier chunks; lines are cut at "\n" bytes before decoding, so a
  // UTF-8 character split between chunks is decoded whole.
  let pending: Buffer[] = [];
  let lineNo = 0;
  const take = (bytes: Buffer) => {
    lineNo++;
    const r = parseLine(bytes.toString("utf8"), lineNo, file, opts);
    if (r) records.push(r);
  };
  try {
    for await (const chunk of createReadStream(file, { highWaterMark: 1 << 22 }) as AsyncIterable<Buffer>) {
      hash.update(chunk);
      let start = 0;
      for (let nl = chunk.indexOf(10); nl >= 0; nl = chunk.indexOf(10, start)) {
        const piece = chunk.subarray(start, nl);
        if (pending.length > 0) {
          pending.push(piece);
          take(Buffer.concat(pending));
          pending = [];
        } else {
          take(piece);
        }
        start = nl + 1;
      }
      if (start < chunk.length) pending.push(chunk.subarray(start));
    }
  } catch (e) {
    if (e instanceof DataError) throw e;
    const code = (e as NodeJS.ErrnoException).code;
    throw new DataError(
      code === "ENOENT"
        ? "no such file"
        : code === "EISDIR"
          ? "is a directory, expected a .jsonl file"
          : `cannot read (${(e as Error).message})`,
      file,
    );
  }
  if (pending.length > 0) take(Buffer.concat(pending));
  if (records.length === 0) throw noRecords(file, opts);
  return { records, sha256: hash.digest("hex") };
}
