// The LoRA training step: causal-LM loss, gradients for the adapter only, AdamW; one traced function to jit with donation.
import { tx, type SavePolicy, type Tensor, type TensorSpec } from "../index.ts";
import type { LlamaConfig } from "../formats/hf_config.ts";
import { llamaHidden, llamaLogits, llamaSpecs, type ForwardOpts, type LlamaWeights } from "../../models/llama.ts";
import type { AttentionImpl } from "../../models/attention.ts";
import { loraSpecs, type LoraLayout, type LoraWeights } from "../../models/lora.ts";
import { adamwUpdate, type AdamWConfig } from "./adamw.ts";
import { causalLmLoss, chunkedCausalLmLoss } from "./loss.ts";
import type { PrecisionPolicy } from "./precision.ts";
import { hostTensor, type HostTensor } from "../formats/host_tensor.ts";

/** Everything a step updates: adapter master weights, AdamW moments (all f32) and the count of steps taken. */
export interface TrainState<T = Tensor> {
  lora: LoraWeights<T>;
  m: LoraWeights<T>;
  v: LoraWeights<T>;
  /** Steps taken so far (f32 rank-0); the step being computed is step + 1. */
  step: T;
}

export interface Batch<T = Tensor> {
  /** Token ids [B, S]. */
  tokens: T;
  /** Labels [B, S], HF convention: not shifted, -100 where no loss is taken. */
  labels: T;
}

export interface StepConfig {
  llama: LlamaConfig;
  layout: LoraLayout;
  policy: PrecisionPolicy;
  adamw: AdamWConfig;
  /** Layer loop of the model (see ForwardOpts.layers); default: defaultLayerLoop(llama). */
  layers?: "scan" | "unroll";
  /**
   * Compute the loss in sequence chunks of this many positions (chunkedCausalLmLoss), so the [B, S, V] f32 logits
   * never exist; undefined computes them whole (causalLmLoss). Equal up to f32 rounding either way.
   */
  lossChunk?: number | undefined;
  /** Rematerialize each layer with this tx.checkpoint policy (see ForwardOpts.remat); default: keep activations. */
  remat?: SavePolicy | undefined;
  /** Attention kernel (see ForwardOpts.attention); default: by sequence length (defaultAttention). */
  attention?: AttentionImpl;
}

/** Up to this many layers the training step unrolls them; beyond, one scan keeps compile time flat. */
export const UNROLL_MAX_LAYERS = 8;

/**
 * Unrolled for small models, scanned for large ones. Differentiating a scan recomputes each layer's forward pass
 * in the backward loop (autodiff saves only the carries), which costs a small model about 10% of its step (see
 * bench/llama_step.bench.ts) and saves activation memory; unrolling keeps every activation, as a plain JAX step
 * does, but compiles one copy of the layer per layer: fine at 4 layers, slow at 32-80.
 */
export function defaultLayerLoop(llama: LlamaConfig): "scan" | "unroll" {
  return llama.numLayers <= UNROLL_MAX_LAYERS ? "unroll" : "scan";
}

/** The loss of the adapted model on a batch (f32), differentiable in `lora`. */
export function loraLoss(
  c: StepConfig,
  lora: LoraWeights,
  base: LlamaWeights,
  batch: Batch,
  training = false,
  key?: Tensor,
): Tensor {
  const opts: ForwardOpts = {
    lora: { weights: lora, layout: c.layout },
    compute: c.policy.compute,
    layers: c.layers ?? defaultLayerLoop(c.llama),
    ...(c.attention ? { attention: c.attention } : {}),
    training,
    ...(key ? { key } : {}),
    ...(c.remat ? { remat: c.remat } : {}),
  };
  if (c.lossChunk !== undefined) {
    const hidden = llamaHidden(c.llama, base, batch.tokens, opts);
    return chunkedCausalLmLoss(hidden, base.head, batch.labels, { chunk: c.lossChunk });
  }
  return causalLmLoss(llamaLogits(c.llama, base, batch.tokens, opts), batch.labels);
}

/**
 * `step(state, base, batch, lr, key) -> [state', loss]`: one forward and backward pass with gradients for the
 * LoRA weights only, then AdamW. `lr` is a rank-0 f32 (a schedule does not recompile); `key` (u32[2]) seeds LoRA
 * dropout and is folded with the step number, so each step draws fresh masks. Jit it with `state` donated.
 */
