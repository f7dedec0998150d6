// The worked example end to end: examples/train_mlp.ts trains the MLP through jit on the PJRT CPU plugin.
import { execFile } from "node:child_process";
import { fileURLToPath } from "node:url";
import { expect, it } from "vitest";

const ROOT = fileURLToPath(new URL("../../", import.meta.url));

it("examples/train_mlp.ts prints a falling loss", async () => {
  const { code, stdout, stderr } = await new Promise<{ code: number; stdout: string; stderr: string }>((resolve) => {
    execFile(process.execPath, ["--import", "tsx", "examples/train_mlp.ts"], { cwd: ROOT }, (err, stdout, stderr) =>
      resolve({ code: err ? (typeof err.code === "number" ? err.code : -1) : 0, stdout, stderr }),
    );
  });
  expect(stderr).toBe("");
  expect(code).toBe(0);
  const means = [...stdout.matchAll(/^steps +\d+-\d+ +mean loss (\d+\.\d+)$/gm)].map((m) => Number(m[1]));
  expect(means).toHaveLength(10);
  // Starts near the target's variance (about 0.8 on step 1) and ends far below it.
  expect(means[0]).toBeGreaterThan(0.15);
  expect(means.at(-1)).toBeLessThan(0.1);
  expect(means.at(-1)!).toBeLessThan(means[0]! / 2);
  expect(stdout).toMatch(/^200 steps in \d+\.\d s/m);
}, 120_000);
