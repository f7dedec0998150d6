// The LoRA fine-tuning loop: HF checkpoint and PEFT adapter in, one jitted step per batch, a PEFT adapter out.
import { array, jit, type DeviceArray } from "../index.ts";
import { fromFloat32, type HostTensor } from "../formats/host_tensor.ts";
import { loadAdapter, saveAdapter, type LoraConfig } from "../formats/peft.ts";
import {
  initLora,
  loraFromAdapter,
  loraLayout,
  loraToAdapter,
  type LoraLayout,
  type LoraWeights,
} from "../../models/lora.ts";
import type { LlamaWeights } from "../../models/llama.ts";
import type { AttentionImpl } from "../../models/attention.ts";
import type { SavePolicy } from "../passes/remat.ts";
import { loadLlamaWeights, randomLlamaWeights, type RandomPart } from "../../models/weights.ts";
import type { LlamaConfig } from "../formats/hf_config.ts";
import { treeFromDevice, treeToDevice } from "../host/transfer.ts";
import type { AdamWConfig } from "./adamw.ts";
import { baseHostDType, type PrecisionPolicy } from "./precision.ts";
import { initTrainState, makeGuardedTrainStep, type StepConfig, type TrainState } from "./step.ts";
import { Evaluator, type EvalResult } from "./evaluate.ts";

/** One batch on the host: token ids and labels (-100 = no loss), both row-major [batch, seq]. */
export interface HostBatch {
  tokens: Int32Array;
  labels: Int32Array;
  /** Packed rows: RoPE positions and segment ids (see BatchStream), [batch, seq] too. */
  positions?: Int32Array;
  segmentIds?: Int32Array;
  shape: [number, number];
}

/** What a step reports to `onStep`. */
export interface StepInfo {
  /** 1-based step number, counting steps of the run being resumed. */
  step: number;
  loss: number;
  lr: number;
  /** Wall time of this step, including the compile on the first one. */
  seconds: number;
  /** Global norm of the LoRA gradients. */
  gradNorm: number;
  /** The loss or the gradient norm was NaN or Inf, so the program left the adapter and optimizer state as they were. */
  nonfinite: boolean;
  /** The eval loss after this step's update, on steps TrainOptions.evaluate chose. */
  eval?: EvalResult;
}

/** AdamW moments and the steps already taken, to continue a run (see checkpoint.ts). */
export interface OptimizerState {
  m: LoraWeights<HostTensor>;
  v: LoraWeights<HostTensor>;
  step: number;
}

export interface TrainOptions {
  /** HF Llama checkpoint directory (config.json + safetensors); or give `base`. */
  baseDir?: string;
  /** Base weights already on the host (in the policy's base dtype), instead of `baseDir`. */
  base?: { config: LlamaConfig; weights: LlamaWeights<HostTensor> };
  /**
   * The adapter to train: a saved PEFT adapter directory, a fresh one from a config (A random, B zero), or one
   * already loaded (e.g. validated by the caller).
   */
  adapter:
    | { dir: string }
    | { config: LoraConfig; seed?: number }
    | { layout: LoraLayout; weights: LoraWeights<HostTensor> };
  /** AdamW state to continue from (default: zero moments, step 0). */
  optimizer?: OptimizerState;
  policy: PrecisionPolicy;
  adamw: AdamWConfig;
  /** Learning rate per 1-based step (default: adamw.lr throughout). */
  lr?: (step: number) => number;
  batches: Iterable<HostBatch> | AsyncIterable<HostBatch>;
  /** Stop after this many steps in this call (default: when the batches run out). */
  maxSteps?: number;
  /** Stop after the step in progress once this is aborted (Ctrl-C). */
  signal?: AbortSignal;
  /**
   * A step whose loss or gradient norm is NaN/Inf never changes the state (see makeGuardedTrainStep); "stop" then
   * ends the loop after reporting that step (TrainResult.nonfinite), "skip" goes on (default "stop").
   */
  onNonfinite?: "stop" | "skip";
  /** Seeds LoRA dropout. */
  seed?: number;
  layers?: "scan" | "unroll";
  /** Sequence positions per chunk of the loss (StepConfig.lossChunk); default: the whole logits at once. */
  lossChunk?: number;
  /** Attention kernel of the step (see StepConfig.attention). */
  attention?: AttentionImpl;
  /** Rematerialize each layer with this tx.checkpoint policy (StepConfig.remat). */
  remat?: SavePolicy | readonly (SavePolicy | undefined)[];
  /** Positions per MLP chunk (StepConfig.mlpChunk). */
  mlpChunk?: number;
  /** Micro-batches per step (StepConfig.gradAccum): each batch's rows are that many micro-batches. Default 1. */
  gradAccum?: number;
  /** Global gradient-norm clipping (StepConfig.maxGradNorm); default none. */
  maxGradNorm?: number;
  /** Evaluate the adapter on `batches` after the steps `at` picks (one compiled eval program); see StepInfo.eval. */
  evaluate?: { batches: readonly HostBatch[]; at: (step: number) => boolean };
  /** Where to write the trained adapter (adapter_config.json + adapter_model.safetensors). */
  outDir?: string;
  /**
   * Called after every step, and awaited. `snapshot` reads the current state back to the host (for checkpoints);
   * it is only valid until onStep returns, since the next step consumes the state.
   */
  onStep?: (info: StepInfo, ctl: { snapshot: () => Promise<TrainState<HostTensor>> }) => void | Promise<void>;
}