export function makeTrainStep(c: StepConfig) {
  return (state: TrainState, base: LlamaWeights, batch: Batch, lr: Tensor, key: Tensor): [TrainState, Tensor] => {
    const t = state.step.add(1);
    const stepKey = tx.random.foldIn(key, t.astype("s32"));
    const [loss, grads] = tx.valueAndGrad((lora: LoraWeights) => loraLoss(c, lora, base, batch, true, stepKey))(
      state.lora,
    );
    const [lora, opt] = adamwUpdate(state.lora, grads as LoraWeights, { m: state.m, v: state.v }, t, lr, c.adamw);
    return [{ lora, m: opt.m, v: opt.v, step: t }, loss];
  };
}

/**
 * `step(state, base, batch, lr, key) -> [state', loss, gradNorm]`: makeTrainStep's step, also returning the global
 * gradient norm (f32, over every LoRA gradient), and guarded: when the loss or the norm is NaN or Inf, the adapter
 * and AdamW moments come out unchanged (the update is selected away inside the program, so nothing non-finite
 * reaches the state and no extra round trip is needed). `step` still advances: it counts the run's steps, which
 * the data position, dropout keys and checkpoints follow.
 */
export function makeGuardedTrainStep(c: StepConfig) {
  return (
    state: TrainState,
    base: LlamaWeights,
    batch: Batch,
    lr: Tensor,
    key: Tensor,
  ): [TrainState, Tensor, Tensor] => {
    const t = state.step.add(1);
    const stepKey = tx.random.foldIn(key, t.astype("s32"));
    const [loss, grads] = tx.valueAndGrad((lora: LoraWeights) => loraLoss(c, lora, base, batch, true, stepKey))(
      state.lora,
    );
    const leaves = tx.treeLeaves(grads as LoraWeights) as Tensor[];
    const gradNorm = leaves
      .map((g) => g.mul(g).sum())
      .reduce((a, b) => a.add(b))
      .sqrt();
    // |x| < Inf is false for NaN and for +-Inf.
    const finite = tx.logicalAnd(loss.abs().lt(Infinity), gradNorm.abs().lt(Infinity));
    const [lora, opt] = adamwUpdate(state.lora, grads as LoraWeights, { m: state.m, v: state.v }, t, lr, c.adamw);
    const keep = (next: LoraWeights, old: LoraWeights): LoraWeights => {
      const n = tx.treeFlatten(next);
      const o = tx.treeLeaves(old) as Tensor[];
      return tx.treeUnflatten(
        n.def,
        n.leaves.map((x, i) => tx.where(finite, x as Tensor, o[i]!)),
      ) as LoraWeights;
    };
    return [
      { lora: keep(lora, state.lora), m: keep(opt.m, state.m), v: keep(opt.v, state.v), step: t },
      loss,
      gradNorm,
    ];
  };
}

/** Abstract arguments of the step for tracing/compiling, in the order `makeTrainStep` takes them. */
export function trainStepSpecs(
  c: StepConfig,
  batch: number,
  seq: number,
): [TrainState<TensorSpec>, LlamaWeights<TensorSpec>, Batch<TensorSpec>, TensorSpec, TensorSpec] {
  const lora = loraSpecs(c.layout, c.llama, c.policy.master);
  return [
    { lora, m: lora, v: lora, step: tx.spec("f32", []) },
    llamaSpecs(c.llama, c.policy.base),
    { tokens: tx.spec("s32", [batch, seq]), labels: tx.spec("s32", [batch, seq]) },
    tx.spec("f32", []),
    tx.spec("u32", [2]),
  ];
}

/** The state before the first step: the given adapter weights, zero moments, step 0 (all on the host, f32). */
export function initTrainState(lora: LoraWeights<HostTensor>): TrainState<HostTensor> {
  const zeros = (): LoraWeights<HostTensor> =>
    Object.fromEntries(
      Object.entries(lora).map(([m, f]) => [m, { a: hostTensor("F32", f!.a.shape), b: hostTensor("F32", f!.b.shape) }]),
    );
  return { lora, m: zeros(), v: zeros(), step: hostTensor("F32", []) };
}
