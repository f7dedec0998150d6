// The batching rules of every op against a loop: the batched graph equals the per-example results stacked.
import { describe, expect, it } from "vitest";
import { GraphBuilder, type Graph, type Value } from "../../src/ir/graph.ts";
import { describeElementwise, ELEMENTWISE_OPS, type ElementwiseOp } from "../../src/ir/elementwise.ts";
import { hostArray, interpret, type HostArray } from "../../src/ir/interpret.ts";
import type { OpName } from "../../src/ir/ops.ts";
import { numel, tensorType, type DType, type TensorType } from "../../src/ir/types.ts";
import { verify } from "../../src/ir/verify.ts";
import { batchGraph } from "../../src/passes/batching.ts";
import { randomGraph, randomInputs, rng } from "../ir/random_graph.ts";

/** An input of a case: its type and the range its values are drawn from (ints: integers in [lo, hi]). */
interface In {
  readonly t: TensorType;
  readonly lo?: number;
  readonly hi?: number;
}
interface Case {
  readonly ins: readonly In[];
  readonly build: (b: GraphBuilder, xs: Value[]) => Value[];
}

const f32 = (...shape: number[]): In => ({ t: tensorType("f32", shape) });
const pos = (...shape: number[]): In => ({ t: tensorType("f32", shape), lo: 0.5, hi: 2 });
const ints = (lo: number, hi: number, ...shape: number[]): In => ({ t: tensorType("s32", shape), lo, hi });
const bf16 = (...shape: number[]): In => ({ t: tensorType("bf16", shape), lo: -2, hi: 2 });
const bools = (...shape: number[]): In => ({ t: tensorType("bool", shape), lo: 0, hi: 1 });

function values(r: () => number, x: In): HostArray {
  const n = numel(x.t.shape);
  const lo = x.lo ?? -2,
    hi = x.hi ?? 2;
  const v = Array.from({ length: n }, () =>
    x.t.dtype === "f32" ? lo + r() * (hi - lo) : lo + Math.floor(r() * (hi - lo + 1)),
  );
  return hostArray(x.t.dtype, x.t.shape, v);
}

/** A one-op (or few-op) graph for a case. */
function graphOf(c: Case): Graph {
  const b = new GraphBuilder();
  const xs = c.ins.map((x) => b.input(x.t));
  return b.build(c.build(b, xs));
}

function elementwiseCase(n: ElementwiseOp): Case {
  const d = describeElementwise(n);
  const input: In = d.dtypes === "int" ? ints(0, 5, 2, 3) : d.dtypes === "int-or-bool" ? ints(-9, 9, 2, 3) : pos(2, 3);
  return {
    ins: d.arity === 1 ? [input] : [input, input],
    build: (b, xs) => b.add(n, xs, {}),
  };
}

/** Sub-graphs for the ops with bodies, built by hand. */
function sub(types: readonly TensorType[], f: (b: GraphBuilder, xs: Value[]) => Value[]): Graph {
  const b = new GraphBuilder();
  const xs = types.map((t) => b.input(t));
  return b.build(f(b, xs));
}
const F3 = tensorType("f32", [3]);
const S = tensorType("s32", []);

