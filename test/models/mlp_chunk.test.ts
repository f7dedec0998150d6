// ForwardOpts.mlpChunk: the MLP over sequence chunks (a scan) gives the same loss and LoRA gradients as over the whole sequence.
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { tx, type Tensor } from "tessera";
import { toFloat32, type HostTensor } from "../../src/formats/host_tensor.ts";
import { makeLoraConfig } from "../../src/formats/peft.ts";
import { LLAMA_TINY, type LlamaWeights } from "../../models/llama.ts";
import { loraFromAdapter, type LoraWeights } from "../../models/lora.ts";
import { loadLlamaWeights } from "../../models/weights.ts";
import { loraLoss, type StepConfig } from "../../src/train/step.ts";
import { F32 } from "../../src/train/precision.ts";
import { ADAMW_DEFAULTS } from "../../src/train/adamw.ts";
import { interpretOnHost } from "../../src/parity/execute.ts";
import { batch, i32, randomAdapter, relErr, tempDir, writeModel } from "./helpers.ts";

type HostTree = Parameters<typeof interpretOnHost>[1][number];
const cfg = LLAMA_TINY;
const S = 12;
const data = batch(2, S, cfg.vocabSize, 4);
let base: LlamaWeights<HostTensor>;
let cleanup: () => Promise<void>;

beforeAll(async () => {
  let dir: string;
  ({ dir, cleanup } = await tempDir("mlp-chunk"));
  await writeModel(dir, cfg);
  base = (await loadLlamaWeights(dir)).weights;
});
afterAll(() => cleanup());

describe("mlpChunk", () => {
  it("equals the whole-sequence MLP: loss and gradients of LoRA on gate/up/down and q, scanned and unrolled layers", () => {
    const lora = loraFromAdapter(
      randomAdapter(
        cfg,
        makeLoraConfig({ r: 2, loraAlpha: 4, targetModules: ["q_proj", "gate_proj", "up_proj", "down_proj"] }),
        5,
      ),
      cfg,
    );
    const run = (layers: "scan" | "unroll", mlpChunk?: number) => {
      const c: StepConfig = { llama: cfg, layout: lora.layout, policy: F32, adamw: ADAMW_DEFAULTS, layers, mlpChunk };
      return interpretOnHost(
        (w: LlamaWeights, l: LoraWeights, t: Tensor, y: Tensor) =>
          tx.valueAndGrad((l: LoraWeights) => loraLoss(c, l, w, { tokens: t, labels: y }))(l),
        [base as unknown as HostTree, lora.weights as HostTree, i32(data.tokens), i32(data.labels)],
      ) as unknown as [HostTensor, LoraWeights<HostTensor>];
    };
    for (const layers of ["scan", "unroll"] as const) {
      const [l0, g0] = run(layers);
      for (const chunk of [3, 4, 6]) {
        const [l, g] = run(layers, chunk);
        expect(Math.abs(toFloat32(l)[0]! - toFloat32(l0)[0]!), `${layers} chunk ${chunk}`).toBeLessThan(1e-6);
        for (const m of ["q", "gate", "up", "down"] as const)
          for (const k of ["a", "b"] as const)
            expect(
              relErr(toFloat32(g[m]![k]), toFloat32(g0[m]![k])),
              `${layers} chunk ${chunk} ${m}.${k}`,
            ).toBeLessThan(1e-6);
      }
    }
  });
});
