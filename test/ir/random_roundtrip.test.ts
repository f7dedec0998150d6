// Property tests over 200 seeded random graphs: they verify, their text round-trips, and parsing keeps their meaning.
import { describe, expect, it } from "vitest";
import type { Graph } from "../../src/ir/graph.ts";
import { interpret, type HostArray } from "../../src/ir/interpret.ts";
import { OP_NAMES, type OpName } from "../../src/ir/ops.ts";
import { parse } from "../../src/ir/parse.ts";
import { print } from "../../src/ir/print.ts";
import { randomGraph, randomInputs } from "./random_graph.ts";
import { formatType } from "../../src/ir/types.ts";
import { verify } from "../../src/ir/verify.ts";
import { GPU_ONLY_OPS } from "../../src/ir/cudnn_fmha.ts";

const SEEDS = Array.from({ length: 200 }, (_, i) => i);

/** Bitwise equality of results, NaN equal to NaN and -0 distinct from 0. */
function expectSameResults(a: HostArray[], b: HostArray[]): void {
  expect(b.length).toBe(a.length);
  a.forEach((x, i) => {
    const y = b[i]!;
    expect(formatType(y.type)).toBe(formatType(x.type));
    const bad = Array.from(x.data).findIndex((v, j) => !Object.is(v, y.data[j]));
    expect(bad, `output ${i} differs at element ${bad}`).toBe(-1);
  });
}

function opsIn(g: Graph, into: Set<OpName>): Set<OpName> {
  for (const op of g.ops) {
    into.add(op.name);
    if (op.name === "scan" || op.name === "checkpoint") opsIn(op.params.body, into);
  }
  return into;
}

/** Op names, params, locations and names of `g`, nested graphs included, as plain data for deep comparison. */
function structure(g: Graph): unknown {
  return {
    inputNames: g.inputNames,
    outputNames: g.outputNames,
    ops: g.ops.map((op) => ({
      name: op.name,
      loc: op.loc,
      params: Object.fromEntries(
        Object.entries(op.params).map(([k, v]) => [k, k === "body" ? structure(v as Graph) : v]),
      ),
    })),
  };
}

describe("random graphs", () => {
  const graphs = SEEDS.map((s) => randomGraph(s));

  it("are deterministic per seed and differ across seeds", () => {
    expect(print(randomGraph(7))).toBe(print(graphs[7]!));
    expect(new Set(graphs.map((g) => print(g))).size).toBe(graphs.length);
  });

  it("cover every op", () => {
    const seen = new Set<OpName>();
    graphs.forEach((g) => {
      opsIn(g, seen);
    });
    // cuDNN attention runs only on CUDA, and random graphs also run on PJRT CPU: test/models/cudnn_attention.test.ts
    expect(OP_NAMES.filter((n) => !seen.has(n) && !GPU_ONLY_OPS.has(n))).toEqual([]);
  });

  it("pass the verifier", () => {
    for (const g of graphs) verify(g);
  });

  it("round-trip through text: print(parse(print(g))) === print(g), with and without locations", () => {
    for (const g of graphs) {
      const text = print(g);
      const back = parse(text);
      expect(print(back)).toBe(text);
      expect(structure(back)).toEqual(structure(g));
      const bare = print(g, { locs: false });
      expect(print(parse(bare))).toBe(bare);
    }
  });

  it("keep their meaning through text: interpret(parse(print(g))) equals interpret(g)", () => {
    SEEDS.forEach((s) => {
      const g = graphs[s]!;
      const args = randomInputs(g, s);
      const want = interpret(g, args);
      expectSameResults(want, interpret(parse(print(g)), args));
      for (const out of want)
        expect(
          out.data.every((v) => Number.isFinite(v)),
          `seed ${s} gives a non-finite output`,
        ).toBe(true);
    });
  });
});
