// `tessera train --pack --grad-accum --eval-split --config` and `tessera eval` end to end: exact resume, eval lines in metrics.jsonl, eval = the run's eval loss, bad config files.
import { spawn } from "node:child_process";
import { mkdtemp, readFile, readdir, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { UsageError } from "../../src/cli/args.ts";
import { withFlags } from "../../src/cli/train.ts";
import { evalCommand } from "../../src/cli/eval.ts";
import { TesseraError } from "../../src/errors.ts";
import { loadRunConfigFile } from "../../src/train/config_file.ts";
import { heldOutIndices } from "../../src/train/plan.ts";
import { BIN, ROOT, trainHere, trainProcess as train } from "./helpers.ts";

let tmp: string;
let data: string;
let lines: string[];
beforeAll(async () => {
  tmp = await mkdtemp(join(tmpdir(), "tessera-pack-eval-"));
  data = join(tmp, "data.jsonl");
  // 24 prompt/answer records of 5 to 16 tokens: at --seq 24 most rows hold two records when packed.
  lines = Array.from({ length: 24 }, (_, i) => {
    const n = 3 + ((i * 5) % 11);
    const prompt = Array.from({ length: n }, (_, j) => 1 + ((i * 13 + j * 7) % 90));
    return JSON.stringify({ prompt_ids: prompt, answer_ids: [1 + ((i * 3) % 90), 2 + ((i * 11) % 90)] });
  });
  await writeFile(data, `${lines.join("\n")}\n`);
});
afterAll(() => rm(tmp, { recursive: true, force: true }));

interface MetricsLine {
  step: number;
  loss: number;
  lr: number;
  tokens: number;
  grad_norm: number;
  step_seconds: number;
  elapsed_seconds: number;
  eval_loss?: number;
  eval_perplexity?: number;
}
const metrics = async (dir: string) =>
  (await readFile(join(dir, "metrics.jsonl"), "utf8"))
    .trim()
    .split("\n")
    .map((l) => JSON.parse(l) as MetricsLine);

function tessera(args: string[]): Promise<{ code: number | null; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    const child = spawn(process.execPath, [BIN, ...args], { cwd: ROOT, env: { ...process.env, TESSERA_DEBUG: "" } });
    let stdout = "",
      stderr = "";
    child.stdout.on("data", (d) => (stdout += d));
    child.stderr.on("data", (d) => (stderr += d));
    child.on("close", (code) => resolve({ code, stdout, stderr }));
  });
}

const RUN = [
  "--seq",
  "24",
  "--batch",
  "2",
  "--targets",
  "q,v",
  "--rank",
  "4",
  "--log-every",
  "1",
  "--dropout",
  "0.1",
  "--schedule",
  "constant",
];
const KNOBS = ["--pack", "--grad-accum", "2", "--eval-split", "0.25", "--eval-every", "2", "--max-grad-norm", "0.5"];

