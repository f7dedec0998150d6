// `npm run bench gpu`: Llama-2-7B LoRA steps on one GPU, Tessera within the issue-9 budgets beside the JAX (cuDNN) and HF + PEFT peers, each spec time-boxed in its own process; tok/s and peak memory.
// Shape: the peers' (../shared/peers): 32 layers, hidden 4096, MLP 11008, 32 heads, vocab 32000, random bf16 weights,
// LoRA r16 alpha16 on q,v, batch 1; median of 5 steps after 2 warm-ups. Tessera runs the trainer's guarded step with
// the budget search's choice (src/memory/budget.ts) for 16 GiB at seq 4096 and 20 GiB at 16384, cuDNN attention on a
// CUDA backend. Every spec runs in its own process (peak memory is its own) under a time limit; each result is
// appended to $OUT/gpu-bench.jsonl as it comes, so a call cut short still reports what finished.
// The GPU machine has no Node and no network: scripts/gpu-check.sh pack-bench bundles this file with esbuild into
// .device/bench/js/gpu_bench.mjs, and `gpu-check.sh bench` runs it there with the carried Node and the CUDA plugin.
// BENCH_GPU_SIZE=tiny runs the peers' tiny shape (2 layers, hidden 256) at seq 256 on whatever backend is at hand:
// the dry run on CPU. Env: BENCH_GPU_SPECS (comma list, e.g. tessera:4096:16GiB,jax:4096,hf:4096),
// BENCH_GPU_SPEC_TIMEOUT (s per spec, default 240), BENCH_GPU_TOTAL (s for all, default 540), BENCH_PEERS_DIR,
// BENCH_PYTHON (the peers' python; default python3, or the bench venv for the JAX peer when the size is tiny).
import { spawn } from "node:child_process";
import { appendFileSync, existsSync, mkdirSync, writeFileSync } from "node:fs";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import { jit } from "../src/frontend/jit.ts";
import { array, defaultClient, type DeviceArray } from "../src/frontend/array.ts";
import { tx, type Tensor } from "../src/index.ts";
import { LLAMA2_7B, llamaShapes, type LlamaWeights } from "../models/llama.ts";
import { initLora, simpleLoraLayout } from "../models/lora.ts";
import type { LlamaConfig } from "../src/formats/hf_config.ts";
import { BF16 } from "../src/train/precision.ts";
import { initTrainState, makeGuardedTrainStep, type TrainState } from "../src/train/step.ts";
import { treeToDevice } from "../src/host/transfer.ts";
import { describeCandidate, parseSize, searchBudget, stepConfig, type StepShape } from "../src/memory/budget.ts";
import { benchEntry } from "./entry.ts";

const here = dirname(fileURLToPath(import.meta.url));
const TINY = process.env.BENCH_GPU_SIZE === "tiny";
const STEPS = 5,
  WARMUP = 2;
const GiB = 2 ** 30;

/** The peers' tiny shape: a dry run of the same code path in seconds. */
const LLAMA_PEER_TINY: LlamaConfig = {
  ...LLAMA2_7B,
  hiddenSize: 256,
  intermediateSize: 688,
  numLayers: 2,
  numHeads: 4,
  numKvHeads: 4,
  headDim: 64,
};

/** tessera:SEQ:BUDGET, jax:SEQ (remat + cuDNN attention) or hf:SEQ (gradient checkpointing). */
const DEFAULT_SPECS = TINY
  ? ["tessera:256:256MiB", "jax:256", "hf:256"]
  : ["tessera:4096:16GiB", "jax:4096", "hf:4096", "tessera:16384:20GiB", "jax:16384", "hf:16384"];

export interface SpecResult {
  spec: string;
  peer: "tessera" | "jax" | "hf-peft";
  seq: number;
  tokens_per_s?: number;
  step_s?: number;
  peak_gib?: number;
  /** Tessera: the plan's GPU estimate for the step it ran. */
  estimate_gib?: number;
  plan?: string;
  compile_s?: number;
  loss?: number;
  platform?: string;
  error?: string;
  skipped?: string;
}

/**
 * The frozen weights made on the device, one small program per tensor: a deterministic pseudo-random pattern
 * (0.02·sin of a hash of the indices, one fused loop writing bf16), norms 1. No host copy of 13 GB, and no random
 * bits or f32 temporaries whose peak would sit in the memory statistics above the step's own.
 */
