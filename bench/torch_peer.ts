// The transformers peer's Python: torch, transformers and gguf in the bench venv (~/.cache/tessera/bench-venv), installed on first use.
import { existsSync } from "node:fs";
import { join } from "node:path";
import { execa } from "execa";
import { findPythonWithPip } from "../src/backend/runtime/plugin_fetch.ts";
import { cacheRoot } from "../src/backend/runtime/plugins.ts";

/**
 * The venv's python with torch, transformers and gguf importable, pip-installing them on first use (torch's wheel
 * is large: minutes); undefined (with a message) where Python, pip or PyPI is unavailable, so a benchmark can still
 * print Tessera's own figures.
 */
export async function torchPython(): Promise<string | undefined> {
  const venv = join(cacheRoot(), "bench-venv");
  const py = join(venv, "bin", "python");
  const ready = async () =>
    existsSync(py) && !(await execa(py, ["-c", "import torch, transformers, gguf"], { reject: false })).failed;
  if (await ready()) return py;
  try {
    if (!existsSync(py)) {
      const base = await findPythonWithPip();
      console.log(`bench: creating ${venv} for the transformers peer (first run only)`);
      const mk = await execa(base, ["-m", "venv", venv], { reject: false, all: true });
      if (mk.failed) throw new Error(`python -m venv failed: ${mk.all}`);
    }
    console.log(
      `bench: installing torch, transformers and gguf into ${venv} with pip (first run only; torch is large)`,
    );
    const pip = await execa(
      py,
      ["-m", "pip", "install", "--disable-pip-version-check", "-q", "torch", "transformers", "gguf"],
      { reject: false, all: true },
    );
    if (pip.failed) throw new Error(`pip install failed: ${String(pip.all).split("\n").slice(-5).join("\n")}`);
    return py;
  } catch (e) {
    console.log(`bench: transformers unavailable (${(e as Error).message}); printing Tessera's figures alone`);
    return undefined;
  }
}
