// Eager use: ops on device arrays run at once (no jit), disableJit for debugging, static arguments, the retrace warning.
import { tx } from "../src/index.ts";

const x = tx.array([1, 2, 3]);
const y = x.mul(2).sum(); // a DeviceArray, computed on the device now
console.log("x.mul(2).sum()  ", String(y), await y.item());
console.log(
  "gelu(x)         ",
  Array.from(await tx.nn.gelu(x).toArray(), (v) => +v.toFixed(4)),
);

const [k1] = tx.random.split(tx.random.keyArray(0)); // random on the host, no hand-made jit
console.log(
  "normal(k1, [3]) ",
  Array.from(await tx.random.normal(k1!, [3]).toArray(), (v) => +v.toFixed(4)),
);

// Static arguments are plain values, hashed by value: one trace per distinct value.
const power = tx.jit((v: tx.Tensor, n: number) => v.pow(n).sum(), { static: 1 });
console.log("power(x, 2), (x, 3)", await (await power(x, 2)).item(), await (await power(x, 3)).item());

// disableJit runs the function op by op: its arguments are device arrays whose values can be read.
const step = tx.jit((v: tx.Tensor) => {
  const h = v.mul(v);
  if (tx.isJitDisabled()) h.toArray().then((a) => console.log("  inside step: h =", Array.from(a)));
  return h.sum();
});
console.log("step(x), op by op", await (await tx.disableJit(() => step(x))).item());

// A function that keeps retracing warns once on stderr, naming the argument that changed.
const total = tx.jit((v: tx.Tensor) => v.sum(), { name: "total" });
for (let n = 1; n <= 7; n++) await total(tx.array(new Float32Array(n)));
