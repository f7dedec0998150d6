// generate --file with RAG records: the prompt is exactly what tessera train puts before the answer, with and without a chat template.
import { writeFile } from "node:fs/promises";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { readPromptFile } from "../../src/cli/generate.ts";
import { DataError, IGNORE } from "../../src/data/records.ts";
import { DEFAULT_RAG_TEMPLATE, parseAnyRecord } from "../../src/data/text_records.ts";
import type { Tokenizer } from "../../src/text/tokenizer.ts";
import { smollmFolderWithTemplate, smollmTokenizer, tempDir } from "../data/helpers.ts";

const RAG = {
  question: "Which town is the capital?",
  contexts: ["[1] The capital is Marrowick.", "[2] The ferry takes three hours."],
  answer: "Marrowick [1].",
};

/** The ids tessera train gives the record before its first loss token (the prompt it learns to answer). */
function trainPrompt(tok: Tokenizer): number[] {
  const { record } = parseAnyRecord(
    RAG,
    { file: "t.jsonl", n: 1, unit: "line" },
    { vocabSize: 49152, tokenizer: tok, ragTemplate: DEFAULT_RAG_TEMPLATE },
  );
  const first = record.labels.findIndex((l) => l !== IGNORE);
  return [...record.ids.subarray(0, first)];
}

describe("generate --file RAG records", () => {
  let dir: string;
  let cleanup: () => Promise<void>;
  beforeAll(async () => {
    ({ dir, cleanup } = await tempDir("rag-prompts"));
  });
  afterAll(() => cleanup());

  it("with a chat template: the user turn and generation prompt that training put before the answer", async () => {
    const tok = await smollmTokenizer();
    const file = join(dir, "ask.jsonl");
    await writeFile(file, `${JSON.stringify(RAG)}\n${JSON.stringify({ ...RAG, answer: undefined })}\n`);
    const items = await readPromptFile(file, tok);
    const want = trainPrompt(tok);
    expect(items.map((i) => i.ids)).toEqual([want, want]);
    expect(tok.decode(want, { skipSpecialTokens: false })).toContain("Question: Which town is the capital?");
  });

  it("without a chat template: the template's text and the plain answer cue", async () => {
    const tok = await smollmFolderWithTemplate(join(dir, "plain"), undefined);
    const file = join(dir, "ask_plain.jsonl");
    await writeFile(file, `${JSON.stringify(RAG)}\n`);
    const [item] = await readPromptFile(file, tok);
    expect(item!.ids).toEqual(trainPrompt(tok));
    expect(tok.decode(item!.ids)).toMatch(/Question: Which town is the capital\?\nAnswer: $/);
  });

  it("a record without contexts names the file, line and field", async () => {
    const tok = await smollmTokenizer();
    const file = join(dir, "bad.jsonl");
    await writeFile(file, `${JSON.stringify({ prompt: "hi" })}\n${JSON.stringify({ question: "q", contexts: [1] })}\n`);
    const e = await readPromptFile(file, tok).catch((x: unknown) => x);
    expect(e).toBeInstanceOf(DataError);
    expect((e as Error).message).toBe(`${file}:2: field "contexts": expected an array of strings`);
  });
});
