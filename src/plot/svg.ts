// The loss curves as a self-contained SVG (axes, ticks, grid, legend; no scripts, fonts or anything fetched).
import { writeAll, writeFileAtomic } from "../formats/atomic.ts";
import { fsError } from "../host/fs_errors.ts";
import type { Curve, LossCurves } from "./metrics.ts";

const WIDTH = 720;
const HEIGHT = 400;
const M = { left: 64, right: 24, top: 44, bottom: 52 };
const COLORS = { train: "#1f77b4", eval: "#d62728" } as const;
/** Past this many points a curve is drawn as the mean of equal step bins, so huge runs stay small files. */
const MAX_POINTS = 2000;

/** About `count` round tick values (1, 2 or 5 times a power of ten apart) covering [lo, hi]. */
export function niceTicks(lo: number, hi: number, count: number): { ticks: number[]; step: number } {
  if (!(hi > lo)) {
    const pad = lo === 0 ? 1 : Math.abs(lo) * 0.1;
    return niceTicks(lo - pad, hi + pad, count);
  }
  const raw = (hi - lo) / Math.max(1, count);
  const pow = 10 ** Math.floor(Math.log10(raw));
  // The tolerance keeps 0.08 / 4 (0.020000000000000018 in floating point) a step of 0.02.
  const step = [1, 2, 5, 10].map((m) => m * pow).find((s) => s >= raw * (1 - 1e-9)) ?? 10 * pow;
  const first = Math.floor(lo / step + 1e-9) * step;
  const ticks: number[] = [];
  for (let v = first; v < hi + step * 0.999; v += step) ticks.push(+v.toPrecision(12));
  return { ticks, step };
}

/** A tick label with the decimals its spacing needs: steps are 1, 2 or 5 times a power of ten (0.5 -> "0.5", 20 -> "20"). */
function tickLabel(v: number, step: number): string {
  return v.toFixed(Math.max(0, -Math.floor(Math.log10(step) + 1e-9)));
}

