// Batching rules, one per op (jax.vmap's): re-emit an op on operands that carry an extra leading batch axis.
import { GraphBuilder, type Graph, type Op, type Value } from "../ir/graph.ts";
import { forEachElementwise, type ElementwiseOp } from "../ir/elementwise.ts";
import type { OpName, OpParams } from "../ir/ops.ts";
import { range, tensorType, type TensorType } from "../ir/types.ts";
import { Emitter } from "./emitter.ts";

/**
 * A value of the batched program: `b` says whether it has the batch axis. Batched values always carry it first
 * (axis 0), so rules only ever shift the op's own axes by one; vmap moves the user's axes to 0 and back.
 */
export interface BVal {
  readonly v: Value;
  readonly b: boolean;
}

export interface BatchCtx {
  readonly e: Emitter;
  /** The batch size. */
  readonly size: number;
}

/**
 * Given an op of the unbatched program and its operands in the batched one (at least one batched), emits the
 * batched computation and returns one BVal per result, each with the result's type plus the batch axis if batched.
 */
export type BatchRule<N extends OpName> = (ctx: BatchCtx, op: Op<N>, ins: readonly BVal[]) => readonly BVal[];

/** `x` with the batch axis: broadcast over it when `x` is not batched yet. */
export function toBatched(ctx: BatchCtx, x: BVal): Value {
  if (x.b) return x.v;
  const s = x.v.type.shape;
  return ctx.e.broadcast(
    x.v,
    [ctx.size, ...s],
    range(s.length).map((d) => d + 1),
  );
}

const batched = (v: Value): BVal => ({ v, b: true });
const shift = (dims: readonly number[]): number[] => dims.map((d) => d + 1);

/** Moves axis `from` of `v` to position `to` (a transpose, skipped when it is a no-op). */
export function moveAxis(e: Emitter, v: Value, from: number, to: number): Value {
  const perm = range(v.type.shape.length).filter((d) => d !== from);
  perm.splice(to, 0, from);
  return e.transpose(v, perm);
}

/** Every operand batched, then the same op with its axis params shifted by `params`. */
function allBatched<N extends OpName>(params: (p: OpParams[N], size: number) => OpParams[N]): BatchRule<N> {
  return (ctx, op, ins) =>
    ctx.e
      .ops(
        op.name,
        ins.map((x) => toBatched(ctx, x)),
        params(op.params, ctx.size),
      )
      .map(batched);
}

/** Element-wise (and other shape-preserving) ops: operands brought to one batched type, params unchanged. */
const elementwise = <N extends OpName>(): BatchRule<N> => allBatched<N>((p) => p);

/** Batches a nested graph into the emitter's graph, as a function of its inputs' batched values. */
export function batchInto(ctx: BatchCtx, g: Graph, ins: readonly BVal[], forceOut?: readonly boolean[]): BVal[] {
  if (ins.length !== g.inputs.length)
    throw new Error(`internal: batching a graph of ${g.inputs.length} inputs with ${ins.length} values`);
  const env = new Map<Value, BVal>(g.inputs.map((v, i) => [v, ins[i]!]));
  const get = (v: Value): BVal => {
    const r = env.get(v);
    if (!r) throw new Error("internal: batched graph uses a value it does not define");
    return r;
  };
  const saved = ctx.e.loc;
  try {
    for (const op of g.ops) {
      const opIns = op.inputs.map(get);
      ctx.e.loc = op.loc;
      let outs: readonly BVal[];
      if (opIns.some((x) => x.b)) outs = (BATCH_RULES[op.name] as BatchRule<OpName>)(ctx, op, opIns);
      else
        outs = ctx.e
          .ops(
            op.name,
            opIns.map((x) => x.v),
            op.params as never,
          )
          .map((v) => ({ v, b: false }));
      op.outputs.forEach((v, i) => {
        env.set(v, outs[i]!);
      });
    }
  } finally {
    ctx.e.loc = saved;
  }
  return g.outputs.map((v, i) => {
    const x = get(v);
    return forceOut?.[i] && !x.b ? batched(toBatched(ctx, x)) : x;
  });
}

