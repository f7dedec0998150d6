// A training run's plan: the model, adapter, data and resume point, all read and checked before --out is written.
import { readFile, stat } from "node:fs/promises";
import { join, resolve } from "node:path";
import { displayPath } from "../cli/diagnostics.ts";
import { EXIT, TesseraError } from "../errors.ts";
import { fsError } from "../host/fs_errors.ts";
import type { HostTensor } from "../formats/host_tensor.ts";
import { linearFeatures, LLAMA_LINEARS, type LlamaConfig } from "../formats/hf_config.ts";
import { ADAPTER_CONFIG_FILE, loadAdapter, makeLoraConfig } from "../formats/peft.ts";
import { paddingStats, prepareRecords, type PaddingStats } from "../data/batches.ts";
import { DATA_CACHE_DIR } from "../data/cache.ts";
import { type DataFileContext, describeKinds, type LoadedDataFile, loadDataFile } from "../data/load.ts";
import { DEFAULT_RAG_TEMPLATE } from "../data/text_records.ts";
import { Tokenizer } from "../text/tokenizer.ts";
import type { TrainRecord } from "../data/records.ts";
import { keyValueTask, MIN_SEQ } from "../data/synthetic.ts";
import { LLAMA_TINY, type LlamaWeights } from "../../models/llama.ts";
import { defaultAttention, type AttentionImpl } from "../../models/attention.ts";
import { defaultClient } from "../frontend/array.ts";
import { ropeContext, ropeScalingFromOption } from "../../models/rope.ts";
import { initLora, loraFromAdapter, loraLayout, type LoraLayout, type LoraWeights } from "../../models/lora.ts";
import { loadGgufLlamaWeights, loadLlamaWeights } from "../../models/weights.ts";
import { isModelName, type ModelSource, resolveModel as resolveModelSource } from "../formats/model_fetch.ts";
import { listCheckpoints, loadCheckpoint, readTrainerState, type TrainerState } from "./checkpoint.ts";
import { DEFAULTS, flagName, parseRopeScalingOption, RUN_FIELDS, type RunField, type TrainConfig } from "./config.ts";
import { builtinBaseWeights, type OptimizerState } from "./loop.ts";
import { mulberry32 } from "../host/random.ts";
import { defaultLossChunk } from "./loss.ts";
import type { SavePolicy } from "../passes/remat.ts";
import {
  type Candidate,
  describeCandidate,
  deviceBudget,
  gib,
  parseSize,
  rematPolicies,
  searchBudget,
} from "../memory/budget.ts";
import { baseHostDType, type PrecisionPolicy, precisionPolicy } from "./precision.ts";

/** Seed of the built-in tiny model's random weights: fixed, so every run (and --seed) trains the same base. */
export const BUILTIN_MODEL_SEED = 0;
/** Records in the built-in synthetic data set. */
export const SYNTHETIC_RECORDS = 1024;

/** The checkpoint a resumed run continues from. */
export interface ResumePoint {
  dir: string;
  trainer: TrainerState;
}

export interface ResolvedModel {
  llama: LlamaConfig;
  base: LlamaWeights<HostTensor>;
  /** No --model: the built-in tiny Llama, whose defaults (precision, seq, lr) differ from a checkpoint's. */
  builtin: boolean;
  precision: "f32" | "bf16";
  policy: PrecisionPolicy;
  /** One-line description, as the start event carries it. */
  line: string;
  /** Where max_position_embeddings came from (config.json or the GGUF), for messages; "" for the built-in model. */
  configFile: string;
  /** The files the model came from (its tokenizer is there too); undefined for the built-in model. */
  source: ModelSource | undefined;
}

export interface ResolvedAdapter {
  layout: LoraLayout;
  lora: LoraWeights<HostTensor>;
  /** Only when resumed: the checkpoint's optimizer state (its step is the run's start step). */
  optimizer: OptimizerState | undefined;
  trainable: number;
  line: string;
}

