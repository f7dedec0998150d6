// Rematerialization policies (JAX's jax.checkpoint_policies) as data on the `checkpoint` op, and the pass that inlines checkpoint ops once autodiff is done.
import { EXIT, TesseraError } from "../errors.ts";
import { type AnyOp, type Graph, makeOp, mapSubgraphs, type Value } from "../ir/graph.ts";
import type { Pass } from "./pass.ts";
import { cloneGraph, makeGraph, sameList } from "./rewrite.ts";

/** The policies a `checkpoint` op can carry (its `policy` param). */
export const POLICY_KINDS = [
  "nothingSaveable",
  "dotsSaveable",
  "dotsWithNoBatchDimsSaveable",
  "saveOnlyTheseNames",
  "everythingSaveable",
] as const;
export type PolicyKind = (typeof POLICY_KINDS)[number];

/**
 * Which results of a checkpointed function's ops the backward pass may keep from the forward pass. Data, not a
 * function, so that it lives in the IR (`checkpoint` op params) and survives copies of the graph: scan bodies,
 * the inlined graph of an inner grad, printing and parsing.
 */
export interface SavePolicy {
  readonly kind: PolicyKind;
  /** The value names `saveOnlyTheseNames` saves (empty for the other kinds). */
  readonly names: readonly string[];
}

const policy = (kind: PolicyKind, names: readonly string[] = []): SavePolicy =>
  Object.freeze({ kind, names: Object.freeze([...names]) });

/** JAX's jax.checkpoint_policies, over Tessera's ops. */
export const checkpointPolicies = Object.freeze({
  /** Save nothing: the backward pass recomputes the whole function from its inputs (jax.checkpoint's default). */
  nothingSaveable: policy("nothingSaveable"),
  /** Save every matmul's result; recompute the cheap element-wise work around them. */
  dotsSaveable: policy("dotsSaveable"),
  /** Save matmuls without batch dimensions (weight projections), recompute batched ones (attention scores). */
  dotsWithNoBatchDimsSaveable: policy("dotsWithNoBatchDimsSaveable"),
  /** Save only the values given these names with `tx.checkpointName`. */
  saveOnlyTheseNames: (...names: string[]): SavePolicy => policy("saveOnlyTheseNames", names),
  /** Save everything: differentiation is as without the checkpoint (nothing is recomputed). */
  everythingSaveable: policy("everythingSaveable"),
});

export function isPolicyKind(s: string): s is PolicyKind {
  return (POLICY_KINDS as readonly string[]).includes(s);
}

/** A policy as text, as parsePolicy reads it: its kind, `saveOnlyTheseNames(a,b)` with its names. */
export function policyText(p: SavePolicy): string {
  return p.kind === "saveOnlyTheseNames" ? `${p.kind}(${p.names.join(",")})` : p.kind;
}

/** The policy policyText wrote (for flags and reports); throws a usage error naming the valid ones. */
export function parsePolicy(text: string): SavePolicy {
  const m = /^\s*([A-Za-z]+)\s*(?:\((.*)\))?\s*$/.exec(text);
  const kind = m?.[1] ?? "";
  const names = m?.[2]
    ?.split(",")
    .map((n) => n.trim())
    .filter((n) => n !== "");
  if (isPolicyKind(kind) && (kind === "saveOnlyTheseNames" ? names !== undefined : m?.[2] === undefined))
    return policy(kind, names ?? []);
  throw new TesseraError(
    `unknown remat policy '${text}'; valid: ${POLICY_KINDS.map((k) => (k === "saveOnlyTheseNames" ? `${k}(name,...)` : k)).join(", ")}`,
    { code: "ERR_USAGE", exitCode: EXIT.usage },
  );
}

/**
 * The top-level ops of a checkpoint body whose results the forward pass saves for the backward pass. Ops with
 * bodies are never saved (their VJPs need residuals of their own); everythingSaveable is handled by autodiff as no
 * checkpoint at all.
 */
export function savedOps(op: AnyOp & { name: "checkpoint" }): AnyOp[] {
  const { body, policy: kind, names } = op.params;
  const saves = (o: AnyOp): boolean => {
    switch (kind as PolicyKind) {
      case "dotsSaveable":
        return o.name === "dot_general";
      case "dotsWithNoBatchDimsSaveable":
        return o.name === "dot_general" && o.params.lhsBatch.length === 0;
      case "saveOnlyTheseNames":
        return o.name === "checkpoint_name" && names.includes(o.params.name);
      default:
        return false;
    }
  };
  return body.ops.filter(saves);
}

/**
 * `g` with every checkpoint and custom_vjp op replaced by its (primal) body and every checkpoint_name by its
 * operand (recursively, scan and cond bodies included). Run after autodiff, which is the only reader of them: the
 * program they leave is the same, and the sharding propagation, memory estimate and emitter see plain ops.
 */
export function inlineCheckpoints(g: Graph): Graph {
  const sub = new Map<Value, Value>();
  const ops: AnyOp[] = [];
  const emit = (graph: Graph) => {
    for (const op of graph.ops) {
      const inputs = op.inputs.map((v) => sub.get(v) ?? v);
      if (op.name === "checkpoint_name") {
        sub.set(op.outputs[0]!, inputs[0]!);
        continue;
      }
      // A custom_vjp left after autodiff was not differentiated: it is its primal body, as the emitter would inline
      // it; inlined here, sharding propagation and the memory estimate see through it too.
      if (op.name === "checkpoint" || op.name === "custom_vjp") {
        // A copy: the same body may stand in several checkpoint ops (autodiff's forward and a scan's backward body).
        const body = cloneGraph(op.params.body);
        body.inputs.forEach((v, i) => {
          sub.set(v, inputs[i]!);
        });
        emit(body);
        op.outputs.forEach((v, i) => {
          const b = body.outputs[i]!;
          sub.set(v, sub.get(b) ?? b);
        });
        continue;
      }
      const next = mapSubgraphs(op, inlineCheckpoints);
      const same = next === op && inputs.every((v, i) => v === op.inputs[i]);
      ops.push(same ? op : makeOp(op.name, inputs, next.params as never, op.outputs, op.loc));
    }
  };
  emit(g);
  const outputs = g.outputs.map((v) => sub.get(v) ?? v);
  if (sameList(ops, g.ops) && sameList(outputs, g.outputs)) return g;
  return makeGraph(g.inputs, ops, outputs, g.inputNames, g.outputNames);
}

/** The pass form of inlineCheckpoints (last in the pipeline, after autodiff and the cleanup). */
export const inlineCheckpointsPass: Pass = {
  name: "inline-checkpoints",
  description:
    "Replaces each checkpoint and custom_vjp op by its body and each checkpoint_name by its operand (autodiff is done).",
  run: inlineCheckpoints,
};
