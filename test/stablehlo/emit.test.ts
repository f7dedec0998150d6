// Golden StableHLO text for small graphs: module shape, every op's lowering, locations, donation, shardings.
import { describe, expect, it } from "vitest";
import { GraphBuilder, type Value } from "../../src/ir/graph.ts";
import { tensorType as tt, type SourceLoc } from "../../src/ir/types.ts";
import { emitStableHLO, EmitError, LOWERING_RULES } from "../../src/backend/stablehlo/index.ts";
import { OP_NAMES } from "../../src/ir/ops.ts";

/** The lines between the func signature and `return`, unindented: what an op's lowering printed. */
function body(text: string): string {
  const lines = text.split("\n");
  const start = lines.findIndex((l) => l.includes("func.func"));
  const end = lines.findIndex((l) => l.trim().startsWith("return"));
  return lines
    .slice(start + 1, end)
    .map((l) => l.slice(4))
    .join("\n");
}

function emitBody(build: (b: GraphBuilder) => Value[]): string {
  const b = new GraphBuilder();
  return body(emitStableHLO(b.build(build(b))));
}

const f32x23 = tt("f32", [2, 3]);

describe("module", () => {
  it("prints a public @main with module attributes, args, results and return", () => {
    const b = new GraphBuilder();
    const x = b.input(tt("f32", [4]));
    const y = b.input(tt("bf16", []));
    const s = b.add1("add", [x, x], {});
    expect(emitStableHLO(b.build([s, y]), { moduleName: "jit_step" })).toBe(
      `module @jit_step attributes {mhlo.num_partitions = 1 : i32, mhlo.num_replicas = 1 : i32} {
  func.func public @main(%arg0: tensor<4xf32>, %arg1: tensor<bf16>) -> (tensor<4xf32>, tensor<bf16>) {
    %0 = stablehlo.add %arg0, %arg0 : tensor<4xf32>
    return %0, %arg1 : tensor<4xf32>, tensor<bf16>
  }
}
`,
    );
  });

  it("prints one bare result type, and no arrow for no results", () => {
    const b = new GraphBuilder();
    const x = b.input(tt("s32", [2, 0]));
    expect(emitStableHLO(b.build([x]))).toContain(`@main(%arg0: tensor<2x0xi32>) -> tensor<2x0xi32> {`);
    const b2 = new GraphBuilder();
    b2.input(tt("u32", [1]));
    const text = emitStableHLO(b2.build([]));
    expect(text).toContain(`@main(%arg0: tensor<1xui32>) {`);
    expect(text).toContain(`    return\n`);
  });

  it("quotes module names MLIR would not accept bare", () => {
    const b = new GraphBuilder();
    expect(emitStableHLO(b.build([]), { moduleName: "my model" })).toMatch(/^module @"my model" attributes/);
  });

  it("has a lowering rule for every op", () => {
    expect(Object.keys(LOWERING_RULES).sort()).toEqual([...OP_NAMES].sort());
  });
});

describe("locations", () => {
  const loc: SourceLoc = { file: 'models/a "b"\\c.ts', line: 12, col: 5 };
  it('puts loc("file":line:col) on each op with a location, escaping quotes and backslashes', () => {
    const text = emitBody((b) => {
      const x = b.input(f32x23);
      return [b.add1("exp", [b.add1("neg", [x], {}, loc)], {})];
    });
    expect(text).toBe(
      `%0 = stablehlo.negate %arg0 : tensor<2x3xf32> loc("models/a \\"b\\"\\\\c.ts":12:5)
%1 = stablehlo.exponential %0 : tensor<2x3xf32>`,
    );
  });

  it("gives every helper op of a lowering the IR op's location, and can be turned off", () => {
    const b = new GraphBuilder();
    const x = b.input(f32x23);
    const g = b.build([b.add1("reduce_sum", [x], { axes: [0] }, { file: "m.ts", line: 1, col: 2 })]);
    expect(body(emitStableHLO(g))).toBe(
      `%0 = stablehlo.constant dense<0.0e+0> : tensor<f32> loc("m.ts":1:2)
%1 = stablehlo.reduce(%arg0 init: %0) applies stablehlo.add across dimensions = [0] : (tensor<2x3xf32>, tensor<f32>) -> tensor<3xf32> loc("m.ts":1:2)`,
    );
    expect(emitStableHLO(g, { locs: false })).not.toContain("loc(");
  });
});

