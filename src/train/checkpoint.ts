// Training checkpoints: a PEFT adapter dir plus AdamW state and a small JSON (step, seed, data position), written atomically.
import { randomBytes } from "node:crypto";
import { mkdir, open, readdir, readFile, rename, rm, stat } from "node:fs/promises";
import { join } from "node:path";
import { writeAll, writeFileAtomic } from "../formats/atomic.ts";
import { fmtShape, FormatError } from "../formats/errors.ts";
import { toFloat32, type HostTensor } from "../formats/host_tensor.ts";
import type { LlamaConfig } from "../formats/hf_config.ts";
import { loadAdapter, saveAdapter } from "../formats/peft.ts";
import { readSafetensors, writeSafetensors } from "../formats/safetensors.ts";
import { loraFromAdapter, loraShapes, loraToAdapter, type LoraLayout, type LoraWeights } from "../../models/lora.ts";
import type { OptimizerState } from "./loop.ts";
import type { TrainState } from "./step.ts";

export const CHECKPOINTS_DIR = "checkpoints";
export const OPTIMIZER_FILE = "optimizer.safetensors";
export const TRAINER_STATE_FILE = "trainer_state.json";
const STATE_FORMAT = "tessera-train-state";

/** What a run needs besides the weights to continue exactly: written as trainer_state.json. */
export interface TrainerState {
  format: typeof STATE_FORMAT;
  version: 1;
  /** Optimizer steps taken. */
  step: number;
  /** Seeds adapter init, data order, synthetic data and LoRA dropout (whose key is folded with the step). */
  seed: number;
  /** The data stream's position after `step` steps, and what it was reading. */
  data: { examplesSeen: number; epoch: number; index: number; records: number; source: string; sha256: string | null };
  /** The options the run was started with, to check and restore them on --resume. */
  options: Record<string, string | number | boolean | null>;
  /** Loss of the last step. */
  loss: number | null;
}

/** `out/checkpoints/step-N`. */
export function checkpointDir(outDir: string, step: number): string {
  return join(outDir, CHECKPOINTS_DIR, `step-${step}`);
}

function optimizerTensors(state: {
  m: LoraWeights<HostTensor>;
  v: LoraWeights<HostTensor>;
  step: HostTensor;
}): Map<string, HostTensor> {
  const out = new Map<string, HostTensor>();
  for (const which of ["m", "v"] as const) {
    for (const [mod, f] of Object.entries(state[which])) {
      out.set(`${which}.${mod}.a`, f!.a);
      out.set(`${which}.${mod}.b`, f!.b);
    }
  }
  out.set("step", state.step);
  return out;
}

async function syncDir(dir: string): Promise<void> {
  const fh = await open(dir, "r").catch(() => undefined);
  await fh?.sync().catch(() => {});
  await fh?.close().catch(() => {});
}

/**
 * Writes `out/checkpoints/step-N` as one unit: everything goes into a hidden temporary directory beside it, which
 * is renamed into place only when complete (an older step-N is replaced the same way), so a crash leaves either
 * no checkpoint or a whole one. Contents: adapter_config.json + adapter_model.safetensors (a PEFT adapter),
 * optimizer.safetensors (AdamW moments `m.<module>.a|b`, `v.<module>.a|b` stacked [layers, in, r] / [layers, r,
 * out], and `step`), trainer_state.json. Returns the directory.
 */
export async function saveCheckpoint(
  outDir: string,
  c: { llama: LlamaConfig; layout: LoraLayout; state: TrainState<HostTensor>; trainer: TrainerState },
): Promise<string> {
  const parent = join(outDir, CHECKPOINTS_DIR);
  await mkdir(parent, { recursive: true });
  const final = checkpointDir(outDir, c.trainer.step);
  const tag = `${process.pid}-${randomBytes(4).toString("hex")}`;
  const tmp = join(parent, `.step-${c.trainer.step}.tmp-${tag}`);
  try {
    await mkdir(tmp);
    await saveAdapter(tmp, loraToAdapter(c.layout, c.state.lora, c.llama), c.llama);
    await writeSafetensors(join(tmp, OPTIMIZER_FILE), optimizerTensors(c.state), { metadata: { format: "tessera" } });
    const json = new TextEncoder().encode(`${JSON.stringify(c.trainer, null, 2)}\n`);
    await writeFileAtomic(join(tmp, TRAINER_STATE_FILE), (fh) => writeAll(fh, json));
    const old = (await stat(final).catch(() => undefined))
      ? join(parent, `.step-${c.trainer.step}.old-${tag}`)
      : undefined;
    if (old) await rename(final, old);
    await rename(tmp, final);
    if (old) await rm(old, { recursive: true, force: true });
    await syncDir(parent);
  } catch (e) {
    await rm(tmp, { recursive: true, force: true });
    throw e;
  }
  return final;
}

/** Complete checkpoints under `out/checkpoints`, oldest first (temporary directories of a crashed save are skipped). */
export async function listCheckpoints(outDir: string): Promise<{ step: number; dir: string }[]> {
  const parent = join(outDir, CHECKPOINTS_DIR);
  const names = await readdir(parent).catch(() => [] as string[]);
  const out: { step: number; dir: string }[] = [];
  for (const name of names) {
    const m = /^step-(\d+)$/.exec(name);
    if (!m) continue;
    const dir = join(parent, name);
    if (await stat(join(dir, TRAINER_STATE_FILE)).catch(() => undefined)) out.push({ step: Number(m[1]), dir });
  }
  return out.sort((a, b) => a.step - b.step);
}

