// `tessera train --data` with text records: the cache a second run reads, and bad text data refused with exit 1 and --out untouched.
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { appendFile, mkdir, readdir, readFile, writeFile } from "node:fs/promises";
import { existsSync } from "node:fs";
import { join } from "node:path";
import { smollmPath, SMOLLM, tempDir, writeJsonl } from "../data/helpers.ts";
import { trainHere } from "./helpers.ts";

const CHAT = [
  { role: "user", content: "What is the capital of Zorbia?" },
  { role: "assistant", content: "Quellmar." },
];

let dir: string;
let cleanup: () => Promise<void>;
beforeAll(async () => {
  await smollmPath();
  ({ dir, cleanup } = await tempDir("text-data-cli"));
}, 600_000);
afterAll(() => cleanup?.());

describe("tessera train on text data", () => {
  it("tokenizes once: the second run on the same --out reads the cache; an edited file is tokenized again", async () => {
    const data = await writeJsonl(dir, "chats.jsonl", [{ messages: CHAT }, { text: "Zorbia exports amber." }]);
    const out = join(dir, "run");
    const args = { model: SMOLLM, data, steps: "0", out };
    const first = await trainHere(args);
    expect(first.code, first.err).toBe(0);
    expect(first.out).toMatch(
      /chats\.jsonl: 2 records \(1 messages, 1 text\); tokenized \(cached in --out for the next run\)/,
    );
    expect(await readdir(join(out, ".tessera-data-cache"))).toHaveLength(1);

    const second = await trainHere({ ...args, overwrite: "" });
    expect(second.code, second.err).toBe(0);
    expect(second.out).toMatch(/chats\.jsonl: 2 records \(1 messages, 1 text\); tokenized earlier \(cache /);

    await appendFile(data, `${JSON.stringify({ prompt: "Zorbia's currency is the", completion: " zorb." })}\n`);
    const third = await trainHere({ ...args, overwrite: "" });
    expect(third.code, third.err).toBe(0);
    expect(third.out).toMatch(/3 records \(1 messages, 1 text, 1 prompt\/completion\); tokenized \(cached/);
    expect(await readdir(join(out, ".tessera-data-cache"))).toHaveLength(2);
  }, 600_000);

  it("a bad record: exit 1 naming file:line and the field; the earlier run in --out and its files stay as they were", async () => {
    const out = join(dir, "kept");
    await mkdir(out, { recursive: true });
    await writeFile(join(out, "metrics.jsonl"), '{"step":1,"loss":2}\n');
    const data = await writeJsonl(dir, "bad.jsonl", [
      { messages: CHAT },
      {
        messages: [
          { role: "user", content: "Hi" },
          { role: "bot", content: "Hello" },
        ],
      },
    ]);
    const r = await trainHere({ model: SMOLLM, data, steps: "1", out, overwrite: "" });
    expect(r.code).toBe(1);
    expect(r.err).toContain(`${data}:2: "messages"[1].role is "bot", not a known role (system, user, assistant, tool)`);
    expect(await readdir(out)).toEqual(["metrics.jsonl"]);
    expect(await readFile(join(out, "metrics.jsonl"), "utf8")).toBe('{"step":1,"loss":2}\n');
  }, 600_000);

  it("the built-in model has no tokenizer: a text record says --model with a tokenizer is needed; --out is not created", async () => {
    const out = join(dir, "never");
    const data = await writeJsonl(dir, "text.jsonl", [{ text: "Hello" }]);
    const r = await trainHere({ data, out });
    expect(r.code).toBe(1);
    expect(r.err).toContain(
      `${data}:1: a text record needs the model's tokenizer: the built-in tiny model has no tokenizer; give --model with a tokenizer`,
    );
    expect(existsSync(out)).toBe(false);
  });

  it("a --rag-template without {contexts} is refused before anything is written", async () => {
    const tpl = join(dir, "rag.txt");
    await writeFile(tpl, "Question: {question}");
    const data = await writeJsonl(dir, "rag.jsonl", [{ question: "Q?", contexts: ["C."], answer: "A." }]);
    const out = join(dir, "never2");
    const r = await trainHere({ model: SMOLLM, data, out, "rag-template": tpl });
    expect(r.code).toBe(1);
    expect(r.err).toMatch(/--rag-template .*rag\.txt: has no \{contexts\} placeholder/);
    expect(existsSync(out)).toBe(false);
  }, 600_000);
});
