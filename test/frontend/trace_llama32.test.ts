// Tracing a 32-layer Llama-shaped LoRA step (unrolled layers, forward + valueAndGrad): gradients for the LoRA weights
// only, named by tree path, every op located, and one stack walk per frontend call rather than per op.
// (How fast it traces is measured by `npm run bench compile`, not asserted here: test machines are shared.)
import { describe, expect, it } from "vitest";
import { setLocationCapture, trace, type tx, valueAndGrad } from "./api.ts";
import { locStats } from "../../src/frontend/loc.ts";
import { loss, specs, type Dims } from "./llama_tiny.ts";

describe("tracing a 32-layer Llama-shaped LoRA step", () => {
  const dims: Dims = { vocab: 64, d: 32, heads: 4, ffn: 48, layers: 32, rank: 4, batch: 2, seq: 8 };
  const s = specs(dims);
  const args = [s.lora, s.params, s.tokens, s.labels];
  const step = (
    lora: Parameters<typeof loss>[0],
    params: Parameters<typeof loss>[1],
    tokens: tx.Tensor,
    labels: tx.Tensor,
  ) => valueAndGrad((lo: typeof lora) => loss(lo, params, tokens, labels, dims))(lora);

  it("returns the loss and one gradient per LoRA factor, named by tree path", () => {
    const { graph } = trace(step, args);
    expect(graph.outputs.length).toBe(1 + 4 * dims.layers);
    expect(graph.outputNames?.[1]).toBe("out[1][0].aq");
    expect(graph.outputNames?.at(-1)).toBe(`out[1][${dims.layers - 1}].bv`);
    // Gradients only for the LoRA factors: the frozen weights' inputs feed no gradient output of their shape.
    expect(graph.outputs.slice(1).map((v) => v.type.shape.join("x"))).toEqual(
      // Keys flatten sorted: aq, av, bq, bv.
      Array.from({ length: dims.layers }, () => [
        `${dims.d}x${dims.rank}`,
        `${dims.d}x${dims.rank}`,
        `${dims.rank}x${dims.d}`,
        `${dims.rank}x${dims.d}`,
      ]).flat(),
    );
  });

  it("locates every op, walking the stack once per frontend call (composite ops share one walk)", () => {
    trace(step, args); // warm the location cache: a repeated trace walks as often, but maps nothing new
    const before = locStats.lookups;
    const { graph } = trace(step, args);
    const lookups = locStats.lookups - before;
    // Forward and backward ops carry the model's lines; only autodiff's seed constant has none.
    expect(new Set(graph.ops.flatMap((op) => (op.loc ? [op.loc.file] : [])))).toEqual(
      new Set(["test/frontend/llama_tiny.ts"]),
    );
    expect(graph.ops.filter((op) => !op.loc).map((op) => op.name)).toEqual(["constant"]);
    // The forward pass records ~2800 ops (backward ones reuse their locations), but softmax, where, einsum and
    // broadcasting arithmetic each walk once.
    expect(graph.ops.length).toBeGreaterThan(6000);
    expect(lookups).toBeLessThan(2000);
  });

  it("records the same ops without locations when capture is off, and walks no stack", () => {
    const on = trace(step, args).graph;
    setLocationCapture(false);
    try {
      const before = locStats.lookups;
      const off = trace(step, args).graph;
      expect(locStats.lookups).toBe(before);
      expect(off.ops.map((op) => op.name)).toEqual(on.ops.map((op) => op.name));
      expect(off.ops.some((op) => op.loc !== undefined)).toBe(false);
    } finally {
      setLocationCapture(true);
    }
  });
});
