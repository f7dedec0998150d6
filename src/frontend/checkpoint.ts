// tx.checkpoint (JAX's jax.checkpoint): one `checkpoint` IR op whose body autodiff recomputes in the backward pass, except what a policy saves.
import { describe } from "../errors.ts";
import { checkpointPolicies, isPolicyKind, type SavePolicy } from "../passes/remat.ts";
import { bind, requireTrace, Tensor } from "./core.ts";
import { traceBody, unifyCaptures } from "./control_flow.ts";
import { TraceError } from "./errors.ts";
import { opLoc } from "./loc.ts";
import { flatten, type Tree, unflatten } from "./tree.ts";
import { rebind } from "./debug.ts";

export { checkpointPolicies, type SavePolicy };

export interface CheckpointOpts {
  /** Which results of the function's ops the backward pass may keep from the forward (default nothingSaveable). */
  policy?: SavePolicy;
}

function isPolicy(p: unknown): p is SavePolicy {
  if (typeof p !== "object" || p === null) return false;
  const { kind, names } = p as Record<string, unknown>;
  return (
    typeof kind === "string" && isPolicyKind(kind) && Array.isArray(names) && names.every((n) => typeof n === "string")
  );
}

/**
 * `checkpoint(fn, { policy })` is `fn`, traced into one `checkpoint` op (its body), but differentiating it saves
 * only the function's inputs and the results `policy` allows; the backward pass recomputes the rest from them
 * (behind an optimization barrier, so XLA cannot merge the recomputation back into the forward pass). Trades
 * compute for activation memory; values and gradients are unchanged. As an op of the IR it also works inside
 * `scan` bodies and under nested `grad`. Arguments are trees; their tensor leaves are the op's operands (other
 * leaves are passed through as they are), and tensors the function closes over are operands too.
 */
export function checkpoint<A extends unknown[], R>(
  fn: (...args: A) => R,
  opts: CheckpointOpts = {},
): (...args: A) => R {
  const op = "checkpoint";
  if (typeof fn !== "function") throw new TraceError(op, `fn must be a function, got ${describe(fn)}`);
  const policy = opts.policy ?? checkpointPolicies.nothingSaveable;
  if (!isPolicy(policy))
    throw new TraceError(op, `policy must be one of tx.checkpointPolicies, got ${describe(policy)}`);
  return (...args: A): R => {
    const parent = requireTrace(op);
    const { leaves, def } = flatten<unknown>(args as Tree<unknown>);
    const at = leaves.flatMap((l, i) => (l instanceof Tensor ? [i] : []));
    const tensors = at.map((i) => leaves[i] as Tensor);
    const body = traceBody(
      parent,
      op,
      tensors.map((t) => t.type),
      (inputs) => {
        const filled = [...leaves];
        at.forEach((i, k) => {
          filled[i] = inputs[k]!;
        });
        return fn(...(unflatten(def, filled) as A));
      },
      undefined,
      true,
    );
    const { outer, graphs } = unifyCaptures([body], [tensors.length], "last");
    const outs = parent.builder
      .add(
        "checkpoint",
        [...tensors.map((t) => parent.lift(t, op)), ...outer],
        { body: graphs[0]!, policy: policy.kind, names: Object.freeze([...policy.names]) },
        opLoc(),
      )
      .map((v) => new Tensor(parent, v));
    // Printed values are the op's last results (the forward's: a recomputation in the backward pass prints nothing).
    parent.prints.push(...rebind(body.prints, outs, body.out.tensors.length));
    return unflatten(body.out.def, outs.slice(0, body.out.tensors.length)) as R;
  };
}

/** Names `x` for `checkpointPolicies.saveOnlyTheseNames` (JAX's checkpoint_name): an identity op carrying the name. */
export function checkpointName(x: Tensor, name: string): Tensor {
  if (!(x instanceof Tensor)) throw new TraceError("checkpointName", `expected a Tensor, got ${describe(x)}`);
  if (typeof name !== "string" || name === "")
    throw new TraceError("checkpointName", `the name must be a non-empty string, got ${describe(name)}`);
  return bind("checkpoint_name", [x], { name })[0]!;
}
