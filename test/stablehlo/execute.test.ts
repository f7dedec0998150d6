// Emitted StableHLO compiled and run on the PJRT CPU plugin, compared with the reference interpreter.
import { beforeAll, describe, expect, it } from "vitest";
import { emitStableHLO } from "../../src/backend/stablehlo/index.ts";
import { getClient, type Client } from "../../src/backend/runtime/index.ts";
import { GraphBuilder, type Graph } from "../../src/ir/graph.ts";
import { interpret, type HostArray } from "../../src/ir/interpret.ts";
import { randomGraph, randomInputs } from "../ir/random_graph.ts";
import { numel, tensorType } from "../../src/ir/types.ts";
import { floatTolerance, fromTyped, mismatch, opCases, toTyped, type Tolerance } from "./cases.ts";

let client: Client;
beforeAll(async () => {
  client = await getClient();
});

/** Compiles `g`'s StableHLO, runs it on `args` on the first device, and reads every output back. */
async function execute(g: Graph, args: readonly HostArray[], text = emitStableHLO(g)): Promise<HostArray[]> {
  const exe = await client.compile(text);
  const bufs = args.map((a) => client.bufferFromHost(toTyped(a) as never, a.type.dtype, a.type.shape));
  const outs = await exe.run(bufs);
  return Promise.all(
    outs.map(async (b, i) =>
      fromTyped(g.outputs[i]!.type.dtype, g.outputs[i]!.type.shape, (await b.toHost()) as ArrayLike<number>),
    ),
  );
}

/** Every output that differs from the interpreter beyond tolerance, as readable lines. */
function compare(
  g: Graph,
  got: HostArray[],
  want: HostArray[],
  tol: (i: number) => Tolerance,
  label = (i: number) => `output ${i}`,
): string[] {
  const bad: string[] = [];
  g.outputs.forEach((_, i) => {
    const m = mismatch(got[i]!, want[i]!, tol(i));
    if (m) bad.push(`${label(i)}: ${m}`);
  });
  return bad;
}

describe("every op on the PJRT CPU plugin matches the interpreter", () => {
  it.each(opCases().map((c) => [c.name, c] as const))("%s", async (_, c) => {
    const got = await execute(c.graph, c.args);
    const want = interpret(c.graph, c.args);
    const ops = c.graph.ops.map((o) => o.name);
    expect(
      compare(
        c.graph,
        got,
        want,
        () => c.tol,
        (i) => `output ${i} (${outputOp(c.graph, i) ?? "input"})`,
      ),
      ops.join(","),
    ).toEqual([]);
  });
});

/** The name of the op that defines output i, for failure messages. */
function outputOp(g: Graph, i: number): string | undefined {
  const v = g.outputs[i];
  return g.ops.find((o) => o.outputs.includes(v!))?.name;
}

/** Several graphs as one: inputs, ops and outputs side by side (values are distinct objects), so one compile. */
function merge(gs: readonly Graph[]): Graph {
  return { inputs: gs.flatMap((g) => g.inputs), ops: gs.flatMap((g) => g.ops), outputs: gs.flatMap((g) => g.outputs) };
}

describe("random graphs on the PJRT CPU plugin match the interpreter", () => {
  const PER_MODULE = 6;
  const MODULES = 6;
  it.each(Array.from({ length: MODULES }, (_, m) => [m * PER_MODULE, (m + 1) * PER_MODULE - 1]))(
    "seeds %i..%i",
    async (from, to) => {
      const seeds = Array.from({ length: to - from + 1 }, (_, k) => from + k);
      const graphs = seeds.map((s) => randomGraph(s));
      const args = seeds.flatMap((s, k) => randomInputs(graphs[k]!, s + 1000));
      const g = merge(graphs);
      const got = await execute(g, args);
      const want = interpret(g, args);
      const owner = graphs.flatMap((gr, k) => gr.outputs.map(() => seeds[k]!));
      const tol = (i: number) => {
        const d = g.outputs[i]!.type.dtype;
        return d === "f32" ? { rtol: 1e-5, atol: 1e-5 } : floatTolerance("bf16"); // f16 has more mantissa: bf16's bound covers it
      };
      expect(compare(g, got, want, tol, (i) => `seed ${owner[i]} output ${i}`)).toEqual([]);
    },
  );
});

describe("module features XLA must accept", () => {
  it("donation: tf.aliasing_output makes the input a donor, and the results stay right", async () => {
    const b = new GraphBuilder();
    const w = b.input(tensorType("f32", [4]));
    const gr = b.input(tensorType("f32", [4]));
    const lr = b.add1("constant", [], { dtype: "f32", shape: [4], value: [0.5] });
    const g = b.build([b.add1("sub", [w, b.add1("mul", [gr, lr], {})], {})]);
    const exe = await client.compile(emitStableHLO(g, { donate: [0] }));
    expect(exe.donorParameters).toEqual([0]);
    const wb = client.bufferFromHost(Float32Array.from([1, 2, 3, 4]), "f32", [4]);
    const gb = client.bufferFromHost(Float32Array.from([2, 2, 2, 2]), "f32", [4]);
    const [out] = await exe.run([wb, gb]);
    expect(Array.from((await out!.toHost()) as Float32Array)).toEqual([0, 1, 2, 3]);
    expect(wb.donated).toBe(true);
  });

  it("jax.buffer_donor is accepted", async () => {
    const b = new GraphBuilder();
    const x = b.input(tensorType("bf16", [2, 2]));
    const g = b.build([b.add1("neg", [x], {})]);
    const exe = await client.compile(emitStableHLO(g, { donors: [true] }));
    expect(exe.donorParameters).toEqual([0]);
  });

  it("locations with quotes and backslashes parse", async () => {
    const b = new GraphBuilder();
    const x = b.input(tensorType("f32", [3]));
    const y = b.add1("exp", [x], {}, { file: 'C:\\models\\"odd".ts', line: 7, col: 2 });
    const g = b.build([y]);
    const args = [{ type: x.type, data: Float64Array.from([0, 1, -1]) }];
    const got = await execute(g, args);
    expect(mismatch(got[0]!, interpret(g, args)[0]!, { rtol: 1e-6, atol: 0 })).toBeUndefined();
  });

  it("a bigger graph: a few hundred ops of random graphs in one module", async () => {
    const graphs = [100, 101, 102].map((s) => randomGraph(s, { steps: 40 }));
    const g = merge(graphs);
    expect(g.ops.length).toBeGreaterThan(100);
    const args = graphs.flatMap((gr, k) => randomInputs(gr, 7 + k));
    const got = await execute(g, args);
    const want = interpret(g, args);
    const tol = (i: number) =>
      g.outputs[i]!.type.dtype === "f32" ? { rtol: 1e-4, atol: 1e-4 } : { rtol: 3e-2, atol: 3e-2 };
    expect(compare(g, got, want, tol)).toEqual([]);
    expect(numel(got[0]!.type.shape)).toBe(got[0]!.data.length);
  });
});
