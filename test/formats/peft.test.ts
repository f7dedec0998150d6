// PEFT LoRA adapters: the fixture, orientation against merged weights, bit-exact saves, targeting rules, every rejection, atomicity.

import { afterAll, describe, expect, it } from "vitest";
import { mkdir, readFile, rm, writeFile } from "node:fs/promises";
import { join } from "node:path";
import {
  adapterFromTensors,
  adapterTensors,
  loadAdapter,
  loadLoraConfig,
  loraConfigToJson,
  loraPairFromMatmul,
  loraPairToMatmul,
  loraParams,
  loraTargets,
  makeLoraConfig,
  parseLoraConfig,
  peftKey,
  saveAdapter,
  type LoraAdapter,
  type LoraConfig,
  type LoraModule,
} from "../../src/formats/peft.ts";
import { LLAMA_TINY_A, linearFeatures, parseLlamaConfig, type LlamaConfig } from "../../src/formats/hf_config.ts";
import { readSafetensors, writeSafetensors } from "../../src/formats/safetensors.ts";
import { fromFloat32, tensorsEqual, toFloat32, type HostTensor } from "../../src/formats/host_tensor.ts";
import type { HostDType } from "../../src/ir/types.ts";
import { FormatError } from "../../src/formats/errors.ts";
import { FIXTURE, listDir, randomFloats, removeTempDirs, tempDir } from "./helpers.ts";

afterAll(removeTempDirs);

/** A GQA model small enough to build adapters for every module. */
const GQA: LlamaConfig = parseLlamaConfig({
  vocab_size: 50,
  hidden_size: 32,
  intermediate_size: 48,
  num_hidden_layers: 3,
  num_attention_heads: 4,
  num_key_value_heads: 2,
});

/** Random tensors for every target of `cfg`, in PEFT orientation. */
function randomAdapter(cfg: LoraConfig, llama: LlamaConfig, dtype: HostDType = "F32", seed = 7): LoraAdapter {
  const layers: LoraAdapter["layers"] = Array.from({ length: llama.numLayers }, () => ({}));
  for (const t of loraTargets(cfg, llama)) {
    const s = seed + t.layer * 10 + t.moduleName.length;
    layers[t.layer]![t.module] = {
      A: fromFloat32(randomFloats(t.r * t.inFeatures, s), [t.r, t.inFeatures], dtype),
      B: fromFloat32(randomFloats(t.outFeatures * t.r, s + 1), [t.outFeatures, t.r], dtype),
    };
  }
  return { config: cfg, layers };
}

/** Writes an adapter directory as-is (no validation), for building broken ones. */
async function writeAdapterDir(config: Record<string, unknown>, tensors: Map<string, HostTensor>): Promise<string> {
  const dir = await tempDir();
  await writeFile(join(dir, "adapter_config.json"), JSON.stringify(config));
  await writeSafetensors(join(dir, "adapter_model.safetensors"), tensors, { metadata: { format: "pt" } });
  return dir;
}

async function loadErr(dir: string, llama: LlamaConfig = LLAMA_TINY_A): Promise<string> {
  const err = await loadAdapter(dir, llama).then(
    () => undefined,
    (e: unknown) => e,
  );
  expect(err).toBeInstanceOf(FormatError);
  return (err as Error).message;
}

async function fixtureParts(): Promise<{ config: Record<string, unknown>; tensors: Map<string, HostTensor> }> {
  const config = JSON.parse(await readFile(join(FIXTURE, "adapter_config.json"), "utf8"));
  const { tensors } = await readSafetensors(join(FIXTURE, "adapter_model.safetensors"));
  return { config, tensors };
}

function matmul(a: Float32Array, b: Float32Array, m: number, k: number, n: number): Float64Array {
  const out = new Float64Array(m * n);
  for (let i = 0; i < m; i++)
    for (let p = 0; p < k; p++) for (let j = 0; j < n; j++) out[i * n + j]! += a[i * k + p]! * b[p * n + j]!;
  return out;
}

