// The text summary `tessera inspect` prints after the IR (alone with --summary): op counts, FLOPs, bytes, cost per namedScope, largest intermediates.
import { graphCost, largestIntermediates, opCost, typeBytes } from "../ir/cost.ts";
import type { Graph, Value } from "../ir/graph.ts";
import { formatLoc, formatType, type SourceLoc } from "../ir/types.ts";
import { table } from "./args.ts";

/** `1536 B`, `1.5 KiB`, `2.00 MiB`: exact below 1 KiB, three significant digits above. */
export function formatBytes(n: number): string {
  const units = ["B", "KiB", "MiB", "GiB", "TiB"];
  let v = n;
  let u = 0;
  while (v >= 1024 && u < units.length - 1) {
    v /= 1024;
    u++;
  }
  return u === 0 ? `${n} B` : `${v.toPrecision(3)} ${units[u]}`;
}

/** `16384 (16.4 k)`: the exact count for tests and scripts, a rounded one for people. */
export function formatCount(n: number): string {
  const units = ["", " k", " M", " G", " T", " P"];
  let v = n;
  let u = 0;
  while (v >= 1000 && u < units.length - 1) {
    v /= 1000;
    u++;
  }
  return u === 0 ? String(n) : `${n} (${v.toPrecision(3)}${units[u]})`;
}

interface Group {
  readonly name: string;
  tensors: number;
  bytes: number;
}

/**
 * Values grouped by the first segment of their tree path (`params.w1` -> `params`), so the summary shows what
 * each argument of the entry costs: the parameter tree, the batch, the optimizer state.
 */
function groupByArgument(values: readonly Value[], names: readonly string[] | undefined, fallback: string): Group[] {
  const groups: Group[] = [];
  values.forEach((v, i) => {
    const path = names?.[i] ?? "";
    // `out[0].w1` (an element of a returned array) groups under `out[0]`; `params.w1` under `params`.
    const name = !path ? `${fallback}${i}` : (/^out\[\d+\]/.exec(path)?.[0] ?? (path.split(/[.[]/)[0] || path));
    let g = groups.find((x) => x.name === name);
    if (!g) {
      g = { name, tensors: 0, bytes: 0 };
      groups.push(g);
    }
    g.tensors++;
    g.bytes += typeBytes(v.type);
  });
  return groups;
}

function groupRows(
  label: string,
  values: readonly Value[],
  names: readonly string[] | undefined,
  fallback: string,
): [string, string][] {
  const total = values.reduce((s, v) => s + typeBytes(v.type), 0);
  const tensors = (n: number) => `${n} tensor${n === 1 ? "" : "s"}`;
  const rows: [string, string][] = [[label, `${formatBytes(total)} in ${tensors(values.length)} (${total} bytes)`]];
  const groups = groupByArgument(values, names, fallback);
  if (groups.length > 1 || (groups.length === 1 && groups[0]!.tensors > 1)) {
    for (const g of groups) rows.push([`  ${g.name}`, `${formatBytes(g.bytes)} in ${tensors(g.tensors)}`]);
  }
  return rows;
}

export function summarize(g: Graph, opts: { top?: number } = {}): string {
  const { total, counts } = graphCost(g);
  const lines: string[] = [];
  const opTotal = [...counts.values()].reduce((a, b) => a + b, 0);
  lines.push(`ops: ${opTotal}`);
  // Most frequent first; ties in OP_NAMES order, which graphCost already follows (the sort is stable).
  const byCount = [...counts].sort((a, b) => b[1] - a[1]);
  lines.push(
    ...table(
      byCount.map(([name, n]): [string, string] => [name, String(n)]),
      2,
    ),
  );
  lines.push("");
  lines.push(
    ...table(
      [
        ["FLOPs", formatCount(total.flops)],
        ["transcendentals", formatCount(total.transcendentals)],
        ["bytes accessed", `${formatBytes(total.bytes)} (${total.bytes} bytes)`],
        ...groupRows("inputs", g.inputs, g.inputNames, "arg"),
        ...groupRows("outputs", g.outputs, g.outputNames, "out"),
      ],
      0,
    ),
  );
  lines.push(...scopeRows(g));
  const top = largestIntermediates(g, opts.top ?? 5);
  if (top.length) {
    lines.push("", "largest intermediates:");
    const rows = top.map((t) => [
      formatType(t.value.type),
      formatBytes(t.bytes),
      t.count > 1 ? `${t.op.name} x${t.count}` : t.op.name,
      t.op.loc ? placeText(t.op.loc) : "",
    ]);
    const widths = [0, 1, 2].map((c) => Math.max(...rows.map((r) => r[c]!.length)));
    for (const r of rows) {
      lines.push(
        `  ${r[0]!.padEnd(widths[0]!)}  ${r[1]!.padStart(widths[1]!)}  ${r[2]!.padEnd(widths[2]!)}  ${r[3]}`.trimEnd(),
      );
    }
  }
  return `${lines.join("\n")}\n`;
}

/** `layer0/mlp examples/mlp.ts:27:15`: the scope path (when the op was traced in a namedScope), then the line. */
function placeText(loc: SourceLoc): string {
  const at = loc.file ? formatLoc(loc) : "";
  return loc.scope ? `${loc.scope}${at ? ` ${at}` : ""}` : at;
}

/**
 * FLOPs, transcendentals and bytes per `namedScope` path of the top-level ops (an op with a body, such as a scan,
 * counts whole under its own scope), largest FLOPs first; nothing when no op was traced in a scope.
 */
function scopeRows(g: Graph): string[] {
  const by = new Map<string, { ops: number; flops: number; transcendentals: number; bytes: number }>();
  for (const op of g.ops) {
    const key = op.loc?.scope ?? "(no scope)";
    let r = by.get(key);
    if (!r) {
      r = { ops: 0, flops: 0, transcendentals: 0, bytes: 0 };
      by.set(key, r);
    }
    const c = opCost(op);
    r.ops++;
    r.flops += c.flops;
    r.transcendentals += c.transcendentals;
    r.bytes += c.bytes;
  }
  if (by.size === 0 || (by.size === 1 && by.has("(no scope)"))) return [];
  const rows = [...by].sort((a, b) => b[1].flops - a[1].flops);
  const cells = rows.map(([name, r]) => [
    name,
    String(r.ops),
    String(r.flops),
    String(r.transcendentals),
    formatBytes(r.bytes),
  ]);
  const head = ["scope", "ops", "FLOPs", "transcendentals", "bytes"];
  const widths = head.map((h, c) => Math.max(h.length, ...cells.map((r) => r[c]!.length)));
  const fmt = (r: string[]) =>
    `  ${r.map((x, c) => (c === 0 ? x.padEnd(widths[c]!) : x.padStart(widths[c]!))).join("  ")}`.trimEnd();
  return ["", "by scope:", fmt(head), ...cells.map(fmt)];
}
