// Sharding presets for the Llama LoRA step: Megatron tensor parallelism, data parallelism and FSDP, alone or combined.
import { P, type DeviceMesh, type DimSpec, type PartitionSpec } from "tessera";
import type { LlamaConfig, LlamaLinear } from "../src/formats/hf_config.ts";
import { llamaShapes, type LlamaWeights } from "./llama.ts";
import { loraShapes, type LoraLayout, type LoraWeights } from "./lora.ts";

export interface ParallelOpts {
  /** Mesh axis for tensor parallelism (default "model", when the mesh has it). */
  tensor?: string | false;
  /** Mesh axis the batch is split over (default "data", when the mesh has it). */
  data?: string | false;
  /**
   * FSDP: also split every weight (frozen base, LoRA factors, AdamW moments) over the data axis, on its largest
   * dimension that is not split already and that the axis divides. At user priority 1, so activations keep the
   * batch split and weights are all-gathered where used.
   */
  fsdp?: boolean;
}

/** Megatron: q, k, v, gate, up split by output columns; o and down by input rows (their outputs are summed). */
const COLUMN: readonly LlamaLinear[] = ["q", "k", "v", "gate", "up"];

interface Axes {
  tp: string | undefined;
  dp: string | undefined;
  fsdp: boolean;
  dpSize: number;
}

function axes(mesh: DeviceMesh, o: ParallelOpts): Axes {
  const pick = (v: string | false | undefined, dflt: string) =>
    v === false ? undefined : (v ?? (mesh.has(dflt) ? dflt : undefined));
  const tp = pick(o.tensor, "model"),
    dp = pick(o.data, "data");
  return { tp, dp, fsdp: !!o.fsdp && dp !== undefined, dpSize: dp ? mesh.axis(dp) : 1 };
}

/**
 * A spec from per-dimension tensor-parallel axes, plus the FSDP data axis on the largest free dimension the data
 * axis divides (never the stacked layer axis, which the layer loop slices).
 */
function withFsdp(shape: readonly number[], tpDims: (string | undefined)[], a: Axes, stacked: boolean): PartitionSpec {
  const dims: DimSpec[] = tpDims.map((x) => x ?? null);
  if (a.fsdp && a.dp && a.dpSize > 1) {
    let best = -1;
    shape.forEach((n, d) => {
      if ((stacked && d === 0) || tpDims[d] || n % a.dpSize !== 0) return;
      if (best < 0 || n > shape[best]!) best = d;
    });
    if (best >= 0) dims[best] = { axes: a.dp, priority: 1 };
  }
  return P(...dims);
}

/** Specs for the frozen base weights: Megatron columns/rows, vocabulary-parallel embedding and LM head. */
export function llamaWeightSpecs(
  cfg: LlamaConfig,
  mesh: DeviceMesh,
  o: ParallelOpts = {},
): LlamaWeights<PartitionSpec> {
  const a = axes(mesh, o);
  const s = llamaShapes(cfg);
  const tp = a.tp;
  const lin = (m: LlamaLinear) =>
    withFsdp(s.layers[m], COLUMN.includes(m) ? [undefined, undefined, tp] : [undefined, tp, undefined], a, true);
  return {
    embed: withFsdp(s.embed, [tp, undefined], a, false),
    layers: {
      inputNorm: withFsdp(s.layers.inputNorm, [undefined, undefined], a, true),
      q: lin("q"),
      k: lin("k"),
      v: lin("v"),
      o: lin("o"),
      postNorm: withFsdp(s.layers.postNorm, [undefined, undefined], a, true),
      gate: lin("gate"),
      up: lin("up"),
      down: lin("down"),
    },
    norm: withFsdp(s.norm, [undefined], a, false),
    head: withFsdp(s.head, [undefined, tp], a, false),
  };
}

/**
 * Specs for LoRA factors placed to match their base linear: a column-parallel module's B [L, r, out] is split by
 * columns (A whole), a row-parallel module's A [L, in, r] by rows (B whole), so the adapter adds no collective
 * of its own in the forward pass beyond riding along with the row-parallel all-reduce.
 */
export function loraWeightSpecs(
  layout: LoraLayout,
  cfg: LlamaConfig,
  mesh: DeviceMesh,
  o: ParallelOpts = {},
): LoraWeights<PartitionSpec> {
  const a = axes(mesh, o);
  const shapes = loraShapes(layout, cfg);
  const out: LoraWeights<PartitionSpec> = {};
  for (const m of layout.modules) {
    const sh = shapes[m]!;
    out[m] = COLUMN.includes(m)
      ? {
          a: withFsdp(sh.a, [undefined, undefined, undefined], a, true),
          b: withFsdp(sh.b, [undefined, undefined, a.tp], a, true),
        }
      : {
          a: withFsdp(sh.a, [undefined, a.tp, undefined], a, true),
          b: withFsdp(sh.b, [undefined, undefined, undefined], a, true),
        };
  }
  return out;
}

/** Tokens and labels [B, S] split over the data axis. */
export function batchSpecs(mesh: DeviceMesh, o: ParallelOpts = {}): { tokens: PartitionSpec; labels: PartitionSpec } {
  const { dp } = axes(mesh, o);
  return { tokens: P(dp ?? null, null), labels: P(dp ?? null, null) };
}

/**
 * `jit(makeTrainStep(c), { mesh, ...trainStepShardings(...) })`: specs for every argument of the step (state,
 * base, batch, lr, key) and its results (the new state laid out as the old, so donation reuses the buffers in place;
 * the loss whole everywhere).
 */
export function trainStepShardings(llama: LlamaConfig, layout: LoraLayout, mesh: DeviceMesh, o: ParallelOpts = {}) {
  const lora = loraWeightSpecs(layout, llama, mesh, o);
  const state = { lora, m: lora, v: lora, step: P() };
  return {
    in: [state, llamaWeightSpecs(llama, mesh, o), batchSpecs(mesh, o), P(), P()],
    out: [state, P()],
  };
}
