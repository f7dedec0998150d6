// Parity with the Hugging Face + PEFT reference folder, on the interpreter and on PJRT CPU; the command's exit codes.
import { afterAll, describe, expect, it } from "vitest";
import { chmod, cp, readdir, readFile, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { fromFloat32, toFloat32 } from "../../src/formats/host_tensor.ts";
import { readSafetensors, writeSafetensors } from "../../src/formats/safetensors.ts";
import { adamwBound, formatParityReport, runParity, type ParityReport } from "../../src/parity/parity.ts";
import { pjrtOnHost } from "../../src/parity/execute.ts";
import { parityCommand } from "../../src/parity/command.ts";
import { FIXTURE, tempDir } from "../models/helpers.ts";

const cleanups: Array<() => Promise<void>> = [];
afterAll(async () => {
  for (const c of cleanups) await c();
});

function expectAllWithinTolerance(r: ParityReport): void {
  expect(r.groups.map((g) => g.group)).toEqual([
    "logits_base",
    "logits_lora",
    "loss_lora",
    "grad",
    "adamw_step",
    "after_adamw",
    "merged",
  ]);
  expect(r.groups.map((g) => g.count)).toEqual([1, 1, 1, 8, 8, 8, 4]);
  for (const g of r.groups)
    expect(g.score ?? g.worst!.maxRel, `${g.group}: ${g.worst!.name}`).toBeLessThanOrEqual(g.tol);
  expect(r.ok).toBe(true);
}

describe("llama-tiny-a parity", () => {
  it("reference interpreter: every quantity within the README's tolerances", async () => {
    const r = await runParity(FIXTURE);
    console.log(formatParityReport(r));
    expectAllWithinTolerance(r);
  });

  it("PJRT CPU (compiled StableHLO): every quantity within the README's tolerances", async () => {
    const r = await runParity(FIXTURE, { executor: pjrtOnHost, backend: "pjrt-cpu" });
    console.log(formatParityReport(r));
    expectAllWithinTolerance(r);
  });

  it("a reference that disagrees fails that quantity alone, and the command exits 1", async () => {
    const t = await tempDir("parity");
    cleanups.push(t.cleanup);
    await cp(FIXTURE, t.dir, { recursive: true });
    for (const f of await readdir(t.dir)) await chmod(join(t.dir, f), 0o644);
    const file = join(t.dir, "expected.safetensors");
    const { metadata, tensors } = await readSafetensors(file);
    const key = "grad.base_model.model.model.layers.1.self_attn.v_proj.lora_A.weight";
    const g = toFloat32(tensors.get(key)!);
    g[5] = g[5]! + 0.01 * Math.max(...g.map(Math.abs)); // a 1% error, past the 1e-4 tolerance
    tensors.set(key, fromFloat32(g, tensors.get(key)!.shape));
    await writeSafetensors(file, tensors, { metadata });

    let out = "";
    const code = await parityCommand(
      { positionals: [t.dir], options: new Map([["backend", "interpreter"]]) },
      (s) => (out += s),
      () => {},
    );
    expect(code).toBe(1);
    expect(out).toMatch(
      /grad\s+8\s+1\.00e-2\s+\S+\s+1\.00e-4\s+FAIL\s+grad\.base_model\.model\.model\.layers\.1\.self_attn\.v_proj\.lora_A\.weight/,
    );
    expect(out).toMatch(/logits_base .* ok /);
    expect(out.trim().split("\n").at(-1)).toBe("parity: FAILED (grad past tolerance)");
  });

  it("the command reports a folder that is not a reference folder, naming the file", async () => {
    let err = "";
    const code = await parityCommand(
      { positionals: ["/nonexistent/folder"], options: new Map() },
      () => {},
      (s) => (err += s),
    );
    expect(code).toBe(1);
    expect(err).toBe(
      "error: /nonexistent/folder/expected.safetensors: not found (a reference folder holds expected.safetensors)\n",
    );
  });

  /** A copy of the fixture, writable. */
  async function copyFixture(): Promise<string> {
    const t = await tempDir("parity");
    cleanups.push(t.cleanup);
    await cp(FIXTURE, t.dir, { recursive: true });
    for (const f of await readdir(t.dir)) await chmod(join(t.dir, f), 0o644);
    return t.dir;
  }

  it("validates expected.json: invalid JSON and a wrong type name the file and field (exit 1); a BOM is accepted", async () => {
    const dir = await copyFixture();
    const file = join(dir, "expected.json");
    const original = await readFile(file, "utf8");
    const run = async () => {
      let out = "",
        err = "";
      const code = await parityCommand(
        { positionals: [dir], options: new Map([["backend", "interpreter"]]) },
        (s) => (out += s),
        (s) => (err += s),
      );
      return { code, out, err };
    };
    await writeFile(file, "{ oops");
    const bad = await run();
    expect(bad.code).toBe(1);
    expect(bad.err).toMatch(new RegExp(`^error: ${file}: not valid JSON \\(`));
    await writeFile(file, JSON.stringify({ ...JSON.parse(original), adamw: { lr: "0.001" } }));
    const wrong = await run();
    expect(wrong.code).toBe(1);
    expect(wrong.err).toBe(`error: ${file}: field "adamw.lr": expected number, received string (got "0.001")\n`);
    await writeFile(file, `\uFEFF${original}`);
    const bom = await run();
    expect(bom.code).toBe(0);
    expect(bom.out.trim().split("\n").at(-1)).toBe("parity: ok");
  });

  it("a quantity missing from the reference fails, and is named", async () => {
    const dir = await copyFixture();
    const file = join(dir, "expected.safetensors");
    const { metadata, tensors } = await readSafetensors(file);
    for (const k of [...tensors.keys()]) if (k.startsWith("merged.")) tensors.delete(k);
    tensors.delete("after_adamw.base_model.model.model.layers.1.self_attn.v_proj.lora_B.weight");
    await writeSafetensors(file, tensors, { metadata });
    let out = "";
    const code = await parityCommand(
      { positionals: [dir], options: new Map([["backend", "interpreter"]]) },
      (s) => (out += s),
      () => {},
    );
    expect(code).toBe(1);
    expect(out).toMatch(/\n {2}merged +0 +- +- +1\.00e-5 +FAIL +missing from the reference\n/);
    expect(out).toContain(
      "      missing from the reference: after_adamw.base_model.model.model.layers.1.self_attn.v_proj.lora_B.weight\n",
    );
    expect(out.trim().split("\n").at(-1)).toBe(
      "parity: FAILED (after_adamw missing from the reference, merged missing from the reference)",
    );
  });
});

describe("the end-to-end AdamW bound", () => {
  const adamw = { lr: 1e-3, beta1: 0.9, beta2: 0.999, eps: 1e-8, weightDecay: 0 };
  const t = (xs: number[]) => fromFloat32(new Float32Array(xs), [xs.length]);
  const step = (w: number, g: number) => w - (adamw.lr * g) / (Math.abs(g) + adamw.eps);
  it("allows what a gradient error within grad's tolerance does to a weight whose gradient is near eps, and no more", () => {
    const w = [0.05, -0.02],
      g = [1e-8, 0.02];
    const ref = g.map((gi, i) => step(w[i]!, gi));
    // A gradient error of 1e-9 (5e-8 relative to max|g|, inside grad's 1e-4) moves the first weight by ~2.4e-5.
    const noisy = [step(w[0]!, g[0]! + 1e-9), ref[1]!];
    expect(Math.abs(noisy[0]! - ref[0]!) / 0.05).toBeGreaterThan(1e-4); // the old normwise check fails it
    expect(adamwBound(t(noisy), t(ref), t(g), adamw, { grad: 1e-4, step: 1e-6 })).toBeLessThan(1);
    // The same shift on the weight with a large gradient is a real error.
    const wrong = [ref[0]!, ref[1]! + 2.5e-4];
    expect(adamwBound(t(wrong), t(ref), t(g), adamw, { grad: 1e-4, step: 1e-6 })).toBeGreaterThan(1);
  });
});
