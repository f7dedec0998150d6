// The memory-budget search: which remat policy, attention kernel and loss chunking a LoRA training step runs with to fit a per-device budget.
import { jit, type Lowered } from "../frontend/jit.ts";
import { DeviceMesh } from "../frontend/mesh.ts";
import { checkpointPolicies, type SavePolicy } from "../passes/remat.ts";
import { estimateMemory, shardedBytes } from "../passes/memory_estimate.ts";
import { pluginUpcasts16 } from "../backend/runtime/plugins.ts";
import { graphCost } from "../ir/cost.ts";
import { EXIT, TesseraError } from "../errors.ts";
import type { LlamaConfig } from "../formats/hf_config.ts";
import type { LoraLayout } from "../../models/lora.ts";
import { trainStepShardings } from "../../models/sharding.ts";
import { defaultLayerLoop, makeGuardedTrainStep, trainStepSpecs, type StepConfig } from "../train/step.ts";
import type { PrecisionPolicy } from "../train/precision.ts";
import { defaultLossChunk } from "../train/loss.ts";

/** The remat policies the search tries, cheapest in recomputation first; "none" keeps every activation. */
export const REMAT_NAMES = ["none", "dotsSaveable", "dotsWithNoBatchDimsSaveable", "nothingSaveable"] as const;
export type RematName = (typeof REMAT_NAMES)[number];

/** One policy for every layer, or one per layer (unrolled layers only). */
export type RematChoice = RematName | readonly RematName[];

export function rematPolicy(name: RematName): SavePolicy | undefined {
  return name === "none" ? undefined : checkpointPolicies[name];
}

/** StepConfig.remat for a choice: a policy, or one per layer. */
export function rematPolicies(r: RematChoice): SavePolicy | readonly (SavePolicy | undefined)[] | undefined {
  return typeof r === "string" ? rematPolicy(r) : r.map(rematPolicy);
}

/** `nothingSaveable`, or `nothingSaveable on layers 0-2, none on 3-7` for a per-layer choice. */
export function rematText(r: RematChoice): string {
  if (typeof r === "string") return r;
  const runs: string[] = [];
  let start = 0;
  for (let i = 1; i <= r.length; i++) {
    if (i < r.length && r[i] === r[start]) continue;
    runs.push(`${r[start]} on layer${i - 1 > start ? `s ${start}-${i - 1}` : ` ${start}`}`);
    start = i;
  }
  return runs.join(", ");
}

/**
 * Throughput the cost model ranks candidates by: an H100 SXM's dense bf16 matmul rate and HBM bandwidth. Only the
 * order matters (each candidate's FLOPs / rate + bytes / bandwidth); it is not a prediction of step time.
 */
export const RANK_FLOPS_PER_S = 989e12;
export const RANK_BYTES_PER_S = 3.35e12;
/** Candidates whose cost is within this fraction of the fastest count as equally fast. */
export const TIE = 0.01;

const UNITS: Readonly<Record<string, number>> = {
  B: 1,
  KiB: 2 ** 10,
  MiB: 2 ** 20,
  GiB: 2 ** 30,
  TiB: 2 ** 40,
  KB: 1e3,
  MB: 1e6,
  GB: 1e9,
  TB: 1e12,
};

/** `16GiB`, `1.5 GiB`, `500MiB` (powers of two), `16GB`, `800MB` (powers of ten), or plain bytes; to bytes. */
export function parseSize(text: string, option = "--memory-budget"): number {
  const m = /^\s*(\d+(?:\.\d+)?)\s*([KMGT]i?B|B)?\s*$/.exec(text);
  const unit = m ? UNITS[m[2] ?? "B"] : undefined;
  const bytes = m && unit ? Math.floor(Number(m[1]) * unit) : Number.NaN;
  if (!(bytes > 0))
    throw new TesseraError(
      `${option} must be a size such as 16GiB, 512MiB (powers of two), 16GB or 800MB (powers of ten); got '${text}'`,
      { code: "ERR_USAGE", exitCode: EXIT.usage },
    );
  return bytes;
}

