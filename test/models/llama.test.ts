// The Llama + LoRA model through the reference interpreter vs an independent float64 implementation: GQA, all seven
// target modules, odd sequence lengths, rank/layer patterns, merge/unmerge, dropout.
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { tx, type Tensor } from "tessera";
import { toFloat32, type HostTensor } from "../../src/formats/host_tensor.ts";
import { makeLoraConfig, type LoraConfig } from "../../src/formats/peft.ts";
import type { LlamaConfig } from "../../src/formats/hf_config.ts";
import { LLAMA_TINY, llamaLogits, ropeInvFreq, type LlamaWeights } from "../../models/llama.ts";
import { loraFromAdapter, loraToAdapter, mergeLora, unmergeLora, type LoraWeights } from "../../models/lora.ts";
import { loadLlamaWeights } from "../../models/weights.ts";
import { loraLoss, makeGuardedTrainStep, trainStepSpecs, type StepConfig } from "../../src/train/step.ts";
import { jit } from "../../src/frontend/jit.ts";
import { opCost } from "../../src/ir/cost.ts";
import { subgraphs, type Graph } from "../../src/ir/graph.ts";
import type { SavePolicy } from "../../src/passes/remat.ts";
import { F32 } from "../../src/train/precision.ts";
import { ADAMW_DEFAULTS } from "../../src/train/adamw.ts";
import { interpretOnHost } from "../../src/parity/execute.ts";
import { refLogits, refLoss } from "./reference.ts";
import { batch, f64, i32, randomAdapter, refLora, relErr, tempDir, writeModel } from "./helpers.ts";

type HostTree = Parameters<typeof interpretOnHost>[1][number];

const cfg = LLAMA_TINY; // 4 query heads over 2 KV heads
const S = 7; // odd on purpose
const data = batch(2, S, cfg.vocabSize, 2);

let dir: string, cleanup: () => Promise<void>;
let hf: Map<string, HostTensor>;
let base: LlamaWeights<HostTensor>;

beforeAll(async () => {
  ({ dir, cleanup } = await tempDir("llama"));
  hf = await writeModel(dir, cfg);
  base = (await loadLlamaWeights(dir)).weights;
});
afterAll(() => cleanup());

function logits(w: LlamaWeights<HostTensor>, c: LlamaConfig, lora?: ReturnType<typeof loraFromAdapter>): Float32Array {
  const out = interpretOnHost(
    (w: LlamaWeights, l: LoraWeights, ids: Tensor) =>
      llamaLogits(c, w, ids, lora ? { lora: { weights: l, layout: lora.layout } } : {}),
    [w as unknown as HostTree, (lora?.weights ?? {}) as HostTree, i32(data.tokens)],
  );
  return toFloat32(out as HostTensor);
}

function refBatchLogits(
  c: LlamaConfig,
  w: Map<string, HostTensor>,
  lora?: Parameters<typeof refLogits>[3],
): Float64Array {
  const parts = data.tokens.map((seq) => refLogits(c, f64(w), seq, lora));
  const out = new Float64Array(parts.reduce((n, p) => n + p.length, 0));
  let o = 0;
  for (const p of parts) {
    out.set(p, o);
    o += p.length;
  }
  return out;
}

const ALL7 = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"];

