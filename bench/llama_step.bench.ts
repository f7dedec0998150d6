// `npm run bench llama_step`: one LoRA training step of a small Llama on CPU, Tessera vs the JAX peer, as a ratio.
// The shape is the peer's (../shared/peers/jax_lora.py) at 4 layers: hidden 256, MLP 688, 4 heads, vocab 32000, LoRA
// r=16 alpha=16 on q/v, bf16 base weights, f32 LoRA masters and AdamW, batch 1, seq 256. Each side: median of 5 steps
// after 2 warm-ups. Rounds alternate Tessera and JAX (JAX in a fresh Python process each) and each side keeps its best
// round, so a busy machine slows both alike. JAX comes from ~/.cache/tessera/bench-venv, made on first run.
import { existsSync } from "node:fs";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import { execa } from "execa";
import { array, jit, type DeviceArray } from "../src/index.ts";
import { findPythonWithPip } from "../src/backend/runtime/plugin-fetch.ts";
import { cacheRoot } from "../src/backend/runtime/plugins.ts";
import type { LlamaConfig } from "../src/formats/hf_config.ts";
import { initLora, mulberry32, simpleLoraLayout } from "../models/lora.ts";
import { randomLlamaWeights } from "../models/weights.ts";
import { initTrainState, makeTrainStep, type StepConfig, type TrainState } from "../src/train/step.ts";
import { BF16 } from "../src/train/precision.ts";
import { treeToDevice } from "../src/parity/execute.ts";

const here = dirname(fileURLToPath(import.meta.url));
const PEER = resolve(here, "../../shared/peers/jax_lora.py");
const ROUNDS = Number(process.env.BENCH_ROUNDS ?? 2);
const SHAPE = { layers: Number(process.env.BENCH_LAYERS ?? 4), hidden: 256, ffn: 688, heads: 4, seq: Number(process.env.BENCH_SEQ ?? 256), batch: 1 };
const STEPS = 5, WARMUP = 2;

const llama: LlamaConfig = {
  vocabSize: 32000, hiddenSize: SHAPE.hidden, intermediateSize: SHAPE.ffn, numLayers: SHAPE.layers, numHeads: SHAPE.heads,
  numKvHeads: SHAPE.heads, headDim: SHAPE.hidden / SHAPE.heads, rmsNormEps: 1e-5, ropeTheta: 10000, maxPositionEmbeddings: 4096,
  tieWordEmbeddings: false,
};

async function ensureJax(): Promise<string | undefined> {
  const venv = join(cacheRoot(), "bench-venv");
  const py = join(venv, "bin", "python");
  const has = async (mods: string) => existsSync(py) && !(await execa(py, ["-c", `import ${mods}`], { reject: false })).failed;
  if (await has("jax, optax")) return py;
  try {
    if (!existsSync(py)) {
      const base = await findPythonWithPip();
      console.log(`bench: creating ${venv} for the JAX peer (first run only)`);
      const mk = await execa(base, ["-m", "venv", venv], { reject: false, all: true });
      if (mk.failed) throw new Error(`python -m venv failed: ${mk.all}`);
    }
    console.log(`bench: installing jax and optax into ${venv} with pip (first run only)`);
    const pip = await execa(py, ["-m", "pip", "install", "--disable-pip-version-check", "-q", "jax", "optax"], { reject: false, all: true });
    if (pip.failed) throw new Error(`pip install jax optax failed: ${String(pip.all).split("\n").slice(-5).join("\n")}`);
    return py;
  } catch (e) {
    console.log(`bench: JAX unavailable (${(e as Error).message}); printing Tessera's figures alone`);
    return undefined;
  }
}

interface Result {
  stepS: number;
  compileS: number;
  loss: number;
}