/** One or more cases per op: the table is typed over OpName, so a new op fails to compile until it has one. */
const CASES: { readonly [N in OpName]: readonly Case[] } = {
  ...(Object.fromEntries(ELEMENTWISE_OPS.map((n) => [n, [elementwiseCase(n)]])) as unknown as {
    [N in ElementwiseOp]: readonly Case[];
  }),
  compare: [{ ins: [f32(4), f32(4)], build: (b, xs) => b.add("compare", xs, { dir: "lt" }) }],
  select: [{ ins: [bools(4), f32(4), f32(4)], build: (b, xs) => b.add("select", xs, {}) }],
  convert: [{ ins: [f32(4)], build: (b, xs) => b.add("convert", xs, { dtype: "s32" }) }],
  bitcast_convert: [{ ins: [f32(4)], build: (b, xs) => b.add("bitcast_convert", xs, { dtype: "s32" }) }],
  constant: [
    {
      ins: [f32(2)],
      build: (b, [x]) => [b.add1("add", [x!, b.add1("constant", [], { dtype: "f32", shape: [2], value: [3, 4] })], {})],
    },
  ],
  iota: [
    {
      ins: [ints(0, 9, 2, 3)],
      build: (b, [x]) => [b.add1("mul", [x!, b.add1("iota", [], { dtype: "s32", shape: [2, 3], dim: 1 })], {})],
    },
  ],
  broadcast_in_dim: [{ ins: [f32(3)], build: (b, xs) => b.add("broadcast_in_dim", xs, { shape: [2, 3], dims: [1] }) }],
  reshape: [{ ins: [f32(2, 3)], build: (b, xs) => b.add("reshape", xs, { shape: [3, 2] }) }],
  transpose: [{ ins: [f32(2, 3, 4)], build: (b, xs) => b.add("transpose", xs, { perm: [2, 0, 1] }) }],
  slice: [
    {
      ins: [f32(4, 5)],
      build: (b, xs) => b.add("slice", xs, { start: [1, 0], limit: [3, 5], stride: [1, 2] }),
    },
  ],
  concatenate: [{ ins: [f32(2, 3), f32(1, 3)], build: (b, xs) => b.add("concatenate", xs, { axis: 0 }) }],
  pad: [
    {
      ins: [f32(2, 3), f32()],
      build: (b, xs) => b.add("pad", xs, { low: [1, -1], high: [0, 1], interior: [1, 0] }),
    },
  ],
  reduce_sum: [{ ins: [f32(2, 3, 4)], build: (b, xs) => b.add("reduce_sum", xs, { axes: [0, 2] }) }],
  reduce_max: [{ ins: [f32(2, 3, 4)], build: (b, xs) => b.add("reduce_max", xs, { axes: [1] }) }],
  reduce_min: [{ ins: [f32(2, 3, 4)], build: (b, xs) => b.add("reduce_min", xs, { axes: [0, 1, 2] }) }],
  dot_general: [
    {
      ins: [f32(2, 3), f32(3, 4)],
      build: (b, xs) =>
        b.add("dot_general", xs, { lhsBatch: [], rhsBatch: [], lhsContract: [1], rhsContract: [0], outDtype: "f32" }),
    },
    {
      ins: [f32(2, 3, 4), f32(2, 5, 4)],
      build: (b, xs) =>
        b.add("dot_general", xs, {
          lhsBatch: [0],
          rhsBatch: [0],
          lhsContract: [2],
          rhsContract: [2],
          outDtype: "f32",
        }),
    },
    {
      ins: [f32(3, 2, 4), f32(4, 3)],
      build: (b, xs) =>
        b.add("dot_general", xs, { lhsBatch: [], rhsBatch: [], lhsContract: [0], rhsContract: [1], outDtype: "f32" }),
    },
  ],
  // Indices out of range (-1, 5) check that the batched form clamps per example, as the unbatched op does.
  gather: [{ ins: [f32(5, 3), ints(-1, 5, 4)], build: (b, xs) => b.add("gather", xs, {}) }],
  scatter_add: [{ ins: [f32(5, 3), ints(-1, 5, 4), f32(4, 3)], build: (b, xs) => b.add("scatter_add", xs, {}) }],
  take_along_axis: [
    { ins: [f32(3, 4), ints(0, 3, 3, 2)], build: (b, xs) => b.add("take_along_axis", xs, { axis: 1 }) },
  ],
  dynamic_slice: [
    { ins: [f32(5, 4), ints(-1, 5), ints(-1, 4)], build: (b, xs) => b.add("dynamic_slice", xs, { sizes: [2, 3] }) },
  ],
  dynamic_update_slice: [
    {
      ins: [f32(5, 4), f32(2, 3), ints(-1, 5), ints(-1, 4)],
      build: (b, xs) => b.add("dynamic_update_slice", xs, {}),
    },
  ],
  scan: [
    {
      // consts c, carry h, xs: h' = h * c + x, y = tanh(h').
      ins: [f32(3), f32(3), f32(4, 3)],
      build: (b, xs) => {
        const body = sub([F3, F3, F3], (g, [c, h, x]) => {
          const h2 = g.add1("add", [g.add1("mul", [h!, c!], {}), x!], {});
          return [h2, g.add1("tanh", [h2], {})];
        });
        return b.add("scan", xs, { body, length: 4, numConsts: 1, numCarry: 1, reverse: false });
      },
    },
    {
      // A carry that only becomes batched through a batched x (the fixed point), scanned in reverse.
      ins: [f32(3), f32(4, 3)],
      build: (b, xs) => {
        const body = sub([F3, F3], (g, [h, x]) => [g.add1("max", [h!, x!], {}), g.add1("neg", [h!], {})]);
        return b.add("scan", xs, { body, length: 4, numConsts: 0, numCarry: 1, reverse: true });
      },
    },
  ],
  sort: [
    { ins: [f32(3, 4)], build: (b, xs) => b.add("sort", xs, { dimension: 1, descending: false, stable: true }) },
    // Ties (few distinct ints) and a second operand carried along: the stable order must survive batching.
    {
      ins: [ints(0, 2, 4, 3), f32(4, 3)],
      build: (b, xs) => b.add("sort", xs, { dimension: 0, descending: true, stable: true }),
    },
  ],
  optimization_barrier: [{ ins: [f32(3), ints(0, 3, 2)], build: (b, xs) => b.add("optimization_barrier", xs, {}) }],
  stop_gradient: [{ ins: [f32(3)], build: (b, xs) => b.add("stop_gradient", xs, {}) }],
  cond: [
    {
      ins: [bools(), f32(3), f32(3)],
      build: (b, [p, x, y]) => {
        const t = sub([F3, F3], (g, [u, v]) => [g.add1("mul", [u!, v!], {})]);
        const f = sub([F3, F3], (g, [u]) => [g.add1("exp", [u!], {})]);
        return b.add("cond", [p!, x!, y!], { branches: [f, t] });
      },
    },
    {
      // Three branches and an index out of range (-1, 3): the last branch runs, as stablehlo.case does.
      ins: [ints(-1, 3), f32(3)],
      build: (b, [i, x]) => {
        const br = [
          sub([F3], (g, [u]) => [g.add1("neg", [u!], {})]),
          sub([F3], (g, [u]) => [g.add1("exp", [u!], {})]),
          sub([F3], (g, [u]) => [g.add1("mul", [u!, u!], {})]),
        ];
        return b.add("cond", [i!, x!], { branches: br });
      },
    },
  ],
  while: [
    {
      // consts n; carries i, x: while (i < n) { i += 1; x *= 1.5 }. A batched n makes the predicate batched.
      ins: [ints(0, 4), ints(0, 1), f32(3)],
      build: (b, xs) => {
        const cond = sub([S, S, F3], (g, [n, i]) => [g.add1("compare", [i!, n!], { dir: "lt" })]);
        const body = sub([S, S, F3], (g, [, i, x]) => [
          g.add1("add", [i!, g.add1("constant", [], { dtype: "s32", shape: [], value: [1] })], {}),
          g.add1("mul", [x!, g.add1("constant", [], { dtype: "f32", shape: [3], value: [1.5] })], {}),
        ]);
        return b.add("while", xs, { cond, body, numConsts: 1 });
      },
    },
  ],
  custom_vjp: [
    {
      ins: [f32(3), f32(3)],
      build: (b, xs) => {
        const body = sub([F3, F3], (g, [c, x]) => [g.add1("mul", [x!, c!], {})]);
        const fwd = sub([F3, F3], (g, [c, x]) => [g.add1("mul", [x!, c!], {}), c!]);
        const bwd = sub([F3, F3, F3], (g, [, r, ct]) => [g.add1("mul", [ct!, r!], {})]);
        return b.add("custom_vjp", xs, { body, fwd, bwd, numConsts: 1 });
      },
    },
  ],
  checkpoint: [
    {
      // A body mixing both operands, a named value and a result that is one operand passed through.
      ins: [f32(3), f32(3)],
      build: (b, xs) => {
        const body = sub([F3, F3], (g, [x, y]) => [
          g.add1("tanh", [g.add1("checkpoint_name", [g.add1("mul", [x!, y!], {})], { name: "h" })], {}),
          y!,
        ]);
        return b.add("checkpoint", xs, { body, policy: "saveOnlyTheseNames", names: ["h"] });
      },
    },
  ],
  checkpoint_name: [{ ins: [f32(3)], build: (b, xs) => b.add("checkpoint_name", xs, { name: "h" }) }],
  // q [B=2, T=3, N=4, H=2] over 2 KV heads (GQA 2); the batched op folds the vmapped axis into B.
  cudnn_fmha: [
    {
      ins: [bf16(2, 3, 4, 2), bf16(2, 3, 2, 2), bf16(2, 3, 2, 2)],
      build: (b, xs) => b.add("cudnn_fmha", xs, { scale: [0.5], causal: true, stats: true }),
    },
  ],
  cudnn_fmha_bwd: [
    {
      ins: [bf16(2, 3, 4, 2), bf16(2, 3, 2, 2), bf16(2, 3, 2, 2), f32(2, 4, 3), bf16(2, 3, 4, 2), bf16(2, 3, 4, 2)],
      build: (b, xs) => b.add("cudnn_fmha_bwd", xs, { scale: [0.5], causal: false }),
    },
  ],
};