export interface ResolvedData {
  /** Records fitted to seq that still take a loss. */
  records: TrainRecord[];
  seq: number;
  /** Of a --data file; null for the built-in task. */
  sha256: string | null;
  /** What trainer_state.json names as the data's origin. */
  source: string;
  line: string;
  /** Writes the tokenized records' cache into --out (text data tokenized by this run); called once --out is written. */
  saveCache?: () => Promise<string | undefined>;
  /** Padding of one epoch of the training records, one per row and packed. */
  padding: PaddingStats;
  /** The start line on padding: its share with and without packing. */
  paddingLine: string;
  /** Held-out records for the eval loss (--eval-data or --eval-split), fitted to seq; null without either. */
  eval: EvalData | null;
}

export interface EvalData {
  records: TrainRecord[];
  /** Loss tokens over all of them: the eval loss is their mean NLL. */
  lossTokens: number;
  line: string;
}

/** Everything a run needs once read and checked; `run` holds a resumed run's own options. */
export interface RunPlan {
  run: TrainConfig;
  resumeFrom: ResumePoint | undefined;
  model: ResolvedModel;
  adapter: ResolvedAdapter;
  data: ResolvedData;
  lr: number;
  /** Steps already taken (the resumed checkpoint's), and steps this call takes. */
  start: number;
  todo: number;
  /** Sequence positions per chunk of the loss; undefined when the whole logits are computed at once. */
  lossChunk: number | undefined;
  /** The attention kernel every step runs (--attention, or the default for the sequence length). */
  attention: AttentionImpl;
  /** With a memory budget (--memory-budget, or a GPU's memory): the search's choice, already in lossChunk/attention. */
  memory: MemoryChoice | undefined;
}

export interface MemoryChoice {
  /** The remat policy, or one per layer; undefined keeps every activation (a scan saves every residual). */
  remat: SavePolicy | readonly (SavePolicy | undefined)[] | undefined;
  /** Positions per MLP chunk (ForwardOpts.mlpChunk); undefined: the whole sequence. */
  mlpChunk: number | undefined;
  /** What was chosen within which budget, and the estimate: the run's start line. */
  line: string;
}

export const fmtInt = (n: number) => n.toLocaleString("en-US");
const fail = (message: string) => new TesseraError(message, { code: "ERR_TRAIN" });
/** A value that only turns out wrong against the model or data (e.g. --pad-id): a usage error, as if the option were malformed. */
const badOption = (message: string) => new TesseraError(message, { code: "ERR_USAGE", exitCode: EXIT.usage });

/** Reads the model, adapter, data and (with resume) the last checkpoint, in that order; writes nothing. */
export async function planRun(
  run: TrainConfig,
  given: ReadonlySet<string>,
  note: (message: string) => void = () => {},
): Promise<RunPlan> {
  let resumeFrom: ResumePoint | undefined;
  if (run.resume) {
    resumeFrom = await lastCheckpoint(run.out);
    run = mergeResumed(run, given, resumeFrom.trainer, join(resumeFrom.dir, "trainer_state.json"));
  }
  const model = await resolveModel(run, note);
  const adapter = await resolveAdapter(run, given, model, resumeFrom);
  const data = await loadData(run, model, resumeFrom);
  const lr = run.lr ?? (model.builtin ? DEFAULTS.builtin.lr : DEFAULTS.checkpoint.lr);
  const start = adapter.optimizer?.step ?? 0;
  const lossChunk =
    run.lossChunk === null
      ? defaultLossChunk(run.batch, data.seq, model.llama.vocabSize)
      : run.lossChunk === 0
        ? undefined
        : Math.min(run.lossChunk, data.seq);
  let attention = await attentionKernel(run, data.seq);
  let chunk = lossChunk;
  const memory = await memoryChoice(run, model, adapter, data.seq);
  if (memory) {
    attention = memory.attention;
    chunk = memory.lossChunk;
  }
  return {
    run,
    resumeFrom,
    model,
    adapter,
    data,
    lr,
    start,
    todo: Math.max(0, run.steps - start),
    lossChunk: chunk,
    attention,
    memory: memory ? { remat: memory.remat, mlpChunk: memory.mlpChunk, line: memory.line } : undefined,
  };
}

