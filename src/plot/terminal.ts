// The loss curves drawn in the terminal with asciichart: train loss, and eval loss on the same axes when logged.
import asciichart from "asciichart";
import type { Curve, LossCurves } from "./metrics.ts";

export interface TerminalChartOptions {
  /** Columns of the curve itself (default: one per step up to 64). */
  width?: number;
  /** Rows (default 10). */
  height?: number;
  /** ANSI colours (only for a terminal). */
  color?: boolean;
}

/** The curve's values at `width` evenly spaced columns over [x0, x1]: each column the mean of the points in it. */
function binned(c: Curve, x0: number, x1: number, width: number): (number | undefined)[] {
  const sums = new Array<number>(width).fill(0);
  const counts = new Array<number>(width).fill(0);
  for (const [x, y] of c) {
    const col = x1 === x0 ? 0 : Math.min(width - 1, Math.floor(((x - x0) / (x1 - x0)) * width));
    sums[col]! += y;
    counts[col]!++;
  }
  return sums.map((s, i) => (counts[i]! > 0 ? s / counts[i]! : undefined));
}

/** Empty columns take the straight line between their neighbours (the ends extend the nearest value). */
function filled(v: (number | undefined)[]): number[] {
  const known = v.flatMap((y, i) => (y === undefined ? [] : [i]));
  return v.map((y, i) => {
    if (y !== undefined) return y;
    const after = known.find((k) => k > i);
    const before = known.filter((k) => k < i).at(-1);
    if (before === undefined) return v[after!]!;
    if (after === undefined) return v[before]!;
    return v[before]! + ((v[after]! - v[before]!) * (i - before)) / (after - before);
  });
}

/**
 * A text chart of the loss: y labels on the left, a step axis under the curve, and a legend. Each column is the
 * mean loss of the steps it covers; eval loss (measured every few steps) is joined by straight lines.
 */
export function lossChart(curves: LossCurves, opts: TerminalChartOptions = {}): string {
  const all = [...curves.train, ...curves.eval];
  const x0 = Math.min(...all.map((p) => p[0]));
  const x1 = Math.max(...all.map((p) => p[0]));
  const steps = x1 - x0 + 1;
  const width = Math.max(2, Math.min(opts.width ?? 64, steps));
  const height = opts.height ?? 10;
  const paint = (s: string, c: string | undefined) =>
    opts.color && c && s.trim() !== "" ? `${c}${s}${asciichart.reset}` : s;
  const labelWidth = 9;
  const ys = all.map((p) => p[1]);
  const cfg = {
    height,
    min: Math.min(...ys),
    max: Math.max(...ys),
    padding: " ".repeat(labelWidth),
    format: (x: number) => x.toFixed(3).padStart(labelWidth),
  };
  // Each curve is drawn alone on the same scale, then laid over the other: asciichart starts every series at the
  // first column, so the eval curve is kept only between its first and last evaluation (no invented values).
  const layers: { grid: string[][]; color: string | undefined; from: number; to: number }[] = [];
  const legend: string[] = [];
  const curveCol = labelWidth + 2;
  const colOf = (x: number) => (x1 === x0 ? 0 : Math.min(width - 1, Math.floor(((x - x0) / (x1 - x0)) * width)));
  for (const [c, color, label] of [
    [curves.train, asciichart.blue, "train loss"],
    [curves.eval, asciichart.red, `eval loss (${curves.eval.length} evaluations)`],
  ] as const) {
    if (c.length === 0) continue;
    const text = asciichart.plot(filled(binned(c, x0, x1, width)), cfg);
    layers.push({
      grid: text.split("\n").map((row) => Array.from(row)),
      color: opts.color ? color : undefined,
      from: curveCol + colOf(c[0]![0]),
      to: curveCol + colOf(c.at(-1)![0]),
    });
    legend.push(`${paint("──", opts.color ? color : undefined)} ${label}`);
  }
  const chart = layers[0]!.grid
    .map((row, r) =>
      row
        .map((ch, col) => {
          if (col < curveCol) return ch;
          // The later layer (eval) wins where it has a mark inside its span.
          for (let k = layers.length - 1; k >= 0; k--) {
            const l = layers[k]!;
            const mark = l.grid[r]?.[col] ?? " ";
            if (mark !== " " && col >= l.from && col <= l.to) return paint(mark, l.color);
          }
          return " ";
        })
        .join("")
        .trimEnd(),
    )
    .join("\n");
  // asciichart draws the axis one column left of the curve: offset 3 puts it at labelWidth + 1.
  const axisCol = labelWidth + 1;
  const xAxis = `${" ".repeat(axisCol)}└${"─".repeat(width)}`;
  const left = String(x0);
  const right = String(x1);
  const xLabels = `${" ".repeat(axisCol + 1)}${left}${" ".repeat(Math.max(1, width - left.length - right.length))}${right}  step`;
  const per = steps / width;
  const note = per > 1.0001 ? ` (each column the mean of ${per < 10 ? per.toFixed(1) : Math.round(per)} steps)` : "";
  return [...chart.split("\n"), xAxis, xLabels, `${" ".repeat(axisCol + 1)}${legend.join("   ")}${note}`].join("\n");
}