async function tessera(): Promise<Result> {
  const layout = simpleLoraLayout(llama, { r: 16, alpha: 16, targets: ["q", "v"] });
  const c: StepConfig = { llama, layout, policy: BF16, adamw: { lr: 1e-4, beta1: 0.9, beta2: 0.999, eps: 1e-8, weightDecay: 1e-4 } };
  const base = treeToDevice(randomLlamaWeights(llama, { dtype: "BF16", seed: 0 }) as never);
  let state = treeToDevice<TrainState<DeviceArray>>(initTrainState(initLora(layout, llama, 0)) as never);
  const rand = mulberry32(1);
  const ids = Int32Array.from({ length: SHAPE.batch * SHAPE.seq }, () => Math.floor(rand() * llama.vocabSize));
  const batch = { tokens: array(ids, { shape: [SHAPE.batch, SHAPE.seq] }), labels: array(ids, { shape: [SHAPE.batch, SHAPE.seq] }) };
  const lr = array(1e-4);
  const key = array(new Uint32Array([0, 0]));
  const step = jit(makeTrainStep(c), { donate: 0, name: "lora_step" });

  let t = performance.now();
  let [next, loss] = await step(state, base as never, batch, lr, key);
  await loss.item();
  const compileS = (performance.now() - t) / 1000; // includes the first step
  state = next;
  const times: number[] = [];
  let last = 0;
  for (let i = 0; i < WARMUP + STEPS; i++) {
    t = performance.now();
    [next, loss] = await step(state, base as never, batch, lr, key);
    last = await loss.item();
    times.push((performance.now() - t) / 1000);
    state = next;
  }
  const timed = times.slice(WARMUP).sort((a, b) => a - b);
  return { stepS: timed[Math.floor(timed.length / 2)]!, compileS, loss: last };
}

async function jax(py: string): Promise<Result> {
  const r = await execa(py, [join(here, "jax_lora_step.py"), PEER, ...[SHAPE.layers, SHAPE.hidden, SHAPE.ffn, SHAPE.heads, SHAPE.seq, SHAPE.batch].map(String)], {
    env: { JAX_PLATFORMS: "cpu", TF_CPP_MIN_LOG_LEVEL: "2" },
    all: true,
  });
  const line = r.stdout.trim().split("\n").at(-1)!;
  const j = JSON.parse(line) as { step_s?: number; compile_s?: number; loss?: number; error?: string };
  if (j.error || j.step_s === undefined) throw new Error(`JAX peer failed: ${j.error ?? line}`);
  return { stepS: j.step_s, compileS: j.compile_s ?? NaN, loss: j.loss ?? NaN };
}

async function main(): Promise<void> {
  if (!existsSync(PEER)) throw new Error(`the JAX peer is not at ${PEER}`);
  const py = await ensureJax();
  const ours: Result[] = [], theirs: Result[] = [];
  for (let round = 1; round <= ROUNDS; round++) {
    ours.push(await tessera());
    if (py) theirs.push(await jax(py));
    console.log(`bench: round ${round}/${ROUNDS}: tessera ${(ours.at(-1)!.stepS * 1e3).toFixed(1)} ms${py ? `, jax ${(theirs.at(-1)!.stepS * 1e3).toFixed(1)} ms` : ""}`);
  }
  const best = (xs: Result[]) => xs.reduce((a, b) => (b.stepS < a.stepS ? b : a));
  const t = best(ours), j = theirs.length ? best(theirs) : undefined;
  const tokens = SHAPE.batch * SHAPE.seq;
  console.log(
    `\nllama_step: LoRA training step, ${SHAPE.layers} layers, hidden ${SHAPE.hidden}, MLP ${SHAPE.ffn}, ${SHAPE.heads} heads, vocab 32000, r=16 on q/v, bf16, batch ${SHAPE.batch}, seq ${SHAPE.seq}, CPU; best of ${ROUNDS} rounds of median-of-${STEPS}`,
  );
  const row = (name: string, r: Result) => `${name.padEnd(8)}${`${(r.stepS * 1e3).toFixed(1)} ms`.padStart(12)}${`${(tokens / r.stepS).toFixed(0)} tok/s`.padStart(14)}${`${r.compileS.toFixed(1)} s`.padStart(12)}${r.loss.toFixed(4).padStart(10)}`;
  console.log(`${"".padEnd(8)}${"step".padStart(12)}${"throughput".padStart(14)}${"compile".padStart(12)}${"loss".padStart(10)}`);
  console.log(row("tessera", t));
  if (j) {
    console.log(row("jax", j));
    const ratio = t.stepS / j.stepS;
    console.log(`ratio tessera/jax step time: ${ratio.toFixed(2)} (target <= 1.00: ${ratio <= 1 ? "met" : "NOT met"})`);
  }
}

main().then(() => process.exit(0), (e: unknown) => {
  console.error(`bench llama_step failed: ${(e as Error).stack ?? String(e)}`);
  process.exit(1);
});