/** `14.58 GiB`, `3.37 MiB`: two decimals in the largest binary unit the size reaches. */
export function gib(n: number): string {
  for (const [unit, size] of [
    ["GiB", 2 ** 30],
    ["MiB", 2 ** 20],
    ["KiB", 2 ** 10],
  ] as const)
    if (n >= size) return `${(n / size).toFixed(2)} ${unit}`;
  return `${n} B`;
}

/** What is trained and on what: the shapes a step is compiled from (no weights, no data). */
export interface StepShape {
  llama: LlamaConfig;
  layout: LoraLayout;
  policy: PrecisionPolicy;
  seq: number;
  /** Rows per step (micro-batch). */
  batch: number;
  /** Axis sizes of a device mesh (Megatron tensor parallelism over `model`, data parallelism over `data`). */
  mesh?: Readonly<Record<string, number>>;
  /** The backend runs cuDNN fused attention (a CUDA PJRT plugin): "cudnn" joins the attention kernels tried. */
  cuda?: boolean;
  /** Packed rows (positions and segment ids as inputs). */
  packed?: boolean;
  /** Micro-batches of `batch` rows per step (StepConfig.gradAccum); default 1. */
  gradAccum?: number;
  /** Choices the user made (--attention, --loss-chunk): the search keeps them and chooses the rest. */
  fixed?: Partial<Candidate>;
}

export interface Candidate {
  remat: RematChoice;
  attention: "plain" | "blockwise" | "cudnn";
  /** Positions per loss chunk; undefined computes the whole [B, S, V] logits. */
  lossChunk: number | undefined;
  /** Positions per MLP chunk (ForwardOpts.mlpChunk); undefined runs the MLP over the whole sequence. */
  mlpChunk?: number | undefined;
}

export interface Estimate {
  candidate: Candidate;
  /** Per device, for a GPU: 16-bit values stay 16-bit. */
  gpuPeakBytes: number;
  /** The same program on XLA's CPU backend, which keeps f32 copies of 16-bit arguments and matmul operands. */
  cpuPeakBytes: number;
  /** Frozen weights per device: the floor no choice goes below. */
  frozenBytes: number;
  flops: number;
  bytesAccessed: number;
  /** The cost model's rank: FLOPs / RANK_FLOPS_PER_S + bytes / RANK_BYTES_PER_S. */
  costSeconds: number;
}

/** Layer loop of the step (scanned layers share one body, so one remat policy). */
export function layerLoop(llama: LlamaConfig): "scan" | "unroll" {
  return defaultLayerLoop(llama);
}

/**
 * The remat choices worth trying. Scanned layers: only nothingSaveable (one body, one policy; the step runs it as a
 * checkpoint, the backward scan recomputing each layer from its input; without one a scan saves every residual). Unrolled layers: each policy for every layer, and per-layer mixes of none with each policy (the first
 * k layers rematerialized, the rest keeping their activations; k = 1..L-1), which land between the uniform ones.
 */
export function rematChoices(llama: LlamaConfig): readonly RematChoice[] {
  if (layerLoop(llama) === "scan") return ["nothingSaveable"];
  const out: RematChoice[] = [...REMAT_NAMES];
  const L = llama.numLayers;
  for (const p of REMAT_NAMES.slice(1))
    for (let k = 1; k < L; k++) out.push(Array.from({ length: L }, (_, i) => (i < k ? p : "none")));
  return out;
}

/** Loss chunks to try: whole logits, then chunks holding at most 256, 64 and 16 MiB of f32 logits. */
export function lossChunkChoices(batch: number, seq: number, vocab: number): (number | undefined)[] {
  const out: (number | undefined)[] = [undefined];
  for (const target of [256, 64, 16]) {
    const perPos = batch * vocab * 4;
    const max = Math.max(1, Math.floor((target * 2 ** 20) / perPos));
    if (max >= seq) continue;
    const chunk = Math.ceil(seq / Math.ceil(seq / max));
    if (!out.includes(chunk)) out.push(chunk);
  }
  const d = defaultLossChunk(batch, seq, vocab);
  if (d !== undefined && !out.includes(d)) out.push(d);
  return out;
}

