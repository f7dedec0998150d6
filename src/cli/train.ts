// `tessera train`: command-line flags to a train() config, its events printed as progress lines, its outcome as an exit code.
import { UsageError, type ParsedArgs } from "./args.ts";
import { displayPath } from "./diagnostics.ts";
import { EXIT, TesseraError } from "../errors.ts";
import { ADAPTER_CONFIG_FILE, ADAPTER_WEIGHTS_FILE } from "../formats/peft.ts";
import { LLAMA_LINEARS, type LlamaLinear } from "../formats/hf_config.ts";
import { DEFAULTS, type TrainConfigInput } from "../train/config.ts";
import { loadRunConfigFile } from "../train/config_file.ts";
import { train, type TrainEvent, type TrainRunResult } from "../train/run.ts";
import { ATTENTION_IMPLS } from "../../models/attention.ts";
import { readMetrics } from "../plot/metrics.ts";
import { lossChart } from "../plot/terminal.ts";

/** Exit code after Ctrl-C or SIGTERM: 128 + SIGINT, as shells report it. */
export const EXIT_INTERRUPTED = EXIT.interrupted;

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
  const ok =
    text.trim() !== "" && Number.isFinite(v) && (kind === "float" || Number.isInteger(v)) && v >= min && v <= max;
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
    if (!(LLAMA_LINEARS as readonly string[]).includes(t))
      usage(`--targets: '${raw}' is not one of ${LLAMA_LINEARS.join(", ")}`);
    if (!out.includes(t as LlamaLinear)) out.push(t as LlamaLinear);
  }
  return LLAMA_LINEARS.filter((m) => out.includes(m));
}

/** The flags the user typed, as a train() config; flags left out stay undefined so train() applies its defaults. */
export function configFromFlags(o: ReadonlyMap<string, string>): TrainConfigInput {
  const get = (k: string) => o.get(k);
  const num = (k: string, kind: "int" | "float", min: number, max = Infinity) =>
    get(k) === undefined ? undefined : parseNumber(k, get(k)!, kind, min, max);
  const choice = <T extends string>(k: string, allowed: readonly T[], what: string): T | undefined => {
    const v = get(k);
    if (v !== undefined && !(allowed as readonly string[]).includes(v)) usage(`--${k} must be ${what}; got '${v}'`);
    return v as T | undefined;
  };
  const cfg: TrainConfigInput = {
    model: get("model"),
    adapter: get("adapter"),
    targets: get("targets") === undefined ? undefined : parseTargets(get("targets")!),
    rank: num("rank", "int", 1),
    alpha: num("alpha", "float", Number.MIN_VALUE),
    dropout: num("dropout", "float", 0, 0.99),
    data: get("data"),
    ragTemplate: get("rag-template"),
    seq: num("seq", "int", 2),
    ropeScaling: get("rope-scaling"),
    batch: num("batch", "int", 1),
    steps: num("steps", "int", 0),
    lr: num("lr", "float", 0),
    weightDecay: num("weight-decay", "float", 0),
    warmup: num("warmup", "int", 0),
    schedule: choice("schedule", ["cosine", "constant"] as const, "cosine or constant"),
    precision: choice("precision", ["f32", "bf16"] as const, "f32 or bf16"),
    seed: num("seed", "int", 0),
    padId: num("pad-id", "int", 0),
    out: get("out"),
    saveEvery: num("save-every", "int", 0),
    logEvery: num("log-every", "int", 1),
    resume: o.has("resume") || undefined,
    overwrite: o.has("overwrite") || undefined,
    lossChunk: num("loss-chunk", "int", 0),
    onNonfinite: choice("on-nonfinite", ["stop", "skip"] as const, "stop or skip"),
    attention: choice("attention", ATTENTION_IMPLS, "plain, blockwise or cudnn"),
    memoryBudget: get("memory-budget"),
    pack: o.has("pack") || undefined,
    gradAccum: num("grad-accum", "int", 1),
    maxGradNorm: num("max-grad-norm", "float", 0),
    evalData: get("eval-data"),
    evalSplit: get("eval-split") === undefined ? undefined : parseNumber("eval-split", get("eval-split")!, "float", 0),
    evalEvery: num("eval-every", "int", 0),
  };
  if (typeof cfg.evalSplit === "number" && !(cfg.evalSplit > 0 && cfg.evalSplit < 1))
    usage(`--eval-split must be a share between 0 and 1 (e.g. 0.05); got '${get("eval-split")}'`);
  if (cfg.resume && cfg.overwrite)
    usage(
      "--resume and --overwrite contradict each other: --resume continues the run in --out, --overwrite replaces it",
    );
  return cfg;
}

