// config.json parsing: the fixture, transformers 4.x and 5.x RoPE forms, defaults, GQA, rejections, presets.

import { afterAll, describe, expect, it } from "vitest";
import { readFile, writeFile } from "node:fs/promises";
import { join } from "node:path";
import {
  LLAMA2_13B,
  LLAMA2_70B,
  LLAMA2_7B,
  LLAMA_PRESETS,
  LLAMA_TINY_A,
  linearFeatures,
  llamaConfigToJson,
  loadLlamaConfig,
  parseLlamaConfig,
  saveLlamaConfig,
} from "../../src/formats/hf_config.ts";
import { FormatError } from "../../src/formats/errors.ts";
import { FIXTURE, removeTempDirs, tempDir } from "./helpers.ts";

afterAll(removeTempDirs);

/** Meta's Llama-2-7b-hf config.json as transformers 4.x wrote it (top-level rope_theta, rope_scaling null). */
const LLAMA2_7B_HF_4X = {
  _name_or_path: "meta-llama/Llama-2-7b-hf",
  architectures: ["LlamaForCausalLM"],
  bos_token_id: 1,
  eos_token_id: 2,
  hidden_act: "silu",
  hidden_size: 4096,
  initializer_range: 0.02,
  intermediate_size: 11008,
  max_position_embeddings: 4096,
  model_type: "llama",
  num_attention_heads: 32,
  num_hidden_layers: 32,
  num_key_value_heads: 32,
  pretraining_tp: 1,
  rms_norm_eps: 1e-5,
  rope_scaling: null,
  rope_theta: 10000.0,
  tie_word_embeddings: false,
  torch_dtype: "float16",
  transformers_version: "4.31.0.dev0",
  use_cache: true,
  vocab_size: 32000,
};

const minimal = {
  vocab_size: 100,
  hidden_size: 32,
  intermediate_size: 64,
  num_hidden_layers: 2,
  num_attention_heads: 4,
};

function parseErr(json: unknown): string {
  try {
    parseLlamaConfig(json, "/x/config.json");
  } catch (e) {
    expect(e).toBeInstanceOf(FormatError);
    return (e as Error).message;
  }
  throw new Error("expected a FormatError");
}

