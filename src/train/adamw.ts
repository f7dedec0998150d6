// AdamW with torch.optim.AdamW's semantics (decoupled weight decay, bias correction) over parameter trees, in the DSL.
import { tx, type Tensor } from "../index.ts";
import type { Tree } from "../frontend/tree.ts";
import { adamwLeaf as optimAdamwLeaf } from "../frontend/optim.ts";

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
 * One AdamW step for a single tensor (torch's single-tensor AdamW); returns `[newParam, m, v]`. The formula lives in
 * src/frontend/optim.ts so that `tx.optim.adamw` and the trainer share one op order (bit-identical results).
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
  return optimAdamwLeaf(p, g, m, v, t, lr, { b1: hp.beta1, b2: hp.beta2, eps: hp.eps, weightDecay: hp.weightDecay });
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