/** A nested graph batched as a graph of its own: inputs batched where `inB` says, outputs where `forceOut` does (or they are anyway). */
export function batchGraph(
  g: Graph,
  inB: readonly boolean[],
  size: number,
  forceOut?: readonly boolean[],
): { graph: Graph; outB: boolean[] } {
  const b = new GraphBuilder();
  const ins = g.inputs.map((v, i) => {
    const t = v.type;
    const type = inB[i] ? tensorType(t.dtype, [size, ...t.shape]) : t;
    return { v: b.input(type), b: !!inB[i] };
  });
  const outs = batchInto({ e: new Emitter(b), size }, g, ins, forceOut);
  return { graph: b.build(outs.map((o) => o.v)), outB: outs.map((o) => o.b) };
}

/**
 * A loop body batched with its carries batched where their initial value is, or where the body makes them so (a
 * batched const or x mixed in): iterated to the fixed point, as JAX does. Carry outputs are forced to the carry
 * flags; the other outputs (a scan's ys) are batched as they come. The graph of the last round is the result.
 */
function loopBody(
  body: Graph,
  lead: readonly boolean[],
  init: readonly boolean[],
  tail: readonly boolean[],
  size: number,
): { graph: Graph; carry: boolean[]; rest: boolean[] } {
  let carry = [...init];
  for (;;) {
    const force = body.outputs.map((_, i) => i < carry.length && carry[i]!);
    const { graph, outB } = batchGraph(body, [...lead, ...carry, ...tail], size, force);
    const next = carry.map((c, i) => c || outB[i]!);
    if (next.every((c, i) => c === carry[i])) return { graph, carry, rest: outB.slice(carry.length) };
    carry = next;
  }
}

/** A per-example start index clamped into [0, max] as dynamic slices clamp it: s32 [B]. */
function clampedStart(ctx: BatchCtx, s: BVal, max: number): Value {
  const e = ctx.e;
  // Clamped in its own dtype first, so that a huge u32 start clamps to max as the op does, not wraps in s32.
  const v = toBatched(ctx, s);
  return e.convert(e.min(e.max(v, e.like(v, 0)), e.like(v, max)), "s32");
}

/** b * n for every element of the batched index array `idx` (b its example), in idx's dtype. */
function rowOffsets(ctx: BatchCtx, idx: Value, n: number): Value {
  const t = idx.type;
  const b = ctx.e.op("iota", [], { dtype: t.dtype, shape: t.shape, dim: 0 });
  return ctx.e.mul(b, ctx.e.like(idx, n));
}

const scanRule: BatchRule<"scan"> = (ctx, op, ins) => {
  const { body, numConsts: nc, numCarry: nk } = op.params;
  const e = ctx.e;
  const constB = ins.slice(0, nc).map((x) => x.b);
  const xsB = ins.slice(nc + nk).map((x) => x.b);
  const {
    graph,
    carry: carryB,
    rest: ys0,
  } = loopBody(
    body,
    constB,
    ins.slice(nc, nc + nk).map((x) => x.b),
    xsB,
    ctx.size,
  );
  const inputs = [
    ...ins.slice(0, nc).map((x) => x.v),
    ...ins.slice(nc, nc + nk).map((x, i) => (carryB[i] ? toBatched(ctx, x) : x.v)),
    // The scanned axis must lead: a batched xs [B, L, ...] is scanned as [L, B, ...].
    ...ins.slice(nc + nk).map((x) => (x.b ? moveAxis(e, x.v, 0, 1) : x.v)),
  ];
  const outs = e.ops("scan", inputs, { ...op.params, body: graph });
  return outs.map((v, i) => {
    if (i < nk) return { v, b: carryB[i]! };
    const b = ys0[i - nk]!;
    return b ? batched(moveAxis(e, v, 1, 0)) : { v, b };
  });
};

/** A batched predicate broadcast to the batched shape `t`. */
function predFor(ctx: BatchCtx, pred: Value, t: TensorType): Value {
  return ctx.e.broadcast(pred, t.shape, [0]);
}

