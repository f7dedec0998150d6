// AdamW with torch.optim.AdamW's semantics (decoupled weight decay, bias correction) over parameter trees, in the DSL.
import { tx, type Tensor } from "../index.ts";
import type { Tree } from "../frontend/tree.ts";

export interface AdamWConfig {
  lr: number;
  beta1: number;
  beta2: number;
  eps: number;
  weightDecay: number;
}

/** torch.optim.AdamW's defaults. */
export const ADAMW_DEFAULTS: AdamWConfig = Object.freeze({
  lr: 1e-3,
  beta1: 0.9,
  beta2: 0.999,
  eps: 1e-8,
  weightDecay: 0.01,
});

/** First and second moments, shaped like the parameters (f32). */
export interface AdamWState<T> {
  m: T;
  v: T;
}

/**
 * One AdamW step for a single tensor, as torch's single-tensor AdamW does it:
 *   p <- p * (1 - lr * wd);  m <- m + (1 - b1) (g - m);  v <- b2 v + (1 - b2) g^2
 *   p <- p - (lr / (1 - b1^t)) * m / (sqrt(v) / sqrt(1 - b2^t) + eps)
 * `t` is the 1-based step number and `lr` the learning rate, both rank-0 f32 tensors so that a schedule and the
 * step counter do not change the compiled program.
 */
export function adamwLeaf(
  p: Tensor,
  g: Tensor,
  m: Tensor,
  v: Tensor,
  t: Tensor,
  lr: Tensor,
  hp: AdamWConfig,
): [Tensor, Tensor, Tensor] {
  const decayed = p.mul(lr.mul(-hp.weightDecay).add(1));
  const m2 = m.add(g.sub(m).mul(1 - hp.beta1));
  const v2 = v.mul(hp.beta2).add(g.mul(g).mul(1 - hp.beta2));
  const bc1 = tx.pow(hp.beta1, t).neg().add(1);
  const bc2 = tx.pow(hp.beta2, t).neg().add(1);
  const stepSize = lr.div(bc1);
  const denom = v2.sqrt().div(bc2.sqrt()).add(hp.eps);
  return [decayed.sub(m2.div(denom).mul(stepSize)), m2, v2];
}

/**
 * AdamW over whole trees: params, grads and both moments share one structure. Returns the new params and state.
 * Every leaf is decayed (torch applies weight_decay to every parameter in the group).
 */
export function adamwUpdate<T extends Tree<Tensor>>(
  params: T,
  grads: T,
  state: AdamWState<T>,
  t: Tensor,
  lr: Tensor,
  hp: AdamWConfig,
): [T, AdamWState<T>] {
  const p = tx.treeFlatten(params);
  const g = tx.treeLeaves(grads);
  const m = tx.treeLeaves(state.m);
  const v = tx.treeLeaves(state.v);
  if (g.length !== p.leaves.length || m.length !== p.leaves.length || v.length !== p.leaves.length) {
    throw new Error(
      `adamwUpdate: params have ${p.leaves.length} leaves, grads ${g.length}, m ${m.length}, v ${v.length}`,
    );
  }
  const out = p.leaves.map((leaf, i) =>
    adamwLeaf(leaf as Tensor, g[i] as Tensor, m[i] as Tensor, v[i] as Tensor, t, lr, hp),
  );
  const rebuild = (k: 0 | 1 | 2) =>
    tx.treeUnflatten(
      p.def,
      out.map((o) => o[k]),
    ) as T;
  return [rebuild(0), { m: rebuild(1), v: rebuild(2) }];
}
