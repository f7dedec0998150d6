// `tessera train --attention`: the flag reaches the step (blockwise trains to plain's losses), bad values and cudnn on CPU are refused.
import { existsSync } from "node:fs";
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { UsageError } from "../../src/cli/args.ts";
import { configFromFlags, trainCommand } from "../../src/cli/train.ts";
import { TesseraError } from "../../src/errors.ts";
import { parseTrainConfig } from "../../src/train/config.ts";
import { train } from "../../src/train/run.ts";

let tmp: string;
beforeAll(async () => {
  tmp = await mkdtemp(join(tmpdir(), "tessera-attention-flag-"));
});
afterAll(() => rm(tmp, { recursive: true, force: true }));

const flags = (o: Record<string, string>) => configFromFlags(new Map(Object.entries(o)));

describe("--attention", () => {
  it("parses plain | blockwise | cudnn into the config (default null: by --seq), and nothing else", () => {
    expect(flags({ attention: "blockwise" }).attention).toBe("blockwise");
    expect(parseTrainConfig(flags({})).attention).toBeNull();
    expect(() => flags({ attention: "flash" })).toThrow(
      new UsageError("--attention must be plain, blockwise or cudnn; got 'flash'", "train"),
    );
    expect(() => parseTrainConfig({ attention: "flash" })).toThrow(/^--attention: /);
  });

  it("a blockwise run takes the same steps as a plain one (losses to 1e-5, built-in model, PJRT CPU)", async () => {
    const started: unknown[] = [];
    const run = (attention?: "plain" | "blockwise") =>
      train(
        {
          seq: 24,
          batch: 2,
          steps: 3,
          saveEvery: 0,
          // Unclipped: clipped to norm 1, both runs' updates come out equal to the bit here, and so do their
          // losses, which would hide whether the kernels differ at all (the last assertion).
          maxGradNorm: 0,
          ...(attention ? { attention } : {}),
          out: join(tmp, `${attention}`),
        },
        { onEvent: (e) => e.type === "start" && started.push(e.attention) },
      );
    const plain = await run("plain");
    const block = await run("blockwise");
    await run(); // the default at --seq 24
    expect(started).toEqual(["plain", "blockwise", "plain"]);
    expect(block.losses).toHaveLength(3);
    for (const [i, l] of block.losses.entries()) expect(Math.abs(l - plain.losses[i]!)).toBeLessThanOrEqual(1e-5);
    // the runs really trained (the loss moved); which kernel each ran is what `started` shows (at 24 tokens flash
    // attention is one block pair, and its losses may equal plain's to the bit)
    expect(plain.losses[2]).not.toBe(plain.losses[0]);
  });

  it("cudnn on the CPU backend is a usage error naming the backend, and writes nothing", async () => {
    const out = join(tmp, "cudnn");
    const err = await trainCommand(
      {
        positionals: [],
        options: new Map([
          ["attention", "cudnn"],
          ["out", out],
        ]),
        help: false,
      },
      { out: () => {}, err: () => {}, tty: false },
    ).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(TesseraError);
    expect((err as TesseraError).exitCode).toBe(2);
    expect((err as Error).message).toMatch(
      /^--attention cudnn needs cuDNN on a CUDA backend, but this run's backend is PJRT \S+ \(cpu\)/,
    );
    expect(existsSync(join(out, "metrics.jsonl"))).toBe(false);
  });
});
