// The configuration of a training run: one zod schema that the CLI, tests and users' scripts all fill in.
import { z } from "zod";
import { EXIT, TesseraError } from "../errors.ts";
import { LLAMA_LINEARS, ROPE_SCALING_KINDS, type RopeScalingKind } from "../formats/hf_config.ts";

/**
 * Defaults that depend on the model: the built-in tiny model trains in f32 at a high learning rate (tiny, random,
 * CPU: bf16 would only add noise, and XLA's CPU backend is not faster in it); a real checkpoint trains in bf16
 * (f32 LoRA masters and optimizer state) at a usual LoRA learning rate.
 */
export const DEFAULTS = {
  builtin: { lr: 1e-2, precision: "f32", seq: 64 },
  checkpoint: { lr: 2e-4, precision: "bf16", seq: 512 },
  common: {
    targets: "q,k,v,o,gate,up,down",
    rank: 8,
    alpha: 16,
    dropout: 0,
    batch: 8,
    steps: 60,
    weightDecay: 0,
    warmup: 0,
    schedule: "cosine",
    seed: 0,
    out: "tessera-out",
    saveEvery: 100,
    logEvery: 10,
    padId: 0,
    gradAccum: 1,
    maxGradNorm: 1,
  },
} as const;

const c = DEFAULTS.common;
const int = (min: number) => z.number().int().min(min);

/**
 * `--rope-scaling kind:factor` (e.g. linear:4) as a kind and factor, or what is wrong with it. The factor is at
 * least 1: scaling exists to stretch the pretraining context, not to shrink it.
 */
export function parseRopeScalingOption(text: string): { kind: RopeScalingKind; factor: number } | string {
  const [kind, factorText, ...rest] = text.split(":");
  const factor = Number(factorText);
  const ok =
    rest.length === 0 &&
    (ROPE_SCALING_KINDS as readonly string[]).includes(kind ?? "") &&
    factorText !== undefined &&
    factorText.trim() !== "" &&
    Number.isFinite(factor) &&
    factor >= 1;
  if (!ok)
    return `expected kind:factor with kind one of ${ROPE_SCALING_KINDS.join(", ")} and factor a number >= 1 (e.g. linear:4); got '${text}'`;
  return { kind: kind as RopeScalingKind, factor };
}

/** The option in one spelling (yarn:4.0 -> yarn:4), so a resumed run compares it as recorded. */
const ropeScalingField = z.string().transform((text, ctx) => {
  const r = parseRopeScalingOption(text);
  if (typeof r === "string") {
    ctx.addIssue({ code: "custom", message: r });
    return z.NEVER;
  }
  return `${r.kind}:${r.factor}`;
});

/**
 * A run. `null` means "the default for this model" (lr, precision, seq) or "none" (model: the built-in tiny Llama;
 * adapter: a new one; data: the built-in task). Paths are relative to the working directory.
 */
