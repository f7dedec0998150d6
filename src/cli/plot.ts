// `tessera plot METRICS.jsonl [--out FILE.svg]`: a run's loss curve in the terminal and as an SVG file.
import { dirname, join } from "node:path";
import { UsageError, type ParsedArgs } from "./args.ts";
import { displayPath } from "./diagnostics.ts";
import { EXIT } from "../errors.ts";
import { readMetrics } from "../plot/metrics.ts";
import { writeLossSvg } from "../plot/svg.ts";
import { lossChart } from "../plot/terminal.ts";
import { LOSS_PLOT_FILE } from "../train/out_dir.ts";

export async function plotCommand(args: ParsedArgs): Promise<number> {
  const file = args.positionals[0];
  if (file === undefined) throw new UsageError("give the metrics.jsonl file to plot", "plot");
  const out = args.options.get("out") ?? join(dirname(file), LOSS_PLOT_FILE);
  if (!out.toLowerCase().endsWith(".svg")) throw new UsageError(`--out must name an .svg file; got '${out}'`, "plot");
  const curves = await readMetrics(file);
  const tty = !!process.stdout.isTTY && process.env.TERM !== "dumb";
  process.stdout.write(`${lossChart(curves, { color: tty })}\n`);
  await writeLossSvg(out, curves);
  const skipped = curves.nonfinite > 0 ? ` (${curves.nonfinite} steps without a finite loss left out)` : "";
  process.stdout.write(
    `\nplot     ${displayPath(out)}: ${curves.train.length} train steps${curves.eval.length > 0 ? `, ${curves.eval.length} evaluations` : ""}${skipped}\n`,
  );
  return EXIT.ok;
}
