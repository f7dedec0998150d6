// The trainer's AdamW: its hyperparameters and state as checkpoints store them, stepped by tx.optim.adamw (torch's rule).
import { optim, type Tensor } from "../index.ts";
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
 * AdamW over whole trees, as `tx.optim.adamw` computes it (the trainer's update is that transformation, applied with
 * `optim.applyUpdates`): params, grads and both moments share one structure; `t` is the 1-based step (f32) and
 * `lr` this step's rate. Returns the new params and state. Every leaf is decayed (torch applies weight_decay to every
 * parameter in the group).
 */
export function adamwUpdate<T extends Tree<Tensor>>(
  params: T,
  grads: T,
  state: AdamWState<T>,
  t: Tensor,
  lr: Tensor,
  hp: AdamWConfig,
): [T, AdamWState<T>] {
  const opt = optim.adamw({ lr: () => lr, b1: hp.beta1, b2: hp.beta2, eps: hp.eps, weightDecay: hp.weightDecay });
  // optim counts steps from 0 in an s32 (its t is count + 1): the trainer's 1-based f32 step maps onto it exactly.
  const count = t.astype("s32").sub(1);
  const [updates, next] = opt.update(grads, { count, mu: state.m, nu: state.v }, params);
  return [optim.applyUpdates(params, updates), { m: next.mu as T, v: next.nu as T }];
}
