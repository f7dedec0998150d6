// Runtime: fetching plugins fails with clear messages (no Python, no pip, download failure, hash mismatch); the warm cache is fast.
import { chmodSync, mkdtempSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { ensurePlugin, findPythonWithPip } from "../../src/backend/runtime/plugin_fetch.ts";

/** A stand-in `python` that answers the version probe, and behaves as `mode` says for pip. */
function fakePython(mode: "no-pip" | "download-fails" | "wrong-wheel"): string {
  const dir = mkdtempSync(join(tmpdir(), "tessera-fake-python-"));
  const path = join(dir, "python3");
  writeFileSync(
    path,
    `#!/bin/sh
if [ "$1" = "-c" ]; then echo 3; exit 0; fi
if [ "$1 $2 $3" = "-m pip --version" ]; then ${mode === "no-pip" ? "echo 'No module named pip' >&2; exit 1" : "echo 'pip 99'; exit 0"}; fi
if [ "$3" = "download" ]; then
  ${mode === "download-fails" ? "echo 'ERROR: Could not find a version that satisfies the requirement' >&2; exit 1" : 'while [ "$1" != "--dest" ]; do shift; done; echo not-a-wheel > "$2/xla_cpu_pjrt-0.0.1-py3-none-manylinux_2_27_x86_64.whl"; exit 0'}
fi
exit 2
`,
  );
  chmodSync(path, 0o755);
  return path;
}

describe("plugin fetch", () => {
  const saved = { python: process.env.TESSERA_PYTHON, cache: process.env.TESSERA_CACHE_DIR };
  beforeEach(() => {
    process.env.TESSERA_CACHE_DIR = mkdtempSync(join(tmpdir(), "tessera-cache-")); // an empty, cold cache
  });
  afterEach(() => {
    for (const [k, v] of [
      ["TESSERA_PYTHON", saved.python],
      ["TESSERA_CACHE_DIR", saved.cache],
    ] as const) {
      if (v === undefined) delete process.env[k];
      else process.env[k] = v;
    }
  });

  it("says what to install when Python or pip is missing", async () => {
    await expect(findPythonWithPip(["/nonexistent/python3"])).rejects.toMatchObject({
      code: "ERR_PLUGIN_FETCH",
      message: expect.stringContaining("Python 3 was not found (tried /nonexistent/python3)"),
    });
    const noPip = fakePython("no-pip");
    await expect(findPythonWithPip([noPip])).rejects.toMatchObject({
      code: "ERR_PLUGIN_FETCH",
      message: expect.stringContaining(`${noPip} has no pip, which Tessera needs to fetch the PJRT plugin from PyPI`),
    });
  });

  it("reports a failed download with pip's own words", async () => {
    process.env.TESSERA_PYTHON = fakePython("download-fails");
    await expect(ensurePlugin("xla-cpu-pjrt")).rejects.toMatchObject({
      code: "ERR_PLUGIN_FETCH",
      message: expect.stringMatching(
        /pip could not download xla-cpu-pjrt==0\.0\.1 \(is PyPI reachable\?\):\n.*Could not find a version/s,
      ),
    });
  });

  it("refuses a wheel whose sha256 is not the pinned one", async () => {
    process.env.TESSERA_PYTHON = fakePython("wrong-wheel");
    await expect(ensurePlugin("xla-cpu-pjrt")).rejects.toMatchObject({
      code: "ERR_PLUGIN_FETCH",
      message: expect.stringContaining(
        "sha256 mismatch for xla_cpu_pjrt-0.0.1-py3-none-manylinux_2_27_x86_64.whl: expected 55837b6b",
      ),
    });
  });
});