describe("Llama forward", () => {
  it("matches the float64 reference with GQA (4 heads over 2 KV heads) at an odd sequence length", () => {
    expect(cfg.numKvHeads).toBeLessThan(cfg.numHeads);
    const got = logits(base, cfg);
    expect(got.length).toBe(2 * S * cfg.vocabSize);
    expect(relErr(got, refBatchLogits(cfg, hf))).toBeLessThan(2e-6);
  });

  it("GQA equals multi-head attention with each KV head repeated for its query group", () => {
    const mha: LlamaConfig = { ...cfg, numKvHeads: cfg.numHeads };
    const G = cfg.numHeads / cfg.numKvHeads,
      D = cfg.headDim,
      E = cfg.hiddenSize;
    const repeated = new Map(hf);
    for (let l = 0; l < cfg.numLayers; l++) {
      for (const m of ["k_proj", "v_proj"]) {
        const name = `model.layers.${l}.self_attn.${m}.weight`;
        const w = toFloat32(hf.get(name)!); // [KV*D, E]
        const out = new Float32Array(cfg.numHeads * D * E);
        for (let h = 0; h < cfg.numHeads; h++)
          out.set(w.subarray(Math.floor(h / G) * D * E, (Math.floor(h / G) + 1) * D * E), h * D * E);
        repeated.set(name, { dtype: "F32", shape: [cfg.numHeads * D, E], data: new Uint8Array(out.buffer) });
      }
    }
    const mhaWeights = { ...base, layers: { ...base.layers } };
    // Rebuild the stacked K/V from the repeated HF tensors ([out, in] -> [in, out]).
    for (const key of ["k", "v"] as const) {
      const L = cfg.numLayers,
        outF = cfg.numHeads * D;
      const st = new Float32Array(L * E * outF);
      for (let l = 0; l < L; l++) {
        const w = toFloat32(repeated.get(`model.layers.${l}.self_attn.${key}_proj.weight`)!);
        for (let o = 0; o < outF; o++) for (let i = 0; i < E; i++) st[l * E * outF + i * outF + o] = w[o * E + i]!;
      }
      mhaWeights.layers[key] = { dtype: "F32", shape: [L, E, outF], data: new Uint8Array(st.buffer) };
    }
    expect(relErr(logits(mhaWeights, mha), logits(base, cfg))).toBeLessThan(1e-6);
  });

  it("unrolled layers compute the same logits and adapter gradients as the scanned ones", () => {
    const lora = loraFromAdapter(
      randomAdapter(cfg, makeLoraConfig({ r: 2, loraAlpha: 4, targetModules: ["q_proj", "down_proj"] }), 3),
      cfg,
    );
    const run = (layers: "scan" | "unroll") => {
      const c: StepConfig = { llama: cfg, layout: lora.layout, policy: F32, adamw: ADAMW_DEFAULTS, layers };
      return interpretOnHost(
        (w: LlamaWeights, l: LoraWeights, t: Tensor, y: Tensor) =>
          tx.valueAndGrad((l: LoraWeights) => loraLoss(c, l, w, { tokens: t, labels: y }))(l),
        [base as unknown as HostTree, lora.weights as HostTree, i32(data.tokens), i32(data.labels)],
      ) as unknown as [HostTensor, LoraWeights<HostTensor>];
    };
    const [ls, gs] = run("scan"),
      [lu, gu] = run("unroll");
    expect(toFloat32(lu)[0]).toBeCloseTo(toFloat32(ls)[0]!, 6);
    for (const m of ["q", "down"] as const)
      for (const k of ["a", "b"] as const)
        expect(relErr(toFloat32(gu[m]![k]), toFloat32(gs[m]![k]))).toBeLessThan(1e-6);
  });

  it("scanned layers compute each layer once, as unrolled ones do: no forward matmul is recomputed (lowered step, shapes only)", () => {
    const layout = loraFromAdapter(
      randomAdapter(cfg, makeLoraConfig({ r: 2, loraAlpha: 4, targetModules: ALL7 }), 3),
      cfg,
    ).layout;
    const flops = (layers: "scan" | "unroll", remat?: SavePolicy) => {
      const c: StepConfig = {
        llama: cfg,
        layout,
        policy: F32,
        adamw: ADAMW_DEFAULTS,
        layers,
        ...(remat ? { remat } : {}),
      };
      const step = jit(makeGuardedTrainStep(c), { donate: 0 });
      const lowered = step.lower(...(trainStepSpecs(c, 2, 16, { packed: false }) as Parameters<typeof step.lower>));
      return dotFlops(lowered.graph);
    };
    // Only matmuls: loop-invariant element-wise work (masks, RoPE) is shared by unrolled layers, not by a scan body.
    const dotFlops = (g: Graph, times = 1): number =>
      g.ops.reduce(
        (sum, o) =>
          sum +
          (o.name === "dot_general" ? opCost(o).flops * times : 0) +
          subgraphs(o).reduce((t, b) => t + dotFlops(b, o.name === "scan" ? times * o.params.length : times), 0),
        0,
      );
    const unrolled = flops("unroll");
    const scanned = flops("scan");
    const nothing = flops("scan", tx.checkpointPolicies.nothingSaveable);
    console.log(`matmul FLOPs: unrolled ${unrolled}, scanned ${scanned}, scanned nothingSaveable ${nothing}`);
    // A scan differentiated without a checkpoint saves its residuals (JAX's scan): no forward matmul is recomputed.
    // What remains is the input gradient of the first layer, which the unrolled step skips (the embedding is frozen)
    // and one scan body cannot: 1 of L layers' backward input products.
    expect(scanned / unrolled).toBeLessThan(1.06);
    // nothingSaveable recomputes each layer's forward matmuls in the backward scan.
    expect(nothing - scanned).toBeGreaterThan(0.25 * unrolled);
  });

  it("uses HF's inverse frequencies, rounded to f32 at each step", () => {
    const f = ropeInvFreq(8, 10000);
    expect(Array.from(f)).toEqual([1, 0.10000000149011612, 0.009999999776482582, 0.0010000000474974513]);
  });
});