describe("every op's lowering", () => {
  const unary: [string, string][] = [
    ["neg", "negate"],
    ["abs", "abs"],
    ["exp", "exponential"],
    ["log", "log"],
    ["sqrt", "sqrt"],
    ["rsqrt", "rsqrt"],
    ["tanh", "tanh"],
    ["logistic", "logistic"],
    ["sin", "sine"],
    ["cos", "cosine"],
    ["log1p", "log_plus_one"],
    ["expm1", "exponential_minus_one"],
    ["floor", "floor"],
    ["ceil", "ceil"],
    ["round", "round_nearest_even"],
    ["sign", "sign"],
  ];
  it.each(unary)("%s -> stablehlo.%s", (ir, hlo) => {
    const text = emitBody((b) => [b.add1(ir as "neg", [b.input(tt("bf16", [3]))], {})]);
    expect(text).toBe(`%0 = stablehlo.${hlo} %arg0 : tensor<3xbf16>`);
  });

  const binary: [string, string][] = [
    ["add", "add"],
    ["sub", "subtract"],
    ["mul", "multiply"],
    ["div", "divide"],
    ["pow", "power"],
    ["max", "maximum"],
    ["min", "minimum"],
  ];
  it.each(binary)("%s -> stablehlo.%s", (ir, hlo) => {
    const text = emitBody((b) => [b.add1(ir as "add", [b.input(f32x23), b.input(f32x23)], {})]);
    expect(text).toBe(`%0 = stablehlo.${hlo} %arg0, %arg1 : tensor<2x3xf32>`);
  });

  const bitwise: [string, string][] = [
    ["and", "and"],
    ["or", "or"],
    ["xor", "xor"],
    ["shift_left", "shift_left"],
    ["shift_right_logical", "shift_right_logical"],
  ];
  it.each(bitwise)("%s -> stablehlo.%s on u32", (ir, hlo) => {
    const u = tt("u32", [4]);
    const text = emitBody((b) => [b.add1(ir as "and", [b.input(u), b.input(u)], {})]);
    expect(text).toBe(`%0 = stablehlo.${hlo} %arg0, %arg1 : tensor<4xui32>`);
  });

  it("erf -> chlo.erf in generic form (what JAX emits for lax.erf; XLA expands it)", () => {
    const text = emitBody((b) => [b.add1("erf", [b.input(tt("f32", [3]))], {})]);
    expect(text).toBe(`%0 = "chlo.erf"(%arg0) : (tensor<3xf32>) -> tensor<3xf32>`);
  });

  it("not on bool; abs of u32 is the operand itself", () => {
    const b = new GraphBuilder();
    const p = b.input(tt("bool", [2]));
    const u = b.input(tt("u32", [2]));
    const text = emitStableHLO(b.build([b.add1("not", [p], {}), b.add1("abs", [u], {})]));
    expect(body(text)).toBe(`%0 = stablehlo.not %arg0 : tensor<2xi1>`);
    expect(text).toContain(`return %0, %arg1 :`);
  });

  it("compare picks FLOAT / SIGNED / UNSIGNED from the operand dtype", () => {
    const text = emitBody((b) => [
      b.add1("compare", [b.input(tt("bf16", [2])), b.input(tt("bf16", [2]))], { dir: "lt" }),
      b.add1("compare", [b.input(tt("s32", [2])), b.input(tt("s32", [2]))], { dir: "ge" }),
      b.add1("compare", [b.input(tt("u32", [2])), b.input(tt("u32", [2]))], { dir: "eq" }),
      b.add1("compare", [b.input(tt("bool", [2])), b.input(tt("bool", [2]))], { dir: "ne" }),
    ]);
    expect(text).toBe(
      `%0 = stablehlo.compare LT, %arg0, %arg1, FLOAT : (tensor<2xbf16>, tensor<2xbf16>) -> tensor<2xi1>
%1 = stablehlo.compare GE, %arg2, %arg3, SIGNED : (tensor<2xi32>, tensor<2xi32>) -> tensor<2xi1>
%2 = stablehlo.compare EQ, %arg4, %arg5, UNSIGNED : (tensor<2xui32>, tensor<2xui32>) -> tensor<2xi1>
%3 = stablehlo.compare NE, %arg6, %arg7, UNSIGNED : (tensor<2xi1>, tensor<2xi1>) -> tensor<2xi1>`,
    );
  });

  it("select", () => {
    const text = emitBody((b) => [
      b.add1("select", [b.input(tt("bool", [2, 3])), b.input(f32x23), b.input(f32x23)], {}),
    ]);
    expect(text).toBe(`%0 = stablehlo.select %arg0, %arg1, %arg2 : tensor<2x3xi1>, tensor<2x3xf32>`);
  });

  it("convert; to bool is a comparison with zero", () => {
    const text = emitBody((b) => {
      const x = b.input(tt("f32", [2]));
      const i = b.input(tt("s32", [2]));
      return [
        b.add1("convert", [x], { dtype: "bf16" }),
        b.add1("convert", [x], { dtype: "bool" }),
        b.add1("convert", [i], { dtype: "bool" }),
      ];
    });
    expect(text).toBe(
      `%0 = stablehlo.convert %arg0 : (tensor<2xf32>) -> tensor<2xbf16>
%1 = stablehlo.constant dense<0.0e+0> : tensor<2xf32>
%2 = stablehlo.compare NE, %arg0, %1, FLOAT : (tensor<2xf32>, tensor<2xf32>) -> tensor<2xi1>
%3 = stablehlo.constant dense<0> : tensor<2xi32>
%4 = stablehlo.compare NE, %arg1, %3, SIGNED : (tensor<2xi32>, tensor<2xi32>) -> tensor<2xi1>`,
    );
  });

  it("bitcast_convert", () => {
    const text = emitBody((b) => [b.add1("bitcast_convert", [b.input(tt("bf16", [2]))], { dtype: "f16" })]);
    expect(text).toBe(`%0 = stablehlo.bitcast_convert %arg0 : (tensor<2xbf16>) -> tensor<2xf16>`);
  });

  it("constants: splats, nested lists, exact f32 decimals, hex for non-finite and 16-bit floats", () => {
    const text = emitBody((b) => [
      b.add1("constant", [], { dtype: "f32", shape: [2, 2], value: [1, -Infinity, NaN, 0.1] }),
      b.add1("constant", [], { dtype: "f32", shape: [3], value: [1e-7] }),
      b.add1("constant", [], { dtype: "bf16", shape: [2], value: [1, -Infinity] }),
      b.add1("constant", [], { dtype: "f16", shape: [], value: [65504] }),
      b.add1("constant", [], { dtype: "s32", shape: [3], value: [1, -2, 2 ** 31] }),
      b.add1("constant", [], { dtype: "u32", shape: [], value: [-1] }),
      b.add1("constant", [], { dtype: "bool", shape: [2], value: [1, 0] }),
      b.add1("constant", [], { dtype: "f32", shape: [2, 0], value: [] }),
    ]);
    expect(text).toBe(
      `%0 = stablehlo.constant dense<[[1.0e+0, 0xFF800000], [0x7FC00000, 1.0e-1]]> : tensor<2x2xf32>
%1 = stablehlo.constant dense<1.0e-7> : tensor<3xf32>
%2 = stablehlo.constant dense<[0x3F80, 0xFF80]> : tensor<2xbf16>
%3 = stablehlo.constant dense<0x7BFF> : tensor<f16>
%4 = stablehlo.constant dense<[1, -2, -2147483648]> : tensor<3xi32>
%5 = stablehlo.constant dense<4294967295> : tensor<ui32>
%6 = stablehlo.constant dense<[true, false]> : tensor<2xi1>
%7 = stablehlo.constant dense<> : tensor<2x0xf32>`,
    );
  });

  it("iota, broadcast_in_dim, reshape, transpose", () => {
    const text = emitBody((b) => {
      const x = b.input(f32x23);
      return [
        b.add1("iota", [], { dtype: "s32", shape: [2, 3], dim: 1 }),
        b.add1("broadcast_in_dim", [x], { shape: [4, 2, 3], dims: [1, 2] }),
        b.add1("reshape", [x], { shape: [3, 2] }),
        b.add1("transpose", [x], { perm: [1, 0] }),
      ];
    });
    expect(text).toBe(
      `%0 = stablehlo.iota dim = 1 : tensor<2x3xi32>
%1 = stablehlo.broadcast_in_dim %arg0, dims = [1, 2] : (tensor<2x3xf32>) -> tensor<4x2x3xf32>
%2 = stablehlo.reshape %arg0 : (tensor<2x3xf32>) -> tensor<3x2xf32>
%3 = stablehlo.transpose %arg0, dims = [1, 0] : (tensor<2x3xf32>) -> tensor<3x2xf32>`,
    );
  });

  it("slice (strides printed when not 1), concatenate, pad", () => {
    const text = emitBody((b) => {
      const x = b.input(f32x23);
      const v = b.input(tt("f32", []));
      return [
        b.add1("slice", [x], { start: [1, 0], limit: [2, 3], stride: [1, 2] }),
        b.add1("concatenate", [x, x], { axis: 1 }),
        b.add1("pad", [x, v], { low: [1, -1], high: [0, 2], interior: [1, 0] }),
      ];
    });
    expect(text).toBe(
      `%0 = stablehlo.slice %arg0 [1:2, 0:3:2] : (tensor<2x3xf32>) -> tensor<1x2xf32>
%1 = stablehlo.concatenate %arg0, %arg0, dim = 1 : (tensor<2x3xf32>, tensor<2x3xf32>) -> tensor<2x6xf32>
%2 = stablehlo.pad %arg0, %arg1, low = [1, -1], high = [0, 2], interior = [1, 0] : (tensor<2x3xf32>, tensor<f32>) -> tensor<4x4xf32>`,
    );
  });

  it("reductions start from their identity: 0, -inf/+inf, integer min/max", () => {
    const text = emitBody((b) => {
      const x = b.input(tt("bf16", [2, 3]));
      const i = b.input(tt("s32", [4]));
      const u = b.input(tt("u32", [4]));
      return [
        b.add1("reduce_sum", [x], { axes: [1] }),
        b.add1("reduce_max", [x], { axes: [0, 1] }),
        b.add1("reduce_min", [x], { axes: [0] }),
        b.add1("reduce_max", [i], { axes: [0] }),
        b.add1("reduce_min", [u], { axes: [0] }),
      ];
    });
    expect(text).toBe(
      `%0 = stablehlo.constant dense<0x0000> : tensor<bf16>
%1 = stablehlo.reduce(%arg0 init: %0) applies stablehlo.add across dimensions = [1] : (tensor<2x3xbf16>, tensor<bf16>) -> tensor<2xbf16>
%2 = stablehlo.constant dense<0xFF80> : tensor<bf16>
%3 = stablehlo.reduce(%arg0 init: %2) applies stablehlo.maximum across dimensions = [0, 1] : (tensor<2x3xbf16>, tensor<bf16>) -> tensor<bf16>
%4 = stablehlo.constant dense<0x7F80> : tensor<bf16>
%5 = stablehlo.reduce(%arg0 init: %4) applies stablehlo.minimum across dimensions = [0] : (tensor<2x3xbf16>, tensor<bf16>) -> tensor<3xbf16>
%6 = stablehlo.constant dense<-2147483648> : tensor<i32>
%7 = stablehlo.reduce(%arg1 init: %6) applies stablehlo.maximum across dimensions = [0] : (tensor<4xi32>, tensor<i32>) -> tensor<i32>
%8 = stablehlo.constant dense<4294967295> : tensor<ui32>
%9 = stablehlo.reduce(%arg2 init: %8) applies stablehlo.minimum across dimensions = [0] : (tensor<4xui32>, tensor<ui32>) -> tensor<ui32>`,
    );
  });

  it("dot_general with batch dims, contracting dims and a wider result type", () => {
    const text = emitBody((b) => [
      b.add1("dot_general", [b.input(tt("bf16", [2, 8, 16])), b.input(tt("bf16", [2, 16, 4]))], {
        lhsBatch: [0],
        rhsBatch: [0],
        lhsContract: [2],
        rhsContract: [1],
        outDtype: "f32",
      }),
      b.add1("dot_general", [b.input(tt("f32", [3])), b.input(tt("f32", [2]))], {
        lhsBatch: [],
        rhsBatch: [],
        lhsContract: [],
        rhsContract: [],
        outDtype: "f32",
      }),
    ]);
    expect(text).toBe(
      `%0 = stablehlo.dot_general %arg0, %arg1, batching_dims = [0] x [0], contracting_dims = [2] x [1], precision = [DEFAULT, DEFAULT] : (tensor<2x8x16xbf16>, tensor<2x16x4xbf16>) -> tensor<2x8x4xf32>
%1 = stablehlo.dot_general %arg2, %arg3, contracting_dims = [] x [], precision = [DEFAULT, DEFAULT] : (tensor<3xf32>, tensor<2xf32>) -> tensor<3x2xf32>`,
    );
  });

  it("gather (embedding rows) and scatter_add (its transpose)", () => {
    const text = emitBody((b) => {
      const table = b.input(tt("bf16", [256, 64]));
      const ids = b.input(tt("s32", [4, 16]));
      const upd = b.input(tt("bf16", [4, 16, 64]));
      return [b.add1("gather", [table, ids], {}), b.add1("scatter_add", [table, ids, upd], {})];
    });
    expect(text).toBe(
      `%0 = "stablehlo.gather"(%arg0, %arg1) <{dimension_numbers = #stablehlo.gather<offset_dims = [2], collapsed_slice_dims = [0], start_index_map = [0], index_vector_dim = 2>, indices_are_sorted = false, slice_sizes = array<i64: 1, 64>}> : (tensor<256x64xbf16>, tensor<4x16xi32>) -> tensor<4x16x64xbf16>
%1 = "stablehlo.scatter"(%arg0, %arg1, %arg2) <{indices_are_sorted = false, scatter_dimension_numbers = #stablehlo.scatter<update_window_dims = [2], inserted_window_dims = [0], scatter_dims_to_operand_dims = [0], index_vector_dim = 2>, unique_indices = false}> ({
^bb0(%it2: tensor<bf16>, %it3: tensor<bf16>):
  %4 = stablehlo.add %it2, %it3 : tensor<bf16>
  stablehlo.return %4 : tensor<bf16>
}) : (tensor<256x64xbf16>, tensor<4x16xi32>, tensor<4x16x64xbf16>) -> tensor<256x64xbf16>`,
    );
  });

  it("take_along_axis is a gather with the other dims as batching dims", () => {
    const text = emitBody((b) => [
      b.add1("take_along_axis", [b.input(tt("f32", [4, 16, 256])), b.input(tt("s32", [4, 16, 1]))], { axis: 2 }),
    ]);
    expect(text).toBe(
      `%0 = "stablehlo.gather"(%arg0, %arg1) <{dimension_numbers = #stablehlo.gather<collapsed_slice_dims = [2], operand_batching_dims = [0, 1], start_indices_batching_dims = [0, 1], start_index_map = [2], index_vector_dim = 3>, indices_are_sorted = false, slice_sizes = array<i64: 1, 1, 1>}> : (tensor<4x16x256xf32>, tensor<4x16x1xi32>) -> tensor<4x16x1xf32>`,
    );
  });

  it("sort: one stablehlo.sort over all operands, the comparator ordering by the first (TOTALORDER for floats)", () => {
    const text = emitBody((b) => {
      const x = b.input(tt("f32", [2, 5]));
      const i = b.input(tt("s32", [2, 5]));
      return b.add("sort", [x, i], { dimension: 1, descending: true, stable: true });
    });
    expect(text).toBe(
      [
        `%0:2 = "stablehlo.sort"(%arg0, %arg1) <{dimension = 1 : i64, is_stable = true}> ({`,
        `^bb0(%it1: tensor<f32>, %it2: tensor<f32>, %it3: tensor<i32>, %it4: tensor<i32>):`,
        `  %5 = stablehlo.compare GT, %it1, %it2, TOTALORDER : (tensor<f32>, tensor<f32>) -> tensor<i1>`,
        `  stablehlo.return %5 : tensor<i1>`,
        `}) : (tensor<2x5xf32>, tensor<2x5xi32>) -> (tensor<2x5xf32>, tensor<2x5xi32>)`,
      ].join("\n"),
    );
    const ints = emitBody((b) =>
      b.add("sort", [b.input(tt("u32", [3]))], { dimension: 0, descending: false, stable: false }),
    );
    expect(ints).toContain("is_stable = false");
    expect(ints).toContain("stablehlo.compare LT, %it1, %it2, UNSIGNED");
  });

  it("dynamic_slice and dynamic_update_slice; mixed index types become i32", () => {
    const text = emitBody((b) => {
      const x = b.input(tt("f32", [8, 16]));
      const i = b.input(tt("s32", []));
      const j = b.input(tt("u32", []));
      const u = b.input(tt("f32", [2, 16]));
      return [b.add1("dynamic_slice", [x, i, i], { sizes: [2, 16] }), b.add1("dynamic_update_slice", [x, u, i, j], {})];
    });
    expect(text).toBe(
      `%0 = stablehlo.dynamic_slice %arg0, %arg1, %arg1, sizes = [2, 16] : (tensor<8x16xf32>, tensor<i32>, tensor<i32>) -> tensor<2x16xf32>
%1 = stablehlo.constant dense<2147483647> : tensor<ui32>
%2 = stablehlo.minimum %arg2, %1 : tensor<ui32>
%3 = stablehlo.convert %2 : (tensor<ui32>) -> tensor<i32>
%4 = stablehlo.dynamic_update_slice %arg0, %arg3, %arg1, %3 : (tensor<8x16xf32>, tensor<2x16xf32>, tensor<i32>, tensor<i32>) -> tensor<8x16xf32>`,
    );
  });

  it("optimization_barrier over several values", () => {
    const b = new GraphBuilder();
    const x = b.input(tt("f32", [4]));
    const y = b.input(tt("bf16", [4]));
    const text = emitStableHLO(b.build(b.add("optimization_barrier", [x, y], {})));
    expect(body(text)).toBe(`%0:2 = stablehlo.optimization_barrier %arg0, %arg1 : tensor<4xf32>, tensor<4xbf16>`);
    expect(text).toContain(`return %0#0, %0#1 : tensor<4xf32>, tensor<4xbf16>`);
  });
});

