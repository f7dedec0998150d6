// The training run as a library: train(config) reads the model, adapter and data, trains, and writes checkpoints, metrics and a PEFT adapter, reporting progress as events.
import { appendFile, readFile } from "node:fs/promises";
import { join } from "node:path";
import { displayPath } from "../cli/diagnostics.ts";
import { TesseraError } from "../errors.ts";
import { writeAll, writeFileAtomic } from "../formats/atomic.ts";
import type { HostTensor } from "../formats/host_tensor.ts";
import { saveAdapter } from "../formats/peft.ts";
import { BatchStream, evalBatches } from "../data/batches.ts";
import { DATA_CACHE_DIR } from "../data/cache.ts";
import { fsError } from "../host/fs_errors.ts";
import { loraToAdapter } from "../../models/lora.ts";
import { checkpointDir, saveCheckpoint, type TrainerState } from "./checkpoint.ts";
import { givenFields, parseTrainConfig, type TrainConfig, type TrainConfigInput } from "./config.ts";
import { trainLoRA, type HostBatch, type StepInfo, type TrainResult } from "./loop.ts";
import type { EvalResult } from "./evaluate.ts";
import { clearRun, LOSS_PLOT_FILE, lockOutDir, type OutDir } from "./out_dir.ts";
import { parseMetrics } from "../plot/metrics.ts";
import { writeLossSvg } from "../plot/svg.ts";
import { planRun, runRecord, type RunPlan } from "./plan.ts";
import { lrAt } from "./schedule.ts";
import type { TrainState } from "./step.ts";
import type { AttentionImpl } from "../../models/attention.ts";

export { BUILTIN_MODEL_SEED, SYNTHETIC_RECORDS } from "./plan.ts";

/** What a run reports while it runs, in this order: notes anywhere, start, compiling, step..., checkpoint..., done. */
export type TrainEvent =
  | { type: "note"; message: string }
  | {
      type: "start";
      /** One-line descriptions of the model, the adapter and the data, as the CLI prints them. */
      model: string;
      adapter: string;
      data: string;
      trainableParams: number;
      steps: number;
      /** Steps already taken (a resumed run). */
      startStep: number;
      batch: number;
      seq: number;
      lr: number;
      warmup: number;
      schedule: "cosine" | "constant";
      weightDecay: number;
      precision: "f32" | "bf16";
      seed: number;
      /** The attention kernel every step runs (--attention, or the default for --seq). */
      attention: AttentionImpl;
      out: string;
      /** Sequence positions per chunk of the loss; null when the whole logits are computed at once. */
      lossChunk: number | null;
      /** The memory-budget search's choice as a line (null without a budget). */
      memory: string | null;
      /** Micro-batches of `batch` rows per optimizer step. */
      gradAccum: number;
      /** Global gradient-norm clipping threshold; 0 when off. */
      maxGradNorm: number;
      pack: boolean;
      /** The share of padding with and without packing, as a line. */
      padding: string;
      /** The eval data and when it is evaluated; null without eval data. */
      eval: string | null;
    }
  | { type: "compiling" }
  | { type: "compiled"; seconds: number }
  | {
      type: "step";
      step: number;
      steps: number;
      loss: number;
      lr: number;
      gradNorm: number;
      /** Wall time of this step (the first one of a run includes the compile). */
      seconds: number;
      elapsed: number;
      tokens: number;
      /** The first step of this call (its time includes the compile). */
      first: boolean;
      /** A progress line is due (every logEvery steps, the first and last, and when stopping). */
      log: boolean;
      /** NaN/Inf loss or gradients: the update was not applied (onNonfinite "skip"). */
      skipped: boolean;
      skippedSteps: number;
      /** On eval steps: the eval loss after this step's update. */
      eval?: EvalResult;
    }
  | { type: "checkpoint"; step: number; dir: string }
  | { type: "done"; result: TrainRunResult };

export interface TrainRunResult {
  /** "stopped": the signal ended the run early; a checkpoint was saved and `resume` continues it. */
  status: "done" | "stopped";
  /** Steps taken before this call, and the last step taken. */
  startStep: number;
  step: number;
  steps: number;
  /** Losses of the steps taken in this call (NaN/Inf for skipped ones). */
  losses: number[];
  skippedSteps: number;
  seconds: number;
  out: string;
  checkpoint: string;
  /** The final PEFT adapter; null when stopped early. */
  adapter: string | null;
  metrics: string;
  /** The loss curve drawn from metrics.jsonl (loss.svg in `out`); null when no step has a finite loss yet. */
  plot: string | null;
}

