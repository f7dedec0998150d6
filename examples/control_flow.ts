// cond, whileLoop and customVjp under jit, as in JAX's lax: `npx tsx examples/control_flow.ts`.
import { array, cond, customVjp, grad, jit, whileLoop, type DeviceArray, type Tensor } from "tessera";

// Only the taken branch runs (stablehlo.if), and gradients flow through it.
const piecewise = (x: Tensor) =>
  cond(
    x.sum().gt(0),
    (v: Tensor) => v.mul(v),
    (v: Tensor) => v.neg(),
    x,
  );

// A data-dependent trip count: halve until the norm is below 1 (stablehlo.while).
const shrink = (x: Tensor) =>
  whileLoop(
    ([v]: [Tensor, Tensor]) => v.mul(v).sum().sqrt().ge(1),
    ([v, n]: [Tensor, Tensor]) => [v.mul(0.5), n.add(1)] as [Tensor, Tensor],
    [x, x.sum().mul(0).astype("s32")] as [Tensor, Tensor],
  );

// The identity with a clipped gradient, as jax.custom_vjp: bwd need not be fn's derivative.
const clipGradient = customVjp((x: Tensor) => x, {
  fwd: (x: Tensor) => [x, null],
  bwd: (_res: null, ct: Tensor) => [ct.clip(-1, 1)],
});

const show = async (a: DeviceArray) => Array.from(await a.toArray());
const x = array([3, -1, 2]);
console.log("piecewise      ", await show(await jit(piecewise)(x)));
console.log("its gradient   ", await show(await jit(grad((x: Tensor) => piecewise(x).sum()))(x)));
const [v, n] = await jit(shrink)(x);
console.log("shrink         ", await show(v), "after", await n.item(), "halvings");
console.log("clipped grad   ", await show(await jit(grad((x: Tensor) => clipGradient(x).mul(x).mul(x).sum()))(x)));