/** Removes what earlier runs left in `out/checkpoints`: complete checkpoints and temporaries of interrupted saves. */
export async function clearCheckpoints(outDir: string): Promise<number> {
  const parent = join(outDir, CHECKPOINTS_DIR);
  const names = await readdir(parent).catch(() => [] as string[]);
  let n = 0;
  for (const name of names) {
    if (/^step-\d+$/.test(name) || /^\.step-\d+\.(tmp|old)-/.test(name)) {
      await rm(join(parent, name), { recursive: true, force: true });
      n++;
    }
  }
  return n;
}

/** Reads and checks trainer_state.json. */
export async function readTrainerState(dir: string): Promise<TrainerState> {
  const file = join(dir, TRAINER_STATE_FILE);
  let json: unknown;
  try {
    json = JSON.parse(await readFile(file, "utf8"));
  } catch (e) {
    throw new FormatError(`${file}: cannot read trainer state (${(e as Error).message})`, { file, cause: e });
  }
  const s = json as Partial<TrainerState>;
  const isCount = (x: unknown) => typeof x === "number" && Number.isSafeInteger(x) && x >= 0;
  if (typeof json !== "object" || json === null || s.format !== STATE_FORMAT)
    throw new FormatError(`${file}: not a tessera trainer state (field "format" should be "${STATE_FORMAT}")`, {
      file,
    });
  if (s.version !== 1)
    throw new FormatError(`${file}: field "version": expected 1, got ${JSON.stringify(s.version)}`, { file });
  if (!isCount(s.step))
    throw new FormatError(`${file}: field "step": expected a step count, got ${JSON.stringify(s.step)}`, { file });
  if (!isCount(s.seed))
    throw new FormatError(`${file}: field "seed": expected a non-negative integer, got ${JSON.stringify(s.seed)}`, {
      file,
    });
  const d = s.data;
  if (
    typeof d !== "object" ||
    d === null ||
    !isCount(d.examplesSeen) ||
    !isCount(d.records) ||
    typeof d.source !== "string"
  ) {
    throw new FormatError(`${file}: field "data": expected {examplesSeen, epoch, index, records, source, sha256}`, {
      file,
    });
  }
  if (typeof s.options !== "object" || s.options === null)
    throw new FormatError(`${file}: field "options": expected an object`, { file });
  return s as TrainerState;
}

/**
 * A checkpoint directory read back: the adapter (validated against `llama`), AdamW state (shapes checked against
 * the adapter's layout) and the trainer state. Errors name the file and what was expected.
 */
export async function loadCheckpoint(
  dir: string,
  llama: LlamaConfig,
): Promise<{ layout: LoraLayout; lora: LoraWeights<HostTensor>; optimizer: OptimizerState; trainer: TrainerState }> {
  const trainer = await readTrainerState(dir);
  const { layout, weights: lora } = loraFromAdapter(
    await loadAdapter(dir, llama),
    llama,
    join(dir, "adapter_config.json"),
  );
  const file = join(dir, OPTIMIZER_FILE);
  const { tensors } = await readSafetensors(file);
  const take = (name: string, shape: number[]): HostTensor => {
    const t = tensors.get(name);
    if (!t)
      throw new FormatError(`${file}: tensor "${name}" is missing (expected F32${fmtShape(shape)})`, {
        file,
        tensor: name,
      });
    if (t.dtype !== "F32" || t.shape.length !== shape.length || t.shape.some((d, i) => d !== shape[i])) {
      throw new FormatError(
        `${file}: tensor "${name}" is ${t.dtype}${fmtShape(t.shape)}, expected F32${fmtShape(shape)}`,
        { file, tensor: name },
      );
    }
    return t;
  };
  const shapes = loraShapes(layout, llama);
  const moments = (which: "m" | "v"): LoraWeights<HostTensor> =>
    Object.fromEntries(
      Object.entries(shapes).map(([mod, s]) => [
        mod,
        { a: take(`${which}.${mod}.a`, s!.a), b: take(`${which}.${mod}.b`, s!.b) },
      ]),
    );
  const m = moments("m"),
    v = moments("v");
  const step = toFloat32(take("step", []))[0]!;
  if (step !== trainer.step) {
    throw new FormatError(
      `${file}: tensor "step" says ${step} steps, but ${join(dir, TRAINER_STATE_FILE)} says ${trainer.step}`,
      { file, tensor: "step" },
    );
  }
  const known = new Set(optimizerTensors({ m, v, step: tensors.get("step")! }).keys());
  const extra = [...tensors.keys()].find((k) => !known.has(k));
  if (extra !== undefined) {
    throw new FormatError(`${file}: unexpected tensor "${extra}" (the adapter targets ${layout.modules.join(", ")})`, {
      file,
      tensor: extra,
    });
  }
  return { layout, lora, optimizer: { m, v, step }, trainer };
}
