// The tokenized-records cache: a second load reads it without tokenizing; a changed file, template or tokenizer misses it.
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { appendFile, copyFile, readdir, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { cacheFile, cacheKey, decodeCache, encodeCache } from "../../src/data/cache.ts";
import { type LoadedDataFile, loadDataFile } from "../../src/data/load.ts";
import type { TrainRecord } from "../../src/data/records.ts";
import { DEFAULT_RAG_TEMPLATE, type RecordContext } from "../../src/data/text_records.ts";
import type { Tokenizer } from "../../src/text/tokenizer.ts";
import { smollmTokenizer, tempDir, writeJsonl } from "./helpers.ts";

let tok: Tokenizer;
let dir: string;
let cleanup: () => Promise<void>;
beforeAll(async () => {
  tok = await smollmTokenizer();
  ({ dir, cleanup } = await tempDir("data-cache"));
}, 600_000);
afterAll(() => cleanup?.());

const RECORDS = [
  {
    messages: [
      { role: "user", content: "Hi" },
      { role: "assistant", content: "Hello!" },
    ],
  },
  { text: "Plain text." },
  { prompt_ids: [3, 4], answer_ids: [5] },
  { question: "Who?", contexts: ["A is B."], answer: "B" },
];

/** The tokenizer with encode replaced by one that counts its calls: a cache hit must make none. */
function countingTokenizer(): { tokenizer: Tokenizer; calls: () => number } {
  let n = 0;
  const tokenizer = Object.create(tok, {
    encode: {
      value: (...args: Parameters<Tokenizer["encode"]>) => {
        n++;
        return tok.encode(...args);
      },
    },
  }) as Tokenizer;
  return { tokenizer, calls: () => n };
}

const plain = (rs: TrainRecord[]) =>
  rs.map((r) => ({ ids: [...r.ids], labels: [...r.labels], answerStart: r.answerStart, source: r.source }));

describe("the tokenized-records cache", () => {
  it("is written by saveCache, read by the next load without tokenizing, and missed once the file changes", async () => {
    const cacheDir = join(dir, "out", ".tessera-data-cache");
    const file = await writeJsonl(dir, "chat.jsonl", RECORDS);
    const ctx = (t: Tokenizer, rag = DEFAULT_RAG_TEMPLATE): RecordContext & { cacheDir: string } => ({
      vocabSize: 49152,
      tokenizer: t,
      ragTemplate: rag,
      cacheDir,
    });

    const first = countingTokenizer();
    const a = await loadDataFile(file, ctx(first.tokenizer));
    expect(a.cache).toBe("new");
    expect(first.calls()).toBeGreaterThan(0);
    expect(await readdir(cacheDir).catch(() => [])).toEqual([]); // nothing written before saveCache
    const path = await a.saveCache();
    const key = cacheKey({
      dataSha256: a.sha256,
      tokenizer: tok.identity,
      ragTemplate: DEFAULT_RAG_TEMPLATE,
      vocabSize: 49152,
    });
    expect(path).toBe(cacheFile(cacheDir, key));

    const second = countingTokenizer();
    const b = await loadDataFile(file, ctx(second.tokenizer));
    expect(b.cache).toBe("read");
    expect(second.calls()).toBe(0);
    expect(plain(b.records)).toEqual(plain(a.records));
    expect(b.kinds).toEqual(a.kinds);
    expect(b.sha256).toBe(a.sha256);

    // The same bytes under another name: read from the cache, named after the new file.
    const copy = join(dir, "copy.jsonl");
    await copyFile(file, copy);
    const c = await loadDataFile(copy, ctx(tok));
    expect(c.cache).toBe("read");
    expect(c.records[1]!.source).toBe(`${copy}:2`);

    // Another RAG template renders the RAG record differently: a miss.
    const third = countingTokenizer();
    const d = await loadDataFile(file, ctx(third.tokenizer, "{question}\n{contexts}"));
    expect(d.cache).toBe("new");
    expect(third.calls()).toBeGreaterThan(0);

    // An edited file: a miss, and the new record is there.
    await appendFile(file, `${JSON.stringify({ text: "One more." })}\n`);
    const fourth = countingTokenizer();
    const e = await loadDataFile(file, ctx(fourth.tokenizer));
    expect(e.cache).toBe("new");
    expect(fourth.calls()).toBeGreaterThan(0);
    expect(e.records).toHaveLength(RECORDS.length + 1);
  });

  it("a damaged cache file is not read (the file is tokenized again)", async () => {
    const cacheDir = join(dir, "out2");
    const file = await writeJsonl(dir, "text.jsonl", [{ text: "Hello" }]);
    const ctx = { vocabSize: 49152, tokenizer: tok, ragTemplate: DEFAULT_RAG_TEMPLATE, cacheDir };
    const a: LoadedDataFile = await loadDataFile(file, ctx);
    const path = (await a.saveCache())!;
    await writeFile(path, "TSRDATA1 truncated");
    const b = await loadDataFile(file, ctx);
    expect(b.cache).toBe("new");
    expect(plain(b.records)).toEqual(plain(a.records));
  });

  it("token-id files are not cached: nothing was tokenized", async () => {
    const file = await writeJsonl(dir, "ids.jsonl", [{ input_ids: [1, 2, 3] }]);
    const r = await loadDataFile(file, {
      vocabSize: 49152,
      tokenizer: tok,
      ragTemplate: DEFAULT_RAG_TEMPLATE,
      cacheDir: join(dir, "out3"),
    });
    expect(r.cache).toBe("none");
    expect(await r.saveCache()).toBeUndefined();
  });

  it("encodes and decodes records exactly: shared labels, answerStart, line and row numbers; a wrong key reads nothing", () => {
    const ids = Int32Array.from([1, 2, 3]);
    const records: TrainRecord[] = [
      { ids, labels: ids, source: "f:7" },
      { ids: Int32Array.from([4, 5]), labels: Int32Array.from([-100, 5]), answerStart: 1, source: "f:9" },
    ];
    const bytes = encodeCache("k", records, "row", { text: 1, "prompt/completion": 1 });
    // As readFile gives it: a Node Buffer (whose slice shares memory), here at an offset inside a larger one.
    const inBuffer = Buffer.concat([Buffer.alloc(3), Buffer.from(bytes)]).subarray(3);
    const back = decodeCache(inBuffer, "k", "g.csv")!;
    expect(plain(back.records)).toEqual([
      { ids: [1, 2, 3], labels: [1, 2, 3], answerStart: undefined, source: "g.csv:row 7" },
      { ids: [4, 5], labels: [-100, 5], answerStart: 1, source: "g.csv:row 9" },
    ]);
    expect(back.records[0]!.labels).toBe(back.records[0]!.ids);
    expect(decodeCache(bytes, "other", "g.csv")).toBeUndefined();
    expect(decodeCache(bytes.subarray(0, bytes.length - 4), "k", "g.csv")).toBeUndefined();
  });
});
