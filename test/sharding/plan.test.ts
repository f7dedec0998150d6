// Meshes, specs, factor rules, propagation and predicted collectives, without a device: the pure tier of sharding.
import { describe, expect, it } from "vitest";
import { tx } from "tessera";
import {
  checkSharding,
  hloShardingText,
  localShape,
  makeMesh,
  shardBox,
  type Sharding,
} from "../../src/ir/sharding.ts";
import { opFactors, reshapeFactors } from "../../src/ir/sharding_rules.ts";
import { GraphBuilder } from "../../src/ir/graph.ts";
import { tensorType } from "../../src/ir/types.ts";
import { propagateShardings, reshard, type Seed } from "../../src/passes/shard_propagate.ts";
import { nameValues } from "../../src/ir/print.ts";
import { formatSharding } from "../../src/ir/sharding.ts";
import { meshDevices } from "../../src/frontend/array.ts";
import { readFileSync } from "node:fs";

/** The 1-based line of a file that holds `text`, so a reformatted source does not break a location check. */
function lineOf(file: string, text: string): number {
  return (
    readFileSync(file, "utf8")
      .split("\n")
      .findIndex((l) => l.includes(text)) + 1
  );
}
import type { Client } from "../../src/backend/runtime/index.ts";
import { llamaLogits, llamaSpecs } from "../../models/llama.ts";
import { loraSpecs } from "../../models/lora.ts";
import { llamaWeightSpecs, loraWeightSpecs } from "../../models/sharding.ts";
import { SHARD_LLAMA, stepConfig } from "./helpers.ts";
import { emitStableHLO } from "../../src/backend/stablehlo/index.ts";
import { shardedEmitOptions } from "../../src/frontend/spmd.ts";

const { P, mesh } = tx;
const sh = (...dims: string[][]): Sharding => ({ dims });

describe("meshes and shardings", () => {
  it("rejects bad meshes", () => {
    expect(() => makeMesh({})).toThrow("sharding: mesh: needs at least one axis");
    expect(() => makeMesh({ data: 0 })).toThrow("axis 'data' has size 0; sizes are positive integers");
    expect(() =>
      makeMesh([
        { name: "x", size: 2 },
        { name: "x", size: 2 },
      ]),
    ).toThrow("axis 'x' appears twice");
    expect(() => makeMesh({ "a-b": 2 })).toThrow('axis name "a-b" is not an identifier');
    expect(() => mesh({ data: 2 }, { devices: [0, 1, 2] })).toThrow(
      /has 2 devices \(mesh\{data: 2\}\) but 3 device ids were given at test\/sharding\/plan\.test\.ts:\d+:\d+/,
    );
  });

  it("checks a sharding against the value's type and the mesh, naming the value", () => {
    const m = makeMesh({ data: 2, model: 4 });
    const t = tensorType("f32", [6, 16]);
    expect(() => checkSharding(t, sh([]), m, "argument w")).toThrow(
      "sharding: argument w: the spec has 1 entry but the value is f32[6,16] (rank 2)",
    );
    expect(() => checkSharding(t, sh([], ["modle"]), m, "argument w")).toThrow(
      "unknown mesh axis 'modle' in dimension 1; the mesh {data: 2, model: 4} has axes 'data', 'model'",
    );
    expect(() => checkSharding(t, sh(["data"], ["data"]), m, "argument w")).toThrow("mesh axis 'data' is used twice");
    expect(() => checkSharding(t, sh(["model"], []), m, "argument w")).toThrow(
      "dimension 0 of f32[6,16] has size 6, which 'model' (4 devices) does not divide",
    );
    expect(() => checkSharding(t, sh(["data"], ["model"]), m, "argument w")).not.toThrow();
  });

  it("prints GSPMD strings as notes/stablehlo.md verified them on XLA", () => {
    const xy = makeMesh({ x: 4, y: 2 });
    expect(hloShardingText(sh(["x"], []), xy)).toBe("{devices=[4,1,2]<=[8] last_tile_dim_replicate}");
    expect(hloShardingText(sh([], ["y"]), xy)).toBe("{devices=[1,2,4]<=[4,2]T(1,0) last_tile_dim_replicate}");
    expect(hloShardingText(sh(["y"]), xy)).toBe("{devices=[2,4]<=[4,2]T(1,0) last_tile_dim_replicate}");
    expect(hloShardingText(sh(["x"], ["y"]), xy)).toBe("{devices=[4,2]<=[8]}");
    expect(hloShardingText(sh([], []), xy)).toBe("{replicated}");
    const dt = makeMesh({ dp: 2, tp: 4 });
    expect(hloShardingText(sh(["dp"], [], []), dt)).toBe("{devices=[2,1,1,4]<=[8] last_tile_dim_replicate}");
    expect(hloShardingText(sh([], [], ["tp"]), dt)).toBe("{devices=[1,1,4,2]<=[2,4]T(1,0) last_tile_dim_replicate}");
    expect(hloShardingText(sh([], ["tp"], []), dt)).toBe("{devices=[1,4,1,2]<=[2,4]T(1,0) last_tile_dim_replicate}");
  });

  it("places blocks row-major over the mesh axes", () => {
    const m = makeMesh({ x: 4, y: 2 });
    expect(localShape([16, 8], sh(["x"], ["y"]), m)).toEqual([4, 4]);
    expect(shardBox([16, 8], sh(["x"], ["y"]), m, 3)).toEqual({ start: [4, 4], size: [4, 4] }); // partition 3 = (x 1, y 1)
    expect(shardBox([16, 8], sh(["y", "x"], []), m, 3)).toEqual({ start: [10, 0], size: [2, 8] }); // block y * 4 + x = 5 of 8
    expect(shardBox([16, 8], sh([], []), m, 5)).toEqual({ start: [0, 0], size: [16, 8] });
  });
});

