// Chunked cross-entropy vs the whole-logits loss on PJRT CPU (loss, gradients for hidden, head and LoRA), and the memory it saves.
import { beforeAll, describe, expect, it } from "vitest";
import { array, jit, tx, type Tensor } from "tessera";
import type { Graph, Value } from "../../src/ir/graph.ts";
import { typeBytes } from "../../src/ir/cost.ts";
import { estimateMemory } from "../../src/passes/memory_estimate.ts";
import { lowerProgram } from "../../src/frontend/lowering.ts";
import { toFloat32, type HostTensor } from "../../src/formats/host_tensor.ts";
import { loadAdapter } from "../../src/formats/peft.ts";
import { readSafetensors } from "../../src/formats/safetensors.ts";
import type { LlamaConfig } from "../../src/formats/hf_config.ts";
import { causalLmLoss, chunkedCausalLmLoss } from "../../src/train/loss.ts";
import { loraLoss, makeTrainStep, trainStepSpecs, type StepConfig } from "../../src/train/step.ts";
import { BF16, F32 } from "../../src/train/precision.ts";
import { treeToDevice } from "../../src/host/transfer.ts";
import type { LlamaWeights } from "../../models/llama.ts";
import { loraFromAdapter, mulberry32, type LoraWeights } from "../../models/lora.ts";
import { loadLlamaWeights } from "../../models/weights.ts";
import { FIXTURE, relErr, uniform } from "../models/helpers.ts";

const [B, S, E, V] = [2, 13, 8, 37];
const ADAMW = { lr: 1e-3, beta1: 0.9, beta2: 0.999, eps: 1e-8, weightDecay: 0.01 };
const rand = mulberry32(11);
const hidden = uniform(B * S * E, 1, rand);
const head = uniform(E * V, 1, rand);

/** Labels with some -100s; positions 1..8 of row 0 all ignored, so with chunk 4 a whole chunk has no loss token. */
function someLabels(): Int32Array {
  const r = mulberry32(5);
  const y = Int32Array.from({ length: B * S }, () => Math.floor(r() * V));
  for (let t = 1; t <= 8; t++) y[t] = -100;
  y[S + 3] = -100;
  y[2 * S - 1] = -100;
  return y;
}

const whole = (h: Tensor, w: Tensor, y: Tensor) =>
  causalLmLoss(tx.dotGeneral(h, w, { lhsContract: [2], rhsContract: [0], outDtype: "f32" }), y);

type Grads = [number, Float32Array, Float32Array];
async function lossAndGrads(loss: (h: Tensor, w: Tensor, y: Tensor) => Tensor, labels: Int32Array): Promise<Grads> {
  const f = jit((h: Tensor, w: Tensor, y: Tensor) => tx.valueAndGrad(loss, { wrt: [0, 1] })(h, w, y));
  const [l, [gh, gw]] = await f(
    array(hidden, { shape: [B, S, E] }),
    array(head, { shape: [E, V] }),
    array(labels, { shape: [B, S] }),
  );
  return [await l.item(), await gh.toArray(), await gw.toArray()];
}

describe("chunkedCausalLmLoss (PJRT CPU, f32)", () => {
  it("equals the whole-logits loss and its gradients (hidden, head) to 1e-6, for chunks that do not divide S", async () => {
    const labels = someLabels();
    const [l0, gh0, gw0] = await lossAndGrads(whole, labels);
    for (const chunk of [1, 4, 5, 13, 64]) {
      const [l, gh, gw] = await lossAndGrads((h, w, y) => chunkedCausalLmLoss(h, w, y, { chunk }), labels);
      expect(Math.abs(l - l0) / Math.abs(l0), `loss, chunk ${chunk}`).toBeLessThan(1e-6);
      expect(relErr(gh, gh0), `d hidden, chunk ${chunk}`).toBeLessThan(1e-6);
      expect(relErr(gw, gw0), `d head, chunk ${chunk}`).toBeLessThan(1e-6);
    }
    // The loss is not trivially equal: other labels give another loss.
    const [l1] = await lossAndGrads(
      (h, w, y) => chunkedCausalLmLoss(h, w, y, { chunk: 4 }),
      labels.map((y) => (y < 0 ? y : (y + 1) % V)),
    );
    expect(Math.abs(l1 - l0)).toBeGreaterThan(1e-3);
  });

  it("is NaN when every label is ignored, as the whole-logits loss (0/0)", async () => {
    const none = new Int32Array(B * S).fill(-100);
    const [l] = await lossAndGrads((h, w, y) => chunkedCausalLmLoss(h, w, y, { chunk: 4 }), none);
    expect(l).toBeNaN();
    expect((await lossAndGrads(whole, none))[0]).toBeNaN();
  });

  it("rejects a chunk that is not a positive integer, naming it", () => {
    for (const chunk of [0, 2.5])
      expect(() =>
        tx.trace(
          (h: Tensor, w: Tensor, y: Tensor) => chunkedCausalLmLoss(h, w, y, { chunk }),
          [tx.spec("f32", [B, S, E]), tx.spec("f32", [E, V]), tx.spec("s32", [B, S])],
        ),
      ).toThrow(/chunk must be an integer >= 1; got/);
  });
});

