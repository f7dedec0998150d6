// tx.checkpoint as an IR op: gradients unchanged for every policy (outside a scan, inside one, nested grad); the saved residuals on the IR; the barrier survives CSE; the Llama step's memory.
import { beforeAll, describe, expect, it } from "vitest";
import { array, jit, tx, type Tensor } from "tessera";
import type { AnyOp, Graph, Op } from "../../src/ir/graph.ts";
import { parse } from "../../src/ir/parse.ts";
import { print } from "../../src/ir/print.ts";
import { emitProgram, lowerProgram } from "../../src/frontend/lowering.ts";
import { parsePolicy, policyText, type SavePolicy } from "../../src/passes/remat.ts";
import type { TesseraError } from "../../src/errors.ts";
import { loraFromAdapter, loraSpecs, mulberry32, simpleLoraLayout, type LoraWeights } from "../../models/lora.ts";
import { estimateMemory } from "../../src/passes/memory_estimate.ts";
import { loadLlamaWeights } from "../../models/weights.ts";
import { LLAMA_TINY, llamaSpecs, type LlamaWeights } from "../../models/llama.ts";
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
const POLICIES: [string, SavePolicy][] = [
  ["nothingSaveable", P.nothingSaveable],
  ["dotsSaveable", P.dotsSaveable],
  ["dotsWithNoBatchDimsSaveable", P.dotsWithNoBatchDimsSaveable],
  ["saveOnlyTheseNames(h)", P.saveOnlyTheseNames("h")],
  ["everythingSaveable", P.everythingSaveable],
];

/**
 * The traced (uncleaned) gradient graph: its forward checkpoint op, whose results beyond the block's output are
 * the saved residuals, and the one barrier through which the backward reads the forward.
 */
function traced(policy: SavePolicy) {
  const g = tx.trace(gradFn(policy), specs).graph;
  const fwd = g.ops.filter((o) => o.name === "checkpoint");
  expect(fwd).toHaveLength(1);
  const op = fwd[0] as Op<"checkpoint">;
  expect(count(g, "optimization_barrier")).toBe(1);
  const k = g.ops.findIndex((o) => o.name === "optimization_barrier");
  const barrier = g.ops[k]!;
  const body = op.params.body;
  const bodyOp = (name: string, n: number) => body.ops.filter((o) => o.name === name)[n]!.outputs[0]!;
  // What the body returns beyond the block's result: the values its policy saves.
  const savedInBody = body.outputs.slice(1);
  const residuals = op.outputs.slice(1);
  // Forward values the backward (the ops after the barrier) reads without the barrier: only the block's output
  // (square's own gradient reads it) may be read directly.
  const readDirectly = g.ops.slice(k + 1).flatMap((o) => o.inputs.filter((v) => residuals.includes(v)));
  return { g, op, barrier, body, bodyOp, savedInBody, residuals, readDirectly, inputs: g.inputs };
}