const B = 3;

/** Stacks B host arrays along a new axis 0. */
function stack(xs: readonly HostArray[]): HostArray {
  const t = xs[0]!.type;
  const data: number[] = [];
  for (const x of xs) data.push(...Array.from(x.data));
  return hostArray(t.dtype as DType, [xs.length, ...t.shape], data);
}

/** The batched graph (inputs batched per `flags`) against a loop over examples, output by output. */
function checkAgainstLoop(g: Graph, flags: readonly boolean[], perExample: (b: number) => HostArray[]): void {
  const { graph, outB } = batchGraph(
    g,
    flags,
    B,
    g.outputs.map(() => true),
  );
  verify(graph);
  expect(outB.every((x) => x)).toBe(true);
  const examples = Array.from({ length: B }, (_, b) => perExample(b));
  // Unbatched inputs are the same in every example: take example 0's.
  const args = g.inputs.map((_, i) => (flags[i] ? stack(examples.map((ex) => ex[i]!)) : examples[0]![i]!));
  const shared = examples.map((ex) => ex.map((x, i) => (flags[i] ? x : examples[0]![i]!)));
  const want = shared.map((ex) => interpret(g, ex));
  const got = interpret(graph, args);
  got.forEach((out, j) => {
    const expected = stack(want.map((w) => w[j]!));
    expect(out.type.shape).toEqual(expected.type.shape);
    expect(out.type.dtype).toBe(expected.type.dtype);
    const a = Array.from(out.data),
      e = Array.from(expected.data);
    a.forEach((v, k) => {
      const tol = 1e-5 * Math.max(1, Math.abs(e[k]!));
      if (!(Math.abs(v - e[k]!) <= tol || (Number.isNaN(v) && Number.isNaN(e[k]!))))
        throw new Error(`output ${j} element ${k}: batched ${v}, loop ${e[k]} (flags ${flags.join(",")})`);
    });
  });
}

/** Every non-empty subset of the inputs batched. */
function subsets(n: number): boolean[][] {
  const out: boolean[][] = [];
  for (let m = 1; m < 1 << n; m++) out.push(Array.from({ length: n }, (_, i) => ((m >> i) & 1) === 1));
  return out;
}

describe("batching rules (vmap) against a loop over examples", () => {
  for (const [name, cases] of Object.entries(CASES) as [OpName, readonly Case[]][]) {
    it(`${name}: every subset of its operands batched`, () => {
      cases.forEach((c, ci) => {
        const g = graphOf(c);
        for (const flags of subsets(c.ins.length)) {
          const r = rng(1000 + ci);
          checkAgainstLoop(g, flags, () => c.ins.map((x) => values(r, x)));
        }
      });
    });
  }

  it("random graphs (every recipe of test/ir/random_graph.ts) with random inputs batched", () => {
    for (let seed = 1; seed <= 60; seed++) {
      const g = randomGraph(seed, { dtypes: ["f32"] });
      const r = rng(seed);
      const flags = g.inputs.map(() => r() < 0.6);
      if (!flags.some((f) => f)) flags[0] = true;
      checkAgainstLoop(g, flags, (b) => randomInputs(g, seed * 100 + b));
    }
  });
});
