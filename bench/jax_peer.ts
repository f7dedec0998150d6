// The JAX peer's Python: the bench venv (bench_venv.ts) with jax and optax.
import { benchPython } from "./bench_venv.ts";

/** The bench venv's python with jax and optax importable (installed on first use); undefined where unavailable. */
export function jaxPython(): Promise<string | undefined> {
  return benchPython("JAX", ["jax", "optax"], ["jax", "optax"]);
}