describe("tx.checkpoint: one IR op with a body and its policy", () => {
  it("traces one checkpoint op (body, policy, names) and checkpointName as an op; it prints and parses back", () => {
    const g = tx.trace(lossWith(P.saveOnlyTheseNames("h", "k")), specs).graph;
    expect(g.ops.map((o) => o.name)).toEqual(["checkpoint", "mul", "reduce_sum"]);
    const op = g.ops[0] as Op<"checkpoint">;
    expect(op.params.policy).toBe("saveOnlyTheseNames");
    expect(op.params.names).toEqual(["h", "k"]);
    expect(op.inputs).toEqual(g.inputs);
    const named = op.params.body.ops.filter((o) => o.name === "checkpoint_name") as Op<"checkpoint_name">[];
    expect(named.map((o) => o.params.name)).toEqual(["h"]);
    const text = print(g);
    expect(text).toMatch(/checkpoint .*\{names=\[h,k\], policy=saveOnlyTheseNames\}/);
    expect(print(parse(text))).toBe(text);
    // Without autodiff the lowering inlines it: the program is the block's ops, nothing recomputed or named.
    const lowered = lowerProgram(tx.trace(lossWith(P.nothingSaveable), specs)).graph;
    expect(count(lowered, "checkpoint") + count(lowered, "checkpoint_name")).toBe(0);
    expect(count(lowered, "dot_general")).toBe(2);
    // A closed-over tensor is an operand too (it is differentiated like one).
    const closed = tx.trace(
      (x: Tensor, w1: Tensor, w2: Tensor) =>
        tx
          .checkpoint((x: Tensor) => block(x, w1, w2))(x)
          .sum(),
      specs,
    ).graph;
    expect(closed.ops[0]!.inputs).toEqual(closed.inputs);
  });

  it("a custom_vjp nothing differentiates is its primal body after lowering (sharding propagation sees its ops)", () => {
    const softmaxLike = tx.customVjp((x: Tensor) => x.exp().div(x.exp().sum(-1, { keepdims: true })), {
      fwd: (x: Tensor) => {
        const p = x.exp().div(x.exp().sum(-1, { keepdims: true }));
        return [p, p];
      },
      bwd: (p: Tensor, g: Tensor) => [p.mul(g.sub(g.mul(p).sum(-1, { keepdims: true })))],
    });
    const traced = tx.trace((x: Tensor) => softmaxLike(x).sum(), [tx.spec("f32", [4, 8])]);
    expect(count(traced.graph, "custom_vjp")).toBe(1);
    const lowered = lowerProgram(traced).graph;
    expect(count(lowered, "custom_vjp")).toBe(0);
    expect(count(lowered, "exp")).toBeGreaterThan(0);
  });

  it("nothingSaveable: the forward saves nothing; the backward reads only the operands, through the barrier", () => {
    const t = traced(P.nothingSaveable);
    expect(t.residuals).toEqual([]);
    expect(t.barrier.inputs).toEqual(t.inputs);
    // Without the checkpoint the backward does read the block's values (tanh's gradient reads its result).
    const plain = tx.trace(gradFn(undefined), specs).graph;
    const blockOps: AnyOp[] = plain.ops.filter((o) => o.name === "dot_general" || o.name === "tanh").slice(0, 4);
    const internal = new Set(blockOps.slice(0, 3).flatMap((o) => o.outputs));
    const readers = plain.ops.filter((o) => !blockOps.includes(o) && o.inputs.some((v) => internal.has(v)));
    expect(readers.length).toBeGreaterThan(0);
  });

  it("dotsSaveable and dotsWithNoBatchDimsSaveable save both matmuls' results (no batch dims here)", () => {
    for (const policy of [P.dotsSaveable, P.dotsWithNoBatchDimsSaveable]) {
      const t = traced(policy);
      expect(t.savedInBody).toEqual([t.bodyOp("dot_general", 0), t.bodyOp("dot_general", 1)]);
      expect(t.residuals.map((v) => v.type.shape)).toEqual([
        [N, H],
        [N, O],
      ]);
      expect(t.barrier.inputs).toEqual([...t.inputs, ...t.residuals]);
      expect(t.readDirectly).toEqual([]);
    }
  });

  it("saveOnlyTheseNames saves only the named value", () => {
    const t = traced(P.saveOnlyTheseNames("h"));
    expect(t.savedInBody).toEqual([t.bodyOp("checkpoint_name", 0)]);
    expect(t.barrier.inputs).toEqual([...t.inputs, ...t.residuals]);
    expect(t.readDirectly).toEqual([]);
    expect(traced(P.saveOnlyTheseNames("other")).residuals).toEqual([]);
  });

  it("everythingSaveable is differentiation without the checkpoint: no barrier, nothing recomputed", () => {
    const g = tx.trace(gradFn(P.everythingSaveable), specs).graph;
    expect(count(g, "checkpoint") + count(g, "optimization_barrier")).toBe(0);
    const plain = lowerProgram(tx.trace(gradFn(undefined), specs)).graph;
    const all = lowerProgram(tx.trace(gradFn(P.everythingSaveable), specs)).graph;
    expect(count(all, "dot_general")).toBe(count(plain, "dot_general"));
    expect(count(all, "tanh")).toBe(count(plain, "tanh"));
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

  it("values and gradients are unchanged under every policy (PJRT CPU, f32, 1e-6)", async () => {
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
    for (const [name, policy] of POLICIES) {
      const got = await run(policy);
      expect(Math.abs((got[0] as number) - (ref[0] as number)), name).toBeLessThan(1e-6);
      for (let i = 1; i < 4; i++)
        expect(relErr(got[i] as Float32Array, ref[i] as Float32Array), name).toBeLessThan(1e-6);
    }
  });

  it("policies as text round-trip (policyText, parsePolicy); an unknown one is a usage error listing the valid", () => {
    for (const [, policy] of POLICIES) expect(parsePolicy(policyText(policy))).toEqual(policy);
    expect(policyText(P.saveOnlyTheseNames("q", "k"))).toBe("saveOnlyTheseNames(q,k)");
    expect(parsePolicy(" saveOnlyTheseNames( q , k ) ")).toEqual(P.saveOnlyTheseNames("q", "k"));
    for (const bad of ["dots", "nothingSaveable(x)", "saveOnlyTheseNames", ""]) {
      expect(() => parsePolicy(bad)).toThrow(/unknown remat policy .*valid: nothingSaveable, dotsSaveable/);
      try {
        parsePolicy(bad);
      } catch (e) {
        expect((e as TesseraError).exitCode).toBe(2);
      }
    }
  });

  it("outside a trace it is a usage error naming checkpoint; a policy that is not one is refused", () => {
    expect(() => tx.checkpoint(block)(...([] as unknown as [Tensor, Tensor, Tensor]))).toThrow(/checkpoint/);
    expect(() => tx.checkpoint(block, { policy: (() => true) as never })).toThrow(/tx\.checkpointPolicies/);
  });
});

describe("tx.checkpoint inside a scan body and under nested grad", () => {
  const L = 3;
  /** A residual layer over stacked weights [L, D, D]: h + tanh(tanh(h·w named "h")·w). */
  const layer = (h: Tensor, w: Tensor): Tensor => {
    const a = tx.checkpointName(tx.matmul(h, w).tanh(), "h");
    return h.add(tx.matmul(a, w).tanh());
  };
  const scanLoss = (policy: SavePolicy | undefined) => (h0: Tensor, ws: Tensor) => {
    const body = (h: Tensor, w: Tensor): [Tensor, null] => [
      policy ? tx.checkpoint(layer, { policy })(h, w) : layer(h, w),
      null,
    ];
    const [h] = tx.scan(body, h0, ws);
    return h.square().sum();
  };
  const scanGrad = (policy: SavePolicy | undefined) => (h0: Tensor, ws: Tensor) =>
    tx.valueAndGrad(scanLoss(policy), { wrt: [0, 1] })(h0, ws);
  const scanSpecs = [tx.spec("f32", [N, D]), tx.spec("f32", [L, D, D])];
  const scans = (g: Graph) => g.ops.filter((o) => o.name === "scan") as Op<"scan">[];

  it("the forward scan stacks what the policy saves; the backward scan body reads it through a barrier (none for nothingSaveable)", () => {
    const ys = (policy: SavePolicy) => {
      const g = tx.trace(scanGrad(policy), scanSpecs).graph;
      const [fwd, bwd] = scans(g);
      // A policy that saves nothing needs no barrier: the backward loop is the recomputation, its forward copy ran
      // in the other loop.
      expect(count(bwd!.params.body, "optimization_barrier")).toBe(policy === P.nothingSaveable ? 0 : 1);
      // Forward scan results: the final carry, the stacked carries (what every scan saves), then the residuals.
      return fwd!.outputs.slice(2).map((v) => v.type.shape);
    };
    expect(ys(P.nothingSaveable)).toEqual([]);
    expect(ys(P.dotsSaveable)).toEqual([
      [L, N, D],
      [L, N, D],
    ]);
    expect(ys(P.saveOnlyTheseNames("h"))).toEqual([[L, N, D]]);
    // No checkpoint: as JAX's scan, the forward scan saves what the backward reads (both tanh results; the
    // checkpoint_name is a view of the first, not stored twice), so the backward scan recomputes nothing.
    const [plainFwd, plainBwd] = scans(tx.trace(scanGrad(undefined), scanSpecs).graph);
    expect(plainFwd!.outputs.slice(2).map((v) => v.type.shape)).toEqual([
      [L, N, D],
      [L, N, D],
    ]);
    expect(count(plainBwd!.params.body, "tanh")).toBe(0);
    // In the lowered program the barrier is in the backward loop body; with dotsSaveable no matmul is recomputed.
    const lowered = (policy: SavePolicy | undefined) => lowerProgram(tx.trace(scanGrad(policy), scanSpecs)).graph;
    const dotsIn = (g: Graph) => scans(g).reduce((s, o) => s + count(o.params.body, "dot_general"), 0);
    const barriersIn = (g: Graph) => scans(g).reduce((s, o) => s + count(o.params.body, "optimization_barrier"), 0);
    expect(barriersIn(lowered(undefined))).toBe(0);
    expect(barriersIn(lowered(P.nothingSaveable))).toBe(0);
    expect(barriersIn(lowered(P.dotsSaveable))).toBe(1);
    // Forward 2 matmuls, backward 4: no checkpoint and dotsSaveable recompute none, nothingSaveable both.
    expect(dotsIn(lowered(undefined))).toBe(6);
    expect(dotsIn(lowered(P.dotsSaveable))).toBe(6);
    expect(dotsIn(lowered(P.nothingSaveable))).toBe(8);
    expect(emitProgram(lowerProgram(tx.trace(scanGrad(P.dotsSaveable), scanSpecs)), "remat_scan")).toMatch(
      /stablehlo\.optimization_barrier/,
    );
  });

  it("gradients through a scan of checkpointed layers equal the plain ones for every policy (PJRT CPU, 1e-6)", async () => {
    const rand = mulberry32(5);
    const args = [
      array(uniform(N * D, 1, rand), { shape: [N, D] }),
      array(uniform(L * D * D, 0.5, rand), { shape: [L, D, D] }),
    ] as const;
    const run = async (policy: SavePolicy | undefined) => {
      const [l, gs] = await jit(scanGrad(policy))(...args);
      return [await l.item(), ...(await Promise.all((gs as DeviceArrayLike[]).map((g) => g.toArray())))];
    };
    const ref = await run(undefined);
    for (const [name, policy] of POLICIES) {
      const got = await run(policy);
      expect(Math.abs((got[0] as number) - (ref[0] as number)), name).toBeLessThan(1e-6);
      for (let i = 1; i < 3; i++)
        expect(relErr(got[i] as Float32Array, ref[i] as Float32Array), name).toBeLessThan(1e-6);
    }
  });

  it("nested grad: the inner gradient's forward stays a checkpoint op, rematerialized again by the outer grad", async () => {
    // outer(x, w1, w2) = sum(d loss / dx ^ 2), differentiated with respect to all three.
    const outer = (policy: SavePolicy | undefined) => (x: Tensor, w1: Tensor, w2: Tensor) =>
      tx.valueAndGrad(
        (x: Tensor, w1: Tensor, w2: Tensor) => {
          const [, [gx]] = tx.valueAndGrad(lossWith(policy), { wrt: [0] })(x, w1, w2) as [Tensor, Tensor[]];
          return gx!.square().sum();
        },
        { wrt: [0, 1, 2] },
      )(x, w1, w2);
    const g = tx.trace(outer(P.nothingSaveable), specs).graph;
    // The inner grad's recomputation barrier, its transpose, and the outer remat of the inner forward.
    expect(count(g, "optimization_barrier")).toBeGreaterThanOrEqual(3);
    expect(count(g, "checkpoint")).toBe(1);
    const rand = mulberry32(9);
    const args = [
      array(uniform(N * D, 1, rand), { shape: [N, D] }),
      array(uniform(D * H, 1, rand), { shape: [D, H] }),
      array(uniform(H * O, 1, rand), { shape: [H, O] }),
    ] as const;
    const run = async (policy: SavePolicy | undefined) => {
      const [l, gs] = await jit(outer(policy))(...args);
      return [await l.item(), ...(await Promise.all((gs as DeviceArrayLike[]).map((g) => g.toArray())))];
    };
    const ref = await run(undefined);
    for (const [name, policy] of POLICIES) {
      const got = await run(policy);
      expect(Math.abs((got[0] as number) - (ref[0] as number)) / Math.abs(ref[0] as number), name).toBeLessThan(1e-6);
      for (let i = 1; i < 4; i++)
        expect(relErr(got[i] as Float32Array, ref[i] as Float32Array), name).toBeLessThan(1e-6);
    }
  });

  it("vmap of per-example gradients through a checkpoint (the op's batching rule) equals them without it", async () => {
    // Per-example gradients of the block's loss wrt w1, over 3 examples of x.
    const perExample = (policy: SavePolicy | undefined) => (xs: Tensor, w1: Tensor, w2: Tensor) =>
      tx.vmap(
        (x: Tensor) => tx.valueAndGrad(lossWith(policy), { wrt: [1] })(x.reshape([1, D]), w1, w2)[1][0] as Tensor,
        {},
      )(xs);
    const g = tx.trace(perExample(P.nothingSaveable), [tx.spec("f32", [3, D]), specs[1]!, specs[2]!]).graph;
    expect(count(g, "optimization_barrier")).toBe(1);
    const rand = mulberry32(11);
    const args = [
      array(uniform(3 * D, 1, rand), { shape: [3, D] }),
      array(uniform(D * H, 1, rand), { shape: [D, H] }),
      array(uniform(H * O, 1, rand), { shape: [H, O] }),
    ] as const;
    const ref = await ((await jit(perExample(undefined))(...args)) as DeviceArrayLike).toArray();
    expect(ref.length).toBe(3 * D * H);
    for (const [name, policy] of POLICIES) {
      const got = await ((await jit(perExample(policy))(...args)) as DeviceArrayLike).toArray();
      expect(relErr(got, ref), name).toBeLessThan(1e-6);
    }
  });
});

type DeviceArrayLike = { toArray(): Promise<Float32Array> };

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

  it("LoRA gradients are unchanged, unrolled and scanned; each layer is one barrier; dotsSaveable recomputes no matmul", async () => {
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

    // Scanned layers (the models/llama.ts default for large models): the checkpoint sits in the scan body.
    const scanned = (remat: SavePolicy | undefined) => {
      const c: StepConfig = { llama, layout: lora.layout, policy: F32, adamw: ADAMW, layers: "scan", remat };
      return (l: LoraWeights, w: LlamaWeights, tokens: Tensor, labels: Tensor) =>
        tx.valueAndGrad((x: LoraWeights) => loraLoss(c, x, w, { tokens, labels }))(l);
    };
    const runScan = async (remat: SavePolicy | undefined) => {
      const [loss, grads] = await jit(scanned(remat))(
        treeToDevice(lora.weights as never) as never,
        treeToDevice(base as never) as never,
        array(new Int32Array(ids.data.slice().buffer), { shape: ids.shape as number[] }),
        array(new Int32Array(lab.data.slice().buffer), { shape: lab.shape as number[] }),
      );
      const flat = await Promise.all((tx.treeLeaves(grads) as DeviceArrayLike[]).map((g) => g.toArray()));
      return { loss: (await loss.item()) as number, grads: flat };
    };
    const scanRef = await runScan(undefined);
    for (const policy of [P.nothingSaveable, P.dotsSaveable]) {
      const got = await runScan(policy);
      expect(Math.abs(got.loss - scanRef.loss)).toBeLessThan(1e-6);
      for (const [i, g] of got.grads.entries())
        expect(relErr(g, scanRef.grads[i]!), `scan grad ${i}`).toBeLessThan(1e-6);
    }
    const scanBarriers = lowerProgram(tx.trace(scanned(P.dotsSaveable), specs as never))
      .graph.ops.filter((o) => o.name === "scan")
      .map((o) => count((o as Op<"scan">).params.body, "optimization_barrier"));
    expect(scanBarriers).toContain(1);
  });
});