describe("the fixture adapter", () => {
  it("loads into the structured form with PEFT's orientation", async () => {
    const a = await loadAdapter(FIXTURE, LLAMA_TINY_A);
    expect(a.config).toMatchObject({
      r: 4,
      loraAlpha: 8,
      loraDropout: 0,
      targetModules: ["q_proj", "v_proj"],
      useRslora: false,
    });
    expect(a.layers).toHaveLength(2);
    expect(a.layers.map((l) => Object.keys(l).sort())).toEqual([
      ["q", "v"],
      ["q", "v"],
    ]);
    expect(a.layers[0]!.q!.A).toMatchObject({ dtype: "F32", shape: [4, 64] });
    expect(a.layers[1]!.v!.B).toMatchObject({ dtype: "F32", shape: [64, 4] });
    const { tensors } = await fixtureParts();
    expect(
      tensorsEqual(a.layers[1]!.v!.B, tensors.get("base_model.model.model.layers.1.self_attn.v_proj.lora_B.weight")!),
    ).toBe(true);
    expect(toFloat32(a.layers[0]!.q!.B).some((x) => x !== 0)).toBe(true);
  });

  it("W + scale * B @ A reproduces the fixture's merge_and_unload weights (so the orientation is right)", async () => {
    const a = await loadAdapter(FIXTURE, LLAMA_TINY_A);
    const { tensors: base } = await readSafetensors(join(FIXTURE, "model.safetensors"));
    const { tensors: expected } = await readSafetensors(join(FIXTURE, "expected.safetensors"));
    for (const t of loraTargets(a.config, LLAMA_TINY_A)) {
      const pair = a.layers[t.layer]![t.module]!;
      const W = toFloat32(base.get(`${t.moduleName}.weight`)!);
      const merged = toFloat32(expected.get(`merged.${t.moduleName}.weight`)!);
      const BA = matmul(toFloat32(pair.B), toFloat32(pair.A), t.outFeatures, t.r, t.inFeatures);
      // The same delta from the right-multiplying [in, r] / [r, out] copies, transposed back.
      const mm = loraPairToMatmul(pair);
      expect(mm.A.shape).toEqual([t.inFeatures, t.r]);
      expect(mm.B.shape).toEqual([t.r, t.outFeatures]);
      const ATBT = matmul(toFloat32(mm.A), toFloat32(mm.B), t.inFeatures, t.r, t.outFeatures);
      let worst = 0;
      for (let o = 0; o < t.outFeatures; o++) {
        for (let i = 0; i < t.inFeatures; i++) {
          const want = merged[o * t.inFeatures + i]!;
          const got = W[o * t.inFeatures + i]! + t.scale * BA[o * t.inFeatures + i]!;
          expect(ATBT[i * t.outFeatures + o]).toBeCloseTo(BA[o * t.inFeatures + i]!, 12);
          worst = Math.max(worst, Math.abs(got - want) / Math.max(1e-3, Math.abs(want)));
        }
      }
      expect(worst, t.moduleName).toBeLessThan(1e-5);
    }
  });

  it("the fixture's gradients and AdamW results have the adapter's structure", async () => {
    const { tensors } = await readSafetensors(join(FIXTURE, "expected.safetensors"));
    const cfg = (await loadAdapter(FIXTURE, LLAMA_TINY_A)).config;
    for (const prefix of ["grad.", "after_adamw."]) {
      const sub = new Map(
        [...tensors].filter(([k]) => k.startsWith(prefix)).map(([k, v]) => [k.slice(prefix.length), v]),
      );
      const g = adapterFromTensors(cfg, sub, LLAMA_TINY_A);
      expect(g.layers[1]!.q!.A.shape).toEqual([4, 64]);
    }
  });

  it("saving a loaded fixture gives byte-identical weights, and loading that gives identical tensors", async () => {
    const a = await loadAdapter(FIXTURE, LLAMA_TINY_A);
    const dir = join(await tempDir(), "out");
    await saveAdapter(dir, a, LLAMA_TINY_A);
    expect(await listDir(dir)).toEqual(["adapter_config.json", "adapter_model.safetensors"]);
    const saved = await readFile(join(dir, "adapter_model.safetensors"));
    expect(saved.equals(await readFile(join(FIXTURE, "adapter_model.safetensors")))).toBe(true);
    const back = await loadAdapter(dir, LLAMA_TINY_A);
    expect(back.config).toEqual(a.config);
    const t0 = adapterTensors(a);
    const t1 = adapterTensors(back);
    expect([...t1.keys()]).toEqual([...t0.keys()]);
    for (const [k, t] of t0) expect(tensorsEqual(t1.get(k)!, t), k).toBe(true);
  });

  it("writes every adapter_config.json field PEFT needs", async () => {
    const a = await loadAdapter(FIXTURE, LLAMA_TINY_A);
    const dir = await tempDir();
    await saveAdapter(dir, a, LLAMA_TINY_A);
    const json = JSON.parse(await readFile(join(dir, "adapter_config.json"), "utf8"));
    for (const k of [
      "peft_type",
      "task_type",
      "r",
      "lora_alpha",
      "lora_dropout",
      "target_modules",
      "bias",
      "fan_in_fan_out",
      "init_lora_weights",
      "inference_mode",
      "use_rslora",
      "use_dora",
      "modules_to_save",
      "base_model_name_or_path",
      "revision",
      "layers_to_transform",
      "layers_pattern",
      "rank_pattern",
      "alpha_pattern",
      "peft_version",
    ]) {
      expect(json, k).toHaveProperty(k);
    }
    expect(json).toMatchObject({
      peft_type: "LORA",
      task_type: "CAUSAL_LM",
      bias: "none",
      use_dora: false,
      fan_in_fan_out: false,
      modules_to_save: null,
    });
    // Every field the fixture (written by PEFT 0.21) has in common with ours agrees.
    const fixture = JSON.parse(await readFile(join(FIXTURE, "adapter_config.json"), "utf8"));
    for (const k of Object.keys(json)) if (k in fixture) expect(json[k], k).toEqual(fixture[k]);
  });
});