describe("scan", () => {
  /** body(w, c, x) = (c + x*w, x*w): a running weighted sum, stacked products as ys. */
  function scanGraph(reverse: boolean, length = 4) {
    const bb = new GraphBuilder();
    const w = bb.input(tt("f32", [3]));
    const c = bb.input(tt("f32", [3]));
    const xr = bb.input(tt("f32", [3]));
    const m = bb.add1("mul", [xr, w], {});
    const s = bb.add1("add", [c, m], {}, { file: "body.ts", line: 2, col: 3 });
    const b = new GraphBuilder();
    const w0 = b.input(tt("f32", [3]));
    const c0 = b.input(tt("f32", [3]));
    const xs = b.input(tt("f32", [length, 3]));
    const outs = b.add("scan", [w0, c0, xs], { body: bb.build([s, m]), length, numConsts: 1, numCarry: 1, reverse });
    return b.build(outs);
  }

  it("is a while over (counter, consts, carries, xs, ys) with dynamic slices in and out", () => {
    const text = emitStableHLO(scanGraph(false));
    expect(body(text)).toBe(
      `%0 = stablehlo.constant dense<0> : tensor<i32>
%1 = stablehlo.constant dense<0.0e+0> : tensor<4x3xf32>
%7:5 = stablehlo.while(%it2 = %0, %it3 = %arg0, %it4 = %arg1, %it5 = %arg2, %it6 = %1) : tensor<i32>, tensor<3xf32>, tensor<3xf32>, tensor<4x3xf32>, tensor<4x3xf32>
  cond {
    %8 = stablehlo.constant dense<4> : tensor<i32>
    %9 = stablehlo.compare LT, %it2, %8, SIGNED : (tensor<i32>, tensor<i32>) -> tensor<i1>
    stablehlo.return %9 : tensor<i1>
  } do {
    %10 = stablehlo.constant dense<0> : tensor<i32>
    %11 = stablehlo.dynamic_slice %it5, %it2, %10, sizes = [1, 3] : (tensor<4x3xf32>, tensor<i32>, tensor<i32>) -> tensor<1x3xf32>
    %12 = stablehlo.reshape %11 : (tensor<1x3xf32>) -> tensor<3xf32>
    %13 = stablehlo.multiply %12, %it3 : tensor<3xf32>
    %14 = stablehlo.add %it4, %13 : tensor<3xf32> loc("body.ts":2:3)
    %15 = stablehlo.reshape %13 : (tensor<3xf32>) -> tensor<1x3xf32>
    %16 = stablehlo.dynamic_update_slice %it6, %15, %it2, %10 : (tensor<4x3xf32>, tensor<1x3xf32>, tensor<i32>, tensor<i32>) -> tensor<4x3xf32>
    %17 = stablehlo.constant dense<1> : tensor<i32>
    %18 = stablehlo.add %it2, %17 : tensor<i32>
    stablehlo.return %18, %it3, %14, %it5, %16 : tensor<i32>, tensor<3xf32>, tensor<3xf32>, tensor<4x3xf32>, tensor<4x3xf32>
  }`,
    );
    expect(text).toContain(`return %7#2, %7#4 : tensor<3xf32>, tensor<4x3xf32>`);
  });

  it("reverse counts down from length-1 while the counter is >= 0", () => {
    const text = emitStableHLO(scanGraph(true));
    expect(text).toContain(`%0 = stablehlo.constant dense<3> : tensor<i32>`);
    expect(text).toContain(`%8 = stablehlo.constant dense<0> : tensor<i32>`);
    expect(text).toContain(`stablehlo.compare GE, %it2, %8, SIGNED`);
    expect(text).toContain(`%18 = stablehlo.subtract %it2, %17 : tensor<i32>`);
  });

  it("of length 0 returns the carries and empty ys without a loop", () => {
    const text = emitStableHLO(scanGraph(false, 0));
    expect(body(text)).toBe(`%0 = stablehlo.constant dense<> : tensor<0x3xf32>`);
    expect(text).toContain(`return %arg1, %0 : tensor<3xf32>, tensor<0x3xf32>`);
  });
});

