// The jitted training loop on PJRT CPU: the fixture's first step reproduced and saved as a PEFT adapter; donation.
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { array, jit } from "tessera";
import { toFloat32, type HostTensor } from "../../src/formats/host_tensor.ts";
import { adapterTensors, loadAdapter } from "../../src/formats/peft.ts";
import { readSafetensors } from "../../src/formats/safetensors.ts";
import { loadLlamaWeights } from "../../models/weights.ts";
import { loraFromAdapter } from "../../models/lora.ts";
import { trainLoRA, type HostBatch } from "../../src/train/loop.ts";
import { initTrainState, makeTrainStep, type TrainState } from "../../src/train/step.ts";
import { F32 } from "../../src/train/precision.ts";
import { treeToDevice } from "../../src/host/transfer.ts";
import { FIXTURE, relErr, tempDir } from "../models/helpers.ts";

const ADAMW = { lr: 1e-3, beta1: 0.9, beta2: 0.999, eps: 1e-8, weightDecay: 0.01 };
let expected: Map<string, HostTensor>;
let batch: HostBatch;
let out: { dir: string; cleanup: () => Promise<void> };

beforeAll(async () => {
  expected = (await readSafetensors(`${FIXTURE}/expected.safetensors`)).tensors;
  const ids = expected.get("input_ids")!,
    labels = expected.get("labels")!;
  batch = {
    tokens: new Int32Array(ids.data.slice().buffer),
    labels: new Int32Array(labels.data.slice().buffer),
    shape: ids.shape as [number, number],
  };
  out = await tempDir("train");
});
afterAll(() => out.cleanup());

describe("trainLoRA (jit, PJRT CPU)", () => {
  it("one step from the fixture's adapter: HF's loss, torch's AdamW update, saved as a PEFT adapter", async () => {
    const r = await trainLoRA({
      baseDir: FIXTURE,
      adapter: { dir: FIXTURE },
      policy: F32,
      adamw: ADAMW,
      batches: [batch],
      outDir: out.dir,
    });
    expect(r.losses).toHaveLength(1);
    expect(Math.abs(r.losses[0]! - toFloat32(expected.get("loss_lora")!)[0]!)).toBeLessThan(1e-5);
    const saved = adapterTensors(await loadAdapter(out.dir, r.llama));
    expect(saved.size).toBe(8);
    for (const [k, t] of saved)
      expect(relErr(toFloat32(t), toFloat32(expected.get(`after_adamw.${k}`)!)), k).toBeLessThan(1e-5);
  });

  it("several steps lower the loss on a repeated batch", async () => {
    const r = await trainLoRA({
      baseDir: FIXTURE,
      adapter: { dir: FIXTURE },
      policy: F32,
      adamw: ADAMW,
      batches: [batch, batch, batch, batch],
    });
    expect(r.losses).toHaveLength(4);
    for (let i = 1; i < 4; i++) expect(r.losses[i]!).toBeLessThan(r.losses[i - 1]!);
    expect(toFloat32(r.state.step)[0]).toBe(4);
  });

  it("one compiled program serves every step, and the adapter and optimizer state are donated to it", async () => {
    const { config, weights } = await loadLlamaWeights(FIXTURE);
    const { layout, weights: lora } = loraFromAdapter(await loadAdapter(FIXTURE, config), config);
    const step = jit(makeTrainStep({ llama: config, layout, policy: F32, adamw: ADAMW }), { donate: 0 });
    const base = treeToDevice(weights as never);
    let state = treeToDevice<TrainState<ReturnType<typeof array>>>(initTrainState(lora) as never);
    const b = {
      tokens: array(batch.tokens, { shape: batch.shape }),
      labels: array(batch.labels, { shape: batch.shape }),
    };
    for (let i = 0; i < 2; i++) {
      const before = state;
      const [next, loss] = await step(state, base as never, b, array(1e-3), array(new Uint32Array([0, 0])));
      await loss.item();
      expect(before.lora.q!.a.donated).toBe(true);
      expect(before.m.v!.b.donated).toBe(true);
      state = next;
    }
    expect(step.cacheSize).toBe(1);
  });
});
