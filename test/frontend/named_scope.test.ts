// namedScope (jax.named_scope): scope paths in IR locations, the IR text, StableHLO locs and error messages.
import { beforeAll, describe, expect, it } from "vitest";
import { namedScope, spec, trace, tx, TraceError, setLocationCapture } from "./api.ts";
import { print } from "../../src/ir/print.ts";
import { parse } from "../../src/ir/parse.ts";
import { emitStableHLO } from "../../src/backend/stablehlo/index.ts";
import { getClient, type Client } from "../../src/backend/runtime/index.ts";
import { LLAMA_TINY, llamaLogits, llamaSpecs } from "../../models/llama.ts";
import { subgraphs, type Graph } from "../../src/ir/graph.ts";

// A helper called from two scopes: its ops must be told apart by the scope they were traced in.
function dense(x: tx.Tensor, w: tx.Tensor): tx.Tensor {
  return tx.matmul(x, w).tanh();
}

function model(x: tx.Tensor, w1: tx.Tensor, w2: tx.Tensor): tx.Tensor {
  const h = namedScope("layer0", () => namedScope("mlp", () => dense(x, w1)));
  const y = namedScope("layer1", () => dense(h, w2));
  return y.sum();
}

const HERE = "test/frontend/named_scope.test.ts";
const SPECS = [spec("f32", [2, 3]), spec("f32", [3, 3]), spec("f32", [3, 3])];

describe("namedScope", () => {
  it("records the scope path in each op's location; the IR text shows it (golden)", () => {
    const { graph } = trace(model, SPECS);
    expect(print(graph)).toBe(
      `func @main(%0: f32[2,3] "x", %1: f32[3,3] "w1", %2: f32[3,3] "w2") -> (f32[] "out") {
  %3: f32[2,3] = dot_general %0, %1 {lhsBatch=[], lhsContract=[1], outDtype=f32, rhsBatch=[], rhsContract=[0]} loc("layer0/mlp"("test/frontend/named_scope.test.ts":13:13))
  %4: f32[2,3] = tanh %3 loc("layer0/mlp"("test/frontend/named_scope.test.ts":13:26))
  %5: f32[2,3] = dot_general %4, %2 {lhsBatch=[], lhsContract=[1], outDtype=f32, rhsBatch=[], rhsContract=[0]} loc("layer1"("test/frontend/named_scope.test.ts":13:13))
  %6: f32[2,3] = tanh %5 loc("layer1"("test/frontend/named_scope.test.ts":13:26))
  %7: f32[] = reduce_sum %6 {axes=[0,1]} loc("test/frontend/named_scope.test.ts":19:12)
  return %7
}
`,
    );
  });

  it("round-trips through the IR parser, scope and place both", () => {
    const { graph } = trace(model, SPECS);
    const text = print(graph);
    expect(print(parse(text))).toBe(text);
  });

  it("nests with '/', restores the outer scope after the function returns or throws, and returns its value", () => {
    const seen: string[] = [];
    const f = (x: tx.Tensor) => {
      const a = namedScope("outer", () => {
        const inner = namedScope("inner", () => x.exp());
        expect(() => namedScope("broken", () => x.matmul(x))).toThrow(TraceError);
        return inner.add(1); // back in "outer" after both the return and the throw
      });
      return a.neg();
    };
    const { graph } = trace(f, [spec("f32", [2, 3])]);
    for (const op of graph.ops) seen.push(`${op.name}@${op.loc?.scope ?? "-"}`);
    expect(seen).toEqual(["exp@outer/inner", "constant@outer", "add@outer", "neg@-"]);
  });

  it("a shape error inside a scope names the scope and still points at the user's line", () => {
    let err: unknown;
    try {
      trace(
        (x: tx.Tensor) => namedScope("layer3", () => namedScope("attention", () => tx.matmul(x, x))),
        [spec("f32", [2, 3])],
      );
    } catch (e) {
      err = e;
    }
    expect(err).toBeInstanceOf(TraceError);
    const e = err as TraceError;
    expect(e.loc?.scope).toBe("layer3/attention");
    expect(e.loc?.file).toBe("test/frontend/named_scope.test.ts");
    expect(e.message).toMatch(/^matmul: .* in layer3\/attention at test\/frontend\/named_scope\.test\.ts:\d+:\d+$/);
  });

  it('keeps the scope when location capture is off (loc("scope") in the IR text, parsed back)', () => {
    setLocationCapture(false);
    try {
      const { graph } = trace((x: tx.Tensor) => namedScope("s", () => x.exp()).neg(), [spec("f32", [2])]);
      const text = print(graph);
      expect(text).toContain('= exp %0 loc("s")\n');
      expect(text).toMatch(/= neg %1\n/);
      expect(print(parse(text))).toBe(text);
    } finally {
      setLocationCapture(true);
    }
  });

  it("refuses an empty name, a non-function and an async function", () => {
    expect(() => namedScope("", () => 1)).toThrow(/namedScope: the name must be a non-empty string, got the string ""/);
    expect(() => namedScope("a", 3 as never)).toThrow(
      /namedScope: the second argument must be a function, got number 3/,
    );
    expect(() => namedScope("a", async () => 1)).toThrow(/namedScope: 'a': the function returned a Promise/);
  });
});