describe("LoRA", () => {
  const configs: Array<[string, LoraConfig]> = [
    ["all seven target modules", makeLoraConfig({ r: 3, loraAlpha: 6, targetModules: ALL7 })],
    [
      "rank_pattern, alpha_pattern, layers_to_transform and rsLoRA",
      makeLoraConfig({
        r: 4,
        loraAlpha: 8,
        targetModules: ["q_proj", "v_proj", "down_proj"],
        rankPattern: { v_proj: 2 },
        alphaPattern: { down_proj: 3 },
        layersToTransform: [1],
        useRslora: true,
      }),
    ],
  ];
  for (const [what, lc] of configs) {
    it(`${what}: logits and loss match the reference`, () => {
      const adapter = randomAdapter(cfg, lc);
      const lora = loraFromAdapter(adapter, cfg);
      expect(relErr(logits(base, cfg, lora), refBatchLogits(cfg, hf, refLora(adapter, cfg)))).toBeLessThan(2e-6);
      const c: StepConfig = { llama: cfg, layout: lora.layout, policy: F32, adamw: ADAMW_DEFAULTS };
      const loss = interpretOnHost(
        (w: LlamaWeights, l: LoraWeights, t: Tensor, y: Tensor) => loraLoss(c, l, w, { tokens: t, labels: y }),
        [base as unknown as HostTree, lora.weights as HostTree, i32(data.tokens), i32(data.labels)],
      ) as HostTensor;
      const want = refLoss(cfg, f64(hf), data.tokens, data.labels, refLora(adapter, cfg));
      expect(Math.abs(toFloat32(loss)[0]! - want) / want).toBeLessThan(1e-6);
    });
  }

  it("gradients for every one of the seven modules agree with finite differences of the reference", () => {
    const lc = makeLoraConfig({ r: 2, loraAlpha: 4, targetModules: ALL7 });
    const adapter = randomAdapter(cfg, lc, 7);
    const lora = loraFromAdapter(adapter, cfg);
    const c: StepConfig = { llama: cfg, layout: lora.layout, policy: F32, adamw: ADAMW_DEFAULTS };
    const grads = interpretOnHost(
      (w: LlamaWeights, l: LoraWeights, t: Tensor, y: Tensor) =>
        tx.grad((l: LoraWeights) => loraLoss(c, l, w, { tokens: t, labels: y }))(l),
      [base as unknown as HostTree, lora.weights as HostTree, i32(data.tokens), i32(data.labels)],
    ) as LoraWeights<HostTensor>;
    const g = loraToAdapter(lora.layout, grads, cfg); // PEFT orientation, per layer
    const w64 = f64(hf);
    const ref = refLora(adapter, cfg);
    const h = 1e-5;
    let checked = 0;
    for (const m of ["q", "k", "v", "o", "gate", "up", "down"] as const) {
      for (const which of ["A", "B"] as const) {
        const l = m === "o" || m === "down" ? 0 : 1;
        const ours = toFloat32(g.layers[l]![m]![which]);
        const arr = ref[l]![m]![which];
        // The largest-gradient entry and one other, so the check is not dominated by near-zero entries.
        let big = 0;
        for (let i = 0; i < ours.length; i++) if (Math.abs(ours[i]!) > Math.abs(ours[big]!)) big = i;
        for (const i of [big, Math.floor(ours.length / 3)]) {
          const keep = arr[i]!;
          arr[i] = keep + h;
          const up = refLoss(cfg, w64, data.tokens, data.labels, ref);
          arr[i] = keep - h;
          const down = refLoss(cfg, w64, data.tokens, data.labels, ref);
          arr[i] = keep;
          const fd = (up - down) / (2 * h);
          expect(Math.abs(ours[i]! - fd), `${m}.${which}[${i}] ours ${ours[i]} fd ${fd}`).toBeLessThan(
            1e-4 * Math.abs(ours[big]!) + 1e-7,
          );
          checked++;
        }
      }
    }
    expect(checked).toBe(28);
  });

  it("merging into the base gives the adapted model's logits; unmerging restores the base", () => {
    const adapter = randomAdapter(cfg, makeLoraConfig({ r: 3, loraAlpha: 5, targetModules: ALL7 }), 11);
    const lora = loraFromAdapter(adapter, cfg);
    const merged = interpretOnHost(
      (w: LlamaWeights, l: LoraWeights) => mergeLora(w, l, lora.layout),
      [base as unknown as HostTree, lora.weights as HostTree],
    ) as unknown as LlamaWeights<HostTensor>;
    expect(relErr(logits(merged, cfg), logits(base, cfg, lora))).toBeLessThan(2e-6);
    const back = interpretOnHost(
      (w: LlamaWeights, l: LoraWeights) => unmergeLora(w, l, lora.layout),
      [merged as unknown as HostTree, lora.weights as HostTree],
    ) as unknown as LlamaWeights<HostTensor>;
    for (const m of ["q", "gate", "down"] as const)
      expect(relErr(toFloat32(back.layers[m]), toFloat32(base.layers[m]))).toBeLessThan(1e-6);
    // Untargeted weights pass through untouched.
    expect(toFloat32(merged.layers.inputNorm)).toEqual(toFloat32(base.layers.inputNorm));
  });

  it("dropout is drawn from the key when training, and off otherwise", () => {
    const lc = makeLoraConfig({ r: 2, loraAlpha: 4, loraDropout: 0.5, targetModules: ["q_proj", "v_proj"] });
    const lora = loraFromAdapter(randomAdapter(cfg, lc, 5), cfg);
    const run = (training: boolean, seed: number) =>
      toFloat32(
        interpretOnHost(
          (w: LlamaWeights, l: LoraWeights, ids: Tensor) =>
            llamaLogits(cfg, w, ids, { lora: { weights: l, layout: lora.layout }, training, key: tx.random.key(seed) }),
          [base as unknown as HostTree, lora.weights as HostTree, i32(data.tokens)],
        ) as HostTensor,
      );
    const evalOut = run(false, 0);
    expect(relErr(evalOut, refBatchLogits(cfg, hf, refLora(randomAdapter(cfg, lc, 5), cfg)))).toBeLessThan(2e-6);
    const a = run(true, 1),
      b = run(true, 1),
      c = run(true, 2);
    expect(a).toEqual(b);
    expect(relErr(a, evalOut)).toBeGreaterThan(1e-4);
    expect(relErr(a, c)).toBeGreaterThan(1e-5);
  });
});