/** The config file's options with the flags typed on the command line on top. */
export function withFlags(fromFile: TrainConfigInput, flags: TrainConfigInput): TrainConfigInput {
  const given = Object.fromEntries(Object.entries(flags).filter(([, v]) => v !== undefined));
  return { ...fromFile, ...given };
}

const fmtLr = (x: number) => x.toExponential(2);
const fmtSec = (s: number) =>
  s < 100 ? `${s.toFixed(1)}s` : `${Math.floor(s / 60)}m${String(Math.round(s % 60)).padStart(2, "0")}s`;
const fmtPpl = (x: number) => (x >= 1e4 ? x.toExponential(3) : x.toFixed(3));
const fmtRate = (x: number) =>
  x >= 1e6 ? `${(x / 1e6).toFixed(2)}M` : x >= 1e3 ? `${(x / 1e3).toFixed(1)}k` : x.toFixed(0);

/** `tessera train`. Returns the exit code: 0 done, 1 bad input or a failed run, 2 usage, 130 interrupted (checkpoint saved). */
export async function trainCommand(args: ParsedArgs, io: Io = defaultIo()): Promise<number> {
  const flags = configFromFlags(args.options);
  try {
    const file = args.options.get("config");
    const config = file === undefined ? flags : withFlags(await loadRunConfigFile(file), flags);
    return await runAndPrint(config, io);
  } catch (e) {
    if (e instanceof TesseraError && e.exitCode === EXIT.usage) throw new UsageError(e.message, "train");
    if (e instanceof TesseraError) {
      io.err(e.report());
      return e.exitCode;
    }
    throw e;
  }
}

async function runAndPrint(config: TrainConfigInput, io: Io): Promise<number> {
  const printer = new ProgressPrinter(io);
  const abort = new AbortController();
  const release = stopOnSignals(abort, () => {
    printer.clearStatus();
    io.out("\ninterrupted: stopping after this step (Ctrl-C again to quit without a checkpoint)\n");
  });
  let r: TrainRunResult;
  try {
    r = await train(config, { onEvent: printer.onEvent, signal: abort.signal });
  } finally {
    release();
    printer.clearStatus();
  }
  if (r.status === "stopped") return printStopped(r, io);
  await printDone(r, config, printer.firstLoss, io);
  return EXIT.ok;
}

/**
 * Ctrl-C or SIGTERM: finish the step in progress, save a checkpoint, exit 130. A second one exits at once, as a
 * user pressing it again means. Returns the function that removes the handlers.
 */
function stopOnSignals(abort: AbortController, onFirst: () => void): () => void {
  const onSignal = () => {
    if (abort.signal.aborted) process.exit(EXIT_INTERRUPTED);
    abort.abort();
    onFirst();
  };
  process.on("SIGINT", onSignal);
  process.on("SIGTERM", onSignal);
  return () => {
    process.off("SIGINT", onSignal);
    process.off("SIGTERM", onSignal);
  };
}

type Event<T extends TrainEvent["type"]> = Extract<TrainEvent, { type: T }>;

/** train()'s events as progress lines; on a terminal, a progress bar redrawn in place under them. */
class ProgressPrinter {
  /** The loss of this call's first step, for the closing summary. */
  firstLoss: number | undefined;
  private readonly io: Io;
  private status = false;
  private drawn = 0;
  /** Steps since the last progress line: their mean loss and (compile excluded) their speed. */
  private window = { loss: 0, steps: 0, seconds: 0, timedSteps: 0 };
  /** Width of the step counter: the digits of --steps. */
  private w = 1;
  /** Seconds per step over the recent steps (compile excluded), for the bar's speed and ETA. */
  private recent: number | undefined;

