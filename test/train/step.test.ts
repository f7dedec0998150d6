// The compiled-step function on the reference fixture: one step reproduces torch's AdamW result; bf16 runs close to f32.
import { beforeAll, describe, expect, it } from "vitest";
import { tx } from "tessera";
import type { Graph } from "../../src/ir/graph.ts";
import { fromFloat32, hostTensor, toFloat32, type HostTensor } from "../../src/formats/host_tensor.ts";
import { loadAdapter, adapterTensors } from "../../src/formats/peft.ts";
import { readSafetensors } from "../../src/formats/safetensors.ts";
import type { LlamaConfig } from "../../src/formats/hf_config.ts";
import { loraFromAdapter, loraToAdapter, type LoraWeights } from "../../models/lora.ts";
import { loadLlamaWeights } from "../../models/weights.ts";
import type { LlamaWeights } from "../../models/llama.ts";
import { makeTrainStep, trainStepSpecs, type StepConfig, type TrainState } from "../../src/train/step.ts";
import { BF16, F32 } from "../../src/train/precision.ts";
import { interpretOnHost } from "../../src/parity/execute.ts";
import { FIXTURE, relErr } from "../models/helpers.ts";

type HostTree = Parameters<typeof interpretOnHost>[1][number];

let llama: LlamaConfig;
let base: LlamaWeights<HostTensor>;
let lora: ReturnType<typeof loraFromAdapter>;
let expected: Map<string, HostTensor>;

beforeAll(async () => {
  ({ config: llama, weights: base } = await loadLlamaWeights(FIXTURE, { dtype: "F32" }));
  lora = loraFromAdapter(await loadAdapter(FIXTURE, llama), llama);
  expected = (await readSafetensors(`${FIXTURE}/expected.safetensors`)).tensors;
});

function zeros(w: LoraWeights<HostTensor>): LoraWeights<HostTensor> {
  return Object.fromEntries(
    Object.entries(w).map(([k, v]) => [k, { a: hostTensor("F32", v!.a.shape), b: hostTensor("F32", v!.b.shape) }]),
  );
}

function runStep(
  c: StepConfig,
  state: TrainState<HostTensor>,
  weights: LlamaWeights<HostTensor>,
  lr: number,
): [TrainState<HostTensor>, number] {
  const step = makeTrainStep(c);
  const [next, loss] = interpretOnHost(step, [
    state as unknown as HostTree,
    weights as unknown as HostTree,
    { tokens: expected.get("input_ids")!, labels: expected.get("labels")! },
    fromFloat32([lr], []),
    fromFloat32([0, 7], [2], "U32"),
  ]) as unknown as [TrainState<HostTensor>, HostTensor];
  return [next, toFloat32(loss)[0]!];
}

describe("train step", () => {
  it("from the saved adapter, one step gives the fixture's loss and torch's AdamW result", () => {
    const c: StepConfig = {
      llama,
      layout: lora.layout,
      policy: F32,
      adamw: { lr: 1e-3, beta1: 0.9, beta2: 0.999, eps: 1e-8, weightDecay: 0.01 },
    };
    const state: TrainState<HostTensor> = {
      lora: lora.weights,
      m: zeros(lora.weights),
      v: zeros(lora.weights),
      step: fromFloat32([0], []),
    };
    const [next, loss] = runStep(c, state, base, 1e-3);
    expect(Math.abs(loss - toFloat32(expected.get("loss_lora")!)[0]!)).toBeLessThan(1e-5);
    expect(toFloat32(next.step)[0]).toBe(1);
    const after = adapterTensors(loraToAdapter(lora.layout, next.lora, llama));
    expect(after.size).toBe(8);
    for (const [k, t] of after)
      expect(relErr(toFloat32(t), toFloat32(expected.get(`after_adamw.${k}`)!)), k).toBeLessThan(1e-5);
    // A second step (bias corrections for t = 2, moments carried) lowers the loss further.
    const [, loss2] = runStep(c, next, base, 1e-3);
    const [, loss3] = runStep(c, runStep(c, next, base, 1e-3)[0], base, 1e-3);
    expect(loss2).toBeLessThan(loss);
    expect(loss3).toBeLessThan(loss2);
  });

  it("bf16 policy: bf16 base and activations, f32 masters and moments, loss within bf16 error of f32", () => {
    const c: StepConfig = {
      llama,
      layout: lora.layout,
      policy: BF16,
      adamw: { lr: 1e-3, beta1: 0.9, beta2: 0.999, eps: 1e-8, weightDecay: 0.01 },
    };
    const [stateSpec, baseSpec] = trainStepSpecs(c, 2, 16);
    expect(baseSpec.layers.q.dtype).toBe("bf16");
    expect(stateSpec.lora.q!.a.dtype).toBe("f32");
    const toBf = (t: HostTensor) => fromFloat32(toFloat32(t), t.shape, "BF16");
    const baseBf: LlamaWeights<HostTensor> = {
      embed: toBf(base.embed),
      norm: toBf(base.norm),
      head: toBf(base.head),
      layers: Object.fromEntries(
        Object.entries(base.layers).map(([k, v]) => [k, toBf(v)]),
      ) as unknown as LlamaWeights<HostTensor>["layers"],
    };
    const state: TrainState<HostTensor> = {
      lora: lora.weights,
      m: zeros(lora.weights),
      v: zeros(lora.weights),
      step: fromFloat32([0], []),
    };
    const [next, loss] = runStep(c, state, baseBf, 1e-3);
    expect(next.lora.q!.a.dtype).toBe("F32");
    expect(next.m.q!.a.dtype).toBe("F32");
    expect(Math.abs(loss - toFloat32(expected.get("loss_lora")!)[0]!)).toBeLessThan(2e-2);
  });

  it("traces with gradients for the adapter only: no contraction produces a frozen weight's gradient", () => {
    const c: StepConfig = {
      llama,
      layout: lora.layout,
      policy: F32,
      adamw: { lr: 1e-3, beta1: 0.9, beta2: 0.999, eps: 1e-8, weightDecay: 0.01 },
    };
    const { graph } = tx.trace(makeTrainStep(c), trainStepSpecs(c, 2, 16));
    expect(graph.outputs.length).toBe(4 * 3 + 2); // lora, m, v (4 leaves each), step, loss
    const frozen = new Set(["64,64", "64,172", "172,64", "64,512", "512,64"]);
    const shapes: string[] = [];
    const walk = (g: Graph) => {
      for (const op of g.ops) {
        if (op.name === "dot_general") shapes.push(op.outputs[0]!.type.shape.join(","));
        if (op.name === "scan") walk((op.params as { body: Graph }).body);
      }
    };
    walk(graph);
    expect(shapes.some((s) => s === "64,4" || s === "4,64")).toBe(true); // the LoRA gradients are there
    expect(shapes.filter((s) => frozen.has(s))).toEqual([]);
  });
});
