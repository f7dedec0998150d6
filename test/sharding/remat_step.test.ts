// The tiny Llama LoRA step with remat (tx.checkpoint per layer) SPMD-partitioned over 8 CPU devices: equal to the one-device step, collectives as planned.
import { beforeAll, describe, expect, it } from "vitest";
import { tx } from "tessera";
import { BATCH, SEQ, hostStepArgs, readTree, relErr, stepArgs, stepConfig } from "./helpers.ts";
import { makeTrainStep, trainStepSpecs } from "../../src/train/step.ts";
import { trainStepShardings } from "../../models/sharding.ts";
import { collectiveTensors, getClient } from "../../src/backend/runtime/index.ts";

type Args = [never, never, never, never, never];
const key = (kind: string, dtype: string, shape: readonly number[]) => `${kind} ${dtype}[${shape.join(",")}]`;
const host = hostStepArgs(stepConfig());
let eightDevices = false;
let reference: Map<string, Float32Array>;

beforeAll(async () => {
  eightDevices = (await getClient()).devices.length === 8;
  const [state, loss] = (await tx.jit(makeTrainStep(stepConfig()))(...(stepArgs(host) as Args))) as unknown as [
    unknown,
    unknown,
  ];
  reference = await readTree({ state, loss });
});

describe.each([["unroll"], ["scan"]] as const)("layers=%s, remat nothingSaveable, mesh data=2 x model=4", (layers) => {
  it("equals the one-device step without remat; the plan (made after the checkpoints are inlined) matches XLA", async () => {
    if (!eightDevices) return; // TESSERA_TEST_CPU_DEVICES=1: nothing to shard over
    const c = { ...stepConfig(), layers, remat: tx.checkpointPolicies.nothingSaveable };
    const mesh = tx.mesh({ data: 2, model: 4 });
    const step = tx.jit(makeTrainStep(c), { mesh, ...trainStepShardings(c.llama, c.layout, mesh), donate: 0 });
    const { lowered, executable } = await step.compile(...(trainStepSpecs(c, BATCH, SEQ) as unknown as Args));
    expect(lowered.graph.ops.some((o) => o.name === "checkpoint")).toBe(false);
    const plan = lowered.sharding!.plan;
    const xla = collectiveTensors(executable.hloModule())
      .map((x) => key(x.kind, x.dtype, x.shape))
      .sort();
    expect(xla).toEqual(plan.collectives.map((x) => key(x.kind, x.type.dtype, x.type.shape)).sort());
    const [state, loss] = (await step(...(stepArgs(host) as Args))) as unknown as [unknown, unknown];
    const got = await readTree({ state, loss });
    for (const [k, ref] of reference) expect(relErr(got.get(k)!, ref), k).toBeLessThan(1e-5);
  });
});