describe("memory_estimate of a Llama LoRA step with remat (8 layers, E 64, B 2, S 256, f32, shapes only)", () => {
  it("nothingSaveable keeps a fraction of the activations, unrolled or scanned; a scan without checkpoint saves as much as unrolled layers", () => {
    const llama = { ...LLAMA_TINY, numLayers: 8, hiddenSize: 64, intermediateSize: 160, maxPositionEmbeddings: 4096 };
    const layout = simpleLoraLayout(llama, { r: 4, alpha: 8, targets: ["q", "v"] });
    const ADAMW = { lr: 1e-3, beta1: 0.9, beta2: 0.999, eps: 1e-8, weightDecay: 0 };
    // S 256: at 512 the [S, S] attention matrices outweigh the rest (dotsSaveable keeps the scores, a dot output,
    // on top of what the softmax keeps).
    const [B, S] = [2, 256];
    const MiB = 2 ** 20;
    const peak = (layers: "scan" | "unroll", remat: SavePolicy | undefined) => {
      const c: StepConfig = { llama, layout, policy: F32, adamw: ADAMW, layers, remat, attention: "plain" };
      const f = (l: LoraWeights, w: LlamaWeights, tokens: Tensor, labels: Tensor) =>
        tx.valueAndGrad((x: LoraWeights) => loraLoss(c, x, w, { tokens, labels }))(l);
      const specs = [
        loraSpecs(layout, llama, "f32"),
        llamaSpecs(llama, "f32"),
        tx.spec("s32", [B, S]),
        tx.spec("s32", [B, S]),
      ];
      return estimateMemory(lowerProgram(tx.trace(f, specs as never)).graph).total / MiB;
    };
    const figures = {
      unroll: [peak("unroll", undefined), peak("unroll", P.nothingSaveable), peak("unroll", P.dotsSaveable)],
      scan: [peak("scan", undefined), peak("scan", P.nothingSaveable), peak("scan", P.dotsSaveable)],
    };
    for (const [k, [none, nothing, dots]] of Object.entries(figures))
      console.log(
        `${k}: peak MiB none ${none!.toFixed(2)}, nothingSaveable ${nothing!.toFixed(2)}, dotsSaveable ${dots!.toFixed(2)}`,
      );
    // dotsSaveable keeps the matmul outputs: far more than nothingSaveable, and about what no policy keeps, since
    // the layer's softmax and SwiGLU custom VJPs already keep little besides matmul outputs (within 10%).
    const [uNone, uNothing, uDots] = figures.unroll;
    expect(uNothing!).toBeLessThan(uNone! / 4);
    expect(uDots!).toBeLessThan(uNone! * 1.1);
    expect(uDots!).toBeGreaterThan(uNothing! * 3);
    // Scanned, as JAX's scan: without a checkpoint the forward scan stacks every residual of the layer (about what
    // unrolled layers keep alive, plus the stacked buffers); nothingSaveable stacks only the carries and the
    // backward scan recomputes each layer from them; dotsSaveable lies between.
    const [sNone, sNothing, sDots] = figures.scan;
    expect(sNothing!).toBeLessThan(sNone! / 4);
    expect(sDots!).toBeGreaterThan(sNothing! * 3);
    expect(sDots!).toBeLessThan(sNone! * 1.1);
    expect(sNone!).toBeGreaterThan(uNone! * 0.8);
    expect(sNone!).toBeLessThan(uNone! * 1.2);
  });
});
