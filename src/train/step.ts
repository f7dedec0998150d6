// The LoRA training step: causal-LM loss, gradients for the adapter only, AdamW; one traced function to jit with donation.
import { tx, type SavePolicy, type Tensor, type TensorSpec } from "../index.ts";
import type { LlamaConfig } from "../formats/hf_config.ts";
import { llamaHidden, llamaLogits, llamaSpecs, type ForwardOpts, type LlamaWeights } from "../../models/llama.ts";
import type { AttentionImpl } from "../../models/attention.ts";
import { loraSpecs, type LoraLayout, type LoraWeights } from "../../models/lora.ts";
import { adamwUpdate, type AdamWConfig } from "./adamw.ts";
import { causalLmNll, chunkedCausalLmNll, lossTokenCount, type NllSum } from "./loss.ts";
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
  /** Packed rows: RoPE position of each token [B, S] (restarting at each record); default 0..S-1. */
  positions?: T;
  /** Packed rows: the record each token belongs to [B, S]; attention stays within a record. */
  segmentIds?: T;
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
  remat?: SavePolicy | readonly (SavePolicy | undefined)[] | undefined;
  /** Attention kernel (see ForwardOpts.attention); default: by sequence length (defaultAttention). */
  attention?: AttentionImpl;
  /** Block size of blockwise attention (ForwardOpts.attentionBlock); default 128. */
  attentionBlock?: number;
  /** Positions per MLP chunk (ForwardOpts.mlpChunk); default the whole sequence. */
  mlpChunk?: number | undefined;
  /**
   * Gradient accumulation: the batch's rows are this many micro-batches, run one after another by a scan inside
   * the step (activations of one micro-batch at a time); the update equals one step on all the rows. Default 1.
   */
  gradAccum?: number;
  /**
   * Clip the global gradient norm to this before AdamW, as torch's clip_grad_norm_ (HF Trainer's max_grad_norm:
   * grads * min(1, max / (norm + 1e-6))); 0 or undefined: no clipping. The reported norm is the one before clipping.
   */
  maxGradNorm?: number;
}

/** Up to this many layers the training step unrolls them; beyond, one scan keeps compile time flat. */
export const UNROLL_MAX_LAYERS = 8;

/**
 * Unrolled for small models, scanned for large ones. Both keep every activation for the backward pass (a scan
 * stacks its layers' residuals, as JAX's does; `remat` trades that memory for recomputation); unrolling compiles
 * one copy of the layer per layer: fine at 4 layers, slow at 32-80.
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
  const { sum, count } = loraNll(c, lora, base, batch, training, key);
  return sum.div(count);
}

/** loraLoss before the division: summed NLL over the batch's loss tokens, and their count. */
export function loraNll(
  c: StepConfig,
  lora: LoraWeights,
  base: LlamaWeights,
  batch: Batch,
  training = false,
  key?: Tensor,
): NllSum {
  return modelNll(c, { weights: lora, layout: c.layout }, base, batch, training, key);
}

/** What the forward pass and loss need of a StepConfig (evaluation has no optimizer and maybe no adapter). */
export type NllConfig = Pick<
  StepConfig,
  "llama" | "policy" | "layers" | "lossChunk" | "remat" | "attention" | "attentionBlock" | "mlpChunk"
>;

/** Summed NLL and loss-token count of the base model, with the adapter `lora` when given. */
export function modelNll(
  c: NllConfig,
  lora: ForwardOpts["lora"],
  base: LlamaWeights,
  batch: Batch,
  training = false,
  key?: Tensor,
): NllSum {
  const opts: ForwardOpts = {
    ...(lora ? { lora } : {}),
    compute: c.policy.compute,
    layers: c.layers ?? defaultLayerLoop(c.llama),
    ...(c.attention ? { attention: c.attention } : {}),
    ...(c.attentionBlock ? { attentionBlock: c.attentionBlock } : {}),
    ...(c.mlpChunk ? { mlpChunk: c.mlpChunk } : {}),
    training,
    ...(key ? { key } : {}),
    ...(c.remat ? { remat: c.remat } : {}),
    ...(batch.positions ? { positions: batch.positions } : {}),
    ...(batch.segmentIds ? { segmentIds: batch.segmentIds } : {}),
  };
  if (c.lossChunk !== undefined) {
    const hidden = llamaHidden(c.llama, base, batch.tokens, opts);
    return chunkedCausalLmNll(hidden, base.head, batch.labels, { chunk: c.lossChunk });
  }
  return causalLmNll(llamaLogits(c.llama, base, batch.tokens, opts), batch.labels);
}

/**
 * The step's loss and LoRA gradients. One micro-batch: valueAndGrad of the mean loss. With gradAccum N the
 * batch's rows split into N micro-batches ([N * B, S] -> [N, B, S]) that a scan walks, each taking the gradient of
 * its summed NLL; the sums are divided once by the loss tokens of all N, so the result is the mean over every
 * token of the step, exactly as one N-times-larger batch (not the mean of N per-micro-batch means, which would
 * weight a token by how full its micro-batch was). Dropout keys differ per micro-batch.
 */
