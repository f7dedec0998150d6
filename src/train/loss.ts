// Hugging Face's causal-LM loss: labels shifted left inside the loss, -100 ignored, mean over the remaining tokens.
import { tx, type Tensor } from "../index.ts";
import { logsumexp } from "../../models/stable.ts";

/** The label value that marks a position as not contributing to the loss (prompt tokens, padding). */
export const IGNORE_INDEX = -100;

/**
 * transformers' ForCausalLMLoss with reduction "mean": position t predicts labels[t + 1], the last position
 * predicts nothing, and the loss is the sum of -log p(label) over positions whose label is not -100, divided by
 * their count (0/0 = NaN when every label is ignored, as in torch). `logits` [B, S, V] are upcast to f32;
 * labels are [B, S] integers.
 */
export function causalLmLoss(logits: Tensor, labels: Tensor): Tensor {
  const [B, S] = [labels.shape[0]!, labels.shape[1]!];
  const lg = logits.astype("f32");
  const next = tx.concatenate([labels.slice(null, [1, S]), tx.full([B, 1], IGNORE_INDEX, labels.dtype)], 1);
  return meanTokenNll(lg, next);
}

/** Mean negative log-likelihood of `targets` [B, S] (already aligned with logits) over targets that are not -100. */
export function meanTokenNll(logits: Tensor, targets: Tensor): Tensor {
  const valid = targets.ne(IGNORE_INDEX);
  const safe = tx.where(valid, targets, 0);
  const lse = logsumexp(logits, -1);
  const picked = tx.takeAlongAxis(logits, safe.expandDims(-1), -1).squeeze(-1);
  const nll = tx.where(valid, lse.sub(picked), 0);
  return nll.sum().div(valid.astype("f32").sum());
}