/** MLP chunks to try: the whole sequence, then 4096 and 1024 positions where they divide it. */
export function mlpChunkChoices(seq: number): (number | undefined)[] {
  return [undefined, ...[4096, 1024].filter((c) => c < seq && seq % c === 0)];
}

export function candidates(shape: StepShape): Candidate[] {
  const kinds: Candidate["attention"][] = shape.cuda ? ["plain", "blockwise", "cudnn"] : ["plain", "blockwise"];
  const chunks = lossChunkChoices(shape.batch * (shape.gradAccum ?? 1), shape.seq, shape.llama.vocabSize);
  // A chunk the user gave is tried even when it is none of the search's own.
  const given = shape.fixed?.lossChunk;
  if (given !== undefined && !chunks.includes(given)) chunks.push(given);
  const out: Candidate[] = [];
  for (const remat of rematChoices(shape.llama))
    for (const attention of kinds)
      for (const lossChunk of chunks)
        for (const mlpChunk of mlpChunkChoices(shape.seq))
          out.push({ remat, attention, lossChunk, ...(mlpChunk !== undefined ? { mlpChunk } : {}) });
  const f = shape.fixed ?? {};
  return out.filter(
    (c) =>
      (f.attention === undefined || c.attention === f.attention) &&
      (!("lossChunk" in f) || c.lossChunk === f.lossChunk) &&
      (f.remat === undefined || same(c.remat, f.remat)),
  );
}

export function stepConfig(shape: StepShape, c: Candidate, cpuCompile = false): StepConfig {
  const remat = rematPolicies(c.remat);
  // XLA's CPU backend has no cuDNN: a CPU compile of a cudnn plan uses blockwise attention in its place.
  const attention = c.attention === "cudnn" && cpuCompile ? "blockwise" : c.attention;
  return {
    llama: shape.llama,
    layout: shape.layout,
    policy: shape.policy,
    adamw: { lr: 1e-4, beta1: 0.9, beta2: 0.999, eps: 1e-8, weightDecay: 0 },
    maxGradNorm: 1,
    ...(shape.gradAccum && shape.gradAccum > 1 ? { gradAccum: shape.gradAccum } : {}),
    ...(remat ? { remat } : {}),
    attention,
    ...(c.lossChunk !== undefined ? { lossChunk: c.lossChunk } : {}),
    ...(c.mlpChunk !== undefined ? { mlpChunk: c.mlpChunk } : {}),
  };
}

/** The training step `train` runs (guarded, state donated), lowered from shapes alone. */
export function lowerStep(shape: StepShape, c: Candidate, cpuCompile = false): Lowered {
  const cfg = stepConfig(shape, c, cpuCompile);
  const meshAxes = shape.mesh && Object.values(shape.mesh).some((n) => n > 1) ? shape.mesh : undefined;
  const step = meshAxes
    ? (() => {
        const m = new DeviceMesh(meshAxes, {}, null);
        return jit(makeGuardedTrainStep(cfg), { mesh: m, ...trainStepShardings(cfg.llama, cfg.layout, m), donate: 0 });
      })()
    : jit(makeGuardedTrainStep(cfg), { donate: 0 });
  const specs = trainStepSpecs(cfg, shape.batch, shape.seq, { packed: shape.packed ?? false });
  return step.lower(...(specs as unknown as Parameters<typeof step.lower>));
}