  constructor(io: Io) {
    this.io = io;
  }

  readonly onEvent = (e: TrainEvent): void => {
    switch (e.type) {
      case "note":
        this.print(`note: ${e.message}\n`);
        break;
      case "start":
        this.start(e);
        break;
      case "compiling":
        this.print("compiling the training step (the first step includes it)...\n");
        break;
      case "step":
        this.step(e);
        break;
      case "checkpoint":
        this.print(`checkpoint ${displayPath(e.dir)}\n`);
        break;
      case "compiled":
      case "done":
        break;
    }
  };

  clearStatus(): void {
    if (this.status) this.io.out("\r\x1b[2K");
    this.status = false;
  }

  private print(s: string): void {
    this.clearStatus();
    this.io.out(s);
  }

  private start(e: Event<"start">): void {
    this.w = String(e.steps).length;
    const warm = e.warmup > 0 ? `${e.warmup} warm-up steps, then ${e.schedule}` : e.schedule;
    this.print(
      [
        `model    ${e.model}`,
        `adapter  ${e.adapter}`,
        `data     ${e.data}`,
        `train    ${e.steps} steps (batch ${e.batch}${e.gradAccum > 1 ? ` x ${e.gradAccum} accumulated` : ""} x seq ${e.seq}${e.pack ? ", packed" : ""}), AdamW lr ${e.lr} (${warm}), weight decay ${e.weightDecay}, ${e.maxGradNorm > 0 ? `grad norm clipped to ${e.maxGradNorm}` : "no clipping"}, ${e.precision}, seed ${e.seed}, attention ${e.attention}${e.lossChunk === null ? "" : `, loss in chunks of ${e.lossChunk} positions`}`,
        ...(e.memory === null ? [] : [`memory   ${e.memory}`]),
        `padding  ${e.padding}`,
        ...(e.eval === null ? [] : [`eval     ${e.eval}`]),
        `output   ${displayPath(e.out)}`,
        "",
      ].join("\n"),
    );
    if (e.startStep >= e.steps) this.print(`already at step ${e.startStep} of --steps ${e.steps}: nothing to train\n`);
  }

  private step(e: Event<"step">): void {
    const window = this.window;
    this.firstLoss ??= e.loss;
    window.loss += e.loss;
    window.steps++;
    if (!e.first) {
      window.seconds += e.seconds;
      window.timedSteps++;
      // Speed and ETA follow the recent steps (an exponential average), not the whole run's mean.
      this.recent = this.recent === undefined ? e.seconds : 0.8 * this.recent + 0.2 * e.seconds;
    }
    const skipped = e.skippedSteps > 0 ? `  skipped ${e.skippedSteps}` : "";
    if (e.log) {
      const speed =
        window.timedSteps > 0
          ? `${fmtRate((window.timedSteps * e.tokens) / window.seconds)} tok/s`
          : `compiled + ran in ${e.seconds.toFixed(1)}s`;
      this.print(
        `step ${String(e.step).padStart(this.w)}/${e.steps}  loss ${(window.loss / window.steps).toFixed(4)}  lr ${fmtLr(e.lr)}  ${speed}  elapsed ${fmtSec(e.elapsed)}${skipped}\n`,
      );
      this.window = { loss: 0, steps: 0, seconds: 0, timedSteps: 0 };
    }
    if (e.eval) {
      this.print(
        `eval ${String(e.step).padStart(this.w)}/${e.steps}  loss ${e.eval.loss.toFixed(4)}  perplexity ${fmtPpl(e.eval.perplexity)}  (${e.eval.tokens.toLocaleString("en-US")} tokens)\n`,
      );
    }
    if (!this.io.tty) return;
    // The bar is redrawn at most 10 times a second (and after every progress line, which erased it); terminals only.
    if (e.log || e.eval || performance.now() - this.drawn > 100 || e.step === e.steps) {
      this.io.out(
        `\r\x1b[2K${progressBar({
          step: e.step,
          steps: e.steps,
          loss: e.loss,
          tokensPerSecond: this.recent === undefined ? undefined : e.tokens / this.recent,
          eta: this.recent === undefined ? undefined : (e.steps - e.step) * this.recent,
          elapsed: e.elapsed,
        })}`,
      );
      this.status = true;
      this.drawn = performance.now();
    }
  }
}