/**
 * --memory-budget (or, on a GPU, the device's memory less a margin) through the budget search; an explicit
 * --attention or --loss-chunk is kept and the rest chosen around it. Nothing fitting is an error before anything
 * is written. Undefined on a CPU without a budget: today's defaults.
 */
async function memoryChoice(
  run: TrainConfig,
  model: ResolvedModel,
  adapter: ResolvedAdapter,
  seq: number,
): Promise<(MemoryChoice & { attention: AttentionImpl; lossChunk: number | undefined }) | undefined> {
  let budget: number | undefined;
  let source: string;
  const client = await defaultClient();
  if (run.memoryBudget !== null) {
    budget = typeof run.memoryBudget === "number" ? run.memoryBudget : parseSize(run.memoryBudget);
    source = "--memory-budget";
  } else {
    budget = deviceBudget(client.platform, client.memoryStats()?.bytesLimit);
    source = `the ${client.platformName} device's memory less a margin`;
  }
  if (budget === undefined) return undefined;
  const fixed: Partial<Candidate> = {};
  // An explicit --attention cudnn is kept too (attentionKernel has refused it off CUDA).
  if (run.attention !== null) fixed.attention = run.attention;
  if (run.lossChunk !== null) fixed.lossChunk = run.lossChunk === 0 ? undefined : Math.min(run.lossChunk, seq);
  const choice = searchBudget(
    {
      llama: model.llama,
      layout: adapter.layout,
      policy: model.policy,
      seq,
      batch: run.batch,
      gradAccum: run.gradAccum,
      packed: run.pack,
      // cuDNN's kernel takes no segment ids: packed rows never plan it.
      cuda: client.platform === "cuda" && !run.pack,
      fixed,
    },
    budget,
  );
  const c = choice.chosen.candidate;
  const kept = Object.keys(fixed).length ? ` (kept: ${Object.keys(fixed).join(", ")})` : "";
  return {
    remat: rematPolicies(c.remat),
    attention: c.attention,
    lossChunk: c.lossChunk,
    mlpChunk: c.mlpChunk,
    line: `${describeCandidate(c)}: ${gib(choice.chosen.gpuPeakBytes)} estimated per device within ${gib(budget)} (${source})${kept}; ${choice.reasons.join("; ")}`,
  };
}

/** --attention, or the default for seq; cudnn off a CUDA backend is refused before anything is written. */
async function attentionKernel(run: TrainConfig, seq: number): Promise<AttentionImpl> {
  if (run.attention === "cudnn") {
    // The __cudnn$fmhaSoftmax custom calls exist only in XLA's CUDA backend.
    const client = await defaultClient();
    if (client.platform !== "cuda")
      throw badOption(
        `--attention cudnn needs cuDNN on a CUDA backend, but this run's backend is PJRT ${client.platformName} (${client.platform}): use --attention plain or blockwise`,
      );
  }
  return run.attention ?? defaultAttention(seq);
}

async function lastCheckpoint(outDir: string): Promise<ResumePoint> {
  const all = await listCheckpoints(outDir);
  const last = all[all.length - 1];
  if (!last)
    throw fail(
      `--resume: no checkpoint in ${displayPath(join(outDir, "checkpoints"))} (train without --resume first, or point --out at an earlier run)`,
    );
  return { dir: last.dir, trainer: await readTrainerState(last.dir) };
}

