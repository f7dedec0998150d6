// A Hugging Face Llama checkpoint directory: config.json + safetensors weights, checked tensor by tensor, read streamed.

import { join } from "node:path";
import { FormatError, fmtShape } from "./errors.ts";
import { castTensor, type HostTensor } from "./host_tensor.ts";
import { isFloat, type HostDType } from "../ir/types.ts";
import { Checkpoint, writeCheckpoint, type CheckpointWriteOptions, type TensorMap } from "./safetensors.ts";
import {
  LINEAR_PATH,
  LLAMA_LINEARS,
  linearFeatures,
  llamaConfigToJson,
  loadLlamaConfig,
  type LlamaConfig,
} from "./hf_config.ts";
import { writeAll } from "./atomic.ts";

export interface ExpectedTensor {
  name: string;
  shape: number[];
  /** The shape in config terms, for error messages, e.g. `[num_heads*head_dim, hidden_size]`. */
  formula: string;
}

const FORMULA: Record<(typeof LLAMA_LINEARS)[number], string> = {
  q: "[num_attention_heads*head_dim, hidden_size]",
  k: "[num_key_value_heads*head_dim, hidden_size]",
  v: "[num_key_value_heads*head_dim, hidden_size]",
  o: "[hidden_size, num_attention_heads*head_dim]",
  gate: "[intermediate_size, hidden_size]",
  up: "[intermediate_size, hidden_size]",
  down: "[hidden_size, intermediate_size]",
};

/** Every weight a LlamaForCausalLM of this config has, with its torch shape; lm_head only when not tied. */
export function llamaWeightSpecs(cfg: LlamaConfig): ExpectedTensor[] {
  const E = cfg.hiddenSize;
  const V = cfg.vocabSize;
  const feats = linearFeatures(cfg);
  const specs: ExpectedTensor[] = [
    { name: "model.embed_tokens.weight", shape: [V, E], formula: "[vocab_size, hidden_size]" },
  ];
  for (let i = 0; i < cfg.numLayers; i++) {
    const p = `model.layers.${i}`;
    specs.push({ name: `${p}.input_layernorm.weight`, shape: [E], formula: "[hidden_size]" });
    for (const m of LLAMA_LINEARS) {
      specs.push({ name: `${p}.${LINEAR_PATH[m]}.weight`, shape: [feats[m].out, feats[m].in], formula: FORMULA[m] });
    }
    specs.push({ name: `${p}.post_attention_layernorm.weight`, shape: [E], formula: "[hidden_size]" });
  }
  specs.push({ name: "model.norm.weight", shape: [E], formula: "[hidden_size]" });
  if (!cfg.tieWordEmbeddings)
    specs.push({ name: "lm_head.weight", shape: [V, E], formula: "[vocab_size, hidden_size]" });
  return specs;
}

/** Tensors that older conversions saved and that carry nothing the config does not already say. */
function isIgnorable(name: string, cfg: LlamaConfig): boolean {
  return (
    /^model\.layers\.\d+\.self_attn\.rotary_emb\.inv_freq$/.test(name) ||
    (cfg.tieWordEmbeddings && name === "lm_head.weight")
  );
}

/**
 * Checks presence, float dtype and shape of every expected tensor and that nothing unexpected is present.
 * Errors name the file holding the tensor (or the index/weights file when it is missing), the tensor, and the
 * expected vs actual shape.
 */
export function validateLlamaCheckpoint(ckpt: Checkpoint, cfg: LlamaConfig, configFile = "config.json"): void {
  const where = ckpt.indexPath ?? ckpt.files[0] ?? ckpt.dir;
  // The layer count first, from the tensor names alone: the list of expected tensors grows with
  // num_hidden_layers, so a config claiming far more layers than the files hold must fail before it is built.
  let layersInFiles = 0;
  for (const name of ckpt.keys()) {
    const m = /^model\.layers\.(\d+)\./.exec(name);
    if (m) layersInFiles = Math.max(layersInFiles, Number(m[1]) + 1);
  }
  if (cfg.numLayers > layersInFiles) {
    const held = layersInFiles === 0 ? "no model.layers.* tensors" : `tensors for layers 0..${layersInFiles - 1} only`;
    throw new FormatError(
      `${configFile}: field "num_hidden_layers" is ${cfg.numLayers}, but ${where} has ${held} (missing tensor "model.layers.${layersInFiles}.input_layernorm.weight"): the config does not describe this checkpoint`,
      { file: configFile, tensor: `model.layers.${layersInFiles}.input_layernorm.weight` },
    );
  }
  const specs = llamaWeightSpecs(cfg);
  for (const s of specs) {
    if (!ckpt.has(s.name)) {
      throw new FormatError(
        `${where}: missing tensor "${s.name}" (expected ${fmtShape(s.shape)} = ${s.formula} from ${configFile})`,
        { file: where, tensor: s.name },
      );
    }
    const info = ckpt.info(s.name);
    if (!isFloat(info.dtype)) {
      throw new FormatError(`${info.file}: tensor "${s.name}" has dtype ${info.dtype}, expected a float type`, {
        file: info.file,
        tensor: s.name,
      });
    }
    if (info.shape.length !== s.shape.length || info.shape.some((d, i) => d !== s.shape[i])) {
      throw new FormatError(
        `${info.file}: tensor "${s.name}" has shape ${fmtShape(info.shape)}, expected ${fmtShape(s.shape)} = ${s.formula} from ${configFile}`,
        { file: info.file, tensor: s.name },
      );
    }
  }
  const expected = new Set(specs.map((s) => s.name));
  for (const name of ckpt.keys()) {
    if (expected.has(name) || isIgnorable(name, cfg)) continue;
    const file = ckpt.info(name).file;
    const layer = /^model\.layers\.(\d+)\./.exec(name);
    const why =
      layer !== null && Number(layer[1]) >= cfg.numLayers
        ? `layer ${layer[1]} is past num_hidden_layers=${cfg.numLayers} in ${configFile}`
        : name === "lm_head.weight"
          ? "unexpected"
          : "not a weight of a Llama model";
    throw new FormatError(`${file}: unexpected tensor "${name}" (${why})`, { file, tensor: name });
  }
}

