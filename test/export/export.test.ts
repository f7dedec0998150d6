// `tessera export`: HF checkpoints from an HF folder and from the SmolLM2 GGUF, with a LoRA adapter merged, loaded back and compared.
//
// The tiny model is ../shared/fixtures/llama-tiny-a, whose expected.safetensors holds what transformers + PEFT compute
// for it (logits with the adapter, and merge_and_unload's weights). SmolLM2 is fetched on first use, never skipped.
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { readFileSync } from "node:fs";
import { chmod, cp, mkdir, readdir, readFile, stat, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { execa } from "execa";
import type { Tensor } from "tessera";
import { exportModel, parseShardSize } from "../../src/export/export.ts";
import { TesseraError } from "../../src/errors.ts";
import { llamaWeightSpecs } from "../../src/formats/hf_checkpoint.ts";
import type { LlamaConfig } from "../../src/formats/hf_config.ts";
import { fromFloat32, toFloat32, type HostTensor } from "../../src/formats/host_tensor.ts";
import { ensureModel } from "../../src/formats/model_fetch.ts";
import { loadAdapter, makeLoraConfig, saveAdapter } from "../../src/formats/peft.ts";
import { readSafetensors, SafetensorsFile } from "../../src/formats/safetensors.ts";
import { pjrtOnHost } from "../../src/parity/execute.ts";
import { Tokenizer } from "../../src/text/tokenizer.ts";
import { applyChatTemplate } from "../../src/text/chat_template.ts";
import { loraFromAdapter, mulberry32, type LoraWeights } from "../../models/lora.ts";
import { LLAMA_TINY, llamaLogits, type LlamaWeights } from "../../models/llama.ts";
import { loadGgufLlamaWeights, loadLlamaWeights } from "../../models/weights.ts";
import { FIXTURE, randomAdapter, REPO_ROOT, relErr, tempDir, uniform } from "../models/helpers.ts";
import type { LoraAdapter } from "../../src/formats/peft.ts";

const BIN = join(REPO_ROOT, "bin", "tessera.mjs");
const SMOL_FIXTURE = join(REPO_ROOT, "../shared/fixtures/smollm2-135m");

let root: string, cleanup: () => Promise<void>;
beforeAll(async () => {
  ({ dir: root, cleanup } = await tempDir("export"));
});
afterAll(() => cleanup());

/** Logits [B, S, vocab] of `w` (with `lora` applied as an adapter, when given) on PJRT CPU. */
async function logits(
  cfg: LlamaConfig,
  w: LlamaWeights<HostTensor>,
  ids: HostTensor,
  lora?: ReturnType<typeof loraFromAdapter>,
): Promise<Float32Array> {
  const out = await pjrtOnHost(
    (w: LlamaWeights, l: LoraWeights, t: Tensor) =>
      llamaLogits(cfg, w, t, lora ? { lora: { weights: l, layout: lora.layout } } : {}),
    [w as never, (lora?.weights ?? {}) as never, ids],
  );
  return toFloat32(out as HostTensor);
}

/** A writable copy of the tiny fixture (model + adapter in one folder) with tokenizer files beside them. */
async function tinySource(): Promise<string> {
  const dir = join(root, `src-${Math.random().toString(36).slice(2)}`);
  await cp(FIXTURE, dir, { recursive: true });
  for (const f of await readdir(dir)) await chmod(join(dir, f), 0o644);
  await writeFile(join(dir, "tokenizer.json"), '{"version":"1.0","model":{"type":"BPE"}}\n');
  await writeFile(join(dir, "tokenizer_config.json"), '{"chat_template":"{{ messages }}","bos_token":"<s>"}\n');
  return dir;
}

async function json(file: string): Promise<Record<string, unknown>> {
  return JSON.parse(await readFile(file, "utf8")) as Record<string, unknown>;
}

async function rejection(p: Promise<unknown>): Promise<TesseraError> {
  const e = await p.then(
    () => undefined,
    (e: unknown) => e,
  );
  expect(e).toBeInstanceOf(TesseraError);
  return e as TesseraError;
}

describe("export of an HF checkpoint with a PEFT adapter merged (the tiny fixture)", () => {
  const expected = new Map<string, HostTensor>();
  beforeAll(async () => {
    for (const [k, v] of (await readSafetensors(join(FIXTURE, "expected.safetensors"))).tensors) expected.set(k, v);
  });

  it("sharded with an index naming every HF tensor; merged weights equal PEFT's merge_and_unload; logits equal transformers + PEFT and the source with its adapter to 1e-5", async () => {
    const src = await tinySource();
    const out = join(root, "tiny-merged");
    const r = await exportModel({ model: src, adapter: src, out, maxShardBytes: 150_000 });
    expect(r.merged?.modules).toEqual(["q", "v"]);
    expect(r.shards).toBeGreaterThan(1);

    const index = (await json(join(out, "model.safetensors.index.json"))) as {
      metadata: { total_size: number };
      weight_map: Record<string, string>;
    };
    const names = llamaWeightSpecs(r.config).map((s) => s.name);
    expect(names).toContain("model.layers.1.self_attn.q_proj.weight");
    expect(names).toContain("lm_head.weight");
    expect(Object.keys(index.weight_map).sort()).toEqual([...names].sort());
    const shards = [...new Set(Object.values(index.weight_map))].sort();
    expect(shards.length).toBe(r.shards);
    expect(shards[0]).toBe(`model-00001-of-${String(r.shards).padStart(5, "0")}.safetensors`);
    let total = 0;
    for (const s of shards) {
      const f = await SafetensorsFile.open(join(out, s));
      try {
        for (const k of f.keys()) {
          expect(index.weight_map[k]).toBe(s);
          total += f.info(k).byteLength;
        }
        expect(f.metadata).toEqual({ format: "pt" });
      } finally {
        await f.close();
      }
    }
    expect(index.metadata.total_size).toBe(total);
    expect(await stat(join(out, "model.safetensors")).catch(() => null)).toBeNull();

    const cfg = await json(join(out, "config.json"));
    expect(cfg).toMatchObject({
      architectures: ["LlamaForCausalLM"],
      model_type: "llama",
      torch_dtype: "float32",
      dtype: "float32",
      tie_word_embeddings: false,
      bos_token_id: 1,
      eos_token_id: 2,
      rope_scaling: null,
      // A field Tessera does not read survives from the source's config.json.
      initializer_range: 0.02,
    });
    for (const f of ["tokenizer.json", "tokenizer_config.json", "generation_config.json"])
      expect(await readFile(join(out, f), "utf8"), f).toBe(await readFile(join(src, f), "utf8"));
    expect(r.files).not.toContain("adapter_config.json");

    const back = await loadLlamaWeights(out);
    for (const [k, want] of expected) {
      if (!k.startsWith("merged.")) continue;
      const name = k.slice("merged.".length);
      const layer = Number(/layers\.(\d+)\./.exec(name)![1]);
      const module = name.includes("q_proj") ? "q" : "v";
      // back.weights are [L, in, out]; PEFT's are torch's [out, in].
      const stacked = toFloat32(back.weights.layers[module]);
      const [, fin, fout] = back.weights.layers[module].shape as [number, number, number];
      const ours = new Float32Array(fin * fout);
      for (let i = 0; i < fin; i++)
        for (let o = 0; o < fout; o++) ours[o * fin + i] = stacked[layer * fin * fout + i * fout + o]!;
      expect(relErr(ours, toFloat32(want)), name).toBeLessThan(1e-6);
    }

    const ids = expected.get("input_ids")!;
    const merged = await logits(back.config, back.weights, ids);
    const source = await loadLlamaWeights(src);
    const withAdapter = await logits(
      source.config,
      source.weights,
      ids,
      loraFromAdapter(await loadAdapter(src, source.config), source.config),
    );
    const vsTessera = relErr(merged, withAdapter);
    const vsPeft = relErr(merged, toFloat32(expected.get("logits_lora")!));
    console.log(
      `tiny merged export: logits vs source + adapter ${vsTessera.toExponential(2)}, vs transformers + PEFT ${vsPeft.toExponential(2)}`,
    );
    expect(vsTessera).toBeLessThan(1e-5);
    expect(vsPeft).toBeLessThan(1e-5);
  });

  it("--dtype bf16: BF16 tensors, config says bfloat16, each weight the f32 merge rounded once", async () => {
    const src = await tinySource();
    const f32 = join(root, "tiny-f32");
    const bf16 = join(root, "tiny-bf16");
    await exportModel({ model: src, adapter: src, out: f32 });
    const r = await exportModel({ model: src, adapter: src, out: bf16, dtype: "BF16" });
    expect(r.shards).toBe(1);
    expect(r.files).toContain("model.safetensors");
    expect(r.files).not.toContain("model.safetensors.index.json");
    expect(await json(join(bf16, "config.json"))).toMatchObject({ torch_dtype: "bfloat16", dtype: "bfloat16" });
    const a = (await readSafetensors(join(f32, "model.safetensors"))).tensors;
    const b = (await readSafetensors(join(bf16, "model.safetensors"))).tensors;
    expect([...b.keys()].sort()).toEqual([...a.keys()].sort());
    for (const [k, t] of b) {
      expect(t.dtype, k).toBe("BF16");
      expect(Buffer.from(t.data).equals(Buffer.from(fromFloat32(toFloat32(a.get(k)!), t.shape, "BF16").data)), k).toBe(
        true,
      );
    }
  });

  it("refuses a non-empty --out and leaves it alone; --overwrite replaces it whole; bad input writes nothing", async () => {
    const src = await tinySource();
    const out = join(root, "tiny-guarded");
    await mkdir(out);
    await writeFile(join(out, "keep.txt"), "mine");
    const e = await rejection(exportModel({ model: src, out }));
    expect(e.code).toBe("ERR_OUT_NOT_EMPTY");
    expect(e.exitCode).toBe(1);
    expect(await readdir(out)).toEqual(["keep.txt"]);

    // An adapter made for another model fails while reading, before the temporary folder exists.
    const other = join(root, "other-adapter");
    const q = makeLoraConfig({ r: 2, loraAlpha: 4, targetModules: ["q_proj"] });
    await saveAdapter(other, randomAdapter(LLAMA_TINY, q), LLAMA_TINY);
    const wrong = await rejection(exportModel({ model: src, adapter: other, out, overwrite: true }));
    expect(wrong.message).toContain("adapter_model.safetensors");
    expect(await readdir(out)).toEqual(["keep.txt"]);
    expect((await readdir(root)).filter((n) => n.startsWith("."))).toEqual([]);

    const inside = await rejection(exportModel({ model: src, out: join(src, "export") }));
    expect(inside.code).toBe("ERR_OUT_OVERLAPS_INPUT");

    await exportModel({ model: src, out, overwrite: true });
    const after = await readdir(out);
    expect(after).not.toContain("keep.txt");
    expect(after).toContain("model.safetensors");
    expect((await readdir(root)).filter((n) => n.startsWith("."))).toEqual([]);
  });

  it("the CLI: usage mistakes exit 2, a refused --out exits 1, an export prints what it wrote", async () => {
    const src = await tinySource();
    const run = (args: string[]) => execa("node", [BIN, "export", ...args], { reject: false, cwd: root });
    const noMerge = await run(["--model", src, "--adapter", src, "--out", join(root, "cli-a")]);
    expect(noMerge.exitCode).toBe(2);
    expect(noMerge.stderr).toContain("--adapter needs --merge");
    const badSize = await run(["--model", src, "--out", join(root, "cli-a"), "--max-shard-size", "big"]);
    expect(badSize.exitCode).toBe(2);
    expect(badSize.stderr).toContain("--max-shard-size must be a size");

    const ok = await run(["--model", src, "--adapter", src, "--merge", "--out", "cli-b", "--dtype", "bf16"]);
    expect(ok.stderr).toBe(
      [
        `tessera export: reading the checkpoint ${src}`,
        `tessera export: merging ${src} (W + scale·B·A in f32, on q,v)`,
        "tessera export: writing 21 tensors (BF16) to cli-b",
      ].join("\n"),
    );
    expect(ok.exitCode).toBe(0);
    expect(ok.stdout).toContain("merged   ");
    expect(ok.stdout).toContain("LoRA on q,v, rank 4; W + scale·B·A in f32, then BF16");
    expect(ok.stdout).toContain("weights  21 tensors, BF16, ");
    expect(ok.stdout).toContain(
      "wrote    cli-b: config.json, generation_config.json, model.safetensors, tokenizer.json, tokenizer_config.json",
    );
    const again = await run(["--model", src, "--out", "cli-b"]);
    expect(again.exitCode).toBe(1);
    expect(again.stderr).toMatch(/^error: --out .*cli-b is not empty \(config\.json, /);
  });

  it("--max-shard-size reads sizes as HF's max_shard_size does", () => {
    expect(parseShardSize("2GB")).toBe(2e9);
    expect(parseShardSize("500MB")).toBe(5e8);
    expect(parseShardSize("1GiB")).toBe(1024 ** 3);
    expect(parseShardSize("123456")).toBe(123456);
    expect(parseShardSize("0")).toBeUndefined();
    expect(parseShardSize("-1GB")).toBeUndefined();
    expect(parseShardSize("2 TB")).toBeUndefined();
  });
});

describe("export of the SmolLM2 GGUF with a LoRA adapter merged", () => {
  let gguf: string;
  beforeAll(async () => {
    gguf = (await ensureModel("smollm2-135m-instruct", (l) => console.log(`fetch: ${l}`))).path;
  }, 600_000);

  it("loads back with Tessera: logits equal the GGUF with the adapter to 1e-5; tied head; the tokenizer and chat template are the GGUF's", async () => {
    const base = await loadGgufLlamaWeights(gguf);
    const cfg = base.config;
    // An adapter on all seven projections, small enough that the model stays a language model.
    const config = makeLoraConfig({
      r: 4,
      loraAlpha: 8,
      targetModules: ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"],
    });
    const rand = mulberry32(7);
    const adapter: LoraAdapter = { config, layers: [] };
    const f = {
      q: [576, 576],
      k: [576, 192],
      v: [576, 192],
      o: [576, 576],
      gate: [576, 1536],
      up: [576, 1536],
      down: [1536, 576],
    } as const;
    for (let l = 0; l < cfg.numLayers; l++) {
      adapter.layers[l] = {};
      for (const [m, [fin, fout]] of Object.entries(f) as [keyof typeof f, readonly [number, number]][])
        adapter.layers[l]![m] = {
          A: fromFloat32(uniform(4 * fin, 0.05, rand), [4, fin]),
          B: fromFloat32(uniform(fout * 4, 0.05, rand), [fout, 4]),
        };
    }
    const aDir = join(root, "smol-adapter");
    await saveAdapter(aDir, adapter, cfg);
    const out = join(root, "smol-merged");
    const r = await exportModel({ model: gguf, adapter: aDir, out });
    expect(r.files).toEqual([
      "config.json",
      "generation_config.json",
      "model.safetensors",
      "special_tokens_map.json",
      "tokenizer.json",
      "tokenizer_config.json",
    ]);
    expect(await json(join(out, "config.json"))).toMatchObject({
      architectures: ["LlamaForCausalLM"],
      num_hidden_layers: 30,
      num_attention_heads: 9,
      num_key_value_heads: 3,
      rope_theta: 100000,
      tie_word_embeddings: true,
      bos_token_id: 1,
      eos_token_id: 2,
      torch_dtype: "float32",
    });
    expect(await json(join(out, "generation_config.json"))).toEqual({
      bos_token_id: 1,
      eos_token_id: 2,
      pad_token_id: 2,
    });
    const st = await SafetensorsFile.open(join(out, "model.safetensors"));
    try {
      expect(st.keys()).not.toContain("lm_head.weight");
      expect(st.keys().length).toBe(272);
    } finally {
      await st.close();
    }

    const fixture = JSON.parse(readFileSync(join(SMOL_FIXTURE, "expected.json"), "utf8")) as {
      tokenize: { text: string; ids: number[] }[];
      chats: { messages: { role: string; content: string }[]; prompt_text: string; prompt_ids: number[] }[];
    };
    const tok = await Tokenizer.fromHfFolder(out);
    for (const t of fixture.tokenize) expect(tok.encode(t.text), t.text).toEqual(t.ids);
    for (const c of fixture.chats) {
      const prompt = applyChatTemplate(tok, c.messages, { addGenerationPrompt: true });
      expect(prompt).toBe(c.prompt_text);
      expect(tok.encode(prompt, { addSpecialTokens: false })).toEqual(c.prompt_ids);
    }
    expect([tok.bosId, tok.eosId, tok.padId]).toEqual([1, 2, 2]);

    const back = await loadLlamaWeights(out);
    const prompt = fixture.chats[0]!.prompt_ids;
    const ids = fromFloat32(prompt, [1, prompt.length], "I32");
    const exported = await logits(back.config, back.weights, ids);
    const source = await logits(cfg, base.weights, ids, loraFromAdapter(adapter, cfg));
    const err = relErr(exported, source);
    console.log(
      `SmolLM2 merged export: logits over ${prompt.length} positions vs GGUF + adapter ${err.toExponential(2)}`,
    );
    expect(err).toBeLessThan(1e-5);
  }, 600_000);
});