/** The run fields as stored in trainer_state.json, keyed by option name (resolved values, so a resume sees exactly what ran). */
export function runRecord(r: TrainConfig): Record<string, string | number | boolean | null> {
  const v: Record<RunField, string | number | boolean | null> = {
    model: r.model === null ? null : isModelName(r.model) ? r.model : resolve(r.model),
    adapter: r.adapter === null ? null : resolve(r.adapter),
    targets: canonicalTargets(r.targets).join(","),
    rank: r.rank,
    alpha: r.alpha,
    dropout: r.dropout,
    data: r.data === null ? null : resolve(r.data),
    ragTemplate: r.ragTemplate === null ? null : resolve(r.ragTemplate),
    seq: r.seq,
    ropeScaling: r.ropeScaling,
    batch: r.batch,
    lr: r.lr,
    weightDecay: r.weightDecay,
    warmup: r.warmup,
    schedule: r.schedule,
    precision: r.precision,
    seed: r.seed,
    padId: r.padId,
    pack: r.pack,
    gradAccum: r.gradAccum,
    maxGradNorm: r.maxGradNorm,
    evalSplit: r.evalSplit,
  };
  return Object.fromEntries(RUN_FIELDS.map((k) => [flagName(k).slice(2), v[k]]));
}

const canonicalTargets = (t: readonly string[]) => LLAMA_LINEARS.filter((m) => t.includes(m));

/**
 * On resume the checkpoint's options are the run's options; one given again must agree (a different rank or
 * data set cannot continue the same run). steps, saveEvery and logEvery may change.
 */
function mergeResumed(r: TrainConfig, given: ReadonlySet<string>, trainer: TrainerState, file: string): TrainConfig {
  const now = runRecord(r);
  // Checkpoints from before these options existed ran with what is now their value of "off".
  const saved = { ...trainer, options: { ...PRE_OPTION_VALUES, ...trainer.options } };
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
    ragTemplate: str("rag-template"),
    seq: s.seq === null ? null : num("seq"),
    ropeScaling: str("rope-scaling"),
    batch: num("batch"),
    lr: s.lr === null ? null : num("lr"),
    weightDecay: num("weight-decay"),
    warmup: num("warmup"),
    schedule: s.schedule === "constant" ? "constant" : "cosine",
    precision: s.precision === "bf16" ? "bf16" : s.precision === "f32" ? "f32" : null,
    seed: num("seed"),
    padId: num("pad-id"),
    pack: s.pack === true,
    gradAccum: num("grad-accum"),
    maxGradNorm: num("max-grad-norm"),
    evalSplit: s["eval-split"] === null ? null : num("eval-split"),
  };
}

/** What a run recorded before --pack, --grad-accum, --max-grad-norm and --eval-split existed did: none of them. */
const PRE_OPTION_VALUES: Record<string, string | number | boolean | null> = {
  pack: false,
  "grad-accum": 1,
  "max-grad-norm": 0,
  "eval-split": null,
};

/**
 * The base model: --model's model name (fetched on first use), GGUF file or Hugging Face checkpoint folder, or the
 * built-in tiny Llama with seeded random weights. `note` receives fetch progress.
 */
export async function resolveModel(run: TrainConfig, note: (message: string) => void): Promise<ResolvedModel> {
  return withRopeScaling(run, await loadModel(run, note));
}

/** The model as its files (or the built-in preset) describe it. */
async function loadModel(run: TrainConfig, note: (message: string) => void): Promise<ResolvedModel> {
  const builtin = run.model === null;
  const precision = run.precision ?? (builtin ? DEFAULTS.builtin.precision : DEFAULTS.checkpoint.precision);
  const policy = precisionPolicy(precision);
  if (builtin) {
    const llama = LLAMA_TINY;
    const base = builtinBaseWeights(llama, BUILTIN_MODEL_SEED, baseHostDType(policy) === "BF16" ? "BF16" : "F32");
    const line = `built-in tiny Llama (${llama.numLayers} layers, hidden ${llama.hiddenSize}, vocab ${llama.vocabSize}), seeded random weights (seed ${BUILTIN_MODEL_SEED}); --model <dir> trains a Hugging Face checkpoint`;
    return { llama, base, builtin, precision, policy, line, configFile: "", source: undefined };
  }
  const source = await resolveModelSource(run.model!, note);
  const dtype = baseHostDType(policy);
  const { config: llama, weights: base } =
    source.kind === "gguf"
      ? await loadGgufLlamaWeights(source.path, { dtype })
      : await loadLlamaWeights(source.path, { dtype });
  const configFile = source.kind === "gguf" ? source.path : join(source.path, "config.json");
  const what = source.kind === "gguf" ? `${source.name ?? "GGUF"}: Llama` : "Llama";
  const line = `${displayPath(source.path)} (${what}, ${llama.numLayers} layers, hidden ${llama.hiddenSize}, vocab ${llama.vocabSize}), ${precision}`;
  return { llama, base, builtin, precision, policy, line, configFile, source };
}

