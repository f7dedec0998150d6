// The training run as a library: train(config) reads the model, adapter and data, trains, and writes checkpoints, metrics and a PEFT adapter, reporting progress as events.
import { appendFile, readFile, stat } from "node:fs/promises";
import { join, resolve } from "node:path";
import { displayPath } from "../cli/diagnostics.ts";
import { EXIT, TesseraError } from "../errors.ts";
import { defaultClient } from "../frontend/array.ts";
import { defaultAttention } from "../../models/attention.ts";
import { writeAll, writeFileAtomic } from "../formats/atomic.ts";
import type { HostTensor } from "../formats/host_tensor.ts";
import { linearFeatures, LLAMA_LINEARS, type LlamaConfig } from "../formats/hf_config.ts";
import { ADAPTER_CONFIG_FILE, loadAdapter, makeLoraConfig, saveAdapter } from "../formats/peft.ts";
import { BatchStream, prepareRecords } from "../data/batches.ts";
import { loadJsonl } from "../data/jsonl.ts";
import type { TrainRecord } from "../data/records.ts";
import { keyValueTask, MIN_SEQ } from "../data/synthetic.ts";
import { fsError } from "../host/fs_errors.ts";
import { LLAMA_TINY, type LlamaWeights } from "../../models/llama.ts";
import {
  initLora,
  loraFromAdapter,
  loraLayout,
  loraToAdapter,
  type LoraLayout,
  type LoraWeights,
} from "../../models/lora.ts";
import { loadLlamaWeights } from "../../models/weights.ts";
import {
  checkpointDir,
  listCheckpoints,
  loadCheckpoint,
  readTrainerState,
  saveCheckpoint,
  type TrainerState,
} from "./checkpoint.ts";
import {
  DEFAULTS,
  flagName,
  givenFields,
  parseTrainConfig,
  RUN_FIELDS,
  type RunField,
  type TrainConfig,
  type TrainConfigInput,
} from "./config.ts";
import { builtinBaseWeights, trainLoRA, type OptimizerState, type StepInfo } from "./loop.ts";
import { clearRun, lockOutDir, type OutDir } from "./out_dir.ts";
import { baseHostDType, precisionPolicy } from "./precision.ts";
import { lrAt } from "./schedule.ts";
import type { TrainState } from "./step.ts";

/** Seed of the built-in tiny model's random weights: fixed, so every run (and --seed) trains the same base. */
export const BUILTIN_MODEL_SEED = 0;
/** Records in the built-in synthetic data set. */
export const SYNTHETIC_RECORDS = 1024;

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
      attention: "plain" | "blockwise";
      out: string;
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
}

export interface TrainRunOptions {
  onEvent?: (e: TrainEvent) => void;
  /** Aborting it ends the run after the step in progress, with a checkpoint (status "stopped"). */
  signal?: AbortSignal;
}

function trainableParams(layout: LoraLayout, llama: LlamaConfig): number {
  const f = linearFeatures(llama);
  let n = 0;
  for (const m of layout.modules) for (const r of layout.ranks[m]!) n += r * (f[m].in + f[m].out);
  return n;
}

const fmtInt = (n: number) => n.toLocaleString("en-US");
const fail = (message: string) => new TesseraError(message, { code: "ERR_TRAIN" });
/** A value that only turns out wrong against the model or data (e.g. --pad-id): a usage error, as if the option were malformed. */
const badOption = (message: string) => new TesseraError(message, { code: "ERR_USAGE", exitCode: EXIT.usage });

/** The run fields as stored in trainer_state.json, keyed by option name (resolved values, so a resume sees exactly what ran). */
function runRecord(r: TrainConfig): Record<string, string | number | boolean | null> {
  const v: Record<RunField, string | number | boolean | null> = {
    model: r.model === null ? null : resolve(r.model),
    adapter: r.adapter === null ? null : resolve(r.adapter),
    targets: canonicalTargets(r.targets).join(","),
    rank: r.rank,
    alpha: r.alpha,
    dropout: r.dropout,
    data: r.data === null ? null : resolve(r.data),
    seq: r.seq,
    batch: r.batch,
    lr: r.lr,
    weightDecay: r.weightDecay,
    warmup: r.warmup,
    schedule: r.schedule,
    precision: r.precision,
    seed: r.seed,
    padId: r.padId,
  };
  return Object.fromEntries(RUN_FIELDS.map((k) => [flagName(k).slice(2), v[k]]));
}