export const TrainConfigSchema = z
  .object({
    /** Hugging Face Llama checkpoint directory, llama .gguf file, or catalogued model name (fetched on first use); null trains the built-in tiny Llama. */
    model: z.string().min(1).nullable().default(null),
    /** PEFT LoRA adapter directory to start from; null starts a new one (PEFT's init). */
    adapter: z.string().min(1).nullable().default(null),
    targets: z
      .array(z.enum(LLAMA_LINEARS))
      .min(1)
      .default([...LLAMA_LINEARS]),
    rank: int(1).default(c.rank),
    alpha: z.number().positive().default(c.alpha),
    dropout: z.number().min(0).max(0.99).default(c.dropout),
    /** A data file (.jsonl, .csv or .parquet; token-id or text records); null uses the built-in key -> value task. */
    data: z.string().min(1).nullable().default(null),
    /**
     * A text file with the prompt of RAG records ({"question", "contexts", "answer"}): {contexts} and {question}
     * are replaced by the record's; null uses DEFAULT_RAG_TEMPLATE (src/data/text_records.ts).
     */
    ragTemplate: z.string().min(1).nullable().default(null),
    seq: int(2).nullable().default(null),
    /**
     * RoPE scaling as kind:factor (linear, dynamic, yarn, llama3), replacing the model's own; null keeps the
     * model's (its config.json rope_scaling, if any). Lets --seq go past max_position_embeddings.
     */
    ropeScaling: ropeScalingField.nullable().default(null),
    batch: int(1).default(c.batch),
    /** Total optimizer steps of the run (a resumed run continues up to this). */
    steps: int(0).default(c.steps),
    lr: z.number().min(0).nullable().default(null),
    weightDecay: z.number().min(0).default(c.weightDecay),
    warmup: int(0).default(c.warmup),
    schedule: z.enum(["cosine", "constant"]).default(c.schedule),
    precision: z.enum(["f32", "bf16"]).nullable().default(null),
    /** Adapter init, data order, synthetic data, dropout. */
    seed: int(0).default(c.seed),
    padId: int(0).default(c.padId),
    out: z.string().min(1).default(c.out),
    /** Checkpoint every n steps; 0 for only at the end. */
    saveEvery: int(0).default(c.saveEvery),
    /** How often a "step" event carries `log: true` (the CLI prints those). */
    logEvery: int(1).default(c.logEvery),
    /** Continue from the last checkpoint in `out`. */
    resume: z.boolean().default(false),
    /** Replace the run already in `out` (deleted only once the first step has run). */
    overwrite: z.boolean().default(false),
    /**
     * Compute the loss in chunks of this many sequence positions so the [batch, seq, vocab] f32 logits never exist;
     * 0 never chunks; null chunks only when those logits would exceed 256 MiB (see defaultLossChunk). Equal up to f32
     * rounding either way, so a resumed run may change it.
     */
    lossChunk: int(0).nullable().default(null),
    /** A step whose loss or gradients are NaN/Inf: "stop" the run (an error), or "skip" its update and go on. */
    onNonfinite: z.enum(["stop", "skip"]).default("stop"),
    /**
     * The attention kernel; null picks by --seq (defaultAttention: plain up to 1024 tokens, blockwise above).
     * Not a run field: a resumed run may switch it (the two agree to float rounding).
     */
    attention: z.enum(["plain", "blockwise", "cudnn"]).nullable().default(null),
    /**
     * Bytes per device the step must fit ("16GiB", "16GB", or a number): the remat policy, attention kernel and loss
     * chunking are chosen by the memory-budget search (src/memory/budget.ts); an explicit attention or lossChunk is
     * kept and the rest chosen around it. null: on a GPU the device's memory less a margin, on a CPU today's defaults.
     */
    memoryBudget: z.union([z.string(), z.number().positive()]).nullable().default(null),
    /**
     * Pack several records into each row (no attention across records, positions restarting at each, no loss across
     * a boundary): fewer padded tokens per step; the loss of a batch is unchanged.
     */
    pack: z.boolean().default(false),
    /** Micro-batches of --batch rows accumulated into one optimizer step (one compiled program scans over them). */
    gradAccum: int(1).default(c.gradAccum),
    /** Clip the global gradient norm to this before each update (HF Trainer's max_grad_norm); 0 turns it off. */
    maxGradNorm: z.number().min(0).default(c.maxGradNorm),
    /** Held-out data for the eval loss (same formats as data). */
    evalData: z.string().min(1).nullable().default(null),
    /** Hold out this share of data (seeded by seed) for the eval loss, instead of evalData. */
    evalSplit: z.number().gt(0).lt(1).nullable().default(null),
    /** Evaluate every n steps (and after the last); null: after the last step only; 0: never. */
    evalEvery: int(0).nullable().default(null),
  })
  .strict()
  .refine((r) => !(r.evalData !== null && r.evalSplit !== null), {
    message: "--eval-data and --eval-split are alternatives: give one",
    path: ["evalSplit"],
  })
  .refine((r) => !(r.evalEvery !== null && r.evalData === null && r.evalSplit === null), {
    message: "--eval-every needs eval data: give --eval-data FILE or --eval-split SHARE",
    path: ["evalEvery"],
  })
  .refine((r) => !(r.evalSplit !== null && r.data === null), {
    message: "--eval-split holds out a share of --data: give --data too (or --eval-data)",
    path: ["evalSplit"],
  });

/** A run as given (every field optional). */
export type TrainConfigInput = z.input<typeof TrainConfigSchema>;
/** A run with every default filled in. */
export type TrainConfig = z.output<typeof TrainConfigSchema>;

/** Fields that define a run: fixed when resuming (given again, they must agree with the checkpoint). */
export const RUN_FIELDS = [
  "model",
  "adapter",
  "targets",
  "rank",
  "alpha",
  "dropout",
  "data",
  "ragTemplate",
  "seq",
  "ropeScaling",
  "batch",
  "lr",
  "weightDecay",
  "warmup",
  "schedule",
  "precision",
  "seed",
  "padId",
  "pack",
  "gradAccum",
  "maxGradNorm",
  "evalSplit",
] as const;
export type RunField = (typeof RUN_FIELDS)[number];

/** A config field as the command line spells it (`weightDecay` -> `--weight-decay`): messages name options so. */
export function flagName(field: string): string {
  return `--${field.replace(/[A-Z]/g, (ch) => `-${ch.toLowerCase()}`)}`;
}

/** Fills in the defaults; a bad field is an ERR_CONFIG TesseraError (exit 2) naming it and what was expected. */
export function parseTrainConfig(input: unknown): TrainConfig {
  const r = TrainConfigSchema.safeParse(input);
  if (r.success) {
    if (r.data.resume && r.data.overwrite)
      throw new TesseraError(
        "--resume and --overwrite contradict each other: --resume continues the run in --out, --overwrite replaces it",
        { code: "ERR_CONFIG", exitCode: EXIT.usage },
      );
    return r.data;
  }
  const issue = r.error.issues[0]!;
  const field = issue.path.length > 0 ? flagName(String(issue.path[0])) : "the training config";
  throw new TesseraError(`${field}: ${issue.message}`, { code: "ERR_CONFIG", exitCode: EXIT.usage });
}

/** The fields of `input` that were actually given (not left to a default): only those are checked against a resumed run. */
export function givenFields(input: TrainConfigInput): Set<string> {
  return new Set(
    Object.entries(input)
      .filter(([, v]) => v !== undefined)
      .map(([k]) => k),
  );
}
