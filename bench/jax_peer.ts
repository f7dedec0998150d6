// The JAX peer's Python: the bench venv (bench_venv.ts) with jax and optax.
import { benchPython, readyBenchPython } from "./bench_venv.ts";

/** The bench venv's python with jax and optax importable (installed on first use); undefined where unavailable. */
export function jaxPython(): Promise<string | undefined> {
  return benchPython("JAX", ["jax", "optax"], ["jax", "optax"]);
}

/** The bench venv's python if jax and optax already import there, else why not; installs nothing (for tests). */
export function readyJaxPython(): Promise<{ py: string } | { reason: string }> {
  return readyBenchPython(["jax", "optax"]);
}
