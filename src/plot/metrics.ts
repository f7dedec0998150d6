// A run's metrics.jsonl read back as loss curves (train loss per step, eval loss where logged) for the plots.
import { readFile } from "node:fs/promises";
import { DataError } from "../data/records.ts";
import { fsError } from "../host/fs_errors.ts";
import { stripBom } from "../host/text.ts";

/** One curve: [step, value] pairs in step order; only finite values (a skipped step's loss is null in the file). */
export type Curve = [step: number, value: number][];

export interface LossCurves {
  file: string;
  train: Curve;
  /** eval_loss on the steps that logged one; empty when the run had no eval data. */
  eval: Curve;
  /** Steps whose loss was not finite (NaN/Inf, written as null): left out of `train`. */
  nonfinite: number;
}

/**
 * Parses metrics.jsonl text: one JSON object per line with a numeric `step` and a `loss` (a number, or null for a
 * NaN/Inf step), and optionally `eval_loss`. A bad line is a DataError naming `file:line` and the field.
 */
export function parseMetrics(text: string, file: string): LossCurves {
  const train: Curve = [];
  const evals: Curve = [];
  let nonfinite = 0;
  const lines = stripBom(text).split("\n");
  lines.forEach((raw, i) => {
    const line = raw.trim();
    if (line === "") return;
    const n = i + 1;
    let rec: unknown;
    try {
      rec = JSON.parse(line);
    } catch (e) {
      throw new DataError(`not valid JSON (${(e as Error).message})`, file, n);
    }
    if (typeof rec !== "object" || rec === null || Array.isArray(rec))
      throw new DataError("expected a JSON object per line", file, n);
    const r = rec as Record<string, unknown>;
    if (typeof r.step !== "number" || !Number.isInteger(r.step) || r.step < 0)
      throw new DataError(`field "step": expected an integer >= 0, got ${JSON.stringify(r.step)}`, file, n);
    if (r.loss !== null && typeof r.loss !== "number")
      throw new DataError(
        `field "loss": expected a number (or null for a NaN/Inf step), got ${JSON.stringify(r.loss)}`,
        file,
        n,
      );
    if (r.eval_loss !== undefined && r.eval_loss !== null && typeof r.eval_loss !== "number")
      throw new DataError(`field "eval_loss": expected a number, got ${JSON.stringify(r.eval_loss)}`, file, n);
    if (typeof r.loss === "number" && Number.isFinite(r.loss)) train.push([r.step, r.loss]);
    else nonfinite++;
    if (typeof r.eval_loss === "number" && Number.isFinite(r.eval_loss)) evals.push([r.step, r.eval_loss]);
  });
  const byStep = (a: [number, number], b: [number, number]) => a[0] - b[0];
  return { file, train: train.sort(byStep), eval: evals.sort(byStep), nonfinite };
}

/** Reads and parses a metrics.jsonl file (see parseMetrics). */
export async function readMetrics(file: string): Promise<LossCurves> {
  const text = await readFile(file, "utf8").catch((e) => {
    throw fsError(e, file, "read");
  });
  const curves = parseMetrics(text, file);
  if (curves.train.length === 0 && curves.eval.length === 0)
    throw new DataError("no step with a finite loss to plot", file);
  return curves;
}
