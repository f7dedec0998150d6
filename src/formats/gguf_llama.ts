// A llama-architecture GGUF as a LlamaConfig and Hugging Face-named float tensors (q/k rows un-permuted, head tied if absent).

import { FormatError, fmtShape } from "./errors.ts";
import { GgufFile, type GgufValue } from "./gguf.ts";
import { fromFloat32, type HostTensor } from "./host_tensor.ts";
import { llamaWeightSpecs } from "./hf_checkpoint.ts";
import type { LlamaConfig } from "./hf_config.ts";
import type { HostDType } from "../ir/types.ts";

/** GGUF tensor name inside block N -> Hugging Face name inside `model.layers.N`. */
const LAYER_NAMES: Readonly<Record<string, string>> = {
  attn_norm: "input_layernorm",
  attn_q: "self_attn.q_proj",
  attn_k: "self_attn.k_proj",
  attn_v: "self_attn.v_proj",
  attn_output: "self_attn.o_proj",
  ffn_norm: "post_attention_layernorm",
  ffn_gate: "mlp.gate_proj",
  ffn_up: "mlp.up_proj",
  ffn_down: "mlp.down_proj",
};

/** The Hugging Face name of a GGUF tensor of a Llama, or undefined for a name that is not one. */
export function hfName(ggufName: string): string | undefined {
  if (ggufName === "token_embd.weight") return "model.embed_tokens.weight";
  if (ggufName === "output_norm.weight") return "model.norm.weight";
  if (ggufName === "output.weight") return "lm_head.weight";
  const m = /^blk\.(\d+)\.([a-z_]+)\.weight$/.exec(ggufName);
  const inner = m ? LAYER_NAMES[m[2]!] : undefined;
  return m && inner ? `model.layers.${m[1]}.${inner}.weight` : undefined;
}

/**
 * Undoes llama.cpp's q/k row permutation. Its converter (convert_hf_to_gguf.py, `permute`) reorders each head's
 * rows from Hugging Face's rotate-half layout (first half, second half) to interleaved pairs for its RoPE kernel:
 * GGUF row `h*D + 2j + i` is HF row `h*D + i*D/2 + j`. `w` is row-major [nHeads*D, cols].
 */
export function unpermuteQK(w: Float32Array, nHeads: number, cols: number): Float32Array {
  const rows = w.length / cols;
  const D = rows / nHeads;
  const half = D / 2;
  const out = new Float32Array(w.length);
  for (let h = 0; h < nHeads; h++)
    for (let i = 0; i < 2; i++)
      for (let j = 0; j < half; j++) {
        const src = (h * D + 2 * j + i) * cols;
        out.set(w.subarray(src, src + cols), (h * D + i * half + j) * cols);
      }
  return out;
}

function fail(file: string, key: string, msg: string): never {
  throw new FormatError(`${file}: metadata "${key}": ${msg}`, { file });
}

function intField(g: GgufFile, key: string, fallback?: number): number {
  const v = g.get(key);
  if (v === undefined) {
    if (fallback !== undefined) return fallback;
    fail(g.path, key, "required for a llama model, but absent");
  }
  if (typeof v !== "number" || !Number.isInteger(v) || v <= 0)
    fail(g.path, key, `expected a positive integer, got ${String(v)}`);
  return v;
}

function numField(g: GgufFile, key: string, fallback: number): number {
  const v = g.get(key);
  if (v === undefined) return fallback;
  if (typeof v !== "number" || !(v > 0)) fail(g.path, key, `expected a positive number, got ${String(v)}`);
  return v;
}

function tokenId(v: GgufValue | undefined): number | undefined {
  return typeof v === "number" && Number.isInteger(v) && v >= 0 ? v : undefined;
}

/**
 * The LlamaConfig a llama GGUF describes (llama.cpp's `llama.*` keys, with transformers' defaults where a key is
 * absent). A GGUF without `output.weight` ties the head to the embedding. Variants Tessera's Llama does not
 * compute (RoPE scaling, partial rotary, mixture of experts) are refused by name.
 */
export function ggufLlamaConfig(g: GgufFile): LlamaConfig {
  const arch = g.get("general.architecture");
  if (arch !== "llama")
    fail(
      g.path,
      "general.architecture",
      `expected "llama", got ${JSON.stringify(arch)}: only the Llama architecture is supported`,
    );
  const scaling = g.get("llama.rope.scaling.type");
  if (scaling !== undefined && scaling !== "none")
    fail(
      g.path,
      "llama.rope.scaling.type",
      `expected "none", got ${JSON.stringify(scaling)}: RoPE scaling is not supported`,
    );
  const experts = g.get("llama.expert_count");
  if (experts !== undefined && experts !== 0)
    fail(g.path, "llama.expert_count", `is ${String(experts)}: mixture-of-experts models are not supported`);

  const hiddenSize = intField(g, "llama.embedding_length");
  const numHeads = intField(g, "llama.attention.head_count");
  const numKvHeads = intField(g, "llama.attention.head_count_kv", numHeads);
  if (numHeads % numKvHeads !== 0)
    fail(g.path, "llama.attention.head_count_kv", `expected a divisor of head_count (${numHeads}), got ${numKvHeads}`);
  const headDim = intField(g, "llama.attention.key_length", Math.floor(hiddenSize / numHeads));
  const rotary = intField(g, "llama.rope.dimension_count", headDim);
  if (rotary !== headDim)
    fail(
      g.path,
      "llama.rope.dimension_count",
      `is ${rotary}, expected the head dimension ${headDim}: partial RoPE is not supported`,
    );
  const tokens = g.get("tokenizer.ggml.tokens");
  const embd = g.has("token_embd.weight") ? g.info("token_embd.weight").shape[0] : undefined;
  const vocabSize = intField(g, "llama.vocab_size", Array.isArray(tokens) ? tokens.length : (embd ?? 0));

  const cfg: LlamaConfig = {
    vocabSize,
    hiddenSize,
    intermediateSize: intField(g, "llama.feed_forward_length"),
    numLayers: intField(g, "llama.block_count"),
    numHeads,
    numKvHeads,
    headDim,
    rmsNormEps: numField(g, "llama.attention.layer_norm_rms_epsilon", 1e-5),
    ropeTheta: numField(g, "llama.rope.freq_base", 10000),
    maxPositionEmbeddings: intField(g, "llama.context_length", 2048),
    tieWordEmbeddings: !g.has("output.weight"),
  };
  const bos = tokenId(g.get("tokenizer.ggml.bos_token_id"));
  const eos = tokenId(g.get("tokenizer.ggml.eos_token_id"));
  const pad = tokenId(g.get("tokenizer.ggml.padding_token_id"));
  if (bos !== undefined) cfg.bosTokenId = bos;
  if (eos !== undefined) cfg.eosTokenId = eos;
  if (pad !== undefined) cfg.padTokenId = pad;
  return cfg;
}

