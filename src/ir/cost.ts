// A static cost model of a graph: FLOPs, transcendentals and bytes accessed per op, one rule per op name.
import { subgraphs, type AnyOp, type Graph, type Op, type Value } from "./graph.ts";
import { OP_NAMES, type OpName } from "./ops.ts";
import { ELEMENTWISE, forEachElementwise } from "./elementwise.ts";
import { fmhaDims, fmhaFlops } from "./cudnn_fmha.ts";
import { bitWidth, numel, type TensorType } from "./types.ts";

/**
 * The cost of running one op once. Conventions follow XLA's HloCostAnalysis so the numbers can be compared with
 * what XLA reports: a multiply-add is 2 FLOPs, transcendentals (exp, log, sqrt, tanh, pow...: `cost` in
 * elementwise.ts) are counted apart from FLOPs, and data movement costs bytes but no FLOPs.
 */
export interface OpCost {
  readonly flops: number;
  readonly transcendentals: number;
  /** Bytes read plus bytes written, assuming nothing stays in cache between ops. */
  readonly bytes: number;
}

export function typeBytes(t: TensorType): number {
  return (numel(t.shape) * bitWidth(t.dtype)) / 8;
}

const sumBytes = (vs: readonly Value[]): number => vs.reduce((s, v) => s + typeBytes(v.type), 0);
const outElems = (op: AnyOp): number => op.outputs.reduce((s, v) => s + numel(v.type.shape), 0);
const inElems = (v: Value | undefined): number => (v ? numel(v.type.shape) : 0);

/** Everything read and written: the default for ops that touch all their operands once. */
function streamBytes(op: AnyOp): number {
  return sumBytes(op.inputs) + sumBytes(op.outputs);
}

function cost(flops: number, transcendentals: number, bytes: number): OpCost {
  return { flops, transcendentals, bytes };
}

type CostRule<N extends OpName> = (op: Op<N>) => OpCost;

const elementwise: CostRule<OpName> = (op) => cost(outElems(op as AnyOp), 0, streamBytes(op as AnyOp));
const transcendental: CostRule<OpName> = (op) => cost(0, outElems(op as AnyOp), streamBytes(op as AnyOp));
const movement: CostRule<OpName> = (op) => cost(0, 0, streamBytes(op as AnyOp));
/** Ops XLA turns into a bitcast of the same buffer: no copy in the row-major layouts we emit. */
const free: CostRule<OpName> = () => cost(0, 0, 0);
/** A reduction adds (or compares) each input element into the result once. */
const reduction: CostRule<OpName> = (op) => cost(inElems(op.inputs[0]), 0, streamBytes(op as AnyOp));

/** A fused attention reads its operands and writes its results once; its score blocks stay on chip. */
function fmhaCost(op: AnyOp, backward: boolean): OpCost {
  const d = fmhaDims(op.inputs[0]!.type, op.inputs[1]!.type, op.inputs[2]!.type);
  if (typeof d === "string") throw new Error(`internal: ${op.name}: ${d}`);
  // one exp per score, recomputed in the backward
  return cost(fmhaFlops(d, backward), d.B * d.N * d.T * d.S, streamBytes(op));
}

/** One rule per op: a new op in OpParams fails to compile here until its cost is stated. */
export const COST_RULES: { [N in OpName]: CostRule<N> } = {
  ...forEachElementwise((n) => (ELEMENTWISE[n].cost === "transcendental" ? transcendental : elementwise)),
  compare: elementwise,
  select: elementwise,
  convert: elementwise,
  bitcast_convert: free,
  constant: (op) => cost(0, 0, sumBytes(op.outputs)),
  iota: (op) => cost(0, 0, sumBytes(op.outputs)),
  broadcast_in_dim: movement,
  reshape: free,
  transpose: movement,
  slice: movement,
  concatenate: movement,
  pad: movement,
  reduce_sum: reduction,
  reduce_max: reduction,
  reduce_min: reduction,
  // 2·batch·M·N·K: every result element is a K-long multiply-add chain.
  dot_general: (op) => {
    const lhs = op.inputs[0]!.type.shape;
    const k = op.params.lhsContract.reduce((p, d) => p * lhs[d]!, 1);
    return cost(2 * outElems(op) * k, 0, streamBytes(op));
  },
  // Only the gathered rows are read, not the whole table.
  gather: (op) => cost(0, 0, 2 * sumBytes(op.outputs) + typeBytes(op.inputs[1]!.type)),
  // Updated in place: read indices and updates, read-modify-write the touched rows.
  scatter_add: (op) => {
    const updates = op.inputs[2]!;
    return cost(inElems(updates), 0, typeBytes(op.inputs[1]!.type) + 3 * typeBytes(updates.type));
  },
  take_along_axis: (op) => cost(0, 0, 2 * sumBytes(op.outputs) + typeBytes(op.inputs[1]!.type)),
  dynamic_slice: (op) => cost(0, 0, 2 * sumBytes(op.outputs) + sumBytes(op.inputs.slice(1))),
  // In place: the operand buffer is reused and only the update's window is written.
  dynamic_update_slice: (op) => cost(0, 0, 2 * typeBytes(op.inputs[1]!.type) + sumBytes(op.inputs.slice(2))),
  scan: (op) => {
    const body = graphCost(op.params.body).total;
    const n = op.params.length;
    return cost(n * body.flops, n * body.transcendentals, n * body.bytes);
  },
  // A comparison sort: about log2(n) compare-and-swap passes over every element along the sorted dimension.
  sort: (op) => {
    const n = op.inputs[0]!.type.shape[op.params.dimension]!;
    return cost(outElems(op) * Math.max(1, Math.ceil(Math.log2(n))), 0, streamBytes(op));
  },
  optimization_barrier: free,
  stop_gradient: free,
  // The most expensive branch: what a step costs at worst.
  cond: (op) => {
    const costs = op.params.branches.map((b) => graphCost(b).total);
    const worst = costs.reduce((a, b) => (b.flops + b.bytes > a.flops + a.bytes ? b : a));
    return cost(worst.flops, worst.transcendentals, worst.bytes);
  },
  // The trip count is unknown statically: one iteration (cond and body) is counted.
  while: (op) => {
    const c = graphCost(op.params.cond).total;
    const b = graphCost(op.params.body).total;
    return cost(c.flops + b.flops, c.transcendentals + b.transcendentals, c.bytes + b.bytes);
  },
  custom_vjp: (op) => graphCost(op.params.body).total,
  checkpoint: (op) => graphCost(op.params.body).total,
  checkpoint_name: free,
  cudnn_fmha: (op) => fmhaCost(op, false),
  cudnn_fmha_bwd: (op) => fmhaCost(op, true),
};

