// The `inspect --shardings` report: every value's sharding and why, the collectives the partitioner needs, memory per device.
import type { AnyOp, Graph, Value } from "../ir/graph.ts";
import { nameValues } from "../ir/print.ts";
import { formatMesh, formatSharding, meshSize, type Sharding } from "../ir/sharding.ts";
import { formatLoc, formatType } from "../ir/types.ts";
import {
  describeSource,
  type AnnotationSource,
  type ShardingPlan,
  type ValueSharding,
} from "../passes/shard_propagate.ts";
import { estimateMemory, shardedBytes, type MemoryEstimate } from "../passes/memory_estimate.ts";
import { table } from "./args.ts";
import { formatBytes } from "./summary.ts";

/** `data=2,model=4` as mesh axes; throws with what is wrong. */
export function parseMeshText(text: string): Record<string, number> {
  const axes: Record<string, number> = {};
  for (const part of text.split(",")) {
    const m = /^\s*([A-Za-z_][A-Za-z0-9_]*)\s*=\s*(\d+)\s*$/.exec(part);
    if (!m) throw new Error(`'${part}' is not name=size (expected e.g. data=2,model=4)`);
    if (m[1]! in axes) throw new Error(`axis '${m[1]}' is given twice`);
    axes[m[1]!] = Number(m[2]);
  }
  return axes;
}

function where(op: AnyOp | undefined): string {
  return op?.loc ? ` at ${formatLoc(op.loc)}` : "";
}

function source(a: AnnotationSource): string {
  return `${describeSource(a)}${a.loc ? ` (${formatLoc(a.loc)})` : ""}`;
}

/** Why a value has its sharding: its annotation, or per split dimension the op, factor and value it came from. */
export function explain(vs: ValueSharding, names: ReadonlyMap<Value, string>, isInput: boolean): string {
  if (vs.annotation) return `fixed by ${source(vs.annotation)}`;
  const dims = vs.why.flatMap((w, d) => {
    if (!w || !vs.sharding.dims[d]!.length) return [];
    const from = w.from ? (names.get(w.from) ?? "?") : "?";
    const root = w.root ? `; from ${describeSource(w.root)}` : "";
    return [`d${d} <- ${from} by ${w.rule}${where(w.op)}${w.level > 0 ? ` (priority ${w.level})` : ""}${root}`];
  });
  if (dims.length) return dims.join("; ");
  return isInput ? "argument without a spec: replicated" : "replicated (no split reached it)";
}

/** Every value of a graph and its scan bodies, with the nesting depth of each. */
function valuesInOrder(g: Graph, depth = 0, out: [Value, number][] = []): [Value, number][] {
  for (const v of g.inputs) out.push([v, depth]);
  for (const op of g.ops) {
    if (op.name === "scan") valuesInOrder(op.params.body, depth + 1, out);
    for (const v of op.outputs) out.push([v, depth]);
  }
  return out;
}

function shardingsSection(plan: ShardingPlan, names: ReadonlyMap<Value, string>): string[] {
  const inputs = new Set(plan.graph.inputs);
  const rows = valuesInOrder(plan.graph).map(([v, depth]) => {
    const vs = plan.values.get(v)!;
    return [
      `${"  ".repeat(depth)}${names.get(v) ?? "?"}`,
      formatType(v.type),
      formatSharding(vs.sharding),
      explain(vs, names, inputs.has(v)),
    ];
  });
  const w = [0, 1, 2].map((c) => Math.max(...rows.map((r) => r[c]!.length)));
  return rows.map((r) => `  ${r[0]!.padEnd(w[0]!)}  ${r[1]!.padEnd(w[1]!)}  ${r[2]!.padEnd(w[2]!)}  ${r[3]}`);
}

