// The benchmarks' Python: one virtual environment outside the repo (~/.cache/tessera/bench-venv), filled on first use.
import { existsSync } from "node:fs";
import { join } from "node:path";
import { execa } from "execa";
import { findPythonWithPip } from "../src/backend/runtime/plugin_fetch.ts";
import { cacheRoot } from "../src/backend/runtime/plugins.ts";

/** Where the bench venv lives (under $TESSERA_CACHE_DIR or ~/.cache/tessera). */
export function benchVenvDir(): string {
  return join(cacheRoot(), "bench-venv");
}

/**
 * The venv's python if it already imports `modules`, else why not; installs nothing. Tests use it: they must not
 * pip-install gigabytes inside `npm test`, so without the venv they skip, and say so.
 */
export async function readyBenchPython(modules: readonly string[]): Promise<{ py: string } | { reason: string }> {
  const venv = benchVenvDir();
  const py = join(venv, "bin", "python");
  if (!existsSync(py)) return { reason: `no bench venv at ${venv}` };
  const r = await execa(py, ["-c", `import ${modules.join(", ")}`], { reject: false, all: true });
  if (r.failed)
    return { reason: `${py} cannot import ${modules.join(", ")}: ${String(r.all).trim().split("\n").at(-1)}` };
  return { py };
}

/**
 * The venv's python with `modules` importable, pip-installing `packages` into it when they are not; undefined
 * (with a message naming `peer`) where Python, pip or PyPI is unavailable, so a benchmark can still print
 * Tessera's own figures. One venv serves every peer (JAX, torch), so each install only adds what is missing.
 */
export async function benchPython(
  peer: string,
  modules: readonly string[],
  packages: readonly string[],
): Promise<string | undefined> {
  const venv = benchVenvDir();
  const py = join(venv, "bin", "python");
  if ("py" in (await readyBenchPython(modules))) return py;
  try {
    if (!existsSync(py)) {
      const base = await findPythonWithPip();
      console.log(`bench: creating ${venv} for the ${peer} peer (first run only)`);
      const mk = await execa(base, ["-m", "venv", venv], { reject: false, all: true });
      if (mk.failed) throw new Error(`python -m venv failed: ${mk.all}`);
    }
    console.log(`bench: installing ${packages.join(" ")} into ${venv} with pip (first run only)`);
    const pip = await execa(py, ["-m", "pip", "install", "--disable-pip-version-check", "-q", ...packages], {
      reject: false,
      all: true,
    });
    if (pip.failed)
      throw new Error(`pip install ${packages.join(" ")} failed: ${String(pip.all).split("\n").slice(-5).join("\n")}`);
    return py;
  } catch (e) {
    console.log(`bench: ${peer} unavailable (${(e as Error).message}); printing Tessera's figures alone`);
    return undefined;
  }
}