describe("factor rules", () => {
  it("splits and merges reshape dims into compound factors, or gives up where sizes do not nest", () => {
    expect(reshapeFactors([2, 4, 32], [8, 32])).toEqual({
      sizes: [2, 4, 32],
      from: [[0], [1], [2]],
      to: [[0, 1], [2]],
    });
    expect(reshapeFactors([8, 16, 64], [8, 16, 8, 8])).toEqual({
      sizes: [8, 16, 8, 8],
      from: [[0], [1], [2, 3]],
      to: [[0], [1], [2], [3]],
    });
    expect(reshapeFactors([1, 4, 64], [4, 64])).toEqual({ sizes: [4, 64], from: [[], [0], [1]], to: [[0], [1]] });
    expect(reshapeFactors([6, 4], [4, 6])).toBeUndefined();
  });

  it("keeps a sort's sorted dim whole and passes its other dims, shared by every operand and result", () => {
    const b = new GraphBuilder();
    const x = b.input(tensorType("f32", [8, 16])),
      i = b.input(tensorType("s32", [8, 16]));
    b.add("sort", [x, i], { dimension: 1, descending: false, stable: true });
    const f = opFactors(b.build([]).ops[0]!);
    expect(f.factors.map((x) => `${x.label}:${x.kind}:${x.size}`)).toEqual(["dim 0:pass:8", "dim 1:replicate:16"]);
    expect(f.operands).toEqual([
      [[0], [1]],
      [[0], [1]],
    ]);
    expect(f.results).toEqual(f.operands);
  });

  it("names a dot's batch, free and contracting factors", () => {
    const b = new GraphBuilder();
    const x = b.input(tensorType("f32", [3, 8, 16])),
      w = b.input(tensorType("f32", [3, 16, 32]));
    b.add1("dot_general", [x, w], {
      lhsBatch: [0],
      rhsBatch: [0],
      lhsContract: [2],
      rhsContract: [1],
      outDtype: "f32",
    });
    const f = opFactors(b.build([]).ops[0]!);
    expect(f.factors.map((x) => `${x.label}:${x.kind}:${x.size}`)).toEqual([
      "batch 0:pass:3",
      "contracting 0:reduction:16",
      "lhs free 1:pass:8",
      "rhs free 2:pass:32",
    ]);
    expect(f.operands).toEqual([
      [[0], [2], [1]],
      [[0], [1], [3]],
    ]);
    expect(f.results).toEqual([[[0], [2], [3]]]);
  });
});

