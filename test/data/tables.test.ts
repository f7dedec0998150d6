// CSV and Parquet data files: the same records as JSONL (JSON text in array columns, Parquet lists/structs), errors by file:row N.
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { writeFile } from "node:fs/promises";
import { join, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import { dataFormat, loadDataFile } from "../../src/data/load.ts";
import { DataError, IGNORE } from "../../src/data/records.ts";
import { DEFAULT_RAG_TEMPLATE, type RecordContext } from "../../src/data/text_records.ts";
import type { Tokenizer } from "../../src/text/tokenizer.ts";
import { smollmTokenizer, tempDir, writeJsonl } from "./helpers.ts";

/** Made by fixtures/make_parquet.py (pyarrow). */
const FIXTURES = resolve(fileURLToPath(new URL("./fixtures", import.meta.url)));

let tok: Tokenizer;
let dir: string;
let cleanup: () => Promise<void>;
let ctx: RecordContext;
beforeAll(async () => {
  tok = await smollmTokenizer();
  ({ dir, cleanup } = await tempDir("tables"));
  ctx = { vocabSize: 49152, tokenizer: tok, ragTemplate: DEFAULT_RAG_TEMPLATE };
}, 600_000);
afterAll(() => cleanup?.());

const CHAT = [
  { role: "user", content: "Hi" },
  { role: "assistant", content: "Hello!" },
];

/** The same records read from JSONL, the reference for the other formats. */
async function viaJsonl(records: unknown[]) {
  const r = await loadDataFile(await writeJsonl(dir, "ref.jsonl", records), ctx);
  return r.records.map((x) => ({ ids: [...x.ids], labels: [...x.labels], answerStart: x.answerStart }));
}

const plainRecords = (rs: { ids: Int32Array; labels: Int32Array; answerStart?: number }[]) =>
  rs.map((x) => ({ ids: [...x.ids], labels: [...x.labels], answerStart: x.answerStart }));

describe("the reader follows the extension", () => {
  it(".parquet, .csv, and JSON lines for anything else", () => {
    expect(dataFormat("a/b.parquet")).toBe("parquet");
    expect(dataFormat("b.CSV")).toBe("csv");
    expect(dataFormat("b.jsonl")).toBe("jsonl");
    expect(dataFormat("b.json")).toBe("jsonl");
  });
});

describe("CSV", () => {
  it("text, prompt/completion, messages and contexts as JSON text, token ids as JSON text: as from JSONL", async () => {
    const file = join(dir, "d.csv");
    const q = (s: string) => `"${s.replaceAll('"', '""')}"`;
    await writeFile(
      file,
      [
        "text,prompt,completion,messages,question,contexts,answer,input_ids",
        `${q("Hello world")},,,,,,,`,
        `,${q("Q: 2+2?")},${q(" 4")},,,,,`,
        `,,,${q(JSON.stringify(CHAT))},,,,`,
        `,,,,${q("Who?")},${q(JSON.stringify(["A is B.", "line one\nline two"]))},B,`,
        `,,,,,,,${q("[5, 6, 7]")}`,
      ].join("\n"),
    );
    const got = await loadDataFile(file, ctx);
    expect(got.format).toBe("csv");
    expect(got.kinds).toEqual({ text: 1, "prompt/completion": 1, messages: 1, rag: 1, ids: 1 });
    expect(plainRecords(got.records)).toEqual(
      await viaJsonl([
        { text: "Hello world" },
        { prompt: "Q: 2+2?", completion: " 4" },
        { messages: CHAT },
        { question: "Who?", contexts: ["A is B.", "line one\nline two"], answer: "B" },
        { input_ids: [5, 6, 7] },
      ]),
    );
    expect(got.records.map((r) => r.source)).toEqual([1, 2, 3, 4, 5].map((n) => `${file}:row ${n}`));
  });

  it("a bad row is named file:row N (the header not counted) with the field", async () => {
    const file = join(dir, "bad.csv");
    await writeFile(
      file,
      `messages\n"${JSON.stringify(CHAT).replaceAll('"', '""')}"\n"[{""role"": ""bot"", ""content"": ""x""}]"\n`,
    );
    const e = await loadDataFile(file, ctx).catch((x: unknown) => x);
    expect(e).toBeInstanceOf(DataError);
    expect((e as Error).message).toMatch(/bad\.csv:row 2: "messages"\[0\]\.role is "bot", not a known role/);
    const broken = join(dir, "broken.csv");
    await writeFile(broken, 'messages\n"[{""role"": ""user"",\n');
    await expect(loadDataFile(broken, ctx)).rejects.toThrow(
      /broken\.csv:row 1: field "messages" is not valid JSON|broken\.csv:row 1: not valid CSV/,
    );
    const notJson = join(dir, "notjson.csv");
    await writeFile(notJson, "contexts,question,answer\n[oops,Q,A\n");
    await expect(loadDataFile(notJson, ctx)).rejects.toThrow(/notjson\.csv:row 1: field "contexts" is not valid JSON/);
  });
});

describe("Parquet", () => {
  it("lists of structs, lists of strings and int64 id lists, one form per row with nulls elsewhere", async () => {
    const got = await loadDataFile(join(FIXTURES, "mixed.parquet"), ctx);
    expect(got.format).toBe("parquet");
    expect(got.kinds).toEqual({ messages: 1, text: 1, rag: 1, ids: 1 });
    expect(plainRecords(got.records)).toEqual(
      await viaJsonl([
        { messages: CHAT },
        { text: "Hello world" },
        { question: "Who?", contexts: ["A is B."], answer: "B" },
        { prompt_ids: [5, 6], answer_ids: [7] },
      ]),
    );
    expect(got.records[3]!.labels[2]).toBe(7);
    expect(got.records[3]!.labels[0]).toBe(IGNORE);
    expect(got.records[2]!.source).toBe(`${join(FIXTURES, "mixed.parquet")}:row 3`);
  });

  it("messages as a JSON string column", async () => {
    const got = await loadDataFile(join(FIXTURES, "messages_json.parquet"), ctx);
    expect(plainRecords(got.records)).toEqual(await viaJsonl([{ messages: CHAT }]));
  });

  it("a row with a null completion is named file:row 2 and the field", async () => {
    await expect(loadDataFile(join(FIXTURES, "missing_completion.parquet"), ctx)).rejects.toThrow(
      /missing_completion\.parquet:row 2: missing field "completion"/,
    );
  });

  it("a file that is not Parquet says so", async () => {
    const file = join(dir, "fake.parquet");
    await writeFile(file, "not parquet at all");
    await expect(loadDataFile(file, ctx)).rejects.toThrow(/fake\.parquet: cannot read as Parquet/);
  });
});
