// tx.debug.print inside jit, grad and scan, as jax.debug.print: `npx tsx examples/debug_print.ts`.
import { array, debug, grad, jit, scan, type Tensor } from "tessera";

// A tiny linear model fitted by three SGD steps; the loss is printed when each compiled step runs.
const loss = (w: Tensor, x: Tensor, y: Tensor) => {
  const err = x.matmul(w).sub(y);
  const l = err.mul(err).mean();
  debug.print("loss {} residuals {}", l, err);
  return l;
};
const step = jit((w: Tensor, x: Tensor, y: Tensor) => w.sub(grad(loss)(w, x, y).mul(0.02)));

// Inside a scan body it prints once per iteration.
const cumulative = jit((xs: Tensor) =>
  scan(
    (total: Tensor, x: Tensor) => {
      debug.print("total {} + x {}", total, x);
      return [total.add(x), total];
    },
    xs.sum().mul(0),
    xs,
  ),
);

let w = array([0, 0]);
const x = array([1, 2, 3, 4], { shape: [2, 2] });
const y = array([1, 2]);
for (let i = 0; i < 3; i++) w = await step(w, x, y);
await cumulative(array([1, 2, 3]));
