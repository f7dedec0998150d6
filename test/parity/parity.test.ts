// Parity with the Hugging Face + PEFT reference folder, on the interpreter and on PJRT CPU; the command's exit codes.
import { afterAll, describe, expect, it } from "vitest";
import { chmod, cp, readdir } from "node:fs/promises";
import { join } from "node:path";
import { fromFloat32, toFloat32 } from "../../src/formats/host_tensor.ts";
import { readSafetensors, writeSafetensors } from "../../src/formats/safetensors.ts";
import { formatParityReport, runParity, type ParityReport } from "../../src/parity/parity.ts";
import { pjrtOnHost } from "../../src/parity/execute.ts";
import { parityCommand } from "../../src/parity/command.ts";
import { FIXTURE, tempDir } from "../models/helpers.ts";

const cleanups: Array<() => Promise<void>> = [];
afterAll(async () => {
  for (const c of cleanups) await c();
});

function expectAllWithinTolerance(r: ParityReport): void {
  expect(r.groups.map((g) => g.group)).toEqual(["logits_base", "logits_lora", "loss_lora", "grad", "after_adamw", "merged"]);
  expect(r.groups.map((g) => g.count)).toEqual([1, 1, 1, 8, 8, 4]);
  for (const g of r.groups) expect(g.worst.maxRel, `${g.group}: ${g.worst.name}`).toBeLessThanOrEqual(g.tol);
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
    const code = await parityCommand({ positionals: [t.dir], options: new Map([["backend", "interpreter"]]) }, (s) => (out += s), () => {});
    expect(code).toBe(1);
    expect(out).toMatch(/grad\s+8\s+1\.00e-2\s+\S+\s+1\.00e-4\s+FAIL\s+grad\.base_model\.model\.model\.layers\.1\.self_attn\.v_proj\.lora_A\.weight/);
    expect(out).toMatch(/logits_base .* ok /);
    expect(out.trim().split("\n").at(-1)).toBe("parity: FAILED (grad past tolerance)");
  });

  it("the command reports a folder that is not a reference folder, naming the file", async () => {
    let err = "";
    const code = await parityCommand({ positionals: ["/nonexistent/folder"], options: new Map() }, () => {}, (s) => (err += s));
    expect(code).toBe(1);
    expect(err).toBe("error: /nonexistent/folder/expected.safetensors: not found (a reference folder holds expected.safetensors)\n");
  });
});
