// JSONL training data with token ids (no tokenizer yet): input_ids/labels or prompt_ids/answer_ids records, validated per line.
import { readFile } from "node:fs/promises";
import { DataError, IGNORE, type TrainRecord } from "./records.ts";

export interface JsonlOptions {
  /** Token ids must lie in [0, vocabSize). */
  vocabSize: number;
}

const FORMS =
  'a JSON object with "input_ids" (and optionally "labels", -100 where no loss is taken), or with "prompt_ids" and "answer_ids" (loss on the answer only)';

function describe(v: unknown): string {
  if (v === null) return "null";
  if (Array.isArray(v)) return "an array";
  if (typeof v === "string") return `the string ${JSON.stringify(v.length > 40 ? v.slice(0, 40) + "..." : v)}`;
  if (typeof v === "object") return "an object";
  return `${typeof v} ${String(v)}`;
}

/**
 * One line's record. Token ids must be integers in [0, vocabSize); labels the same or -100 and as many as the
 * ids; answers non-empty. Fields other than the four above are ignored (ids, text, metadata are common).
 */
export function parseRecord(json: unknown, file: string, line: number, opts: JsonlOptions): TrainRecord {
  const fail = (msg: string): never => {
    throw new DataError(msg, file, line);
  };
  if (typeof json !== "object" || json === null || Array.isArray(json)) fail(`expected ${FORMS}; got ${describe(json)}`);
  const o = json as Record<string, unknown>;
  const V = opts.vocabSize;
  const ids = (field: string, allowIgnore = false): Int32Array => {
    const v = o[field];
    if (!Array.isArray(v)) fail(`field "${field}" must be an array of integer token ids, got ${describe(v)}`);
    const arr = v as unknown[];
    const out = new Int32Array(arr.length);
    for (let i = 0; i < arr.length; i++) {
      const x = arr[i];
      if (typeof x !== "number" || !Number.isInteger(x)) fail(`"${field}"[${i}] is ${describe(x)}, expected an integer token id`);
      const n = x as number;
      if (allowIgnore && n === IGNORE) {
        out[i] = n;
        continue;
      }
      if (n < 0 || n >= V) {
        fail(`"${field}"[${i}] = ${n} is outside the model's vocabulary (token ids 0..${V - 1}${allowIgnore ? ", or -100 for no loss" : ""})`);
      }
      out[i] = n;
    }
    return out;
  };
  const hasA = "input_ids" in o || "labels" in o;
  const hasB = "prompt_ids" in o || "answer_ids" in o;
  if (hasA && hasB) fail(`has both "input_ids"/"labels" and "prompt_ids"/"answer_ids"; use one form per record`);
  const source = `${file}:${line}`;
  if (hasB) {
    if (!("prompt_ids" in o)) fail(`missing field "prompt_ids" (a record with "answer_ids" needs the prompt too; it may be [])`);
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
  if (!("labels" in o) || o.labels === null) return { ids: input, labels: input.slice(), source };
  const labels = ids("labels", true);
  if (labels.length !== input.length) fail(`"labels" has ${labels.length} entries but "input_ids" has ${input.length}; they must match one to one`);
  return { ids: input, labels, source };
}

/** Every record of a JSONL text (blank lines skipped); the first bad line throws a DataError naming file:line. */
export function parseJsonl(text: string, file: string, opts: JsonlOptions): TrainRecord[] {
  const out: TrainRecord[] = [];
  const lines = text.split("\n");
  for (let i = 0; i < lines.length; i++) {
    const raw = lines[i]!.replace(/\r$/, "");
    if (raw.trim() === "") continue;
    let json: unknown;
    try {
      json = JSON.parse(raw);
    } catch (e) {
      throw new DataError(`not valid JSON (${(e as Error).message})`, file, i + 1);
    }
    out.push(parseRecord(json, file, i + 1, opts));
  }
  if (out.length === 0) throw new DataError(`no records (expected one JSON object per line: ${FORMS})`, file);
  return out;
}

/** Reads and validates a JSONL file. */
export async function loadJsonl(file: string, opts: JsonlOptions): Promise<{ records: TrainRecord[]; text: string }> {
  let text: string;
  try {
    text = await readFile(file, "utf8");
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    throw new DataError(code === "ENOENT" ? "no such file" : code === "EISDIR" ? "is a directory, expected a .jsonl file" : `cannot read (${(e as Error).message})`, file);
  }
  return { records: parseJsonl(text, file, opts), text };
}
