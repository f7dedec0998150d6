// The KV-cache decoder on the tiny Llama (PJRT CPU): every step's logits equal a full forward pass, batches of prompts
// of different lengths equal each prompt alone, RoPE scaling, seeded sampling, and two compiled programs in all.
import { describe, expect, it } from "vitest";
import { array, jit, type DeviceArray, type Tensor } from "tessera";
import type { LlamaConfig } from "../../src/formats/hf_config.ts";
import { treeToDevice } from "../../src/host/transfer.ts";
import { LLAMA_TINY, llamaLogits, type LlamaWeights } from "../../models/llama.ts";
import { LlamaDecoder, type SamplingOptions } from "../../models/llama_decode.ts";
import { randomLlamaWeights } from "../../models/weights.ts";

// Large random weights so that the logits spread and greedy choices are far apart.
const cfg: LlamaConfig = { ...LLAMA_TINY, maxPositionEmbeddings: 64 };
const host = randomLlamaWeights(cfg, { seed: 3, std: 0.3 });
const dev = treeToDevice<LlamaWeights<DeviceArray>>(host as never);

// One full-forward program per config (its jit recompiles per sequence length, which the reference may).
const forwards = new Map<LlamaConfig, (w: unknown, t: unknown) => Promise<DeviceArray>>();

/**
 * Full-forward logits [S, V] of `ids`, run alone and unpadded. Causal, so position p's row is the last-position logits
 * of ids[0..p]: one forward pass checks every decode step of a row.
 */
async function forwardLogits(w: LlamaWeights<DeviceArray>, c: LlamaConfig, ids: number[]): Promise<Float32Array[]> {
  let fwd = forwards.get(c);
  if (!fwd) {
    fwd = jit((w: LlamaWeights, t: Tensor) => llamaLogits(c, w, t)) as unknown as typeof fwd & {};
    forwards.set(c, fwd);
  }
  const out = await fwd(w, array(new Int32Array(ids), { shape: [1, ids.length] }));
  const all = (await out.data()) as Float32Array;
  return ids.map((_, p) => all.slice(p * c.vocabSize, (p + 1) * c.vocabSize));
}

function maxRel(a: Float32Array, b: Float32Array): number {
  let scale = 0,
    worst = 0;
  for (let i = 0; i < a.length; i++) scale = Math.max(scale, Math.abs(b[i]!));
  for (let i = 0; i < a.length; i++) worst = Math.max(worst, Math.abs(a[i]! - b[i]!));
  return worst / scale;
}

const PROMPTS = [
  [5, 17, 33, 2, 90, 41, 7],
  [12, 3],
  [60, 61, 62, 63, 1],
];

async function decodeWithLogits(
  c: LlamaConfig,
  w: LlamaWeights<DeviceArray>,
  prompts: number[][],
  shape: { batch: number; promptLen: number; maxLen: number },
  maxNewTokens: number,
  sampling?: SamplingOptions,
) {
  const dec = new LlamaDecoder(c, w, shape, sampling);
  const logits: Float32Array[][] = prompts.map(() => []);
  const { rows } = await dec.generate(prompts, {
    maxNewTokens,
    eosIds: [],
    onLogits: (l) => {
      for (let b = 0; b < prompts.length; b++) logits[b]!.push(l.slice(b * c.vocabSize, (b + 1) * c.vocabSize));
    },
  });
  return { dec, rows, logits };
}

