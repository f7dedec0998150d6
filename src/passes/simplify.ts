// Algebraic simplification: identities (x+0, x*1, no-op casts and reshapes, ...) rewritten away, op by op.
import { Value, makeOp, type AnyOp, type Graph } from "../ir/graph.ts";
import { isFloat, sameShape } from "../ir/types.ts";
import type { Pass } from "./pass.ts";
import { makeGraph, mapBody, sameList, substituteInputs } from "./rewrite.ts";

export const simplifyPass: Pass = {
  name: "simplify",
  description:
    "Rewrites algebraic identities: x+0, x*1, x/1, neg(neg x), no-op converts/reshapes/transposes/slices, ...",
  run: simplify,
};

type Producer = (v: Value) => AnyOp | undefined;

/**
 * One forward walk: an op that reduces to one of its operands is dropped and its result replaced by that
 * operand; an op that reduces to a cheaper op (reshape of reshape) is replaced by it, defining the same result.
 * Bypassed producers are left to DCE. Scan bodies are simplified first.
 */
export function simplify(g: Graph): Graph {
  const subst = new Map<Value, Value>();
  const producers = new Map<Value, AnyOp>();
  const producer: Producer = (v) => producers.get(v);
  const ops: AnyOp[] = [];
  for (const original of g.ops) {
    const op = mapBody(substituteInputs(original, subst), simplify);
    const r = rewrite(op, producer);
    if (r instanceof Value) {
      subst.set(op.outputs[0]!, r);
      continue;
    }
    const kept = r ?? op;
    kept.outputs.forEach((v) => {
      producers.set(v, kept);
    });
    ops.push(kept);
  }
  const outputs = g.outputs.map((v) => subst.get(v) ?? v);
  if (sameList(ops, g.ops) && sameList(outputs, g.outputs)) return g;
  return makeGraph(g.inputs, ops, outputs, g.inputNames, g.outputNames);
}

/**
 * The value every element of `v` has, if `v` is a splat: a constant whose values are all equal, or a
 * broadcast or reshape of one.
 */
function splatValue(v: Value, producer: Producer): number | undefined {
  const p = producer(v);
  if (!p) return undefined;
  if (p.name === "constant") {
    const vals = p.params.value;
    return vals.length > 0 && vals.every((x) => Object.is(x, vals[0])) ? vals[0] : undefined;
  }
  if (p.name === "broadcast_in_dim" || p.name === "reshape") return splatValue(p.inputs[0]!, producer);
  return undefined;
}

/** A replacement value, a replacement op defining the same results, or undefined to keep `op`. */
function rewrite(op: AnyOp, producer: Producer): Value | AnyOp | undefined {
  const is = (v: Value, x: number) => splatValue(v, producer) === x; // -0 === 0: x + -0 and x + 0 both give x
  const [a, b] = op.inputs as [Value, Value];
  switch (op.name) {
    case "add":
      if (is(b, 0)) return a;
      if (is(a, 0)) return b;
      return undefined;
    case "sub":
      return is(b, 0) ? a : undefined;
    case "mul":
      if (is(b, 1)) return a;
      if (is(a, 1)) return b;
      // Not for floats: 0 * inf and 0 * NaN are NaN.
      if (!isFloat(a.type.dtype) && (is(a, 0) || is(b, 0))) {
        const { dtype, shape } = op.outputs[0]!.type;
        return makeOp("constant", [], { dtype, shape, value: [0] }, op.outputs, op.loc);
      }
      return undefined;
    case "div":
      return is(b, 1) ? a : undefined;
    case "neg": {
      const p = producer(a);
      return p?.name === "neg" ? p.inputs[0] : undefined;
    }
    case "convert":
      return a.type.dtype === op.params.dtype ? a : undefined;
    case "reshape": {
      if (sameShape(a.type.shape, op.params.shape)) return a;
      const p = producer(a);
      if (p?.name !== "reshape") return undefined;
      const inner = p.inputs[0]!;
      if (sameShape(inner.type.shape, op.params.shape)) return inner;
      return makeOp("reshape", [inner], op.params, op.outputs, op.loc);
    }
    case "transpose": {
      const perm = op.params.perm;
      if (perm.every((d, i) => d === i)) return a;
      const p = producer(a);
      if (p?.name !== "transpose") return undefined;
      const composed = perm.map((d) => p.params.perm[d]!);
      if (composed.every((d, i) => d === i)) return p.inputs[0];
      return makeOp("transpose", [p.inputs[0]!], { perm: composed }, op.outputs, op.loc);
    }
    // Same shape means dims are the identity (they are strictly increasing).
    case "broadcast_in_dim":
      return sameShape(a.type.shape, op.params.shape) ? a : undefined;
    case "slice": {
      const { start, limit, stride } = op.params;
      const whole = a.type.shape.every((d, i) => start[i] === 0 && limit[i] === d && stride[i] === 1);
      return whole ? a : undefined;
    }
    case "select": {
      const [pred, onTrue, onFalse] = op.inputs as [Value, Value, Value];
      if (onTrue === onFalse) return onTrue;
      const p = splatValue(pred, producer);
      if (p === undefined) return undefined;
      return p !== 0 ? onTrue : onFalse;
    }
    default:
      return undefined;
  }
}