export interface BarState {
  step: number;
  steps: number;
  /** This step's loss. */
  loss: number;
  /** Undefined until a step without the compile has been timed. */
  tokensPerSecond: number | undefined;
  eta: number | undefined;
  elapsed: number;
}

/**
 * The progress bar line: `  40% |██████████▌               | 24/60  loss 2.1340  91.2k tok/s  eta 0.4s  elapsed 1.8s`,
 * in eighth-block steps so that it moves smoothly on long runs.
 */
export function progressBar(s: BarState, width = 24): string {
  const frac = s.steps > 0 ? Math.min(1, s.step / s.steps) : 1;
  const eighths = Math.round(frac * width * 8);
  const full = Math.floor(eighths / 8);
  const part = eighths % 8;
  const bar = "█".repeat(full) + (part > 0 ? "▏▎▍▌▋▊▉"[part - 1]! : "") + " ".repeat(width - full - (part > 0 ? 1 : 0));
  const pct = `${Math.floor(frac * 100)}%`.padStart(4);
  const w = String(s.steps).length;
  const rate = s.tokensPerSecond === undefined ? "-- tok/s" : `${fmtRate(s.tokensPerSecond)} tok/s`;
  const eta = s.eta === undefined ? "eta --" : `eta ${fmtSec(s.eta)}`;
  const loss = Number.isFinite(s.loss) ? s.loss.toFixed(4) : String(s.loss);
  return `${pct} |${bar}| ${String(s.step).padStart(w)}/${s.steps}  loss ${loss}  ${rate}  ${eta}  elapsed ${fmtSec(s.elapsed)}`;
}

/** Stopped by a signal: where the checkpoint is, and the command that continues the run. */
function printStopped(r: TrainRunResult, io: Io): number {
  io.out(`stopped at step ${r.step} of ${r.steps}; checkpoint ${displayPath(r.checkpoint)}\n`);
  io.out(
    `continue with: tessera train --resume${r.out === DEFAULTS.common.out ? "" : ` --out ${r.out}`}${r.steps === DEFAULTS.common.steps ? "" : ` --steps ${r.steps}`}\n`,
  );
  return EXIT_INTERRUPTED;
}

/** The summary of a finished run: the loss from first to last, and the files written. */
async function printDone(
  r: TrainRunResult,
  config: TrainConfigInput,
  firstLoss: number | undefined,
  io: Io,
): Promise<void> {
  if (r.losses.length > 0) {
    const logEvery = config.logEvery ?? DEFAULTS.common.logEvery;
    const last = r.losses.slice(-Math.min(logEvery, r.losses.length));
    const tail = last.filter(Number.isFinite);
    const mean = tail.reduce((a, b) => a + b, 0) / tail.length;
    const to =
      tail.length > 0
        ? `${mean.toFixed(4)} (mean of the last ${tail.length})`
        : `no finite loss in the last ${last.length} steps`;
    const skipped = r.skippedSteps > 0 ? `; ${r.skippedSteps} skipped (NaN/Inf loss or gradients)` : "";
    io.out(
      `done: ${r.losses.length} steps in ${fmtSec(r.seconds)}; loss ${firstLoss!.toFixed(4)} (step ${r.startStep + 1}) -> ${to}${skipped}\n`,
    );
  }
  io.out(`checkpoint ${displayPath(r.checkpoint)} (continue with --resume and a larger --steps)\n`);
  io.out(
    `adapter  ${displayPath(r.adapter!)} (${ADAPTER_CONFIG_FILE} + ${ADAPTER_WEIGHTS_FILE}; PeftModel.from_pretrained loads it)\n`,
  );
  io.out(`metrics  ${displayPath(r.metrics)}\n`);
  if (r.plot !== null) {
    // The whole run's curve (a resumed run's earlier steps included), as `tessera plot` draws it.
    const curves = await readMetrics(r.metrics);
    io.out(`plot     ${displayPath(r.plot)} (tessera plot ${displayPath(r.metrics)} redraws it)\n\n`);
    io.out(`${lossChart(curves, { color: io.tty })}\n`);
  }
}