export interface TrainRunOptions {
  onEvent?: (e: TrainEvent) => void;
  /** Aborting it ends the run after the step in progress, with a checkpoint (status "stopped"). */
  signal?: AbortSignal;
}

/** Keeps metrics.jsonl lines of steps up to `step` (the checkpoint resumed from); later ones are being redone. */
async function trimMetrics(file: string, step: number): Promise<void> {
  const text = await readFile(file, "utf8").catch(() => undefined);
  if (text === undefined) return;
  const keep = text.split("\n").filter((line) => {
    if (line.trim() === "") return false;
    try {
      return (JSON.parse(line) as { step?: number }).step! <= step;
    } catch {
      return false;
    }
  });
  const bytes = new TextEncoder().encode(keep.map((l) => `${l}\n`).join(""));
  await writeFileAtomic(file, (fh) => writeAll(fh, bytes)).catch((e) => {
    throw fsError(e, file, "write");
  });
}

/**
 * Trains a LoRA adapter as `config` says (see TrainConfigSchema for every field and default) and writes into
 * `config.out`: metrics.jsonl (a line per step), checkpoints/step-N, and the final PEFT adapter in adapter/.
 * `out` is locked for the run (a second run into it fails with ERR_LOCKED); a new run refuses a non-empty `out`
 * unless `resume` or `overwrite`. Everything is read and checked before anything is written. Errors a user can
 * cause are TesseraErrors (a step with NaN/Inf loss or gradients: ERR_NONFINITE, unless onNonfinite is "skip").
 */
export async function train(input: TrainConfigInput, opts: TrainRunOptions = {}): Promise<TrainRunResult> {
  const run = parseTrainConfig(input);
  const given = givenFields(input);
  const emit = opts.onEvent ?? (() => {});
  const lock = await lockOutDir(run.out);
  try {
    return await runLocked(run, given, lock, emit, opts.signal);
  } finally {
    await lock.release({ removeIfEmpty: true });
  }
}

type Emit = (e: TrainEvent) => void;

/** --out as the run writes it. */
interface RunOutputs {
  metricsFile: string;
  /** --overwrite: removes the earlier run, once; deferred until this run has taken a step or writes its results. */
  replaceEarlierRun: () => Promise<void>;
  /** Writes checkpoints/step-N and returns its directory. */
  save: (state: TrainState<HostTensor>, step: number, loss: number | null) => Promise<string>;
}

/** A run under way: what it trains, where it writes, and where its events go. */
interface Running {
  plan: RunPlan;
  out: RunOutputs;
  emit: Emit;
  signal: AbortSignal | undefined;
  /** The training batches, each drawn just before its step: between steps, its position is the last step's. */
  stream: BatchStream;
}

/** What the step handler keeps track of across steps, for the final checkpoint and the result. */
interface Progress {
  /** Step of the last checkpoint written (-1: none). */
  lastSaved: number;
  /** Loss of the last applied (finite) step, as trainer_state.json records it. */
  lastLoss: number | null;
  skippedSteps: number;
}

interface StepsDone {
  result: TrainResult;
  progress: Progress;
  /** When the step loop started (performance.now()); the result's seconds count from it. */
  t0: number;
}

async function runLocked(
  config: TrainConfig,
  given: ReadonlySet<string>,
  lock: OutDir,
  emit: Emit,
  signal: AbortSignal | undefined,
): Promise<TrainRunResult> {
  checkOutDir(config, lock, emit);
  // ---- everything is read and checked before anything is written -------------------------------------------------
  const plan = await planRun(config, given, (message) => emit({ type: "note", message }));
  const { run, data } = plan;
  // A step takes gradAccum micro-batches of --batch rows; a packed row holds as many records as fit.
  const stream = new BatchStream(data.records, {
    batch: run.batch * run.gradAccum,
    seq: data.seq,
    padId: run.padId,
    seed: run.seed,
    start: plan.resumeFrom?.trainer.data.examplesSeen ?? 0,
    pack: run.pack,
  });
  // ---- from here on, --out is written ----------------------------------------------------------------------------
  const out = await openOutputs(plan, lock, emit, () => stream.position().examplesSeen);
  emitStart(plan, emit);
  const running: Running = { plan, out, emit, signal, stream };
  const done = await runSteps(running);
  return await saveOutputs(running, done);
}