export function opCost(op: AnyOp): OpCost {
  return (COST_RULES[op.name] as CostRule<OpName>)(op);
}

export interface GraphCost {
  /** Summed over the ops of the graph; a scan counts its body `length` times. */
  readonly total: OpCost;
  /** Static op counts by name, in OP_NAMES order, including ops inside nested graphs (counted once each). */
  readonly counts: ReadonlyMap<OpName, number>;
}

export function graphCost(g: Graph): GraphCost {
  let flops = 0;
  let transcendentals = 0;
  let bytes = 0;
  const raw = new Map<OpName, number>();
  const count = (graph: Graph): void => {
    for (const op of graph.ops) {
      raw.set(op.name, (raw.get(op.name) ?? 0) + 1);
      for (const sub of subgraphs(op)) count(sub);
    }
  };
  count(g);
  for (const op of g.ops) {
    const c = opCost(op);
    flops += c.flops;
    transcendentals += c.transcendentals;
    bytes += c.bytes;
  }
  const counts = new Map<OpName, number>();
  for (const name of OP_NAMES) if (raw.has(name)) counts.set(name, raw.get(name)!);
  return { total: cost(flops, transcendentals, bytes), counts };
}

export interface Intermediate {
  readonly value: Value;
  readonly op: AnyOp;
  readonly bytes: number;
  /** How many values of this type the same op computes at the same place (the first is `value`). */
  readonly count: number;
}

// Ops whose result is a splat when their operand is one: XLA folds or fuses them into their users, never
// materializing a buffer of repeated elements.
const SPLAT_PRESERVING = new Set<OpName>(["broadcast_in_dim", "reshape", "convert", "transpose"]);

/** Values that hold one number repeated: constants of equal elements, and broadcasts, reshapes, casts of them. */
function splatValues(g: Graph): Set<Value> {
  const splats = new Set<Value>();
  for (const op of g.ops) {
    let splat = false;
    if (op.name === "constant") {
      const v = (op.params as { value: readonly number[] }).value;
      splat = v.every((x) => Object.is(x, v[0]));
    } else if (op.name === "broadcast_in_dim" && op.inputs[0]!.type.shape.length === 0) splat = true;
    else if (SPLAT_PRESERVING.has(op.name) && op.inputs.length === 1) splat = splats.has(op.inputs[0]!);
    if (splat) for (const v of op.outputs) splats.add(v);
  }
  return splats;
}

/**
 * The `n` largest values computed inside the graph (not its inputs or outputs, which the caller owns), largest
 * first; ties keep program order. Splats (a constant or broadcast of one repeated number) are left out, as XLA
 * never materializes them; values of one type from the same op at the same place (`loc`, scope included) are one
 * row with their count, so a line run many times does not fill the list.
 */
export function largestIntermediates(g: Graph, n: number): Intermediate[] {
  const outputs = new Set(g.outputs);
  const splats = splatValues(g);
  const rows = new Map<string, { value: Value; op: AnyOp; bytes: number; count: number }>();
  let anon = 0;
  for (const op of g.ops) {
    for (const value of op.outputs) {
      if (outputs.has(value) || splats.has(value)) continue;
      const l = op.loc;
      // Without a location nothing says two ops are the same line: each stays its own row.
      const key = l
        ? `${op.name}|${value.type.dtype}[${value.type.shape.join(",")}]|${l.file}:${l.line}:${l.col}|${l.scope ?? ""}`
        : `#${anon++}`;
      const row = rows.get(key);
      if (row) row.count++;
      else rows.set(key, { value, op, bytes: typeBytes(value.type), count: 1 });
    }
  }
  return [...rows.values()].sort((a, b) => b.bytes - a.bytes).slice(0, n);
}
