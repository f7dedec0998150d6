// Next-token choice inside the decode programs: greedy argmax, or HF's temperature / top-k / top-p warpers and a seeded categorical draw.
import { tx, type Tensor } from "tessera";

/**
 * Which sampler a program is compiled with. The numbers (temperature, k, p, the key) are runtime inputs, so changing
 * them recompiles nothing; only turning a warper on or off does.
 */
export type SamplingMode = { kind: "greedy" } | { kind: "sample"; topK: boolean; topP: boolean };

/**
 * Sortable u32 keys of f32 values: u32 order equals float order (-inf lowest, +inf highest), the radix-sort trick:
 * positive floats get their sign bit set, negative ones all their bits flipped.
 */
function orderKeys(x: Tensor): Tensor {
  const bits = tx.bitcast(x, "u32");
  const negative = bits.ge(0x80000000);
  return tx.where(negative, tx.bitwiseXor(bits, 0xffffffff), tx.bitwiseOr(bits, 0x80000000));
}

/**
 * The largest u32 threshold t such that `ok(t)` holds, for a predicate that holds at 0 and, once false, stays false
 * as t grows: 32 steps setting one bit each, from the top (no sort, no overflow). `ok` maps [B, 1] thresholds to
 * [B, 1] bools.
 */
function largestThreshold(rows: number, ok: (t: Tensor) => Tensor): Tensor {
  let t = tx.full([rows, 1], 0, "u32");
  for (let bit = 31; bit >= 0; bit--) {
    const cand = tx.bitwiseOr(t, (2 ** bit) >>> 0);
    t = tx.where(ok(cand), cand, t);
  }
  return t;
}

/**
 * HF's TopKLogitsWarper: scores below the k-th largest become -inf (ties with it are kept). `k` is an s32 scalar,
 * at most V. The k-th largest is found by bisection on the sortable keys: the largest t with count(key >= t) >= k.
 */
export function topKFilter(scores: Tensor, k: Tensor): Tensor {
  const B = scores.shape[0]!;
  const keys = orderKeys(scores);
  const kth = largestThreshold(B, (t) => keys.ge(t).astype("s32").sum(-1, { keepdims: true }).ge(k));
  return tx.where(keys.ge(kth), scores, -Infinity);
}

/**
 * HF's TopPLogitsWarper: sorted ascending, tokens whose cumulative probability is <= 1 - p are removed (the most
 * likely token always stays). Without a sort: token i stays iff the mass of tokens at or below it exceeds 1 - p, so
 * the kept set is key >= t for the largest t with mass(key < t) <= 1 - p.
 */
export function topPFilter(scores: Tensor, p: Tensor): Tensor {
  const B = scores.shape[0]!;
  const probs = tx.nn.softmax(scores, -1);
  const keys = orderKeys(scores);
  const limit = tx.sub(1, p);
  const t = largestThreshold(B, (t) => tx.where(keys.lt(t), probs, 0).sum(-1, { keepdims: true }).le(limit));
  return tx.where(keys.ge(t), scores, -Infinity);
}

/**
 * The next token of each row from f32 logits [B, V]: argmax for greedy (the first maximum, as torch.argmax), else
 * logits / temperature, then top-k, then top-p (HF's warper order), and a categorical draw under `key`.
 */
export function sampleNext(
  logits: Tensor,
  samp: { temperature: Tensor; topK: Tensor; topP: Tensor },
  mode: SamplingMode,
  key: Tensor,
): Tensor {
  if (mode.kind === "greedy") return logits.argmax(-1);
  let s = logits.div(samp.temperature);
  if (mode.topK) s = topKFilter(s, samp.topK);
  if (mode.topP) s = topPFilter(s, samp.topP);
  return tx.random.categorical(key, s, -1);
}