const canonicalTargets = (t: readonly string[]) => LLAMA_LINEARS.filter((m) => t.includes(m));

/**
 * On resume the checkpoint's options are the run's options; one given again must agree (a different rank or
 * data set cannot continue the same run). steps, saveEvery and logEvery may change.
 */
function mergeResumed(r: TrainConfig, given: ReadonlySet<string>, saved: TrainerState, file: string): TrainConfig {
  const now = runRecord(r);
  for (const field of RUN_FIELDS) {
    if (!given.has(field)) continue;
    const k = flagName(field).slice(2);
    if (JSON.stringify(now[k]) !== JSON.stringify(saved.options[k] ?? null)) {
      const was =
        saved.options[k] === null || saved.options[k] === undefined ? "its default" : String(saved.options[k]);
      throw fail(
        `--${k} ${now[k]} differs from the run being resumed (${was}, in ${displayPath(file)}); leave --${k} out to continue that run`,
      );
    }
  }
  const s = saved.options;
  const str = (k: string) => (s[k] === null || s[k] === undefined ? null : String(s[k]));
  const num = (k: string) => Number(s[k]);
  return {
    ...r,
    model: str("model"),
    adapter: str("adapter"),
    targets: canonicalTargets(String(s.targets).split(",")),
    rank: num("rank"),
    alpha: num("alpha"),
    dropout: num("dropout"),
    data: str("data"),
    seq: s.seq === null ? null : num("seq"),
    batch: num("batch"),
    lr: s.lr === null ? null : num("lr"),
    weightDecay: num("weight-decay"),
    warmup: num("warmup"),
    schedule: s.schedule === "constant" ? "constant" : "cosine",
    precision: s.precision === "bf16" ? "bf16" : s.precision === "f32" ? "f32" : null,
    seed: num("seed"),
    padId: num("pad-id"),
  };
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
  const bytes = new TextEncoder().encode(keep.map((l) => l + "\n").join(""));
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

async function runLocked(
  run: TrainConfig,
  given: ReadonlySet<string>,
  lock: OutDir,
  emit: (e: TrainEvent) => void,
  signal: AbortSignal | undefined,
): Promise<TrainRunResult> {
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

  // ---- everything is read and checked before anything is written -------------------------------------------------
  let resumeFrom: { dir: string; trainer: TrainerState } | undefined;
  if (run.resume) {
    const all = await listCheckpoints(outDir);
    const last = all[all.length - 1];
    if (!last)
      throw fail(
        `--resume: no checkpoint in ${displayPath(join(outDir, "checkpoints"))} (train without --resume first, or point --out at an earlier run)`,
      );
    const trainer = await readTrainerState(last.dir);
    run = mergeResumed(run, given, trainer, join(last.dir, "trainer_state.json"));
    resumeFrom = { dir: last.dir, trainer };
  }

  // The model.
  let llama: LlamaConfig, base: LlamaWeights<HostTensor>, modelLine: string;
  const builtin = run.model === null;
  const precision = run.precision ?? (builtin ? DEFAULTS.builtin.precision : DEFAULTS.checkpoint.precision);
  const policy = precisionPolicy(precision);
  if (builtin) {
    llama = LLAMA_TINY;
    base = builtinBaseWeights(llama, BUILTIN_MODEL_SEED, baseHostDType(policy) === "BF16" ? "BF16" : "F32");
    modelLine = `built-in tiny Llama (${llama.numLayers} layers, hidden ${llama.hiddenSize}, vocab ${llama.vocabSize}), seeded random weights (seed ${BUILTIN_MODEL_SEED}); --model <dir> trains a Hugging Face checkpoint`;
  } else {
    const st = await stat(run.model!).catch(() => undefined);
    if (!st)
      throw fail(
        `--model ${run.model}: no such directory (expected a Hugging Face Llama checkpoint: config.json + *.safetensors)`,
      );
    if (!st.isDirectory())
      throw fail(
        `--model ${run.model}: not a directory (expected a Hugging Face Llama checkpoint: config.json + *.safetensors)`,
      );
    ({ config: llama, weights: base } = await loadLlamaWeights(run.model!, { dtype: baseHostDType(policy) }));
    modelLine = `${displayPath(resolve(run.model!))} (Llama, ${llama.numLayers} layers, hidden ${llama.hiddenSize}, vocab ${llama.vocabSize}), ${precision}`;
  }
  const maxSeq = llama.maxPositionEmbeddings;

  // The adapter.
  let layout: LoraLayout, lora: LoraWeights<HostTensor>, optimizer: OptimizerState | undefined, adapterLine: string;
  const targets = canonicalTargets(run.targets);
  if (resumeFrom) {
    const c = await loadCheckpoint(resumeFrom.dir, llama);
    ({ layout, lora, optimizer } = c);
    adapterLine = `resumed from ${displayPath(resumeFrom.dir)} (step ${c.trainer.step})`;
  } else if (run.adapter !== null) {
    const cfgFile = join(run.adapter, ADAPTER_CONFIG_FILE);
    if (!(await stat(cfgFile).catch(() => undefined)))
      throw fail(`--adapter ${run.adapter}: ${ADAPTER_CONFIG_FILE} not found (expected a PEFT LoRA adapter directory)`);
    ({ layout, weights: lora } = loraFromAdapter(await loadAdapter(run.adapter, llama), llama, cfgFile));
    const c = layout.config;
    const conflicts: [string, unknown, unknown][] = [
      ["rank", run.rank, c.r],
      ["alpha", run.alpha, c.loraAlpha],
      ["dropout", run.dropout, c.loraDropout],
      ["targets", targets.join(","), layout.modules.join(",")],
    ];
    for (const [k, mine, theirs] of conflicts) {
      if (given.has(k) && mine !== theirs)
        throw fail(
          `--${k} ${mine} conflicts with ${displayPath(cfgFile)} (${theirs}); an existing adapter keeps its shape, leave --${k} out`,
        );
    }
    adapterLine = `from ${displayPath(run.adapter)}: LoRA r ${c.r}, alpha ${c.loraAlpha}, dropout ${c.loraDropout} on ${layout.modules.join(",")}`;
  } else {
    const config = makeLoraConfig({
      r: run.rank,
      loraAlpha: run.alpha,
      loraDropout: run.dropout,
      targetModules: targets.map((m) => `${m}_proj`),
      baseModelNameOrPath: builtin ? null : resolve(run.model!),
    });
    layout = loraLayout(config, llama);
    lora = initLora(layout, llama, run.seed);
    adapterLine = `new LoRA r ${run.rank}, alpha ${run.alpha}, dropout ${run.dropout} on ${layout.modules.join(",")}`;
  }
  const nTrainable = trainableParams(layout, llama);
  adapterLine += ` (${fmtInt(nTrainable)} trainable parameters)`;

  // The data.
  let records: TrainRecord[],
    dataLine: string,
    sha256: string | null = null,
    source: string;
  if (run.padId >= llama.vocabSize)
    throw badOption(`--pad-id ${run.padId} is outside the model's vocabulary (0..${llama.vocabSize - 1})`);
  if (run.data !== null) {
    const loaded = await loadJsonl(run.data, { vocabSize: llama.vocabSize });
    records = loaded.records;
    sha256 = loaded.sha256;
    source = resolve(run.data);
    const longest = records.reduce((m, r) => Math.max(m, r.ids.length), 0);
    run.seq ??= Math.min(maxSeq, Math.ceil(longest / 8) * 8);
    dataLine = `${displayPath(run.data)}: ${fmtInt(records.length)} records`;
  } else {
    run.seq ??= Math.min(maxSeq, builtin ? DEFAULTS.builtin.seq : DEFAULTS.checkpoint.seq);
    if (run.seq < MIN_SEQ)
      throw badOption(`--seq ${run.seq} is too short for the built-in task (at least ${MIN_SEQ}); or give --data`);
    const task = keyValueTask({ vocabSize: llama.vocabSize, seq: run.seq, records: SYNTHETIC_RECORDS, seed: run.seed });
    records = task.records;
    source = `synthetic key-value lookup, seed ${run.seed}`;
    dataLine = `built-in key -> value lookup (seed ${run.seed}): ${fmtInt(records.length)} records of ${task.pairs} key/value pairs, then a key; loss on its value only; --data <file.jsonl> for your own`;
  }
  const seq = run.seq;
  if (seq > maxSeq)
    throw fail(
      `--seq ${seq} exceeds the model's max_position_embeddings ${maxSeq}${builtin ? " (built-in tiny Llama)" : ` (${displayPath(join(run.model!, "config.json"))})`}`,
    );
  const prepared = prepareRecords(records, seq);
  if (prepared.records.length === 0) {
    throw fail(
      `${run.data ?? "data"}: no record has a label to learn within --seq ${seq} (labels are all -100, or only on the first token)`,
    );
  }
  if (prepared.truncated > 0) dataLine += `; ${prepared.truncated} cut to --seq ${seq}`;
  if (prepared.dropped.length > 0) {
    dataLine += `; ${prepared.dropped.length} skipped with nothing to learn within --seq (${prepared.dropped.slice(0, 3).join(", ")}${prepared.dropped.length > 3 ? ", ..." : ""})`;
  }
  if (resumeFrom) {
    const d = resumeFrom.trainer.data;
    if (d.sha256 !== sha256 || d.records !== prepared.records.length) {
      throw fail(
        `${run.data ?? "the data"} is not the data the run being resumed read (${d.source}: ${d.records} records${d.sha256 ? `, sha256 ${d.sha256.slice(0, 12)}` : ""}); an exact continuation needs the same data`,
      );
    }
  }

  if (run.attention === "cudnn") {
    // cuDNN's fused attention exists only on the CUDA backend, and Tessera has no lowering to it yet.
    const client = await defaultClient();
    throw badOption(
      `--attention cudnn needs cuDNN on a CUDA backend, but this run's backend is PJRT ${client.platformName} (${client.platform}); and Tessera has no cuDNN lowering yet: use --attention plain or blockwise`,
    );
  }
  const attention = run.attention ?? defaultAttention(seq);
  const lr = run.lr ?? (builtin ? DEFAULTS.builtin.lr : DEFAULTS.checkpoint.lr);
  const schedule = { lr, warmup: run.warmup, steps: run.steps, schedule: run.schedule };
  const start = optimizer?.step ?? 0;
  const todo = Math.max(0, run.steps - start);
  const stored: TrainerState["options"] = { ...runRecord(run), seq, lr, precision };

  // ---- from here on, --out is written ----------------------------------------------------------------------------
  const metricsFile = join(outDir, "metrics.jsonl");
  if (resumeFrom) await trimMetrics(metricsFile, start);
  // --overwrite: the earlier run stays until this one has taken a step (or is about to write its results).
  let replaced = run.resume || lock.existing.length === 0;
  const replaceEarlierRun = async () => {
    if (replaced) return;
    replaced = true;
    await clearRun(outDir);
    emit({ type: "note", message: `removed the earlier run in ${displayPath(outDir)} (--overwrite)` });
  };

  emit({
    type: "start",
    model: modelLine,
    adapter: adapterLine,
    data: dataLine,
    trainableParams: nTrainable,
    steps: run.steps,
    startStep: start,
    batch: run.batch,
    seq,
    lr,
    warmup: run.warmup,
    schedule: run.schedule,
    weightDecay: run.weightDecay,
    precision,
    seed: run.seed,
    attention,
    out: outDir,
  });

  const stream = new BatchStream(prepared.records, {
    batch: run.batch,
    seq,
    padId: run.padId,
    seed: run.seed,
    start: resumeFrom?.trainer.data.examplesSeen ?? 0,
  });
  const tokensPerStep = run.batch * seq;
  const trainerAt = (step: number, loss: number | null): TrainerState => {
    const n = prepared.records.length;
    const seen = (resumeFrom?.trainer.data.examplesSeen ?? 0) + (step - start) * run.batch;
    return {
      format: "tessera-train-state",
      version: 1,
      step,
      seed: run.seed,
      data: { examplesSeen: seen, epoch: Math.floor(seen / n), index: seen % n, records: n, source, sha256 },
      options: stored,
      loss,
    };
  };
  const save = async (state: TrainState<HostTensor>, step: number, loss: number | null): Promise<string> => {
    try {
      return await saveCheckpoint(outDir, { llama, layout, state, trainer: trainerAt(step, loss) });
    } catch (e) {
      throw fsError(e, checkpointDir(outDir, step), "write the checkpoint");
    }
  };

  const t0 = performance.now();
  let lastSaved = resumeFrom ? start : -1;
  let lastLoss: number | null = resumeFrom?.trainer.loss ?? null;
  let skippedSteps = 0;
  const stopMode = run.onNonfinite === "stop";

  const onStep = async (info: StepInfo, ctl: { snapshot: () => Promise<TrainState<HostTensor>> }) => {
    const elapsed = (performance.now() - t0) / 1000;
    const first = info.step === start + 1;
    if (first) emit({ type: "compiled", seconds: info.seconds });
    // A non-finite step that stops the run writes nothing: the last checkpoint, metrics and adapter stay as they were.
    if (info.nonfinite && stopMode) return;
    await replaceEarlierRun();
    if (info.nonfinite) skippedSteps++;
    else lastLoss = info.loss;
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
    };
    await appendFile(metricsFile, JSON.stringify(record) + "\n").catch((e) => {
      throw fsError(e, metricsFile, "append to");
    });
    const log = first || info.step % run.logEvery === 0 || info.step === run.steps || !!signal?.aborted;
    emit({
      type: "step",
      step: info.step,
      steps: run.steps,
      loss: info.loss,
      lr: info.lr,
      gradNorm: info.gradNorm,
      seconds: info.seconds,
      elapsed,
      tokens: tokensPerStep,
      first,
      log,
      skipped: info.nonfinite,
      skippedSteps,
    });
    if (run.saveEvery > 0 && info.step % run.saveEvery === 0 && info.step !== run.steps && !signal?.aborted) {
      const dir = await save(await ctl.snapshot(), info.step, lastLoss);
      lastSaved = info.step;
      emit({ type: "checkpoint", step: info.step, dir });
    }
  };

  if (todo > 0) emit({ type: "compiling" });
  const result = await trainLoRA({
    base: { config: llama, weights: base },
    adapter: { layout, weights: lora },
    ...(optimizer ? { optimizer } : {}),
    policy,
    adamw: { lr, beta1: 0.9, beta2: 0.999, eps: 1e-8, weightDecay: run.weightDecay },
    lr: (n) => lrAt(n, schedule),
    batches: stream,
    maxSteps: todo,
    ...(signal ? { signal } : {}),
    seed: run.seed,
    onNonfinite: run.onNonfinite,
    attention,
    onStep,
  });
  if (result.nonfinite) throw nonfiniteError(result.nonfinite, lastSaved > 0 ? checkpointDir(outDir, lastSaved) : null);

  await replaceEarlierRun();
  const end = start + result.losses.length;
  const seconds = (performance.now() - t0) / 1000;
  let ckpt = checkpointDir(outDir, end);
  if (end !== lastSaved) ckpt = await save(result.state, end, lastLoss);
  const common = {
    startStep: start,
    step: end,
    steps: run.steps,
    losses: result.losses,
    skippedSteps,
    seconds,
    out: outDir,
    checkpoint: ckpt,
    metrics: metricsFile,
  };
  if (result.stopped) {
    const r: TrainRunResult = { status: "stopped", ...common, adapter: null };
    emit({ type: "done", result: r });
    return r;
  }
  const adapterDir = join(outDir, "adapter");
  await saveAdapter(adapterDir, loraToAdapter(layout, result.state.lora, llama), llama).catch((e) => {
    throw fsError(e, adapterDir, "write the adapter");
  });
  const r: TrainRunResult = { status: "done", ...common, adapter: adapterDir };
  emit({ type: "done", result: r });
  return r;
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
