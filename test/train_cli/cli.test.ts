// `tessera train` end to end: short runs as subprocesses (adapter written and read back, exact resume, Ctrl-C), bad input in process.
import { existsSync } from "node:fs";
import { mkdir, mkdtemp, readFile, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { UsageError } from "../../src/cli/args.ts";
import { ROOT, trainHere, trainProcess as train } from "./helpers.ts";
import { adapterTensors, loadAdapter } from "../../src/formats/peft.ts";
import { toFloat32 } from "../../src/formats/host_tensor.ts";
import { LLAMA_TINY } from "../../models/llama.ts";
import { listCheckpoints, loadCheckpoint } from "../../src/train/checkpoint.ts";

// Small everything: two targets, rank 4, 16-token rows. Dropout on, so the resumed RNG stream is checked too.
const TINY = [
  "--seq",
  "16",
  "--batch",
  "2",
  "--targets",
  "q,v",
  "--rank",
  "4",
  "--alpha",
  "8",
  "--dropout",
  "0.1",
  "--schedule",
  "constant",
  "--warmup",
  "2",
  "--log-every",
  "1",
];

let tmp: string;
let data: string;
beforeAll(async () => {
  tmp = await mkdtemp(join(tmpdir(), "tessera-train-cli-"));
  data = join(tmp, "rag.jsonl");
  // Five prompt/answer records: a 4-step run of batch 2 crosses an epoch boundary after the resume point.
  const lines = Array.from({ length: 5 }, (_, i) =>
    JSON.stringify({ prompt_ids: [1, 10 + i, 20 + i, 30 + i, 2, 10 + i], answer_ids: [20 + i, 40 + i] }),
  );
  await writeFile(data, `${lines.join("\n")}\n`);
});
afterAll(() => rm(tmp, { recursive: true, force: true }));

const metrics = async (dir: string) =>
  (await readFile(join(dir, "metrics.jsonl"), "utf8"))
    .trim()
    .split("\n")
    .map((l) => JSON.parse(l) as { step: number; loss: number });

describe("tessera train (subprocess, PJRT CPU)", () => {
  it.concurrent("writes a PEFT adapter that matches the options, and 2 steps + --resume 2 steps equals 4 steps bit for bit", async () => {
    const A = join(tmp, "straight"),
      B = join(tmp, "resumed");
    const [a, b1] = await Promise.all([
      train([...TINY, "--data", data, "--steps", "4", "--out", A]),
      train([...TINY, "--data", data, "--steps", "2", "--out", B]),
    ]);
    expect(a.stderr).toBe("");
    expect(a.code).toBe(0);
    expect(b1.code).toBe(0);
    expect(a.stdout).toMatch(/^model {4}built-in tiny Llama \(2 layers, hidden 32, vocab 96\), seeded random weights/m);
    expect(a.stdout).toMatch(/^data {5}.*rag\.jsonl: 5 records$/m);
    expect(a.stdout).toMatch(/^step 1\/4 {2}loss \d+\.\d{4} {2}lr 5\.00e-3 {2}compiled \+ ran in/m);
    expect(a.stdout).toMatch(/^step 4\/4 {2}loss \d+\.\d{4} {2}lr 1\.00e-2 {2}[\d.]+k? tok\/s {2}elapsed [\d.]+s$/m);
    expect(a.stdout).toContain(`adapter  ${join(A, "adapter")} (adapter_config.json + adapter_model.safetensors`);
    expect(a.stdout).not.toContain("\x1b");

    const adapter = await loadAdapter(join(A, "adapter"), LLAMA_TINY);
    expect(adapter.config).toMatchObject({
      r: 4,
      loraAlpha: 8,
      loraDropout: 0.1,
      targetModules: ["q_proj", "v_proj"],
      baseModelNameOrPath: null,
    });
    const tensors = adapterTensors(adapter);
    expect([...tensors.keys()].sort()).toEqual(
      [0, 1]
        .flatMap((l) =>
          ["q", "v"].flatMap((m) =>
            ["A", "B"].map((w) => `base_model.model.model.layers.${l}.self_attn.${m}_proj.lora_${w}.weight`),
          ),
        )
        .sort(),
    );
    expect(tensors.get("base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight")!.shape).toEqual([4, 32]);
    expect(
      toFloat32(tensors.get("base_model.model.model.layers.1.self_attn.v_proj.lora_B.weight")!).some((x) => x !== 0),
    ).toBe(true);
    expect((await metrics(A)).map((m) => m.step)).toEqual([1, 2, 3, 4]);
    expect((await listCheckpoints(A)).map((c) => c.step)).toEqual([4]);

    const b2 = await train([...TINY, "--steps", "4", "--out", B, "--resume"]);
    expect(b2.stderr).toBe("");
    expect(b2.code).toBe(0);
    expect(b2.stdout).toContain(`adapter  resumed from ${join(B, "checkpoints", "step-2")} (step 2)`);
    expect(b2.stdout).toMatch(/^step 3\/4 /m);
    for (const f of [
      "adapter/adapter_model.safetensors",
      "adapter/adapter_config.json",
      "checkpoints/step-4/optimizer.safetensors",
      "checkpoints/step-4/adapter_model.safetensors",
    ]) {
      expect(Buffer.compare(await readFile(join(A, f)), await readFile(join(B, f))), f).toBe(0);
    }
    expect(await metrics(B)).toEqual(
      (await metrics(A)).map((m, i) =>
        i < 2 ? expect.objectContaining({ step: m.step }) : expect.objectContaining({ step: m.step, loss: m.loss }),
      ),
    );
    const state = JSON.parse(await readFile(join(B, "checkpoints/step-4/trainer_state.json"), "utf8"));
    expect(state).toMatchObject({ step: 4, seed: 0, data: { examplesSeen: 8, epoch: 1, index: 3, records: 5 } });

    // Options that define the run cannot change on --resume; --steps can.
    const mismatch = await trainHere({ out: B, resume: "true", rank: "8", steps: "6" });
    expect(mismatch.code).toBe(1);
    expect(mismatch.err).toBe(
      `error: --rank 8 differs from the run being resumed (4, in ${join(B, "checkpoints", "step-4", "trainer_state.json")}); leave --rank out to continue that run\n`,
    );
  });

  it.concurrent("Ctrl-C stops after the current step and leaves a checkpoint that loads", async () => {
    const C = join(tmp, "interrupted");
    let sent = false;
    const r = await train([...TINY, "--steps", "100000", "--out", C], (text, child) => {
      if (!sent && /^step +3\//m.test(text)) {
        sent = true;
        child.kill("SIGINT");
      }
    });
    expect(r.stderr).toBe("");
    expect(r.code).toBe(130);
    const m = /^stopped at step (\d+) of 100000; checkpoint (.+)$/m.exec(r.stdout);
    expect(m).not.toBeNull();
    const step = Number(m![1]);
    expect(step).toBeGreaterThanOrEqual(3);
    expect(r.stdout).toContain(`continue with: tessera train --resume --out ${C} --steps 100000`);
    const ckpt = await loadCheckpoint(m![2]!, LLAMA_TINY);
    expect(ckpt.optimizer.step).toBe(step);
    expect(ckpt.trainer.data.examplesSeen).toBe(2 * step);
    expect(ckpt.layout.modules).toEqual(["q", "v"]);
    expect((await metrics(C)).length).toBe(step);
    expect(existsSync(join(C, "adapter"))).toBe(false);
  });

  it.concurrent("a bad data line exits 1 naming file:line, before anything is written", async () => {
    const bad = join(tmp, "bad.jsonl");
    await writeFile(
      bad,
      '{"input_ids":[1,2,3]}\n{"prompt_ids":[1,2],"answer_ids":[3]}\n{"prompt_ids":[1,2],"answer_ids":[300]}\n',
    );
    const out = join(tmp, "never");
    const r = await train(["--data", bad, "--out", out]);
    expect(r.code).toBe(1);
    expect(r.stderr).toBe(
      `error: ${bad}:3: "answer_ids"[0] = 300 is outside the model's vocabulary (token ids 0..95)\n`,
    );
    expect(r.stdout).toBe("");
    expect(existsSync(out)).toBe(false);
  });
});

describe("tessera train: bad input (in process, before any device work)", () => {
  it("reports a missing model, a missing adapter, a bad --seq and a resume without checkpoints, writing nothing", async () => {
    const out = join(tmp, "nothing");
    const model = join(tmp, "no-such-model");
    expect(await trainHere({ model, out })).toEqual({
      code: 1,
      out: "",
      err: `error: --model ${model}: no such file or directory (expected a model name (smollm2-135m-instruct), a .gguf file, or a Hugging Face Llama checkpoint folder (config.json + *.safetensors))\n`,
    });
    expect(await trainHere({ model: data, out })).toMatchObject({
      code: 1,
      err: expect.stringContaining(`--model ${data}: not a .gguf file nor a folder`),
    });
    expect(await trainHere({ adapter: tmp, out })).toEqual({
      code: 1,
      out: "",
      err: `error: --adapter ${tmp}: adapter_config.json not found (expected a PEFT LoRA adapter directory)\n`,
    });
    const fixture = join(ROOT, "../shared/fixtures/llama-tiny-a");
    expect(await trainHere({ adapter: fixture, out })).toEqual({
      code: 1,
      out: "",
      err: `error: ${fixture}/adapter_model.safetensors: tensor "base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight": shape [4, 64], expected [4, 32] ([r, in_features] of "model.layers.0.self_attn.q_proj")\n`,
    });
    const badModel = join(tmp, "bad-model");
    await mkdir(badModel);
    await writeFile(join(badModel, "config.json"), '{"model_type":"llama","hidden_size":"big"}');
    expect(await trainHere({ model: badModel, out })).toMatchObject({
      code: 1,
      out: "",
      err: expect.stringMatching(new RegExp(`^error: ${badModel}/config\\.json: field "`)),
    });
    expect(await trainHere({ seq: "128", out })).toEqual({
      code: 1,
      out: "",
      err: "error: --seq 128 exceeds the model's max_position_embeddings 64 (built-in tiny Llama); to train past it, scale RoPE with --rope-scaling (e.g. --rope-scaling yarn:2; kinds linear, dynamic, yarn, llama3), or lower --seq\n",
    });
    expect(await trainHere({ resume: "true", out })).toEqual({
      code: 1,
      out: "",
      err: `error: --resume: no checkpoint in ${join(out, "checkpoints")} (train without --resume first, or point --out at an earlier run)\n`,
    });
    const empty = join(tmp, "empty.jsonl");
    await writeFile(empty, '{"input_ids":[5],"labels":[5]}\n');
    expect(await trainHere({ data: empty, out })).toEqual({
      code: 1,
      out: "",
      err: `error: ${empty}: no record has a label to learn within --seq 8 (labels are all -100, or only on the first token)\n`,
    });
    expect(existsSync(out)).toBe(false);
  });

  it("rejects bad option values as usage errors", async () => {
    await expect(trainHere({ rank: "0" })).rejects.toThrow(
      new UsageError("--rank must be an integer >= 1; got '0'", "train"),
    );
    await expect(trainHere({ targets: "q,x" })).rejects.toThrow(
      "--targets: 'x' is not one of q, k, v, o, gate, up, down",
    );
    await expect(trainHere({ lr: "fast" })).rejects.toThrow("--lr must be a number >= 0; got 'fast'");
    await expect(trainHere({ "pad-id": "96", out: join(tmp, "nothing") })).rejects.toThrow(
      "--pad-id 96 is outside the model's vocabulary (0..95)",
    );
  });
});