describe("parseLlamaConfig", () => {
  it("reads the fixture (transformers 5 form, rope_parameters) into the tiny preset", async () => {
    const cfg = await loadLlamaConfig(FIXTURE);
    expect(cfg).toEqual(LLAMA_TINY_A);
    const raw = JSON.parse(await readFile(join(FIXTURE, "config.json"), "utf8"));
    expect(raw.rope_theta).toBeUndefined();
    expect(raw.rope_parameters.rope_theta).toBe(10000);
  });

  it("reads a transformers 4.x Llama-2 config (top-level rope_theta) into the 7B preset", () => {
    const cfg = parseLlamaConfig(LLAMA2_7B_HF_4X);
    expect({ ...cfg, dtype: undefined }).toEqual({ ...LLAMA2_7B, dtype: undefined });
    expect(cfg.dtype).toBe("F16");
  });

  it("takes rope_theta from either place", () => {
    expect(parseLlamaConfig({ ...minimal, rope_theta: 500000 }).ropeTheta).toBe(500000);
    expect(
      parseLlamaConfig({ ...minimal, rope_parameters: { rope_type: "default", rope_theta: 250000 } }).ropeTheta,
    ).toBe(250000);
    expect(parseLlamaConfig({ ...minimal, rope_theta: 7, rope_parameters: { rope_theta: 7 } }).ropeTheta).toBe(7);
    expect(parseErr({ ...minimal, rope_theta: 7, rope_parameters: { rope_theta: 8 } })).toMatch(
      /field "rope_parameters\.rope_theta": 8 disagrees with top-level rope_theta 7/,
    );
  });

  it("fills defaults like transformers' LlamaConfig", () => {
    expect(parseLlamaConfig(minimal)).toEqual({
      vocabSize: 100,
      hiddenSize: 32,
      intermediateSize: 64,
      numLayers: 2,
      numHeads: 4,
      numKvHeads: 4,
      headDim: 8,
      rmsNormEps: 1e-6,
      ropeTheta: 10000,
      maxPositionEmbeddings: 2048,
      tieWordEmbeddings: false,
    });
    expect(parseLlamaConfig({ ...minimal, num_key_value_heads: null, head_dim: null }).numKvHeads).toBe(4);
  });

  it("reads GQA, explicit head_dim, tied embeddings", () => {
    const cfg = parseLlamaConfig({
      ...minimal,
      num_key_value_heads: 2,
      head_dim: 16,
      tie_word_embeddings: true,
      eos_token_id: [2, 3],
    });
    expect(cfg).toMatchObject({ numKvHeads: 2, headDim: 16, tieWordEmbeddings: true, eosTokenId: [2, 3] });
    expect(linearFeatures(cfg)).toEqual({
      q: { in: 32, out: 64 },
      k: { in: 32, out: 32 },
      v: { in: 32, out: 32 },
      o: { in: 64, out: 32 },
      gate: { in: 32, out: 64 },
      up: { in: 32, out: 64 },
      down: { in: 64, out: 32 },
    });
  });

  it("names the file, the field and what was expected", () => {
    expect(parseErr({ ...minimal, vocab_size: undefined })).toBe(
      '/x/config.json: field "vocab_size": required field is missing (expected number)',
    );
    expect(parseErr({ ...minimal, hidden_size: "64" })).toMatch(
      /\/x\/config\.json: field "hidden_size": expected number, received string \(got "64"\)/,
    );
    expect(parseErr({ ...minimal, num_hidden_layers: 0 })).toMatch(/field "num_hidden_layers": .*>0.* \(got 0\)/);
    expect(parseErr({ ...minimal, num_attention_heads: 2.5 })).toMatch(/field "num_attention_heads": .*int/);
    expect(parseErr({ ...minimal, num_key_value_heads: 3 })).toMatch(
      /field "num_key_value_heads": expected a divisor of num_attention_heads \(4\), got 3/,
    );
    expect(parseErr({ ...minimal, hidden_size: 30 })).toMatch(
      /field "head_dim": missing, and hidden_size 30 is not a multiple of num_attention_heads 4/,
    );
    expect(parseErr("not an object")).toMatch(/^\/x\/config\.json: expected object, received string/);
  });

  it("refuses sizes far past any Llama, naming the field and the bound", () => {
    expect(parseErr({ ...minimal, num_hidden_layers: 200000000 })).toBe(
      '/x/config.json: field "num_hidden_layers": expected at most 4096 (far larger than any Llama model; is the file damaged?) (got 200000000)',
    );
    expect(parseErr({ ...minimal, vocab_size: 2 ** 30 })).toMatch(
      /^\/x\/config\.json: field "vocab_size": expected at most 16777216 .*\(got 1073741824\)$/,
    );
    expect(parseErr({ ...minimal, hidden_size: 1e9 })).toMatch(/field "hidden_size": expected at most 262144/);
  });

  it("rejects what the Llama model does not implement, clearly", () => {
    expect(parseErr({ ...minimal, hidden_act: "gelu" })).toBe(
      '/x/config.json: field "hidden_act": expected "silu" (Llama\'s SwiGLU MLP), got "gelu"',
    );
    expect(parseErr({ ...minimal, attention_bias: true })).toMatch(
      /field "attention_bias": expected false: attention projections with bias/,
    );
    expect(parseErr({ ...minimal, mlp_bias: true })).toMatch(
      /field "mlp_bias": expected false: MLP projections with bias/,
    );
    // RoPE scaling kinds beyond linear, dynamic, yarn and llama3 (test/models/rope.test.ts covers those).
    expect(parseErr({ ...minimal, rope_scaling: { rope_type: "longrope", factor: 8 } })).toMatch(
      /field "rope_scaling\.rope_type": expected "default" or one of "linear", "dynamic", "yarn", "llama3", got "longrope": that RoPE scaling is not supported/,
    );
    expect(parseErr({ ...minimal, rope_scaling: { type: "su", factor: 2 } })).toMatch(
      /field "rope_scaling\.type": expected "default" or one of .*, got "su"/,
    );
    expect(parseErr({ ...minimal, rope_parameters: { rope_type: "yarn", rope_theta: 1e6 } })).toMatch(
      /field "rope_parameters\.factor": missing: rope_type "yarn" needs a number > 0/,
    );
    expect(parseErr({ ...minimal, model_type: "mistral" })).toMatch(
      /field "model_type": expected "llama", got "mistral"/,
    );
    expect(parseErr({ ...minimal, attention_dropout: 0.1 })).toMatch(/field "attention_dropout": expected 0/);
    expect(parseLlamaConfig({ ...minimal, rope_scaling: { rope_type: "default" } }).ropeTheta).toBe(10000);
  });

  it("names the file when it cannot be read or parsed", async () => {
    const dir = await tempDir();
    await expect(loadLlamaConfig(dir)).rejects.toThrow(/config\.json: cannot read model config/);
    await writeFile(join(dir, "config.json"), "{oops");
    await expect(loadLlamaConfig(dir)).rejects.toThrow(new RegExp(`${dir}/config\\.json: not valid JSON`));
  });

  it("accepts a config.json that starts with a UTF-8 byte order mark", async () => {
    const dir = await tempDir();
    await writeFile(join(dir, "config.json"), `\uFEFF${await readFile(join(FIXTURE, "config.json"), "utf8")}`);
    expect(await loadLlamaConfig(dir)).toEqual(await loadLlamaConfig(FIXTURE));
  });
});

