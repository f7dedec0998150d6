// `tessera train`: LoRA fine-tuning from the command line: model, adapter and data in; progress, metrics, checkpoints and a PEFT adapter out.
import { appendFile, mkdir, readFile, rm, stat } from "node:fs/promises";
import { join, resolve } from "node:path";
import { UsageError, type ParsedArgs } from "./args.ts";
import { displayPath } from "./diagnostics.ts";
import { writeAll, writeFileAtomic } from "../formats/atomic.ts";
import { FormatError } from "../formats/errors.ts";
import type { HostTensor } from "../formats/host_tensor.ts";
import { linearFeatures, LLAMA_LINEARS, type LlamaConfig, type LlamaLinear } from "../formats/hf_config.ts";
import { ADAPTER_CONFIG_FILE, ADAPTER_WEIGHTS_FILE, loadAdapter, makeLoraConfig, saveAdapter } from "../formats/peft.ts";
import { BatchStream, prepareRecords } from "../data/batches.ts";
import { loadJsonl } from "../data/jsonl.ts";
import { DataError, type TrainRecord } from "../data/records.ts";
import { keyValueTask, MIN_SEQ } from "../data/synthetic.ts";
import { LLAMA_TINY, type LlamaWeights } from "../../models/llama.ts";
import { initLora, loraFromAdapter, loraLayout, loraToAdapter, type LoraLayout, type LoraWeights } from "../../models/lora.ts";
import { loadLlamaWeights } from "../../models/weights.ts";
import { checkpointDir, clearCheckpoints, listCheckpoints, loadCheckpoint, readTrainerState, saveCheckpoint, type TrainerState } from "../train/checkpoint.ts";
import { builtinBaseWeights, trainLoRA, type OptimizerState, type StepInfo } from "../train/loop.ts";
import { baseHostDType, precisionPolicy } from "../train/precision.ts";
import type { TrainState } from "../train/step.ts";

/** Exit code after Ctrl-C: 128 + SIGINT, as shells report it. */
export const EXIT_INTERRUPTED = 130;

/** Seed of the built-in tiny model's random weights: fixed, so every run (and --seed) trains the same base. */
export const BUILTIN_MODEL_SEED = 0;
/** Records in the built-in synthetic data set. */
export const SYNTHETIC_RECORDS = 1024;

/**
 * Defaults that depend on the model: the built-in tiny model trains in f32 at a high learning rate (tiny, random,
 * CPU: bf16 would only add noise, and XLA's CPU backend is not faster in it); a real checkpoint trains in bf16
 * (f32 LoRA masters and optimizer state) at a usual LoRA learning rate.
 */
export const DEFAULTS = {
  builtin: { lr: 1e-2, precision: "f32", seq: 64 },
  checkpoint: { lr: 2e-4, precision: "bf16", seq: 512 },
  common: { targets: "q,k,v,o,gate,up,down", rank: 8, alpha: 16, dropout: 0, batch: 8, steps: 60, weightDecay: 0, warmup: 0, schedule: "cosine", seed: 0, out: "tessera-out", saveEvery: 100, logEvery: 10, padId: 0 },
} as const;

/** Options that define a run: fixed when resuming (given again, they must agree with the checkpoint). */
const RUN_OPTIONS = ["model", "adapter", "targets", "rank", "alpha", "dropout", "data", "seq", "batch", "lr", "weight-decay", "warmup", "schedule", "precision", "seed", "pad-id"] as const;
type RunOption = (typeof RUN_OPTIONS)[number];

/** The learning rate of 1-based step n: linear warm-up to `lr` over `warmup` steps, then constant or cosine to 0 at `steps`. */
export function lrAt(n: number, s: { lr: number; warmup: number; steps: number; schedule: "cosine" | "constant" }): number {
  if (n <= s.warmup) return (s.lr * n) / s.warmup;
  if (s.schedule === "constant") return s.lr;
  const progress = (n - s.warmup - 1) / Math.max(1, s.steps - s.warmup);
  return s.lr * 0.5 * (1 + Math.cos(Math.PI * Math.min(1, progress)));
}