const condRule: BatchRule<"cond"> = (ctx, op, ins) => {
  const [index, ...operands] = ins as [BVal, ...BVal[]];
  const e = ctx.e;
  const { branches } = op.params;
  if (index.b) {
    // Per-example branch choice: run every branch on the whole batch and select, as JAX does.
    const outs = branches.map((g) =>
      batchInto(
        ctx,
        g,
        operands,
        g.outputs.map(() => true),
      ),
    );
    const pick = (k: number): Value =>
      index.v.type.dtype === "bool" ? index.v : e.compare("eq", index.v, e.full(index.v.type, k));
    return outs[0]!.map((_, j) => {
      // Out of range runs the last branch (stablehlo.case); a bool index picks [false, true].
      let r = outs[outs.length - 1]![j]!.v;
      for (let k = outs.length - 2; k >= 0; k--) {
        const p = index.v.type.dtype === "bool" ? e.noParams("not", [index.v]) : pick(k);
        r = e.select(predFor(ctx, p, r.type), outs[k]![j]!.v, r);
      }
      return batched(r);
    });
  }
  const inB = operands.map((x) => x.b);
  const first = branches.map((g) => batchGraph(g, inB, ctx.size));
  const union = first[0]!.outB.map((_, j) => first.some((f) => f.outB[j]));
  // A branch whose outputs are batched exactly where the union is keeps its graph; the others are redone, forced.
  const graphs = branches.map((g, k) =>
    first[k]!.outB.every((b, j) => b === union[j]) ? first[k]!.graph : batchGraph(g, inB, ctx.size, union).graph,
  );
  const outs = e.ops("cond", [index.v, ...operands.map((x) => x.v)], { branches: Object.freeze(graphs) });
  return outs.map((v, j) => ({ v, b: union[j]! }));
};

const whileRule: BatchRule<"while"> = (ctx, op, ins) => {
  const { cond, body, numConsts: nc } = op.params;
  const e = ctx.e;
  const constB = ins.slice(0, nc).map((x) => x.b);
  const loop = loopBody(
    body,
    constB,
    ins.slice(nc).map((x) => x.b),
    [],
    ctx.size,
  );
  let carryB = loop.carry;
  const c = batchGraph(cond, [...constB, ...carryB], ctx.size);
  if (!c.outB[0]) {
    const inputs = [
      ...ins.slice(0, nc).map((x) => x.v),
      ...ins.slice(nc).map((x, i) => (carryB[i] ? toBatched(ctx, x) : x.v)),
    ];
    return e
      .ops("while", inputs, { ...op.params, cond: c.graph, body: loop.graph })
      .map((v, i) => ({ v, b: carryB[i]! }));
  }
  // A per-example predicate: loop while any example's holds; an example whose predicate is false keeps its carry.
  carryB = carryB.map(() => true);
  const types = (g: Graph) =>
    g.inputs.map((v, i) => (i >= nc || constB[i] ? tensorType(v.type.dtype, [ctx.size, ...v.type.shape]) : v.type));
  const inBFlags = [...constB, ...carryB];
  const cb = new GraphBuilder();
  const cin = types(cond).map((t, i) => ({ v: cb.input(t), b: inBFlags[i]! }));
  const cctx = { e: new Emitter(cb, op.loc), size: ctx.size };
  const p = batchInto(cctx, cond, cin)[0]!.v;
  const n = cctx.e.reduceSum(cctx.e.convert(p, "s32"), [0]);
  const any = cctx.e.compare("gt", n, cctx.e.scalar("s32", 0));
  const condG = cb.build([any]);
  const bb = new GraphBuilder();
  const bin = types(body).map((t, i) => ({ v: bb.input(t), b: inBFlags[i]! }));
  const bctx = { e: new Emitter(bb, op.loc), size: ctx.size };
  const p2 = batchInto(bctx, cond, bin)[0]!.v;
  const next = batchInto(bctx, body, bin, carryB);
  const kept = next.map((x, i) => {
    const old = bin[nc + i]!.v;
    return bctx.e.select(predFor(bctx, p2, old.type), x.v, old);
  });
  const bodyG = bb.build(kept);
  const inputs = [...ins.slice(0, nc).map((x) => x.v), ...ins.slice(nc).map((x) => toBatched(ctx, x))];
  return e.ops("while", inputs, { ...op.params, cond: condG, body: bodyG }).map(batched);
};

