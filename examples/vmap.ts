// vmap as jax.vmap: per-example gradients, a per-example cond, outAxes, under jit: `npx tsx examples/vmap.ts`.
import { array, cond, grad, jit, vmap, type DeviceArray, type Tensor } from "tessera";

const loss = (w: Tensor, x: Tensor, y: Tensor) => x.matmul(w).sub(y).square().sum();

// One gradient per example: w shared (inAxes null), x and y mapped over their axis 0.
const perExampleGrads = jit(vmap(grad(loss), { inAxes: [null, 0, 0] }));

// A predicate per example: both branches run on the batch and a select keeps each row's own, as JAX does.
const piecewise = jit(
  vmap((x: Tensor) =>
    cond(
      x.sum().gt(0),
      (v: Tensor) => v.mul(v),
      (v: Tensor) => v.neg(),
      x,
    ),
  ),
);

// The batch axis of the result put last.
const columns = jit(vmap((x: Tensor) => x.mul(10), { outAxes: 1 }));

const show = async (a: DeviceArray) => `${a.dtype}[${a.shape.join(",")}] ${(await a.toArray()).join(" ")}`;
const w = array([1, -1]);
const xs = array([1, 2, 3, 4, 5, 6], { shape: [3, 2] });
const ys = array([0, 1, 2]);
console.log("per-example grads", await show(await perExampleGrads(w, xs, ys)));
console.log("piecewise        ", await show(await piecewise(array([1, 2, -3, 1, -1, -1], { shape: [3, 2] }))));
console.log("outAxes 1        ", await show(await columns(xs)));