/** Notes on what locking --out found, and the refusal of a non-empty --out that neither resume nor overwrite allows. */
function checkOutDir(run: TrainConfig, lock: OutDir, emit: Emit): void {
  const outDir = run.out;
  if (lock.staleFrom)
    emit({
      type: "note",
      message: `took over the lock of a run that is no longer running (pid ${lock.staleFrom.pid}, started ${lock.staleFrom.started})`,
    });
  if (lock.cleaned.length > 0)
    emit({
      type: "note",
      message: `removed ${lock.cleaned.length} temporary file(s) an interrupted run left in ${displayPath(outDir)}`,
    });
  if (!run.resume && !run.overwrite && lock.existing.length > 0) {
    throw new TesseraError(
      `--out ${outDir} is not empty (${lock.existing.slice(0, 4).join(", ")}${lock.existing.length > 4 ? ", ..." : ""}): continue that run with --resume, or pass --overwrite to replace it (nothing is deleted before the first step has run)`,
      { code: "ERR_OUT_NOT_EMPTY" },
    );
  }
}

/** The first write: a resumed run drops the metrics of steps it redoes. */
async function openOutputs(plan: RunPlan, lock: OutDir, emit: Emit, examplesSeen: () => number): Promise<RunOutputs> {
  const { run, model, adapter } = plan;
  const outDir = run.out;
  const metricsFile = join(outDir, "metrics.jsonl");
  if (plan.resumeFrom) await trimMetrics(metricsFile, plan.start);
  // Text data tokenized by this run: cached for the next run on the same --out (written only now, with the run's
  // other outputs, so a run stopped by bad input or options leaves --out as it was).
  const cached = await plan.data.saveCache?.().catch((e) => {
    throw fsError(e, join(outDir, DATA_CACHE_DIR), "write the tokenized-data cache");
  });
  if (cached !== undefined) emit({ type: "note", message: `tokenized data cached in ${displayPath(cached)}` });
  // --overwrite: the earlier run stays until this one has taken a step (or is about to write its results).
  let replaced = run.resume || lock.existing.length === 0;
  const replaceEarlierRun = async () => {
    if (replaced) return;
    replaced = true;
    await clearRun(outDir);
    emit({ type: "note", message: `removed the earlier run in ${displayPath(outDir)} (--overwrite)` });
  };
  // The options as resolved now, once: a resume reads back exactly what this run started with.
  const options: TrainerState["options"] = {
    ...runRecord(run),
    seq: plan.data.seq,
    lr: plan.lr,
    precision: model.precision,
  };
  const save = async (state: TrainState<HostTensor>, step: number, loss: number | null): Promise<string> => {
    const trainer = trainerAt(plan, options, step, loss, examplesSeen());
    try {
      return await saveCheckpoint(outDir, { llama: model.llama, layout: adapter.layout, state, trainer });
    } catch (e) {
      throw fsError(e, checkpointDir(outDir, step), "write the checkpoint");
    }
  };
  return { metricsFile, replaceEarlierRun, save };
}

/** trainer_state.json at `step`: where the data stream stands, and the options a resume reads back. */
function trainerAt(
  plan: RunPlan,
  options: TrainerState["options"],
  step: number,
  loss: number | null,
  seen: number,
): TrainerState {
  const { run, data } = plan;
  const n = data.records.length;
  return {
    format: "tessera-train-state",
    version: 1,
    step,
    seed: run.seed,
    data: {
      examplesSeen: seen,
      epoch: Math.floor(seen / n),
      index: seen % n,
      records: n,
      source: data.source,
      sha256: data.sha256,
    },
    options,
    loss,
  };
}