function xmlEscape(s: string): string {
  return s.replace(/&/g, "&amp;").replace(/</g, "&lt;").replace(/>/g, "&gt;").replace(/"/g, "&quot;");
}

/** At most MAX_POINTS points: the mean step and value of consecutive equal-sized groups. */
function thin(c: Curve): Curve {
  if (c.length <= MAX_POINTS) return c;
  const per = Math.ceil(c.length / MAX_POINTS);
  const out: Curve = [];
  for (let i = 0; i < c.length; i += per) {
    const g = c.slice(i, i + per);
    out.push([g.reduce((a, p) => a + p[0], 0) / g.length, g.reduce((a, p) => a + p[1], 0) / g.length]);
  }
  return out;
}

const fmt = (x: number) => (Math.round(x * 100) / 100).toString();

/**
 * The SVG document: train loss as a line, eval loss as a line with a marker per evaluation, over step on x.
 * The plot area carries its data ranges (`data-x-min`... on the `plot` group) so tools and tests can read them.
 */
export function lossSvg(curves: LossCurves, title = "Training loss"): string {
  const all = [...curves.train, ...curves.eval];
  const xs = all.map((p) => p[0]);
  const ys = all.map((p) => p[1]);
  const xMin0 = Math.min(...xs),
    xMax0 = Math.max(...xs);
  const yMin0 = Math.min(...ys),
    yMax0 = Math.max(...ys);
  const xt = niceTicks(xMin0, xMax0, 8);
  const yt = niceTicks(yMin0, yMax0, 6);
  // The x axis spans the steps themselves; the y axis is widened to whole ticks so the curve never touches an edge.
  const xMin = xMin0 === xMax0 ? xMin0 - 1 : xMin0;
  const xMax = xMin0 === xMax0 ? xMax0 + 1 : xMax0;
  const yMin = Math.min(yt.ticks[0]!, yMin0);
  const yMax = Math.max(yt.ticks.at(-1)!, yMax0);
  const pw = WIDTH - M.left - M.right;
  const ph = HEIGHT - M.top - M.bottom;
  const X = (v: number) => M.left + ((v - xMin) / (xMax - xMin)) * pw;
  const Y = (v: number) => M.top + (1 - (v - yMin) / (yMax - yMin)) * ph;
  const out: string[] = [];
  out.push(
    `<svg xmlns="http://www.w3.org/2000/svg" width="${WIDTH}" height="${HEIGHT}" viewBox="0 0 ${WIDTH} ${HEIGHT}" font-family="system-ui, -apple-system, 'Segoe UI', Helvetica, Arial, sans-serif" font-size="12">`,
    `<title>${xmlEscape(title)}</title>`,
    `<rect width="${WIDTH}" height="${HEIGHT}" fill="#ffffff"/>`,
    `<text x="${M.left}" y="26" font-size="15" font-weight="600" fill="#222">${xmlEscape(title)}</text>`,
  );
  out.push(
    `<g class="plot" data-x-min="${xMin}" data-x-max="${xMax}" data-y-min="${yMin}" data-y-max="${yMax}" data-left="${M.left}" data-top="${M.top}" data-width="${pw}" data-height="${ph}">`,
  );
  // Grid and ticks.
  out.push(`<g class="grid" stroke="#e6e6e6" stroke-width="1">`);
  for (const v of yt.ticks.filter((v) => v >= yMin && v <= yMax))
    out.push(`<line x1="${M.left}" x2="${M.left + pw}" y1="${fmt(Y(v))}" y2="${fmt(Y(v))}"/>`);
  for (const v of xt.ticks.filter((v) => v >= xMin && v <= xMax))
    out.push(`<line x1="${fmt(X(v))}" x2="${fmt(X(v))}" y1="${M.top}" y2="${M.top + ph}"/>`);
  out.push("</g>");
  out.push(`<g class="axes" stroke="#444" stroke-width="1" fill="none">`);
  out.push(`<line x1="${M.left}" x2="${M.left}" y1="${M.top}" y2="${M.top + ph}"/>`);
  out.push(`<line x1="${M.left}" x2="${M.left + pw}" y1="${M.top + ph}" y2="${M.top + ph}"/>`);
  out.push("</g>");
  out.push(`<g class="x-ticks" fill="#444" text-anchor="middle">`);
  for (const v of xt.ticks.filter((v) => v >= xMin && v <= xMax)) {
    out.push(`<line x1="${fmt(X(v))}" x2="${fmt(X(v))}" y1="${M.top + ph}" y2="${M.top + ph + 5}" stroke="#444"/>`);
    out.push(`<text x="${fmt(X(v))}" y="${M.top + ph + 19}">${tickLabel(v, xt.step)}</text>`);
  }
  out.push("</g>");
  out.push(`<g class="y-ticks" fill="#444" text-anchor="end">`);
  for (const v of yt.ticks.filter((v) => v >= yMin && v <= yMax)) {
    out.push(`<line x1="${M.left - 5}" x2="${M.left}" y1="${fmt(Y(v))}" y2="${fmt(Y(v))}" stroke="#444"/>`);
    out.push(`<text x="${M.left - 8}" y="${fmt(Y(v) + 4)}">${tickLabel(v, yt.step)}</text>`);
  }
  out.push("</g>");
  out.push(`<text x="${M.left + pw / 2}" y="${HEIGHT - 12}" text-anchor="middle" fill="#222">step</text>`);
  out.push(
    `<text x="16" y="${M.top + ph / 2}" text-anchor="middle" fill="#222" transform="rotate(-90 16 ${M.top + ph / 2})">loss</text>`,
  );
  // The curves.
  const line = (name: "train" | "eval", c: Curve) =>
    `<polyline class="series" data-series="${name}" data-points="${c.length}" fill="none" stroke="${COLORS[name]}" stroke-width="${name === "train" ? 1.5 : 2}" stroke-linejoin="round" points="${thin(
      c,
    )
      .map(([x, y]) => `${fmt(X(x))},${fmt(Y(y))}`)
      .join(" ")}"/>`;
  if (curves.train.length > 0) out.push(line("train", curves.train));
  if (curves.eval.length > 0) {
    out.push(line("eval", curves.eval));
    out.push(`<g class="markers" fill="${COLORS.eval}">`);
    for (const [x, y] of thin(curves.eval)) out.push(`<circle cx="${fmt(X(x))}" cy="${fmt(Y(y))}" r="3"/>`);
    out.push("</g>");
  }
  out.push("</g>");
  // Legend, top right inside the plot area.
  const entries = [
    ...(curves.train.length > 0 ? [["train", "train loss"] as const] : []),
    ...(curves.eval.length > 0 ? [["eval", "eval loss"] as const] : []),
  ];
  const lx = M.left + pw - 118;
  const ly = M.top + 8;
  out.push(
    `<g class="legend"><rect x="${lx}" y="${ly}" width="110" height="${entries.length * 18 + 8}" fill="#ffffff" fill-opacity="0.9" stroke="#cccccc"/>`,
  );
  entries.forEach(([name, label], i) => {
    const y = ly + 16 + i * 18;
    out.push(
      `<line x1="${lx + 8}" x2="${lx + 30}" y1="${y - 4}" y2="${y - 4}" stroke="${COLORS[name]}" stroke-width="2"/>`,
      `<text x="${lx + 36}" y="${y}" fill="#222">${label}</text>`,
    );
  });
  out.push("</g>", "</svg>", "");
  return out.join("\n");
}

/** Writes lossSvg(curves) to `file` atomically (a temp file renamed into place). */
export async function writeLossSvg(file: string, curves: LossCurves, title?: string): Promise<void> {
  const bytes = new TextEncoder().encode(lossSvg(curves, title));
  await writeFileAtomic(file, (fh) => writeAll(fh, bytes)).catch((e) => {
    throw fsError(e, file, "write");
  });
}