/** --rope-scaling replaces the model's own scaling; the start line says what RoPE covers when scaled. */
function withRopeScaling(run: TrainConfig, model: ResolvedModel): ResolvedModel {
  let llama = model.llama;
  if (run.ropeScaling !== null) {
    const o = parseRopeScalingOption(run.ropeScaling);
    if (typeof o === "string") throw badOption(`--rope-scaling: ${o}`);
    llama = { ...llama, ropeScaling: ropeScalingFromOption(o.kind, o.factor) };
  }
  if (llama.ropeScaling === undefined) return model;
  const line = `${model.line}; RoPE scaling ${llama.ropeScaling.kind} x${llama.ropeScaling.factor} (up to ${fmtInt(ropeContext(llama))} positions)`;
  return { ...model, llama, line };
}

/** Why --seq is past what the model's RoPE covers, and the --rope-scaling that would cover it. */
function seqTooLong(seq: number, llama: LlamaConfig, source: string, option: string | null): string {
  const max = llama.maxPositionEmbeddings;
  const s = llama.ropeScaling;
  if (s === undefined) {
    const f = Math.ceil(seq / max);
    return `--seq ${seq} exceeds the model's max_position_embeddings ${max} (${source}); to train past it, scale RoPE with --rope-scaling (e.g. --rope-scaling yarn:${f}; kinds linear, dynamic, yarn, llama3), or lower --seq`;
  }
  const orig = ("originalMaxPositionEmbeddings" in s ? s.originalMaxPositionEmbeddings : undefined) ?? max;
  const by =
    option === null ? `the model's rope_scaling ${s.kind} factor ${s.factor} (${source})` : `--rope-scaling ${option}`;
  return `--seq ${seq} exceeds the ${ropeContext(llama)} positions that ${by} covers (factor x original context ${orig}); raise the factor to at least ${Math.ceil(seq / orig)} with --rope-scaling ${s.kind}:${Math.ceil(seq / orig)}, or lower --seq`;
}

/** The adapter to train: the resumed checkpoint's, --adapter's PEFT directory, or a new one. */
async function resolveAdapter(
  run: TrainConfig,
  given: ReadonlySet<string>,
  model: ResolvedModel,
  resumeFrom: ResumePoint | undefined,
): Promise<ResolvedAdapter> {
  const { llama } = model;
  let a: Omit<ResolvedAdapter, "trainable">;
  if (resumeFrom) {
    const c = await loadCheckpoint(resumeFrom.dir, llama);
    a = {
      layout: c.layout,
      lora: c.lora,
      optimizer: c.optimizer,
      line: `resumed from ${displayPath(resumeFrom.dir)} (step ${c.trainer.step})`,
    };
  } else if (run.adapter !== null) {
    a = await adapterFromDir(run, run.adapter, given, llama);
  } else {
    const config = makeLoraConfig({
      r: run.rank,
      loraAlpha: run.alpha,
      loraDropout: run.dropout,
      targetModules: canonicalTargets(run.targets).map((m) => `${m}_proj`),
      baseModelNameOrPath: model.builtin ? null : isModelName(run.model!) ? run.model! : resolve(run.model!),
    });
    const layout = loraLayout(config, llama);
    const line = `new LoRA r ${run.rank}, alpha ${run.alpha}, dropout ${run.dropout} on ${layout.modules.join(",")}`;
    a = { layout, lora: initLora(layout, llama, run.seed), optimizer: undefined, line };
  }
  const trainable = trainableParams(a.layout, llama);
  return { ...a, trainable, line: `${a.line} (${fmtInt(trainable)} trainable parameters)` };
}