describe("round trips", () => {
  it("bf16 and f16 adapters on every module of a GQA model, with rank/alpha patterns and rsLoRA, save and load bit-exactly", async () => {
    for (const dtype of ["BF16", "F16", "F32"] as const) {
      const cfg = makeLoraConfig({
        r: 4,
        loraAlpha: 16,
        targetModules: "all-linear",
        rankPattern: { v_proj: 2, "model.layers.2.mlp.down_proj": 6 },
        alphaPattern: { "layers.1.self_attn.o_proj": 3 },
        useRslora: true,
        baseModelNameOrPath: "meta-llama/Llama-2-7b-hf",
      });
      const a = randomAdapter(cfg, GQA, dtype);
      expect(a.layers[0]!.k!.B.shape).toEqual([16, 4]);
      expect(a.layers[0]!.v!.A.shape).toEqual([2, 32]);
      expect(a.layers[2]!.down!.A.shape).toEqual([6, 48]);
      const dir = await tempDir();
      await saveAdapter(dir, a, GQA);
      const back = await loadAdapter(dir, GQA);
      expect(back.config).toEqual(cfg);
      const t0 = adapterTensors(a);
      const t1 = adapterTensors(back);
      expect(t1.size).toBe(3 * 7 * 2);
      for (const [k, t] of t0) expect(tensorsEqual(t1.get(k)!, t), k).toBe(true);
    }
  });

  it("regex target_modules and layers_to_transform survive a round trip", async () => {
    const cfg = makeLoraConfig({ r: 2, targetModules: String.raw`.*\.(k_proj|up_proj)`, layersToTransform: null });
    const a = randomAdapter(cfg, GQA);
    const dir = await tempDir();
    await saveAdapter(dir, a, GQA);
    expect((await loadAdapter(dir, GQA)).config.targetModules).toBe(String.raw`.*\.(k_proj|up_proj)`);
    const cfg2 = makeLoraConfig({
      r: 2,
      targetModules: ["q_proj"],
      layersToTransform: [0, 2],
      layersPattern: "layers",
    });
    await saveAdapter(dir, randomAdapter(cfg2, GQA), GQA);
    const back = await loadAdapter(dir, GQA);
    expect(back.layers.map((l) => Object.keys(l))).toEqual([["q"], [], ["q"]]);
  });

  it("converts between PEFT orientation and [in, r] / [r, out]", () => {
    const pair = { A: fromFloat32([1, 2, 3, 4, 5, 6], [2, 3]), B: fromFloat32([1, 2, 3, 4], [2, 2]) };
    const mm = loraPairToMatmul(pair);
    expect(Array.from(toFloat32(mm.A))).toEqual([1, 4, 2, 5, 3, 6]);
    expect(Array.from(toFloat32(mm.B))).toEqual([1, 3, 2, 4]);
    const back = loraPairFromMatmul(mm.A, mm.B);
    expect(tensorsEqual(back.A, pair.A) && tensorsEqual(back.B, pair.B)).toBe(true);
    expect(loraPairFromMatmul(mm.A, mm.B, "BF16").A.dtype).toBe("BF16");
    expect(() => loraPairFromMatmul(mm.A, fromFloat32([1, 2, 3], [3, 1]))).toThrow(/do not chain/);
  });
});

