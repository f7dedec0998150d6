// tx.checkpoint: gradients unchanged on PJRT CPU; the backward reads from the forward only what the policy saves, through an optimization barrier that survives CSE.
import { beforeAll, describe, expect, it } from "vitest";
import { array, jit, tx, type Tensor } from "tessera";
import type { AnyOp, Graph, Value } from "../../src/ir/graph.ts";
import { emitProgram, lowerProgram } from "../../src/frontend/lowering.ts";
import type { SavePolicy } from "../../src/passes/remat.ts";
import { loraFromAdapter, loraSpecs, mulberry32, type LoraWeights } from "../../models/lora.ts";
import { loadLlamaWeights } from "../../models/weights.ts";
import { llamaSpecs, type LlamaWeights } from "../../models/llama.ts";
import type { HostTensor } from "../../src/formats/host_tensor.ts";
import type { LlamaConfig } from "../../src/formats/hf_config.ts";
import { loadAdapter } from "../../src/formats/peft.ts";
import { readSafetensors } from "../../src/formats/safetensors.ts";
import { treeToDevice } from "../../src/host/transfer.ts";
import { loraLoss, type StepConfig } from "../../src/train/step.ts";
import { F32 } from "../../src/train/precision.ts";
import { FIXTURE, relErr, uniform } from "../models/helpers.ts";

const P = tx.checkpointPolicies;
const [N, D, H, O] = [4, 6, 5, 3];
const specs = [tx.spec("f32", [N, D]), tx.spec("f32", [D, H]), tx.spec("f32", [H, O])];

/** The checkpointed block: two matmuls, each followed by tanh; the first tanh is named "h". */
function block(x: Tensor, w1: Tensor, w2: Tensor): Tensor {
  const h = tx.checkpointName(tx.matmul(x, w1).tanh(), "h");
  return tx.matmul(h, w2).tanh();
}

/** The loss around it; `policy` undefined: no checkpoint. */
const lossWith = (policy: SavePolicy | undefined) => (x: Tensor, w1: Tensor, w2: Tensor) => {
  const y = policy ? tx.checkpoint(block, { policy })(x, w1, w2) : block(x, w1, w2);
  return y.square().sum();
};
const gradFn = (policy: SavePolicy | undefined) => (x: Tensor, w1: Tensor, w2: Tensor) =>
  tx.valueAndGrad(lossWith(policy), { wrt: [0, 1, 2] })(x, w1, w2);

const count = (g: Graph, name: string) => g.ops.filter((o) => o.name === name).length;

/** The traced (uncleaned) gradient graph, its one barrier and the forward values the backward reads. */
function traced(policy: SavePolicy) {
  const g = tx.trace(gradFn(policy), specs).graph;
  const k = g.ops.findIndex((o) => o.name === "optimization_barrier");
  expect(k).toBeGreaterThan(0);
  expect(count(g, "optimization_barrier")).toBe(1);
  const barrier = g.ops[k]!;
  const producer = new Map<Value, AnyOp>();
  for (const op of g.ops.slice(0, k)) for (const v of op.outputs) producer.set(v, op);
  // The forward's block ops: the two matmuls and two tanhs before the barrier.
  const blockOps = g.ops.slice(0, k).filter((o) => o.name === "dot_general" || o.name === "tanh");
  expect(blockOps.map((o) => o.name)).toEqual(["dot_general", "tanh", "dot_general", "tanh"]);
  // Block values the backward ops (after the barrier) read directly, not through the barrier; the block's
  // output is exempt (square's own gradient reads it).
  const internal = new Set(blockOps.slice(0, 3).flatMap((o) => o.outputs));
  const readDirectly = g.ops.slice(k + 1).flatMap((o) => o.inputs.filter((v) => internal.has(v)));
  return { g, barrier, blockOps, readDirectly, inputs: g.inputs };
}

