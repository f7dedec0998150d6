// `npm run bench sharding`: the Llama-2-7B LoRA step at seq 4096, 4-way tensor parallel over 4 CPU devices, compiled from
// shapes alone: Tessera's estimated memory per device next to XLA's compiled memory statistics, and the one-device figure.
// The step is the project's (src/train/step.ts: 32 scanned layers, LoRA r=16 alpha=16 on q and v, AdamW; batch 1,
// seq 4096) with the Megatron presets of models/sharding.ts on a { model: 4 } mesh. Both precision policies run:
// f32, and bf16 (the training default), where XLA's CPU backend computes in f32 and so holds an f32 copy of every bf16
// argument plus f32 copies of bf16 matmul operands; the estimate models that only when told it targets the CPU
// (cpuUpcast16), as a GPU runs bf16 natively. Nothing runs, nothing is allocated: XLA only compiles.
// Targets: frozen weights per device at most a third of the one-device total; our estimate within 10% of XLA's.
import { jit, mesh } from "../src/index.ts";
import { getClient, type Client, type CompiledMemoryStats } from "../src/backend/runtime/index.ts";
import { LLAMA2_7B } from "../models/llama.ts";
import { simpleLoraLayout } from "../models/lora.ts";
import { trainStepShardings } from "../models/sharding.ts";
import { makeTrainStep, trainStepSpecs, type StepConfig } from "../src/train/step.ts";
import { BF16, F32, type PrecisionPolicy } from "../src/train/precision.ts";
import { estimateMemory, shardedBytes, type MemoryEstimate } from "../src/passes/memory_estimate.ts";
import { collectiveSummary } from "../src/passes/shard_propagate.ts";
import { collectiveTensors } from "../src/backend/runtime/sharded.ts";
import { typeBytes } from "../src/ir/cost.ts";
import { tensorType } from "../src/ir/types.ts";

const TP = 4,
  BATCH = 1,
  SEQ = Number(process.env.BENCH_SEQ ?? 4096);
const GiB = 1024 ** 3;
const gib = (n: number) => `${(n / GiB).toFixed(2)} GiB`;

interface Side {
  est: MemoryEstimate;
  xla: CompiledMemoryStats;
  frozen: number;
  compileS: number;
  predicted?: string;
  counted?: string;
}

const xlaTotal = (m: CompiledMemoryStats) => m.argumentBytes + m.outputBytes - m.aliasBytes + m.tempBytes;

async function side(client: Client, policy: PrecisionPolicy, tp: number): Promise<Side> {
  const c: StepConfig = {
    llama: LLAMA2_7B,
    layout: simpleLoraLayout(LLAMA2_7B, { r: 16, alpha: 16, targets: ["q", "v"] }),
    policy,
    adamw: { lr: 1e-4, beta1: 0.9, beta2: 0.999, eps: 1e-8, weightDecay: 1e-4 },
  };
  const devices = client.devices.slice(0, tp).map((d) => d.id);
  const m = mesh({ model: tp }, { devices });
  const step =
    tp > 1
      ? jit(makeTrainStep(c), { mesh: m, ...trainStepShardings(c.llama, c.layout, m), donate: 0 })
      : jit(makeTrainStep(c), { donate: 0 });
  const lowered = step.lower(...(trainStepSpecs(c, BATCH, SEQ) as unknown as Parameters<typeof step.lower>));
  const t0 = performance.now();
  const exe = await client.compile(
    lowered.stablehlo,
    tp > 1 ? { numPartitions: tp, deviceAssignment: devices, useShardy: true } : { device: devices[0]! },
  );
  const compileS = (performance.now() - t0) / 1000;
  const plan = lowered.sharding?.plan;
  const est = estimateMemory(lowered.graph, {
    ...(plan ? { bytes: shardedBytes(plan) } : {}),
    donate: lowered.donate,
    cpuUpcast16: true,
  });
  if (!exe.memoryStats) throw new Error("the plugin reports no compiled memory statistics");
  const out: Side = { est, xla: exe.memoryStats, frozen: est.argumentGroups.get("base") ?? 0, compileS };
  if (plan) {
    const fmt = (kinds: Map<string, { n: number; bytes: number }>) =>
      [...kinds].map(([k, v]) => `${k} ${v.n} (${(v.bytes / 2 ** 20).toFixed(1)} MiB)`).join(", ");
    const pred = new Map<string, { n: number; bytes: number }>();
    for (const x of plan.collectives) {
      const e = pred.get(x.kind) ?? { n: 0, bytes: 0 };
      pred.set(x.kind, { n: e.n + 1, bytes: e.bytes + x.bytes });
    }
    const seen = new Map<string, { n: number; bytes: number }>();
    for (const x of collectiveTensors(exe.hloModule())) {
      const e = seen.get(x.kind) ?? { n: 0, bytes: 0 };
      seen.set(x.kind, { n: e.n + 1, bytes: e.bytes + typeBytes(tensorType(x.dtype as "f32", x.shape)) });
    }
    const perStep = [...collectiveSummary(plan)]
      .map(([k, v]) => `${k} ${v.perStep}x, ${(v.bytesPerStep / 2 ** 20).toFixed(0)} MiB`)
      .join("; ");
    out.predicted = `${fmt(pred)} in the program; per step ${perStep}`;
    out.counted = fmt(seen);
  }
  exe.dispose();
  return out;
}

