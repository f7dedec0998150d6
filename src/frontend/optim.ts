// tx.optim: optax-style gradient transformations (adamw, adam, sgd, clipByGlobalNorm, chain), schedules, applyUpdates.
import type { Tensor } from "./core.ts";
import { TraceError } from "./errors.ts";
import * as np from "./numpy.ts";
import type { Tree } from "./tree.ts";
import * as tree from "./tree_ns.ts";

/** A learning rate (or any hyperparameter) as a function of the 0-based step count; returns a rank-0 f32. */
export type Schedule = (step: Tensor) => Tensor;

/** A constant or a schedule: a number becomes a compile-time constant, a schedule reads the state's step count. */
export type ScalarOrSchedule = number | Schedule;

/**
 * optax's GradientTransformation: `init(params)` builds the state (a tree of Tensors, so it can cross `jit`);
 * `update(grads, state, params)` returns `[updates, newState]`, where the updates are added to the params by
 * `applyUpdates` (they already carry the minus sign and the learning rate).
 */
export interface GradientTransformation<S = unknown> {
  // The param trees are unconstrained generics, not Tree<Tensor>: a user's `interface Params { w: Tensor }` has no
  // index signature, so Tree<Tensor> would refuse it (and the leaves are checked when the trees are flattened).
  init<P>(params: P): S;
  update<T>(grads: T, state: S, params?: T): [T, S];
}

/** The state of the transformations that only need a step count (a rank-0 s32: exact past 2^24 steps, unlike f32). */
export interface CountState {
  count: Tensor;
}

export interface AdamState extends CountState {
  /** First moments, shaped like the params. */
  mu: Tree<Tensor>;
  /** Second moments, shaped like the params. */
  nu: Tree<Tensor>;
}

export interface SgdState extends CountState {
  /** The momentum buffer; null without momentum (no state to carry). */
  trace: Tree<Tensor> | null;
}

// ---------------------------------------------------------------------------------------------------------------
// Schedules: plain functions of the step, so a changing rate does not change the compiled program.

const asF32 = (step: Tensor): Tensor => step.astype("f32");

/** The value at every step. */
export function constant(value: number): Schedule {
  return () => np.full([], value);
}

/** From `init` (default 0) to `peak` linearly over `warmupSteps`, then `peak`. */
export function linearWarmup(opts: { peak: number; warmupSteps: number; init?: number }): Schedule {
  const init = opts.init ?? 0;
  const { peak, warmupSteps } = opts;
  // Zero warmup steps means no warmup (avoids 0/0 at step 0).
  if (warmupSteps <= 0) return constant(peak);
  return (step) =>
    asF32(step)
      .div(warmupSteps)
      .minimum(1)
      .mul(peak - init)
      .add(init);
}

/**
 * optax.cosine_decay_schedule: `init * ((1 - alpha) * 0.5 * (1 + cos(pi * min(t, T) / T)) + alpha)`, so the value
 * ends at `init * alpha` and stays there after `decaySteps`.
 */
export function cosineDecay(opts: { init: number; decaySteps: number; alpha?: number }): Schedule {
  const { init, decaySteps } = opts;
  const alpha = opts.alpha ?? 0;
  if (decaySteps <= 0) throw new TraceError("optim.cosineDecay", `decaySteps must be positive, got ${decaySteps}`);
  return (step) => {
    const t = asF32(step).minimum(decaySteps).maximum(0);
    const cosine = np
      .cos(t.mul(Math.PI / decaySteps))
      .add(1)
      .mul(0.5);
    return cosine
      .mul(1 - alpha)
      .add(alpha)
      .mul(init);
  };
}

/**
 * optax.warmup_cosine_decay_schedule: linear from `init` (default 0) to `peak` over `warmupSteps`, then cosine from
 * `peak` to `end` (default 0) by step `decaySteps` (which counts the warmup, as in optax).
 */
export function warmupCosine(opts: {
  peak: number;
  warmupSteps: number;
  decaySteps: number;
  init?: number;
  end?: number;
}): Schedule {
  const { peak, warmupSteps, decaySteps } = opts;
  const end = opts.end ?? 0;
  if (decaySteps <= warmupSteps)
    throw new TraceError("optim.warmupCosine", `decaySteps (${decaySteps}) must exceed warmupSteps (${warmupSteps})`);
  const warm = linearWarmup({ peak, warmupSteps, init: opts.init ?? 0 });
  // optax's alpha = end / peak, with a zero peak meaning "decay to 0" rather than NaN.
  const cos = cosineDecay({ init: peak, decaySteps: decaySteps - warmupSteps, alpha: peak === 0 ? 0 : end / peak });
  return (step) => {
    const s = asF32(step);
    return np.where(s.lt(warmupSteps), warm(s), cos(s.sub(warmupSteps)));
  };
}