function collectivesSection(plan: ShardingPlan, names: ReadonlyMap<Value, string>): string[] {
  if (plan.collectives.length === 0) return ["  none: every op runs on its local pieces"];
  const kinds = new Map<string, { n: number; perStep: number; bytes: number }>();
  for (const c of plan.collectives) {
    const k = kinds.get(c.kind) ?? { n: 0, perStep: 0, bytes: 0 };
    kinds.set(c.kind, { n: k.n + 1, perStep: k.perStep + c.times, bytes: k.bytes + c.bytes * c.times });
  }
  const lines = [
    `  ${"kind".padEnd(16)}${"in program".padStart(12)}${"per step".padStart(10)}${"bytes per step (per device)".padStart(30)}`,
  ];
  for (const [k, v] of kinds)
    lines.push(
      `  ${k.padEnd(16)}${String(v.n).padStart(12)}${String(v.perStep).padStart(10)}${`${formatBytes(v.bytes)} (${v.bytes})`.padStart(30)}`,
    );
  lines.push("");
  const rows = plan.collectives.map((c) => [
    `${c.kind}${c.reduce && c.kind !== "all-gather" && c.kind !== "all-to-all" ? `(${c.reduce})` : ""} over {${c.axes.join(",")}}`,
    formatType(c.type),
    formatBytes(c.bytes),
    c.times > 1 ? `x${c.times}` : "",
    `${c.op.name} ${c.role} ${names.get(c.value) ?? "?"}: ${formatSharding(c.from)} -> ${formatSharding(c.to)}${where(c.op)}`,
  ]);
  const w = [0, 1, 2, 3].map((i) => Math.max(...rows.map((r) => r[i]!.length)));
  for (const r of rows)
    lines.push(
      `  ${r[0]!.padEnd(w[0]!)}  ${r[1]!.padEnd(w[1]!)}  ${r[2]!.padStart(w[2]!)}  ${r[3]!.padEnd(w[3]!)}  ${r[4]}`,
    );
  return lines;
}

function memorySection(
  plan: ShardingPlan,
  donate: readonly (number | undefined)[] | undefined,
): { lines: string[]; sharded: MemoryEstimate } {
  const opts = donate ? { donate } : {};
  const sharded = estimateMemory(plan.graph, { ...opts, bytes: shardedBytes(plan) });
  const one = estimateMemory(plan.graph, opts);
  const b = (n: number) => `${formatBytes(n)} (${n})`;
  const rows: [string, string][] = [
    ["arguments", b(sharded.arguments)],
    ...[...sharded.argumentGroups].map(([k, n]): [string, string] => [`  ${k}`, formatBytes(n)]),
    ["outputs", b(sharded.outputs)],
    ["  reusing donated", b(sharded.aliased)],
    [
      "temporaries (peak)",
      `${b(sharded.temporaries)}${sharded.peakOp ? `, while ${sharded.peakOp.name} runs${where(sharded.peakOp)}` : ""}`,
    ],
    ["total per device", b(sharded.total)],
    [
      "one device, unsharded",
      `${b(one.total)}: the mesh needs ${(sharded.total / one.total).toFixed(3)} of it per device`,
    ],
  ];
  return { lines: table(rows, 2), sharded };
}

/**
 * The whole report: mesh, per-value shardings with reasons, predicted collectives (the emitted module pins every
 * value, so XLA's partitioner needs exactly these), memory per device, and annotations the passes dropped.
 */
export function shardingReport(
  plan: ShardingPlan,
  opts: {
    donate?: readonly (number | undefined)[];
    dropped?: readonly { loc?: { file: string; line: number; col: number } }[];
  } = {},
): string {
  const names = nameValues(plan.graph);
  const lines = [
    `shardings over mesh ${formatMesh(plan.mesh)} (${meshSize(plan.mesh)} devices): value, type, sharding (per dimension, the mesh axes it is split over), why`,
  ];
  lines.push(...shardingsSection(plan, names));
  lines.push(
    "",
    "collectives the partitioner will insert (per device; loop bodies once in the program, trip count times per step):",
  );
  lines.push(...collectivesSection(plan, names));
  lines.push("", "memory per device (estimated: live values in program order; element-wise chains fused as XLA does):");
  lines.push(...memorySection(plan, opts.donate).lines);
  for (const d of opts.dropped ?? [])
    lines.push(
      "",
      `note: the shard() annotation${d.loc ? ` at ${formatLoc(d.loc)}` : ""} was dropped: the cleanup passes removed its value`,
    );
  return `${lines.join("\n")}\n`;
}

export type { Sharding };