describe("which modules a config targets", () => {
  const names = (cfg: LoraConfig, llama = GQA) => loraTargets(cfg, llama).map((t) => `${t.layer}.${t.module}`);

  it("follows PEFT's suffix, full-name, regex, exclude and layer rules", () => {
    expect(names(makeLoraConfig({ r: 1, targetModules: ["q_proj", "v_proj"] }))).toEqual([
      "0.q",
      "0.v",
      "1.q",
      "1.v",
      "2.q",
      "2.v",
    ]);
    expect(
      names(makeLoraConfig({ r: 1, targetModules: ["self_attn.o_proj", "model.layers.1.mlp.gate_proj"] })),
    ).toEqual(["0.o", "1.o", "1.gate", "2.o"]);
    expect(names(makeLoraConfig({ r: 1, targetModules: String.raw`model\.layers\.1\..*_proj` }))).toEqual([
      "1.q",
      "1.k",
      "1.v",
      "1.o",
      "1.gate",
      "1.up",
      "1.down",
    ]);
    expect(
      names(makeLoraConfig({ r: 1, targetModules: "all-linear", excludeModules: ["mlp.down_proj", "k_proj"] })),
    ).toEqual([0, 1, 2].flatMap((l) => ["q", "v", "o", "gate", "up"].map((m) => `${l}.${m}`)));
    expect(names(makeLoraConfig({ r: 1, targetModules: "ALL-LINEAR", layersToTransform: [2] }))).toEqual(
      ["q", "k", "v", "o", "gate", "up", "down"].map((m) => `2.${m}`),
    );
    expect(
      names(makeLoraConfig({ r: 1, targetModules: ["up_proj"], excludeModules: String.raw`.*layers\.0\..*` })),
    ).toEqual(["1.up", "2.up"]);
    expect(names(makeLoraConfig({ r: 1, targetModules: ["q_proj"], layersToTransform: [1] }))).toEqual(["1.q"]);
    expect(names(makeLoraConfig({ r: 1, targetModules: ["q_proj"] }), LLAMA_TINY_A)).toEqual(["0.q", "1.q"]);
  });

  it("resolves rank_pattern/alpha_pattern per module and scales by alpha/r or alpha/sqrt(r)", () => {
    const cfg = makeLoraConfig({
      r: 8,
      loraAlpha: 16,
      targetModules: ["q_proj", "v_proj"],
      rankPattern: { "layers.1.self_attn.q_proj": 2, v_proj: 4 },
      alphaPattern: { v_proj: 2 },
    });
    const t = loraTargets(cfg, GQA);
    const by = (l: number, m: LoraModule) => t.find((x) => x.layer === l && x.module === m)!;
    expect(by(0, "q")).toMatchObject({ r: 8, alpha: 16, scale: 2, inFeatures: 32, outFeatures: 32 });
    expect(by(1, "q")).toMatchObject({ r: 2, alpha: 16, scale: 8 });
    expect(by(2, "v")).toMatchObject({ r: 4, alpha: 2, scale: 0.5, outFeatures: 16 });
    expect(loraParams({ ...cfg, useRslora: true }, "model.layers.0.self_attn.q_proj").scale).toBeCloseTo(
      16 / Math.sqrt(8),
      12,
    );
    // A pattern must match a whole dotted suffix: "q_proj" does not hit "xq_proj".
    expect(
      loraParams(
        makeLoraConfig({ r: 8, targetModules: ["q_proj"], rankPattern: { q_proj: 1 } }),
        "model.layers.0.self_attn.xq_proj",
      ).r,
    ).toBe(8);
  });

  it("rejects targets the model lacks or that are not projections", () => {
    const err = (cfg: LoraConfig) => {
      try {
        loraTargets(cfg, GQA, "/a/adapter_config.json");
      } catch (e) {
        return (e as Error).message;
      }
      return "no error";
    };
    // As in PEFT, "all-linear" is special only as the whole string, not as a list entry.
    expect(err(makeLoraConfig({ r: 1, targetModules: ["all-linear"] }))).toMatch(
      /entry "all-linear" matches no module/,
    );
    expect(err(makeLoraConfig({ r: 1, targetModules: ["q_proj", "c_attn"] }))).toMatch(
      /^\/a\/adapter_config\.json: field "target_modules": entry "c_attn" matches no module of a Llama model/,
    );
    expect(err(makeLoraConfig({ r: 1, targetModules: ["lm_head"] }))).toMatch(
      /matches module "lm_head", which is not a projection LoRA applies to here/,
    );
    expect(err(makeLoraConfig({ r: 1, targetModules: ["mlp"] }))).toMatch(
      /matches module "model\.layers\.0\.mlp", which is not a projection/,
    );
    expect(err(makeLoraConfig({ r: 1, targetModules: String.raw`.*\.wq` }))).toMatch(
      /field "target_modules": regex ".*\\\\.wq" matches no module/,
    );
    expect(err(makeLoraConfig({ r: 1, targetModules: ["q_proj"], layersToTransform: [3] }))).toMatch(
      /field "layers_to_transform": layer 3 is past the model's 3 layers/,
    );
  });
});

