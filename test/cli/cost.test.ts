// The cost model and inspect's summary on hand-built graphs, with numbers worked out by hand.
import { describe, expect, it } from "vitest";
import { graphCost, largestIntermediates, opCost } from "../../src/ir/cost.ts";
import { GraphBuilder } from "../../src/ir/graph.ts";
import { tensorType } from "../../src/ir/types.ts";
import { formatBytes, formatCount, summarize } from "../../src/cli/summary.ts";

const f32 = (...shape: number[]) => tensorType("f32", shape);
const dot = { lhsBatch: [], rhsBatch: [], lhsContract: [1], rhsContract: [0], outDtype: "f32" } as const;

describe("cost rules", () => {
  it("dot_general is 2*M*N*K, reads both operands and writes the result", () => {
    const b = new GraphBuilder();
    const x = b.input(f32(8, 16));
    const w = b.input(f32(16, 32));
    const y = b.add1("dot_general", [x, w], dot);
    const g = b.build([y]);
    expect(opCost(g.ops[0]!)).toEqual({ flops: 2 * 8 * 32 * 16, transcendentals: 0, bytes: (128 + 512 + 256) * 4 });
  });

  it("batched dot_general multiplies in the batch size", () => {
    const b = new GraphBuilder();
    const x = b.input(f32(3, 4, 5));
    const w = b.input(f32(3, 5, 6));
    const y = b.add1("dot_general", [x, w], {
      lhsBatch: [0],
      rhsBatch: [0],
      lhsContract: [2],
      rhsContract: [1],
      outDtype: "f32",
    });
    expect(opCost(b.build([y]).ops[0]!).flops).toBe(2 * 3 * 4 * 6 * 5);
  });

  it("element-wise ops cost one FLOP per element, transcendentals are counted apart, reductions per input", () => {
    const b = new GraphBuilder();
    const x = b.input(f32(4, 5));
    const e = b.add1("exp", [x], {});
    const s = b.add1("add", [e, x], {});
    const r = b.add1("reduce_sum", [s], { axes: [1] });
    const g = b.build([r]);
    expect(g.ops.map((op) => opCost(op))).toEqual([
      { flops: 0, transcendentals: 20, bytes: 160 },
      { flops: 20, transcendentals: 0, bytes: 240 },
      { flops: 20, transcendentals: 0, bytes: 80 + 16 },
    ]);
    expect(graphCost(g).total).toEqual({ flops: 40, transcendentals: 20, bytes: 160 + 240 + 96 });
  });

  it("a scan costs its body times its length, and its body's ops are counted", () => {
    const body = new GraphBuilder();
    const c = body.input(f32(3));
    const xs = body.input(f32(3));
    const next = body.add1("mul", [c, xs], {});
    const bodyGraph = body.build([next, next]);
    const b = new GraphBuilder();
    const init = b.input(f32(3));
    const seq = b.input(f32(7, 3));
    const outs = b.add("scan", [init, seq], { body: bodyGraph, length: 7, numConsts: 0, numCarry: 1, reverse: false });
    const g = b.build(outs);
    expect(graphCost(g).total.flops).toBe(7 * 3);
    expect([...graphCost(g).counts]).toEqual([
      ["mul", 1],
      ["scan", 1],
    ]);
  });

  it("reshape is free; bf16 counts two bytes per element", () => {
    const b = new GraphBuilder();
    const x = b.input(tensorType("bf16", [4, 6]));
    const r = b.add1("reshape", [x], { shape: [24] });
    const n = b.add1("neg", [r], {});
    const g = b.build([n]);
    expect(g.ops.map((op) => opCost(op).bytes)).toEqual([0, 96]);
  });
});