export interface TrainResult {
  llama: LlamaConfig;
  layout: LoraLayout;
  /** Losses of the steps taken in this call. */
  losses: number[];
  /** The final state, read back to the host. */
  state: TrainState<HostTensor>;
  /** True when `signal` stopped the run before maxSteps or the end of the batches. */
  stopped: boolean;
  /** With onNonfinite "stop": the step whose loss or gradients were NaN/Inf, which ended the loop. */
  nonfinite?: StepInfo;
}

/**
 * Fine-tunes a LoRA adapter: base weights loaded once (in the policy's dtype) and kept on the device, adapter and
 * AdamW state donated to each step so they are updated in place, one compiled program for every batch of the
 * same shape. Writes the adapter in PEFT's format when `outDir` is given.
 */
export async function trainLoRA(opts: TrainOptions): Promise<TrainResult> {
  let llama: LlamaConfig, weights: LlamaWeights<HostTensor>;
  if (opts.base) ({ config: llama, weights } = opts.base);
  else if (opts.baseDir !== undefined)
    ({ config: llama, weights } = await loadLlamaWeights(opts.baseDir, { dtype: baseHostDType(opts.policy) }));
  else throw new Error("trainLoRA: give baseDir or base");
  let layout: LoraLayout, lora: LoraWeights<HostTensor>;
  if ("dir" in opts.adapter) {
    ({ layout, weights: lora } = loraFromAdapter(await loadAdapter(opts.adapter.dir, llama), llama));
  } else if ("layout" in opts.adapter) {
    ({ layout, weights: lora } = opts.adapter);
  } else {
    layout = loraLayout(opts.adapter.config, llama);
    lora = initLora(layout, llama, opts.adapter.seed ?? 0);
  }
  const c: StepConfig = {
    llama,
    layout,
    policy: opts.policy,
    adamw: opts.adamw,
    ...(opts.layers ? { layers: opts.layers } : {}),
    ...(opts.lossChunk !== undefined ? { lossChunk: opts.lossChunk } : {}),
    ...(opts.attention ? { attention: opts.attention } : {}),
    ...(opts.remat ? { remat: opts.remat } : {}),
    ...(opts.mlpChunk ? { mlpChunk: opts.mlpChunk } : {}),
    ...(opts.gradAccum ? { gradAccum: opts.gradAccum } : {}),
    ...(opts.maxGradNorm ? { maxGradNorm: opts.maxGradNorm } : {}),
  };
  const step = jit(makeGuardedTrainStep(c), { donate: 0, name: "lora_train_step" });
  const evaluator = opts.evaluate ? new Evaluator(c, layout) : undefined;
  const base = treeToDevice(weights as never);
  const init = initTrainState(lora);
  if (opts.optimizer)
    Object.assign(init, { m: opts.optimizer.m, v: opts.optimizer.v, step: fromFloat32([opts.optimizer.step], []) });
  let state = treeToDevice<TrainState<DeviceArray>>(init as never);
  const key = array(new Uint32Array([0, (opts.seed ?? 0) >>> 0]));
  const first = opts.optimizer?.step ?? 0;
  const losses: number[] = [];
  let stopped = false;
  let nonfinite: StepInfo | undefined;
  const it =
    Symbol.asyncIterator in opts.batches
      ? opts.batches[Symbol.asyncIterator]()
      : (opts.batches as Iterable<HostBatch>)[Symbol.iterator]();
  // The stop conditions are checked before a batch is drawn, so a stream is never advanced past the last step.
  for (;;) {
    if (opts.maxSteps !== undefined && losses.length >= opts.maxSteps) break;
    if (opts.signal?.aborted) {
      stopped = true;
      break;
    }
    const next = await it.next();
    if (next.done) break;
    const b = next.value;
    const n = first + losses.length + 1;
    const lr = opts.lr ? opts.lr(n) : opts.adamw.lr;
    const t0 = performance.now();
    const batch = {
      tokens: array(b.tokens, { shape: b.shape }),
      labels: array(b.labels, { shape: b.shape }),
      ...(b.positions ? { positions: array(b.positions, { shape: b.shape }) } : {}),
      ...(b.segmentIds ? { segmentIds: array(b.segmentIds, { shape: b.shape }) } : {}),
    };
    const [after, loss, norm] = await step(state, base as never, batch, array(lr), key);
    state = after;
    const [value, gradNorm] = await Promise.all([loss.item(), norm.item()]);
    losses.push(value);
    const current = state;
    const info: StepInfo = {
      step: n,
      loss: value,
      lr,
      seconds: (performance.now() - t0) / 1000,
      gradNorm,
      nonfinite: !Number.isFinite(value) || !Number.isFinite(gradNorm),
    };
    if (evaluator && opts.evaluate!.at(n) && !(info.nonfinite && (opts.onNonfinite ?? "stop") === "stop"))
      info.eval = await evaluator.run(base as never, current.lora as never, opts.evaluate!.batches);
    await opts.onStep?.(info, {
      snapshot: async () => (await treeFromDevice(current)) as unknown as TrainState<HostTensor>,
    });
    if (info.nonfinite && (opts.onNonfinite ?? "stop") === "stop") {
      nonfinite = info;
      break;
    }
  }
  const host = (await treeFromDevice(state)) as unknown as TrainState<HostTensor>;
  if (opts.outDir && !nonfinite) await saveAdapter(opts.outDir, loraToAdapter(layout, host.lora, llama), llama);
  return { llama, layout, losses, state: host, stopped, ...(nonfinite ? { nonfinite } : {}) };
}

/**
 * Seeded random base weights in which LoRA alone can visibly learn, for the built-in tiny model (HF's std-0.02
 * init suits wide models; at hidden size 32 it caps every logit near zero, so nothing could be learned):
 * embeddings N(0, 1), each projection N(0, 1/in_features), norms 1, and the head N(0, 4/hidden) so that a
 * hidden state aligned with one token's column can make that token likely. In the policy's base dtype.
 */
export function builtinBaseWeights(
  cfg: LlamaConfig,
  seed: number,
  dtype: "F32" | "BF16" = "F32",
): LlamaWeights<HostTensor> {
  // Projections are stacked [L, in, out]: their std is 1/sqrt(in_features).
  const std = (part: RandomPart, shape: number[]) =>
    part === "embed" ? 1 : part === "head" ? 2 / Math.sqrt(cfg.hiddenSize) : 1 / Math.sqrt(shape[1]!);
  return randomLlamaWeights(cfg, { seed, dtype, std });
}
