// Blockwise (flash) attention against plain attention on PJRT CPU: values and dq/dk/dv, odd lengths, ragged blocks, GQA, segments.
import { describe, expect, it } from "vitest";
import { jit, tx, type Tensor } from "tessera";
import { getClient } from "../../src/backend/runtime/index.ts";
import { fromFloat32, fromTypedArray, toFloat32, type HostTensor } from "../../src/formats/host_tensor.ts";
import { interpretOnHost, pjrtOnHost } from "../../src/parity/execute.ts";
import { mulberry32 } from "../../models/lora.ts";
import { blockPairs, blockwiseAttention, plainAttention, type BlockwiseOpts } from "../../models/attention.ts";
import { TesseraError } from "../../src/errors.ts";
import { estimateMemory } from "../../src/passes/memory_estimate.ts";
import { subgraphs, type Graph } from "../../src/ir/graph.ts";
import { graphCost } from "../../src/ir/cost.ts";
import { runPasses } from "../../src/passes/manager.ts";
import { CLEANUP_PIPELINE } from "../../src/passes/pipeline.ts";
import { i32, uniform, batch, randomAdapter } from "./helpers.ts";
import { LLAMA_TINY, llamaLogits, llamaSpecs, resolveAttention, type LlamaWeights } from "../../models/llama.ts";
import { defaultAttention, PLAIN_MAX_SEQ } from "../../models/attention.ts";
import { loraFromAdapter, loraSpecs, type LoraWeights } from "../../models/lora.ts";
import { builtinBaseWeights } from "../../src/train/loop.ts";
import { flatten } from "../../src/frontend/tree.ts";
import { isHostTensor } from "../../src/host/transfer.ts";
import { makeLoraConfig } from "../../src/formats/peft.ts";
import { loraLoss, type StepConfig } from "../../src/train/step.ts";
import { F32 } from "../../src/train/precision.ts";
import { ADAMW_DEFAULTS } from "../../src/train/adamw.ts";

interface Case {
  S: number;
  Hq: number;
  Hkv: number;
  blockQ: number;
  blockK: number;
  causal: boolean;
  segments: boolean;
}

const B = 2,
  D = 4;

function inputs(c: Case, seed: number) {
  const rand = mulberry32(seed);
  const t = (h: number) => fromFloat32(uniform(B * c.S * h * D, 1.5, rand), [B, c.S, h, D]);
  // Segments of uneven lengths, different per batch row: [0,0,0,1,1,2,...] and [0,1,1,1,...].
  const seg = new Int32Array(B * c.S);
  for (let b = 0; b < B; b++)
    for (let s = 0; s < c.S; s++) seg[b * c.S + s] = b === 0 ? Math.floor(s / 3) : s === 0 ? 0 : 1 + Math.floor(s / 5);
  const segT = fromTypedArray("I32", [B, c.S], seg);
  // A random cotangent makes the loss sum(out * w) exercise every output element with a different weight.
  const w = fromFloat32(uniform(B * c.S * c.Hq * D, 1, rand), [B, c.S, c.Hq, D]);
  return { q: t(c.Hq), k: t(c.Hkv), v: t(c.Hkv), seg: segT, w };
}

type Attn = (q: Tensor, k: Tensor, v: Tensor, seg: Tensor) => Tensor;

/** [out, dq, dk, dv] of attention `f` under the loss sum(out * w). */
function withGrads(f: Attn) {
  return (q: Tensor, k: Tensor, v: Tensor, seg: Tensor, w: Tensor) => {
    const loss = (q: Tensor, k: Tensor, v: Tensor) => f(q, k, v, seg).mul(w).sum();
    const [, g] = tx.valueAndGrad(loss, { wrt: [0, 1, 2] })(q, k, v);
    return [f(q, k, v, seg), ...(g as Tensor[])];
  };
}

function maxAbsDiff(a: Float32Array, b: Float32Array): number {
  expect(a.length).toBe(b.length);
  let m = 0;
  for (let i = 0; i < a.length; i++) m = Math.max(m, Math.abs(a[i]! - b[i]!));
  return m;
}