describe("writing config.json", () => {
  it("round-trips every preset through both RoPE forms", async () => {
    for (const cfg of Object.values(LLAMA_PRESETS)) {
      const json = llamaConfigToJson(cfg);
      expect(parseLlamaConfig(json)).toEqual({ ...cfg, dtype: cfg.dtype ?? "F32" });
      const { rope_parameters: _, ...only4x } = json;
      expect(parseLlamaConfig(only4x).ropeTheta).toBe(cfg.ropeTheta);
      const { rope_theta: __, ...only5x } = json;
      expect(parseLlamaConfig(only5x).ropeTheta).toBe(cfg.ropeTheta);
    }
    const dir = await tempDir();
    await saveLlamaConfig(dir, LLAMA2_70B);
    expect(await loadLlamaConfig(dir)).toEqual({ ...LLAMA2_70B, dtype: "F32" });
  });
});

describe("presets", () => {
  it("have Llama-2's published shapes", () => {
    expect(LLAMA2_7B).toMatchObject({
      numLayers: 32,
      hiddenSize: 4096,
      numHeads: 32,
      numKvHeads: 32,
      intermediateSize: 11008,
      vocabSize: 32000,
      headDim: 128,
    });
    expect(LLAMA2_13B).toMatchObject({
      numLayers: 40,
      hiddenSize: 5120,
      numHeads: 40,
      numKvHeads: 40,
      intermediateSize: 13824,
      headDim: 128,
    });
    expect(LLAMA2_70B).toMatchObject({
      numLayers: 80,
      hiddenSize: 8192,
      numHeads: 64,
      numKvHeads: 8,
      intermediateSize: 28672,
      headDim: 128,
    });
    for (const p of [LLAMA2_7B, LLAMA2_13B, LLAMA2_70B]) {
      expect(p).toMatchObject({
        rmsNormEps: 1e-5,
        ropeTheta: 10000,
        maxPositionEmbeddings: 4096,
        tieWordEmbeddings: false,
      });
    }
    expect(Object.isFrozen(LLAMA2_7B)).toBe(true);
  });
});