describe("adapter_config.json validation", () => {
  const base = { peft_type: "LORA", r: 4, lora_alpha: 8, target_modules: ["q_proj"] };
  const err = (json: unknown) => {
    try {
      parseLoraConfig(json, "/a/adapter_config.json");
    } catch (e) {
      expect(e).toBeInstanceOf(FormatError);
      return (e as Error).message;
    }
    return "no error";
  };

  it("accepts the fixture's many PEFT 0.21 fields and fills defaults", async () => {
    const { config } = await fixtureParts();
    expect(parseLoraConfig(config).targetModules).toEqual(["q_proj", "v_proj"]);
    expect(parseLoraConfig({ peft_type: "LORA", r: 8 })).toMatchObject({
      loraAlpha: 8,
      targetModules: ["q_proj", "v_proj"],
      rankPattern: {},
    });
    expect(parseLoraConfig({ ...base, layers_to_transform: 1 }).layersToTransform).toEqual([1]);
  });

  it("accepts an adapter_config.json that starts with a UTF-8 byte order mark", async () => {
    const dir = await tempDir();
    await writeFile(
      join(dir, "adapter_config.json"),
      `\uFEFF${await readFile(join(FIXTURE, "adapter_config.json"), "utf8")}`,
    );
    expect(await loadLoraConfig(dir)).toEqual(await loadLoraConfig(FIXTURE));
  });

  it("names the field and what was expected", () => {
    expect(err({ ...base, r: undefined })).toBe(
      '/a/adapter_config.json: field "r": required field is missing (expected a positive integer)',
    );
    expect(err({ ...base, r: 0 })).toMatch(/field "r": .*>0/);
    expect(err({ ...base, peft_type: "IA3" })).toMatch(/field "peft_type": .*"LORA".* \(got "IA3"\)/);
    expect(err({ ...base, peft_type: undefined })).toMatch(/field "peft_type": required field is missing/);
    expect(err({ ...base, use_dora: true })).toMatch(
      /field "use_dora": expected false: DoRA adapters are not supported/,
    );
    expect(err({ ...base, bias: "all" })).toMatch(/field "bias": expected "none", got "all"/);
    expect(err({ ...base, fan_in_fan_out: true })).toMatch(/field "fan_in_fan_out": expected false/);
    expect(err({ ...base, modules_to_save: ["lm_head"] })).toMatch(/field "modules_to_save": expected null or \[\]/);
    expect(err({ ...base, task_type: "SEQ_CLS" })).toMatch(/field "task_type": expected "CAUSAL_LM"/);
    expect(err({ ...base, rank_pattern: { q_proj: "x" } })).toMatch(/field "rank_pattern\.q_proj": expected number/);
    expect(err({ ...base, target_modules: "(unclosed" })).toMatch(/field "target_modules": not a regular expression/);
    expect(err({ ...base, layers_pattern: "h" })).toMatch(/field "layers_pattern": expected "layers"/);
    expect(err({ ...base, init_lora_weights: "pissa_niter_4" })).toMatch(
      /field "init_lora_weights": "pissa_niter_4" adapters need the base weights it modified/,
    );
    expect(parseLoraConfig({ ...base, init_lora_weights: "gaussian" }).initLoraWeights).toBe("gaussian");
    expect(err({ ...base, layer_replication: [[0, 2]] })).toMatch(
      /field "layer_replication": expected null: layer replication is not supported/,
    );
    expect(err({ ...base, trainable_token_indices: [5] })).toMatch(/field "trainable_token_indices": expected null/);
  });
});

