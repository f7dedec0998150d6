// Loading checkpoints and adapters into the model's layout: round trips bit for bit, and every bad input named precisely.
import { afterEach, describe, expect, it } from "vitest";
import { chmod, cp, readdir, readFile, truncate, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { castTensor, tensorsEqual, toFloat32, type HostTensor } from "../../src/formats/host_tensor.ts";
import { FormatError } from "../../src/formats/errors.ts";
import { HfCheckpoint } from "../../src/formats/hf_checkpoint.ts";
import { loadAdapter, saveAdapter, adapterTensors, makeLoraConfig } from "../../src/formats/peft.ts";
import { readSafetensors, writeSafetensors } from "../../src/formats/safetensors.ts";
import { loraFromAdapter, loraToAdapter, initLora, loraLayout } from "../../models/lora.ts";
import { llamaToHf, loadLlamaWeights } from "../../models/weights.ts";
import { LLAMA_TINY } from "../../models/llama.ts";
import { FIXTURE, tempDir } from "./helpers.ts";

const cleanups: Array<() => Promise<void>> = [];
afterEach(async () => {
  while (cleanups.length) await cleanups.pop()!();
});

/** A writable copy of the fixture folder. */
async function fixtureCopy(): Promise<string> {
  const t = await tempDir("io");
  cleanups.push(t.cleanup);
  await cp(FIXTURE, t.dir, { recursive: true });
  for (const f of await readdir(t.dir)) await chmod(join(t.dir, f), 0o644);
  return t.dir;
}

async function editJson(file: string, edit: (j: Record<string, unknown>) => void): Promise<void> {
  const j = JSON.parse(await readFile(file, "utf8"));
  edit(j);
  await writeFile(file, JSON.stringify(j));
}

async function rejection(p: Promise<unknown>): Promise<FormatError> {
  const e = await p.then(
    () => undefined,
    (e: unknown) => e,
  );
  expect(e).toBeInstanceOf(FormatError);
  return e as FormatError;
}

describe("round trips", () => {
  it("checkpoint -> stacked [L, in, out] layout -> HF names and layout is bit-exact", async () => {
    const { config, weights } = await loadLlamaWeights(FIXTURE);
    expect(weights.layers.q.shape).toEqual([2, 64, 64]);
    expect(weights.layers.gate.shape).toEqual([2, 64, 172]);
    expect(weights.head.shape).toEqual([64, 512]);
    const back = llamaToHf(config, weights);
    const ckpt = await HfCheckpoint.open(FIXTURE);
    try {
      expect([...back.keys()].sort()).toEqual(ckpt.names().sort());
      for (const name of ckpt.names()) expect(tensorsEqual(back.get(name)!, await ckpt.read(name)), name).toBe(true);
    } finally {
      await ckpt.close();
    }
  });

  it("loads base weights as bf16 (rounded to nearest even) for mixed precision", async () => {
    const { weights } = await loadLlamaWeights(FIXTURE, { dtype: "BF16" });
    const f = (await loadLlamaWeights(FIXTURE, { dtype: "F32" })).weights;
    expect(weights.layers.down.dtype).toBe("BF16");
    expect(tensorsEqual(weights.layers.down, castTensor(f.layers.down, "BF16"))).toBe(true);
  });

  it("a PEFT adapter we write is the adapter PEFT wrote, byte for byte, and reads back bit-exact", async () => {
    const { config } = await loadLlamaWeights(FIXTURE);
    const adapter = await loadAdapter(FIXTURE, config);
    const { layout, weights } = loraFromAdapter(adapter, config);
    const t = await tempDir("peft");
    cleanups.push(t.cleanup);
    await saveAdapter(t.dir, loraToAdapter(layout, weights, config), config);
    const ours = await readFile(join(t.dir, "adapter_model.safetensors"));
    const theirs = await readFile(join(FIXTURE, "adapter_model.safetensors"));
    expect(Buffer.compare(ours, theirs)).toBe(0);
    const again = adapterTensors(await loadAdapter(t.dir, config));
    for (const [k, v] of adapterTensors(adapter)) expect(tensorsEqual(again.get(k)!, v), k).toBe(true);
    const cfgJson = JSON.parse(await readFile(join(t.dir, "adapter_config.json"), "utf8"));
    expect([cfgJson.r, cfgJson.lora_alpha, cfgJson.target_modules, cfgJson.peft_type]).toEqual([
      4,
      8,
      ["q_proj", "v_proj"],
      "LORA",
    ]);
  });

  it("fresh adapters start as PEFT's: A bounded by 1/sqrt(in), B zero; padded ranks stay zero", () => {
    const lc = makeLoraConfig({
      r: 4,
      loraAlpha: 8,
      targetModules: ["q_proj", "down_proj"],
      rankPattern: { down_proj: 2 },
    });
    const layout = loraLayout(lc, LLAMA_TINY);
    const w = initLora(layout, LLAMA_TINY, 3);
    const a = toFloat32(w.q!.a);
    expect(Math.max(...a.map(Math.abs))).toBeLessThanOrEqual(1 / Math.sqrt(32));
    expect(Math.max(...a.map(Math.abs))).toBeGreaterThan(0.5 / Math.sqrt(32));
    expect(toFloat32(w.q!.b).every((x) => x === 0)).toBe(true);
    expect(layout.rank.down).toBe(2);
    expect(w.down!.a.shape).toEqual([2, 40, 2]);
  });
});

describe("bad inputs are named: file, tensor, expectation", () => {
  it("a checkpoint tensor whose shape disagrees with config.json", async () => {
    const dir = await fixtureCopy();
    await editJson(join(dir, "config.json"), (j) => (j.intermediate_size = 170));
    const e = await rejection(loadLlamaWeights(dir));
    expect(e.message).toBe(
      `${join(dir, "model.safetensors")}: tensor "model.layers.0.mlp.gate_proj.weight" has shape [172, 64], expected [170, 64] = [intermediate_size, hidden_size] from ${join(dir, "config.json")}`,
    );
  });

  it("a missing tensor", async () => {
    const dir = await fixtureCopy();
    const { tensors } = await readSafetensors(join(dir, "model.safetensors"));
    tensors.delete("model.layers.1.self_attn.k_proj.weight");
    await writeSafetensors(join(dir, "model.safetensors"), tensors as Map<string, HostTensor>, {
      metadata: { format: "pt" },
    });
    const e = await rejection(loadLlamaWeights(dir));
    expect(e.message).toMatch(
      /model\.safetensors: missing tensor "model\.layers\.1\.self_attn\.k_proj\.weight" \(expected \[64, 64\] = \[num_key_value_heads\*head_dim, hidden_size\]/,
    );
    expect(e.tensor).toBe("model.layers.1.self_attn.k_proj.weight");
  });

  it("a truncated safetensors file", async () => {
    const dir = await fixtureCopy();
    await truncate(join(dir, "model.safetensors"), 600_000);
    const e = await rejection(loadLlamaWeights(dir));
    expect(e.message).toMatch(
      /model\.safetensors: file is truncated: tensor "model\.norm\.weight" ends at byte \d+ of the data region but only \d+ bytes follow the header/,
    );
  });

  it("a corrupt safetensors header", async () => {
    const dir = await fixtureCopy();
    const bytes = await readFile(join(dir, "model.safetensors"));
    bytes[30] = 0; // a control character inside the header's JSON
    await writeFile(join(dir, "model.safetensors"), bytes);
    const e = await rejection(loadLlamaWeights(dir));
    expect(e.message).toMatch(/model\.safetensors: safetensors header is not valid JSON/);
  });

  it("an adapter that targets modules the model lacks", async () => {
    const dir = await fixtureCopy();
    const { config } = await loadLlamaWeights(dir);
    await editJson(join(dir, "adapter_config.json"), (j) => (j.target_modules = ["q_proj", "w1"]));
    const e = await rejection(loadAdapter(dir, config));
    expect(e.message).toBe(
      `${join(dir, "adapter_config.json")}: field "target_modules": entry "w1" matches no module of a Llama model (its projections are q_proj, k_proj, v_proj, o_proj, gate_proj, up_proj, down_proj)`,
    );
    await editJson(join(dir, "adapter_config.json"), (j) => (j.target_modules = ["q_proj", "lm_head"]));
    expect((await rejection(loadAdapter(dir, config))).message).toMatch(
      /field "target_modules": matches module "lm_head", which is not a projection LoRA applies to here/,
    );
  });

  it("an adapter whose rank disagrees with its config", async () => {
    const dir = await fixtureCopy();
    const { config } = await loadLlamaWeights(dir);
    await editJson(join(dir, "adapter_config.json"), (j) => (j.r = 8));
    const e = await rejection(loadAdapter(dir, config));
    expect(e.message).toBe(
      `${join(dir, "adapter_model.safetensors")}: tensor "base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight": rank 4 (shape [4, 64]) disagrees with r in ${join(dir, "adapter_config.json")}, which gives 8 for "model.layers.0.self_attn.q_proj"`,
    );
  });

  it("a failed save leaves nothing half-written", async () => {
    const dir = await fixtureCopy();
    const { config } = await loadLlamaWeights(dir);
    const adapter = await loadAdapter(dir, config);
    const before = await Promise.all(
      ["adapter_config.json", "adapter_model.safetensors"].map((f) => readFile(join(dir, f))),
    );
    // Rank 4 tensors under a config that says 2: rejected before any byte is written.
    const bad = { ...adapter, config: { ...adapter.config, r: 2 } };
    await rejection(saveAdapter(dir, bad, config));
    const after = await Promise.all(
      ["adapter_config.json", "adapter_model.safetensors"].map((f) => readFile(join(dir, f))),
    );
    expect(after.map((b, i) => Buffer.compare(b, before[i]!))).toEqual([0, 0]);
    expect((await readdir(dir)).sort()).toEqual([
      "adapter_config.json",
      "adapter_model.safetensors",
      "config.json",
      "expected.json",
      "expected.safetensors",
      "generation_config.json",
      "model.safetensors",
    ]);
  });
});