/** The rate for the step whose 0-based count is `count` (optax evaluates schedules at the count before the step). */
function rateAt(lr: ScalarOrSchedule, count: Tensor): Tensor {
  return typeof lr === "number" ? np.full([], lr) : lr(count).astype("f32");
}

const newCount = (): Tensor => np.zeros([], "s32");

function requireParams<T>(name: string, params: T | undefined): T {
  if (params === undefined) throw new TraceError(name, "update needs the params (pass them as the third argument)");
  return params;
}

// ---------------------------------------------------------------------------------------------------------------
// Adam / AdamW.

/** The hyperparameters of one AdamW leaf step (the rate comes separately, as a tensor). */
export interface AdamLeafHp {
  b1: number;
  b2: number;
  eps: number;
  weightDecay: number;
}

/**
 * One AdamW step for a single tensor, as torch's single-tensor AdamW does it:
 *   p <- p * (1 - lr * wd);  m <- m + (1 - b1) (g - m);  v <- b2 v + (1 - b2) g^2
 *   p <- p - (lr / (1 - b1^t)) * m / (sqrt(v) / sqrt(1 - b2^t) + eps)
 * Returns `[newParam, m, v]`. `t` is the 1-based step number and `lr` the learning rate, both rank-0 f32 tensors so
 * that a schedule and the step counter do not change the compiled program.
 */
export function adamwLeaf(
  p: Tensor,
  g: Tensor,
  m: Tensor,
  v: Tensor,
  t: Tensor,
  lr: Tensor,
  hp: AdamLeafHp,
): [Tensor, Tensor, Tensor] {
  const decayed = p.mul(lr.mul(-hp.weightDecay).add(1));
  const m2 = m.add(g.sub(m).mul(1 - hp.b1));
  const v2 = v.mul(hp.b2).add(g.mul(g).mul(1 - hp.b2));
  const bc1 = np.pow(hp.b1, t).neg().add(1);
  const bc2 = np.pow(hp.b2, t).neg().add(1);
  const stepSize = lr.div(bc1);
  const denom = v2.sqrt().div(bc2.sqrt()).add(hp.eps);
  return [decayed.sub(m2.div(denom).mul(stepSize)), m2, v2];
}

export interface AdamWOpts {
  lr?: ScalarOrSchedule;
  b1?: number;
  b2?: number;
  eps?: number;
  weightDecay?: number;
}

/**
 * AdamW with torch.optim.AdamW's semantics and defaults (lr 1e-3, b1 0.9, b2 0.999, eps 1e-8, weightDecay 0.01):
 * decoupled decay applied to every leaf, bias correction as torch orders it (not optax's eps-inside-hat order).
 * The update is `newParam - param` from adamwLeaf. When the step moves a weight by at most half its magnitude (the
 * usual case) that difference is exact (Sterbenz), so `applyUpdates` gives adamwLeaf's new param bit for bit;
 * otherwise it can differ in the last bit. src/train's trainer steps its LoRA weights with this transformation.
 */
export function adamw(opts: AdamWOpts = {}): GradientTransformation<AdamState> {
  const lr = opts.lr ?? 1e-3;
  const hp: AdamLeafHp = {
    b1: opts.b1 ?? 0.9,
    b2: opts.b2 ?? 0.999,
    eps: opts.eps ?? 1e-8,
    weightDecay: opts.weightDecay ?? 0.01,
  };
  return {
    init: (params) => ({
      count: newCount(),
      mu: tree.map((p: Tensor) => np.zerosLike(p), params),
      nu: tree.map((p: Tensor) => np.zerosLike(p), params),
    }),
    update<T>(grads: T, state: AdamState, params?: T): [T, AdamState] {
      const ps = requireParams("optim.adamw", params);
      const rate = rateAt(lr, state.count);
      const count = state.count.add(1);
      const t = count.astype("f32");
      const [pl, def] = tree.flatten(ps as Tree<Tensor>);
      const gl = tree.leaves(grads as Tree<Tensor>);
      const ml = tree.leaves(state.mu);
      const vl = tree.leaves(state.nu);
      if (gl.length !== pl.length || ml.length !== pl.length || vl.length !== pl.length)
        throw new TraceError(
          "optim.adamw",
          `params have ${pl.length} leaves, grads ${gl.length}, mu ${ml.length}, nu ${vl.length}`,
        );
      const out = pl.map((p, i) => adamwLeaf(p, gl[i]!, ml[i]!, vl[i]!, t, rate, hp));
      const updates = tree.unflatten(
        def,
        out.map((o, i) => o[0].sub(pl[i]!)),
      ) as T;
      const mu = tree.unflatten(
        def,
        out.map((o) => o[1]),
      );
      const nu = tree.unflatten(
        def,
        out.map((o) => o[2]),
      );
      return [updates, { count, mu, nu }];
    },
  };
}