async function compare(c: Case, seed: number): Promise<number> {
  const x = inputs(c, seed);
  const opts = (seg: Tensor): BlockwiseOpts => ({
    causal: c.causal,
    ...(c.segments ? { segmentIds: seg } : {}),
    blockQ: c.blockQ,
    blockK: c.blockK,
  });
  const plain: Attn = (q, k, v, seg) => plainAttention(q, k, v, opts(seg));
  const block: Attn = (q, k, v, seg) => blockwiseAttention(q, k, v, opts(seg));
  const args = [x.q, x.k, x.v, x.seg, x.w];
  const want = (await pjrtOnHost(withGrads(plain), args)) as HostTensor[];
  const got = (await pjrtOnHost(withGrads(block), args)) as HostTensor[];
  let worst = 0;
  ["out", "dq", "dk", "dv"].forEach((name, i) => {
    const err = maxAbsDiff(toFloat32(got[i]!), toFloat32(want[i]!));
    expect(err, `${name} of ${JSON.stringify(c)}`).toBeLessThanOrEqual(1e-5);
    worst = Math.max(worst, err);
  });
  return worst;
}

const CASES: Case[] = [
  // odd lengths, blocks that do not divide S, GQA ratios 1, 2 and 4, with and without segments
  { S: 7, Hq: 2, Hkv: 2, blockQ: 3, blockK: 2, causal: true, segments: false },
  { S: 7, Hq: 4, Hkv: 2, blockQ: 4, blockK: 3, causal: true, segments: true },
  { S: 13, Hq: 4, Hkv: 1, blockQ: 5, blockK: 4, causal: true, segments: false },
  { S: 13, Hq: 2, Hkv: 2, blockQ: 4, blockK: 6, causal: true, segments: true },
  { S: 33, Hq: 4, Hkv: 2, blockQ: 8, blockK: 5, causal: true, segments: false },
  { S: 33, Hq: 8, Hkv: 2, blockQ: 7, blockK: 16, causal: true, segments: true },
  { S: 33, Hq: 2, Hkv: 2, blockQ: 33, blockK: 33, causal: true, segments: true },
  // without the causal mask: every key block is live, rescaling happens at every step
  { S: 13, Hq: 4, Hkv: 2, blockQ: 4, blockK: 3, causal: false, segments: false },
  { S: 13, Hq: 4, Hkv: 1, blockQ: 6, blockK: 5, causal: false, segments: true },
];