const customVjpRule: BatchRule<"custom_vjp"> = (ctx, op, ins) => {
  const { body, fwd, bwd, numConsts: nc } = op.params;
  // Operands all get the batch axis, so each operand's cotangent (bwd's result) is batched like it; consts keep theirs.
  const constB = ins.slice(0, nc).map((x) => x.b);
  const opB = ins.slice(nc).map(() => true);
  const all = (g: Graph) => g.outputs.map(() => true);
  const bodyG = batchGraph(body, [...constB, ...opB], ctx.size, all(body)).graph;
  const fwdG = batchGraph(fwd, [...constB, ...opB], ctx.size, all(fwd)).graph;
  const bwdIn = bwd.inputs.map((_, i) => (i < nc ? constB[i]! : true));
  const bwdG = batchGraph(bwd, bwdIn, ctx.size, all(bwd)).graph;
  const inputs = [...ins.slice(0, nc).map((x) => x.v), ...ins.slice(nc).map((x) => toBatched(ctx, x))];
  return ctx.e.ops("custom_vjp", inputs, { ...op.params, body: bodyG, fwd: fwdG, bwd: bwdG }).map(batched);
};

/** The body batched as its operands are; results batched as the body makes them (the policy is unchanged). */
const checkpointRule: BatchRule<"checkpoint"> = (ctx, op, ins) => {
  const { graph, outB } = batchGraph(
    op.params.body,
    ins.map((x) => x.b),
    ctx.size,
  );
  return ctx.e
    .ops(
      "checkpoint",
      ins.map((x) => x.v),
      { ...op.params, body: graph },
    )
    .map((v, i) => ({ v, b: outB[i]! }));
};
/**
 * cuDNN attention is batched over its leading batch axis already: the vmapped axis folds into it (a reshape of
 * every operand to [V·B, ...]), the op runs once, and the results unfold.
 */
const foldIntoBatch =
  <N extends "cudnn_fmha" | "cudnn_fmha_bwd">(): BatchRule<N> =>
  (ctx, op, ins) =>
    ctx.e
      .ops(
        op.name,
        ins.map((x) => {
          const v = toBatched(ctx, x);
          const [V, B, ...rest] = v.type.shape;
          return ctx.e.reshape(v, [V! * B!, ...rest]);
        }),
        op.params,
      )
      .map((v) => batched(ctx.e.reshape(v, [ctx.size, v.type.shape[0]! / ctx.size, ...v.type.shape.slice(1)])));

/** Ops that pass each operand through: results batched as their operands are. */
const passThrough =
  <N extends OpName>(): BatchRule<N> =>
  (ctx, op, ins) =>
    ctx.e
      .ops(
        op.name,
        ins.map((x) => x.v),
        op.params,
      )
      .map((v, i) => ({ v, b: ins[i]!.b }));

