// The LoRA fine-tuning loop: HF checkpoint and PEFT adapter in, one jitted step per batch, a PEFT adapter out.
import { array, jit, type DeviceArray } from "../index.ts";
import type { HostTensor } from "../formats/dtypes.ts";
import { loadAdapter, saveAdapter, type LoraConfig } from "../formats/peft.ts";
import { initLora, loraFromAdapter, loraLayout, loraToAdapter, type LoraLayout } from "../../models/lora.ts";
import { loadLlamaWeights } from "../../models/weights.ts";
import type { LlamaConfig } from "../formats/hf_config.ts";
import { treeFromDevice, treeToDevice } from "../parity/execute.ts";
import type { AdamWConfig } from "./adamw.ts";
import { baseHostDType, type PrecisionPolicy } from "./precision.ts";
import { initTrainState, makeTrainStep, type StepConfig, type TrainState } from "./step.ts";

/** One batch on the host: token ids and labels (-100 = no loss), both row-major [batch, seq]. */
export interface HostBatch {
  tokens: Int32Array;
  labels: Int32Array;
  shape: [number, number];
}

export interface TrainOptions {
  /** HF Llama checkpoint directory (config.json + safetensors). */
  baseDir: string;
  /** Start from a saved PEFT adapter directory, or a fresh adapter from a config (A random, B zero). */
  adapter: { dir: string } | { config: LoraConfig; seed?: number };
  policy: PrecisionPolicy;
  adamw: AdamWConfig;
  /** Learning rate per 1-based step (default: adamw.lr throughout). */
  lr?: (step: number) => number;
  batches: Iterable<HostBatch> | AsyncIterable<HostBatch>;
  /** Stop after this many steps (default: when the batches run out). */
  maxSteps?: number;
  /** Seeds LoRA dropout. */
  seed?: number;
  layers?: "scan" | "unroll";
  /** Where to write the trained adapter (adapter_config.json + adapter_model.safetensors). */
  outDir?: string;
  onStep?: (info: { step: number; loss: number; seconds: number }) => void;
}

export interface TrainResult {
  llama: LlamaConfig;
  layout: LoraLayout;
  losses: number[];
  /** The final state, read back to the host. */
  state: TrainState<HostTensor>;
}

/**
 * Fine-tunes a LoRA adapter: base weights loaded once (in the policy's dtype) and kept on the device, adapter and
 * AdamW state donated to each step so they are updated in place, one compiled program for every batch of the
 * same shape. Writes the adapter in PEFT's format when `outDir` is given.
 */
export async function trainLoRA(opts: TrainOptions): Promise<TrainResult> {
  const { config: llama, weights } = await loadLlamaWeights(opts.baseDir, { dtype: baseHostDType(opts.policy) });
  let layout: LoraLayout, lora;
  if ("dir" in opts.adapter) {
    ({ layout, weights: lora } = loraFromAdapter(await loadAdapter(opts.adapter.dir, llama), llama));
  } else {
    layout = loraLayout(opts.adapter.config, llama);
    lora = initLora(layout, llama, opts.adapter.seed ?? 0);
  }
  const c: StepConfig = { llama, layout, policy: opts.policy, adamw: opts.adamw, ...(opts.layers ? { layers: opts.layers } : {}) };
  const step = jit(makeTrainStep(c), { donate: 0, name: "lora_train_step" });
  const base = treeToDevice(weights as never);
  let state = treeToDevice<TrainState<DeviceArray>>(initTrainState(lora) as never);
  const key = array(new Uint32Array([0, (opts.seed ?? 0) >>> 0]));
  const losses: number[] = [];
  for await (const b of opts.batches) {
    if (opts.maxSteps !== undefined && losses.length >= opts.maxSteps) break;
    const n = losses.length + 1;
    const t0 = performance.now();
    const batch = { tokens: array(b.tokens, { shape: b.shape }), labels: array(b.labels, { shape: b.shape }) };
    const [next, loss] = await step(state, base as never, batch, array(opts.lr ? opts.lr(n) : opts.adamw.lr), key);
    state = next;
    const value = await loss.item();
    losses.push(value);
    opts.onStep?.({ step: n, loss: value, seconds: (performance.now() - t0) / 1000 });
  }
  const host = (await treeFromDevice(state)) as unknown as TrainState<HostTensor>;
  if (opts.outDir) await saveAdapter(opts.outDir, loraToAdapter(layout, host.lora, llama), llama);
  return { llama, layout, losses, state: host };
}
