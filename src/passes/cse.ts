// Common subexpression elimination: merges ops with the same name, the same operands and equal params.
import type { AnyOp, Graph, Value } from "../ir/graph.ts";
import { formatType } from "../ir/types.ts";
import type { Pass } from "./pass.ts";
import { makeGraph, mapBody, sameList, substituteInputs } from "./rewrite.ts";

export const csePass: Pass = {
  name: "cse",
  description: "Merges identical ops (same name, operands and params; loops and conds with structurally equal bodies).",
  run: cse,
};

/**
 * Later duplicates are replaced by the first occurrence (which keeps its location). optimization_barrier ops
 * are never merged: two barriers over the same values exist to stay apart in the schedule (rematerialization).
 * Scan bodies are cleaned first, then compared structurally.
 */
export function cse(g: Graph): Graph {
  const subst = new Map<Value, Value>();
  const first = new Map<string, AnyOp>();
  const ids = new Map<Value, number>();
  const id = (v: Value): number => {
    let n = ids.get(v);
    if (n === undefined) {
      n = ids.size;
      ids.set(v, n);
    }
    return n;
  };
  const ops: AnyOp[] = [];
  for (const original of g.ops) {
    const op = mapBody(substituteInputs(original, subst), cse);
    if (op.name !== "optimization_barrier") {
      const key = `${op.name}(${op.inputs.map(id).join(",")})${paramsKey(op)}`;
      const prev = first.get(key);
      if (prev) {
        op.outputs.forEach((v, i) => {
          subst.set(v, prev.outputs[i]!);
        });
        continue;
      }
      first.set(key, op);
    }
    ops.push(op);
  }
  const outputs = g.outputs.map((v) => subst.get(v) ?? v);
  if (sameList(ops, g.ops) && sameList(outputs, g.outputs)) return g;
  return makeGraph(g.inputs, ops, outputs, g.inputNames, g.outputNames);
}

// Params are immutable, so each params object's key is computed once (a scan body's key, which covers the whole
// body, is asked for again by every enclosing graph's cse and graphKey).
const paramKeys = new WeakMap<object, string>();

/** Params in a canonical text form; a nested graph by its structure (value numbering local to the graph). */
function paramsKey(op: AnyOp): string {
  let key = paramKeys.get(op.params);
  if (key === undefined) {
    key = canonical(keyedParams(op));
    paramKeys.set(op.params, key);
  }
  return key;
}

/** The params with each nested graph replaced by its structural key. */
function keyedParams(op: AnyOp): unknown {
  switch (op.name) {
    case "scan":
      return { ...op.params, body: graphKey(op.params.body) };
    case "cond":
      return { branches: op.params.branches.map(graphKey) };
    case "while":
      return { ...op.params, cond: graphKey(op.params.cond), body: graphKey(op.params.body) };
    case "checkpoint":
      return { ...op.params, body: graphKey(op.params.body) };
    case "custom_vjp":
      return {
        ...op.params,
        body: graphKey(op.params.body),
        fwd: graphKey(op.params.fwd),
        bwd: graphKey(op.params.bwd),
      };
    default:
      return op.params;
  }
}

/** Structural identity of a graph: input types, each op with operands numbered locally, and the outputs. */
export function graphKey(g: Graph): string {
  const local = new Map<Value, number>();
  const num = (v: Value): number => {
    let n = local.get(v);
    if (n === undefined) {
      n = local.size;
      local.set(v, n);
    }
    return n;
  };
  g.inputs.forEach(num);
  const parts = [g.inputs.map((v) => formatType(v.type)).join(",")];
  for (const op of g.ops) {
    parts.push(`${op.name}(${op.inputs.map(num).join(",")})${paramsKey(op)}`);
    op.outputs.forEach(num);
  }
  parts.push(`return(${g.outputs.map(num).join(",")})`);
  return parts.join(";");
}

/** JSON-like text with sorted keys that tells -0, NaN and the infinities apart (JSON.stringify does not). */
function canonical(x: unknown): string {
  if (typeof x === "number") return Object.is(x, -0) ? "-0" : String(x);
  if (Array.isArray(x)) {
    let s = "[";
    for (let i = 0; i < x.length; i++) s += (i ? "," : "") + canonical(x[i]);
    return `${s}]`;
  }
  if (x !== null && typeof x === "object") {
    const o = x as Record<string, unknown>;
    return `{${Object.keys(o)
      .sort()
      .map((k) => `${k}:${canonical(o[k])}`)
      .join(",")}}`;
  }
  return JSON.stringify(x);
}
