// --loss-chunk from the command line to the step: the flag, the zod field, the automatic default, and a run with it.
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { train, type TrainEvent } from "tessera/train";
import { configFromFlags } from "../../src/cli/train.ts";
import { parseTrainConfig } from "../../src/train/config.ts";
import { defaultLossChunk, LOSS_CHUNK_TARGET_BYTES, LOSS_CHUNK_THRESHOLD_BYTES } from "../../src/train/loss.ts";

let tmp: string;
beforeAll(async () => {
  tmp = await mkdtemp(join(tmpdir(), "tessera-loss-chunk-"));
});
afterAll(() => rm(tmp, { recursive: true, force: true }));

describe("lossChunk option", () => {
  it("--loss-chunk N is the config's lossChunk; a negative or fractional one is a usage error naming the flag", () => {
    expect(configFromFlags(new Map([["loss-chunk", "128"]])).lossChunk).toBe(128);
    expect(configFromFlags(new Map()).lossChunk).toBeUndefined();
    for (const bad of ["-1", "2.5", "x"])
      expect(() => configFromFlags(new Map([["loss-chunk", bad]]))).toThrow(/--loss-chunk must be an integer >= 0/);
    expect(parseTrainConfig({}).lossChunk).toBeNull();
    expect(() => parseTrainConfig({ lossChunk: 1.5 })).toThrow(/^--loss-chunk: /);
  });

  it("defaults to the whole logits up to 256 MiB, then the fewest equal chunks of at most 64 MiB", () => {
    // The built-in tiny model (vocab 96) and the fixture never chunk by default.
    expect(defaultLossChunk(8, 64, 96)).toBeUndefined();
    // Exactly at the threshold: still whole.
    expect(defaultLossChunk(1, LOSS_CHUNK_THRESHOLD_BYTES / 4 / 32000, 32000)).toBeUndefined();
    // Llama-2 7B, batch 4 x seq 2048: 1 GiB of logits -> 16 chunks of 128 positions, 62.5 MiB each.
    expect(defaultLossChunk(4, 2048, 32000)).toBe(128);
    for (const [b, s, v] of [
      [4, 2048, 32000],
      [3, 1000, 50257],
      [1, 4097, 128256],
      [64, 512, 32000],
    ] as const) {
      const c = defaultLossChunk(b, s, v)!;
      expect(b * c * v * 4, `${b}x${s}x${v}`).toBeLessThanOrEqual(Math.max(LOSS_CHUNK_TARGET_BYTES, b * v * 4));
      // Equal chunks: the padding of the last one is less than one position per chunk.
      const n = Math.ceil(s / c);
      expect(n * c - s).toBeLessThan(n);
    }
  });

  it("train() with --loss-chunk gives the same losses as without, and reports the chunk", async () => {
    const run = async (lossChunk: number | undefined) => {
      const events: TrainEvent[] = [];
      const r = await train(
        { out: join(tmp, `run-${lossChunk}`), steps: 3, seq: 16, batch: 2, targets: ["q", "v"], rank: 4, lossChunk },
        { onEvent: (e) => events.push(e) },
      );
      const start = events.find((e) => e.type === "start") as Extract<TrainEvent, { type: "start" }>;
      return { losses: r.losses, chunk: start.lossChunk };
    };
    const whole = await run(undefined);
    const chunked = await run(5);
    expect(whole.chunk).toBeNull();
    expect(chunked.chunk).toBe(5);
    expect(chunked.losses).toHaveLength(3);
    for (const [i, l] of chunked.losses.entries())
      expect(Math.abs(l - whole.losses[i]!) / whole.losses[i]!).toBeLessThan(1e-5);
    // A chunk longer than the sequence is one chunk of the whole sequence.
    expect((await run(1000)).chunk).toBe(16);
  });
});