export function estimateCandidate(shape: StepShape, c: Candidate): Estimate {
  // cudnn cannot be traced yet (no fused-attention lowering): its memory is estimated as blockwise's, which holds
  // the same O(S·block) working set; its cost as blockwise's too.
  const lowered = lowerStep(shape, c, c.attention === "cudnn");
  const plan = lowered.sharding?.plan;
  const base = { donate: lowered.donate, ...(plan ? { bytes: shardedBytes(plan) } : {}) };
  const gpu = estimateMemory(lowered.graph, base);
  const cpu = estimateMemory(lowered.graph, { ...base, cpuUpcast16: pluginUpcasts16() });
  const cost = graphCost(lowered.graph).total;
  return {
    candidate: c,
    gpuPeakBytes: gpu.total,
    cpuPeakBytes: cpu.total,
    frozenBytes: gpu.argumentGroups.get("base") ?? 0,
    flops: cost.flops,
    bytesAccessed: cost.bytes,
    costSeconds: cost.flops / RANK_FLOPS_PER_S + cost.bytes / RANK_BYTES_PER_S,
  };
}

export interface Skipped {
  candidate: Candidate;
  error: string;
}

export interface BudgetChoice {
  chosen: Estimate;
  /** Every candidate estimated, in search order. */
  estimates: Estimate[];
  /** Candidates that failed to lower, with the first line of the error. */
  skipped: Skipped[];
  budget: number | undefined;
  fits: boolean;
  /** One line per decision: the layer loop, the remat policy, the attention kernel, the loss chunking. */
  reasons: string[];
}

/** Equal choices (per-layer arrays by value). */
const same = (a: unknown, b: unknown): boolean => JSON.stringify(a) === JSON.stringify(b);

export const describeCandidate = (c: Candidate): string =>
  `remat ${rematText(c.remat)}, attention ${c.attention}, loss ${c.lossChunk === undefined ? "whole" : `in chunks of ${c.lossChunk}`}${c.mlpChunk === undefined ? "" : `, MLP in chunks of ${c.mlpChunk}`}`;

/**
 * Estimates every candidate and picks, among those whose GPU estimate fits `budget` (every one without a budget),
 * the cheapest by the cost model; ties go to the smaller estimate. Nothing fitting throws (exit 1) naming the
 * smallest estimate, or the frozen weights when they alone exceed the budget.
 */
export function searchBudget(shape: StepShape, budget: number | undefined): BudgetChoice {
  return chooseWithin(shape, estimateAll(shape), budget);
}

export interface Estimates {
  estimates: Estimate[];
  skipped: Skipped[];
}

/** Every candidate's estimate; a combination the compiler cannot lower yet is left out (and listed), not fatal. */
export function estimateAll(shape: StepShape): Estimates {
  const estimates: Estimate[] = [];
  const skipped: Skipped[] = [];
  for (const c of candidates(shape)) {
    try {
      estimates.push(estimateCandidate(shape, c));
    } catch (e) {
      if (!(e instanceof TesseraError)) throw e;
      skipped.push({ candidate: c, error: e.message.split("\n")[0]! });
    }
  }
  if (!estimates.length)
    throw new TesseraError(`no candidate plan could be lowered: ${skipped[0]?.error}`, { code: "ERR_PLAN" });
  return { estimates, skipped };
}

/** The smallest estimate of all: what a refusal names. */
export const smallestOf = (all: readonly Estimate[]): Estimate =>
  all.reduce((a, b) => (b.gpuPeakBytes < a.gpuPeakBytes ? b : a));

/** searchBudget over estimates already made. */
/**
 * The budget `train` uses on a GPU when none is given: the device's memory limit (PJRT's memory stats) less a
 * margin for the runtime's own allocations and fragmentation: 10%, at least 1 GiB. Undefined on a CPU (no limit
 * worth planning for) or when the plugin reports no limit.
 */
export function deviceBudget(platform: string, bytesLimit: number | undefined): number | undefined {
  if (platform === "cpu" || !bytesLimit) return undefined;
  return Math.max(0, bytesLimit - Math.max(2 ** 30, 0.1 * bytesLimit));
}