async function main(): Promise<void> {
  const client = await getClient({ cpuDeviceCount: TP });
  console.log(
    `sharding: Llama-2-7B LoRA step (r=16 on q,v; batch ${BATCH}, seq ${SEQ}; 32 scanned layers), tensor parallel x${TP} (Megatron) vs one device,`,
  );
  console.log(
    `XLA CPU via ${client.plugin.name ?? client.plugin.path}, compiled from shapes; Tessera's estimate (with the CPU's f32 upcast of 16-bit values) vs XLA's memory stats`,
  );
  let ok = true;
  for (const policy of [BF16, F32]) {
    const one = await side(client, policy, 1);
    const tp = await side(client, policy, TP);
    const row = (label: string, a: string, b: string) =>
      console.log(`  ${label.padEnd(30)}${a.padStart(26)}${b.padStart(36)}`);
    console.log(`\npolicy ${policy.name} (frozen weights ${policy.base}, LoRA and AdamW ${policy.master})`);
    row("", "one device", `tensor parallel x${TP}, per device`);
    row("frozen weights", gib(one.frozen), `${gib(tp.frozen)} (${(tp.frozen / one.frozen).toFixed(3)} of one)`);
    row(
      "arguments: tessera / xla",
      `${gib(one.est.arguments)} / ${gib(one.xla.argumentBytes)}`,
      `${gib(tp.est.arguments)} / ${gib(tp.xla.argumentBytes)}`,
    );
    row(
      "temporaries: tessera / xla",
      `${gib(one.est.temporaries)} / ${gib(one.xla.tempBytes)}`,
      `${gib(tp.est.temporaries)} / ${gib(tp.xla.tempBytes)}`,
    );
    row(
      "total: tessera / xla",
      `${gib(one.est.total)} / ${gib(xlaTotal(one.xla))}`,
      `${gib(tp.est.total)} / ${gib(xlaTotal(tp.xla))}`,
    );
    const r1 = one.est.total / xlaTotal(one.xla),
      r4 = tp.est.total / xlaTotal(tp.xla);
    row("ratio tessera/xla (total)", r1.toFixed(3), r4.toFixed(3));
    row("XLA compile", `${one.compileS.toFixed(1)} s`, `${tp.compileS.toFixed(1)} s`);
    console.log(`  collective tensors predicted: ${tp.predicted}`);
    console.log(`  collective tensors in XLA's optimized HLO (loop bodies once): ${tp.counted}`);
    if (policy.base === "bf16")
      console.log("  (XLA's CPU backend all-reduces the bf16 embedding lookup in f32: +32 MiB over the plan's bf16)");
    const third = tp.frozen <= one.frozen / 3;
    const within = Math.abs(r4 - 1) <= 0.1;
    console.log(
      `  target frozen weights per device <= 1/3 of one device: ${third ? "met" : "NOT met"}; estimate within 10% of XLA (x${TP}): ${within ? "met" : "NOT met"}`,
    );
    ok &&= third && within;
  }
  if (!ok) process.exitCode = 1;
}

await main();
