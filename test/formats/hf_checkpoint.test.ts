// HF Llama checkpoints: the fixture, streamed iteration with conversion, sharded saves, and each shape/presence error.

import { afterAll, describe, expect, it } from "vitest";
import { readFile, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { HfCheckpoint, llamaWeightSpecs, saveHfCheckpoint } from "../../src/formats/hf_checkpoint.ts";
import {
  LLAMA2_70B,
  LLAMA2_7B,
  LLAMA_TINY_A,
  parseLlamaConfig,
  saveLlamaConfig,
  type LlamaConfig,
} from "../../src/formats/hf_config.ts";
import { SafetensorsFile, writeCheckpoint } from "../../src/formats/safetensors.ts";
import { castTensor, fromFloat32, tensorsEqual, toFloat32, type HostTensor } from "../../src/formats/host_tensor.ts";
import { numel } from "../../src/ir/types.ts";
import { FIXTURE, listDir, llamaTensors, removeTempDirs, tempDir } from "./helpers.ts";

afterAll(removeTempDirs);

const GQA: LlamaConfig = parseLlamaConfig({
  vocab_size: 40,
  hidden_size: 16,
  intermediate_size: 24,
  num_hidden_layers: 2,
  num_attention_heads: 4,
  num_key_value_heads: 2,
  rms_norm_eps: 1e-6,
  rope_theta: 500000,
});

async function openErr(dir: string): Promise<string> {
  return HfCheckpoint.open(dir).then(
    async (c) => {
      await c.close();
      return "opened";
    },
    (e: Error) => e.message,
  );
}

/** A checkpoint directory written without validation, so tests can break it. */
async function rawCheckpoint(
  cfg: LlamaConfig,
  tensors: Map<string, HostTensor>,
  maxShardBytes?: number,
): Promise<string> {
  const dir = await tempDir();
  await saveLlamaConfig(dir, cfg);
  await writeCheckpoint(dir, tensors, maxShardBytes === undefined ? {} : { maxShardBytes });
  return dir;
}

describe("weight specs", () => {
  it("list every Llama weight with torch shapes, GQA-aware", () => {
    const specs = llamaWeightSpecs(GQA);
    expect(specs).toHaveLength(1 + 2 * 9 + 2);
    const shape = (n: string) => specs.find((s) => s.name === n)!.shape;
    expect(shape("model.embed_tokens.weight")).toEqual([40, 16]);
    expect(shape("model.layers.1.self_attn.q_proj.weight")).toEqual([16, 16]);
    expect(shape("model.layers.1.self_attn.k_proj.weight")).toEqual([8, 16]);
    expect(shape("model.layers.0.self_attn.o_proj.weight")).toEqual([16, 16]);
    expect(shape("model.layers.0.mlp.down_proj.weight")).toEqual([16, 24]);
    expect(shape("lm_head.weight")).toEqual([40, 16]);
    expect(llamaWeightSpecs({ ...GQA, tieWordEmbeddings: true }).some((s) => s.name === "lm_head.weight")).toBe(false);
  });

  it("add up to the published parameter counts of Llama-2 7B and 70B", () => {
    const count = (c: LlamaConfig) => llamaWeightSpecs(c).reduce((n, s) => n + numel(s.shape), 0);
    expect(count(LLAMA2_7B)).toBe(6_738_415_616);
    expect(count(LLAMA2_70B)).toBe(68_976_648_192);
  });
});

describe("the fixture checkpoint", () => {
  it("opens, validates and streams every tensor in storage order", async () => {
    const c = await HfCheckpoint.open(FIXTURE);
    try {
      expect(c.config).toEqual(LLAMA_TINY_A);
      const f = await SafetensorsFile.open(join(FIXTURE, "model.safetensors"));
      expect(c.names()).toEqual(f.keys());
      const seen: string[] = [];
      for await (const { name, tensor } of c.tensors()) {
        seen.push(name);
        expect(tensorsEqual(tensor, await f.read(name)), name).toBe(true);
      }
      expect(seen).toHaveLength(21);
      await f.close();
    } finally {
      await c.close();
    }
  });

  it("converts to bf16/f16 on the way out", async () => {
    const c = await HfCheckpoint.open(FIXTURE);
    const f32 = await c.read("model.layers.0.self_attn.q_proj.weight");
    const bf = await c.read("model.layers.0.self_attn.q_proj.weight", "BF16");
    expect(bf).toMatchObject({ dtype: "BF16", shape: [64, 64] });
    expect(tensorsEqual(bf, castTensor(f32, "BF16"))).toBe(true);
    const x = toFloat32(f32);
    const y = toFloat32(bf);
    for (let i = 0; i < x.length; i++) expect(Math.abs(y[i]! - x[i]!)).toBeLessThanOrEqual(Math.abs(x[i]!) * 2 ** -8);
    let n = 0;
    for await (const { tensor } of c.tensors("F16")) {
      expect(tensor.dtype).toBe("F16");
      n++;
    }
    expect(n).toBe(21);
    await c.close();
  });
});

describe("saving and reopening", () => {
  it("a sharded bf16 GQA checkpoint round-trips bit-exactly", async () => {
    const dir = await tempDir();
    const tensors = llamaTensors(GQA, "BF16");
    await saveHfCheckpoint(dir, GQA, tensors, { maxShardBytes: 2000 });
    const files = await listDir(dir);
    expect(files).toContain("model.safetensors.index.json");
    expect(files).toContain("config.json");
    expect(files.filter((f) => f.endsWith(".safetensors")).length).toBeGreaterThan(2);
    const c = await HfCheckpoint.open(dir);
    expect(c.config).toEqual({ ...GQA, dtype: "F32" });
    expect(c.checkpoint.files.length).toBeGreaterThan(2);
    let n = 0;
    for await (const { name, tensor } of c.tensors()) {
      expect(tensorsEqual(tensor, tensors.get(name)!), name).toBe(true);
      n++;
    }
    expect(n).toBe(tensors.size);
    const asF32 = await c.read("model.norm.weight", "F32");
    expect(Array.from(toFloat32(asF32))).toEqual(Array.from(toFloat32(tensors.get("model.norm.weight")!)));
    await c.close();
  });

  it("tied embeddings need no lm_head, and a stray one is tolerated", async () => {
    const tied = { ...GQA, tieWordEmbeddings: true };
    const tensors = llamaTensors(tied);
    const dir = await rawCheckpoint(tied, tensors);
    expect(await openErr(dir)).toBe("opened");
    tensors.set("lm_head.weight", tensors.get("model.embed_tokens.weight")!);
    expect(await openErr(await rawCheckpoint(tied, tensors))).toBe("opened");
  });

  it("old conversions' rotary inv_freq buffers are ignored", async () => {
    const tensors = llamaTensors(GQA);
    tensors.set("model.layers.0.self_attn.rotary_emb.inv_freq", fromFloat32(new Float32Array(2), [2]));
    const c = await HfCheckpoint.open(await rawCheckpoint(GQA, tensors));
    expect(c.names()).not.toContain("model.layers.0.self_attn.rotary_emb.inv_freq");
    await c.close();
  });

  it("refuses to save tensors that do not fit the config", async () => {
    const dir = await tempDir();
    const t = llamaTensors(GQA);
    t.set("model.layers.0.self_attn.k_proj.weight", fromFloat32(new Float32Array(256), [16, 16]));
    await expect(saveHfCheckpoint(dir, GQA, t)).rejects.toThrow(
      /cannot save tensor "model\.layers\.0\.self_attn\.k_proj\.weight": shape \[16, 16\], expected \[8, 16\] = \[num_key_value_heads\*head_dim, hidden_size\]/,
    );
    const t2 = llamaTensors(GQA);
    t2.delete("model.norm.weight");
    await expect(saveHfCheckpoint(dir, GQA, t2)).rejects.toThrow(
      /cannot save: missing tensor "model\.norm\.weight" \[16\]/,
    );
    const t3 = llamaTensors(GQA);
    t3.set("extra", fromFloat32([1], [1]));
    await expect(saveHfCheckpoint(dir, GQA, t3)).rejects.toThrow(/tensor "extra" is not a weight of this Llama config/);
    expect(await listDir(dir)).toEqual([]);
  });
});

describe("invalid checkpoints", () => {
  it("a wrong-shaped tensor names its shard, the tensor, and expected vs actual", async () => {
    const t = llamaTensors(GQA);
    t.set("model.layers.1.self_attn.v_proj.weight", fromFloat32(new Float32Array(256), [16, 16]));
    const dir = await rawCheckpoint(GQA, t, 2000);
    const msg = await openErr(dir);
    expect(msg).toMatch(
      new RegExp(
        `^${dir}/model-\\d+-of-\\d+\\.safetensors: tensor "model\\.layers\\.1\\.self_attn\\.v_proj\\.weight" has shape \\[16, 16\\], ` +
          `expected \\[8, 16\\] = \\[num_key_value_heads\\*head_dim, hidden_size\\] from ${dir}/config\\.json$`,
      ),
    );
    const t2 = llamaTensors(GQA);
    t2.set("model.layers.0.mlp.down_proj.weight", fromFloat32(new Float32Array(16 * 24), [24, 16]));
    expect(await openErr(await rawCheckpoint(GQA, t2))).toMatch(
      /model\.safetensors: tensor "model\.layers\.0\.mlp\.down_proj\.weight" has shape \[24, 16\], expected \[16, 24\] = \[hidden_size, intermediate_size\]/,
    );
  });

  it("a missing tensor names the index (sharded) or the weights file", async () => {
    const t = llamaTensors(GQA);
    t.delete("model.layers.1.post_attention_layernorm.weight");
    const dir = await rawCheckpoint(GQA, t, 2000);
    expect(await openErr(dir)).toBe(
      `${dir}/model.safetensors.index.json: missing tensor "model.layers.1.post_attention_layernorm.weight" (expected [16] = [hidden_size] from ${dir}/config.json)`,
    );
    const t2 = llamaTensors(GQA);
    t2.delete("lm_head.weight");
    const dir2 = await rawCheckpoint(GQA, t2);
    expect(await openErr(dir2)).toMatch(
      new RegExp(`^${dir2}/model\\.safetensors: missing tensor "lm_head\\.weight" \\(expected \\[40, 16\\]`),
    );
  });

  it("a config claiming far more layers than the files hold fails from the names alone, before the expected list is built", async () => {
    const dir = await rawCheckpoint({ ...GQA, numLayers: 4000 }, llamaTensors(GQA));
    const t0 = Date.now();
    expect(await openErr(dir)).toBe(
      `${dir}/config.json: field "num_hidden_layers" is 4000, but ${dir}/model.safetensors has tensors for layers 0..1 only ` +
        `(missing tensor "model.layers.2.input_layernorm.weight"): the config does not describe this checkpoint`,
    );
    expect(Date.now() - t0).toBeLessThan(2000);
    const config = JSON.parse(await readFile(join(dir, "config.json"), "utf8"));
    await writeFile(join(dir, "config.json"), JSON.stringify({ ...config, num_hidden_layers: 200000000 }));
    expect(await openErr(dir)).toMatch(
      new RegExp(`^${dir}/config\\.json: field "num_hidden_layers": expected at most 4096 .*\\(got 200000000\\)$`),
    );
  });

  it("a config with more layers than the weights, and weights with more layers than the config", async () => {
    const t = llamaTensors(GQA);
    const more = { ...GQA, numLayers: 3 };
    expect(await openErr(await rawCheckpoint(more, t))).toMatch(
      /missing tensor "model\.layers\.2\.input_layernorm\.weight"/,
    );
    const bigger = llamaTensors(more);
    expect(await openErr(await rawCheckpoint(GQA, bigger))).toMatch(
      /unexpected tensor "model\.layers\.2\.(input_layernorm|mlp|self_attn|post)[a-z_.]*" \(layer 2 is past num_hidden_layers=2 in .*config\.json\)/,
    );
    const t3 = llamaTensors(GQA);
    t3.set("model.layers.0.self_attn.q_proj.bias", fromFloat32(new Float32Array(16), [16]));
    expect(await openErr(await rawCheckpoint(GQA, t3))).toMatch(
      /unexpected tensor "model\.layers\.0\.self_attn\.q_proj\.bias" \(not a weight of a Llama model\)/,
    );
  });

  it("an integer weight", async () => {
    const t = llamaTensors(GQA);
    t.set("model.norm.weight", fromFloat32(new Float32Array(16), [16], "I32"));
    expect(await openErr(await rawCheckpoint(GQA, t))).toMatch(
      /tensor "model\.norm\.weight" has dtype I32, expected a float type/,
    );
  });

  it("a bad config.json stops before any weights are read", async () => {
    const dir = await rawCheckpoint(GQA, llamaTensors(GQA));
    await writeFile(join(dir, "config.json"), JSON.stringify({ vocab_size: 40 }));
    expect(await openErr(dir)).toMatch(/config\.json: field "hidden_size": required field is missing/);
  });
});
