// The tiny Llama LoRA step SPMD-partitioned over 8 CPU devices (1x8, 2x4, 4x2, 8x1, with and without FSDP): equal to
// the one-device step, and XLA's partitioned program needs exactly the collectives the sharding plan predicted.
import { beforeAll, describe, expect, it } from "vitest";
import { BATCH, SEQ, hostStepArgs, readTree, relErr, stepArgs, stepConfig } from "./helpers.ts";
import { tx } from "tessera";
import { makeTrainStep, trainStepSpecs } from "../../src/train/step.ts";
import { trainStepShardings } from "../../models/sharding.ts";
import { collectiveTensors, getClient } from "../../src/backend/runtime/index.ts";
import { isReplicated } from "../../src/ir/sharding.ts";
import { typeBytes } from "../../src/ir/cost.ts";
import { tensorType } from "../../src/ir/types.ts";

const c = stepConfig();
const host = hostStepArgs(c);
const specs = trainStepSpecs(c, BATCH, SEQ);
type Args = [never, never, never, never, never];
let reference: Map<string, Float32Array>;
let eightDevices = false;

beforeAll(async () => {
  eightDevices = (await getClient()).devices.length === 8;
  const [state, loss] = (await tx.jit(makeTrainStep(c))(...(stepArgs(host) as Args))) as unknown as [unknown, unknown];
  reference = await readTree({ state, loss });
});

/** `all-reduce f32[4,16,64]` per collective tensor, sorted: the multiset compared between plan and XLA. */
const key = (kind: string, dtype: string, shape: readonly number[]) => `${kind} ${dtype}[${shape.join(",")}]`;

const MESHES: [number, number][] = [
  [1, 8],
  [2, 4],
  [4, 2],
  [8, 1],
];

describe.each(
  MESHES.flatMap(
    ([d, m]) =>
      [
        [d, m, false],
        [d, m, true],
      ] as const,
  ),
)("mesh data=%i x model=%i, fsdp=%s", (data, model, fsdp) => {
  it("equals the one-device step, with the collectives the plan predicted", async () => {
    if (!eightDevices) return; // TESSERA_TEST_CPU_DEVICES=1: nothing to shard over
    const mesh = tx.mesh({ data, model });
    const step = tx.jit(makeTrainStep(c), {
      mesh,
      ...trainStepShardings(c.llama, c.layout, mesh, { fsdp }),
      donate: 0,
    });
    const { lowered, executable } = await step.compile(...(specs as unknown as Args));

    // Collectives: every tensor XLA's optimized HLO moves, against the plan, by kind, dtype and per-device shape.
    const plan = lowered.sharding!.plan;
    const predicted = plan.collectives.map((x) => key(x.kind, x.type.dtype, x.type.shape)).sort();
    const xla = collectiveTensors(executable.hloModule())
      .map((x) => key(x.kind, x.dtype, x.shape))
      .sort();
    expect(xla).toEqual(predicted);
    const xlaBytes = collectiveTensors(executable.hloModule()).reduce(
      (s, x) => s + typeBytes(tensorType(x.dtype as "f32", x.shape)),
      0,
    );
    expect(plan.collectives.reduce((s, x) => s + x.bytes, 0)).toBe(xlaBytes);
    if (data === 8 && !fsdp) expect(new Set(predicted.map((p) => p.split(" ")[0]))).toEqual(new Set(["all-reduce"])); // pure DP: gradients only

    // Numbers: loss, the new adapter, and the gradients through AdamW's first moment m = (1 - beta1) g (zero start).
    const [state, loss] = (await step(...(stepArgs(host) as Args))) as unknown as [unknown, unknown];
    const got = await readTree({ state, loss });
    expect([...got.keys()].sort()).toEqual([...reference.keys()].sort());
    let worst = 0;
    for (const [k, ref] of reference) {
      const e = relErr(got.get(k)!, ref);
      worst = Math.max(worst, e);
      expect(e, k).toBeLessThan(1e-5);
    }
    // The arrays really are split: a column-parallel LoRA B over `model`, and (FSDP) A over `data`.
    const out = state as { lora: { q: { a: tx.DeviceArray; b: tx.DeviceArray } } };
    expect(out.lora.q.b.sharding!.sharding.dims[2]).toEqual(model > 1 ? ["model"] : []);
    expect(isReplicated(out.lora.q.a.sharding!.sharding)).toBe(!fsdp || data === 1);
    const kinds: Record<string, number> = {};
    for (const p of predicted) kinds[p.split(" ")[0]!] = (kinds[p.split(" ")[0]!] ?? 0) + 1;
    console.log(
      `mesh ${data}x${model}${fsdp ? " fsdp" : ""}: worst relative error ${worst.toExponential(2)}; collective tensors predicted = XLA: ${JSON.stringify(kinds)}`,
    );
  });
});

describe("scanned layers (the default beyond 8 layers), mesh data=2 x model=4", () => {
  it("equals the one-device step; the loop body's collectives appear once in XLA's HLO and run once per layer", async () => {
    if (!eightDevices) return;
    const cs = { ...c, layers: "scan" as const };
    const mesh = tx.mesh({ data: 2, model: 4 });
    const step = tx.jit(makeTrainStep(cs), { mesh, ...trainStepShardings(c.llama, c.layout, mesh), donate: 0 });
    const { lowered, executable } = await step.compile(...(trainStepSpecs(cs, BATCH, SEQ) as unknown as Args));
    const plan = lowered.sharding!.plan;
    const xla = collectiveTensors(executable.hloModule());
    expect(xla.map((x) => key(x.kind, x.dtype, x.shape)).sort()).toEqual(
      plan.collectives.map((x) => key(x.kind, x.type.dtype, x.type.shape)).sort(),
    );
    // Inside loops on both sides, and the same number of them.
    expect(xla.filter((x) => !x.computation.startsWith("main")).length).toBe(
      plan.collectives.filter((x) => x.inLoop).length,
    );
    expect(plan.collectives.filter((x) => x.inLoop).every((x) => x.times === c.llama.numLayers)).toBe(true);
    const [state, loss] = (await step(...(stepArgs(host) as Args))) as unknown as [unknown, unknown];
    const got = await readTree({ state, loss });
    for (const [k, ref] of reference) expect(relErr(got.get(k)!, ref), k).toBeLessThan(1e-5);
  });
});