/** A PEFT adapter directory to train further; an option given explicitly must match its shape. */
async function adapterFromDir(
  run: TrainConfig,
  dir: string,
  given: ReadonlySet<string>,
  llama: LlamaConfig,
): Promise<Omit<ResolvedAdapter, "trainable">> {
  const cfgFile = join(dir, ADAPTER_CONFIG_FILE);
  if (!(await stat(cfgFile).catch(() => undefined)))
    throw fail(`--adapter ${dir}: ${ADAPTER_CONFIG_FILE} not found (expected a PEFT LoRA adapter directory)`);
  const { layout, weights: lora } = loraFromAdapter(await loadAdapter(dir, llama), llama, cfgFile);
  const c = layout.config;
  const conflicts: [string, unknown, unknown][] = [
    ["rank", run.rank, c.r],
    ["alpha", run.alpha, c.loraAlpha],
    ["dropout", run.dropout, c.loraDropout],
    ["targets", canonicalTargets(run.targets).join(","), layout.modules.join(",")],
  ];
  for (const [k, mine, theirs] of conflicts) {
    if (given.has(k) && mine !== theirs)
      throw fail(
        `--${k} ${mine} conflicts with ${displayPath(cfgFile)} (${theirs}); an existing adapter keeps its shape, leave --${k} out`,
      );
  }
  const line = `from ${displayPath(dir)}: LoRA r ${c.r}, alpha ${c.loraAlpha}, dropout ${c.loraDropout} on ${layout.modules.join(",")}`;
  return { layout, lora, optimizer: undefined, line };
}

function trainableParams(layout: LoraLayout, llama: LlamaConfig): number {
  const f = linearFeatures(llama);
  let n = 0;
  for (const m of layout.modules) for (const r of layout.ranks[m]!) n += r * (f[m].in + f[m].out);
  return n;
}

/** The training data fitted to seq; a resumed run must read exactly the data it read before. */
async function loadData(
  run: TrainConfig,
  model: ResolvedModel,
  resumeFrom: ResumePoint | undefined,
): Promise<ResolvedData> {
  const { llama, builtin, configFile } = model;
  // The longest --seq the model's RoPE covers: max_position_embeddings, or what the scaling stretches it to.
  const maxSeq = ropeContext(llama);
  if (run.padId >= llama.vocabSize)
    throw badOption(`--pad-id ${run.padId} is outside the model's vocabulary (0..${llama.vocabSize - 1})`);
  const raw = await readRecords(run, model);
  const { seq } = raw;
  if (seq > maxSeq)
    throw fail(seqTooLong(seq, llama, builtin ? "built-in tiny Llama" : displayPath(configFile), run.ropeScaling));
  const prepared = prepareRecords(raw.records, seq);
  if (prepared.records.length === 0) {
    throw fail(
      `${run.data ?? "data"}: no record has a label to learn within --seq ${seq} (labels are all -100, or only on the first token)`,
    );
  }
  let line = raw.line;
  if (prepared.truncated > 0) line += `; ${prepared.truncated} cut to --seq ${seq}`;
  if (prepared.dropped.length > 0) {
    line += `; ${prepared.dropped.length} skipped with nothing to learn within --seq (${prepared.dropped.slice(0, 3).join(", ")}${prepared.dropped.length > 3 ? ", ..." : ""})`;
  }
  if (resumeFrom) {
    const d = resumeFrom.trainer.data;
    if (d.sha256 !== raw.sha256 || d.records !== prepared.records.length) {
      throw fail(
        `${run.data ?? "the data"} is not the data the run being resumed read (${d.source}: ${d.records} records${d.sha256 ? `, sha256 ${d.sha256.slice(0, 12)}` : ""}); an exact continuation needs the same data`,
      );
    }
  }
  const padding = paddingStats(prepared.records, seq, run.seed);
  const pct = (x: number) => `${(100 * x).toFixed(1)}%`;
  const unpacked = `${pct(padding.padding)} padding unpacked (${fmtInt(padding.rows)} rows of ${seq})`;
  const packed = `${pct(padding.packedPadding)} packed (${fmtInt(padding.packedRows)} rows)`;
  const paddingLine = run.pack ? `--pack: ${packed}; ${unpacked}` : `${unpacked}; ${packed} with --pack`;
  const evalData = await loadEvalData(run, raw.heldOut, seq, model);
  return { ...raw, records: prepared.records, line, padding, paddingLine, eval: evalData };
}