/** One rule per op; a new op in OP_SCHEMA fails to compile here until it has one. */
export const BATCH_RULES: { readonly [N in OpName]: BatchRule<N> } = {
  ...forEachElementwise((): BatchRule<ElementwiseOp> => elementwise()),
  compare: elementwise(),
  select: elementwise(),
  convert: elementwise(),
  bitcast_convert: elementwise(),
  // Sources have no operands, so they are never batched; listed so the table stays total.
  constant: passThrough(),
  iota: passThrough(),

  broadcast_in_dim: allBatched((p, n) => ({ shape: [n, ...p.shape], dims: [0, ...shift(p.dims)] })),
  reshape: allBatched((p, n) => ({ shape: [n, ...p.shape] })),
  transpose: allBatched((p) => ({ perm: [0, ...shift(p.perm)] })),
  slice: allBatched((p, n) => ({ start: [0, ...p.start], limit: [n, ...p.limit], stride: [1, ...p.stride] })),
  concatenate: allBatched((p) => ({ axis: p.axis + 1 })),
  pad: (ctx, op, ins) => {
    const p = op.params;
    const e = ctx.e;
    const [low, high, interior] = [
      [0, ...p.low],
      [0, ...p.high],
      [0, ...p.interior],
    ];
    const x = toBatched(ctx, ins[0]!);
    if (!ins[1]!.b) return [batched(e.pad(x, ins[1]!.v, low, high, interior))];
    // A padding value per example: pad with any value, then select each example's value where a padded mask is false.
    const t = op.inputs[0]!.type;
    const padded = e.pad(x, e.scalar(t.dtype, 0), low, high, interior);
    const mask = e.pad(e.full(tensorType("bool", t.shape), 1), e.scalar("bool", 0), p.low, p.high, p.interior);
    const fill = e.broadcast(ins[1]!.v, padded.type.shape, [0]);
    return [batched(e.select(toBatched(ctx, { v: mask, b: false }), padded, fill))];
  },

  reduce_sum: allBatched((p) => ({ axes: shift(p.axes) })),
  reduce_max: allBatched((p) => ({ axes: shift(p.axes) })),
  reduce_min: allBatched((p) => ({ axes: shift(p.axes) })),

  dot_general: (ctx, op, [lhs, rhs]) => {
    const p = op.params;
    const e = ctx.e;
    if (lhs!.b && rhs!.b) {
      return [
        batched(
          e.op("dot_general", [lhs!.v, rhs!.v], {
            lhsBatch: [0, ...shift(p.lhsBatch)],
            rhsBatch: [0, ...shift(p.rhsBatch)],
            lhsContract: shift(p.lhsContract),
            rhsContract: shift(p.rhsContract),
            outDtype: p.outDtype,
          }),
        ),
      ];
    }
    // One side batched: its batch axis is that side's first free dim; the result puts it after the batch dims
    // (lhs) or after the batch and lhs free dims (rhs), and a transpose brings it to the front.
    const nb = p.lhsBatch.length;
    const lhsRank = op.inputs[0]!.type.shape.length;
    const params = lhs!.b
      ? { ...p, lhsBatch: shift(p.lhsBatch), lhsContract: shift(p.lhsContract) }
      : { ...p, rhsBatch: shift(p.rhsBatch), rhsContract: shift(p.rhsContract) };
    const at = lhs!.b ? nb : nb + (lhsRank - nb - p.lhsContract.length);
    const r = e.op("dot_general", [lhs!.v, rhs!.v], params);
    return [batched(moveAxis(e, r, at, 0))];
  },

  gather: (ctx, op, ins) => {
    // Batched indices into a shared table are a gather as they stand: [B, ...idx] -> [B, ...idx, ...rest].
    if (!ins[0]!.b) return [batched(ctx.e.op("gather", [ins[0]!.v, ins[1]!.v], {}))];
    // A batched table [B, N, ...rest]: one gather from the [B*N, ...rest] table, example b's rows offset by b*N.
    // Indices are clamped first (as the op clamps), so that none reaches into another example's rows.
    const e = ctx.e;
    const n = op.inputs[0]!.type.shape[0]!;
    const rest = op.inputs[0]!.type.shape.slice(1);
    const idx = toBatched(ctx, ins[1]!);
    const clamped = e.min(e.max(idx, e.like(idx, 0)), e.like(idx, n - 1));
    const flat = e.reshape(ins[0]!.v, [ctx.size * n, ...rest]);
    return [batched(e.op("gather", [flat, e.add(clamped, rowOffsets(ctx, idx, n))], {}))];
  },
  scatter_add: (ctx, op, ins) => {
    const [x, idx, upd] = ins as [BVal, BVal, BVal];
    const e = ctx.e;
    if (!idx.b && !upd.b) {
      // Only the operand is batched: the same scattered rows are added to every example.
      const s = e.op("scatter_add", [e.zeros(op.inputs[0]!.type), idx.v, upd.v], {});
      return [batched(e.add(x.v, toBatched(ctx, { v: s, b: false })))];
    }
    // One scatter into the [B*N, ...rest] operand, example b's rows offset by b*N. An out-of-range index is
    // dropped by the op; it is sent to row B*N (out of range of the whole) so it cannot land in another example.
    const n = op.inputs[0]!.type.shape[0]!;
    const rest = op.inputs[0]!.type.shape.slice(1);
    const i = toBatched(ctx, idx);
    const valid = e.noParams("and", [e.compare("ge", i, e.like(i, 0)), e.compare("lt", i, e.like(i, n))]);
    const flatIdx = e.select(valid, e.add(i, rowOffsets(ctx, i, n)), e.like(i, ctx.size * n));
    const flat = e.reshape(toBatched(ctx, x), [ctx.size * n, ...rest]);
    const r = e.op("scatter_add", [flat, flatIdx, toBatched(ctx, upd)], {});
    return [batched(e.reshape(r, [ctx.size, n, ...rest]))];
  },
  take_along_axis: allBatched((p) => ({ axis: p.axis + 1 })),
  dynamic_slice: (ctx, op, ins) => {
    const e = ctx.e;
    if (ins.slice(1).some((x) => x.b)) {
      // Per-example offsets: take the window one dim at a time, each a take_along_axis at start + iota.
      let cur = toBatched(ctx, ins[0]!);
      const dims = op.inputs[0]!.type.shape;
      op.params.sizes.forEach((size, d) => {
        const start = clampedStart(ctx, ins[1 + d]!, dims[d]! - size);
        const idx = e.add(
          e.broadcast(start, [ctx.size, size], [0]),
          e.op("iota", [], { dtype: "s32", shape: [ctx.size, size], dim: 1 }),
        );
        const shape = cur.type.shape.map((n, k) => (k === d + 1 ? size : n));
        cur = e.op("take_along_axis", [cur, e.broadcast(idx, shape, [0, d + 1])], { axis: d + 1 });
      });
      return [batched(cur)];
    }
    const zero = e.scalar(ins[1]?.v.type.dtype ?? "s32", 0);
    const sizes = [ctx.size, ...op.params.sizes];
    return [batched(e.op("dynamic_slice", [ins[0]!.v, zero, ...ins.slice(1).map((x) => x.v)], { sizes }))];
  },
  dynamic_update_slice: (ctx, op, ins) => {
    const e = ctx.e;
    const x = toBatched(ctx, ins[0]!);
    const u = toBatched(ctx, ins[1]!);
    if (ins.slice(2).some((s) => s.b)) {
      // Per-example offsets: the update spread over the operand's shape (each dim a take_along_axis at
      // position - start, clamped) and a mask of the window, then a select.
      const dims = op.inputs[0]!.type.shape;
      const ushape = op.inputs[1]!.type.shape;
      let spread = u;
      let mask: Value | undefined;
      dims.forEach((n, d) => {
        const start = clampedStart(ctx, ins[2 + d]!, n - ushape[d]!);
        const rel = e.sub(
          e.op("iota", [], { dtype: "s32", shape: [ctx.size, n], dim: 1 }),
          e.broadcast(start, [ctx.size, n], [0]),
        );
        const inside = e.noParams("and", [
          e.compare("ge", rel, e.like(rel, 0)),
          e.compare("lt", rel, e.like(rel, ushape[d]!)),
        ]);
        const at = e.min(e.max(rel, e.like(rel, 0)), e.like(rel, Math.max(ushape[d]! - 1, 0)));
        const shape = spread.type.shape.map((m, k) => (k === d + 1 ? n : m));
        spread = e.op("take_along_axis", [spread, e.broadcast(at, shape, [0, d + 1])], { axis: d + 1 });
        const m = e.broadcast(inside, x.type.shape, [0, d + 1]);
        mask = mask ? e.noParams("and", [mask, m]) : m;
      });
      return [batched(mask ? e.select(mask, spread, x) : spread)];
    }
    const zero = e.scalar(ins[2]?.v.type.dtype ?? "s32", 0);
    return [batched(e.op("dynamic_update_slice", [x, u, zero, ...ins.slice(2).map((s) => s.v)], {}))];
  },

  scan: scanRule,
  sort: allBatched((p) => ({ ...p, dimension: p.dimension + 1 })),
  optimization_barrier: passThrough(),
  stop_gradient: passThrough(),
  cond: condRule,
  while: whileRule,
  custom_vjp: customVjpRule,
  checkpoint: checkpointRule,
  checkpoint_name: passThrough(),
  cudnn_fmha: foldIntoBatch(),
  cudnn_fmha_bwd: foldIntoBatch(),
};
