// train(config) as a user's script calls it: events in order, the adapter, checkpoint and metrics written, config errors.
import { existsSync } from "node:fs";
import { mkdtemp, readFile, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { train, TrainConfigSchema, type TrainEvent } from "tessera/train";
import { loadAdapter } from "../../src/formats/peft.ts";
import { LLAMA_TINY } from "../../models/llama.ts";

let tmp: string;
beforeAll(async () => {
  tmp = await mkdtemp(join(tmpdir(), "tessera-train-run-"));
});
afterAll(() => rm(tmp, { recursive: true, force: true }));

describe("train(config) (library, PJRT CPU)", () => {
  // 2 layers x rank 4 x (q: 32 in + 32 out, v: 32 in + 16 out: 2 key/value heads of 8).
  it("reports start, compiling, compiled, steps, a checkpoint and done, and writes the adapter", async () => {
    const out = join(tmp, "run");
    const events: TrainEvent[] = [];
    const r = await train(
      { out, steps: 3, seq: 16, batch: 2, targets: ["q", "v"], rank: 4, saveEvery: 2, logEvery: 2 },
      { onEvent: (e) => events.push(e) },
    );
    expect(events.map((e) => e.type)).toEqual([
      "start",
      "compiling",
      "compiled",
      "step",
      "step",
      "checkpoint",
      "step",
      "done",
    ]);
    const start = events[0] as Extract<TrainEvent, { type: "start" }>;
    expect(start).toMatchObject({
      steps: 3,
      startStep: 0,
      batch: 2,
      seq: 16,
      lr: 1e-2,
      precision: "f32",
      out,
      trainableParams: 2 * 4 * (32 + 32 + (32 + 16)),
    });
    const steps = events.filter((e): e is Extract<TrainEvent, { type: "step" }> => e.type === "step");
    expect(steps.map((s) => [s.step, s.first, s.log, s.skipped])).toEqual([
      [1, true, true, false],
      [2, false, true, false],
      [3, false, true, false],
    ]);
    for (const s of steps) expect(Number.isFinite(s.loss) && s.gradNorm > 0).toBe(true);
    expect(r).toMatchObject({
      status: "done",
      startStep: 0,
      step: 3,
      steps: 3,
      skippedSteps: 0,
      adapter: join(out, "adapter"),
      checkpoint: join(out, "checkpoints", "step-3"),
    });
    expect(r.losses).toEqual(steps.map((s) => s.loss));
    const adapter = await loadAdapter(r.adapter!, LLAMA_TINY);
    expect(adapter.config).toMatchObject({ r: 4, targetModules: ["q_proj", "v_proj"] });
    const lines = (await readFile(r.metrics, "utf8"))
      .trim()
      .split("\n")
      .map((l) => JSON.parse(l));
    expect(lines.map((l) => [l.step, l.grad_norm, l.skipped_steps])).toEqual(steps.map((s) => [s.step, s.gradNorm, 0]));
    expect(existsSync(join(out, ".tessera.lock"))).toBe(false);
  });

  it("validates the config with zod: a bad field is a usage error naming it, before anything is written", async () => {
    expect(TrainConfigSchema.parse({}).steps).toBe(60);
    const out = join(tmp, "never");
    await expect(train({ out, rank: 0 })).rejects.toMatchObject({
      code: "ERR_CONFIG",
      exitCode: 2,
      message: expect.stringMatching(/^--rank: /),
    });
    await expect(train({ out, weightDecay: -1 })).rejects.toThrow(/^--weight-decay: /);
    await expect(train({ out, bogus: 1 } as never)).rejects.toMatchObject({ code: "ERR_CONFIG" });
    expect(existsSync(out)).toBe(false);
  });
});
