// The Hugging Face + PEFT fixture still holds when Tessera runs it SPMD-partitioned over a data=2 x model=4 mesh.
import { describe, expect, it } from "vitest";
import "./helpers.ts";
import { tx, type Tree } from "tessera";
import { runParity, formatParityReport } from "../../src/parity/parity.ts";
import { treeFromDevice, treeToDevice } from "../../src/host/transfer.ts";
import { loadLlamaWeights } from "../../models/weights.ts";
import { loraFromAdapter } from "../../models/lora.ts";
import { loadAdapter } from "../../src/formats/peft.ts";
import { llamaWeightSpecs, loraWeightSpecs } from "../../models/sharding.ts";
import { getClient } from "../../src/backend/runtime/index.ts";
import type { HostTensor } from "../../src/formats/host_tensor.ts";
import { FIXTURE } from "../models/helpers.ts";

describe("fixture parity, sharded", () => {
  it("logits, loss, gradients, the AdamW step and the merged weights match HF + PEFT on 2x4 devices", async () => {
    if ((await getClient()).devices.length !== 8) return;
    const { config } = await loadLlamaWeights(FIXTURE, { dtype: "F32" });
    const { layout } = loraFromAdapter(await loadAdapter(FIXTURE, config), config);
    const m = tx.mesh({ data: 2, model: 4 });
    let plan: { collectives: readonly unknown[] } | undefined;
    const report = await runParity(FIXTURE, {
      backend: "pjrt-cpu, mesh data=2 x model=4",
      executor: async (fn, args) => {
        const f = tx.jit(fn, {
          mesh: m,
          in: [llamaWeightSpecs(config, m), loraWeightSpecs(layout, config, m), tx.P("data", null), tx.P("data", null)],
        });
        plan = (
          await f.compile(
            ...(args.map((a) =>
              tx.treeMap(
                a as Tree<HostTensor>,
                (t) => ({ dtype: t.dtype === "I32" ? "s32" : "f32", shape: t.shape }),
                (x) => typeof x === "object" && x !== null && "data" in x,
              ),
            ) as []),
          )
        ).lowered.sharding!.plan;
        const out = await f(...(args.map((a) => treeToDevice(a)) as []));
        return treeFromDevice(out);
      },
    });
    console.log(formatParityReport(report));
    expect(plan!.collectives.length).toBeGreaterThan(0); // really partitioned
    for (const g of report.groups) expect(g.score ?? g.worst!.maxRel, g.group).toBeLessThanOrEqual(g.tol);
    expect(report.ok).toBe(true);
  });
});