describe("namedScope in StableHLO", () => {
  let client: Client;
  beforeAll(async () => {
    client = await getClient();
  });

  it("emits JAX-style NameLocs (scope/op) around the user's place, which XLA compiles and runs", async () => {
    const { graph } = trace(model, SPECS);
    const text = emitStableHLO(graph);
    expect(text).toBe(`module @tessera attributes {mhlo.num_partitions = 1 : i32, mhlo.num_replicas = 1 : i32} {
  func.func public @main(%arg0: tensor<2x3xf32>, %arg1: tensor<3x3xf32>, %arg2: tensor<3x3xf32>) -> tensor<f32> {
    %0 = stablehlo.dot_general %arg0, %arg1, contracting_dims = [1] x [0], precision = [DEFAULT, DEFAULT] : (tensor<2x3xf32>, tensor<3x3xf32>) -> tensor<2x3xf32> loc("layer0/mlp/dot_general"("${HERE}":13:13))
    %1 = stablehlo.tanh %0 : tensor<2x3xf32> loc("layer0/mlp/tanh"("${HERE}":13:26))
    %2 = stablehlo.dot_general %1, %arg2, contracting_dims = [1] x [0], precision = [DEFAULT, DEFAULT] : (tensor<2x3xf32>, tensor<3x3xf32>) -> tensor<2x3xf32> loc("layer1/dot_general"("${HERE}":13:13))
    %3 = stablehlo.tanh %2 : tensor<2x3xf32> loc("layer1/tanh"("${HERE}":13:26))
    %4 = stablehlo.constant dense<0.0e+0> : tensor<f32> loc("${HERE}":19:12)
    %5 = stablehlo.reduce(%3 init: %4) applies stablehlo.add across dimensions = [0, 1] : (tensor<2x3xf32>, tensor<f32>) -> tensor<f32> loc("${HERE}":19:12)
    return %5 : tensor<f32>
  }
}
`);
    const exe = await client.compile(text);
    const one = new Float32Array(9).fill(0.1);
    const bufs = [
      client.bufferFromHost(new Float32Array(6).fill(1), "f32", [2, 3]),
      client.bufferFromHost(one, "f32", [3, 3]),
      client.bufferFromHost(one, "f32", [3, 3]),
    ];
    const [out] = await exe.run(bufs);
    const got = (await out!.toHost()) as Float32Array;
    const h = Math.tanh(0.3);
    expect(got[0]).toBeCloseTo(6 * Math.tanh(3 * 0.1 * h), 5);
  });

  it("backward ops of a scoped op keep its scope (grad inside jit's lowering)", () => {
    const loss = (w: tx.Tensor, x: tx.Tensor) => namedScope("head", () => tx.matmul(x, w).tanh().sum());
    const lowered = tx.jit(tx.grad(loss)).lower(spec("f32", [3, 3]), spec("f32", [2, 3]));
    expect(lowered.stablehlo).toMatch(/loc\("head\/dot_general"/);
    const scopes = new Set(lowered.graph.ops.map((op) => op.loc?.scope));
    expect([...scopes]).toEqual(["head"]);
  });

  it("XLA keeps the scoped names as the optimized HLO's op_name metadata (what profiles show)", async () => {
    const f = tx.jit((x: tx.Tensor, w: tx.Tensor) =>
      namedScope("layer0", () => namedScope("attn", () => tx.matmul(x, w).tanh())),
    );
    const { executable } = await f.compile(spec("f32", [2, 3]), spec("f32", [3, 3]));
    const named = executable
      .hloModule()
      .computations.flatMap((c) => c.instructions)
      .filter((i) => i.opcode !== "parameter")
      .map((i) => `${i.opcode}:${i.opName}`);
    expect(named).toContain("dot:layer0/attn/dot_general");
    expect(named.some((n) => n.endsWith(":layer0/attn/tanh"))).toBe(true);
  });

  it("the Llama model names its layers, attention and MLP (scanned and unrolled)", () => {
    const scopesOf = (g: Graph): Set<string> => {
      const out = new Set<string>();
      const walk = (graph: Graph) => {
        for (const op of graph.ops) {
          if (op.loc?.scope) out.add(op.loc.scope);
          for (const sub of subgraphs(op)) walk(sub);
        }
      };
      walk(g);
      return out;
    };
    const cfg = { ...LLAMA_TINY, numLayers: 2 };
    const args = [llamaSpecs(cfg, "f32"), spec("s32", [1, 8])];
    const scanned = trace((w, t) => llamaLogits(cfg, w, t), args).graph;
    expect([...scopesOf(scanned)].sort()).toEqual(["layers", "layers/attention", "layers/mlp"]);
    const unrolled = trace((w, t) => llamaLogits(cfg, w, t, { layers: "unroll" }), args).graph;
    expect([...scopesOf(unrolled)].sort()).toEqual([
      "layer0",
      "layer0/attention",
      "layer0/mlp",
      "layer1",
      "layer1/attention",
      "layer1/mlp",
    ]);
  });
});