async function deviceBase(llama: LlamaConfig): Promise<LlamaWeights<DeviceArray>> {
  const shapes = llamaShapes(llama);
  // One jitted function, the shape static: one compile per distinct shape (five); the salt is traced.
  const init = jit(
    (salt: Tensor, shapeText: string) => {
      const shape = shapeText.split(",").map(Number);
      let h = salt;
      shape.forEach((n, d) => {
        h = h.add(tx.iota(shape, d, "f32").mul([12.9898, 78.233, 37.719][d % 3]! / n));
      });
      return h.mul(43758.5453).sin().mul(0.02).astype("bf16");
    },
    { name: "init_weight", static: 1 },
  );
  const make = async (shape: number[], salt: number, ones = false): Promise<DeviceArray> =>
    ones
      ? array(new Float32Array(shape.reduce((a, b) => a * b, 1)).fill(1), { shape }).astype("bf16")
      : init(array(salt), shape.join(","));
  const l = shapes.layers;
  const [inputNorm, q, k, v, o, postNorm, gate, up, down] = await Promise.all([
    make(l.inputNorm, 0, true),
    make(l.q, 1),
    make(l.k, 2),
    make(l.v, 3),
    make(l.o, 4),
    make(l.postNorm, 0, true),
    make(l.gate, 5),
    make(l.up, 6),
    make(l.down, 7),
  ]);
  return {
    embed: await make(shapes.embed, 8),
    layers: { inputNorm, q, k, v, o, postNorm, gate, up, down } as LlamaWeights<DeviceArray>["layers"],
    norm: await make(shapes.norm, 0, true),
    head: await make(shapes.head, 9),
  };
}

/** One Tessera spec in this process: plan within the budget, compile, 2 warm-up and 5 timed steps. */
async function tesseraSpec(spec: string): Promise<SpecResult> {
  const [, seqText, budgetText] = spec.split(":");
  const seq = Number(seqText);
  const budget = parseSize(budgetText ?? "16GiB");
  const client = await defaultClient();
  const llama = TINY ? LLAMA_PEER_TINY : LLAMA2_7B;
  const cuda = client.platform === "cuda";
  const shape: StepShape = {
    llama,
    layout: simpleLoraLayout(llama, { r: 16, alpha: 16, targets: ["q", "v"] }),
    policy: BF16,
    seq,
    batch: 1,
    cuda,
    // cuDNN's fused kernel on a GPU (the search alone cannot tell it from blockwise: same estimate and cost).
    ...(cuda ? { fixed: { attention: "cudnn" as const } } : {}),
  };
  const choice = searchBudget(shape, budget);
  const cfg = stepConfig(shape, choice.chosen.candidate);
  const t0 = performance.now();
  const base = await deviceBase(llama);
  let state = treeToDevice<TrainState<DeviceArray>>(initTrainState(initLora(shape.layout, llama, 0)) as never);
  const ids = Int32Array.from({ length: seq }, (_, i) => (i * 7919 + 13) % llama.vocabSize);
  const batch = { tokens: array(ids, { shape: [1, seq] }), labels: array(ids, { shape: [1, seq] }) };
  const lr = array(1e-4);
  const key = array(new Uint32Array([0, 0]));
  const step = jit(makeGuardedTrainStep(cfg), { donate: 0, name: "lora_step" });
  let [next, loss] = await step(state, base as never, batch, lr, key);
  await loss.item();
  const compileS = (performance.now() - t0) / 1000; // weights drawn, compile and the first step
  state = next;
  const times: number[] = [];
  let last = 0;
  for (let i = 0; i < WARMUP + STEPS; i++) {
    const t = performance.now();
    [next, loss] = await step(state, base as never, batch, lr, key);
    last = await loss.item();
    times.push((performance.now() - t) / 1000);
    state = next;
  }
  const stepS = times.slice(WARMUP).sort((a, b) => a - b)[Math.floor(STEPS / 2)]!;
  const peak = client.memoryStats()?.peakBytesInUse;
  return {
    spec,
    peer: "tessera",
    seq,
    tokens_per_s: Math.round((10 * seq) / stepS) / 10,
    step_s: Math.round(stepS * 1e4) / 1e4,
    ...(peak !== undefined ? { peak_gib: Math.round((100 * peak) / GiB) / 100 } : {}),
    estimate_gib: Math.round((100 * choice.chosen.gpuPeakBytes) / GiB) / 100,
    plan: describeCandidate(choice.chosen.candidate),
    compile_s: Math.round(compileS * 10) / 10,
    loss: last,
    platform: client.platform,
  };
}

/** Where the peers' scripts are: $BENCH_PEERS_DIR, ../shared/peers beside the repo, or the bundle's carried copy. */
function peersDir(): string | undefined {
  const candidates = [
    process.env.BENCH_PEERS_DIR,
    resolve(here, "../../shared/peers"),
    resolve(here, "../peers"), // .device/bench/peers beside .device/bench/js/gpu_bench.mjs
    resolve(here, "../../bench/peers"),
  ];
  return candidates.find((d) => d && existsSync(join(d, "jax_lora.py")));
}

