// Loss plots: metrics.jsonl parsing (bad lines named file:line), the SVG (parsed as XML), the terminal chart, `tessera plot`.
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { mkdir, readdir, readFile, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { execa } from "execa";
import { DataError } from "../../src/data/records.ts";
import { parseMetrics, readMetrics } from "../../src/plot/metrics.ts";
import { lossSvg, niceTicks } from "../../src/plot/svg.ts";
import { lossChart } from "../../src/plot/terminal.ts";
import { progressBar, trainCommand } from "../../src/cli/train.ts";
import { clearRun, RUN_ENTRIES } from "../../src/train/out_dir.ts";
import { REPO_ROOT, tempDir } from "../models/helpers.ts";

const BIN = join(REPO_ROOT, "bin", "tessera.mjs");

let root: string, cleanup: () => Promise<void>;
beforeAll(async () => {
  ({ dir: root, cleanup } = await tempDir("plot"));
});
afterAll(() => cleanup());

/** 40 steps of a decaying loss with an evaluation every 10 steps, as `tessera train` writes them. */
function metricsText(): string {
  const lines: string[] = [];
  for (let s = 1; s <= 40; s++) {
    const rec: Record<string, unknown> = { step: s, loss: 3 + 4 * Math.exp(-s / 8), lr: 1e-3, tokens: 512 };
    if (s === 7) rec.loss = null; // a skipped NaN step, as JSON.stringify writes NaN
    if (s % 10 === 0) rec.eval_loss = 3.5 + 4 * Math.exp(-s / 8);
    lines.push(JSON.stringify(rec));
  }
  return `${lines.join("\n")}\n`;
}

/** The SVG parsed by Python's XML parser (a real one: any malformed markup raises), reduced to what the tests check. */
async function parseSvg(svg: string): Promise<{
  root: string;
  plot: Record<string, string>;
  series: { name: string; n: string; points: [number, number][] }[];
  xTicks: string[];
  yTicks: string[];
  legend: string[];
  tags: string[];
}> {
  const py = `
import json, sys, xml.etree.ElementTree as ET
root = ET.fromstring(sys.stdin.read())
ns = "{http://www.w3.org/2000/svg}"
plot = next(g for g in root.iter(ns + "g") if g.get("class") == "plot")
group = lambda c: next(g for g in root.iter(ns + "g") if g.get("class") == c)
print(json.dumps({
  "root": root.tag,
  "plot": dict(plot.attrib),
  "series": [{"name": p.get("data-series"), "n": p.get("data-points"),
              "points": [[float(v) for v in xy.split(",")] for xy in p.get("points").split()]}
             for p in root.iter(ns + "polyline")],
  "xTicks": [t.text for t in group("x-ticks").iter(ns + "text")],
  "yTicks": [t.text for t in group("y-ticks").iter(ns + "text")],
  "legend": [t.text for t in group("legend").iter(ns + "text")],
  "tags": sorted({e.tag.replace(ns, "") for e in root.iter()}),
}))
`;
  const r = await execa("python3", ["-c", py], { input: svg });
  return JSON.parse(r.stdout);
}

describe("metrics.jsonl", () => {
  it("gives the train curve (non-finite steps left out and counted) and the eval points", () => {
    const c = parseMetrics(metricsText(), "m.jsonl");
    expect(c.train.length).toBe(39);
    expect(c.nonfinite).toBe(1);
    expect(c.train.some(([s]) => s === 7)).toBe(false);
    expect(c.eval.map(([s]) => s)).toEqual([10, 20, 30, 40]);
    expect(c.eval[0]![1]).toBeCloseTo(3.5 + 4 * Math.exp(-10 / 8), 12);
  });

  it("a bad line is a DataError naming file:line and the field", () => {
    const bad = (text: string) => {
      try {
        parseMetrics(text, "run/metrics.jsonl");
      } catch (e) {
        expect(e).toBeInstanceOf(DataError);
        return (e as Error).message;
      }
      throw new Error("no error");
    };
    const ok = '{"step":1,"loss":2.5}';
    expect(bad(`${ok}\n{"step":2,"loss":"high"}\n`)).toBe(
      'run/metrics.jsonl:2: field "loss": expected a number (or null for a NaN/Inf step), got "high"',
    );
    expect(bad(`${ok}\n\n{"loss":1}\n`)).toBe(
      'run/metrics.jsonl:3: field "step": expected an integer >= 0, got undefined',
    );
    expect(bad(`${ok}\n{"step":2,"loss":1,"eval_loss":"?"}`)).toBe(
      'run/metrics.jsonl:2: field "eval_loss": expected a number, got "?"',
    );
    expect(bad(`${ok}\n{"step":2,`)).toMatch(/^run\/metrics\.jsonl:2: not valid JSON \(/);
    expect(bad("[1,2]")).toBe("run/metrics.jsonl:1: expected a JSON object per line");
  });

  it("a file with nothing to plot, or no file, is an error that names it", async () => {
    const empty = join(root, "empty.jsonl");
    await writeFile(empty, '{"step":1,"loss":null}\n');
    await expect(readMetrics(empty)).rejects.toThrow(`${empty}: no step with a finite loss to plot`);
    await expect(readMetrics(join(root, "missing.jsonl"))).rejects.toThrow(/missing\.jsonl/);
  });
});

describe("the SVG", () => {
  const curves = parseMetrics(metricsText(), "m.jsonl");

  it("is well-formed, self-contained XML with both series, axes ranges covering the data, ticks and a legend", async () => {
    const svg = lossSvg(curves);
    const p = await parseSvg(svg);
    expect(p.root).toBe("{http://www.w3.org/2000/svg}svg");
    // Nothing that runs or loads: only drawing elements.
    expect(p.tags).toEqual(["circle", "g", "line", "polyline", "rect", "svg", "text", "title"]);
    expect(svg).not.toMatch(/<script|href=|https?:\/\/(?!www\.w3\.org\/2000\/svg)/);

    const [train, evals] = p.series;
    expect(train!.name).toBe("train");
    expect(train!.n).toBe("39");
    expect(train!.points.length).toBe(39);
    expect(evals!.name).toBe("eval");
    expect(evals!.points.length).toBe(4);

    // x spans the steps exactly; y is widened to whole ticks around [min, max] of both curves.
    const r = Object.fromEntries(Object.entries(p.plot).map(([k, v]) => [k.replace("data-", ""), Number(v)]));
    expect([r["x-min"], r["x-max"]]).toEqual([1, 40]);
    const all = [...curves.train, ...curves.eval].map(([, v]) => v);
    expect(r["y-min"]).toBeLessThanOrEqual(Math.min(...all));
    expect(r["y-max"]).toBeGreaterThanOrEqual(Math.max(...all));
    expect(r["y-min"]).toBe(3);
    expect(r["y-max"]).toBe(7);

    // Every drawn point maps back to its step and loss through the axes (to the 0.01 px the file keeps).
    const back = ([px, py]: [number, number]) => [
      r["x-min"]! + ((px - r.left!) / r.width!) * (r["x-max"]! - r["x-min"]!),
      r["y-max"]! - ((py - r.top!) / r.height!) * (r["y-max"]! - r["y-min"]!),
    ];
    train!.points.forEach((pt, i) => {
      const [s, v] = back(pt);
      expect(s).toBeCloseTo(curves.train[i]![0], 1);
      expect(v).toBeCloseTo(curves.train[i]![1], 2);
    });
    expect(back(evals!.points[3]!)[0]).toBeCloseTo(40, 1);

    expect(p.xTicks).toEqual(["5", "10", "15", "20", "25", "30", "35", "40"]);
    expect(p.yTicks).toEqual(["3", "4", "5", "6", "7"]);
    expect(p.legend).toEqual(["train loss", "eval loss"]);
  });

  it("without eval data: one series, one legend entry; a one-step run still has a usable range", async () => {
    const p = await parseSvg(lossSvg({ ...curves, eval: [] }));
    expect(p.series.map((s) => s.name)).toEqual(["train"]);
    expect(p.legend).toEqual(["train loss"]);
    const one = await parseSvg(lossSvg({ file: "m", train: [[1, 2.5]], eval: [], nonfinite: 0 }));
    expect(Number(one.plot["data-x-min"])).toBeLessThan(1);
    expect(Number(one.plot["data-x-max"])).toBeGreaterThan(1);
    expect(Number(one.plot["data-y-min"])).toBeLessThan(2.5);
    expect(Number(one.plot["data-y-max"])).toBeGreaterThan(2.5);
  });

  it("ticks are round numbers covering the range", () => {
    expect(niceTicks(0.21, 7.3, 6)).toEqual({ ticks: [0, 2, 4, 6, 8], step: 2 });
    expect(niceTicks(1, 60, 8).ticks).toEqual([0, 10, 20, 30, 40, 50, 60]);
    expect(niceTicks(2.31, 2.39, 4).step).toBeCloseTo(0.02, 12);
  });
});

describe("the terminal chart", () => {
  it("labels the loss range, the first and last step, and both curves; eval is drawn only where it was measured", () => {
    const c = parseMetrics(metricsText(), "m.jsonl");
    const text = lossChart(c, { width: 40, height: 8 });
    const lines = text.split("\n");
    expect(lines.length).toBe(9 + 3);
    const top = Math.max(...c.train.map(([, v]) => v));
    const bottom = Math.min(...c.train.map(([, v]) => v), ...c.eval.map(([, v]) => v));
    expect(lines[0]!.trim().startsWith(top.toFixed(3))).toBe(true);
    expect(lines[8]!.trim().startsWith(bottom.toFixed(3))).toBe(true);
    expect(lines[9]).toBe(`${" ".repeat(10)}└${"─".repeat(40)}`);
    expect(lines[10]).toBe(`${" ".repeat(11)}1${" ".repeat(37)}40  step`);
    expect(lines[11]).toBe(`${" ".repeat(11)}── train loss   ── eval loss (4 evaluations)`);
    expect(text).not.toContain("\x1b[");
    // Columns before the first evaluation (step 10 of 40: the first 9 of 40 columns) hold the train curve only:
    // the same marks as the chart without eval data (whose y range is the same here, the train curve spanning it).
    const firstCols = (t: string) =>
      t
        .split("\n")
        .slice(0, 9)
        .map((l) => l.slice(0, 11 + 9).padEnd(20));
    expect(firstCols(text)).toEqual(firstCols(lossChart({ ...c, eval: [] }, { width: 40, height: 8 })));
  });

  it("colours the curves only when asked (a terminal)", () => {
    const c = parseMetrics(metricsText(), "m.jsonl");
    expect(lossChart(c, { color: true })).toContain("\x1b[");
  });
});

describe("tessera plot", () => {
  it("prints the chart, writes the SVG to --out (default loss.svg beside the metrics), and names bad lines", async () => {
    const dir = join(root, "run");
    await mkdir(dir);
    await writeFile(join(dir, "metrics.jsonl"), metricsText());
    const r = await execa("node", [BIN, "plot", join(dir, "metrics.jsonl")], { reject: false, cwd: root });
    expect(r.exitCode).toBe(0);
    expect(r.stdout).toContain("── train loss   ── eval loss (4 evaluations)");
    expect(r.stdout).toContain(
      "plot     run/loss.svg: 39 train steps, 4 evaluations (1 steps without a finite loss left out)",
    );
    expect((await parseSvg(await readFile(join(dir, "loss.svg"), "utf8"))).series.length).toBe(2);

    const custom = await execa("node", [BIN, "plot", join(dir, "metrics.jsonl"), "--out", "elsewhere.svg"], {
      reject: false,
      cwd: root,
    });
    expect(custom.exitCode).toBe(0);
    expect(await readdir(root)).toContain("elsewhere.svg");

    await writeFile(join(dir, "bad.jsonl"), '{"step":1,"loss":1}\n{"step":"two","loss":1}\n');
    const bad = await execa("node", [BIN, "plot", join(dir, "bad.jsonl")], { reject: false, cwd: root });
    expect(bad.exitCode).toBe(1);
    expect(bad.stderr).toBe(`error: ${join(dir, "bad.jsonl")}:2: field "step": expected an integer >= 0, got "two"`);

    const png = await execa("node", [BIN, "plot", join(dir, "metrics.jsonl"), "--out", "x.png"], { reject: false });
    expect(png.exitCode).toBe(2);
  });
});

describe("tessera train's progress bar and closing plot", () => {
  it("the bar: percent, eighth blocks, step, loss, tok/s and ETA", () => {
    expect(progressBar({ step: 24, steps: 60, loss: 2.134, tokensPerSecond: 91234, eta: 0.42, elapsed: 1.8 }, 24)).toBe(
      " 40% |█████████▋              | 24/60  loss 2.1340  91.2k tok/s  eta 0.4s  elapsed 1.8s",
    );
    expect(
      progressBar({ step: 1, steps: 60, loss: 7.126, tokensPerSecond: undefined, eta: undefined, elapsed: 1.6 }, 24),
    ).toBe("  1% |▍                       |  1/60  loss 7.1260  -- tok/s  eta --  elapsed 1.6s");
    expect(progressBar({ step: 60, steps: 60, loss: 0.5, tokensPerSecond: 2.5e6, eta: 0, elapsed: 300 }, 10)).toBe(
      "100% |██████████| 60/60  loss 0.5000  2.50M tok/s  eta 0.0s  elapsed 5m00s",
    );
  });

  it("on a terminal: the bar redrawn in place, progress lines above it, the chart at the end; loss.svg in --out", async () => {
    const out = join(root, "train-tty");
    let text = "";
    const code = await trainCommand(
      {
        positionals: [],
        options: new Map([
          ["out", out],
          ["steps", "12"],
          ["log-every", "4"],
        ]),
        help: false,
      },
      { out: (s) => (text += s), err: (s) => (text += s), tty: true },
    );
    expect(code).toBe(0);
    // "<EL>" stands for the erase-line sequence, so that the patterns need no control characters.
    const shown = text.replaceAll("\x1b[2K", "<EL>");
    const bars = shown.match(
      /\r<EL> *\d+% \|[^|]*\| +\d+\/12 {2}loss \d+\.\d{4} {2}(--|[\d.]+k?) tok\/s {2}eta [^ ]+ {2}elapsed/g,
    );
    expect(bars?.length).toBeGreaterThanOrEqual(4);
    expect(text).toContain("| 12/12  loss ");
    // Each progress line first erases the bar, so none is left mixed into it.
    expect(shown).toMatch(/\r<EL>step 12\/12 {2}loss /);
    expect(text).toContain(`plot     ${out}/loss.svg (tessera plot ${out}/metrics.jsonl redraws it)`);
    expect(text).toContain("train loss");
    expect(await readdir(out)).toContain("loss.svg");
    const svg = await parseSvg(await readFile(join(out, "loss.svg"), "utf8"));
    expect(svg.series.map((s) => [s.name, s.n])).toEqual([["train", "12"]]);
  }, 300_000);

  it("--overwrite removes an earlier run's loss.svg with the rest of it", async () => {
    expect(RUN_ENTRIES).toContain("loss.svg");
    const dir = join(root, "old-run");
    await mkdir(dir);
    await writeFile(join(dir, "loss.svg"), "<svg/>");
    await writeFile(join(dir, "notes.txt"), "mine");
    await clearRun(dir);
    expect(await readdir(dir)).toEqual(["notes.txt"]);
  });
});