/**
 * What reading a data file for this run needs: the model's vocabulary and tokenizer, the RAG template, and the
 * tokenization cache in --out. Any data file of the run (e.g. evaluation data) reads with
 * `loadDataFile(file, await dataFileContext(run, model))`.
 */
export async function dataFileContext(run: TrainConfig, model: ResolvedModel): Promise<DataFileContext> {
  return {
    vocabSize: model.llama.vocabSize,
    tokenizer: await modelTokenizer(model),
    ragTemplate: await readRagTemplate(run.ragTemplate),
    cacheDir: join(run.out, DATA_CACHE_DIR),
  };
}

/** The model's tokenizer for text records, or why there is none (token-id records need none). */
async function modelTokenizer(model: ResolvedModel): Promise<Tokenizer | { missing: string }> {
  if (model.source === undefined)
    return {
      missing:
        "the built-in tiny model has no tokenizer; give --model with a tokenizer (e.g. --model smollm2-135m-instruct, a GGUF, or an HF folder with tokenizer.json), or token-id records",
    };
  try {
    return await Tokenizer.fromModel(model.source);
  } catch (e) {
    if (e instanceof TesseraError) return { missing: e.message };
    throw e;
  }
}

/** --rag-template's text (it must hold {question} and {contexts}), or the default. */
export async function readRagTemplate(file: string | null): Promise<string> {
  if (file === null) return DEFAULT_RAG_TEMPLATE;
  let text: string;
  try {
    text = await readFile(file, "utf8");
  } catch (e) {
    throw fsError(e, file, "read the --rag-template file");
  }
  for (const p of ["{question}", "{contexts}"])
    if (!text.includes(p))
      throw fail(
        `--rag-template ${displayPath(file)}: has no ${p} placeholder (a RAG template holds {contexts} and {question}, each replaced by the record's own)`,
      );
  return text;
}

/** --eval-data's records, or those --eval-split held out, fitted to seq like the training records. */
async function loadEvalData(
  run: TrainConfig,
  heldOut: TrainRecord[] | null,
  seq: number,
  model: ResolvedModel,
): Promise<EvalData | null> {
  let records: TrainRecord[], what: string;
  if (run.evalData !== null) {
    records = (await readDataFile(run.evalData, run, model, { cache: false })).records;
    what = displayPath(run.evalData);
  } else if (heldOut !== null) {
    records = heldOut;
    what = `held out of ${displayPath(run.data!)} (--eval-split ${run.evalSplit}, seed ${run.seed})`;
  } else return null;
  const prepared = prepareRecords(records, seq);
  if (prepared.records.length === 0) throw fail(`${what}: no eval record has a label to score within --seq ${seq}`);
  const when =
    run.evalEvery === 0
      ? "never (--eval-every 0)"
      : run.evalEvery === null
        ? "after the last step"
        : `every ${run.evalEvery} steps and after the last`;
  const cut = prepared.truncated > 0 ? `, ${prepared.truncated} cut to --seq ${seq}` : "";
  const line = `${what}: ${fmtInt(prepared.records.length)} records, ${fmtInt(prepared.lossTokens)} loss tokens${cut}; evaluated ${when}`;
  return { records: prepared.records, lossTokens: prepared.lossTokens, line };
}

/**
 * A data file's records (any format src/data/load.ts reads, tokenized with the model's tokenizer): the one
 * function every command reads --data / --eval-data through. `cache: false` neither reads nor offers to write the
 * tokenization cache in --out (a command that writes no --out).
 */
