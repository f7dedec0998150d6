// The `tx.debug` namespace (jax.debug): print, effectsBarrier, and where printed lines go.
export { effectsBarrier, print, setSink } from "./debug.ts";