function emitStart(plan: RunPlan, emit: Emit): void {
  const { run } = plan;
  emit({
    type: "start",
    model: plan.model.line,
    adapter: plan.adapter.line,
    data: plan.data.line,
    trainableParams: plan.adapter.trainable,
    steps: run.steps,
    startStep: plan.start,
    batch: run.batch,
    seq: plan.data.seq,
    lr: plan.lr,
    warmup: run.warmup,
    schedule: run.schedule,
    weightDecay: run.weightDecay,
    precision: plan.model.precision,
    seed: run.seed,
    attention: plan.attention,
    out: run.out,
    lossChunk: plan.lossChunk ?? null,
    memory: plan.memory?.line ?? null,
    gradAccum: run.gradAccum,
    maxGradNorm: run.maxGradNorm,
    pack: run.pack,
    padding: plan.data.paddingLine,
    eval: plan.data.eval?.line ?? null,
  });
}

/** The step loop; a non-finite step with onNonfinite "stop" ends the run with ERR_NONFINITE. */
async function runSteps(running: Running): Promise<StepsDone> {
  const { plan, emit, signal, stream } = running;
  const { run, model, adapter, data, lr, start, todo } = plan;
  const t0 = performance.now();
  const progress: Progress = {
    lastSaved: plan.resumeFrom ? start : -1,
    lastLoss: plan.resumeFrom?.trainer.loss ?? null,
    skippedSteps: 0,
  };
  const schedule = { lr, warmup: run.warmup, steps: run.steps, schedule: run.schedule };
  if (todo > 0) emit({ type: "compiling" });
  const result = await trainLoRA({
    base: { config: model.llama, weights: model.base },
    adapter: { layout: adapter.layout, weights: adapter.lora },
    ...(adapter.optimizer ? { optimizer: adapter.optimizer } : {}),
    policy: model.policy,
    adamw: { lr, beta1: 0.9, beta2: 0.999, eps: 1e-8, weightDecay: run.weightDecay },
    lr: (n) => lrAt(n, schedule),
    batches: stream,
    maxSteps: todo,
    ...(signal ? { signal } : {}),
    seed: run.seed,
    ...(plan.lossChunk !== undefined ? { lossChunk: plan.lossChunk } : {}),
    onNonfinite: run.onNonfinite,
    attention: plan.attention,
    ...(plan.memory?.remat ? { remat: plan.memory.remat } : {}),
    ...(plan.memory?.mlpChunk ? { mlpChunk: plan.memory.mlpChunk } : {}),
    gradAccum: run.gradAccum,
    maxGradNorm: run.maxGradNorm,
    ...(data.eval ? { evaluate: { batches: evalSet(plan), at: (step: number) => evalDue(run, step) } } : {}),
    onStep: stepHandler(running, progress, t0),
  });
  if (result.nonfinite)
    throw nonfiniteError(result.nonfinite, progress.lastSaved > 0 ? checkpointDir(run.out, progress.lastSaved) : null);
  return { result, progress, t0 };
}

/** The eval records as batches of --batch rows (unpacked: the mean over their tokens does not depend on it). */
function evalSet(plan: RunPlan): HostBatch[] {
  return evalBatches(plan.data.eval!.records, plan.run.batch, plan.data.seq, plan.run.padId);
}

/** --eval-every n: every n steps and after the last; left out: after the last only; 0: never. */
function evalDue(run: TrainConfig, step: number): boolean {
  if (run.evalEvery === 0) return false;
  return step === run.steps || (run.evalEvery !== null && step % run.evalEvery === 0);
}

