// Gives each consumer of a constant, iota or broadcast its own copy, so each copy can be sharded as its consumer needs.
import { makeOp, Value, type AnyOp, type Graph } from "../ir/graph.ts";
import type { Pass } from "./pass.ts";
import { makeGraph, mapBody, sameList } from "./rewrite.ts";

export const unshareBroadcastsPass: Pass = {
  name: "unshare-broadcasts",
  description: "Copies a constant, iota or broadcast_in_dim used by several ops once per using op (before sharding).",
  run: unshareBroadcasts,
};

const CHEAP = new Set(["constant", "iota", "broadcast_in_dim"]);

/**
 * CSE merges identical broadcasts (the `1 - lr*wd` splat of every AdamW leaf of one shape, say), which ties
 * together values that want different shardings: one user's layout would spread through the shared copy to the
 * others, or force a collective on a value any device can compute. XLA fuses broadcasts into their users, so a copy
 * per user costs nothing. The first user keeps the original; each later one gets a clone placed right before it.
 */
export function unshareBroadcasts(g: Graph): Graph {
  const producer = new Map<Value, AnyOp>();
  for (const op of g.ops) if (CHEAP.has(op.name)) for (const v of op.outputs) producer.set(v, op);
  const firstUser = new Map<Value, AnyOp>();
  const ops: AnyOp[] = [];
  for (const original of g.ops) {
    const op = mapBody(original, unshareBroadcasts);
    let inputs = op.inputs;
    const copies = new Map<Value, Value>(); // the same value twice in one op: one copy
    op.inputs.forEach((v, i) => {
      const p = producer.get(v);
      if (!p) return;
      const first = firstUser.get(v);
      if (!first) {
        firstUser.set(v, op);
        return;
      }
      if (first === op) return;
      let copy = copies.get(v);
      if (!copy) {
        copy = new Value(v.type);
        copies.set(v, copy);
        ops.push(makeOp(p.name, p.inputs, p.params as never, [copy], p.loc));
      }
      if (inputs === op.inputs) inputs = [...op.inputs];
      (inputs as Value[])[i] = copy;
    });
    ops.push(inputs === op.inputs ? op : makeOp(op.name, inputs, op.params as never, op.outputs, op.loc));
  }
  if (sameList(ops, g.ops)) return g;
  return makeGraph(g.inputs, ops, g.outputs, g.inputNames, g.outputNames);
}
