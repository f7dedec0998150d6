// Text records with SmolLM2's real tokenizer and chat template: ids and loss masks per form, and bad records named by file:line and field.
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { readFileSync } from "node:fs";
import { join, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import { loadDataFile } from "../../src/data/load.ts";
import { DataError, fitRecord, IGNORE, type TrainRecord } from "../../src/data/records.ts";
import { DEFAULT_RAG_TEMPLATE, type RecordContext } from "../../src/data/text_records.ts";
import type { Tokenizer } from "../../src/text/tokenizer.ts";
import { smollmFolderWithTemplate, smollmTokenizer, tempDir, writeJsonl } from "./helpers.ts";

const FIXTURE = resolve(fileURLToPath(new URL("../../../shared/fixtures/smollm2-135m", import.meta.url)));
const expected = JSON.parse(readFileSync(join(FIXTURE, "expected.json"), "utf8")) as {
  train_chats: { messages: { role: string; content: string }[]; input_ids: number[]; labels: number[] }[];
};

const IM_START = 1;
const IM_END = 2; // also SmolLM2's EOS
const NL = 198;
/** What SmolLM2's template writes first when a chat has no system message. */
const DEFAULT_SYSTEM =
  "<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n";

let tok: Tokenizer;
let dir: string;
let cleanup: () => Promise<void>;
beforeAll(async () => {
  tok = await smollmTokenizer();
  ({ dir, cleanup } = await tempDir("text-records"));
}, 600_000);
afterAll(() => cleanup?.());

const ctx = (over: Partial<RecordContext> = {}): RecordContext => ({
  vocabSize: 49152,
  tokenizer: tok,
  ragTemplate: DEFAULT_RAG_TEMPLATE,
  ...over,
});

/** The records of `records` written as a JSONL file. */
async function load(records: unknown[], c: RecordContext = ctx(), name = "d.jsonl"): Promise<TrainRecord[]> {
  return (await loadDataFile(await writeJsonl(dir, name, records), c)).records;
}

async function one(record: unknown, c: RecordContext = ctx()): Promise<TrainRecord> {
  const [r] = await load([record], c);
  return r!;
}

const list = (a: Int32Array) => [...a];
const ignored = (n: number) => new Array<number>(n).fill(IGNORE);

describe("text records on SmolLM2's tokenizer", () => {
  it('{"text"}: the text and EOS (<|im_end|>, id 2) appended, all of it labelled; add_bos is false so no BOS', async () => {
    const r = await one({ text: "Hello world" });
    expect(list(r.ids)).toEqual([19556, 905, IM_END]);
    expect(list(r.labels)).toEqual([19556, 905, IM_END]);
    // A text that already ends with EOS gets no second one.
    const r2 = await one({ text: "Hello world<|im_end|>" });
    expect(list(r2.ids)).toEqual([19556, 905, IM_END]);
  });

  it('{"prompt","completion"}: loss on the completion tokens and EOS; the prompt keeps its own tokenization', async () => {
    const r = await one({ prompt: "Q: 2+2?", completion: " 4" });
    // "Q" ":" " " "2" "+" "2" "?" | " " "4" EOS: SmolLM2 splits every digit.
    expect(list(r.ids)).toEqual([65, 42, 216, 34, 27, 34, 47, 216, 36, IM_END]);
    expect(list(r.labels)).toEqual([...ignored(7), 216, 36, IM_END]);
    expect(r.answerStart).toBe(7);
  });

  it("conversational prompt/completion (lists of messages): loss on the completion's assistant turn only", async () => {
    const r = await one({
      prompt: [{ role: "user", content: "Hi" }],
      completion: [{ role: "assistant", content: "Hello!" }],
    });
    const head = tok.encode(`${DEFAULT_SYSTEM}<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n`);
    const answer = tok.encode("Hello!");
    expect(list(r.ids)).toEqual([...head, ...answer, IM_END, NL]);
    expect(list(r.labels)).toEqual([...ignored(head.length), ...answer, IM_END, IGNORE]);
  });

  it('{"messages"}: the fixture\'s train_chats record, input_ids and labels exactly as transformers made them', async () => {
    for (const chat of expected.train_chats) {
      const r = await one({ messages: chat.messages });
      expect(list(r.ids)).toEqual(chat.input_ids);
      expect(list(r.labels)).toEqual(chat.labels);
    }
  });

  it('{"messages"}: every assistant turn and its <|im_end|> take the loss, not headers, user turns or the newline after', async () => {
    const messages = [
      { role: "system", content: "Be brief." },
      { role: "user", content: "2+2?" },
      { role: "assistant", content: "4" },
      { role: "user", content: "3+3?" },
      { role: "assistant", content: "6" },
      { role: "user", content: "Thanks" },
    ];
    const r = await one({ messages });
    const t1 = tok.encode(
      "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\n2+2?<|im_end|>\n<|im_start|>assistant\n",
    );
    const t2 = tok.encode("<|im_start|>user\n3+3?<|im_end|>\n<|im_start|>assistant\n");
    const t3 = tok.encode("<|im_start|>user\nThanks<|im_end|>\n");
    expect(list(r.ids)).toEqual([...t1, 36, IM_END, NL, ...t2, 38, IM_END, NL, ...t3]);
    expect(list(r.labels)).toEqual([
      ...ignored(t1.length),
      36,
      IM_END,
      IGNORE,
      ...ignored(t2.length),
      38,
      IM_END,
      IGNORE,
      ...ignored(t3.length),
    ]);
    expect(r.ids[0]).toBe(IM_START);
  });

  it("Alpaca with a chat template: instruction + blank line + input as the user turn, the output as the reply", async () => {
    const r = await one({ instruction: "Add the numbers.", input: "2 and 2", output: "4" });
    const head = tok.encode(
      `${DEFAULT_SYSTEM}<|im_start|>user\nAdd the numbers.\n\n2 and 2<|im_end|>\n<|im_start|>assistant\n`,
    );
    expect(list(r.ids)).toEqual([...head, 36, IM_END, NL]);
    expect(list(r.labels)).toEqual([...ignored(head.length), 36, IM_END, IGNORE]);
    // An empty input leaves just the instruction.
    const r2 = await one({ instruction: "Say hi.", input: "", output: "Hi" });
    expect(tok.decode(list(r2.ids))).toContain("<|im_start|>user\nSay hi.<|im_end|>");
  });

  it("RAG with a chat template: the default template as one user turn, loss on the answer and <|im_end|>", async () => {
    const r = await one({ question: "Who is A?", contexts: ["A is B.", "C is D."], answer: "B" });
    const user = "Answer the question using the context below.\n\nContext:\nA is B.\n\nC is D.\n\nQuestion: Who is A?";
    const head = tok.encode(`${DEFAULT_SYSTEM}<|im_start|>user\n${user}<|im_end|>\n<|im_start|>assistant\n`);
    const answer = tok.encode("B");
    expect(list(r.ids)).toEqual([...head, ...answer, IM_END, NL]);
    expect(list(r.labels)).toEqual([...ignored(head.length), ...answer, IM_END, IGNORE]);
    // Cut to a short --seq, the answer and the question before it stay, the start of the prompt goes.
    expect(r.answerStart).toBe(head.length);
    const cut = fitRecord(r, 12);
    expect(list(cut.labels)).toEqual([...ignored(12 - answer.length - 2), ...answer, IM_END, IGNORE]);
    expect(tok.decode(list(cut.ids))).toBe(" is A?<|im_end|>\n<|im_start|>assistant\nB<|im_end|>\n");
  });

  it("RAG with a --rag-template: its {contexts} and {question} replaced, nothing else", async () => {
    const r = await one(
      { question: "Who is A?", contexts: ["A is B.", "{question}"], answer: "B" },
      ctx({ ragTemplate: "Q={question}\nDocs:\n{contexts}" }),
    );
    expect(tok.decode(list(r.ids))).toContain("<|im_start|>user\nQ=Who is A?\nDocs:\nA is B.\n\n{question}<|im_end|>");
  });

  it("token-id records still work beside text ones in the same file", async () => {
    const rs = await load([{ input_ids: [5, 6, 7] }, { prompt_ids: [1], answer_ids: [2, 3] }, { text: "Hi" }]);
    expect(list(rs[0]!.ids)).toEqual([5, 6, 7]);
    expect(list(rs[1]!.labels)).toEqual([IGNORE, 2, 3]);
    expect(rs[2]!.source).toMatch(/d\.jsonl:3$/);
  });
});

describe("a model without a chat template", () => {
  let plain: Tokenizer;
  beforeAll(async () => {
    plain = await smollmFolderWithTemplate(join(dir, "plain-tok"), undefined);
  }, 600_000);

  it("Alpaca uses Stanford Alpaca's prompt text; loss on the output and EOS", async () => {
    const r = await one({ instruction: "Add.", input: "2 and 2", output: "4" }, ctx({ tokenizer: plain }));
    const prompt =
      "Below is an instruction that describes a task, paired with an input that provides further context. Write a response that appropriately completes the request.\n\n### Instruction:\nAdd.\n\n### Input:\n2 and 2\n\n### Response:\n";
    const p = plain.encode(prompt);
    expect(list(r.ids)).toEqual([...p, 36, IM_END]);
    expect(list(r.labels)).toEqual([...ignored(p.length), 36, IM_END]);
  });

  it('RAG: the template text, then "\\nAnswer: ", then the answer and EOS', async () => {
    const r = await one({ question: "Who?", contexts: ["A is B."], answer: "B" }, ctx({ tokenizer: plain }));
    const p = plain.encode(
      "Answer the question using the context below.\n\nContext:\nA is B.\n\nQuestion: Who?\nAnswer: ",
    );
    const a = plain.encode("B");
    expect(list(r.ids)).toEqual([...p, ...a, IM_END]);
    expect(list(r.labels)).toEqual([...ignored(p.length), ...a, IM_END]);
  });

  it("a messages record is refused, naming the file and line", async () => {
    await expect(
      load([{ text: "ok" }, { messages: [{ role: "user", content: "Hi" }] }], ctx({ tokenizer: plain })),
    ).rejects.toThrow(/d\.jsonl:2: a chat record needs the model's chat template, and .*plain-tok has none/);
  });
});

describe("bad text records: a DataError naming file:line and the field", () => {
  const cases: [string, unknown, RegExp][] = [
    [
      "an unknown role",
      {
        messages: [
          { role: "user", content: "Hi" },
          { role: "bot", content: "Hello" },
        ],
      },
      /"messages"\[1\]\.role is "bot", not a known role \(system, user, assistant, tool\)/,
    ],
    [
      "content not a string",
      { messages: [{ role: "user", content: 5 }] },
      /"messages"\[0\]\.content must be a string, got number 5/,
    ],
    [
      "messages not an array",
      { messages: "hi" },
      /field "messages" must be an array of \{"role", "content"\} messages/,
    ],
    ["no assistant message", { messages: [{ role: "user", content: "Hi" }] }, /"messages" has no "assistant" message/],
    ["a missing completion", { prompt: "Q" }, /missing field "completion"/],
    ["an empty completion", { prompt: "Q", completion: "  " }, /field "completion" is empty/],
    ["text not a string", { text: 5 }, /field "text" must be a string, got number 5/],
    ["a missing output", { instruction: "Do it" }, /missing field "output"/],
    [
      "contexts not strings",
      { question: "Q", contexts: [1], answer: "A" },
      /"contexts"\[0\] must be a string, got number 1/,
    ],
    ["a missing contexts", { question: "Q", answer: "A" }, /missing field "contexts"/],
    ["no known form", { foo: 1 }, /no field of a known record form \(fields: "foo"\)/],
  ];
  for (const [what, record, message] of cases) {
    it(what, async () => {
      const e = await load([{ text: "fine" }, record]).catch((x: unknown) => x);
      expect(e).toBeInstanceOf(DataError);
      expect((e as DataError).exitCode).toBe(1);
      expect((e as Error).message).toMatch(/d\.jsonl:2: /);
      expect((e as Error).message).toMatch(message);
    });
  }

  it("a template that raises: its message, at file:line", async () => {
    const raising = await smollmFolderWithTemplate(
      join(dir, "raising-tok"),
      "{% for m in messages %}{% if m.role == 'system' %}{{ raise_exception('System role not supported') }}{% endif %}{{ m.content }}{% endfor %}",
    );
    const e = await load(
      [
        {
          messages: [
            { role: "system", content: "x" },
            { role: "user", content: "Hi" },
            { role: "assistant", content: "Yo" },
          ],
        },
      ],
      ctx({ tokenizer: raising }),
    ).catch((x: unknown) => x);
    expect(e).toBeInstanceOf(DataError);
    expect((e as Error).message).toMatch(/d\.jsonl:1: chat template: .*System role not supported/);
  });

  it("a text record without a tokenizer says that --model with a tokenizer is needed", async () => {
    const e = await load(
      [{ input_ids: [1, 2] }, { text: "Hi" }],
      ctx({ tokenizer: { missing: "the built-in tiny model has no tokenizer" } }),
    ).catch((x: unknown) => x);
    expect((e as Error).message).toBe(
      "d.jsonl:2: a text record needs the model's tokenizer: the built-in tiny model has no tokenizer".replace(
        "d.jsonl",
        join(dir, "d.jsonl"),
      ),
    );
  });
});