/** A Megatron MLP: x [8,16] split over data, up by columns, down by rows. */
function megatron() {
  const m = mesh({ data: 2, model: 4 });
  const f = tx.jit((w: { up: tx.Tensor; down: tx.Tensor }, x: tx.Tensor) => x.matmul(w.up).tanh().matmul(w.down), {
    mesh: m,
    in: [{ up: P(null, "model"), down: P("model", null) }, P("data", null)],
  });
  return f.lower({ up: tx.spec("f32", [16, 32]), down: tx.spec("f32", [32, 16]) }, tx.spec("f32", [8, 16]));
}

describe("propagation", () => {
  it("spreads argument shardings through a Megatron MLP: one all-reduce, after the row-parallel matmul", () => {
    const low = megatron();
    const plan = low.sharding!.plan;
    const names = nameValues(low.graph);
    const layout = low.graph.ops.map((op) => `${op.name} ${formatSharding(plan.values.get(op.outputs[0]!)!.sharding)}`);
    expect(layout).toEqual(["dot_general [{data}, {model}]", "tanh [{data}, {model}]", "dot_general [{data}, {}]"]);
    const h = plan.values.get(low.graph.ops[0]!.outputs[0]!)!;
    expect(h.why[0]).toMatchObject({
      rule: "dot_general lhs free 0",
      from: low.graph.inputs[2],
      root: { kind: "in", name: "x" },
    });
    expect(h.why[1]).toMatchObject({
      rule: "dot_general rhs free 1",
      from: low.graph.inputs[1],
      root: { kind: "in", name: "w.up" },
    });
    expect(
      plan.collectives.map(
        (c) => `${c.kind} {${c.axes}} ${c.type.dtype}[${c.type.shape}] ${c.op.name} ${c.role} ${names.get(c.value)}`,
      ),
    ).toEqual(["all-reduce {model} f32[4,16] dot_general result %5"]);
    expect(low.sharding!.resultShardings).toEqual([sh(["data"], [])]);
  });

  it("resolves a conflict by the stated rule and moves the loser: an all-to-all", () => {
    const f = tx.jit((a: tx.Tensor, b: tx.Tensor) => a.add(b), {
      mesh: mesh({ x: 4 }),
      in: [P("x", null), P(null, "x")],
    });
    const low = f.lower(tx.spec("f32", [8, 8]), tx.spec("f32", [8, 8]));
    const plan = low.sharding!.plan;
    // Equal priority and size: the earlier factor (dim 0) keeps axis x; operand b is moved to it.
    expect(plan.values.get(low.graph.outputs[0]!)!.sharding).toEqual(sh(["x"], []));
    expect(plan.collectives.map((c) => `${c.kind} ${c.role} ${c.type.shape}`)).toEqual(["all-to-all operand 1 8,2"]);
  });

  it("lets priority-0 batch splits claim an axis before priority-1 weight splits (FSDP): the weight is gathered", () => {
    const f = tx.jit((x: tx.Tensor, w: tx.Tensor) => x.matmul(w), {
      mesh: mesh({ d: 4 }),
      in: [P("d", null), P({ axes: "d", priority: 1 }, null)],
    });
    const low = f.lower(tx.spec("f32", [8, 64]), tx.spec("f32", [64, 64]));
    const plan = low.sharding!.plan;
    expect(plan.values.get(low.graph.outputs[0]!)!.sharding).toEqual(sh(["d"], []));
    expect(plan.collectives.map((c) => `${c.kind} {${c.axes}} ${c.role} ${c.type.shape}`)).toEqual([
      "all-gather {d} operand 1 64,64",
    ]);
  });

  it("sums over an axis the result is split along: all-reduce then slice on CPU, reduce-scatter where native", () => {
    const f = tx.jit((x: tx.Tensor, dy: tx.Tensor) => tx.dotGeneral(x, dy, { lhsContract: [0], rhsContract: [0] }), {
      mesh: mesh({ d: 4 }),
      in: [P("d", null), P("d", null)],
      out: P("d", null),
    });
    const low = f.lower(tx.spec("f32", [8, 32]), tx.spec("f32", [8, 16]));
    const plan = low.sharding!.plan;
    expect(plan.collectives.map((c) => `${c.kind} ${c.type.shape}`)).toEqual(["all-reduce 32,16"]);
    expect(plan.computedShardings.get(low.graph.ops[0]!.outputs[0]!)).toEqual(sh([], []));
    const seeds = new Map<import("../../src/ir/graph.ts").Value, Seed>([
      [low.graph.inputs[0]!, { sharding: sh(["d"], []), source: { kind: "in", name: "x" } }],
      [low.graph.inputs[1]!, { sharding: sh(["d"], []), source: { kind: "in", name: "dy" } }],
      [low.graph.outputs[0]!, { sharding: sh(["d"], []), source: { kind: "out", name: "out" } }],
    ]);
    const native = propagateShardings(low.graph, makeMesh({ d: 4 }), seeds, { reduceScatter: true });
    expect(native.collectives.map((c) => `${c.kind} ${c.type.shape}`)).toEqual(["reduce-scatter 8,16"]);
  });

  it("carries shardings into scan bodies: the loop's all-reduce runs once per layer", () => {
    const L = 3;
    const f = tx.jit(
      (h: tx.Tensor, w: { a: tx.Tensor; b: tx.Tensor }) =>
        tx.scan(
          (c: tx.Tensor, l: { a: tx.Tensor; b: tx.Tensor }) => [c.add(c.matmul(l.a).tanh().matmul(l.b)), null],
          h,
          w,
        )[0],
      { mesh: mesh({ m: 4 }), in: [P(), { a: P(null, null, "m"), b: P(null, "m", null) }] },
    );
    const low = f.lower(tx.spec("f32", [8, 16]), { a: tx.spec("f32", [L, 16, 32]), b: tx.spec("f32", [L, 32, 16]) });
    const plan = low.sharding!.plan;
    expect(plan.collectives.map((c) => `${c.kind} {${c.axes}} ${c.type.shape} x${c.times} loop=${c.inLoop}`)).toEqual([
      "all-reduce {m} 8,16 x3 loop=true",
    ]);
    const body = (
      low.graph.ops.find((op) => op.name === "scan")!.params as { body: import("../../src/ir/graph.ts").Graph }
    ).body;
    expect(plan.values.get(body.inputs[1]!)!.sharding).toEqual(sh([], ["m"])); // the layer's slice of `a`
  });

  it("moves a value between layouts with the fewest collectives", () => {
    const m = makeMesh({ x: 2, y: 4 });
    const t = tensorType("f32", [8, 8]);
    const moves = (a: Sharding, b: Sharding) => reshard(t, a, b, m).map((x) => `${x.kind} {${x.axes}} ${x.type.shape}`);
    expect(moves(sh(["x"], ["y"]), sh([], []))).toEqual(["all-gather {x} 8,2", "all-gather {y} 8,8"]);
    expect(moves(sh(["x"], []), sh([], ["x"]))).toEqual(["all-to-all {x} 4,8"]);
    expect(moves(sh([], []), sh(["x", "y"], []))).toEqual([]); // a local slice
    expect(moves({ dims: [["x"], []], partial: ["y"] }, sh(["x"], []))).toEqual(["all-reduce {y} 4,8"]);
  });
});