describe("donation and shardings", () => {
  function pair() {
    const b = new GraphBuilder();
    const x = b.input(tt("f32", [4]));
    const y = b.input(tt("f32", [4]));
    const z = b.input(tt("s32", [4]));
    return b.build([b.add1("add", [x, y], {}), z]);
  }

  it("marks tf.aliasing_output and jax.buffer_donor on arguments", () => {
    const text = emitStableHLO(pair(), { donate: [0, undefined, 1], donors: [true, true] });
    expect(text).toContain(
      `@main(%arg0: tensor<4xf32> {tf.aliasing_output = 0 : i32}, %arg1: tensor<4xf32> {jax.buffer_donor = true}, %arg2: tensor<4xi32> {tf.aliasing_output = 1 : i32})`,
    );
  });

  it("refuses to alias an input to an output of another type, a missing output, or one output twice", () => {
    expect(() => emitStableHLO(pair(), { donate: [1] })).toThrow(
      /input 0 \(f32\[4\]\) is donated to output 1 of another type \(s32\[4\]\)/,
    );
    expect(() => emitStableHLO(pair(), { donate: [2] })).toThrow(EmitError);
    expect(() => emitStableHLO(pair(), { donate: [0, 0] })).toThrow(/inputs 0 and 1 are both donated to output 0/);
  });

  it("emits sdy shardings, the mesh and num_partitions", () => {
    const text = emitStableHLO(pair(), {
      numPartitions: 8,
      mesh: {
        axes: [
          { name: "x", size: 4 },
          { name: "y", size: 2 },
        ],
      },
      argShardings: [`#sdy.sharding<@mesh, [{"x"}]>`, "", `#sdy.sharding<@mesh, [{}]>`],
      resultShardings: [`#sdy.sharding<@mesh, [{"x"}]>`],
      donate: [0],
    });
    expect(text).toBe(
      `module @tessera attributes {mhlo.num_partitions = 8 : i32, mhlo.num_replicas = 1 : i32} {
  sdy.mesh @mesh = <["x"=4, "y"=2]>
  func.func public @main(%arg0: tensor<4xf32> {tf.aliasing_output = 0 : i32, sdy.sharding = #sdy.sharding<@mesh, [{"x"}]>}, %arg1: tensor<4xf32>, %arg2: tensor<4xi32> {sdy.sharding = #sdy.sharding<@mesh, [{}]>}) -> (tensor<4xf32> {sdy.sharding = #sdy.sharding<@mesh, [{"x"}]>}, tensor<4xi32>) {
    %0 = stablehlo.add %arg0, %arg1 : tensor<4xf32>
    return %0, %arg2 : tensor<4xf32>, tensor<4xi32>
  }
}
`,
    );
  });

  it("names the op and the user's line when a value is used before it is defined", () => {
    const b = new GraphBuilder();
    const x = b.input(tt("f32", [2]));
    const g = b.build([x]);
    const stray = new GraphBuilder();
    const other = stray.input(tt("f32", [2]));
    const bad = {
      ...g,
      ops: [...stray.build([stray.add1("neg", [other], {}, { file: "u.ts", line: 9, col: 1 })]).ops],
    };
    expect(() => emitStableHLO(bad)).toThrow(
      `stablehlo: neg: uses a value that no earlier op or input defines at u.ts:9:1`,
    );
  });
});
