// Rematerialization regions (tx.checkpoint): which traced ops autodiff recomputes in the backward pass, and what a policy lets it save.
import type { AnyOp, Value } from "../ir/graph.ts";

/** Decides, per op of a checkpointed region, whether its results are saved for the backward pass (else recomputed). */
export type SavePolicy = (op: AnyOp) => boolean;

/** The ops one `tx.checkpoint` call traced, in program order, and its policy. */
export interface RematRegion {
  readonly ops: readonly AnyOp[];
  readonly saveable: SavePolicy;
}

/*
 * Regions are keyed by the op objects the tracer built, not stored in the IR: autodiff runs on the freshly traced
 * graph (valueAndGrad differentiates right after tracing), so the ops are still those objects. A region does not
 * survive copying (a scan body, which autodiff already recomputes whole, or the inlined graph of an inner grad):
 * there its ops are differentiated as usual, keeping their activations, which changes memory, never values.
 */
const REGIONS = new WeakMap<AnyOp, RematRegion>();
const NAMES = new WeakMap<Value, string>();

export function markRegion(ops: readonly AnyOp[], saveable: SavePolicy): void {
  const region: RematRegion = Object.freeze({ ops: Object.freeze([...ops]), saveable });
  for (const op of ops) REGIONS.set(op, region);
}

export function regionOf(op: AnyOp): RematRegion | undefined {
  return REGIONS.get(op);
}

export function nameValue(v: Value, name: string): void {
  NAMES.set(v, name);
}

export function valueName(v: Value): string | undefined {
  return NAMES.get(v);
}

/** JAX's jax.checkpoint_policies, over Tessera's ops. */
export const checkpointPolicies = Object.freeze({
  /** Save nothing: the backward pass recomputes the whole region from its inputs (jax.checkpoint's default). */
  nothingSaveable: ((_op: AnyOp) => false) as SavePolicy,
  /** Save every matmul's result; recompute the cheap element-wise work around them. */
  dotsSaveable: ((op: AnyOp) => op.name === "dot_general") as SavePolicy,
  /** Save matmuls without batch dimensions (weight projections), recompute batched ones (attention scores). */
  dotsWithNoBatchDimsSaveable: ((op: AnyOp) =>
    op.name === "dot_general" && op.params.lhsBatch.length === 0) as SavePolicy,
  /** Save only the values given these names with `tx.checkpointName`. */
  saveOnlyTheseNames:
    (...names: string[]): SavePolicy =>
    (op: AnyOp) =>
      op.outputs.some((v) => {
        const n = NAMES.get(v);
        return n !== undefined && names.includes(n);
      }),
});