interface Io {
  out: (s: string) => void;
  err: (s: string) => void;
  /** A live status line is drawn (and erased) only on a terminal. */
  tty: boolean;
}

const defaultIo = (): Io => ({
  out: (s) => process.stdout.write(s),
  err: (s) => process.stderr.write(s),
  tty: !!process.stdout.isTTY && process.env.TERM !== "dumb",
});

/** A bad value on the command line: exit 2, as every usage error. */
function usage(msg: string): never {
  throw new UsageError(msg, "train");
}

function parseNumber(name: string, text: string, kind: "int" | "float", min: number, max = Infinity): number {
  const v = Number(text);
  const ok = text.trim() !== "" && Number.isFinite(v) && (kind === "float" || Number.isInteger(v)) && v >= min && v <= max;
  if (!ok) {
    const range = max === Infinity ? `>= ${min}` : `in [${min}, ${max}]`;
    usage(`--${name} must be ${kind === "int" ? "an integer" : "a number"} ${range}; got '${text}'`);
  }
  return v;
}

function parseTargets(text: string): LlamaLinear[] {
  const out: LlamaLinear[] = [];
  for (const raw of text.split(",")) {
    const t = raw.trim().replace(/_proj$/, "");
    if (!(LLAMA_LINEARS as readonly string[]).includes(t)) usage(`--targets: '${raw}' is not one of ${LLAMA_LINEARS.join(", ")}`);
    if (!out.includes(t as LlamaLinear)) out.push(t as LlamaLinear);
  }
  return LLAMA_LINEARS.filter((m) => out.includes(m));
}

/** A resolved run: every option with its value, and which the user typed. */
interface Run {
  model: string | null;
  adapter: string | null;
  targets: LlamaLinear[];
  rank: number;
  alpha: number;
  dropout: number;
  data: string | null;
  seq: number | null;
  batch: number;
  lr: number | null;
  weightDecay: number;
  warmup: number;
  schedule: "cosine" | "constant";
  precision: "f32" | "bf16" | null;
  seed: number;
  padId: number;
  steps: number;
  out: string;
  saveEvery: number;
  logEvery: number;
  resume: boolean;
}

function parseRun(o: ReadonlyMap<string, string>): Run {
  const c = DEFAULTS.common;
  const get = (k: string) => o.get(k);
  const int = (k: string, d: number, min: number) => (get(k) === undefined ? d : parseNumber(k, get(k)!, "int", min));
  const float = (k: string, d: number, min: number, max = Infinity) => (get(k) === undefined ? d : parseNumber(k, get(k)!, "float", min, max));
  const schedule = get("schedule") ?? c.schedule;
  if (schedule !== "cosine" && schedule !== "constant") usage(`--schedule must be cosine or constant; got '${schedule}'`);
  const precision = get("precision") ?? null;
  if (precision !== null && precision !== "f32" && precision !== "bf16") usage(`--precision must be f32 or bf16; got '${precision}'`);
  const lr = get("lr") === undefined ? null : parseNumber("lr", get("lr")!, "float", 0);
  return {
    model: get("model") ?? null,
    adapter: get("adapter") ?? null,
    targets: parseTargets(get("targets") ?? c.targets),
    rank: int("rank", c.rank, 1),
    alpha: float("alpha", c.alpha, Number.MIN_VALUE),
    dropout: float("dropout", c.dropout, 0, 0.99),
    data: get("data") ?? null,
    seq: get("seq") === undefined ? null : parseNumber("seq", get("seq")!, "int", 2),
    batch: int("batch", c.batch, 1),
    lr,
    weightDecay: float("weight-decay", c.weightDecay, 0),
    warmup: int("warmup", c.warmup, 0),
    schedule,
    precision: precision as Run["precision"],
    seed: int("seed", c.seed, 0),
    padId: int("pad-id", c.padId, 0),
    steps: int("steps", c.steps, 0),
    out: get("out") ?? c.out,
    saveEvery: int("save-every", c.saveEvery, 0),
    logEvery: int("log-every", c.logEvery, 1),
    resume: o.has("resume"),
  };
}