describe("lossChunk in the training step (PJRT CPU, f32)", () => {
  let llama: LlamaConfig;
  let base: LlamaWeights<HostTensor>;
  let lora: ReturnType<typeof loraFromAdapter>;
  let expected: Map<string, HostTensor>;
  beforeAll(async () => {
    ({ config: llama, weights: base } = await loadLlamaWeights(FIXTURE, { dtype: "F32" }));
    lora = loraFromAdapter(await loadAdapter(FIXTURE, llama), llama);
    expected = (await readSafetensors(`${FIXTURE}/expected.safetensors`)).tensors;
  });

  it("loss and LoRA gradients equal the unchunked step's to 1e-6", async () => {
    const ids = expected.get("input_ids")!;
    const lab = expected.get("labels")!;
    const seq = ids.shape[1]!;
    const run = async (lossChunk: number | undefined, policy = F32, weights = base) => {
      const c: StepConfig = { llama, layout: lora.layout, policy, adamw: ADAMW, lossChunk };
      const f = jit((l: LoraWeights, w: LlamaWeights, tokens: Tensor, labels: Tensor) =>
        tx.valueAndGrad((x: LoraWeights) => loraLoss(c, x, w, { tokens, labels }))(l),
      );
      const [loss, grads] = await f(
        treeToDevice(lora.weights as never) as never,
        treeToDevice(weights as never) as never,
        array(new Int32Array(ids.data.slice().buffer), { shape: ids.shape as number[] }),
        array(new Int32Array(lab.data.slice().buffer), { shape: lab.shape as number[] }),
      );
      const flat = await Promise.all(
        (tx.treeLeaves(grads) as { toArray(): Promise<Float32Array> }[]).map((g) => g.toArray()),
      );
      return { loss: (await loss.item()) as number, grads: flat };
    };
    const ref = await run(undefined);
    expect(Math.abs(ref.loss - toFloat32(expected.get("loss_lora")!)[0]!)).toBeLessThan(1e-5);
    for (const chunk of [3, seq - 1]) {
      const got = await run(chunk);
      expect(Math.abs(got.loss - ref.loss) / ref.loss, `loss, chunk ${chunk}`).toBeLessThan(1e-6);
      expect(got.grads.length).toBe(ref.grads.length);
      for (const [i, g] of got.grads.entries())
        expect(relErr(g, ref.grads[i]!), `grad ${i}, chunk ${chunk}`).toBeLessThan(1e-6);
    }
    // bf16 policy: the chunks' head matmul takes the bf16 hidden state as llamaLogits does; only the f32 sums'
    // order differs, so the loss agrees far inside bf16 rounding (the gradients go through bf16 activations).
    const { weights: baseBf } = await loadLlamaWeights(FIXTURE, { dtype: "BF16" });
    const refBf = await run(undefined, BF16, baseBf);
    const gotBf = await run(5, BF16, baseBf);
    expect(Math.abs(refBf.loss - ref.loss) / ref.loss).toBeLessThan(2e-2);
    expect(Math.abs(gotBf.loss - refBf.loss) / refBf.loss).toBeLessThan(1e-5);
    for (const [i, g] of gotBf.grads.entries()) expect(relErr(g, refBf.grads[i]!), `bf16 grad ${i}`).toBeLessThan(1e-2);
  });

  it("the whole training step with lossChunk never holds [B, S, V] logits; without it, it does", () => {
    const [b, s, chunk] = [2, 32, 8];
    const step = (lossChunk: number | undefined) => {
      const c: StepConfig = { llama, layout: lora.layout, policy: F32, adamw: ADAMW, lossChunk };
      return lowerProgram(tx.trace(makeTrainStep(c), trainStepSpecs(c, b, s))).graph;
    };
    const V = llama.vocabSize;
    expect(hasShape(step(undefined), [b, s, V])).toBe(true);
    const g = step(chunk);
    expect(hasShape(g, [b, s, V])).toBe(false);
    expect(hasShape(g, [b, chunk, V])).toBe(true);
  });
});

/** Every value computed in `g` and in its scan bodies, with the bytes of the largest. */
function allValues(g: Graph, out: Value[] = []): Value[] {
  for (const op of g.ops) {
    out.push(...op.outputs);
    if (op.name === "scan") allValues(op.params.body, out);
  }
  return out;
}
const largest = (g: Graph) => Math.max(...allValues(g).map((v) => typeBytes(v.type)));
const hasShape = (g: Graph, shape: number[]) =>
  allValues(g).some((v) => v.type.shape.length === shape.length && v.type.shape.every((d, i) => d === shape[i]));

describe("chunked loss memory", () => {
  it("the largest intermediate of loss + gradients drops from [B, S, V] to [B, chunk, V] f32", () => {
    const [b, s, e, v, chunk] = [2, 64, 16, 1000, 8];
    const specs = [tx.spec("f32", [b, s, e]), tx.spec("f32", [e, v]), tx.spec("s32", [b, s])];
    const program = (loss: (h: Tensor, w: Tensor, y: Tensor) => Tensor) =>
      lowerProgram(
        tx.trace((h: Tensor, w: Tensor, y: Tensor) => tx.valueAndGrad(loss, { wrt: [0, 1] })(h, w, y), specs),
      ).graph;
    const g0 = program(whole);
    const g1 = program((h, w, y) => chunkedCausalLmLoss(h, w, y, { chunk }));
    expect(largest(g0)).toBe(b * s * v * 4);
    expect(largest(g1)).toBe(b * chunk * v * 4);
    expect(hasShape(g1, [b, s, v])).toBe(false);
    // The estimated peak of live temporaries falls with it (one chunk's logits and their exp, not the whole batch's).
    const t0 = estimateMemory(g0).temporaries;
    const t1 = estimateMemory(g1).temporaries;
    expect(t0).toBeGreaterThanOrEqual(b * s * v * 4);
    expect(t1).toBeLessThan(t0 / 4);
  });
});
