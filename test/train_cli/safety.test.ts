// `tessera train` keeping runs safe (issue 12): NaN/Inf stops or skips, the --out lock, non-empty --out, --overwrite, file-system errors, temporaries, SIGTERM.
import { spawn } from "node:child_process";
import { existsSync } from "node:fs";
import { copyFile, mkdir, mkdtemp, readdir, readFile, rm, writeFile } from "node:fs/promises";
import { hostname, tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { UsageError } from "../../src/cli/args.ts";
import { BIN, ROOT, trainHere } from "./helpers.ts";
import { fromFloat32, toFloat32 } from "../../src/formats/host_tensor.ts";
import { adapterTensors, loadAdapter, makeLoraConfig, saveAdapter } from "../../src/formats/peft.ts";
import { readSafetensors, writeSafetensors } from "../../src/formats/safetensors.ts";
import { LLAMA_TINY } from "../../models/llama.ts";
import { initLora, loraLayout, loraToAdapter } from "../../models/lora.ts";
import { listCheckpoints, loadCheckpoint } from "../../src/train/checkpoint.ts";

const FIXTURE = join(ROOT, "../shared/fixtures/llama-tiny-a");
const SMALL = { seq: "16", batch: "2", targets: "q,v", rank: "4", "log-every": "1" };

const metrics = async (dir: string) =>
  (await readFile(join(dir, "metrics.jsonl"), "utf8"))
    .trim()
    .split("\n")
    .map((l) => JSON.parse(l) as Record<string, unknown>);

/** A finished earlier run's files, to see whether a new run touches them. */
async function earlierRun(dir: string): Promise<void> {
  await mkdir(join(dir, "checkpoints", "step-9"), { recursive: true });
  await mkdir(join(dir, "adapter"), { recursive: true });
  await writeFile(join(dir, "checkpoints", "step-9", "trainer_state.json"), "{}\n");
  await writeFile(join(dir, "adapter", "adapter_model.safetensors"), "old adapter");
  await writeFile(join(dir, "metrics.jsonl"), '{"step":1}\n');
}
const earlierRunIntact = async (dir: string) =>
  (await readFile(join(dir, "adapter", "adapter_model.safetensors"), "utf8")) === "old adapter" &&
  existsSync(join(dir, "checkpoints", "step-9")) &&
  (await readFile(join(dir, "metrics.jsonl"), "utf8")) === '{"step":1}\n';

let tmp: string;
beforeAll(async () => {
  tmp = await mkdtemp(join(tmpdir(), "tessera-train-safety-"));
});
afterAll(() => rm(tmp, { recursive: true, force: true }));

describe("non-finite loss or gradients (in process, PJRT CPU)", () => {
  // Without dropout this run goes non-finite in its gradients first (step 6), with the loss still finite.
  it("--lr 1000: stops with exit 1 naming the step, keeps the finite checkpoints, writes no adapter", async () => {
    const out = join(tmp, "nan-lr");
    const r = await trainHere({ ...SMALL, steps: "20", lr: "1000", "save-every": "2", out });
    expect(r.code).toBe(1);
    const m =
      /^error: non-finite training at step (\d+): (?:the loss is (?:NaN|Inf)|the gradients are non-finite \(gradient norm (?:NaN|Inf), loss \d+\.\d{4}\))\. The run stopped without applying or writing that step \(last checkpoint: (.+); the adapter was not written\)\. Lower --lr, check the base weights and the adapter for NaN\/Inf, or pass --on-nonfinite skip to skip such updates\n$/.exec(
        r.err,
      );
    expect(m, r.err).not.toBeNull();
    const bad = Number(m![1]);
    expect(bad).toBeGreaterThan(1);
    expect(existsSync(join(out, "adapter"))).toBe(false);
    const ckpts = await listCheckpoints(out);
    expect(ckpts.map((c) => c.step)).toEqual(Array.from({ length: Math.floor((bad - 1) / 2) }, (_, i) => 2 * (i + 1)));
    expect(m![2]).toBe(ckpts.at(-1)!.dir);
    const last = await loadCheckpoint(ckpts.at(-1)!.dir, LLAMA_TINY);
    for (const f of Object.values(last.lora))
      expect([...toFloat32(f!.a), ...toFloat32(f!.b)].every(Number.isFinite)).toBe(true);
    const lines = await metrics(out);
    expect(lines.map((l) => l.step)).toEqual(Array.from({ length: bad - 1 }, (_, i) => i + 1));
    for (const l of lines) expect(typeof l.grad_norm === "number" && Number.isFinite(l.grad_norm)).toBe(true);
    expect(existsSync(join(out, ".tessera.lock"))).toBe(false);
  });

  it("NaN in the adapter: stops at step 1, and with --overwrite the earlier run in --out is left as it was", async () => {
    const dir = join(tmp, "nan-adapter");
    const layout = loraLayout(makeLoraConfig({ r: 4, loraAlpha: 8, targetModules: ["q_proj", "v_proj"] }), LLAMA_TINY);
    const lora = initLora(layout, LLAMA_TINY, 0);
    const b = toFloat32(lora.q!.b);
    b[3] = Number.NaN;
    lora.q!.b = fromFloat32(b, lora.q!.b.shape);
    await saveAdapter(dir, loraToAdapter(layout, lora, LLAMA_TINY), LLAMA_TINY);
    const out = join(tmp, "nan-adapter-out");
    await earlierRun(out);
    const r = await trainHere({ seq: "16", batch: "2", steps: "3", adapter: dir, out, overwrite: "true" });
    expect(r.code).toBe(1);
    expect(r.err).toMatch(
      /^error: non-finite training at step 1: the loss is NaN\. The run stopped without applying or writing that step \(no checkpoint yet; the adapter was not written\)\./,
    );
    expect(await earlierRunIntact(out)).toBe(true);
  });

  it("NaN in the base weights (--model): stops at step 1 with exit 1", async () => {
    const model = join(tmp, "nan-model");
    await mkdir(model);
    await copyFile(join(FIXTURE, "config.json"), join(model, "config.json"));
    const { tensors } = await readSafetensors(join(FIXTURE, "model.safetensors"));
    const w = tensors.get("model.layers.1.mlp.down_proj.weight")!;
    const x = toFloat32(w);
    x[7] = Number.POSITIVE_INFINITY;
    x[8] = Number.NEGATIVE_INFINITY;
    tensors.set("model.layers.1.mlp.down_proj.weight", fromFloat32(x, w.shape, w.dtype));
    await writeSafetensors(join(model, "model.safetensors"), tensors);
    const data = join(tmp, "nan-model.jsonl");
    await writeFile(
      data,
      `${Array.from({ length: 4 }, (_, i) =>
        JSON.stringify({ prompt_ids: [1, 10 + i, 20 + i], answer_ids: [30 + i, 40 + i] }),
      ).join("\n")}\n`,
    );
    const r = await trainHere({
      model,
      data,
      batch: "2",
      steps: "2",
      precision: "f32",
      out: join(tmp, "nan-model-out"),
    });
    expect(r.code).toBe(1);
    expect(r.err).toMatch(/^error: non-finite training at step 1: the loss is (NaN|Inf)\./);
  });

  it("--on-nonfinite skip: skipped updates are counted in metrics, the adapter stays finite, exit 0; --overwrite replaced the earlier run", async () => {
    const out = join(tmp, "skip");
    await earlierRun(out);
    const r = await trainHere({
      ...SMALL,
      steps: "20",
      lr: "1000",
      "on-nonfinite": "skip",
      "save-every": "0",
      out,
      overwrite: "true",
    });
    expect(r.err).toBe("");
    expect(r.code).toBe(0);
    const lines = await metrics(out);
    expect(lines.map((l) => l.step)).toEqual(Array.from({ length: 20 }, (_, i) => i + 1));
    const skipped = lines.filter((l) => l.skipped === true).length;
    expect(skipped).toBeGreaterThan(0);
    expect(lines.at(-1)!.skipped_steps).toBe(skipped);
    expect(r.out).toMatch(
      new RegExp(`^done: 20 steps in .*; ${skipped} skipped \\(NaN/Inf loss or gradients\\)$`, "m"),
    );
    expect(r.out).toContain(`note: removed the earlier run in ${out} (--overwrite)\n`);
    for (const t of adapterTensors(await loadAdapter(join(out, "adapter"), LLAMA_TINY)).values())
      expect(toFloat32(t).every(Number.isFinite)).toBe(true);
    expect((await listCheckpoints(out)).map((c) => c.step)).toEqual([20]);
  });
});

describe("file-system errors during a run (in process, PJRT CPU)", () => {
  it("a metrics file that cannot be appended to is an error naming it (exit 1); the checkpoint resumed from stays", async () => {
    const out = join(tmp, "fs-mid-run");
    expect((await trainHere({ ...SMALL, steps: "2", out })).code).toBe(0);
    await rm(join(out, "metrics.jsonl"));
    await mkdir(join(out, "metrics.jsonl"));
    const r = await trainHere({ steps: "3", out, resume: "true" });
    expect(r.code).toBe(1);
    expect(r.err).toBe(
      `error: cannot append to '${join(out, "metrics.jsonl")}': is a directory, expected a file (EISDIR)\n`,
    );
    expect((await listCheckpoints(out)).map((c) => c.step)).toEqual([2]);
    expect(existsSync(join(out, ".tessera.lock"))).toBe(false);
  });
});

describe("--out: lock, non-empty folder, file-system errors, temporaries (in process, before any device work)", () => {
  it("a second run into a busy --out reports the lock, with or without --resume (exit 1)", async () => {
    const out = join(tmp, "busy");
    await mkdir(out);
    const lock = { pid: process.pid, host: hostname(), started: "2026-01-01T00:00:00.000Z" };
    await writeFile(join(out, ".tessera.lock"), JSON.stringify(lock));
    const msg = `error: --out ${out} is in use by another training run (pid ${process.pid} on ${hostname()}, since 2026-01-01T00:00:00.000Z; lock file ${join(out, ".tessera.lock")}); wait for it to end or choose another --out\n`;
    expect(await trainHere({ out })).toEqual({ code: 1, out: "", err: msg });
    expect(await trainHere({ out, resume: "true" })).toEqual({ code: 1, out: "", err: msg });
    expect(JSON.parse(await readFile(join(out, ".tessera.lock"), "utf8"))).toEqual(lock);
  });

  it("a stale lock (its process is gone) is taken over with a note; --resume also removes temporaries a killed run left", async () => {
    const out = join(tmp, "stale");
    const dead = await new Promise<number>((res) => {
      const c = spawn(process.execPath, ["-e", ""]);
      c.on("exit", () => res(c.pid!));
    });
    await mkdir(join(out, "checkpoints", ".step-3.tmp-1-abcd"), { recursive: true });
    await mkdir(join(out, "adapter"), { recursive: true });
    await writeFile(join(out, "adapter", ".adapter_model.safetensors.tmp-1-abcd"), "partial");
    await writeFile(join(out, ".metrics.jsonl.tmp-1-abcd"), "partial");
    await writeFile(
      join(out, ".tessera.lock"),
      JSON.stringify({ pid: dead, host: hostname(), started: "2026-01-01T00:00:00.000Z" }),
    );
    const r = await trainHere({ out, resume: "true" });
    expect(r).toEqual({
      code: 1,
      out: `note: took over the lock of a run that is no longer running (pid ${dead}, started 2026-01-01T00:00:00.000Z)\nnote: removed 3 temporary file(s) an interrupted run left in ${out}\n`,
      err: `error: --resume: no checkpoint in ${join(out, "checkpoints")} (train without --resume first, or point --out at an earlier run)\n`,
    });
    expect((await readdir(out)).sort()).toEqual(["adapter", "checkpoints"]);
    expect(await readdir(join(out, "checkpoints"))).toEqual([]);
    expect(await readdir(join(out, "adapter"))).toEqual([]);
  });

  it("a new run refuses a non-empty --out without --resume or --overwrite; --resume with --overwrite is a usage error", async () => {
    const out = join(tmp, "full");
    await earlierRun(out);
    expect(await trainHere({ out })).toEqual({
      code: 1,
      out: "",
      err: `error: --out ${out} is not empty (adapter, checkpoints, metrics.jsonl): continue that run with --resume, or pass --overwrite to replace it (nothing is deleted before the first step has run)\n`,
    });
    expect(await earlierRunIntact(out)).toBe(true);
    await expect(trainHere({ out, resume: "true", overwrite: "true" })).rejects.toThrow(
      new UsageError(
        "--resume and --overwrite contradict each other: --resume continues the run in --out, --overwrite replaces it",
        "train",
      ),
    );
  });

  it("--overwrite deletes nothing when the run fails before its first step (a bad data file)", async () => {
    const out = join(tmp, "overwrite-fails");
    await earlierRun(out);
    const bad = join(tmp, "bad.jsonl");
    await writeFile(bad, '{"prompt_ids":[1,2],"answer_ids":[300]}\n');
    const r = await trainHere({ out, overwrite: "true", data: bad });
    expect(r).toEqual({
      code: 1,
      out: "",
      err: `error: ${bad}:1: "answer_ids"[0] = 300 is outside the model's vocabulary (token ids 0..95)\n`,
    });
    expect(await earlierRunIntact(out)).toBe(true);
    expect(existsSync(join(out, ".tessera.lock"))).toBe(false);
  });

  it("an --out that cannot be created is an error naming it (exit 1), found before the model is read", async () => {
    const file = join(tmp, "a-file");
    await writeFile(file, "x");
    const model = join(tmp, "no-such-model");
    const under = join(file, "out");
    expect(await trainHere({ out: under, model })).toEqual({
      code: 1,
      out: "",
      err: `error: cannot create the output folder '${under}': a part of '${under}' is a file, not a directory (ENOTDIR)\n`,
    });
    expect(await trainHere({ out: file, model })).toEqual({
      code: 1,
      out: "",
      err: `error: --out ${file}: is a file, expected a folder for the run's output\n`,
    });
  });
});

describe("SIGTERM (subprocess)", () => {
  it("checkpoints like Ctrl-C and exits 130", async () => {
    const out = join(tmp, "sigterm");
    const r = await new Promise<{ code: number | null; stdout: string; stderr: string }>((resolve) => {
      const child = spawn(
        process.execPath,
        [BIN, "train", "--seq", "16", "--batch", "2", "--steps", "100000", "--log-every", "1", "--out", out],
        { cwd: ROOT },
      );
      let stdout = "",
        stderr = "",
        sent = false;
      child.stdout.on("data", (d) => {
        stdout += d;
        if (!sent && /^step +2\//m.test(stdout)) {
          sent = true;
          child.kill("SIGTERM");
        }
      });
      child.stderr.on("data", (d) => (stderr += d));
      child.on("close", (code) => resolve({ code, stdout, stderr }));
    });
    expect(r.stderr).toBe("");
    expect(r.code).toBe(130);
    const m = /^stopped at step (\d+) of 100000; checkpoint (.+)$/m.exec(r.stdout);
    expect(m).not.toBeNull();
    expect((await loadCheckpoint(m![2]!, LLAMA_TINY)).optimizer.step).toBe(Number(m![1]));
    expect(existsSync(join(out, ".tessera.lock"))).toBe(false);
  });
});
