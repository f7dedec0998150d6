// The tiny Llama LoRA step SPMD-partitioned over 8 CPU devices (1x8, 2x4, 4x2, 8x1, with and without FSDP) equals the one-device step.
import { beforeAll, describe, expect, it } from "vitest";
import { hostStepArgs, readTree, relErr, stepArgs, stepConfig } from "./helpers.ts";
import { tx } from "tessera";
import { makeTrainStep } from "../../src/train/step.ts";
import { trainStepShardings } from "../../models/sharding.ts";
import { getClient } from "../../src/backend/runtime/index.ts";
import { isReplicated } from "../../src/ir/sharding.ts";

const c = stepConfig();
const host = hostStepArgs(c);
let reference: Map<string, Float32Array>;

beforeAll(async () => {
  const [state, loss] = (await tx.jit(makeTrainStep(c))(...(stepArgs(host) as [never, never, never, never, never]))) as unknown as [unknown, unknown];
  reference = await readTree({ state, loss });
});

const MESHES: [number, number][] = [[1, 8], [2, 4], [4, 2], [8, 1]];

describe.each(MESHES.flatMap(([d, m]) => [[d, m, false], [d, m, true]] as const))("mesh data=%i x model=%i, fsdp=%s", (data, model, fsdp) => {
  it("loss, gradients (AdamW's first moment) and the updated adapter equal the one-device step", async () => {
    const client = await getClient();
    if (client.devices.length !== 8) return; // TESSERA_TEST_CPU_DEVICES=1 runs: nothing to shard over
    const mesh = tx.mesh({ data, model });
    const sh = trainStepShardings(c.llama, c.layout, mesh, { fsdp });
    const step = tx.jit(makeTrainStep(c), { mesh, ...sh, donate: 0 });
    const [state, loss] = (await step(...(stepArgs(host) as [never, never, never, never, never]))) as unknown as [tx.DeviceArray & { lora: unknown }, tx.DeviceArray];
    const got = await readTree({ state, loss });
    expect([...got.keys()].sort()).toEqual([...reference.keys()].sort());
    let worst = 0;
    for (const [k, ref] of reference) {
      const e = relErr(got.get(k)!, ref);
      worst = Math.max(worst, e);
      expect(e, k).toBeLessThan(1e-5);
    }
    // The arrays really are split: a column-parallel LoRA B over `model`, and (FSDP) A over `data`.
    const out = state as unknown as { lora: { q: { a: tx.DeviceArray; b: tx.DeviceArray } } };
    const bq = out.lora.q.b.sharding!;
    expect(bq.sharding.dims[2]).toEqual(["model"]);
    expect(isReplicated(out.lora.q.a.sharding!.sharding)).toBe(!fsdp || data === 1);
    console.log(`mesh ${data}x${model}${fsdp ? " fsdp" : ""}: worst relative error ${worst.toExponential(2)}`);
  });
});