/**
 * An opened llama GGUF whose tensors read as Hugging Face names and layouts: every expected tensor present with
 * its shape, nothing unexpected, q/k rows un-permuted. Reads one tensor at a time, dequantized to float32 and
 * converted to the dtype asked for.
 */
export class GgufLlama {
  private constructor(
    readonly file: GgufFile,
    readonly config: LlamaConfig,
    /** HF name -> GGUF name, in file order. */
    private readonly byHf: Map<string, string>,
  ) {}

  static async open(path: string): Promise<GgufLlama> {
    const g = await GgufFile.open(path);
    try {
      const cfg = ggufLlamaConfig(g);
      const byHf = new Map<string, string>();
      for (const t of g.tensors) {
        const hf = hfName(t.name);
        const layer = /^blk\.(\d+)\./.exec(t.name);
        if (t.name === "rope_freqs.weight")
          throw new FormatError(`${path}: tensor "rope_freqs.weight": RoPE frequency factors are not supported`, {
            file: path,
            tensor: t.name,
          });
        if (!hf || (layer && Number(layer[1]) >= cfg.numLayers))
          throw new FormatError(
            `${path}: unexpected tensor "${t.name}" (${layer && hf ? `block ${layer[1]} is past llama.block_count=${cfg.numLayers}` : "not a weight of a Llama model"})`,
            { file: path, tensor: t.name },
          );
        byHf.set(hf, t.name);
      }
      for (const s of llamaWeightSpecs(cfg)) {
        const gname = byHf.get(s.name);
        if (gname === undefined) {
          const want = [...s.shape].reverse();
          throw new FormatError(
            `${path}: missing tensor "${ggufNameOf(s.name)}" (Hugging Face "${s.name}", expected GGUF dimensions ${fmtShape(want)})`,
            { file: path, tensor: ggufNameOf(s.name) },
          );
        }
        const shape = g.info(gname).shape;
        if (shape.length !== s.shape.length || shape.some((d, i) => d !== s.shape[i]))
          throw new FormatError(
            `${path}: tensor "${gname}" has shape ${fmtShape(shape)} (rows outermost), expected ${fmtShape(s.shape)} = ${s.formula} from the file's llama.* metadata`,
            { file: path, tensor: gname },
          );
      }
      return new GgufLlama(g, cfg, byHf);
    } catch (e) {
      await g.close();
      throw e;
    }
  }

  get path(): string {
    return this.file.path;
  }

  /** The Hugging Face names of the model's weights, in file order (sequential reads). */
  names(): string[] {
    return [...this.byHf.keys()];
  }

  /** One weight under its HF name, in torch's layout, as float32. */
  async readF32(name: string): Promise<Float32Array> {
    const gname = this.byHf.get(name);
    if (gname === undefined)
      throw new FormatError(`${this.path}: no weight "${name}"`, { file: this.path, tensor: name });
    const data = await this.file.readF32(gname);
    const cols = this.config.hiddenSize;
    if (/\.self_attn\.q_proj\./.test(name)) return unpermuteQK(data, this.config.numHeads, cols);
    if (/\.self_attn\.k_proj\./.test(name)) return unpermuteQK(data, this.config.numKvHeads, cols);
    return data;
  }

  /** Every weight, one at a time, as HF-named host tensors of `dtype`. */
  async *tensors(dtype: HostDType = "F32"): AsyncGenerator<{ name: string; tensor: HostTensor }> {
    for (const name of this.names()) {
      const shape = this.file.info(this.byHf.get(name)!).shape;
      yield { name, tensor: fromFloat32(await this.readF32(name), shape, dtype) };
    }
  }

  close(): Promise<void> {
    return this.file.close();
  }
}

/** The GGUF name of a Hugging Face Llama weight name (for messages about missing tensors). */
function ggufNameOf(hf: string): string {
  if (hf === "model.embed_tokens.weight") return "token_embd.weight";
  if (hf === "model.norm.weight") return "output_norm.weight";
  if (hf === "lm_head.weight") return "output.weight";
  const m = /^model\.layers\.(\d+)\.(.+)\.weight$/.exec(hf);
  const short = m ? Object.entries(LAYER_NAMES).find(([, v]) => v === m[2])?.[0] : undefined;
  return m && short ? `blk.${m[1]}.${short}.weight` : hf;
}
