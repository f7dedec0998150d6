// Memory per device: arguments, outputs, and the peak of live temporaries in program order, from each value's local (sharded) size.
import { subgraphs, type AnyOp, type Graph, type Value } from "../ir/graph.ts";
import { typeBytes } from "../ir/cost.ts";
import { ELEMENTWISE, forEachElementwise } from "../ir/elementwise.ts";
import { OP_NAMES, type OpName } from "../ir/ops.ts";
import { localShape } from "../ir/sharding.ts";
import { tensorType, type SourceLoc } from "../ir/types.ts";
import type { ShardingPlan } from "./shard_propagate.ts";

export interface MemoryEstimate {
  /** Bytes of every argument on one device (its shard). */
  readonly arguments: number;
  /** Bytes of every result on one device. */
  readonly outputs: number;
  /** Result bytes that reuse a donated argument's buffer. */
  readonly aliased: number;
  /** Peak bytes of values computed inside the program and live at once (outputs excluded: counted above). */
  readonly temporaries: number;
  /** arguments + outputs - aliased + temporaries: what one device must hold to run the program. */
  readonly total: number;
  /** Where the temporaries peak: the op running then. */
  readonly peakOp?: AnyOp;
  readonly peakLoc?: SourceLoc;
  /** Argument bytes by the first segment of their names (`base`, `state`, `batch`). */
  readonly argumentGroups: ReadonlyMap<string, number>;
}

export interface MemoryOptions {
  /** Per-device bytes of a value; default its whole size (one device). */
  readonly bytes?: (v: Value) => number;
  /** Per graph input: the output it is donated into. */
  readonly donate?: readonly (number | undefined)[];
  /**
   * Count only the values XLA materializes: element-wise ops, broadcasts, converts, reshapes and slices whose
   * result has a single element-wise user are fused into that user and never stored (default true).
   */
  readonly fusion?: boolean;
  /**
   * XLA's CPU backend computes bf16 and f16 in f32: it converts every 16-bit float argument to an f32 copy at entry
   * (kept for the whole run; hoisted out of loops) and each 16-bit operand of a matmul to f32 while it runs. Off by
   * default: GPUs run 16-bit matmuls natively.
   */
  readonly cpuUpcast16?: boolean;
}

/** Per-device bytes of each value under a sharding plan. */
export function shardedBytes(plan: ShardingPlan): (v: Value) => number {
  return (v) => {
    const s = plan.values.get(v)?.sharding;
    if (!s) return typeBytes(v.type);
    return typeBytes(tensorType(v.type.dtype, localShape(v.type.shape, s, plan.mesh)));
  };
}

/**
 * How each op takes part in XLA's loop fusion: `producer` ops are merged into their users when they have one user
 * (their results never reach memory) and can absorb fused producers themselves; `consumer` ops only absorb
 * producers (reductions: input fusion); `none` ops always materialize their results.
 */
type FusionRole = "producer" | "consumer" | "none";

const FUSION: { readonly [N in OpName]: FusionRole } = {
  ...forEachElementwise((n): FusionRole => (ELEMENTWISE[n].fusible ? "producer" : "none")),
  compare: "producer",
  select: "producer",
  convert: "producer",
  bitcast_convert: "producer",
  constant: "producer",
  iota: "producer",
  broadcast_in_dim: "producer",
  reshape: "producer",
  transpose: "producer",
  slice: "producer",
  concatenate: "producer",
  pad: "producer",
  reduce_sum: "consumer",
  reduce_max: "consumer",
  reduce_min: "consumer",
  dot_general: "none",
  gather: "none",
  scatter_add: "none",
  take_along_axis: "none",
  dynamic_slice: "none",
  dynamic_update_slice: "none",
  scan: "none",
  sort: "none",
  optimization_barrier: "none",
  stop_gradient: "producer",
  cond: "none",
  while: "none",
  custom_vjp: "none",
  checkpoint: "none",
  checkpoint_name: "producer",
  cudnn_fmha: "none",
  cudnn_fmha_bwd: "none",
};
const FUSIBLE = new Set(OP_NAMES.filter((n) => FUSION[n] === "producer"));
const FUSING_USER = new Set(OP_NAMES.filter((n) => FUSION[n] !== "none"));

interface Peak {
  bytes: number;
  op?: AnyOp;
}

/**
 * The peak of live temporaries of `g` when its ops run in order: a value is live from its op to its last use;
 * a scan adds its body's own peak while it runs (its ys are allocated for the whole loop). `keep` values (the
 * top-level outputs) are never counted; inputs belong to the caller.
 */
const is16 = (v: Value) => v.type.dtype === "bf16" || v.type.dtype === "f16";

