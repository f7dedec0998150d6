// `npm run bench memory`: the Llama-2-7B LoRA step's memory per device under the issue's budgets, estimate vs XLA CPU's compiled peak, beside the peers' H200 figures.
// The step is `tessera plan`'s (src/memory/budget.ts: the trainer's guarded step, 32 scanned layers, LoRA r16 alpha16 on
// q,v, batch 1, bf16 frozen weights), compiled from shapes alone: nothing is allocated, XLA only compiles. For each seq
// the budget search picks remat, attention and loss chunking within the table's budget; "today" is plain attention and
// the whole logits. Targets (issue 9): GPU estimate <= 16 / 20 / 40 GiB at seq 4096 / 16384 / 65536, and the CPU
// estimate within 15% of XLA's compiled peak. The peers' figures were measured elsewhere (an H200, ../shared/peers).
// Then the CPU step time of llama_step's small Llama, plain vs blockwise attention at seq 1024 and 4096
// (BENCH_MEMORY_STEPS=0 leaves it out; BENCH_SEQS=4096,... picks the table's rows).
import { fileURLToPath } from "node:url";
import { execa } from "execa";
import { getClient, type CompiledMemoryStats } from "../src/backend/runtime/index.ts";
import { LLAMA2_7B } from "../models/llama.ts";
import { simpleLoraLayout } from "../models/lora.ts";
import { BF16 } from "../src/train/precision.ts";
import { TesseraError } from "../src/errors.ts";
import {
  chooseWithin,
  describeCandidate,
  estimateAll,
  gib,
  lowerStep,
  smallestOf,
  type Estimate,
  type StepShape,
} from "../src/memory/budget.ts";

const GiB = 2 ** 30;
const ROWS = [
  { seq: 4096, budget: 16 * GiB, peers: "JAX remat + cuDNN 15.2 GiB; HF + PEFT ckpt 15.2 GiB" },
  { seq: 16384, budget: 20 * GiB, peers: "JAX remat + cuDNN 19.7 GiB; HF + PEFT ckpt 22.8 GiB" },
  { seq: 65536, budget: 40 * GiB, peers: "neither was run" },
];
const seqs = process.env.BENCH_SEQS?.split(",").map(Number);
const xlaPeak = (m: CompiledMemoryStats) => m.argumentBytes + m.outputBytes - m.aliasBytes + m.tempBytes;

async function main(): Promise<void> {
  const client = await getClient();
  console.log(
    "memory: Llama-2-7B LoRA step (r16 on q,v; batch 1; bf16; 32 scanned layers; one device), compiled from shapes on",
  );
  console.log(
    `XLA CPU via ${client.plugin.name ?? client.plugin.path}; GPU estimate = Tessera's (16-bit stays 16-bit), CPU estimate = the same with XLA CPU's f32 upcast`,
  );
  let ok = true;
  for (const row of ROWS.filter((r) => !seqs || seqs.includes(r.seq))) {
    const shape: StepShape = {
      llama: LLAMA2_7B,
      layout: simpleLoraLayout(LLAMA2_7B, { r: 16, alpha: 16, targets: ["q", "v"] }),
      policy: BF16,
      seq: row.seq,
      batch: 1,
    };
    const all = estimateAll(shape);
    const today = all.estimates.find((e) => e.candidate.attention === "plain" && e.candidate.lossChunk === undefined)!;
    let chosen: Estimate;
    let fits = true;
    try {
      chosen = chooseWithin(shape, all, row.budget).chosen;
    } catch (e) {
      if (!(e instanceof TesseraError)) throw e;
      chosen = smallestOf(all.estimates);
      fits = false;
    }
    const t0 = performance.now();
    const exe = await client.compile(lowerStep(shape, chosen.candidate, true).stablehlo);
    const compileS = (performance.now() - t0) / 1000;
    const xla = xlaPeak(exe.memoryStats!);
    exe.dispose();
    const ratio = chosen.cpuPeakBytes / xla;
    const within = Math.abs(ratio - 1) <= 0.15;
    console.log(`\nseq ${row.seq}, budget ${gib(row.budget)}`);
    console.log(
      `  today (plain attention, whole logits): GPU estimate ${gib(today.gpuPeakBytes)}, CPU estimate ${gib(today.cpuPeakBytes)}`,
    );
    console.log(
      `  ${fits ? "chosen" : "smallest (nothing fits)"}: ${describeCandidate(chosen.candidate)}: GPU estimate ${gib(chosen.gpuPeakBytes)}, CPU estimate ${gib(chosen.cpuPeakBytes)}, XLA CPU compiled ${gib(xla)} (estimate/XLA ${ratio.toFixed(3)}; compiled in ${compileS.toFixed(1)} s)`,
    );
    console.log(`  peers, measured elsewhere (one H200, ../shared/peers/README.md): ${row.peers}`);
    console.log(
      `  target GPU estimate <= ${gib(row.budget)}: ${fits ? "met" : "NOT met"}; CPU estimate within 15% of XLA: ${within ? "met" : "NOT met"}`,
    );
    ok &&= fits && within;
  }
  if (process.env.BENCH_MEMORY_STEPS !== "0") await stepTimes();
  if (!ok) process.exitCode = 1;
}

/**
 * The step time on CPU of llama_step's small Llama (4 layers, hidden 256, 4 heads, vocab 32000, LoRA r16 on q,v,
 * bf16, batch 1, scanned layers) with plain and with blockwise attention at seq 1024 and 4096: its own child
 * process each (llama_step.bench.ts --child), median of 5 steps after 2 warm-ups. A report; no target on CPU.
 */
async function stepTimes(): Promise<void> {
  const file = fileURLToPath(new URL("./llama_step.bench.ts", import.meta.url));
  console.log(
    "\nCPU step time, llama_step's small Llama (4 layers, hidden 256, 4 heads, vocab 32000; r16 on q,v; bf16; batch 1; scanned), median of 5:",
  );
  for (const seq of [1024, 4096]) {
    const parts: string[] = [];
    for (const attention of ["plain", "blockwise"]) {
      const r = await execa(process.execPath, ["--import", "tsx", file, "--child", "scan"], {
        env: { BENCH_SEQ: String(seq), BENCH_ATTENTION: attention, TF_CPP_MIN_LOG_LEVEL: "2" },
        all: true,
        reject: false,
      });
      const line = r.stdout.trim().split("\n").at(-1) ?? "";
      if (r.failed || !line.startsWith("{")) {
        parts.push(`${attention} failed: ${String(r.all).split("\n").slice(-3).join(" ")}`);
        continue;
      }
      const j = JSON.parse(line) as { stepS: number; cpuS: number };
      parts.push(`${attention} ${(j.stepS * 1e3).toFixed(0)} ms (${(seq / j.stepS).toFixed(0)} tok/s)`);
    }
    console.log(`  seq ${seq}: ${parts.join(", ")}`);
  }
}

await main();
