// Configurations: presets by name, config.json in both RoPE forms, and the model tracing at Llama-2-70B's shape (GQA 64/8).
import { afterEach, describe, expect, it } from "vitest";
import { writeFile } from "node:fs/promises";
import { join } from "node:path";
import { tx, type Tensor } from "tessera";
import { LLAMA2_70B, llamaConfig, llamaLogits, llamaSpecs, PRESETS } from "../../models/llama.ts";
import { simpleLoraLayout, loraSpecs, type LoraWeights } from "../../models/lora.ts";
import type { LlamaWeights } from "../../models/llama.ts";
import { FIXTURE, tempDir } from "./helpers.ts";

const cleanups: Array<() => Promise<void>> = [];
afterEach(async () => {
  while (cleanups.length) await cleanups.pop()!();
});

describe("Llama configurations", () => {
  it("presets for Llama-2 7B, 13B and 70B (GQA) and the tiny shapes", async () => {
    expect(Object.keys(PRESETS)).toEqual(
      expect.arrayContaining(["llama2-7b", "llama2-13b", "llama2-70b", "tiny-a", "tiny"]),
    );
    const c70 = await llamaConfig("llama2-70b");
    expect([c70.numLayers, c70.hiddenSize, c70.numHeads, c70.numKvHeads, c70.intermediateSize]).toEqual([
      80, 8192, 64, 8, 28672,
    ]);
    expect((await llamaConfig("llama2-13b")).numLayers).toBe(40);
    expect((await llamaConfig(FIXTURE)).intermediateSize).toBe(172);
  });

  it("reads theta from transformers 4.x (top-level rope_theta) and 5.x (rope_parameters) config.json files", async () => {
    const t = await tempDir("cfg");
    cleanups.push(t.cleanup);
    const common = {
      model_type: "llama",
      vocab_size: 100,
      hidden_size: 32,
      intermediate_size: 64,
      num_hidden_layers: 2,
      num_attention_heads: 4,
      num_key_value_heads: 2,
      rms_norm_eps: 1e-6,
    };
    await writeFile(join(t.dir, "config.json"), JSON.stringify({ ...common, rope_theta: 500000 }));
    expect((await llamaConfig(t.dir)).ropeTheta).toBe(500000);
    await writeFile(
      join(t.dir, "config.json"),
      JSON.stringify({ ...common, rope_parameters: { rope_type: "default", rope_theta: 250000 } }),
    );
    const c = await llamaConfig(t.dir);
    expect([c.ropeTheta, c.rmsNormEps, c.numKvHeads, c.headDim]).toEqual([250000, 1e-6, 2, 8]);
  });

  it("traces a LoRA forward pass at Llama-2-70B's shape: one layer body, 8 query heads per KV head", () => {
    const layout = simpleLoraLayout(LLAMA2_70B, { r: 16, alpha: 32, targets: ["q", "k", "v", "o"] });
    const { graph } = tx.trace(
      (w: LlamaWeights, l: LoraWeights, ids: Tensor) =>
        llamaLogits(LLAMA2_70B, w, ids, { lora: { weights: l, layout } }),
      [llamaSpecs(LLAMA2_70B, "bf16"), loraSpecs(layout, LLAMA2_70B), tx.spec("s32", [1, 8])],
    );
    expect(graph.outputs[0]!.type).toEqual({ dtype: "f32", shape: [1, 8, 32000] });
    const scans = graph.ops.filter((op) => op.name === "scan");
    expect(scans).toHaveLength(1);
    expect((scans[0]!.params as { length: number }).length).toBe(80);
    expect(graph.inputs.find((_v, i) => graph.inputNames?.[i] === "w.layers.k")!.type.shape).toEqual([80, 8192, 1024]);
  });
});