describe("blockwiseAttention", () => {
  it.each(CASES.map((c, i) => [i, c] as const))("equals plain attention, value and dq/dk/dv, case %i", async (i, c) => {
    const worst = await compare(c, 10 + i);
    console.log(`case ${i} ${JSON.stringify(c)}: max |blockwise - plain| ${worst.toExponential(2)}`);
  });

  it("in bf16 (the training default) value and dq/dk/dv stay within bf16 rounding of plain attention in f32", async () => {
    const c: Case = { S: 33, Hq: 8, Hkv: 2, blockQ: 8, blockK: 16, causal: true, segments: true };
    const x = inputs(c, 21);
    const run = (attn: typeof plainAttention, dtype: "bf16" | "f32") =>
      pjrtOnHost(
        withGrads((q, k, v, seg) =>
          attn(q.astype(dtype), k.astype(dtype), v.astype(dtype), {
            causal: true,
            segmentIds: seg,
            blockQ: c.blockQ,
            blockK: c.blockK,
          } as BlockwiseOpts).astype("f32"),
        ),
        [x.q, x.k, x.v, x.seg, x.w],
      ) as Promise<HostTensor[]>;
    const want = await run(plainAttention, "f32");
    const got = await run(blockwiseAttention, "bf16");
    ["out", "dq", "dk", "dv"].forEach((name, i) => {
      const [a, b] = [toFloat32(got[i]!), toFloat32(want[i]!)];
      const scale = Math.max(...b.map(Math.abs));
      // 8 significant bits: inputs, P and dS are rounded to bf16 before their matmuls
      expect(maxAbsDiff(a, b), name).toBeLessThanOrEqual(scale * 2 ** -5);
    });
  });

  it("grad of grad: an outer gradient through flash attention's backward equals plain attention's", async () => {
    const c: Case = { S: 13, Hq: 4, Hkv: 2, blockQ: 4, blockK: 6, causal: true, segments: true };
    const x = inputs(c, 33);
    const second = (attn: typeof plainAttention) => (q: Tensor, k: Tensor, v: Tensor, seg: Tensor, w: Tensor) => {
      const o = { causal: true, segmentIds: seg, blockQ: c.blockQ, blockK: c.blockK };
      // d/d(q, k, v) of sum(dq ∘ w'), dq the gradient of sum(out ∘ w): a Hessian-vector product
      const dq = (q: Tensor, k: Tensor, v: Tensor) =>
        tx.grad((q: Tensor) => attn(q, k, v, o).mul(w).sum())(q) as unknown as Tensor;
      const [, g] = tx.valueAndGrad((q: Tensor, k: Tensor, v: Tensor) => dq(q, k, v).mul(w).sum(), {
        wrt: [0, 1, 2],
      })(q, k, v);
      return g as Tensor[];
    };
    const args = [x.q, x.k, x.v, x.seg, x.w];
    const want = (await pjrtOnHost(second(plainAttention), args)) as HostTensor[];
    const got = (await pjrtOnHost(second(blockwiseAttention), args)) as HostTensor[];
    ["d2q", "d2k", "d2v"].forEach((name, i) => {
      const [a, b] = [toFloat32(got[i]!), toFloat32(want[i]!)];
      expect(Math.max(...b.map(Math.abs)), name).toBeGreaterThan(1e-3);
      expect(maxAbsDiff(a, b), name).toBeLessThanOrEqual(1e-4);
    });
  });

  it("the reference interpreter agrees with plain attention too (float64 kernels, S=7, GQA 2)", () => {
    const c = CASES[1]!;
    const x = inputs(c, 3);
    const o = { causal: true, blockQ: 4, blockK: 3 };
    const [p, b] = interpretOnHost(
      (q: Tensor, k: Tensor, v: Tensor, seg: Tensor) => [
        plainAttention(q, k, v, { ...o, segmentIds: seg }),
        blockwiseAttention(q, k, v, { ...o, segmentIds: seg }),
      ],
      [x.q, x.k, x.v, x.seg],
    ) as HostTensor[];
    expect(maxAbsDiff(toFloat32(b!), toFloat32(p!))).toBeLessThanOrEqual(1e-6);
  });

  it("never builds an [S, S] score matrix: the largest f32 block is [B, Hkv, blockQ, G, blockK]", () => {
    const S = 64;
    const { graph } = tx.trace(
      (q: Tensor, k: Tensor, v: Tensor) => blockwiseAttention(q, k, v, { causal: true, blockQ: 8, blockK: 16 }),
      [tx.spec("f32", [1, S, 4, D]), tx.spec("f32", [1, S, 2, D]), tx.spec("f32", [1, S, 2, D])],
    );
    const sizes: number[] = [];
    const walk = (g: typeof graph) => {
      for (const op of g.ops) {
        for (const out of op.outputs) sizes.push(out.type.shape.reduce((a, b) => a * b, 1));
        for (const g of subgraphs(op)) walk(g);
      }
    };
    walk(graph);
    // one block of scores is [1, 2, 8, 2, 16] (512 elements); plain attention's [1, 2, 64, 2, 64] has 16384
    expect(sizes).toContain(512);
    expect(Math.max(...sizes)).toBe(S * 4 * D); // q, its blocks and the output are the largest values
  });

  it("memory of forward + dq/dk/dv grows linearly in S (estimateMemory): 4x the tokens, under 5x the temporaries", () => {
    // Llama-2-7B-like GQA heads (32 over 8, D 128), blocks of 128; plain attention's grow 15x (the [S, S] scores)
    const temporaries = (S: number, kind: "plain" | "blockwise") => {
      const attn = (q: Tensor, k: Tensor, v: Tensor) =>
        kind === "plain"
          ? plainAttention(q, k, v, { causal: true })
          : blockwiseAttention(q, k, v, { causal: true, blockQ: 128, blockK: 128 });
      const f = (q: Tensor, k: Tensor, v: Tensor, w: Tensor) =>
        tx.valueAndGrad((q: Tensor, k: Tensor, v: Tensor) => attn(q, k, v).mul(w).sum(), { wrt: [0, 1, 2] })(q, k, v);
      const [q, kv] = [tx.spec("f32", [1, S, 32, 128]), tx.spec("f32", [1, S, 8, 128])];
      return estimateMemory(runPasses(tx.trace(f, [q, kv, kv, q]).graph, CLEANUP_PIPELINE)).temporaries;
    };
    const MiB = 2 ** 20;
    const [p1, p4] = [temporaries(1024, "plain"), temporaries(4096, "plain")];
    const [b1, b4] = [temporaries(1024, "blockwise"), temporaries(4096, "blockwise")];
    console.log(
      `fwd+bwd temporaries, MiB: plain S=1024 ${(p1 / MiB).toFixed(1)}, S=4096 ${(p4 / MiB).toFixed(1)}; blockwise S=1024 ${(b1 / MiB).toFixed(1)}, S=4096 ${(b4 / MiB).toFixed(1)}`,
    );
    expect(p4 / p1).toBeGreaterThan(14);
    expect(b4 / b1).toBeLessThan(5);
    expect(b4).toBeLessThan(p4 / 10);
  });

  it("XLA's compiled dq/dk/dv program at S=4096 holds one q-sized temporary (the saved output), not dO∘O or copies", async () => {
    const S = 4096;
    const f = (q: Tensor, k: Tensor, v: Tensor, w: Tensor) =>
      tx.grad(
        (q: Tensor, k: Tensor, v: Tensor) =>
          blockwiseAttention(q, k, v, { causal: true, blockQ: 128, blockK: 128 }).mul(w).sum(),
        { wrt: [0, 1, 2] },
      )(q, k, v);
    const [q, kv] = [tx.spec("f32", [1, S, 32, 128]), tx.spec("f32", [1, S, 8, 128])];
    const client = await getClient();
    const exe = await client.compile(jit(f).lower(q, kv, kv, q).stablehlo, { device: client.devices[0]!.id });
    const MiB = 2 ** 20;
    const temp = exe.memoryStats!.tempBytes / MiB;
    console.log(`XLA CPU temp bytes of blockwise dq/dk/dv at S=${S}: ${temp.toFixed(1)} MiB (q is 64 MiB)`);
    // the saved output (64 MiB, reused for dq's accumulator) plus a few [B, Hkv, 128, G, 128] blocks
    expect(temp).toBeGreaterThanOrEqual(64);
    expect(temp).toBeLessThan(80);
  });

  it("causal attention skips the key blocks above the diagonal: about half the FLOPs of non-causal at S=4096", () => {
    // graphCost counts a scan's body once per step: the trip count is the number of live block pairs
    const flops = (causal: boolean, grad: boolean) => {
      const attn = (q: Tensor, k: Tensor, v: Tensor) =>
        blockwiseAttention(q, k, v, { causal, blockQ: 128, blockK: 128 });
      const f = grad
        ? (q: Tensor, k: Tensor, v: Tensor, w: Tensor) =>
            tx.valueAndGrad((q: Tensor, k: Tensor, v: Tensor) => attn(q, k, v).mul(w).sum(), { wrt: [0, 1, 2] })(
              q,
              k,
              v,
            )
        : (q: Tensor, k: Tensor, v: Tensor, _w: Tensor) => attn(q, k, v);
      const [q, kv] = [tx.spec("f32", [1, 4096, 32, 128]), tx.spec("f32", [1, 4096, 8, 128])];
      return graphCost(runPasses(tx.trace(f, [q, kv, kv, q]).graph, CLEANUP_PIPELINE)).total.flops;
    };
    const GF = 1e9;
    const [fc, fn, gc, gn] = [flops(true, false), flops(false, false), flops(true, true), flops(false, true)];
    console.log(
      `S=4096 GFLOPs: forward causal ${(fc / GF).toFixed(1)} vs full ${(fn / GF).toFixed(1)}; fwd+bwd causal ${(gc / GF).toFixed(1)} vs full ${(gn / GF).toFixed(1)}`,
    );
    // 32 query blocks: 528 live pairs of 1024, plus the O(S) work outside the scans
    expect(fc / fn).toBeGreaterThan(0.5);
    expect(fc / fn).toBeLessThan(0.53);
    expect(gc / gn).toBeGreaterThan(0.5);
    expect(gc / gn).toBeLessThan(0.53);
    // the four score-sized matmuls of FlashAttention-2's backward (QKᵀ, dO·Vᵀ, dS·K, dSᵀQ) plus PᵀdO: 5 vs forward's 2
    const matmul = 2 * 2 * 4096 * 4096 * 32 * 128;
    expect(fn).toBeGreaterThan(matmul);
    expect(gn).toBeLessThan(1.1 * (7 / 2) * matmul);
  });

  it("blockPairs: every live pair once, grouped by query block (forward) or key block (backward)", () => {
    const key = (p: { i: number[]; j: number[] }) => p.i.map((i, n) => `${i},${p.j[n]}`);
    // S=13 in query blocks of 5 (rows 0-4, 5-9, 10-14) and key blocks of 4 (keys 0-3, 4-7, 8-11, 12-15)
    const fwd = blockPairs(3, 4, 5, 4, true, true);
    expect(key(fwd)).toEqual(["0,0", "0,1", "1,0", "1,1", "1,2", "2,0", "2,1", "2,2", "2,3"]);
    expect(fwd.first).toEqual([true, false, true, false, false, true, false, false, false]);
    const bwd = blockPairs(3, 4, 5, 4, true, false);
    expect(key(bwd)).toEqual(["0,0", "1,0", "2,0", "0,1", "1,1", "2,1", "1,2", "2,2", "2,3"]);
    expect(bwd.first).toEqual([true, false, false, true, false, false, true, false, true]);
    expect(blockPairs(3, 4, 5, 4, false, true).i.length).toBe(12);
  });

  it("rejects bad shapes and block sizes with a TesseraError naming the op", () => {
    const trace = (q: number[], k: number[], opts: Partial<BlockwiseOpts> = {}) =>
      tx.trace(
        (q: Tensor, k: Tensor) => blockwiseAttention(q, k, k, { causal: true, ...opts }),
        [tx.spec("f32", q), tx.spec("f32", k)],
      );
    expect(() => trace([1, 8, 3, 4], [1, 8, 2, 4])).toThrow(/blockwiseAttention: query heads 3 must be a multiple/);
    expect(() => trace([1, 8, 4, 4], [1, 7, 2, 4])).toThrow(/k and v must be \[1, 8, Hkv, 4\]/);
    expect(() => trace([1, 8, 4, 4], [1, 8, 2, 4], { blockK: 0 })).toThrow(TesseraError);
    expect(() => trace([1, 8, 4, 4], [1, 8, 2, 4], { blockQ: 2.5 })).toThrow(/blockQ must be a positive integer/);
  });
});

