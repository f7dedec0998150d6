// `tessera train --model <dir>` with a config.json that does not describe the checkpoint: a quick FormatError, exit 1, no heap exhaustion.
import { execFile } from "node:child_process";
import { copyFileSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { afterAll, describe, expect, it } from "vitest";

const ROOT = fileURLToPath(new URL("../../", import.meta.url));
const FIXTURE = join(ROOT, "..", "shared", "fixtures", "llama-tiny-a");
const made: string[] = [];
afterAll(() =>
  made.forEach((d) => {
    rmSync(d, { recursive: true, force: true });
  }),
);

/** The fixture's checkpoint (2 layers) with config.json's num_hidden_layers replaced. */
function modelDir(layers: number): string {
  const dir = mkdtempSync(join(tmpdir(), "tessera-hostile-"));
  made.push(dir);
  copyFileSync(join(FIXTURE, "model.safetensors"), join(dir, "model.safetensors"));
  const config = JSON.parse(readFileSync(join(FIXTURE, "config.json"), "utf8"));
  writeFileSync(join(dir, "config.json"), JSON.stringify({ ...config, num_hidden_layers: layers }));
  return dir;
}

function train(args: string[]): Promise<{ code: number | null; stdout: string; stderr: string; seconds: number }> {
  const t0 = Date.now();
  return new Promise((resolve) => {
    const child = execFile(
      process.execPath,
      [join(ROOT, "bin", "tessera.mjs"), "train", ...args],
      { cwd: ROOT, env: { ...process.env, TESSERA_DEBUG: "" } },
      (_e, stdout, stderr) => resolve({ code: child.exitCode, stdout, stderr, seconds: (Date.now() - t0) / 1000 }),
    );
  });
}

describe("train --model with a hostile config.json", () => {
  it("num_hidden_layers: 200000000 is refused by its bound, and 4000 by the checkpoint's tensors, both exit 1 in seconds", async () => {
    const [huge, more] = [modelDir(200000000), modelDir(4000)];
    const [a, b] = await Promise.all([
      train(["--model", huge, "--out", join(huge, "out")]),
      train(["--model", more, "--out", join(more, "out")]),
    ]);
    expect(a.code).toBe(1);
    expect(a.stderr).toContain(
      `${huge}/config.json: field "num_hidden_layers": expected at most 4096 (far larger than any Llama model; is the file damaged?) (got 200000000)`,
    );
    expect(b.code).toBe(1);
    expect(b.stderr).toContain(
      `${more}/config.json: field "num_hidden_layers" is 4000, but ${more}/model.safetensors has tensors for layers 0..1 only (missing tensor "model.layers.2.input_layernorm.weight")`,
    );
    // Start-up (tsx, the CLI's imports) on a loaded 2-core machine is most of this.
    expect(Math.max(a.seconds, b.seconds)).toBeLessThan(30);
  }, 120_000);
});