describe("inspect summary", () => {
  it("reports counts, exact FLOPs and bytes per argument for a matmul plus bias", () => {
    const b = new GraphBuilder();
    const x = b.input(f32(8, 16), "x");
    const w = b.input(f32(16, 32), "params.w");
    const bias = b.input(f32(32), "params.b");
    const y = b.add1("dot_general", [x, w], dot);
    const bb = b.add1("broadcast_in_dim", [bias], { shape: [8, 32], dims: [1] });
    const out = b.add1("add", [y, bb], {});
    const g = b.build([out], ["y"]);
    const text = summarize(g, { top: 2 });
    expect(text).toContain("ops: 3\n  add               1\n  broadcast_in_dim  1\n  dot_general       1\n");
    expect(text).toMatch(/^FLOPs +8448 \(8\.45 k\)$/m); // 2*8*32*16 + 8*32
    expect(text).toMatch(/^transcendentals +0$/m);
    expect(text).toMatch(/^bytes accessed +7\.63 KiB \(7808 bytes\)$/m); // 3584 + 1152 + 3072
    expect(text).toMatch(/^inputs +2\.63 KiB in 3 tensors \(2688 bytes\)$/m);
    expect(text).toMatch(/^ {2}x +512 B in 1 tensor$/m);
    expect(text).toMatch(/^ {2}params +2\.13 KiB in 2 tensors$/m);
    expect(text).toMatch(/^outputs +1\.00 KiB in 1 tensor \(1024 bytes\)$/m);
    // The add is the graph's output, not an intermediate.
    expect(text).toContain(
      "largest intermediates:\n  f32[8,32]  1.00 KiB  dot_general\n  f32[8,32]  1.00 KiB  broadcast_in_dim\n",
    );
    expect(largestIntermediates(g, 3).map((t) => t.op.name)).toEqual(["dot_general", "broadcast_in_dim"]);
  });

  it("leaves splats out of the largest intermediates and merges one line's values of one type into a counted row", () => {
    const b = new GraphBuilder();
    const at = { file: "m.ts", line: 4, col: 9 };
    const x = b.input(f32(64, 64), "x");
    // Splats: a constant of equal elements, a broadcast of a scalar, a reshape of a splat. None is a buffer.
    const zeros = b.add1("constant", [], { dtype: "f32", shape: [64, 64], value: [0] }, at);
    const half = b.add1("constant", [], { dtype: "f32", shape: [], value: [0.5] }, at);
    const halves = b.add1("broadcast_in_dim", [half], { shape: [64, 64], dims: [] }, at);
    const flat = b.add1("reshape", [halves], { shape: [4096] }, at);
    // Not a splat: a constant of different elements.
    const ramp = b.add1("constant", [], { dtype: "f32", shape: [4], value: [1, 2, 3, 4] }, at);
    let y = b.add1("add", [x, zeros], {}, { file: "m.ts", line: 5, col: 3 });
    const scaled = { file: "m.ts", line: 6, col: 7 };
    for (let i = 0; i < 3; i++) y = b.add1("mul", [y, halves], {}, scaled);
    // Same line in another scope: its own row.
    const inScope = { ...scaled, scope: "block1" };
    y = b.add1("mul", [y, halves], {}, inScope);
    const z = b.add1("mul", [y, halves], {}, inScope);
    const g = b.build([z, flat, ramp]);
    const top = largestIntermediates(g, 10);
    expect(top.map((t) => [t.op.name, t.count, t.op.loc?.line, t.op.loc?.scope])).toEqual([
      ["add", 1, 5, undefined],
      ["mul", 3, 6, undefined],
      ["mul", 1, 6, "block1"],
    ]);
    expect(summarize(g, { top: 3 })).toContain(
      "largest intermediates:\n  f32[64,64]  16.0 KiB  add     m.ts:5:3\n  f32[64,64]  16.0 KiB  mul x3  m.ts:6:7\n  f32[64,64]  16.0 KiB  mul     block1 m.ts:6:7\n",
    );
  });

  it("lists values without a location each on its own row", () => {
    const b = new GraphBuilder();
    const x = b.input(f32(8));
    const y = b.add1("neg", [b.add1("neg", [x], {})], {});
    const g = b.build([b.add1("neg", [y], {})]);
    expect(largestIntermediates(g, 5).map((t) => t.count)).toEqual([1, 1]);
  });

  it("formats counts and sizes", () => {
    expect(formatCount(999)).toBe("999");
    expect(formatCount(2_500_000)).toBe("2500000 (2.50 M)");
    expect(formatBytes(1023)).toBe("1023 B");
    expect(formatBytes(3 * 1024 * 1024)).toBe("3.00 MiB");
  });
});
