// Trains from an exported training step alone, without the model's source: `npx tsx examples/train_exported.ts step.mlir`.
//
// The file comes from `tessera compile examples/mlp.ts --entry trainStep --emit exported --out step.mlir` (or
// `await tx.export(jit(trainStepFn, { donate: 0 }), ...specs)` then `.save(file)`). This script knows the step's
// calling convention (params, x, y, lr) and the task, as a training service would, but not the model: the
// parameter shapes come from the file's header.
import { array, loadExported, type DeviceArray } from "tessera";
import { mulberry32 } from "../src/host/random.ts";

const file = process.argv[2];
if (!file) throw new Error("usage: npx tsx examples/train_exported.ts step.mlir");

const step = await loadExported(file);
const { header, inputs } = step.exported;
console.log(
  `${file}: ${header.name}, Tessera ${header.tessera}, for ${header.platform.name} (${header.platform.plugin})`,
);
for (const l of inputs)
  console.log(
    `  ${l.name.padEnd(10)} ${`${l.dtype}[${l.shape.join(",")}]`.padEnd(10)}${l.donatedTo !== undefined ? " donated" : ""}`.trimEnd(),
  );

const next = mulberry32(1234);
// Parameters as the header shapes them: matrices uniform in ±sqrt(3 / fan-in) (variance 1 / fan-in), biases zero.
let params: Record<string, DeviceArray> = {};
for (const l of inputs.filter((l) => l.name.startsWith("params."))) {
  const n = l.shape.reduce((a, b) => a * b, 1);
  const bound = l.shape.length === 2 ? Math.sqrt(3 / l.shape[0]!) : 0;
  params[l.name.slice("params.".length)] = array(
    Float32Array.from({ length: n }, () => (2 * next() - 1) * bound),
    { shape: l.shape },
  );
}
const [batch, features] = inputs.find((l) => l.name === "x")!.shape as [number, number];
const target = (x: readonly number[]) => Math.sin(2 * x[0]!) + x[1]! * x[2]! - 0.5 * x[3]!;

let window = 0;
const means: number[] = [];
for (let i = 1; i <= 200; i++) {
  const xs = new Float32Array(batch * features);
  const ys = new Float32Array(batch);
  for (let r = 0; r < batch; r++) {
    const row = Array.from({ length: features }, () => 2 * next() - 1);
    xs.set(row, r * features);
    ys[r] = target(row);
  }
  // Host arrays are uploaded as the recorded types; a wrong shape is an error naming the argument.
  const [updated, loss] = (await step(params, xs, ys, 0.3)) as [Record<string, DeviceArray>, DeviceArray];
  params = updated;
  window += await loss.item();
  if (i % 50 === 0) {
    means.push(window / 50);
    console.log(`steps ${String(i - 49).padStart(3)}-${String(i).padEnd(3)}  mean loss ${(window / 50).toFixed(4)}`);
    window = 0;
  }
}
if (!(means.at(-1)! < means[0]! / 2))
  throw new Error(`the loss did not go down: ${means.map((m) => m.toFixed(4)).join(", ")}`);
