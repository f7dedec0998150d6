// evaluate(config): a model (and optionally a PEFT adapter) scored on a data file, as `tessera eval` runs it.
import { join } from "node:path";
import { stat } from "node:fs/promises";
import { displayPath } from "../cli/diagnostics.ts";
import { TesseraError } from "../errors.ts";
import { ADAPTER_CONFIG_FILE, loadAdapter } from "../formats/peft.ts";
import { evalBatches, prepareRecords } from "../data/batches.ts";
import { treeToDevice } from "../host/transfer.ts";
import { loraFromAdapter } from "../../models/lora.ts";
import { ropeContext } from "../../models/rope.ts";
import { defaultAttention } from "../../models/attention.ts";
import { parseTrainConfig } from "./config.ts";
import { Evaluator, type EvalResult } from "./evaluate.ts";
import { defaultLossChunk } from "./loss.ts";
import { readDataFile, resolveModel } from "./plan.ts";

export interface EvalConfig {
  /** As train's --model; null: the built-in tiny Llama. */
  model?: string | null;
  /** A PEFT adapter directory; null: the base model alone. */
  adapter?: string | null;
  data: string;
  /** Default: the longest record rounded up to a multiple of 8, capped by the model's context. */
  seq?: number | null;
  batch?: number;
  /** Default f32, so the numbers compare with transformers' f32. */
  precision?: "f32" | "bf16";
}

const fail = (message: string) => new TesseraError(message, { code: "ERR_EVAL" });

/**
 * The mean NLL over every loss token of `data` (labels other than -100, shifted as in training; records longer
 * than seq cut as in training), its perplexity and the token count.
 */
export async function evaluate(config: EvalConfig, note: (message: string) => void = () => {}): Promise<EvalResult> {
  const run = parseTrainConfig({
    model: config.model ?? null,
    data: config.data,
    seq: config.seq ?? null,
    batch: config.batch ?? 8,
    precision: config.precision ?? "f32",
  });
  const model = await resolveModel(run, note);
  const { llama } = model;
  let lora: ReturnType<typeof loraFromAdapter> | undefined;
  if (config.adapter) {
    const cfgFile = join(config.adapter, ADAPTER_CONFIG_FILE);
    if (!(await stat(cfgFile).catch(() => undefined)))
      throw fail(
        `--adapter ${config.adapter}: ${ADAPTER_CONFIG_FILE} not found (expected a PEFT LoRA adapter directory)`,
      );
    lora = loraFromAdapter(await loadAdapter(config.adapter, llama), llama, cfgFile);
  }
  const { records } = await readDataFile(config.data, run, model, { cache: false });
  const longest = records.reduce((m, r) => Math.max(m, r.ids.length), 0);
  const maxSeq = ropeContext(llama);
  const seq = run.seq ?? Math.max(2, Math.min(maxSeq, Math.ceil(longest / 8) * 8));
  if (seq > maxSeq)
    throw new TesseraError(`--seq ${seq} exceeds the ${maxSeq} positions the model covers`, {
      code: "ERR_USAGE",
      exitCode: 2,
    });
  const prepared = prepareRecords(records, seq);
  if (prepared.lossTokens === 0)
    throw fail(`${displayPath(config.data)}: no record has a label to score within --seq ${seq}`);
  const evaluator = new Evaluator(
    {
      llama,
      policy: model.policy,
      attention: defaultAttention(seq),
      ...(defaultLossChunk(run.batch, seq, llama.vocabSize) !== undefined
        ? { lossChunk: defaultLossChunk(run.batch, seq, llama.vocabSize)! }
        : {}),
    },
    lora?.layout,
  );
  const base = treeToDevice(model.base as never);
  const weights = lora ? treeToDevice(lora.weights as never) : undefined;
  return evaluator.run(base as never, weights as never, evalBatches(prepared.records, run.batch, seq, run.padId));
}
