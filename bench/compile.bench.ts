// `npm run bench compile`: trace + passes + StableHLO emission of a Llama-2-7B-shaped LoRA training step from abstract
// shapes, next to `jax.jit(step).lower(...)` of ../shared/peers/jax_lora.py's step on CPU (bench/jax_lower.py).
// The step is the project's own (src/train/step.ts makeTrainStep over models/llama.ts): 32 scanned layers, hidden
// 4096, 32 heads, MLP 11008, vocab 32000, LoRA r=16 alpha=16 on q and v, bf16 frozen weights, f32 LoRA masters and
// AdamW moments, batch 1, seq 4096; value and grad w.r.t. the LoRA weights only. Each phase is timed separately as
// jit does it (trace, then the cleanup pipeline with the verifier off, then emitStableHLO; the pipeline with the
// verifier, as jit and the CLI run it by default, is timed on its own as passes_verified_s): median of RUNS after
// WARMUP, and the process's first run (cold JIT and caches: what `tessera compile` and a training run's first jit
// call see) on its own. JAX comes from ~/.cache/tessera/bench-venv, made on first run (shared with the other benches);
// BENCH_JAX=0 skips it, BENCH_RUNS and BENCH_WARMUP change the counts.
import { existsSync } from "node:fs";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import { execa } from "execa";
import { trace } from "../src/index.ts";
import { emitStableHLO } from "../src/backend/stablehlo/index.ts";
import { runPasses } from "../src/passes/manager.ts";
import { CLEANUP_PIPELINE } from "../src/passes/pipeline.ts";
import { jaxPython } from "./jax_peer.ts";
import { LLAMA2_7B } from "../models/llama.ts";
import { simpleLoraLayout } from "../models/lora.ts";
import { makeTrainStep, trainStepSpecs, type StepConfig } from "../src/train/step.ts";
import { BF16 } from "../src/train/precision.ts";

const here = dirname(fileURLToPath(import.meta.url));
const PEER = resolve(here, "../../shared/peers/jax_lora.py");
const RUNS = Number(process.env.BENCH_RUNS ?? 10);
const WARMUP = Number(process.env.BENCH_WARMUP ?? 3);
const TARGET_S = 1;
const BATCH = 1,
  SEQ = 4096;

const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;
const round = (s: number) => Math.round(s * 1e4) / 1e4;

interface Phases {
  trace: number;
  passes: number;
  emit: number;
  /** trace + passes + emit: the figure the target is about. */
  total: number;
  /** The passes again with the verifier on, timed on their own (not part of total). */
  passesVerified: number;
}

function tessera(): { first: Phases; median: Phases; min: Phases; tracedOps: number; ops: number; chars: number } {
  const c: StepConfig = {
    llama: LLAMA2_7B,
    layout: simpleLoraLayout(LLAMA2_7B, { r: 16, alpha: 16, targets: ["q", "v"] }),
    policy: BF16,
    adamw: { lr: 1e-4, beta1: 0.9, beta2: 0.999, eps: 1e-8, weightDecay: 1e-4 },
  };
  const step = makeTrainStep(c);
  const specs = trainStepSpecs(c, BATCH, SEQ);
  const runs: Phases[] = [];
  let first: Phases | undefined;
  let tracedOps = 0,
    ops = 0,
    chars = 0;
  for (let i = 0; i < WARMUP + RUNS; i++) {
    const t0 = performance.now();
    const t = trace(step, specs);
    const t1 = performance.now();
    const g = runPasses(t.graph, CLEANUP_PIPELINE, { verify: false });
    const t2 = performance.now();
    const text = emitStableHLO(g, { moduleName: "jit_lora_step" });
    const t3 = performance.now();
    // The same pipeline with the verifier after each pass (runPasses' default, which jit and the CLI keep).
    runPasses(t.graph, CLEANUP_PIPELINE, { verify: true });
    const t4 = performance.now();
    const p = {
      trace: (t1 - t0) / 1e3,
      passes: (t2 - t1) / 1e3,
      emit: (t3 - t2) / 1e3,
      total: (t3 - t0) / 1e3,
      passesVerified: (t4 - t3) / 1e3,
    };
    first ??= p;
    if (i >= WARMUP) runs.push(p);
    tracedOps = countOps(t.graph);
    ops = countOps(g);
    chars = text.length;
  }
  const pick = (f: (xs: number[]) => number): Phases => ({
    trace: f(runs.map((r) => r.trace)),
    passes: f(runs.map((r) => r.passes)),
    emit: f(runs.map((r) => r.emit)),
    total: f(runs.map((r) => r.total)),
    passesVerified: f(runs.map((r) => r.passesVerified)),
  });
  return { first: first!, median: pick(median), min: pick((xs) => Math.min(...xs)), tracedOps, ops, chars };
}

