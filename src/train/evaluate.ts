// Evaluation: the mean NLL over every loss token of a data set and its perplexity, from one compiled forward + loss program.
import { array, jit, type DeviceArray } from "../index.ts";
import type { LlamaWeights } from "../../models/llama.ts";
import type { LoraLayout, LoraWeights } from "../../models/lora.ts";
import type { HostBatch } from "./loop.ts";
import { modelNll, type Batch, type NllConfig } from "./step.ts";

/** What `tessera eval` prints and metrics.jsonl's eval fields hold. */
export interface EvalResult {
  /** Mean NLL over all loss tokens (labels other than -100, shifted as in training). */
  loss: number;
  /** exp(loss). */
  perplexity: number;
  /** How many tokens took a loss. */
  tokens: number;
}

type Device<T> = T extends object ? { [K in keyof T]: Device<T[K]> } : DeviceArray;

/**
 * The eval program for one model (and adapter layout, if any), compiled on first use and reused for every batch
 * of the same shape: no gradients, no dropout. Each batch returns its summed NLL and token count; the sums add
 * up on the host in float64, so the result is the mean over every token of the data set, however it is batched.
 */
export class Evaluator {
  private readonly withLora;
  private readonly baseOnly;

  constructor(
    c: NllConfig,
    private readonly layout: LoraLayout | undefined,
  ) {
    this.withLora = jit(
      (lora: LoraWeights, base: LlamaWeights, batch: Batch) => {
        const { sum, count } = modelNll(c, { weights: lora, layout: this.layout! }, base, batch);
        return [sum, count];
      },
      { name: "lora_eval" },
    );
    this.baseOnly = jit(
      (base: LlamaWeights, batch: Batch) => {
        const { sum, count } = modelNll(c, undefined, base, batch);
        return [sum, count];
      },
      { name: "base_eval" },
    );
  }

  /** The loss over `batches` with the base weights and (when the layout was given) the adapter `lora`, both on the device. */
  async run(
    base: Device<LlamaWeights>,
    lora: Device<LoraWeights> | undefined,
    batches: readonly HostBatch[],
  ): Promise<EvalResult> {
    let sum = 0,
      tokens = 0;
    for (const b of batches) {
      const batch = {
        tokens: array(b.tokens, { shape: b.shape }),
        labels: array(b.labels, { shape: b.shape }),
        ...(b.positions ? { positions: array(b.positions, { shape: b.shape }) } : {}),
        ...(b.segmentIds ? { segmentIds: array(b.segmentIds, { shape: b.shape }) } : {}),
      };
      const [s, n] = (this.layout && lora
        ? await this.withLora(lora as never, base as never, batch as never)
        : await this.baseOnly(base as never, batch as never)) as unknown as [DeviceArray, DeviceArray];
      const [sv, nv] = await Promise.all([s.item(), n.item()]);
      sum += sv;
      tokens += nv;
    }
    const loss = sum / tokens;
    return { loss, perplexity: Math.exp(loss), tokens };
  }
}