interface Proc {
  code: number | null;
  timedOut: boolean;
  stdout: string;
}

/** Runs a command with a time limit, its output teed to the console and the log; SIGKILL at the limit. */
function runBoxed(cmd: string, args: string[], env: NodeJS.ProcessEnv, limitS: number, log?: string): Promise<Proc> {
  return new Promise((done) => {
    const p = spawn(cmd, args, { env: { ...process.env, ...env }, stdio: ["ignore", "pipe", "pipe"] });
    let stdout = "";
    let timedOut = false;
    const tee = (chunk: Buffer, to: NodeJS.WriteStream) => {
      to.write(chunk);
      if (log) appendFileSync(log, chunk);
    };
    p.stdout.on("data", (c: Buffer) => {
      stdout += c.toString();
      tee(c, process.stdout);
    });
    p.stderr.on("data", (c: Buffer) => tee(c, process.stderr));
    const timer = setTimeout(() => {
      timedOut = true;
      p.kill("SIGKILL");
    }, limitS * 1000);
    p.on("error", (e) => {
      clearTimeout(timer);
      done({ code: -1, timedOut, stdout: `${stdout}\n${JSON.stringify({ error: e.message })}` });
    });
    p.on("close", (code) => {
      clearTimeout(timer);
      done({ code, timedOut, stdout });
    });
  });
}

/** The last JSON line a spec's process printed. */
function lastJson(stdout: string): Record<string, unknown> | undefined {
  const line = stdout
    .trim()
    .split("\n")
    .reverse()
    .find((l) => l.startsWith("{"));
  try {
    return line ? (JSON.parse(line) as Record<string, unknown>) : undefined;
  } catch {
    return undefined;
  }
}

async function runSpec(spec: string, limitS: number, log: string, py: string): Promise<SpecResult> {
  const [kind, seqText] = spec.split(":");
  const seq = Number(seqText);
  const size = TINY ? "tiny" : "7b";
  const peer = kind === "tessera" ? "tessera" : kind === "jax" ? "jax" : "hf-peft";
  const base: SpecResult = { spec, peer, seq };
  let proc: Proc;
  if (kind === "tessera") {
    proc = await runBoxed(
      process.execPath,
      [...process.execArgv, fileURLToPath(import.meta.url), "--child", spec],
      {},
      limitS,
      log,
    );
  } else {
    const dir = peersDir();
    if (!dir) return { ...base, skipped: "the peers' scripts were not found (set BENCH_PEERS_DIR)" };
    if (kind === "hf" && TINY && !process.env.BENCH_GPU_HF_TINY)
      return { ...base, skipped: "hf_peft.py runs on CUDA only (its dry run is the parse check)" };
    const script = kind === "jax" ? "jax_lora.py" : "hf_peft.py";
    const peerSpec = kind === "jax" ? `${size}:${seq}:1:1:cudnn` : `${size}:${seq}:1:1`;
    // The tiny dry run on CPU: plain XLA attention (cuDNN needs a GPU).
    const arg = TINY && kind === "jax" ? `${size}:${seq}:1:1:xla` : peerSpec;
    proc = await runBoxed(
      py,
      [join(dir, script), arg],
      { PYTHONUNBUFFERED: "1", TF_CPP_MIN_LOG_LEVEL: "2", ...(TINY ? { JAX_PLATFORMS: "cpu" } : {}) },
      limitS,
      log,
    );
  }
  if (proc.timedOut) return { ...base, error: `timed out after ${limitS} s` };
  const j = lastJson(proc.stdout);
  if (!j) return { ...base, error: `exit ${proc.code}, no result line (see the log)` };
  if (typeof j.error === "string") return { ...base, error: j.error };
  const num = (k: string) => (typeof j[k] === "number" ? (j[k] as number) : undefined);
  // The JAX peer prints 0 when the device keeps no memory statistics (CPU): unknown, not zero.
  if (j.peak_gib === 0) delete j.peak_gib;
  return {
    ...base,
    ...(j as Partial<SpecResult>),
    spec,
    peer,
    seq,
    ...(num("tokens_per_s") !== undefined ? { tokens_per_s: num("tokens_per_s") } : {}),
  };
}