export async function readDataFile(
  file: string,
  run: TrainConfig,
  model: ResolvedModel,
  { cache = true }: { cache?: boolean } = {},
): Promise<LoadedDataFile> {
  const { cacheDir, ...ctx } = await dataFileContext(run, model);
  return loadDataFile(file, cache ? { ...ctx, cacheDir } : ctx);
}

/**
 * The indices --eval-split holds out of n records: a seeded share (at least one record, and at least one left
 * to train on), the same for the same seed and data, so a resumed run holds out the same records.
 */
export function heldOutIndices(n: number, share: number, seed: number): Set<number> {
  const k = Math.min(n - 1, Math.max(1, Math.round(n * share)));
  const rand = mulberry32((Math.imul(seed, 0x2545f491) ^ 0x5bd1e995) >>> 0);
  const order = Array.from({ length: n }, (_, i) => i);
  for (let i = n - 1; i > 0; i--) {
    const j = Math.floor(rand() * (i + 1));
    [order[i], order[j]] = [order[j]!, order[i]!];
  }
  return new Set(order.slice(0, k));
}

type RawData = Omit<ResolvedData, "padding" | "paddingLine" | "eval"> & { heldOut: TrainRecord[] | null };

/** The records as read (--data's file, or the built-in key-value task) and seq (--seq, or fitted to them). */
async function readRecords(run: TrainConfig, model: ResolvedModel): Promise<RawData> {
  const { llama, builtin } = model;
  // The longest --seq the model's RoPE covers: max_position_embeddings, or what the scaling stretches it to.
  const maxSeq = ropeContext(llama);
  if (run.data !== null) {
    const loaded = await readDataFile(run.data, run, model);
    const longest = loaded.records.reduce((m, r) => Math.max(m, r.ids.length), 0);
    // Which forms the file held, once it holds text (a token-id file's line stays as it always was).
    const kinds = Object.keys(loaded.kinds).some((k) => k !== "ids") ? ` (${describeKinds(loaded.kinds)})` : "";
    const tokenized =
      loaded.cache === "read"
        ? `; tokenized earlier (cache ${displayPath(join(run.out, DATA_CACHE_DIR))})`
        : loaded.cache === "new"
          ? "; tokenized (cached in --out for the next run)"
          : "";
    let records = loaded.records;
    let heldOut: TrainRecord[] | null = null;
    let split = "";
    if (run.evalSplit !== null) {
      if (records.length < 2)
        throw badOption(`--eval-split needs at least 2 records in ${displayPath(run.data)}; it has ${records.length}`);
      const out = heldOutIndices(records.length, run.evalSplit, run.seed);
      heldOut = records.filter((_, i) => out.has(i));
      records = records.filter((_, i) => !out.has(i));
      split = ` (${fmtInt(heldOut.length)} held out for eval)`;
    }
    return {
      records,
      heldOut,
      seq: run.seq ?? Math.min(maxSeq, Math.ceil(longest / 8) * 8),
      sha256: loaded.sha256,
      source: resolve(run.data),
      line: `${displayPath(run.data)}: ${fmtInt(loaded.records.length)} records${kinds}${split}${tokenized}`,
      saveCache: loaded.saveCache,
    };
  }
  const seq = run.seq ?? Math.min(maxSeq, builtin ? DEFAULTS.builtin.seq : DEFAULTS.checkpoint.seq);
  if (seq < MIN_SEQ)
    throw badOption(`--seq ${seq} is too short for the built-in task (at least ${MIN_SEQ}); or give --data`);
  const task = keyValueTask({ vocabSize: llama.vocabSize, seq, records: SYNTHETIC_RECORDS, seed: run.seed });
  return {
    records: task.records,
    heldOut: null,
    seq,
    sha256: null,
    source: `synthetic key-value lookup, seed ${run.seed}`,
    line: `built-in key -> value lookup (seed ${run.seed}): ${fmtInt(task.records.length)} records of ${task.pairs} key/value pairs, then a key; loss on its value only; --data <file.jsonl> for your own`,
  };
}
