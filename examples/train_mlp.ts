// Trains the MLP of examples/mlp.ts on a synthetic regression task, on CPU through XLA: `npx tsx examples/train_mlp.ts`.
import { array, jit, random, type DeviceArray } from "tessera";
import { initParams, SIZES, trainStepFn } from "./mlp.ts";
import { mulberry32 } from "../src/host/random.ts";

const STEPS = 200;
/** Steps per printed line: each step sees a fresh batch, so single-batch losses are noisy; means are not. */
const WINDOW = 20;
const LEARNING_RATE = 0.3;

/** The function to learn from 4 features: smooth, with an interaction term, and within tanh's reach. */
function target(x: readonly number[]): number {
  return Math.sin(2 * x[0]!) + x[1]! * x[2]! - 0.5 * x[3]!;
}

/** One batch of inputs in [-1, 1) and their targets, as device arrays. */
function batch(next: () => number): { x: DeviceArray; y: DeviceArray } {
  const xs = new Float32Array(SIZES.batch * SIZES.input);
  const ys = new Float32Array(SIZES.batch * SIZES.output);
  for (let i = 0; i < SIZES.batch; i++) {
    const row = Array.from({ length: SIZES.input }, () => 2 * next() - 1);
    xs.set(row, i * SIZES.input);
    ys[i] = target(row);
  }
  return { x: array(xs, { shape: [SIZES.batch, SIZES.input] }), y: array(ys, { shape: [SIZES.batch, SIZES.output] }) };
}

async function main(): Promise<void> {
  // Parameters come from the DSL's counter-based RNG (threefry, as in JAX), computed on the device.
  let params = await jit(() => initParams(random.key(42)))();
  // The old parameters are donated: XLA writes the new ones into their buffers.
  const step = jit(trainStepFn, { donate: 0 });
  const lr = array(LEARNING_RATE);
  const next = mulberry32(1234);

  const start = performance.now();
  const means: number[] = [];
  let window = 0;
  for (let i = 1; i <= STEPS; i++) {
    const { x, y } = batch(next);
    const [updated, loss] = await step(params, x, y, lr);
    params = updated;
    window += await loss.item();
    if (i % WINDOW === 0) {
      means.push(window / WINDOW);
      console.log(
        `steps ${String(i - WINDOW + 1).padStart(3)}-${String(i).padEnd(3)}  mean loss ${(window / WINDOW).toFixed(4)}`,
      );
      window = 0;
    }
  }
  const ms = performance.now() - start;
  console.log(`${STEPS} steps in ${(ms / 1000).toFixed(1)} s (${(ms / STEPS).toFixed(1)} ms/step, the first compiles)`);
  if (!(means.at(-1)! < means[0]! / 2))
    throw new Error(`the loss did not go down: ${means.map((m) => m.toFixed(4)).join(", ")}`);
}

await main();