function peakOf(
  g: Graph,
  bytes: (v: Value) => number,
  fusion: boolean,
  keep: ReadonlySet<Value>,
  upcast: boolean,
  ownedParams: ReadonlySet<Value> = new Set(),
): Peak {
  // Values whose buffer the caller holds: owned parameters, and what was written into them in place.
  const owned = new Set(ownedParams);
  const users = new Map<Value, AnyOp[]>();
  for (const op of g.ops) {
    for (const v of op.inputs) {
      const list = users.get(v);
      if (list) list.push(op);
      else users.set(v, [op]);
    }
  }
  const lastUse = new Map<Value, number>();
  g.ops.forEach((op, i) => {
    op.inputs.forEach((v) => {
      lastUse.set(v, i);
    });
  });
  g.outputs.forEach((v) => {
    lastUse.set(v, g.ops.length);
  });
  const inputs = new Set(g.inputs);
  const materialized = (op: AnyOp, v: Value): boolean => {
    if (keep.has(v) || inputs.has(v)) return false;
    if (!fusion || !FUSIBLE.has(op.name)) return true;
    const us = users.get(v) ?? [];
    if (g.outputs.includes(v)) return true;
    // Constants, iotas and broadcasts are recomputed inside each user's fusion.
    if (op.name === "constant" || op.name === "iota" || op.name === "broadcast_in_dim")
      return us.some((u) => !FUSING_USER.has(u.name));
    return !(us.length === 1 && FUSING_USER.has(us[0]!.name));
  };
  const freeAt = new Map<number, Value[]>();
  let live = 0;
  const peak: Peak = { bytes: 0 };
  const liveTemps = new Set<Value>();
  const schedule = (v: Value, i: number) => {
    const end = lastUse.get(v) ?? i;
    const list = freeAt.get(end);
    if (list) list.push(v);
    else freeAt.set(end, [v]);
  };
  g.ops.forEach((op, i) => {
    let during = 0;
    // A loop or branch adds its body's own peak while it runs (the largest of a cond's branches).
    const loop = loopOperands(op);
    for (const sub of subgraphs(op)) {
      // A loop body owns its carry parameters (the loop state): it may update them in place.
      const own =
        loop && sub === loop.params.body
          ? new Set(sub.inputs.slice(loop.numConsts, loop.numConsts + loop.numCarry))
          : new Set<Value>();
      during = Math.max(during, peakOf(sub, bytes, fusion, new Set(), upcast, own).bytes);
    }
    if (upcast && op.name === "dot_general")
      for (const v of op.inputs) if (is16(v) && !inputs.has(v)) during += 2 * bytes(v);
    // XLA's CPU backend hoists the f32 conversion of a loop's 16-bit invariant operands (consts and the scanned
    // xs) out of the loop: the f32 copy lives while the loop runs, and the 16-bit original dies at the conversion
    // when the loop is its last use.
    if (upcast && loop)
      for (const v of op.inputs.slice(0, loop.numConsts).concat(op.inputs.slice(loop.numConsts + loop.numCarry)))
        if (is16(v) && liveTemps.has(v)) during += 2 * bytes(v) - (lastUse.get(v) === i ? bytes(v) : 0);
    // The buffer an output reuses: a dynamic_update_slice or scatter_add writes into its operand, and a loop's
    // carry result is its loop state, initialized in place from the init (XLA copies only an operand that is used
    // again later, or one the graph does not own: an argument, a loop's invariant).
    const reuses = (k: number): Value | undefined => {
      const src =
        op.name === "dynamic_update_slice" || op.name === "scatter_add"
          ? k === 0
            ? op.inputs[0]
            : undefined
          : loop && k < loop.numCarry
            ? op.inputs[loop.numConsts + k]
            : undefined;
      if (!src || lastUse.get(src) !== i || !(liveTemps.has(src) || owned.has(src))) return undefined;
      return src;
    };
    const taken = new Set<Value>();
    op.outputs.forEach((v, k) => {
      if (!materialized(op, v)) return;
      const src = reuses(k);
      if (src && !taken.has(src)) {
        taken.add(src);
        // The output takes over the operand's buffer: a live temporary moves to it (freed at the output's last
        // use instead); an owned parameter's buffer was counted by the caller.
        if (liveTemps.delete(src)) {
          const list = freeAt.get(i)!;
          list.splice(list.indexOf(src), 1);
          liveTemps.add(v);
          schedule(v, i);
        } else owned.add(v);
        return;
      }
      live += bytes(v);
      liveTemps.add(v);
      schedule(v, i);
    });
    if (live + during > peak.bytes) {
      peak.bytes = live + during;
      peak.op = op;
    }
    for (const v of freeAt.get(i) ?? []) {
      live -= bytes(v);
      liveTemps.delete(v);
    }
  });
  return peak;
}

/** How a loop's operands split: scan's (consts, carries, xs), while's (consts, carries). */
function loopOperands(op: AnyOp): { numConsts: number; numCarry: number; params: { body: Graph } } | undefined {
  if (op.name === "scan") return { numConsts: op.params.numConsts, numCarry: op.params.numCarry, params: op.params };
  if (op.name === "while")
    return { numConsts: op.params.numConsts, numCarry: op.inputs.length - op.params.numConsts, params: op.params };
  return undefined;
}

/** Memory one device needs for `g`: its arguments, outputs (less donated ones), and peak temporaries. */
export function estimateMemory(g: Graph, opts: MemoryOptions = {}): MemoryEstimate {
  const bytes = opts.bytes ?? ((v: Value) => typeBytes(v.type));
  const args = g.inputs.reduce((s, v) => s + bytes(v), 0);
  const outs = g.outputs.reduce((s, v) => s + bytes(v), 0);
  const aliased = (opts.donate ?? []).reduce((s: number, k, i) => (k === undefined ? s : s + bytes(g.inputs[i]!)), 0);
  const upcast = opts.cpuUpcast16 ?? false;
  const peak = peakOf(g, bytes, opts.fusion ?? true, new Set(g.outputs), upcast);
  // The f32 copies of 16-bit arguments live from entry to exit (see cpuUpcast16).
  if (upcast) peak.bytes += g.inputs.reduce((s, v) => s + (is16(v) ? 2 * bytes(v) : 0), 0);
  const groups = new Map<string, number>();
  g.inputs.forEach((v, i) => {
    const name = (g.inputNames?.[i] ?? "").split(/[.[]/)[0] || `arg${i}`;
    groups.set(name, (groups.get(name) ?? 0) + bytes(v));
  });
  return {
    arguments: args,
    outputs: outs,
    aliased,
    temporaries: peak.bytes,
    total: args + outs - aliased + peak.bytes,
    ...(peak.op ? { peakOp: peak.op } : {}),
    ...(peak.op?.loc ? { peakLoc: peak.op.loc } : {}),
    argumentGroups: groups,
  };
}
