// --memory-budget on train: the flag, the choice line and remat it sets, an explicit --attention kept, and the refusal before --out is written.
import { existsSync } from "node:fs";
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { train, type TrainEvent } from "tessera/train";
import { configFromFlags } from "../../src/cli/train.ts";
import { parseTrainConfig } from "../../src/train/config.ts";
import { TesseraError } from "../../src/errors.ts";
import { deviceBudget } from "../../src/memory/budget.ts";

let tmp: string;
beforeAll(async () => {
  tmp = await mkdtemp(join(tmpdir(), "tessera-memory-budget-"));
});
afterAll(() => rm(tmp, { recursive: true, force: true }));

type Start = Extract<TrainEvent, { type: "start" }>;
const base = { steps: 2, seq: 16, batch: 2, targets: ["q", "v"] as ("q" | "v")[], rank: 4 };

async function run(extra: Record<string, unknown>, name: string) {
  const events: TrainEvent[] = [];
  const r = await train({ ...base, out: join(tmp, name), ...extra }, { onEvent: (e) => events.push(e) });
  return { losses: r.losses, start: events.find((e) => e.type === "start") as Start };
}

describe("train --memory-budget", () => {
  it("the flag is the config's memoryBudget; no budget on CPU keeps today's behaviour (no memory line)", async () => {
    expect(configFromFlags(new Map([["memory-budget", "16GiB"]])).memoryBudget).toBe("16GiB");
    expect(parseTrainConfig({}).memoryBudget).toBeNull();
    const plain = await run({}, "none");
    expect(plain.start.memory).toBeNull();
    // A tight budget moves the tiny model (unrolled layers) to remat on its first layer: same losses, the choice printed.
    const tight = await run({ memoryBudget: "240KiB" }, "tight");
    expect(tight.start.memory).toMatch(
      /^remat nothingSaveable on layer 0, none on layer 1, attention plain, loss whole: \d+\.\d\d KiB estimated per device within 240\.00 KiB \(--memory-budget\); remat nothingSaveable on layer 0, none on layer 1: none would be faster but needs \d+\.\d\d KiB > 240\.00 KiB/,
    );
    for (const [i, l] of tight.losses.entries()) expect(Math.abs(l - plain.losses[i]!)).toBeLessThan(1e-5);
  });

  it("an explicit --attention is kept and the rest chosen around it", async () => {
    const r = await run({ memoryBudget: "64MiB", attention: "plain" }, "kept");
    expect(r.start.attention).toBe("plain");
    expect(r.start.memory).toContain("(kept: attention)");
  });

  it("a budget nothing fits is an error (exit 1) naming the smallest estimate, before --out exists", async () => {
    const out = join(tmp, "refused");
    let err: unknown;
    try {
      await train({ ...base, out, memoryBudget: "200KiB" });
    } catch (e) {
      err = e;
    }
    expect(err).toBeInstanceOf(TesseraError);
    expect((err as TesseraError).exitCode).toBe(1);
    expect((err as Error).message).toMatch(
      /^memory budget 200\.00 KiB is too small for a LoRA step at batch 2 x seq 16: the smallest estimate is \d+\.\d\d KiB per device/,
    );
    expect(existsSync(out)).toBe(false);
  });

  it("on a GPU without a budget: the device's memory less 10% (at least 1 GiB); none on CPU", () => {
    expect(deviceBudget("cpu", 64 * 2 ** 30)).toBeUndefined();
    expect(deviceBudget("cuda", undefined)).toBeUndefined();
    expect(deviceBudget("cuda", 80 * 2 ** 30)).toBe(72 * 2 ** 30);
    expect(deviceBudget("cuda", 4 * 2 ** 30)).toBe(3 * 2 ** 30);
  });
});