describe("Shardy emission", () => {
  it("annotates every argument and result and pins every op result (golden)", () => {
    const low = megatron();
    const text = emitStableHLO(low.graph, { ...shardedEmitOptions(low.graph, low.sharding!), locs: false });
    expect(text).toBe(`module @tessera attributes {mhlo.num_partitions = 8 : i32, mhlo.num_replicas = 1 : i32} {
  sdy.mesh @mesh = <["data"=2, "model"=4]>
  func.func public @main(%arg0: tensor<32x16xf32> {sdy.sharding = #sdy.sharding<@mesh, [{"model"}, {}]>}, %arg1: tensor<16x32xf32> {sdy.sharding = #sdy.sharding<@mesh, [{}, {"model"}]>}, %arg2: tensor<8x16xf32> {sdy.sharding = #sdy.sharding<@mesh, [{"data"}, {}]>}) -> (tensor<8x16xf32> {sdy.sharding = #sdy.sharding<@mesh, [{"data"}, {}]>}) {
    %0 = stablehlo.dot_general %arg2, %arg1, contracting_dims = [1] x [0], precision = [DEFAULT, DEFAULT] : (tensor<8x16xf32>, tensor<16x32xf32>) -> tensor<8x32xf32>
    %1 = sdy.sharding_constraint %0 <@mesh, [{"data"}, {"model"}]> : tensor<8x32xf32>
    %2 = stablehlo.tanh %1 : tensor<8x32xf32>
    %3 = sdy.sharding_constraint %2 <@mesh, [{"data"}, {"model"}]> : tensor<8x32xf32>
    %4 = stablehlo.dot_general %3, %arg0, contracting_dims = [1] x [0], precision = [DEFAULT, DEFAULT] : (tensor<8x32xf32>, tensor<32x16xf32>) -> tensor<8x16xf32>
    %5 = sdy.sharding_constraint %4 <@mesh, [{"data"}, {}]> : tensor<8x16xf32>
    return %5 : tensor<8x16xf32>
  }
}
`);
  });

  it("states reshards explicitly: an operand moved right before its op, a sum pinned where it is computed, then sliced", () => {
    const f = tx.jit(
      (x: tx.Tensor, w: tx.Tensor, dy: tx.Tensor) => [
        x.matmul(w),
        tx.dotGeneral(x, dy, { lhsContract: [0], rhsContract: [0] }),
      ],
      {
        mesh: mesh({ d: 4 }),
        in: [P("d", null), P({ axes: "d", priority: 1 }, null), P("d", null)],
        out: [P("d", null), P("d", null)],
      },
    );
    const low = f.lower(tx.spec("f32", [8, 64]), tx.spec("f32", [64, 64]), tx.spec("f32", [8, 16]));
    const text = emitStableHLO(low.graph, { ...shardedEmitOptions(low.graph, low.sharding!), locs: false });
    const body = text
      .split("\n")
      .slice(3, -4)
      .map((l) => l.trim());
    expect(body).toEqual([
      "%0 = sdy.sharding_constraint %arg1 <@mesh, [{}, {}]> : tensor<64x64xf32>", // FSDP weight gathered for this matmul only
      "%1 = stablehlo.dot_general %arg0, %0, contracting_dims = [1] x [0], precision = [DEFAULT, DEFAULT] : (tensor<8x64xf32>, tensor<64x64xf32>) -> tensor<8x64xf32>",
      '%2 = sdy.sharding_constraint %1 <@mesh, [{"d"}, {}]> : tensor<8x64xf32>',
      "%3 = stablehlo.dot_general %arg0, %arg2, contracting_dims = [0] x [0], precision = [DEFAULT, DEFAULT] : (tensor<8x64xf32>, tensor<8x16xf32>) -> tensor<64x16xf32>",
      "%4 = sdy.sharding_constraint %3 <@mesh, [{}, {}]> : tensor<64x16xf32>", // summed over d here (all-reduce)...
      '%5 = sdy.sharding_constraint %4 <@mesh, [{"d"}, {}]> : tensor<64x16xf32>', // ...then sliced
    ]);
    expect(low.sharding!.plan.collectives.map((c) => `${c.kind} ${c.role} ${c.type.shape}`)).toEqual([
      "all-gather operand 1 64,64",
      "all-reduce result 64,16",
    ]);
  });
});