/**
 * An opened and validated HF Llama checkpoint. Only headers are read on open; `read` and `tensors` fetch one
 * tensor at a time, so peak host memory is one tensor (plus its converted copy), not the model.
 */
export class HfCheckpoint {
  private constructor(
    readonly dir: string,
    readonly config: LlamaConfig,
    readonly checkpoint: Checkpoint,
    readonly specs: ExpectedTensor[],
  ) {}

  static async open(dir: string): Promise<HfCheckpoint> {
    const configFile = join(dir, "config.json");
    const config = await loadLlamaConfig(configFile);
    const ckpt = await Checkpoint.open(dir);
    try {
      validateLlamaCheckpoint(ckpt, config, configFile);
    } catch (e) {
      await ckpt.close();
      throw e;
    }
    return new HfCheckpoint(dir, config, ckpt, llamaWeightSpecs(config));
  }

  /** The model's weight names, ordered by file and offset so that reading them in turn is sequential I/O. */
  names(): string[] {
    const expected = new Set(this.specs.map((s) => s.name));
    return this.checkpoint.keys().filter((k) => expected.has(k));
  }

  /** Reads one weight, converted to `dtype` if given (F32/F16/BF16 conversions are exact or round-to-nearest-even). */
  async read(name: string, dtype?: HostDType): Promise<HostTensor> {
    const t = await this.checkpoint.read(name);
    return dtype === undefined ? t : castTensor(t, dtype);
  }

  /** Every weight, one at a time, in storage order. */
  async *tensors(dtype?: HostDType): AsyncGenerator<{ name: string; tensor: HostTensor }> {
    for (const name of this.names()) yield { name, tensor: await this.read(name, dtype) };
  }

  close(): Promise<void> {
    return this.checkpoint.close();
  }
}

/**
 * Writes a complete HF Llama checkpoint (config.json and weights, sharded past `maxShardBytes`) after checking
 * the tensors against `cfg`; all files are replaced together.
 */
export async function saveHfCheckpoint(
  dir: string,
  cfg: LlamaConfig,
  tensors: TensorMap,
  opts: CheckpointWriteOptions = {},
): Promise<void> {
  const map = tensors instanceof Map ? tensors : new Map(Object.entries(tensors));
  const specs = llamaWeightSpecs(cfg);
  const target = join(dir, "model.safetensors");
  for (const s of specs) {
    const t = map.get(s.name);
    if (t === undefined)
      throw new FormatError(`${target}: cannot save: missing tensor "${s.name}" ${fmtShape(s.shape)}`, {
        file: target,
        tensor: s.name,
      });
    if (t.shape.length !== s.shape.length || t.shape.some((d, i) => d !== s.shape[i])) {
      throw new FormatError(
        `${target}: cannot save tensor "${s.name}": shape ${fmtShape(t.shape)}, expected ${fmtShape(s.shape)} = ${s.formula}`,
        {
          file: target,
          tensor: s.name,
        },
      );
    }
  }
  const expected = new Set(specs.map((s) => s.name));
  for (const name of map.keys()) {
    if (!expected.has(name))
      throw new FormatError(`${target}: cannot save: tensor "${name}" is not a weight of this Llama config`, {
        file: target,
        tensor: name,
      });
  }
  const text = `${JSON.stringify(llamaConfigToJson(cfg), null, 2)}\n`;
  await writeCheckpoint(dir, map, {
    ...opts,
    extraFiles: [{ target: join(dir, "config.json"), write: (fh) => writeAll(fh, new TextEncoder().encode(text)) }],
  });
}
