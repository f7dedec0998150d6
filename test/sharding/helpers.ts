// Shared pieces of the sharding tests: a tiny Llama whose heads split evenly 8 ways, its LoRA step, random weights.
import { tx, type DeviceArray } from "tessera";
import type { LlamaConfig, LlamaLinear } from "../../src/formats/hf_config.ts";
import { llamaShapes } from "../../models/llama.ts";
import { loraShapes, mulberry32, simpleLoraLayout, type LoraLayout } from "../../models/lora.ts";
import type { StepConfig } from "../../src/train/step.ts";
import { F32 } from "../../src/train/precision.ts";

// XLA's CPU backend compiles ~4x faster without LLVM optimizations; sharding does not depend on them. Must be set
// before the plugin loads (the first client), so test files import this module first.
if (!(process.env.XLA_FLAGS ?? "").includes("xla_backend_optimization_level")) {
  process.env.XLA_FLAGS = `${process.env.XLA_FLAGS ?? ""} --xla_backend_optimization_level=0`.trim();
}

/** 8 query and 8 KV heads, so that tensor parallelism up to 8 ways splits whole heads. */
export const SHARD_LLAMA: LlamaConfig = Object.freeze({
  vocabSize: 128,
  hiddenSize: 64,
  intermediateSize: 128,
  numLayers: 2,
  numHeads: 8,
  numKvHeads: 8,
  headDim: 8,
  rmsNormEps: 1e-6,
  ropeTheta: 10000,
  maxPositionEmbeddings: 64,
  tieWordEmbeddings: false,
});

export const BATCH = 8;
export const SEQ = 16;
export const ALL_TARGETS: readonly LlamaLinear[] = ["q", "k", "v", "o", "gate", "up", "down"];

export function stepConfig(targets: readonly LlamaLinear[] = ALL_TARGETS): StepConfig {
  const layout: LoraLayout = simpleLoraLayout(SHARD_LLAMA, { r: 4, alpha: 8, targets });
  return {
    llama: SHARD_LLAMA,
    layout,
    policy: F32,
    adamw: { lr: 1e-3, beta1: 0.9, beta2: 0.999, eps: 1e-8, weightDecay: 0.01 },
  };
}

function rand(shape: readonly number[], r: () => number, scale: number, offset = 0): Float32Array {
  const n = shape.reduce((a, b) => a * b, 1);
  return Float32Array.from({ length: n }, () => offset + (2 * r() - 1) * scale);
}

/** Host values of every argument of the step: base weights, adapter (A and B both non-zero), zero moments, a batch. */
export function hostStepArgs(c: StepConfig, seed = 3) {
  const r = mulberry32(seed);
  const s = llamaShapes(c.llama);
  const w = (shape: number[], scale = 0.15) => ({ shape, data: rand(shape, r, scale) });
  const norm = (shape: number[]) => ({ shape, data: rand(shape, r, 0.3, 1) });
  const base = {
    embed: w(s.embed, 1),
    layers: {
      inputNorm: norm(s.layers.inputNorm),
      q: w(s.layers.q),
      k: w(s.layers.k),
      v: w(s.layers.v),
      o: w(s.layers.o),
      postNorm: norm(s.layers.postNorm),
      gate: w(s.layers.gate),
      up: w(s.layers.up),
      down: w(s.layers.down),
    },
    norm: norm(s.norm),
    head: w(s.head),
  };
  const lora: Record<
    string,
    { a: { shape: number[]; data: Float32Array }; b: { shape: number[]; data: Float32Array } }
  > = {};
  for (const [m, sh] of Object.entries(loraShapes(c.layout, c.llama))) lora[m] = { a: w(sh!.a, 0.3), b: w(sh!.b, 0.3) };
  const zeros = Object.fromEntries(
    Object.entries(lora).map(([m, f]) => [
      m,
      {
        a: { shape: f.a.shape, data: new Float32Array(f.a.data.length) },
        b: { shape: f.b.shape, data: new Float32Array(f.b.data.length) },
      },
    ]),
  );
  const tokens = Int32Array.from({ length: BATCH * SEQ }, () => Math.floor(r() * c.llama.vocabSize));
  const labels = Int32Array.from(tokens, (t, i) => (i % SEQ < 3 ? -100 : t));
  return { base, lora, zeros, tokens, labels };
}

type Host = { shape: number[]; data: Float32Array };

/** Device arrays of the step's arguments (on one device; a sharded jit places them itself). */
export function stepArgs(h: ReturnType<typeof hostStepArgs>): unknown[] {
  const up = (t: Host): DeviceArray => tx.array(t.data, { shape: t.shape });
  const tree = (x: unknown): unknown =>
    x && typeof x === "object" && "data" in (x as object)
      ? up(x as Host)
      : Object.fromEntries(Object.entries(x as object).map(([k, v]) => [k, tree(v)]));
  return [
    { lora: tree(h.lora), m: tree(h.zeros), v: tree(h.zeros), step: tx.array(new Float32Array([0]), { shape: [] }) },
    tree(h.base),
    { tokens: tx.array(h.tokens, { shape: [BATCH, SEQ] }), labels: tx.array(h.labels, { shape: [BATCH, SEQ] }) },
    tx.array(new Float32Array([1e-3]), { shape: [] }),
    tx.array(new Uint32Array([0, 7]), { shape: [2] }),
  ];
}

/** Every leaf of a result tree read back, by path. */
export async function readTree(tree: unknown): Promise<Map<string, Float32Array>> {
  const { leaves, paths } = tx.treeFlatten(tree as tx.Tree<DeviceArray>);
  const out = new Map<string, Float32Array>();
  await Promise.all(
    leaves.map(async (l, i) => out.set(paths[i]!, Float32Array.from(await (l as DeviceArray).toArray()))),
  );
  return out;
}

/** max |a - b| / max |b|: the normwise relative error used by the parity checks. */
export function relErr(a: Float32Array, b: Float32Array): number {
  let d = 0,
    m = 0;
  for (let i = 0; i < a.length; i++) {
    d = Math.max(d, Math.abs(a[i]! - b[i]!));
    m = Math.max(m, Math.abs(b[i]!));
  }
  return m === 0 ? d : d / m;
}