/** After each step: a metrics.jsonl line, a step event, and every saveEvery steps a checkpoint. */
function stepHandler({ plan, out, emit, signal }: Running, progress: Progress, t0: number) {
  const { run, start } = plan;
  const tokensPerStep = run.batch * run.gradAccum * plan.data.seq;
  const stopMode = run.onNonfinite === "stop";
  return async (info: StepInfo, ctl: { snapshot: () => Promise<TrainState<HostTensor>> }) => {
    const elapsed = (performance.now() - t0) / 1000;
    const first = info.step === start + 1;
    if (first) emit({ type: "compiled", seconds: info.seconds });
    // A non-finite step that stops the run writes nothing: the last checkpoint, metrics and adapter stay as they were.
    if (info.nonfinite && stopMode) return;
    await out.replaceEarlierRun();
    if (info.nonfinite) progress.skippedSteps++;
    else progress.lastLoss = info.loss;
    const { skippedSteps } = progress;
    const record = {
      step: info.step,
      loss: info.loss,
      lr: info.lr,
      grad_norm: info.gradNorm,
      tokens: tokensPerStep,
      step_seconds: +info.seconds.toFixed(4),
      elapsed_seconds: +elapsed.toFixed(3),
      ...(info.nonfinite ? { skipped: true } : {}),
      skipped_steps: skippedSteps,
      ...(info.eval ? { eval_loss: info.eval.loss, eval_perplexity: info.eval.perplexity } : {}),
    };
    await appendFile(out.metricsFile, `${JSON.stringify(record)}\n`).catch((e) => {
      throw fsError(e, out.metricsFile, "append to");
    });
    const log = first || info.step % run.logEvery === 0 || info.step === run.steps || !!signal?.aborted;
    const { step, loss, lr, gradNorm, seconds } = info;
    emit({
      type: "step",
      step,
      steps: run.steps,
      loss,
      lr,
      gradNorm,
      seconds,
      elapsed,
      tokens: tokensPerStep,
      first,
      log,
      skipped: info.nonfinite,
      skippedSteps,
      ...(info.eval ? { eval: info.eval } : {}),
    });
    if (run.saveEvery > 0 && info.step % run.saveEvery === 0 && info.step !== run.steps && !signal?.aborted) {
      const dir = await out.save(await ctl.snapshot(), info.step, progress.lastLoss);
      progress.lastSaved = info.step;
      emit({ type: "checkpoint", step: info.step, dir });
    }
  };
}

/** The last checkpoint (unless that step was just saved) and, unless stopped early, the final PEFT adapter. */
async function saveOutputs({ plan, out, emit }: Running, { result, progress, t0 }: StepsDone): Promise<TrainRunResult> {
  const { run, model, adapter, start } = plan;
  const outDir = run.out;
  await out.replaceEarlierRun();
  const end = start + result.losses.length;
  const seconds = (performance.now() - t0) / 1000;
  let ckpt = checkpointDir(outDir, end);
  if (end !== progress.lastSaved) ckpt = await out.save(result.state, end, progress.lastLoss);
  const plot = await writeRunPlot(outDir, out.metricsFile);
  const common = {
    plot,
    startStep: start,
    step: end,
    steps: run.steps,
    losses: result.losses,
    skippedSteps: progress.skippedSteps,
    seconds,
    out: outDir,
    checkpoint: ckpt,
    metrics: out.metricsFile,
  };
  if (result.stopped) {
    const r: TrainRunResult = { status: "stopped", ...common, adapter: null };
    emit({ type: "done", result: r });
    return r;
  }
  const adapterDir = join(outDir, "adapter");
  const peft = loraToAdapter(adapter.layout, result.state.lora, model.llama);
  await saveAdapter(adapterDir, peft, model.llama).catch((e) => {
    throw fsError(e, adapterDir, "write the adapter");
  });
  const r: TrainRunResult = { status: "done", ...common, adapter: adapterDir };
  emit({ type: "done", result: r });
  return r;
}

/** loss.svg in --out from the whole metrics.jsonl (earlier runs resumed from included); null with nothing to draw. */
async function writeRunPlot(outDir: string, metricsFile: string): Promise<string | null> {
  const text = await readFile(metricsFile, "utf8").catch(() => undefined);
  if (text === undefined) return null;
  const curves = parseMetrics(text, metricsFile);
  if (curves.train.length === 0 && curves.eval.length === 0) return null;
  const file = join(outDir, LOSS_PLOT_FILE);
  await writeLossSvg(file, curves);
  return file;
}

/** The ERR_NONFINITE error: which step, whether the loss or the gradients, NaN or Inf, and what was kept. */
function nonfiniteError(info: StepInfo, lastCheckpoint: string | null): TesseraError {
  const kind = (x: number) => (Number.isNaN(x) ? "NaN" : "Inf");
  const what = !Number.isFinite(info.loss)
    ? `the loss is ${kind(info.loss)}`
    : `the gradients are non-finite (gradient norm ${kind(info.gradNorm)}, loss ${info.loss.toFixed(4)})`;
  const kept = lastCheckpoint ? `last checkpoint: ${displayPath(lastCheckpoint)}` : "no checkpoint yet";
  return new TesseraError(
    `non-finite training at step ${info.step}: ${what}. The run stopped without applying or writing that step (${kept}; the adapter was not written). ` +
      "Lower --lr, check the base weights and the adapter for NaN/Inf, or pass --on-nonfinite skip to skip such updates",
    { code: "ERR_NONFINITE" },
  );
}