describe("tx.checkpoint", () => {
  it("nothingSaveable: the backward reads only the block's inputs, through the barrier, and recomputes the rest", () => {
    const t = traced(P.nothingSaveable);
    expect(t.barrier.inputs).toEqual(t.inputs);
    expect(t.readDirectly).toEqual([]);
    // Without the checkpoint the backward does read them (tanh's gradient reads its result, the matmuls' theirs).
    const plain = tx.trace(gradFn(undefined), specs).graph;
    const blockOps: AnyOp[] = plain.ops.filter((o) => o.name === "dot_general" || o.name === "tanh").slice(0, 4);
    const internal = new Set(blockOps.slice(0, 3).flatMap((o) => o.outputs));
    const readers = plain.ops.filter((o) => !blockOps.includes(o) && o.inputs.some((v) => internal.has(v)));
    expect(readers.length).toBeGreaterThan(0);
  });

  it("dotsSaveable: the backward reads the inputs and both matmuls' results; dotsWithNoBatchDims the same here", () => {
    for (const policy of [P.dotsSaveable, P.dotsWithNoBatchDimsSaveable]) {
      const t = traced(policy);
      const dots = [t.blockOps[0]!.outputs[0]!, t.blockOps[2]!.outputs[0]!];
      expect(t.barrier.inputs).toEqual([...t.inputs, ...dots]);
      expect(t.readDirectly).toEqual([]);
    }
  });

  it("saveOnlyTheseNames: only the named value is saved", () => {
    const t = traced(P.saveOnlyTheseNames("h"));
    expect(t.barrier.inputs).toEqual([...t.inputs, t.blockOps[1]!.outputs[0]!]);
    expect(t.readDirectly).toEqual([]);
    expect(traced(P.saveOnlyTheseNames("other")).barrier.inputs).toEqual(t.inputs);
  });

  it("dotsWithNoBatchDimsSaveable recomputes a batched matmul and saves a plain one", () => {
    const f = (a: Tensor, b: Tensor) =>
      tx.valueAndGrad(
        (a: Tensor, b: Tensor) =>
          tx
            .checkpoint(
              (a: Tensor, b: Tensor) => {
                const s = tx.dotGeneral(a, b, { lhsBatch: [0], rhsBatch: [0], lhsContract: [2], rhsContract: [1] });
                return tx.matmul(s.tanh().reshape([2 * 3, 3]), tx.ones([3, 3])).tanh();
              },
              { policy: P.dotsWithNoBatchDimsSaveable },
            )(a, b)
            .sum(),
        { wrt: [0, 1] },
      )(a, b);
    const g = tx.trace(f, [tx.spec("f32", [2, 3, 4]), tx.spec("f32", [2, 4, 3])]).graph;
    const barrier = g.ops.find((o) => o.name === "optimization_barrier")!;
    const saved = barrier.inputs.slice(2);
    expect(saved).toHaveLength(1);
    expect(saved[0]!.type.shape).toEqual([6, 3]);
  });

  it("the recomputation survives the cleanup pipeline's CSE, and optimization_barrier reaches the StableHLO", () => {
    const lowered = (policy: SavePolicy | undefined) => lowerProgram(tx.trace(gradFn(policy), specs));
    const plain = lowered(undefined).graph;
    const none = lowered(P.nothingSaveable);
    const dots = lowered(P.dotsSaveable).graph;
    expect(count(plain, "optimization_barrier")).toBe(0);
    // Both tanhs recomputed; with dotsSaveable the matmuls are not.
    expect(count(none.graph, "tanh")).toBe(count(plain, "tanh") + 2);
    expect(count(none.graph, "dot_general")).toBe(count(plain, "dot_general") + 2);
    expect(count(dots, "tanh")).toBe(count(plain, "tanh") + 2);
    expect(count(dots, "dot_general")).toBe(count(plain, "dot_general"));
    expect(emitProgram(none, "remat")).toMatch(/stablehlo\.optimization_barrier/);
  });

  it("values and gradients are unchanged under every policy (PJRT CPU, f32)", async () => {
    const rand = mulberry32(3);
    const args = [
      array(uniform(N * D, 1, rand), { shape: [N, D] }),
      array(uniform(D * H, 1, rand), { shape: [D, H] }),
      array(uniform(H * O, 1, rand), { shape: [H, O] }),
    ] as const;
    const run = async (policy: SavePolicy | undefined) => {
      const [l, gs] = await jit(gradFn(policy))(...args);
      return [
        await l.item(),
        ...(await Promise.all((gs as { toArray(): Promise<Float32Array> }[]).map((g) => g.toArray()))),
      ];
    };
    const ref = await run(undefined);
    for (const policy of [P.nothingSaveable, P.dotsSaveable, P.saveOnlyTheseNames("h")]) {
      const got = await run(policy);
      expect(Math.abs((got[0] as number) - (ref[0] as number))).toBeLessThan(1e-6);
      for (let i = 1; i < 4; i++) expect(relErr(got[i] as Float32Array, ref[i] as Float32Array)).toBeLessThan(1e-6);
    }
  });

  it("outside a trace it is a usage error naming checkpoint", () => {
    expect(() => tx.checkpoint(block)(...([] as unknown as [Tensor, Tensor, Tensor]))).toThrow(/checkpoint/);
  });
});

