// `tessera inspect --summary` end to end: the summary alone (no IR), cost per namedScope, deduplicated intermediates.
import { execFile } from "node:child_process";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { describe, expect, it } from "vitest";

const ROOT = fileURLToPath(new URL("../../", import.meta.url));
const BIN = path.join(ROOT, "bin", "tessera.mjs");
const SLOW = 120_000;

function tessera(args: string[]): Promise<{ code: number; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    execFile(
      process.execPath,
      [BIN, ...args],
      { cwd: ROOT, env: { ...process.env, TESSERA_DEBUG: "" } },
      (err, stdout, stderr) =>
        resolve({ code: err ? (typeof err.code === "number" ? err.code : -1) : 0, stdout, stderr }),
    );
  });
}

describe("inspect --summary", () => {
  it(
    "prints the summary without the IR: per-scope costs, no splat constants, a line run three times as one row (golden)",
    async () => {
      const [r, bad] = await Promise.all([
        tessera(["inspect", "test/cli/fixtures/scoped.ts", "--entry", "forward", "--summary", "--top", "6"]),
        tessera(["inspect", "test/cli/fixtures/scoped.ts", "--entry", "forward", "--summary", "--locs"]),
      ]);
      expect(r.stderr).toBe("");
      expect(r.code).toBe(0);
      // layer1 is 2*8*64*32 (dot) + 4*512 (the add, three muls) = 34816 FLOPs; the f32[8,32] splat of 0.5 that the
      // muls read, and the graph's f32[] output, are not intermediates.
      expect(r.stdout).toBe(`// test/cli/fixtures/scoped.ts --entry forward: 15 ops traced, 13 after cleanup
ops: 13
  mul               3
  tanh              2
  add               2
  broadcast_in_dim  2
  dot_general       2
  constant          1
  reduce_sum        1

FLOPs            43776 (43.8 k)
transcendentals  768
bytes accessed   54.9 KiB (56196 bytes)
inputs           10.9 KiB in 5 tensors (11136 bytes)
  params         10.4 KiB in 4 tensors
  x              512 B in 1 tensor
outputs          4 B in 1 tensor (4 bytes)

by scope:
  scope       ops  FLOPs  transcendentals     bytes
  layer1        8  34816              512  43.3 KiB
  layer0        4   8448              256  9.63 KiB
  (no scope)    1    512                0  2.00 KiB

largest intermediates:
  f32[8,64]  2.00 KiB  dot_general       layer1 test/cli/fixtures/scoped.ts:5:12
  f32[8,64]  2.00 KiB  broadcast_in_dim  layer1 test/cli/fixtures/scoped.ts:5:22
  f32[8,64]  2.00 KiB  add               layer1 test/cli/fixtures/scoped.ts:5:22
  f32[8,64]  2.00 KiB  tanh              layer1 test/cli/fixtures/scoped.ts:5:29
  f32[8,64]  2.00 KiB  mul x3            layer1 test/cli/fixtures/scoped.ts:12:39
  f32[8,32]  1.00 KiB  dot_general       layer0 test/cli/fixtures/scoped.ts:5:12
`);
      expect(bad.code).toBe(2);
      expect(bad.stdout).toBe("");
      expect(bad.stderr).toMatch(/^error: --locs is for the IR text, which --summary leaves out\n/);
    },
    SLOW,
  );

  it(
    "compiles an entry whose arguments include a number and a boolean (f32 and bool scalar inputs)",
    async () => {
      const r = await tessera(["compile", "test/cli/fixtures/scoped.ts", "--entry", "sgd", "--emit", "stablehlo"]);
      expect(r.stderr).toBe("");
      expect(r.code).toBe(0);
      expect(r.stdout).toContain(
        "func.func public @main(%arg0: tensor<4xf32>, %arg1: tensor<4xf32>, %arg2: tensor<f32>, %arg3: tensor<i1>) -> tensor<4xf32> {",
      );
    },
    SLOW,
  );
});