describe("the Llama presets", () => {
  it("need two all-reduces per layer in the forward pass under tensor parallelism (o and down), plus the vocab-parallel embedding's", () => {
    const c = stepConfig(["q", "v"]);
    const m = mesh({ data: 2, model: 4 });
    const f = tx.jit(
      (w: unknown, lora: unknown, tokens: tx.Tensor) =>
        llamaLogits(SHARD_LLAMA, w as never, tokens, { lora: { weights: lora as never, layout: c.layout } }),
      {
        mesh: m,
        in: [llamaWeightSpecs(SHARD_LLAMA, m), loraWeightSpecs(c.layout, SHARD_LLAMA, m), P("data", null)],
      },
    );
    const low = f.lower(llamaSpecs(SHARD_LLAMA, "f32"), loraSpecs(c.layout, SHARD_LLAMA), tx.spec("s32", [8, 16]));
    const plan = low.sharding!.plan;
    // The forward pass scans its layers: the loop body holds the two all-reduces, run once per layer.
    const ops = plan.collectives.map((x) => `${x.kind} {${x.axes}} ${x.op.name} ${x.type.shape} x${x.times}`);
    expect(ops).toEqual([
      "all-reduce {model} gather 4,16,64 x1",
      ...Array(2).fill(`all-reduce {model} dot_general 4,16,64 x${SHARD_LLAMA.numLayers}`),
    ]);
    // o, then down: both from linear()'s matmul, whose op is recorded in models/stable.ts matmulF32Acc().
    expect(
      plan.collectives.slice(1).map((x) => `${x.op.loc?.file.split("/").slice(-2).join("/")}:${x.op.loc?.line}`),
    ).toEqual(Array(2).fill(`models/stable.ts:${lineOf("models/stable.ts", "tx.dotGeneral(x, w")}`));
    // The logits stay split over the vocabulary (no all-gather): a loss reduces them where they are.
    expect(plan.values.get(low.graph.outputs[0]!)!.sharding).toEqual(sh(["data"], [], ["model"]));
  });
});