describe("adapter weights validation", () => {
  const k = (l: number, m: LoraModule, w: "A" | "B") => peftKey(l, m, w);
  const cfgJson = (over: Record<string, unknown> = {}) => ({
    ...loraConfigToJson(makeLoraConfig({ r: 4, targetModules: ["q_proj", "v_proj"] })),
    ...over,
  });
  const good = () =>
    adapterTensors(randomAdapter(makeLoraConfig({ r: 4, targetModules: ["q_proj", "v_proj"] }), LLAMA_TINY_A));

  it("an adapter targeting a module the model lacks", async () => {
    const dir = await writeAdapterDir(cfgJson({ target_modules: ["q_proj", "wq"] }), good());
    expect(await loadErr(dir)).toMatch(
      new RegExp(`^${dir}/adapter_config\\.json: field "target_modules": entry "wq" matches no module`),
    );
  });

  it("a rank that disagrees with r, or with rank_pattern", async () => {
    const big = adapterTensors(
      randomAdapter(makeLoraConfig({ r: 8, targetModules: ["q_proj", "v_proj"] }), LLAMA_TINY_A),
    );
    const dir = await writeAdapterDir(cfgJson(), big);
    expect(await loadErr(dir)).toBe(
      `${dir}/adapter_model.safetensors: tensor "${k(0, "q", "A")}": rank 8 (shape [8, 64]) disagrees with r in ${dir}/adapter_config.json, ` +
        `which gives 4 for "model.layers.0.self_attn.q_proj"`,
    );
    const dir2 = await writeAdapterDir(cfgJson({ rank_pattern: { "layers.1.self_attn.v_proj": 2 } }), good());
    expect(await loadErr(dir2)).toMatch(
      new RegExp(
        `tensor "${k(1, "v", "A").replaceAll(".", "\\.")}": rank 4 .* disagrees with rank_pattern in .*, which gives 2`,
      ),
    );
    // B's rank is checked on its own too.
    const t = good();
    t.set(k(0, "v", "B"), fromFloat32(new Float32Array(64 * 3), [64, 3]));
    expect(await loadErr(await writeAdapterDir(cfgJson(), t))).toMatch(
      /lora_B\.weight": rank 3 \(shape \[64, 3\]\) disagrees with r/,
    );
  });

  it("A or B shapes that disagree with the module's features", async () => {
    const t = good();
    t.set(k(1, "q", "A"), fromFloat32(new Float32Array(4 * 32), [4, 32]));
    expect(await loadErr(await writeAdapterDir(cfgJson(), t))).toMatch(
      /tensor "base_model\.model\.model\.layers\.1\.self_attn\.q_proj\.lora_A\.weight": shape \[4, 32\], expected \[4, 64\] \(\[r, in_features\] of "model\.layers\.1\.self_attn\.q_proj"\)/,
    );
    const t2 = good();
    t2.set(k(0, "v", "B"), fromFloat32(new Float32Array(4 * 16), [16, 4]));
    expect(await loadErr(await writeAdapterDir(cfgJson(), t2))).toMatch(
      /v_proj\.lora_B\.weight": shape \[16, 4\], expected \[64, 4\]/,
    );
    const t3 = good();
    t3.set(k(0, "v", "B"), fromFloat32(new Float32Array(4), [4]));
    expect(await loadErr(await writeAdapterDir(cfgJson(), t3))).toMatch(
      /v_proj\.lora_B\.weight": expected a 2-D tensor, got shape \[4\]/,
    );
    const t4 = good();
    t4.set(k(0, "v", "B"), fromFloat32(new Float32Array(256), [64, 4], "I32"));
    expect(await loadErr(await writeAdapterDir(cfgJson(), t4))).toMatch(/dtype I32 is not a float type/);
  });

  it("a missing A or B", async () => {
    const t = good();
    t.delete(k(1, "v", "A"));
    expect(await loadErr(await writeAdapterDir(cfgJson(), t))).toMatch(
      /tensor "base_model\.model\.model\.layers\.1\.self_attn\.v_proj\.lora_A\.weight": missing: .*adapter_config\.json targets "model\.layers\.1\.self_attn\.v_proj", which needs lora_A \[4, 64\]/,
    );
    const t2 = good();
    t2.delete(k(0, "q", "B"));
    expect(await loadErr(await writeAdapterDir(cfgJson(), t2))).toMatch(
      /q_proj\.lora_B\.weight": missing: .* which needs lora_B \[64, 4\]/,
    );
  });

  it("tensors for untargeted modules, layers past the model, and foreign keys", async () => {
    const t = good();
    t.set(k(0, "k", "A"), fromFloat32(new Float32Array(256), [4, 64]));
    expect(await loadErr(await writeAdapterDir(cfgJson(), t))).toMatch(
      /k_proj\.lora_A\.weight": module "model\.layers\.0\.self_attn\.k_proj" is not targeted by .*adapter_config\.json \(target_modules: \["q_proj","v_proj"\]\)/,
    );
    const t2 = good();
    t2.set(k(5, "q", "A"), fromFloat32(new Float32Array(256), [4, 64]));
    expect(await loadErr(await writeAdapterDir(cfgJson(), t2))).toMatch(
      /layers\.5\.self_attn\.q_proj\.lora_A\.weight": layer 5 is past the model's 2 layers/,
    );
    for (const [key, hint] of [
      ["base_model.model.lm_head.lora_A.weight", /LoRA on lm_head is not supported/],
      ["base_model.model.model.layers.0.self_attn.q_proj.lora_magnitude_vector", /DoRA is not supported/],
      ["base_model.model.model.layers.0.self_attn.q_proj.lora_A.default.weight", /adapter name inside the key/],
      ["something.else", /expected keys like "base_model\.model\.model\.layers\.0\.self_attn\.q_proj\.lora_A\.weight"/],
    ] as const) {
      const t3 = good();
      t3.set(key, fromFloat32([1], [1]));
      const msg = await loadErr(await writeAdapterDir(cfgJson(), t3));
      expect(msg).toContain(`tensor "${key}": not a LoRA weight of a Llama projection`);
      expect(msg).toMatch(hint);
    }
  });

  it("missing files", async () => {
    const dir = await tempDir();
    expect(await loadErr(dir)).toMatch(/adapter_config\.json: cannot read adapter config/);
    await writeFile(join(dir, "adapter_config.json"), JSON.stringify(cfgJson()));
    await writeFile(join(dir, "adapter_model.bin"), "pickle");
    expect(await loadErr(dir)).toMatch(
      /adapter_model\.safetensors: adapter weights not found \(found adapter_model\.bin/,
    );
  });
});

describe("atomic saves", () => {
  const cfg = makeLoraConfig({ r: 4, targetModules: ["q_proj", "v_proj"] });

  function broken(): LoraAdapter {
    const a = randomAdapter(cfg, LLAMA_TINY_A);
    a.layers[1]!.v!.B = fromFloat32(new Float32Array(32 * 4), [32, 4]);
    return a;
  }

  it("a failing save into a new directory leaves nothing behind", async () => {
    const root = await tempDir();
    const dir = join(root, "adapter");
    await expect(saveAdapter(dir, broken(), LLAMA_TINY_A)).rejects.toThrow(
      /v_proj\.lora_B\.weight": shape \[32, 4\], expected \[64, 4\]/,
    );
    expect(await listDir(root)).toEqual([]);
  });

  it("a failing save does not clobber an existing good adapter", async () => {
    const dir = await tempDir();
    await saveAdapter(dir, await loadAdapter(FIXTURE, LLAMA_TINY_A), LLAMA_TINY_A);
    const before = [
      await readFile(join(dir, "adapter_config.json")),
      await readFile(join(dir, "adapter_model.safetensors")),
    ];
    await expect(saveAdapter(dir, broken(), LLAMA_TINY_A)).rejects.toThrow(FormatError);
    expect(await listDir(dir)).toEqual(["adapter_config.json", "adapter_model.safetensors"]);
    expect((await readFile(join(dir, "adapter_config.json"))).equals(before[0]!)).toBe(true);
    expect((await readFile(join(dir, "adapter_model.safetensors"))).equals(before[1]!)).toBe(true);
    expect(
      tensorsEqual(
        (await loadAdapter(dir, LLAMA_TINY_A)).layers[0]!.q!.A,
        (await loadAdapter(FIXTURE, LLAMA_TINY_A)).layers[0]!.q!.A,
      ),
    ).toBe(true);
  });

  it("a save that cannot replace a file fails before touching the old adapter", async () => {
    const dir = await tempDir();
    await saveAdapter(dir, await loadAdapter(FIXTURE, LLAMA_TINY_A), LLAMA_TINY_A);
    const weightsBefore = await readFile(join(dir, "adapter_model.safetensors"));
    // A directory where the config goes cannot be replaced; the weights must stay the old ones and no temp file remain.
    await rm(join(dir, "adapter_config.json"));
    await mkdir(join(dir, "adapter_config.json"));
    await expect(saveAdapter(dir, randomAdapter(cfg, LLAMA_TINY_A, "F32", 5), LLAMA_TINY_A)).rejects.toThrow(
      /exists and is not a regular file/,
    );
    expect((await readFile(join(dir, "adapter_model.safetensors"))).equals(weightsBefore)).toBe(true);
    expect(await listDir(dir)).toEqual(["adapter_config.json", "adapter_model.safetensors"]);
  });
});

describe("features used by validation", () => {
  it("match the HF Linear shapes of a GQA model", () => {
    const f = linearFeatures(GQA);
    expect(f.k).toEqual({ in: 32, out: 16 });
    expect(f.o).toEqual({ in: 32, out: 32 });
  });
});
