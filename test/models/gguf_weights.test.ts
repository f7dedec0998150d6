// A GGUF written the way llama.cpp's converter writes an HF checkpoint loads back to that checkpoint's exact weights.
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { join } from "node:path";
import { castTensor, tensorsEqual, toFloat32, type HostTensor } from "../../src/formats/host_tensor.ts";
import { FormatError } from "../../src/formats/errors.ts";
import { GgufLlama, hfName } from "../../src/formats/gguf_llama.ts";
import type { LlamaConfig } from "../../src/formats/hf_config.ts";
import { llamaToHf, loadGgufLlamaWeights } from "../../models/weights.ts";
import { LLAMA_TINY } from "../../models/llama.ts";
import { f32Bytes, writeGguf, type MetaValue, type RawTensor } from "../formats/gguf_writer.ts";
import { randomHfTensors, tempDir } from "./helpers.ts";

const cfg = LLAMA_TINY; // 4 query heads over 2 KV heads, head dim 8

/**
 * llama.cpp's permute (convert_hf_to_gguf.py), written from its numpy: w.reshape(n_head, 2, D/2, cols)
 * .swapaxes(1, 2).reshape(w.shape), i.e. out[h][j][i] = w[h][i][j].
 */
function llamaCppPermute(w: Float32Array, nHead: number, cols: number): Float32Array {
  const D = w.length / cols / nHead;
  const out = new Float32Array(w.length);
  for (let h = 0; h < nHead; h++)
    for (let j = 0; j < D / 2; j++)
      for (let i = 0; i < 2; i++) {
        const from = (h * D + i * (D / 2) + j) * cols;
        const to = (h * D + j * 2 + i) * cols;
        out.set(w.subarray(from, from + cols), to);
      }
  return out;
}

const GGUF_NAME: Record<string, string> = Object.fromEntries(
  ["attn_norm", "attn_q", "attn_k", "attn_v", "attn_output", "ffn_norm", "ffn_gate", "ffn_up", "ffn_down"].flatMap(
    (short) =>
      Array.from({ length: cfg.numLayers }, (_, l) => {
        const g = `blk.${l}.${short}.weight`;
        return [hfName(g)!, g];
      }),
  ),
);
GGUF_NAME["model.embed_tokens.weight"] = "token_embd.weight";
GGUF_NAME["model.norm.weight"] = "output_norm.weight";
GGUF_NAME["lm_head.weight"] = "output.weight";

function meta(c: LlamaConfig): Record<string, MetaValue> {
  return {
    "general.architecture": { type: "str", value: "llama" },
    "llama.block_count": { type: "u32", value: c.numLayers },
    "llama.context_length": { type: "u32", value: c.maxPositionEmbeddings },
    "llama.embedding_length": { type: "u32", value: c.hiddenSize },
    "llama.feed_forward_length": { type: "u32", value: c.intermediateSize },
    "llama.attention.head_count": { type: "u32", value: c.numHeads },
    "llama.attention.head_count_kv": { type: "u32", value: c.numKvHeads },
    "llama.rope.freq_base": { type: "f32", value: c.ropeTheta },
    "llama.attention.layer_norm_rms_epsilon": { type: "f32", value: c.rmsNormEps },
    "llama.vocab_size": { type: "u32", value: c.vocabSize },
    "tokenizer.ggml.bos_token_id": { type: "u32", value: 1 },
    "tokenizer.ggml.eos_token_id": { type: "u32", value: 2 },
  };
}

/** The GGUF tensors of an HF model: q/k permuted; ffn_up stored as F16 (so a converted type goes through too). */
function ggufTensors(hf: Map<string, HostTensor>, c: LlamaConfig): RawTensor[] {
  const out: RawTensor[] = [];
  for (const [name, t] of hf) {
    let v = toFloat32(t);
    if (name.includes("q_proj")) v = llamaCppPermute(v, c.numHeads, c.hiddenSize);
    if (name.includes("k_proj")) v = llamaCppPermute(v, c.numKvHeads, c.hiddenSize);
    const f16 = name.includes("up_proj");
    const bytes = f16 ? castTensor(t, "F16").data : f32Bytes(v);
    out.push({ name: GGUF_NAME[name]!, shape: [...t.shape], typeId: f16 ? 1 : 0, bytes });
  }
  return out;
}