/** The first run's phases, without the verified pipeline (by then it is no longer the pipeline's first run). */
function firstOnly(p: Phases): Omit<Phases, "passesVerified"> {
  const { passesVerified: _, ...rest } = p;
  return rest;
}

/** Ops including those inside scan bodies. */
function countOps(g: import("../src/ir/graph.ts").Graph): number {
  let n = 0;
  for (const op of g.ops) {
    n++;
    if (op.name === "scan") n += countOps(op.params.body);
  }
  return n;
}

async function jax(py: string): Promise<{ lower_s?: number; min_s?: number; error?: string; [k: string]: unknown }> {
  const { layers, hiddenSize, intermediateSize, numHeads } = {
    layers: LLAMA2_7B.numLayers,
    hiddenSize: LLAMA2_7B.hiddenSize,
    intermediateSize: LLAMA2_7B.intermediateSize,
    numHeads: LLAMA2_7B.numHeads,
  };
  const args = [PEER, layers, hiddenSize, intermediateSize, numHeads, SEQ, BATCH, RUNS, WARMUP].map(String);
  const r = await execa(py, [join(here, "jax_lower.py"), ...args], {
    env: { JAX_PLATFORMS: "cpu", TF_CPP_MIN_LOG_LEVEL: "2" },
    reject: false,
    all: true,
  });
  const line = r.stdout.trim().split("\n").at(-1) ?? "";
  try {
    return JSON.parse(line);
  } catch {
    return {
      error: `no JSON from jax_lower.py (exit ${r.exitCode}): ${String(r.all).split("\n").slice(-5).join(" | ")}`,
    };
  }
}

async function main(): Promise<void> {
  console.log(
    `compile: Llama-2-7B-shaped LoRA training step (32 layers, hidden 4096, 32 heads, MLP 11008, vocab 32000, r=16 on q/v, bf16, batch ${BATCH}, seq ${SEQ}); median of ${RUNS} after ${WARMUP} warm-up`,
  );
  const t = tessera();
  const snake = (k: string) => k.replace(/[A-Z]/g, (c) => `_${c.toLowerCase()}`);
  const secs = (p: Partial<Phases>, prefix = "") =>
    Object.fromEntries(Object.entries(p).map(([k, v]) => [`${prefix}${snake(k)}_s`, round(v)]));
  console.log(
    JSON.stringify({
      system: "tessera",
      ...secs(t.median),
      min_total_s: round(t.min.total),
      ...secs(firstOnly(t.first), "first_"),
      traced_ops: t.tracedOps,
      ops: t.ops,
      stablehlo_chars: t.chars,
    }),
  );
  let py: string | undefined;
  if (process.env.BENCH_JAX !== "0") {
    if (existsSync(PEER)) py = await jaxPython();
    else console.log(`bench: the JAX peer is not at ${PEER}; printing Tessera's figures alone`);
  }
  if (py) {
    const j = await jax(py);
    console.log(JSON.stringify(j));
    if (j.lower_s !== undefined)
      console.log(`compile ratio (tessera/jax lower): ${(t.median.total / j.lower_s).toFixed(2)}`);
    else console.log(`bench: the JAX lowering failed: ${j.error}`);
  }
  const met = (s: number) => `${s < TARGET_S ? "met" : "NOT met"} (${s.toFixed(3)} s)`;
  console.log(
    `target trace+passes+emit < ${TARGET_S} s: ${met(t.median.total)}; first run in the process: ${met(t.first.total)}`,
  );
}

main().then(
  () => process.exit(0),
  (e: unknown) => {
    console.error(`bench compile failed: ${(e as Error).stack ?? String(e)}`);
    process.exit(1);
  },
);