/** The run options as stored in trainer_state.json (resolved values, so a resume sees exactly what ran). */
function runRecord(r: Run): Record<RunOption, string | number | boolean | null> {
  return {
    model: r.model === null ? null : resolve(r.model),
    adapter: r.adapter === null ? null : resolve(r.adapter),
    targets: r.targets.join(","),
    rank: r.rank,
    alpha: r.alpha,
    dropout: r.dropout,
    data: r.data === null ? null : resolve(r.data),
    seq: r.seq,
    batch: r.batch,
    lr: r.lr,
    "weight-decay": r.weightDecay,
    warmup: r.warmup,
    schedule: r.schedule,
    precision: r.precision,
    seed: r.seed,
    "pad-id": r.padId,
  };
}

/**
 * On --resume the checkpoint's options are the run's options; one given again on the command line must agree
 * (a different rank or data set cannot continue the same run). --steps, --save-every and --log-every may change.
 */
function mergeResumed(r: Run, given: ReadonlyMap<string, string>, saved: TrainerState, file: string): Run {
  const now = runRecord(r);
  for (const k of RUN_OPTIONS) {
    if (!given.has(k)) continue;
    if (JSON.stringify(now[k]) !== JSON.stringify(saved.options[k] ?? null)) {
      const was = saved.options[k] === null || saved.options[k] === undefined ? "its default" : String(saved.options[k]);
      throw new CliFail(`--${k} ${given.get(k)} differs from the run being resumed (${was}, in ${displayPath(file)}); leave --${k} out to continue that run`);
    }
  }
  const s = saved.options;
  const str = (k: RunOption) => (s[k] === null || s[k] === undefined ? null : String(s[k]));
  const num = (k: RunOption) => Number(s[k]);
  return {
    ...r,
    model: str("model"),
    adapter: str("adapter"),
    targets: parseTargets(String(s.targets)),
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

/** A user-facing failure (bad file, bad data, mismatched options): `error: <message>`, exit 1. */
class CliFail extends Error {}

const fmtInt = (n: number) => n.toLocaleString("en-US");
const fmtLr = (x: number) => x.toExponential(2);
const fmtSec = (s: number) => (s < 100 ? `${s.toFixed(1)}s` : `${Math.floor(s / 60)}m${String(Math.round(s % 60)).padStart(2, "0")}s`);
const fmtRate = (x: number) => (x >= 1e6 ? `${(x / 1e6).toFixed(2)}M` : x >= 1e3 ? `${(x / 1e3).toFixed(1)}k` : x.toFixed(0));

function trainableParams(layout: LoraLayout, llama: LlamaConfig): number {
  const f = linearFeatures(llama);
  let n = 0;
  for (const m of layout.modules) for (const r of layout.ranks[m]!) n += r * (f[m].in + f[m].out);
  return n;
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
  await writeFileAtomic(file, (fh) => writeAll(fh, bytes));
}

/** `tessera train`. Returns the exit code: 0 done, 1 bad input (nothing written), 2 usage, 130 interrupted (checkpoint saved). */
export async function trainCommand(args: ParsedArgs, io: Io = defaultIo()): Promise<number> {
  try {
    return await train(args.options, io);
  } catch (e) {
    if (e instanceof CliFail || e instanceof DataError || e instanceof FormatError) {
      io.err(`error: ${e.message}\n`);
      return 1;
    }
    throw e;
  }
}

async function train(given: ReadonlyMap<string, string>, io: Io): Promise<number> {
  let run = parseRun(given);
  const outDir = run.out;

  // ---- everything is read and checked before anything is written -------------------------------------------------
  let resumeFrom: { dir: string; trainer: TrainerState } | undefined;
  if (run.resume) {
    const all = await listCheckpoints(outDir);
    const last = all[all.length - 1];
    if (!last) throw new CliFail(`--resume: no checkpoint in ${displayPath(join(outDir, "checkpoints"))} (train without --resume first, or point --out at an earlier run)`);
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
    if (!st) throw new CliFail(`--model ${run.model}: no such directory (expected a Hugging Face Llama checkpoint: config.json + *.safetensors)`);
    if (!st.isDirectory()) throw new CliFail(`--model ${run.model}: not a directory (expected a Hugging Face Llama checkpoint: config.json + *.safetensors)`);
    ({ config: llama, weights: base } = await loadLlamaWeights(run.model!, { dtype: baseHostDType(policy) }));
    modelLine = `${displayPath(resolve(run.model!))} (Llama, ${llama.numLayers} layers, hidden ${llama.hiddenSize}, vocab ${llama.vocabSize}), ${precision}`;
  }
  const maxSeq = llama.maxPositionEmbeddings;

  // The adapter.
  let layout: LoraLayout, lora: LoraWeights<HostTensor>, optimizer: OptimizerState | undefined, adapterLine: string;
  if (resumeFrom) {
    const c = await loadCheckpoint(resumeFrom.dir, llama);
    ({ layout, lora, optimizer } = c);
    adapterLine = `resumed from ${displayPath(resumeFrom.dir)} (step ${c.trainer.step})`;
  } else if (run.adapter !== null) {
    const cfgFile = join(run.adapter, ADAPTER_CONFIG_FILE);
    if (!(await stat(cfgFile).catch(() => undefined))) throw new CliFail(`--adapter ${run.adapter}: ${ADAPTER_CONFIG_FILE} not found (expected a PEFT LoRA adapter directory)`);
    ({ layout, weights: lora } = loraFromAdapter(await loadAdapter(run.adapter, llama), llama, cfgFile));
    const c = layout.config;
    const conflicts: [string, unknown, unknown][] = [["rank", run.rank, c.r], ["alpha", run.alpha, c.loraAlpha], ["dropout", run.dropout, c.loraDropout], ["targets", run.targets.join(","), layout.modules.join(",")]];
    for (const [k, mine, theirs] of conflicts) {
      if (given.has(k) && mine !== theirs) throw new CliFail(`--${k} ${given.get(k)} conflicts with ${displayPath(cfgFile)} (${theirs}); an existing adapter keeps its shape, leave --${k} out`);
    }
    adapterLine = `from ${displayPath(run.adapter)}: LoRA r ${c.r}, alpha ${c.loraAlpha}, dropout ${c.loraDropout} on ${layout.modules.join(",")}`;
  } else {
    const config = makeLoraConfig({
      r: run.rank,
      loraAlpha: run.alpha,
      loraDropout: run.dropout,
      targetModules: run.targets.map((m) => `${m}_proj`),
      baseModelNameOrPath: builtin ? null : resolve(run.model!),
    });
    layout = loraLayout(config, llama);
    lora = initLora(layout, llama, run.seed);
    adapterLine = `new LoRA r ${run.rank}, alpha ${run.alpha}, dropout ${run.dropout} on ${layout.modules.join(",")}`;
  }
  adapterLine += ` (${fmtInt(trainableParams(layout, llama))} trainable parameters)`;

  // The data.
  let records: TrainRecord[], dataLine: string, sha256: string | null = null, source: string;
  if (run.padId >= llama.vocabSize) usage(`--pad-id ${run.padId} is outside the model's vocabulary (0..${llama.vocabSize - 1})`);
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
    if (run.seq < MIN_SEQ) usage(`--seq ${run.seq} is too short for the built-in task (at least ${MIN_SEQ}); or give --data`);
    const task = keyValueTask({ vocabSize: llama.vocabSize, seq: run.seq, records: SYNTHETIC_RECORDS, seed: run.seed });
    records = task.records;
    source = `synthetic key-value lookup, seed ${run.seed}`;
    dataLine = `built-in key -> value lookup (seed ${run.seed}): ${fmtInt(records.length)} records of ${task.pairs} key/value pairs, then a key; loss on its value only; --data <file.jsonl> for your own`;
  }
  const seq = run.seq;
  if (seq > maxSeq) throw new CliFail(`--seq ${seq} exceeds the model's max_position_embeddings ${maxSeq}${builtin ? " (built-in tiny Llama)" : ` (${displayPath(join(run.model!, "config.json"))})`}`);
  const prepared = prepareRecords(records, seq);
  if (prepared.records.length === 0) {
    throw new CliFail(`${run.data ?? "data"}: no record has a label to learn within --seq ${seq} (labels are all -100, or only on the first token)`);
  }
  if (prepared.truncated > 0) dataLine += `; ${prepared.truncated} cut to --seq ${seq}`;
  if (prepared.dropped.length > 0) {
    dataLine += `; ${prepared.dropped.length} skipped with nothing to learn within --seq (${prepared.dropped.slice(0, 3).join(", ")}${prepared.dropped.length > 3 ? ", ..." : ""})`;
  }
  if (resumeFrom) {
    const d = resumeFrom.trainer.data;
    if (d.sha256 !== sha256 || d.records !== prepared.records.length) {
      throw new CliFail(`${run.data ?? "the data"} is not the data the run being resumed read (${d.source}: ${d.records} records${d.sha256 ? `, sha256 ${d.sha256.slice(0, 12)}` : ""}); an exact continuation needs the same data`);
    }
  }

  const lr = run.lr ?? (builtin ? DEFAULTS.builtin.lr : DEFAULTS.checkpoint.lr);
  const schedule = { lr, warmup: run.warmup, steps: run.steps, schedule: run.schedule };
  const start = optimizer?.step ?? 0;
  const todo = Math.max(0, run.steps - start);
  const stored: TrainerState["options"] = { ...runRecord(run), seq, lr, precision };

  // ---- from here on, --out is written ----------------------------------------------------------------------------
  await mkdir(outDir, { recursive: true });
  const metricsFile = join(outDir, "metrics.jsonl");
  if (resumeFrom) {
    await trimMetrics(metricsFile, start);
  } else {
    const removed = await clearCheckpoints(outDir);
    await rm(metricsFile, { force: true });
    if (removed > 0) io.out(`note: removed the checkpoints of an earlier run in ${displayPath(outDir)} (--resume continues a run instead)\n`);
  }

  const warm = run.warmup > 0 ? `${run.warmup} warm-up steps, then ${run.schedule}` : run.schedule;
  io.out(
    [
      `model    ${modelLine}`,
      `adapter  ${adapterLine}`,
      `data     ${dataLine}`,
      `train    ${run.steps} steps (batch ${run.batch} x seq ${seq}), AdamW lr ${lr} (${warm}), weight decay ${run.weightDecay}, ${precision}, seed ${run.seed}`,
      `output   ${displayPath(outDir)}`,
      "",
    ].join("\n"),
  );
  if (todo === 0) io.out(`already at step ${start} of --steps ${run.steps}: nothing to train\n`);

  const stream = new BatchStream(prepared.records, { batch: run.batch, seq, padId: run.padId, seed: run.seed, start: resumeFrom?.trainer.data.examplesSeen ?? 0 });
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

  // Ctrl-C: finish the step in progress, save a checkpoint, exit 130. A second Ctrl-C exits at once.
  const abort = new AbortController();
  const onSigint = () => {
    if (abort.signal.aborted) process.exit(EXIT_INTERRUPTED);
    abort.abort();
    clearStatus();
    io.out("\ninterrupted: stopping after this step (Ctrl-C again to quit without a checkpoint)\n");
  };
  process.on("SIGINT", onSigint);

  let status = false, drawn = 0;
  const clearStatus = () => {
    if (status) io.out("\r\x1b[2K");
    status = false;
  };
  const t0 = performance.now();
  let window = { loss: 0, steps: 0, seconds: 0, timedSteps: 0 };
  let lastSaved = resumeFrom ? start : -1;
  let lastLoss: number | null = resumeFrom?.trainer.loss ?? null;
  let firstLoss: number | undefined;
  const w = String(run.steps).length;

  const onStep = async (info: StepInfo, ctl: { snapshot: () => Promise<TrainState<HostTensor>> }) => {
    const elapsed = (performance.now() - t0) / 1000;
    firstLoss ??= info.loss;
    lastLoss = info.loss;
    const firstOfRun = info.step === start + 1;
    window.loss += info.loss;
    window.steps++;
    if (!firstOfRun) {
      window.seconds += info.seconds;
      window.timedSteps++;
    }
    const record = { step: info.step, loss: info.loss, lr: info.lr, tokens: tokensPerStep, step_seconds: +info.seconds.toFixed(4), elapsed_seconds: +elapsed.toFixed(3) };
    await appendFile(metricsFile, JSON.stringify(record) + "\n");
    const logNow = firstOfRun || info.step % run.logEvery === 0 || info.step === run.steps || abort.signal.aborted;
    if (logNow) {
      clearStatus();
      const speed = window.timedSteps > 0 ? `${fmtRate((window.timedSteps * tokensPerStep) / window.seconds)} tok/s` : `compiled + ran in ${info.seconds.toFixed(1)}s`;
      io.out(`step ${String(info.step).padStart(w)}/${run.steps}  loss ${(window.loss / window.steps).toFixed(4)}  lr ${fmtLr(info.lr)}  ${speed}  elapsed ${fmtSec(elapsed)}\n`);
      window = { loss: 0, steps: 0, seconds: 0, timedSteps: 0 };
    } else if (io.tty && performance.now() - drawn > 100) {
      // A status line redrawn in place at most 10 times a second; terminals only, never in logs.
      io.out(`\r\x1b[2Kstep ${info.step}/${run.steps}  loss ${info.loss.toFixed(4)}  eta ${fmtSec((run.steps - info.step) * info.seconds)}`);
      status = true;
      drawn = performance.now();
    }
    if (run.saveEvery > 0 && info.step % run.saveEvery === 0 && info.step !== run.steps && !abort.signal.aborted) {
      const dir = await saveCheckpoint(outDir, { llama, layout, state: await ctl.snapshot(), trainer: trainerAt(info.step, info.loss) });
      lastSaved = info.step;
      clearStatus();
      io.out(`checkpoint ${displayPath(dir)}\n`);
    }
  };

  if (todo > 0) io.out("compiling the training step (the first step includes it)...\n");
  let result;
  try {
    result = await trainLoRA({
      base: { config: llama, weights: base },
      adapter: { layout, weights: lora },
      ...(optimizer ? { optimizer } : {}),
      policy,
      adamw: { lr, beta1: 0.9, beta2: 0.999, eps: 1e-8, weightDecay: run.weightDecay },
      lr: (n) => lrAt(n, schedule),
      batches: stream,
      maxSteps: todo,
      signal: abort.signal,
      seed: run.seed,
      onStep,
    });
  } finally {
    process.off("SIGINT", onSigint);
    clearStatus();
  }
  const end = start + result.losses.length;
  const seconds = (performance.now() - t0) / 1000;
  let ckpt = checkpointDir(outDir, end);
  if (end !== lastSaved) ckpt = await saveCheckpoint(outDir, { llama, layout, state: result.state, trainer: trainerAt(end, lastLoss) });

  if (result.stopped) {
    io.out(`stopped at step ${end} of ${run.steps}; checkpoint ${displayPath(ckpt)}\n`);
    io.out(`continue with: tessera train --resume${outDir === DEFAULTS.common.out ? "" : ` --out ${outDir}`}${run.steps === DEFAULTS.common.steps ? "" : ` --steps ${run.steps}`}\n`);
    return EXIT_INTERRUPTED;
  }
  const adapterDir = join(outDir, "adapter");
  await saveAdapter(adapterDir, loraToAdapter(layout, result.state.lora, llama), llama);
  if (result.losses.length > 0) {
    const tail = result.losses.slice(-Math.min(run.logEvery, result.losses.length));
    const mean = tail.reduce((a, b) => a + b, 0) / tail.length;
    io.out(`done: ${result.losses.length} steps in ${fmtSec(seconds)}; loss ${firstLoss!.toFixed(4)} (step ${start + 1}) -> ${mean.toFixed(4)} (mean of the last ${tail.length})\n`);
  }
  io.out(`checkpoint ${displayPath(ckpt)} (continue with --resume and a larger --steps)\n`);
  io.out(`adapter  ${displayPath(adapterDir)} (${ADAPTER_CONFIG_FILE} + ${ADAPTER_WEIGHTS_FILE}; PeftModel.from_pretrained loads it)\n`);
  io.out(`metrics  ${displayPath(metricsFile)}\n`);
  return 0;
}