/** What the GGUF holds, in HF terms: ffn_up went through F16. */
function expectedHf(hf: Map<string, HostTensor>): Map<string, HostTensor> {
  return new Map(
    [...hf].map(([k, t]) => [k, k.includes("up_proj") ? castTensor(castTensor(t, "F16"), "F32") : t] as const),
  );
}

let dir: string, cleanup: () => Promise<void>;
beforeAll(async () => {
  ({ dir, cleanup } = await tempDir("gguf"));
});
afterAll(() => cleanup());

async function rejection(p: Promise<unknown>): Promise<FormatError> {
  const e = await p.then(
    () => undefined,
    (e: unknown) => e,
  );
  expect(e).toBeInstanceOf(FormatError);
  return e as FormatError;
}

describe("GGUF -> Llama weights", () => {
  it("undoes the q/k permutation: every weight equals the HF checkpoint's, bit for bit", async () => {
    const hf = randomHfTensors(cfg, 5);
    const path = join(dir, "untied.gguf");
    await writeGguf(path, meta(cfg), ggufTensors(hf, cfg));
    const { config, weights } = await loadGgufLlamaWeights(path);
    expect(config).toMatchObject({ ...cfg, rmsNormEps: Math.fround(cfg.rmsNormEps), bosTokenId: 1, eosTokenId: 2 });
    expect(config.tieWordEmbeddings).toBe(false);
    const back = llamaToHf(config, weights);
    const want = expectedHf(hf);
    expect([...back.keys()].sort()).toEqual([...want.keys()].sort());
    for (const [k, t] of want) expect(tensorsEqual(back.get(k)!, t), k).toBe(true);
  });

  it("without output.weight the head is the embedding (tied), and it converts to bf16 on request", async () => {
    const tied = { ...cfg, tieWordEmbeddings: true };
    const hf = randomHfTensors(tied, 6);
    const path = join(dir, "tied.gguf");
    await writeGguf(path, meta(tied), ggufTensors(hf, tied));
    const { config, weights } = await loadGgufLlamaWeights(path, { dtype: "BF16" });
    expect(config.tieWordEmbeddings).toBe(true);
    expect(weights.head.dtype).toBe("BF16");
    const embed = toFloat32(weights.embed);
    const head = toFloat32(weights.head); // [E, V]
    const [V, E] = [cfg.vocabSize, cfg.hiddenSize];
    for (const [v, e] of [
      [0, 0],
      [V - 1, E - 1],
      [17, 5],
    ] as const)
      expect(head[e * V + v]).toBe(embed[v * E + e]);
    expect(tensorsEqual(weights.embed, castTensor(hf.get("model.embed_tokens.weight")!, "BF16"))).toBe(true);
  });

  it("a missing tensor, a wrong shape, an extra block and another architecture are named", async () => {
    const hf = randomHfTensors(cfg, 7);
    const ts = ggufTensors(hf, cfg);
    const path = join(dir, "bad.gguf");

    await writeGguf(
      path,
      meta(cfg),
      ts.filter((t) => t.name !== "blk.1.ffn_gate.weight"),
    );
    let e = await rejection(GgufLlama.open(path));
    expect(e.message).toBe(
      `${path}: missing tensor "blk.1.ffn_gate.weight" (Hugging Face "model.layers.1.mlp.gate_proj.weight", expected GGUF dimensions [32, 40])`,
    );

    await writeGguf(path, { ...meta(cfg), "llama.feed_forward_length": { type: "u32", value: 48 } }, ts);
    e = await rejection(GgufLlama.open(path));
    expect(e.message).toMatch(
      /tensor "blk\.0\.ffn_gate\.weight" has shape \[40, 32\] \(rows outermost\), expected \[48, 32\] = \[intermediate_size, hidden_size\]/,
    );

    await writeGguf(path, { ...meta(cfg), "llama.block_count": { type: "u32", value: 1 } }, ts);
    e = await rejection(GgufLlama.open(path));
    expect(e.message).toMatch(/unexpected tensor "blk\.1\.\w+\.weight" \(block 1 is past llama\.block_count=1\)/);

    await writeGguf(path, { ...meta(cfg), "general.architecture": { type: "str", value: "qwen2" } }, ts);
    e = await rejection(GgufLlama.open(path));
    expect(e.message).toBe(
      `${path}: metadata "general.architecture": expected "llama", got "qwen2": only the Llama architecture is supported`,
    );
  });
});
