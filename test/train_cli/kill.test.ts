// Fault injection: a run killed with SIGKILL at seeded random points (steps, checkpoint writes, the adapter write) and resumed each time ends byte-identical to an uninterrupted run.
import { mkdtemp, readdir, readFile, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { type TrainProcess, trainProcess } from "./helpers.ts";
import { mulberry32 } from "../../src/host/random.ts";
import { listCheckpoints } from "../../src/train/checkpoint.ts";

const STEPS = 10;
// A checkpoint after every step, so most of a run's time after the compile is spent writing files.
const ARGS = [
  "--seq",
  "16",
  "--batch",
  "2",
  "--targets",
  "q,v",
  "--rank",
  "4",
  "--dropout",
  "0.1",
  "--log-every",
  "1",
  "--save-every",
  "1",
  "--steps",
  String(STEPS),
];

/** Runs `tessera train`; with `killAfter`, sends SIGKILL `delayMs` after the line of that step appears. */
function train(args: string[], killAfter?: { step: number; delayMs: number }): Promise<TrainProcess> {
  let armed = false;
  return trainProcess(args, (stdout, child) => {
    if (killAfter && !armed && new RegExp(`^step +${killAfter.step}/`, "m").test(stdout)) {
      armed = true;
      setTimeout(() => child.kill("SIGKILL"), killAfter.delayMs);
    }
  });
}

/** Every path under `dir`, relative. */
async function walk(dir: string, rel = ""): Promise<string[]> {
  const out: string[] = [];
  for (const e of await readdir(join(dir, rel), { withFileTypes: true })) {
    const p = join(rel, e.name);
    out.push(p);
    if (e.isDirectory()) out.push(...(await walk(dir, p)));
  }
  return out;
}
const TEMPORARY = /(^|\/)\.[^/]*\.(tmp|bak|old|stale)-|\.tessera\.lock/;

let tmp: string;
beforeAll(async () => {
  tmp = await mkdtemp(join(tmpdir(), "tessera-train-kill-"));
});
afterAll(() => rm(tmp, { recursive: true, force: true }));

describe("tessera train under SIGKILL (subprocess, PJRT CPU)", () => {
  it("killed at seeded random points and resumed each time, ends with the uninterrupted run's adapter and no temporaries", async () => {
    const A = join(tmp, "straight"),
      B = join(tmp, "killed");
    const straight = train([...ARGS, "--out", A]);

    // Three kills: a few ms after the line of a random early step (into the checkpoint write that follows it, or
    // the next step), then twice after the last step's line: soon (the final checkpoint) and later (the adapter
    // write, which follows it). Then a last run without a kill, unless the last one finished. A kill that comes after the run ended finds exit 0.
    const rand = mulberry32(20261206);
    const kills = [
      { step: 2 + Math.floor(rand() * 4), delayMs: Math.floor(rand() * 15) },
      { step: STEPS, delayMs: Math.floor(rand() * 12) },
      { step: STEPS, delayMs: 12 + Math.floor(rand() * 18) },
    ];
    const log: string[] = [];
    let killed = false,
      finished = false;
    for (const kill of [...kills, undefined]) {
      if (!kill && finished) break;
      const resume = (await listCheckpoints(B)).length > 0;
      const r = await train([...ARGS, "--out", B, resume ? "--resume" : "--overwrite"], kill);
      // A run after a SIGKILL that left its lock (a kill can also land after the lock was released) takes it over.
      if (killed)
        expect(r.stdout, log.join("\n")).toMatch(
          /^note: took over the lock of a run that is no longer running \(pid \d+, started /m,
        );
      finished = r.code === 0;
      const left = (await walk(B).catch(() => [])).filter((p) => TEMPORARY.test(p));
      killed = r.signal === "SIGKILL" && left.includes(".tessera.lock");
      log.push(
        `${kill ? `kill after step ${kill.step} + ${kill.delayMs} ms` : "no kill"}: ${r.signal ?? `exit ${r.code}`}; left ${left.join(", ") || "nothing"}`,
      );
      if (kill && r.signal !== "SIGKILL") expect(r.code, log.join("\n") + r.stderr).toBe(0);
      if (!kill) {
        expect(r.stderr, log.join("\n")).toBe("");
        expect(r.code, log.join("\n")).toBe(0);
      }
    }
    const a = await straight;
    expect(a.code).toBe(0);
    for (const f of [
      "adapter/adapter_model.safetensors",
      "adapter/adapter_config.json",
      `checkpoints/step-${STEPS}/optimizer.safetensors`,
    ]) {
      expect(Buffer.compare(await readFile(join(A, f)), await readFile(join(B, f))), `${f}\n${log.join("\n")}`).toBe(0);
    }
    const steps = (await readFile(join(B, "metrics.jsonl"), "utf8"))
      .trim()
      .split("\n")
      .map((l) => (JSON.parse(l) as { step: number }).step);
    expect(steps).toEqual(Array.from({ length: STEPS }, (_, i) => i + 1));
    expect(
      (await walk(B)).filter((p) => TEMPORARY.test(p)),
      log.join("\n"),
    ).toEqual([]);
    console.log(log.join("\n"));
  }, 300_000);
});