describe("packing, accumulation and eval in a run (subprocess, PJRT CPU)", () => {
  it("a run from --config equals the same flags; 2 steps + --resume 2 equals 4 bit for bit; eval lines in metrics.jsonl; tessera eval agrees", async () => {
    const A = join(tmp, "from-config"),
      B = join(tmp, "resumed");
    const yaml = join(tmp, "run.yaml");
    await writeFile(
      yaml,
      [
        `data: ${data}`,
        "seq: 24",
        "batch: 2",
        "targets: q,v",
        "rank: 4",
        "log-every: 1",
        "dropout: 0.1",
        "schedule: constant",
        "pack: true",
        "gradAccum: 2",
        "eval-split: 0.25",
        "eval-every: 2",
        "max-grad-norm: 0.5",
        "steps: 99 # the command line's --steps wins",
        "",
      ].join("\n"),
    );
    const [a, b1] = await Promise.all([
      train(["--config", yaml, "--steps", "4", "--out", A]),
      train([...RUN, ...KNOBS, "--data", data, "--steps", "2", "--out", B]),
    ]);
    expect(a.code, a.stderr).toBe(0);
    expect(b1.code, b1.stderr).toBe(0);
    // resumed with no options: the checkpoint restores --pack, --grad-accum, --max-grad-norm and --eval-split
    const b2 = await train(["--resume", "--steps", "4", "--out", B]);
    expect(b2.code, b2.stderr).toBe(0);
    expect(a.stdout).toMatch(
      /train {4}4 steps \(batch 2 x 2 accumulated x seq 24, packed\).*grad norm clipped to 0\.5/,
    );
    expect(a.stdout).toMatch(
      /padding {2}--pack: \d+\.\d% packed \(\d+ rows\); \d+\.\d% padding unpacked \(18 rows of 24\)/,
    );
    expect(a.stdout).toMatch(/eval {5}held out of .*data\.jsonl \(--eval-split 0\.25, seed 0\): 6 records/);
    expect(a.stdout).toMatch(/eval 2\/4 {2}loss \d+\.\d{4} {2}perplexity/);

    const ma = await metrics(A);
    const mb = await metrics(B);
    expect(ma.map((m) => m.step)).toEqual([1, 2, 3, 4]);
    expect(mb.map((m) => [m.loss, m.grad_norm, m.eval_loss])).toEqual(
      ma.map((m) => [m.loss, m.grad_norm, m.eval_loss]),
    );
    for (const m of ma) {
      expect(Object.keys(m)).toEqual(
        expect.arrayContaining(["step", "loss", "lr", "tokens", "step_seconds", "elapsed_seconds", "grad_norm"]),
      );
      expect(m.tokens).toBe(2 * 2 * 24);
      if (m.step % 2 === 0) {
        expect(m.eval_loss).toBeGreaterThan(0);
        expect(m.eval_perplexity).toBeCloseTo(Math.exp(m.eval_loss!), 6);
      } else expect(m.eval_loss).toBeUndefined();
    }
    // training moved the eval loss
    expect(ma[3]!.eval_loss).not.toBe(ma[1]!.eval_loss);

    // tessera eval on the held-out records with the final adapter gives the run's last eval loss
    const held = heldOutIndices(lines.length, 0.25, 0);
    const heldFile = join(tmp, "held.jsonl");
    await writeFile(heldFile, `${lines.filter((_, i) => held.has(i)).join("\n")}\n`);
    const e = await tessera(["eval", "--adapter", join(A, "adapter"), "--data", heldFile, "--batch", "3", "--json"]);
    expect(e.code, e.stderr).toBe(0);
    const r = JSON.parse(e.stdout.trim().split("\n").at(-1)!) as { loss: number; perplexity: number; tokens: number };
    expect(Object.keys(r)).toEqual(["loss", "perplexity", "tokens"]);
    expect(r.tokens).toBe(6 * 2);
    expect(Math.abs(r.loss - ma[3]!.eval_loss!)).toBeLessThanOrEqual(1e-5 * r.loss);
    expect(r.perplexity).toBeCloseTo(Math.exp(r.loss), 6);
    // without the adapter: the base model's (different) loss
    const base = await tessera(["eval", "--data", heldFile, "--json"]);
    expect(base.code, base.stderr).toBe(0);
    expect((JSON.parse(base.stdout) as { loss: number }).loss).not.toBeCloseTo(r.loss, 4);

    // a resumed run cannot change what defines it
    const c = await train(["--resume", "--steps", "6", "--out", B, "--grad-accum", "4"]);
    expect(c.code).toBe(1);
    expect(c.stderr).toMatch(/--grad-accum 4 differs from the run being resumed \(2/);
  });
});

describe("--config files and the new flags' checks (in process)", () => {
  it("reads YAML and JSON, kebab-case or camelCase; flags typed on the command line win", async () => {
    const y = join(tmp, "a.yml");
    await writeFile(y, "grad-accum: 4\nmaxGradNorm: 0\ntargets: [q_proj, v]\npack: true\nlr: 3e-4\n");
    expect(await loadRunConfigFile(y)).toEqual({
      gradAccum: 4,
      maxGradNorm: 0,
      targets: ["q", "v"],
      pack: true,
      lr: 3e-4,
    });
    const j = join(tmp, "a.json");
    await writeFile(j, JSON.stringify({ "eval-every": 5, evalData: "held.jsonl", targets: "q,k" }));
    const fromJson = await loadRunConfigFile(j);
    expect(fromJson).toEqual({ evalEvery: 5, evalData: "held.jsonl", targets: ["q", "k"] });
    expect(withFlags(fromJson, { evalEvery: 7, steps: undefined })).toEqual({ ...fromJson, evalEvery: 7 });
  });

  it("an unknown key, a bad value or a malformed file is a usage error naming the file and the key; --out stays untouched", async () => {
    const out = join(tmp, "untouched");
    const bad = async (name: string, text: string) => {
      const f = join(tmp, name);
      await writeFile(f, text);
      const e = await trainHere({ config: f, out }).catch((err: unknown) => err);
      expect(e).toBeInstanceOf(UsageError);
      return (e as UsageError).message;
    };
    expect(await bad("typo.yaml", "steps: 10\ngrad-acum: 2\n")).toMatch(
      /typo\.yaml: unknown key "grad-acum" \(did you mean "grad-accum"\?\)/,
    );
    expect(await bad("value.yaml", "grad-accum: 0\n")).toMatch(/value\.yaml: grad-accum: .*(>=|at least|greater).*1/i);
    expect(await bad("type.json", '{"pack": "yes"}')).toMatch(/type\.json: pack: .*boolean/i);
    expect(await bad("list.yaml", "- steps: 1\n")).toMatch(/list\.yaml: expected a mapping of train options/);
    expect(await bad("broken.json", '{"steps": 1,')).toMatch(/broken\.json: not valid JSON/);
    expect(await bad("twice.yaml", "grad-accum: 2\ngradAccum: 3\n")).toMatch(/twice\.yaml: "gradAccum" is given twice/);
    await expect(readdir(out)).rejects.toThrow();
  });

  it("--eval-split needs --data and a share in (0, 1); --eval-data and --eval-split exclude each other", async () => {
    const err = (o: Record<string, string>) => trainHere({ out: join(tmp, "x"), ...o }).catch((e: unknown) => e);
    expect(String(await err({ "eval-split": "0.1" }))).toMatch(/--eval-split holds out a share of --data/);
    expect(String(await err({ data, "eval-split": "1.5" }))).toMatch(/--eval-split must be a share between 0 and 1/);
    expect(String(await err({ data, "eval-split": "0.1", "eval-data": data }))).toMatch(/alternatives/);
    expect(String(await err({ "eval-every": "5" }))).toMatch(/--eval-every needs eval data/);
    expect(String(await err({ "grad-accum": "0" }))).toMatch(/--grad-accum must be an integer >= 1/);
    expect(String(await err({ "max-grad-norm": "-1" }))).toMatch(/--max-grad-norm must be a number >= 0/);
  });

  it("holds out a seeded share: the same records for the same seed, at least one on each side", () => {
    const a = heldOutIndices(100, 0.05, 3);
    expect(a.size).toBe(5);
    expect([...heldOutIndices(100, 0.05, 3)]).toEqual([...a]);
    expect([...heldOutIndices(100, 0.05, 4)]).not.toEqual([...a]);
    expect(heldOutIndices(2, 0.01, 0).size).toBe(1);
    expect(heldOutIndices(2, 0.99, 0).size).toBe(1);
  });
});

describe("tessera eval's checks (in process)", () => {
  it("a bad --batch or --seq is a usage error; a missing or malformed data file exits 1 naming it", async () => {
    const run = (o: Record<string, string>) =>
      evalCommand({ positionals: [], options: new Map(Object.entries(o)), help: false }).catch((e: unknown) => e);
    expect(await run({ data, batch: "0" })).toBeInstanceOf(UsageError);
    expect(String(await run({ data, seq: "x" }))).toMatch(/--seq must be an integer >= 2; got 'x'/);
    const missing = await run({ data: join(tmp, "nope.jsonl") });
    expect(missing).toBeInstanceOf(TesseraError);
    expect((missing as TesseraError).exitCode).toBe(1);
    expect(String(missing)).toMatch(/nope\.jsonl/);
    const broken = join(tmp, "broken.jsonl");
    await writeFile(broken, `${lines[0]}\n{"prompt_ids": [1, 2], "answer_ids": "x"}\n`);
    expect(String(await run({ data: broken }))).toMatch(/broken\.jsonl:2: .*answer_ids/);
  });
});
