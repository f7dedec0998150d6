// tx.checkpoint (JAX's jax.checkpoint): the ops a function traces are recomputed in the backward pass, except what a policy saves.
import { checkpointPolicies, markRegion, nameValue, type SavePolicy } from "../passes/remat.ts";
import { requireTrace, Tensor } from "./core.ts";
import { TraceError } from "./errors.ts";
import { describe } from "../errors.ts";

export { checkpointPolicies, type SavePolicy };

export interface CheckpointOpts {
  /** Which results of the function's ops the backward pass may keep from the forward (default nothingSaveable). */
  policy?: SavePolicy;
}

/**
 * `checkpoint(fn, { policy })` is `fn`, traced inline as usual, but differentiating it saves only the function's
 * inputs and the results `policy` allows; the backward pass recomputes the rest from them (behind an
 * optimization barrier, so XLA cannot merge the recomputation back into the forward pass). Trades compute for
 * activation memory; values and gradients are unchanged.
 */
export function checkpoint<A extends unknown[], R>(
  fn: (...args: A) => R,
  opts: CheckpointOpts = {},
): (...args: A) => R {
  const policy = opts.policy ?? checkpointPolicies.nothingSaveable;
  if (typeof policy !== "function")
    throw new TraceError("checkpoint", `policy must be one of tx.checkpointPolicies, got ${describe(policy)}`);
  return (...args: A): R => {
    const b = requireTrace("checkpoint").builder;
    const start = b.opCount;
    const out = fn(...args);
    markRegion(b.opsFrom(start), policy);
    return out;
  };
}

/** Names `x` for `checkpointPolicies.saveOnlyTheseNames` (JAX's checkpoint_name); returns `x` itself. */
export function checkpointName(x: Tensor, name: string): Tensor {
  if (!(x instanceof Tensor)) throw new TraceError("checkpointName", `expected a Tensor, got ${describe(x)}`);
  nameValue(x.value, name);
  return x;
}