export function chooseWithin(shape: StepShape, all: Estimates, budget: number | undefined): BudgetChoice {
  const { estimates, skipped } = all;
  const fitting = estimates.filter((e) => budget === undefined || e.gpuPeakBytes <= budget);
  const smallest = smallestOf(estimates);
  if (!fitting.length) {
    const frozen = smallest.frozenBytes;
    const cause =
      frozen > budget!
        ? `the frozen weights alone take ${gib(frozen)} per device`
        : `the smallest estimate is ${gib(smallest.gpuPeakBytes)} per device (${describeCandidate(smallest.candidate)}; frozen weights ${gib(frozen)})`;
    throw new TesseraError(
      `memory budget ${gib(budget!)} is too small for a LoRA step at batch ${shape.batch} x seq ${shape.seq}: ${cause}; raise --memory-budget, lower --seq or --batch, or shard over more devices with --mesh`,
      { code: "ERR_MEMORY_BUDGET", exitCode: EXIT.userError },
    );
  }
  // Within 1% of the fastest the cost model cannot tell them apart: the smaller estimate leaves more headroom.
  const fastest = Math.min(...fitting.map((e) => e.costSeconds));
  const chosen = fitting
    .filter((e) => e.costSeconds <= fastest * (1 + TIE))
    .reduce((a, b) => (b.gpuPeakBytes < a.gpuPeakBytes ? b : a));
  return { chosen, estimates, skipped, budget, fits: true, reasons: explain(shape, chosen, estimates, budget) };
}

/** Why each part of the choice: the faster alternative that did not fit, or that it is the fastest. */
function explain(shape: StepShape, chosen: Estimate, all: readonly Estimate[], budget: number | undefined): string[] {
  const c = chosen.candidate;
  const within = budget === undefined ? "with no budget" : `within ${gib(budget)}`;
  const lines: string[] = [];
  const sameAs = (e: Estimate, keep: (keyof Candidate)[]) => keep.every((f) => same(e.candidate[f], c[f]));
  const part = (field: keyof Candidate, label: string, show: (v: Candidate[keyof Candidate]) => string) => {
    const others = all.filter(
      (e) =>
        !same(e.candidate[field], c[field]) &&
        sameAs(
          e,
          (["remat", "attention", "lossChunk", "mlpChunk"] as const).filter((f) => f !== field),
        ),
    );
    const faster = others.filter((e) => e.costSeconds < chosen.costSeconds * (1 - TIE));
    const over = faster.filter((e) => budget !== undefined && e.gpuPeakBytes > budget);
    if (over.length) {
      const best = over.reduce((a, b) => (b.costSeconds < a.costSeconds ? b : a));
      lines.push(
        `${label} ${show(c[field])}: ${show(best.candidate[field])} would be faster but needs ${gib(best.gpuPeakBytes)} > ${gib(budget!)}`,
      );
    } else if (others.length) {
      const next = others.reduce((a, b) => (b.costSeconds < a.costSeconds ? b : a));
      const ratio = (next.costSeconds / chosen.costSeconds).toFixed(3);
      lines.push(
        next.costSeconds < chosen.costSeconds
          ? `${label} ${show(c[field])}: as fast as ${show(next.candidate[field])} by the cost model (${ratio}x, within ${TIE * 100}%) and smaller (${gib(chosen.gpuPeakBytes)} vs ${gib(next.gpuPeakBytes)})`
          : `${label} ${show(c[field])}: the fastest ${within} (${show(next.candidate[field])}: cost ${ratio}x, ${gib(next.gpuPeakBytes)})`,
      );
    } else {
      lines.push(`${label} ${show(c[field])}: no alternative applies or lowers with the rest of this plan`);
    }
  };
  if (layerLoop(shape.llama) === "scan")
    lines.push(
      `remat nothingSaveable: ${shape.llama.numLayers} layers run as one scan, whose backward pass recomputes each layer from its input (one policy for every layer)`,
    );
  else part("remat", "remat", (v) => rematText(v as RematChoice));
  part("attention", "attention", (v) => String(v));
  part("lossChunk", "loss", (v) => (v === undefined ? "whole" : `chunks of ${v}`));
  if (mlpChunkChoices(shape.seq).length > 1)
    part("mlpChunk", "MLP", (v) => (v === undefined ? "whole sequence" : `chunks of ${v}`));
  return lines;
}
