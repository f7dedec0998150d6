// The fixture's train_chats read as a {"messages"} data file: SmolLM2's causal-LM loss on it in f32 equals transformers' to 1e-5.
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { readFileSync } from "node:fs";
import { join, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import { array, jit, type Tensor } from "tessera";
import { loadDataFile } from "../../src/data/load.ts";
import { DEFAULT_RAG_TEMPLATE } from "../../src/data/text_records.ts";
import { treeToDevice } from "../../src/host/transfer.ts";
import { causalLmLoss } from "../../src/train/loss.ts";
import { llamaLogits, type LlamaWeights } from "../../models/llama.ts";
import { loadGgufLlamaWeights } from "../../models/weights.ts";
import { Tokenizer } from "../../src/text/tokenizer.ts";
import { smollmPath, tempDir, writeJsonl } from "./helpers.ts";

const FIXTURE = resolve(fileURLToPath(new URL("../../../shared/fixtures/smollm2-135m", import.meta.url)));
const expected = JSON.parse(readFileSync(join(FIXTURE, "expected.json"), "utf8")) as {
  train_chats: { messages: unknown[]; input_ids: number[]; labels: number[]; loss: number }[];
};

let dir: string;
let cleanup: () => Promise<void>;
beforeAll(async () => {
  ({ dir, cleanup } = await tempDir("chat-loss"));
});
afterAll(() => cleanup?.());

describe("train_chats through the data loader and SmolLM2 in f32", () => {
  it("input_ids, labels and the loss (to 1e-5) equal transformers'", async () => {
    const path = await smollmPath();
    const file = await writeJsonl(
      dir,
      "chats.jsonl",
      expected.train_chats.map((c) => ({ messages: c.messages })),
    );
    const { records } = await loadDataFile(file, {
      vocabSize: 49152,
      tokenizer: await Tokenizer.fromGguf(path),
      ragTemplate: DEFAULT_RAG_TEMPLATE,
    });
    const { config, weights } = await loadGgufLlamaWeights(path);
    const dev = treeToDevice(weights as never);
    const lossOf = jit((w: LlamaWeights, ids: Tensor, labels: Tensor) =>
      causalLmLoss(llamaLogits(config, w, ids), labels),
    ) as unknown as (w: unknown, ids: unknown, labels: unknown) => Promise<{ data(): Promise<unknown> }>;
    for (const [i, chat] of expected.train_chats.entries()) {
      const r = records[i]!;
      expect([...r.ids], `chat ${i}: input_ids`).toEqual(chat.input_ids);
      expect([...r.labels], `chat ${i}: labels`).toEqual(chat.labels);
      const n = r.ids.length;
      const out = await lossOf(
        dev,
        array(Int32Array.from(r.ids), { shape: [1, n] }),
        array(Int32Array.from(r.labels), { shape: [1, n] }),
      );
      const loss = ((await out.data()) as Float32Array)[0]!;
      console.log(
        `train_chats[${i}] (${n} tokens): loss ${loss.toFixed(7)} vs transformers ${chat.loss.toFixed(7)} (|diff| ${Math.abs(loss - chat.loss).toExponential(2)})`,
      );
      expect(Math.abs(loss - chat.loss), `chat ${i}: loss`).toBeLessThan(1e-5);
    }
  }, 600_000);
});