describe("errors before compilation name the value and the user's line", () => {
  const m = mesh({ data: 2, model: 4 });
  const twice = (x: tx.Tensor) => x.mul(2);
  it("a spec of the wrong rank", () => {
    expect(() => tx.jit(twice, { mesh: m, in: [P("data")] }).lower(tx.spec("f32", [8, 16]))).toThrow(
      /^sharding: argument x: the spec P\("data"\) has 1 entry but the value is f32\[8,16\] \(rank 2\) at test\/sharding\/plan\.test\.ts:\d+:\d+$/,
    );
  });
  it("an unknown axis, and an axis that does not divide the dimension", () => {
    expect(() => tx.jit(twice, { mesh: m, in: [P("batch", null)] }).lower(tx.spec("f32", [8, 16]))).toThrow(
      /argument x: unknown mesh axis 'batch' in dimension 0/,
    );
    expect(() => tx.jit(twice, { mesh: m, in: [P(null, "model")] }).lower(tx.spec("f32", [8, 6]))).toThrow(
      /argument x: dimension 1 of f32\[8,6\] has size 6, which 'model' \(4 devices\) does not divide at test\/sharding\/plan\.test\.ts/,
    );
  });
  it("a spec tree naming what the arguments do not have", () => {
    const f = tx.jit((p: { w: tx.Tensor }) => p.w.mul(2), { mesh: m, in: [{ v: P(null) }] });
    expect(() => f.lower({ w: tx.spec("f32", [8]) })).toThrow(
      /^sharding: argument p\.v: the specs name 'v', which the value does not have \(keys: w\) at test\/sharding\/plan\.test\.ts:\d+:\d+$/,
    );
  });
  it("shard() of the wrong rank, where shard() is called", () => {
    const f = tx.jit((x: tx.Tensor) => tx.shard(x.mul(2), P("data")), { mesh: m });
    expect(() => f.lower(tx.spec("f32", [8, 16]))).toThrow(
      /^sharding: shard\(\) of f32\[8,16\]: the spec P\("data"\) has 1 entry but the value has rank 2 at test\/sharding\/plan\.test\.ts:\d+:\d+$/,
    );
  });
  it("a mesh whose size differs from the device count", () => {
    const four = { devices: [0, 1, 2, 3].map((id) => ({ id })) } as unknown as Client;
    expect(() => meshDevices(four, m)).toThrow(
      /^sharding: mesh: mesh\{data: 2, model: 4\} spans 8 devices but the client has 4; .* at test\/sharding\/plan\.test\.ts:\d+:\d+$/,
    );
  });
  it("shard() pins an intermediate: propagation keeps it and the module constrains it", () => {
    const f = tx.jit((x: tx.Tensor) => tx.shard(x.mul(2), P(null, "model")).add(1), { mesh: m, in: [P("data", null)] });
    const low = f.lower(tx.spec("f32", [8, 16]));
    const plan = low.sharding!.plan;
    const pinned = low.graph.ops.find((op) => op.name === "mul")!.outputs[0]!;
    expect(plan.values.get(pinned)).toMatchObject({
      sharding: sh([], ["model"]),
      annotation: { kind: "shard", name: "f32[8,16]" },
    });
    expect(low.stablehlo).toMatch(/%4 = sdy.sharding_constraint %3 <@mesh, \[{}, {"model"}\]> : tensor<8x16xf32>/); // the mul, pinned
    // x arrives split over data: gathered over data, then sliced over model (free), as the plan says.
    expect(plan.collectives.map((c) => `${c.kind} ${c.role}`)).toEqual(["all-gather operand 0"]);
  });
});