/** Adam: AdamW without weight decay (torch's Adam with weight_decay 0 is the same update). */
export function adam(opts: Omit<AdamWOpts, "weightDecay"> = {}): GradientTransformation<AdamState> {
  return adamw({ ...opts, weightDecay: 0 });
}

// ---------------------------------------------------------------------------------------------------------------
// SGD.

/**
 * SGD with optional heavy-ball or Nesterov momentum, as torch (dampening 0) and optax.sgd:
 * `buf <- g + momentum * buf`; the step direction is `buf`, or `g + momentum * buf` with nesterov; update = -lr * it.
 */
export function sgd(opts: {
  lr: ScalarOrSchedule;
  momentum?: number;
  nesterov?: boolean;
}): GradientTransformation<SgdState> {
  const { lr } = opts;
  const momentum = opts.momentum ?? 0;
  const nesterov = opts.nesterov ?? false;
  if (nesterov && momentum === 0) throw new TraceError("optim.sgd", "nesterov needs a nonzero momentum");
  return {
    init: (params) => ({
      count: newCount(),
      trace: momentum === 0 ? null : tree.map((p: Tensor) => np.zerosLike(p), params),
    }),
    update<T>(grads: T, state: SgdState): [T, SgdState] {
      const negRate = rateAt(lr, state.count).neg();
      const count = state.count.add(1);
      if (state.trace === null) return [tree.map((g: Tensor) => g.mul(negRate), grads) as T, { count, trace: null }];
      const trace = tree.map((g: Tensor, b: Tensor) => g.add(b.mul(momentum)), grads, state.trace);
      const direction = nesterov ? tree.map((g: Tensor, b: Tensor) => g.add(b.mul(momentum)), grads, trace) : trace;
      return [tree.map((d: Tensor) => d.mul(negRate), direction) as T, { count, trace }];
    },
  };
}

// ---------------------------------------------------------------------------------------------------------------
// Clipping, chaining, applying.

/** The L2 norm of all leaves together (in f32), as optax.global_norm. */
export function globalNorm(t: unknown): Tensor {
  const squares = tree.leaves(t as Tree<Tensor>).map((g) => g.astype("f32").square().sum());
  return squares.reduce((a, b) => a.add(b), np.full([], 0)).sqrt();
}

/**
 * Scales every leaf by `maxNorm / norm` when the global norm exceeds `maxNorm`, else passes them through unchanged
 * (the factor is then exactly 1). Stateless: its state is an empty object.
 */
export function clipByGlobalNorm(maxNorm: number): GradientTransformation<Record<string, never>> {
  return {
    init: () => ({}),
    update<T>(grads: T, state: Record<string, never>): [T, Record<string, never>] {
      const norm = globalNorm(grads);
      const scale = np.where(norm.le(maxNorm), 1, np.full([], maxNorm).div(norm));
      return [tree.map((g: Tensor) => g.mul(scale.astype(g.dtype)), grads) as T, state];
    },
  };
}

/** Applies the transformations in order (each one's updates feed the next); the state is their states' array. */
export function chain(...ts: GradientTransformation<unknown>[]): GradientTransformation<unknown[]> {
  return {
    init: (params) => ts.map((t) => t.init(params)),
    update<T>(grads: T, state: unknown[], params?: T): [T, unknown[]] {
      let u = grads;
      const next = ts.map((t, i) => {
        const [u2, s2] = t.update(u, state[i], params);
        u = u2;
        return s2;
      });
      return [u, next];
    },
  };
}

/** `params + updates` leafwise, the update cast to the param's dtype (as optax.apply_updates). */
export function applyUpdates<T>(params: T, updates: T): T {
  return tree.map((p: Tensor, u: Tensor) => p.add(u.astype(p.dtype)), params, updates) as T;
}