describe("the Llama layer under tx.checkpoint (fixture, unrolled, PJRT CPU)", () => {
  let llama: LlamaConfig;
  let base: LlamaWeights<HostTensor>;
  let lora: ReturnType<typeof loraFromAdapter>;
  let expected: Map<string, HostTensor>;
  beforeAll(async () => {
    ({ config: llama, weights: base } = await loadLlamaWeights(FIXTURE, { dtype: "F32" }));
    lora = loraFromAdapter(await loadAdapter(FIXTURE, llama), llama);
    expected = (await readSafetensors(`${FIXTURE}/expected.safetensors`)).tensors;
  });

  it("LoRA gradients are unchanged; each layer is one barrier; dotsSaveable recomputes no matmul", async () => {
    const ADAMW = { lr: 1e-3, beta1: 0.9, beta2: 0.999, eps: 1e-8, weightDecay: 0 };
    const ids = expected.get("input_ids")!;
    const lab = expected.get("labels")!;
    const fn = (remat: SavePolicy | undefined) => {
      const c: StepConfig = { llama, layout: lora.layout, policy: F32, adamw: ADAMW, layers: "unroll", remat };
      return (l: LoraWeights, w: LlamaWeights, tokens: Tensor, labels: Tensor) =>
        tx.valueAndGrad((x: LoraWeights) => loraLoss(c, x, w, { tokens, labels }))(l);
    };
    const run = async (remat: SavePolicy | undefined) => {
      const [loss, grads] = await jit(fn(remat))(
        treeToDevice(lora.weights as never) as never,
        treeToDevice(base as never) as never,
        array(new Int32Array(ids.data.slice().buffer), { shape: ids.shape as number[] }),
        array(new Int32Array(lab.data.slice().buffer), { shape: lab.shape as number[] }),
      );
      const flat = await Promise.all(
        (tx.treeLeaves(grads) as { toArray(): Promise<Float32Array> }[]).map((g) => g.toArray()),
      );
      return { loss: (await loss.item()) as number, grads: flat };
    };
    const ref = await run(undefined);
    for (const policy of [P.nothingSaveable, P.dotsSaveable]) {
      const got = await run(policy);
      expect(Math.abs(got.loss - ref.loss)).toBeLessThan(1e-6);
      for (const [i, g] of got.grads.entries()) expect(relErr(g, ref.grads[i]!), `grad ${i}`).toBeLessThan(1e-6);
    }
    const specs = [
      loraSpecs(lora.layout, llama, "f32"),
      llamaSpecs(llama, "f32"),
      tx.spec("s32", ids.shape as number[]),
      tx.spec("s32", lab.shape as number[]),
    ];
    const lowered = (remat: SavePolicy | undefined) => lowerProgram(tx.trace(fn(remat), specs as never)).graph;
    const plain = lowered(undefined);
    const dots = lowered(P.dotsSaveable);
    expect(count(plain, "optimization_barrier")).toBe(0);
    expect(count(dots, "optimization_barrier")).toBe(llama.numLayers);
    expect(count(dots, "dot_general")).toBe(count(plain, "dot_general"));
    expect(count(lowered(P.nothingSaveable), "dot_general")).toBeGreaterThan(count(plain, "dot_general"));
  });
});