type HostTree = Parameters<typeof pjrtOnHost>[1][number];

describe("Llama with blockwise attention", () => {
  const cfg = LLAMA_TINY; // 4 query heads over 2 KV heads
  const S = 13;
  const data = batch(2, S, cfg.vocabSize, 3);
  const base = builtinBaseWeights(cfg, 0);
  const lora = loraFromAdapter(
    randomAdapter(cfg, makeLoraConfig({ r: 2, loraAlpha: 4, targetModules: ["q_proj", "k_proj", "v_proj"] }), 4),
    cfg,
  );

  it("logits, LoRA loss and LoRA gradients equal plain attention's (S=13, blocks of 4, f32, PJRT CPU)", async () => {
    const run = (attention: "plain" | "blockwise") => {
      const c: StepConfig = { llama: cfg, layout: lora.layout, policy: F32, adamw: ADAMW_DEFAULTS, attention };
      return pjrtOnHost(
        (w: LlamaWeights, l: LoraWeights, t: Tensor, y: Tensor) => {
          const logits = llamaLogits(cfg, w, t, { attention, attentionBlock: 4 });
          const [loss, g] = tx.valueAndGrad((l: LoraWeights) => loraLoss(c, l, w, { tokens: t, labels: y }))(l);
          return [logits, loss, g];
        },
        [base as unknown as HostTree, lora.weights as HostTree, i32(data.tokens), i32(data.labels)],
      ) as Promise<unknown>;
    };
    const flat = (x: unknown) => flatten(x as HostTree, isHostTensor).leaves.map(toFloat32);
    const want = flat(await run("plain"));
    const got = flat(await run("blockwise"));
    expect(got.length).toBe(want.length);
    let worst = 0;
    for (const [i, g] of got.entries()) worst = Math.max(worst, maxAbsDiff(g, want[i]!));
    console.log(`Llama tiny, S=${S}: max |blockwise - plain| over logits, loss, LoRA grads ${worst.toExponential(2)}`);
    expect(worst).toBeLessThanOrEqual(1e-5);
    // the LoRA paths matter: gradients are not all zero
    expect(Math.max(...want.slice(2).map((g) => Math.max(...g.map(Math.abs))))).toBeGreaterThan(1e-3);
  });

  // Flash attention is a custom_vjp around scans (plain attention's softmax is a custom_vjp too, without one).
  const isFlash = (op: { name: string; params: unknown }) =>
    op.name === "custom_vjp" && (op.params as { body: Graph }).body.ops.some((o) => o.name === "scan");
  it("picks plain up to 1024 tokens and blockwise beyond; an explicit choice wins; cudnn traces to the custom calls", () => {
    expect([defaultAttention(PLAIN_MAX_SEQ), defaultAttention(PLAIN_MAX_SEQ + 1)]).toEqual(["plain", "blockwise"]);
    expect(resolveAttention({}, 2048)).toEqual({ kind: "blockwise", block: 128 });
    expect(resolveAttention({ attention: "plain" }, 2048)).toEqual({ kind: "plain" });
    expect(resolveAttention({ attention: "blockwise", attentionBlock: 16 }, 64)).toEqual({
      kind: "blockwise",
      block: 16,
    });
    expect(resolveAttention({ attention: "cudnn" }, 64)).toEqual({ kind: "cudnn" });
    // in bf16 every layer's attention is one cudnn_fmha (inside the custom_vjp); f32 is refused by name
    const cudnnOps = (dtype: "bf16" | "f32") => {
      const { graph } = tx.trace(
        (w: LlamaWeights, ids: Tensor) => llamaLogits(cfg, w, ids, { layers: "unroll", attention: "cudnn" }),
        [llamaSpecs(cfg, dtype), tx.spec("s32", [1, 64])],
      );
      let n = 0;
      const walk = (g: typeof graph) => {
        for (const op of g.ops) {
          if (op.name === "cudnn_fmha") n++;
          if (op.name === "custom_vjp") walk(op.params.body);
        }
      };
      walk(graph);
      return n;
    };
    expect(cudnnOps("bf16")).toBe(cfg.numLayers);
    expect(() => cudnnOps("f32")).toThrow(/cudnnAttention: cuDNN flash attention takes bf16 or f16/);
    expect(() => resolveAttention({ attention: "blockwise", attentionBlock: 0 }, 64)).toThrow(/attentionBlock/);
    const scans = (seq: number) => {
      const { graph } = tx.trace(
        (w: LlamaWeights, ids: Tensor) => llamaLogits(cfg, w, ids, { layers: "unroll" }),
        [llamaSpecs(cfg, "f32"), tx.spec("s32", [1, seq])],
      );
      return graph.ops.filter(isFlash).length;
    };
    // traced at 1100 tokens the default runs flash attention (a custom_vjp around its scans) per layer; at 64, none
    expect([scans(64), scans(1100)]).toEqual([0, cfg.numLayers]);
    // StepConfig.attention reaches the model: the training loss traced with "blockwise" at 64 tokens has its scans
    const c: StepConfig = { llama: cfg, layout: lora.layout, policy: F32, adamw: ADAMW_DEFAULTS, layers: "unroll" };
    const lossScans = (attention?: "blockwise") => {
      const { graph } = tx.trace(
        (w: LlamaWeights, l: LoraWeights, t: Tensor) =>
          loraLoss({ ...c, ...(attention ? { attention } : {}) }, l, w, { tokens: t, labels: t }),
        [llamaSpecs(cfg, "f32"), loraSpecs(lora.layout, cfg), tx.spec("s32", [1, 64])],
      );
      return graph.ops.filter(isFlash).length;
    };
    expect([lossScans(), lossScans("blockwise")]).toEqual([0, cfg.numLayers]);
  });
});
