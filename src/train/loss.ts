// Hugging Face's causal-LM loss: labels shifted left inside the loss, -100 ignored, mean over the remaining tokens.
import { tx, type Tensor } from "../index.ts";
import { describe, EXIT, TesseraError } from "../errors.ts";

/** The label value that marks a position as not contributing to the loss (prompt tokens, padding). */
export const IGNORE_INDEX = -100;

/**
 * transformers' ForCausalLMLoss with reduction "mean": position t predicts labels[t + 1], the last position
 * predicts nothing, and the loss is the sum of -log p(label) over positions whose label is not -100, divided by
 * their count (0/0 = NaN when every label is ignored, as in torch). `logits` [B, S, V] are upcast to f32;
 * labels are [B, S] integers.
 */
export function causalLmLoss(logits: Tensor, labels: Tensor): Tensor {
  const { sum, count } = causalLmNll(logits, labels);
  return sum.div(count);
}

/** The sum and count (f32 rank-0) behind causalLmLoss: gradient accumulation and evaluation add them up over batches. */
export interface NllSum {
  sum: Tensor;
  count: Tensor;
}

/** causalLmLoss before the division: the summed NLL of the shifted labels and how many tokens took a loss. */
export function causalLmNll(logits: Tensor, labels: Tensor): NllSum {
  return tokenNll(logits.astype("f32"), shiftedLabels(labels));
}

/** Labels [B, S] moved one left (position t is scored on labels[t + 1]), the last position ignored. */
function shiftedLabels(labels: Tensor): Tensor {
  const [B, S] = [labels.shape[0]!, labels.shape[1]!];
  return tx.concatenate([labels.slice(null, [1, S]), tx.full([B, 1], IGNORE_INDEX, labels.dtype)], 1);
}

/** How many tokens of `labels` [B, S] (unshifted) take a loss, as f32 rank-0: known before the forward pass. */
export function lossTokenCount(labels: Tensor): Tensor {
  return shiftedLabels(labels).ne(IGNORE_INDEX).astype("f32").sum();
}

/** Mean negative log-likelihood of `targets` [B, S] (already aligned with logits) over targets that are not -100. */
export function meanTokenNll(logits: Tensor, targets: Tensor): Tensor {
  const { sum, count } = tokenNll(logits, targets);
  return sum.div(count);
}

/** The sum of -log p(target) over targets that are not -100, and their count (both f32 rank-0). */
function tokenNll(logits: Tensor, targets: Tensor): NllSum {
  const valid = targets.ne(IGNORE_INDEX);
  const safe = tx.where(valid, targets, 0);
  const lse = tx.nn.logsumexp(logits, -1);
  const picked = tx.takeAlongAxis(logits, safe.expandDims(-1), -1).squeeze(-1);
  const nll = tx.where(valid, lse.sub(picked), 0);
  return { sum: nll.sum(), count: valid.astype("f32").sum() };
}

export interface ChunkOpts {
  /** Sequence positions per chunk (>= 1); the last chunk is padded with ignored positions when it does not divide S. */
  chunk: number;
}

/**
 * causalLmLoss(hidden @ headWeight, labels) without the [B, S, V] logits: a `scan` over sequence chunks computes
 * each chunk's logits [B, chunk, V] (f32-accumulated, as llamaLogits), their logsumexp and the labels' logits, and
 * carries the sum of NLL and the count of loss tokens. Autodiff saves only those two carries and recomputes each
 * chunk's logits in the backward scan, so no pass ever holds more than one chunk of logits. `hidden` [B, S, E] is
 * the final (normed) hidden state, `headWeight` [E, V] (cast to hidden's dtype), labels [B, S] unshifted.
 */
export function chunkedCausalLmLoss(hidden: Tensor, headWeight: Tensor, labels: Tensor, opts: ChunkOpts): Tensor {
  const { sum, count } = chunkedCausalLmNll(hidden, headWeight, labels, opts);
  return sum.div(count);
}

/** chunkedCausalLmLoss before the division (see causalLmNll). */
export function chunkedCausalLmNll(hidden: Tensor, headWeight: Tensor, labels: Tensor, opts: ChunkOpts): NllSum {
  const [B, S, E] = [hidden.shape[0]!, hidden.shape[1]!, hidden.shape[2]!];
  const { chunk } = opts;
  if (!Number.isInteger(chunk) || chunk < 1)
    throw new TesseraError(`chunkedCausalLmLoss: chunk must be an integer >= 1; got ${describe(chunk)}`, {
      code: "ERR_CONFIG",
      exitCode: EXIT.usage,
    });
  const c = Math.min(chunk, S);
  const n = Math.ceil(S / c);
  const padded = n * c - S;
  const next = shiftedLabels(labels);
  // Padded positions get label -100, so they count neither in the sum nor in the count.
  const h =
    padded > 0
      ? tx.pad(hidden, [
          [0, 0],
          [0, padded],
          [0, 0],
        ])
      : hidden;
  const y =
    padded > 0
      ? tx.pad(
          next,
          [
            [0, 0],
            [0, padded],
          ],
          IGNORE_INDEX,
        )
      : next;
  // [B, n*c, ...] -> [n, B, c, ...]: scan slices its xs along the leading axis.
  const hs = h.reshape([B, n, c, E]).transpose([1, 0, 2, 3]);
  const ys = y.reshape([B, n, c]).transpose([1, 0, 2]);
  const w = headWeight.astype(hidden.dtype);
  const zero = tx.full([], 0, "f32");
  const [[sum, count]] = tx.scan(
    ([s, k]: [Tensor, Tensor], x: { h: Tensor; y: Tensor }): [[Tensor, Tensor], null] => {
      const logits = tx.dotGeneral(x.h, w, { lhsContract: [2], rhsContract: [0], outDtype: "f32" });
      const part = tokenNll(logits, x.y);
      return [[s.add(part.sum), k.add(part.count)], null];
    },
    [zero, zero] as [Tensor, Tensor],
    { h: hs, y: ys },
  );
  return { sum, count };
}

/** Above this many bytes of f32 logits [B, S, V], the training step computes the loss in chunks by default. */
export const LOSS_CHUNK_THRESHOLD_BYTES = 256 * 2 ** 20;
/** The logits one chunk may hold when the chunk size is chosen automatically. */
export const LOSS_CHUNK_TARGET_BYTES = 64 * 2 ** 20;

/**
 * The default chunk for a [batch, seq] step over `vocab` logits: undefined (whole logits) while they take at most
 * LOSS_CHUNK_THRESHOLD_BYTES in f32 (the tiny model, short sequences: one fused pass is fastest and the memory is
 * small), else the fewest equal chunks of at most LOSS_CHUNK_TARGET_BYTES each (7B's 32k vocab at batch 4 x seq
 * 2048 is 1 GiB whole, 16 chunks of 128 positions).
 */
export function defaultLossChunk(batch: number, seq: number, vocab: number): number | undefined {
  const whole = batch * seq * vocab * 4;
  if (whole <= LOSS_CHUNK_THRESHOLD_BYTES) return undefined;
  const perPosition = batch * vocab * 4;
  const maxChunk = Math.max(1, Math.floor(LOSS_CHUNK_TARGET_BYTES / perPosition));
  return Math.ceil(seq / Math.ceil(seq / maxChunk));
}