function table(results: readonly SpecResult[]): string {
  const rows = [["spec", "tok/s", "step", "peak GiB", "estimate GiB", "note"]];
  for (const r of results)
    rows.push([
      r.spec,
      r.tokens_per_s?.toFixed(1) ?? "-",
      r.step_s !== undefined ? `${(r.step_s * 1e3).toFixed(1)} ms` : "-",
      r.peak_gib?.toFixed(2) ?? "-",
      r.estimate_gib?.toFixed(2) ?? "-",
      r.error ? `error: ${r.error.slice(0, 120)}` : r.skipped ? `skipped: ${r.skipped}` : (r.plan ?? ""),
    ]);
  const w = rows[0]!.map((_, c) => Math.max(...rows.map((r) => r[c]!.length)));
  return rows.map((r) => r.map((cell, c) => (c === r.length - 1 ? cell : cell.padEnd(w[c]!))).join("  ")).join("\n");
}

/** Tessera against the lean JAX peer at the same seq: the goal is >= 1.2x its tok/s at no more memory. */
function verdicts(results: readonly SpecResult[]): string[] {
  const out: string[] = [];
  for (const t of results.filter((r) => r.peer === "tessera" && r.tokens_per_s)) {
    const j = results.find((r) => r.peer === "jax" && r.seq === t.seq && r.tokens_per_s);
    if (!j) continue;
    const speed = t.tokens_per_s! / j.tokens_per_s!;
    const mem = t.peak_gib !== undefined && j.peak_gib !== undefined ? t.peak_gib <= j.peak_gib : undefined;
    out.push(
      `seq ${t.seq}: tessera/jax tok/s ${speed.toFixed(2)}x (goal >= 1.2x: ${speed >= 1.2 ? "met" : "NOT met"}); peak ${t.peak_gib ?? "?"} vs ${j.peak_gib ?? "?"} GiB (no more memory: ${mem === undefined ? "unknown" : mem ? "met" : "NOT met"})`,
    );
  }
  return out;
}

async function main(): Promise<void> {
  // The 7B specs need a GPU: without a CUDA plugin (the parent makes no client: on a GPU it would hold memory the
  // specs' processes need) `npm run bench` on a CPU machine says how to run it and moves on.
  if (!TINY && !/cuda/i.test(process.env.TESSERA_PJRT_PLUGIN ?? "")) {
    console.log(
      "gpu bench: no CUDA plugin in $TESSERA_PJRT_PLUGIN, so the 7B specs are not run here; on the GPU machine run `bash scripts/gpu-check.sh bench` (after `scripts/gpu-check.sh pack-bench` here), or BENCH_GPU_SIZE=tiny for the dry run on this machine",
    );
    return;
  }
  const out = process.env.OUT ?? join(process.cwd(), "tessera-out", "gpu-bench");
  mkdirSync(out, { recursive: true });
  const jsonl = join(out, "gpu-bench.jsonl");
  const log = join(out, "gpu-bench.log");
  writeFileSync(jsonl, "");
  writeFileSync(log, "");
  const specs = process.env.BENCH_GPU_SPECS?.split(",").filter(Boolean) ?? DEFAULT_SPECS;
  const perSpec = Number(process.env.BENCH_GPU_SPEC_TIMEOUT ?? 240);
  const total = Number(process.env.BENCH_GPU_TOTAL ?? 540);
  let py = process.env.BENCH_PYTHON ?? "python3";
  if (TINY && !process.env.BENCH_PYTHON) {
    // On this machine the JAX peer's python is the bench venv's.
    const { jaxPython } = await import("./jax_peer.ts");
    py = (await jaxPython()) ?? py;
  }
  console.log(
    `gpu bench: ${TINY ? "tiny shape (dry run)" : "Llama-2-7B shape"}, LoRA r16 on q,v, batch 1; specs ${specs.join(", ")}; ${perSpec} s per spec, ${total} s in all; results in ${jsonl}`,
  );
  const started = performance.now();
  const results: SpecResult[] = [];
  for (const spec of specs) {
    const left = total - (performance.now() - started) / 1000;
    let r: SpecResult;
    if (left < 30) r = { spec, peer: "tessera", seq: Number(spec.split(":")[1]), skipped: "out of the call's time" };
    else {
      console.log(`\n--- ${spec} (limit ${Math.floor(Math.min(perSpec, left))} s)`);
      r = await runSpec(spec, Math.min(perSpec, left), log, py);
    }
    results.push(r);
    appendFileSync(jsonl, `${JSON.stringify(r)}\n`);
  }
  const text = [table(results), ...verdicts(results)].join("\n");
  console.log(`\n${text}`);
  writeFileSync(join(out, "gpu-bench.txt"), `${text}\n`);
  if (results.some((r) => r.peer === "tessera" && !r.tokens_per_s)) process.exitCode = 1;
}

benchEntry("gpu", main, (arg) => tesseraSpec(arg ?? "tessera:4096:16GiB"));