describe("LlamaDecoder", () => {
  it("each step's logits equal a full forward pass over prompt + generated tokens, for left-padded rows", async () => {
    const { rows, logits } = await decodeWithLogits(cfg, dev, PROMPTS, { batch: 4, promptLen: 8, maxLen: 20 }, 6);
    let worst = 0;
    for (const [b, prompt] of PROMPTS.entries()) {
      expect(rows[b]!.outputIds).toHaveLength(6);
      const full = await forwardLogits(dev, cfg, [...prompt, ...rows[b]!.outputIds]);
      for (let n = 0; n < 6; n++) {
        const want = full[prompt.length - 1 + n]!;
        worst = Math.max(worst, maxRel(logits[b]![n]!, want));
        // Greedy: the token taken is the argmax of the reference logits.
        let arg = 0;
        for (let i = 1; i < want.length; i++) if (want[i]! > want[arg]!) arg = i;
        expect(rows[b]!.outputIds[n], `row ${b} step ${n}`).toBe(arg);
      }
    }
    console.log(`decode vs full forward: worst relative logit error ${worst.toExponential(2)}`);
    expect(worst).toBeLessThan(1e-5);
  }, 120_000);

  it("a batch of prompts of different lengths gives each prompt's output alone; compiles stay 2 over batches", async () => {
    const dec = new LlamaDecoder(cfg, dev, { batch: 4, promptLen: 8, maxLen: 24 });
    const batched = await dec.generate(PROMPTS, { maxNewTokens: 10, eosIds: [] });
    expect(dec.compiles).toBe(2);
    for (const [b, p] of PROMPTS.entries()) {
      const alone = await dec.generate([p], { maxNewTokens: 10, eosIds: [] });
      expect(alone.rows[0]!.outputIds, `prompt ${b}`).toEqual(batched.rows[b]!.outputIds);
    }
    // 4 batches and 40+ tokens later, still the same two programs.
    expect(dec.compiles).toBe(2);
  }, 120_000);

  it("stops a row at an EOS id (kept in its output) while the others go on; maxNewTokens caps the rest", async () => {
    const dec = new LlamaDecoder(cfg, dev, { batch: 3, promptLen: 8, maxLen: 24 });
    const free = await dec.generate(PROMPTS, { maxNewTokens: 8, eosIds: [] });
    const eos = free.rows[1]!.outputIds[2]!; // row 1's third token becomes an EOS
    const seen: (number | undefined)[][] = [];
    const r = await dec.generate(PROMPTS, { maxNewTokens: 8, eosIds: [eos], onTokens: (t) => seen.push(t) });
    const cut = (ids: number[]) => {
      const k = ids.indexOf(eos);
      return k < 0 ? ids : ids.slice(0, k + 1);
    };
    for (let b = 0; b < 3; b++) {
      expect(r.rows[b]!.outputIds).toEqual(cut(free.rows[b]!.outputIds));
      expect(r.rows[b]!.finish).toBe(r.rows[b]!.outputIds.at(-1) === eos ? "eos" : "length");
    }
    expect(r.rows[1]!.finish).toBe("eos");
    // Streaming saw each row's tokens once, in order, and nothing after a row's EOS.
    for (let b = 0; b < 3; b++)
      expect(seen.map((s) => s[b]).filter((t) => t !== undefined)).toEqual(r.rows[b]!.outputIds);
  }, 120_000);

  it("the cache bounds the new tokens: promptLen + new tokens never exceeds maxLen + 1", async () => {
    const dec = new LlamaDecoder(cfg, dev, { batch: 1, promptLen: 8, maxLen: 12 });
    const r = await dec.generate([PROMPTS[0]!], { maxNewTokens: 100, eosIds: [] });
    expect(r.rows[0]!.outputIds).toHaveLength(5);
    expect(r.rows[0]!.finish).toBe("length");
  }, 60_000);

  it.each([
    ["linear", { kind: "linear", factor: 2 }],
    ["yarn", { kind: "yarn", factor: 4, originalMaxPositionEmbeddings: 16 }],
    ["llama3", { kind: "llama3", factor: 8, lowFreqFactor: 1, highFreqFactor: 4, originalMaxPositionEmbeddings: 8 }],
  ] as const)(
    "with %s RoPE scaling the cached decode still equals the full forward pass",
    async (_, scaling) => {
      const c: LlamaConfig = { ...cfg, ropeScaling: scaling as LlamaConfig["ropeScaling"] };
      const { rows, logits } = await decodeWithLogits(
        c,
        dev,
        PROMPTS.slice(0, 2),
        { batch: 2, promptLen: 8, maxLen: 16 },
        4,
      );
      let worst = 0;
      for (const [b, prompt] of PROMPTS.slice(0, 2).entries()) {
        const full = await forwardLogits(dev, c, [...prompt, ...rows[b]!.outputIds]);
        for (let n = 0; n < 4; n++) worst = Math.max(worst, maxRel(logits[b]![n]!, full[prompt.length - 1 + n]!));
      }
      expect(worst).toBeLessThan(1e-5);
    },
    120_000,
  );

  it("sampling is reproducible for a seed, differs across seeds, and follows temperature", async () => {
    const run = async (s: Partial<SamplingOptions>) => {
      const dec = new LlamaDecoder(
        cfg,
        dev,
        { batch: 3, promptLen: 8, maxLen: 40 },
        {
          temperature: 1,
          topK: 0,
          topP: 1,
          seed: 0,
          ...s,
        },
      );
      return (await dec.generate(PROMPTS, { maxNewTokens: 30, eosIds: [] })).rows.map((r) => r.outputIds);
    };
    const a = await run({ seed: 7 });
    expect(await run({ seed: 7 })).toEqual(a);
    expect(await run({ seed: 8 })).not.toEqual(a);
    // A vanishing temperature is greedy.
    const greedy = new LlamaDecoder(cfg, dev, { batch: 3, promptLen: 8, maxLen: 40 });
    const g = (await greedy.generate(PROMPTS, { maxNewTokens: 30, eosIds: [] })).rows.map((r) => r.outputIds);
    expect(await run({ seed: 7, temperature: 1e-4 })).toEqual(g);
    // top-k 1 is greedy too, whatever the temperature.
    expect(await run({ seed: 9, temperature: 3, topK: 1 })).toEqual(g);
  }, 180_000);

  it("bf16 decoding runs with a bf16 cache and stays close to f32 on the first token's logits", async () => {
    const bf = treeToDevice<LlamaWeights<DeviceArray>>(
      randomLlamaWeights(cfg, { seed: 3, std: 0.3, dtype: "BF16" }) as never,
    );
    const { logits } = await decodeWithLogits(cfg, bf, PROMPTS.slice(0, 1), { batch: 1, promptLen: 8, maxLen: 12 }, 2);
    const { logits: ref } = await decodeWithLogits(
      cfg,
      dev,
      PROMPTS.slice(0, 1),
      { batch: 1, promptLen: 8, maxLen: 12 },
      2,
    );
    expect(maxRel(logits[0]![0]!, ref[0]![0]!)).toBeLessThan(0.05);
  }, 120_000);
});