export function lossAndGrads(
  c: StepConfig,
  lora: LoraWeights,
  base: LlamaWeights,
  batch: Batch,
  key: Tensor,
): [Tensor, LoraWeights] {
  const n = c.gradAccum ?? 1;
  if (n <= 1) {
    const [loss, grads] = tx.valueAndGrad((l: LoraWeights) => loraLoss(c, l, base, batch, true, key))(lora);
    return [loss, grads as LoraWeights];
  }
  const [rows, S] = [batch.tokens.shape[0]!, batch.tokens.shape[1]!];
  if (rows % n !== 0) throw new Error(`lossAndGrads: ${rows} rows do not split into ${n} micro-batches`);
  const micro = (t: Tensor) => t.reshape([n, rows / n, S]);
  const xs: Record<string, Tensor> = { tokens: micro(batch.tokens), labels: micro(batch.labels) };
  if (batch.positions) xs.positions = micro(batch.positions);
  if (batch.segmentIds) xs.segmentIds = micro(batch.segmentIds);
  xs.i = tx.iota([n], 0, "s32");
  const zeroGrads = tx.treeMap(lora as unknown as tx.Tree<Tensor>, (t) => tx.zeros(t.shape, "f32"));
  const [acc] = tx.scan(
    (carry: { sum: Tensor; grads: tx.Tree<Tensor> }, x: Record<string, Tensor>): [typeof carry, null] => {
      const mb: Batch = {
        tokens: x.tokens!,
        labels: x.labels!,
        ...(x.positions ? { positions: x.positions } : {}),
        ...(x.segmentIds ? { segmentIds: x.segmentIds } : {}),
      };
      const k = tx.random.foldIn(key, x.i!);
      const [sum, g] = tx.valueAndGrad((l: LoraWeights) => loraNll(c, l, base, mb, true, k).sum)(lora);
      const flat = tx.treeFlatten(carry.grads);
      const add = tx.treeLeaves(g as tx.Tree<Tensor>) as Tensor[];
      const grads = tx.treeUnflatten(
        flat.def,
        (flat.leaves as Tensor[]).map((a, j) => a.add(add[j]!.astype("f32"))),
      ) as tx.Tree<Tensor>;
      return [{ sum: carry.sum.add(sum), grads }, null];
    },
    { sum: tx.full([], 0, "f32"), grads: zeroGrads },
    xs,
  );
  const count = lossTokenCount(batch.labels);
  const grads = tx.treeMap(acc.grads, (g) => g.div(count)) as unknown as LoraWeights;
  return [acc.sum.div(count), grads];
}

/** HF's global-norm clipping: every gradient times min(1, max / (norm + 1e-6)); `max` 0 leaves them as they are. */
export function clipGrads(grads: LoraWeights, norm: Tensor, max: number | undefined): LoraWeights {
  if (!max) return grads;
  const coef = norm.add(1e-6).reciprocal().mul(max).minimum(1);
  return tx.treeMap(grads as unknown as tx.Tree<Tensor>, (g) => g.mul(coef.astype(g.dtype))) as unknown as LoraWeights;
}

/** The global L2 norm over every gradient leaf (f32). */
export function globalNorm(grads: LoraWeights): Tensor {
  return (tx.treeLeaves(grads) as Tensor[])
    .map((g) => g.mul(g).sum())
    .reduce((a, b) => a.add(b))
    .sqrt();
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
    const [loss, raw] = lossAndGrads(c, state.lora, base, batch, stepKey);
    const grads = c.maxGradNorm ? clipGrads(raw, globalNorm(raw), c.maxGradNorm) : raw;
    const [lora, opt] = adamwUpdate(state.lora, grads, { m: state.m, v: state.v }, t, lr, c.adamw);
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
    const [loss, raw] = lossAndGrads(c, state.lora, base, batch, stepKey);
    const gradNorm = globalNorm(raw);
    // |x| < Inf is false for NaN and for +-Inf.
    const finite = tx.logicalAnd(loss.abs().lt(Infinity), gradNorm.abs().lt(Infinity));
    const grads = clipGrads(raw, gradNorm, c.maxGradNorm);
    const [lora, opt] = adamwUpdate(state.lora, grads, { m: state.m, v: state.v }, t, lr, c.adamw);
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

/**
 * Abstract arguments of the step for tracing/compiling, in the order `makeTrainStep` takes them. `batch` is the
 * micro-batch: the step's rows are batch x gradAccum; `packed` adds positions and segment ids.
 */
export function trainStepSpecs(
  c: StepConfig,
  batch: number,
  seq: number,
  opts: { packed?: boolean } = {},
): [TrainState<TensorSpec>, LlamaWeights<TensorSpec>, Batch<TensorSpec>, TensorSpec, TensorSpec] {
  const lora = loraSpecs(c.layout, c.llama, c.policy.master);
  const ids = () => tx.spec("s32", [batch * (c.gradAccum ?? 1), seq]);
  return [
    { lora, m: lora, v: lora, step: tx.spec("f32", []) },
    llamaSpecs(c.llama, c.policy.base),
    { tokens: ids(), labels: ids(), ...(opts.packed ? { positions: ids(), segmentIds: ids() } : {}) },
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
