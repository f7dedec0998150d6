// IR text form: golden printer output for small graphs, parse errors naming the line, and round trips of the goldens.
import { describe, expect, it } from "vitest";
import { GraphBuilder, type Graph } from "../../src/ir/graph.ts";
import { formatNumber, nameValues, print } from "../../src/ir/print.ts";
import { parse, ParseError } from "../../src/ir/parse.ts";
import { tensorType } from "../../src/ir/types.ts";

const f32 = (...shape: number[]) => tensorType("f32", shape);

function mlp(): Graph {
  const b = new GraphBuilder();
  const x = b.input(f32(2, 3), "x");
  const w = b.input(f32(3, 4), "params.w");
  const bias = b.input(f32(4));
  const h = b.add1(
    "dot_general",
    [x, w],
    { lhsBatch: [], rhsBatch: [], lhsContract: [1], rhsContract: [0], outDtype: "f32" },
    { file: "model.ts", line: 3, col: 5 },
  );
  const bb = b.add1("broadcast_in_dim", [bias], { shape: [2, 4], dims: [1] });
  const y = b.add1("add", [h, bb], {}, { file: "model.ts", line: 4, col: 9 });
  const zero = b.add1("constant", [], { dtype: "f32", shape: [], value: [0] });
  const z = b.add1("broadcast_in_dim", [zero], { shape: [2, 4], dims: [] });
  const r = b.add1("max", [y, z], {});
  const s = b.add1("reduce_sum", [r], { axes: [0, 1] });
  return b.build([r, s], ["y", "loss"]);
}

function scanGraph(): Graph {
  const body = new GraphBuilder();
  const k = body.input(tensorType("bf16", []));
  const c = body.input(tensorType("bf16", []));
  const x = body.input(tensorType("bf16", [2]));
  const m = body.add1("reduce_max", [x], { axes: [0] });
  const c2 = body.add1("add", [c, m], {});
  const y = body.add1("mul", [c2, k], {});
  const bodyG = body.build([c2, y]);
  const b = new GraphBuilder();
  const k0 = b.input(tensorType("bf16", []));
  const xs = b.input(tensorType("bf16", [5, 2]));
  const init = b.add1("constant", [], { dtype: "bf16", shape: [], value: [-Infinity] });
  const outs = b.add(
    "scan",
    [k0, init, xs],
    { body: bodyG, length: 5, numConsts: 1, numCarry: 1, reverse: true },
    { file: 'a "b".ts', line: 1, col: 2 },
  );
  return b.build(outs);
}

describe("print", () => {
  it("prints an MLP with names, locations, sorted params", () => {
    expect(print(mlp())).toBe(
      `func @main(%0: f32[2,3] "x", %1: f32[3,4] "params.w", %2: f32[4]) -> (f32[2,4] "y", f32[] "loss") {
  %3: f32[2,4] = dot_general %0, %1 {lhsBatch=[], lhsContract=[1], outDtype=f32, rhsBatch=[], rhsContract=[0]} loc("model.ts":3:5)
  %4: f32[2,4] = broadcast_in_dim %2 {dims=[1], shape=[2,4]}
  %5: f32[2,4] = add %3, %4 loc("model.ts":4:9)
  %6: f32[] = constant {dtype=f32, shape=[], value=[0]}
  %7: f32[2,4] = broadcast_in_dim %6 {dims=[], shape=[2,4]}
  %8: f32[2,4] = max %5, %7
  %9: f32[] = reduce_sum %8 {axes=[0,1]}
  return %8, %9
}
`,
    );
  });
  it("omits locations with { locs: false }", () => {
    const text = print(mlp(), { locs: false });
    expect(text).not.toContain("loc(");
    expect(text.split("\n")[1]).toBe(
      "  %3: f32[2,4] = dot_general %0, %1 {lhsBatch=[], lhsContract=[1], outDtype=f32, rhsBatch=[], rhsContract=[0]}",
    );
  });
  it("prints a scan body indented, numbering on from the outer graph", () => {
    expect(print(scanGraph())).toBe(
      `func @main(%0: bf16[], %1: bf16[5,2]) -> (bf16[], bf16[5]) {
  %2: bf16[] = constant {dtype=bf16, shape=[], value=[-inf]}
  %3: bf16[], %4: bf16[5] = scan %0, %2, %1 {length=5, numCarry=1, numConsts=1, reverse=true} loc("a \\"b\\".ts":1:2) body (%5: bf16[], %6: bf16[], %7: bf16[2]) -> (bf16[], bf16[]) {
    %8: bf16[] = reduce_max %7 {axes=[0]}
    %9: bf16[] = add %6, %8
    %10: bf16[] = mul %9, %5
    return %9, %10
  }
  return %3, %4
}
`,
    );
  });
  it("prints numbers as shortest round-trip text", () => {
    expect([0.1, -0, 1e21, 1.5e-7, -Infinity, NaN, 2 ** 53 + 2].map(formatNumber)).toEqual([
      "0.1",
      "-0",
      "1e+21",
      "1.5e-7",
      "-inf",
      "nan",
      "9007199254740994",
    ]);
    const b = new GraphBuilder();
    const c = b.add1("constant", [], {
      dtype: "f32",
      shape: [4],
      value: [Math.fround(0.1), 1e-45, 3.4028234663852886e38, -2.5],
    });
    const text = print(b.build([c]));
    expect(text).toContain("value=[0.10000000149011612,1e-45,3.4028234663852886e+38,-2.5]");
    const back = parse(text).ops[0]!;
    expect(back.name === "constant" && back.params.value).toEqual([
      Math.fround(0.1),
      1e-45,
      3.4028234663852886e38,
      -2.5,
    ]);
  });
  it("nameValues matches the printed names", () => {
    const g = mlp();
    const names = nameValues(g);
    expect(names.get(g.inputs[2]!)).toBe("%2");
    expect(names.get(g.outputs[1]!)).toBe("%9");
  });
});

describe("parse", () => {
  it("round-trips the goldens, locations and names included", () => {
    for (const g of [mlp(), scanGraph()]) {
      const text = print(g);
      const back = parse(text);
      expect(print(back)).toBe(text);
      expect(back.inputNames).toEqual(g.inputNames);
      expect(back.outputNames).toEqual(g.outputNames);
    }
    expect(parse(print(mlp())).ops[0]!.loc).toEqual({ file: "model.ts", line: 3, col: 5 });
  });
  it("accepts free formatting", () => {
    const g = parse(`func @f(%0: s32[2],%1: s32[2])->(s32[2]){%2:s32[2]=add %0,%1
      return %2}`);
    expect(g.ops.map((o) => o.name)).toEqual(["add"]);
  });

  const head = `func @main(%0: f32[2,3], %1: f32[3,2]) -> (f32[2,3]) {\n`;
  const cases: [string, string, RegExp | string][] = [
    [
      "a missing '='",
      `${head}  %2: f32[2,3] add %0, %0\n  return %2\n}\n`,
      "line 2: expected '=' after the results, found 'add'",
    ],
    ["an unknown op", `${head}  %2: f32[2,3] = addd %0, %0\n  return %2\n}\n`, "line 2: unknown op 'addd'"],
    ["an unknown dtype", `${head}  %2: f31[2,3] = add %0, %0\n  return %2\n}\n`, "line 2: unknown dtype 'f31'"],
    [
      "a written type that differs from the inferred one",
      `${head}  %2: f32[3,2] = add %0, %0\n  return %2\n}\n`,
      "line 2: add result %2 is written f32[3,2] but inferred f32[2,3]",
    ],
    [
      "a builder type error",
      `${head}  %2: f32[2,3] = add %0, %1\n  return %2\n}\n`,
      "line 2: add: operands must have the same type, got f32[2,3] and f32[3,2] (operands f32[2,3], f32[3,2])",
    ],
    [
      "an undefined value",
      `${head}  %2: f32[2,3] = neg %7\n  return %2\n}\n`,
      "line 2: value %7 is used before it is defined",
    ],
    [
      "a value defined twice",
      `${head}  %2: f32[2,3] = neg %0\n  %2: f32[2,3] = neg %0\n  return %2\n}\n`,
      "line 3: value %2 is defined twice",
    ],
    [
      "a missing param",
      `${head}  %2: f32[3,2] = transpose %0\n  return %0\n}\n`,
      "line 2: transpose: missing param 'perm'",
    ],
    [
      "a param of the wrong kind",
      `${head}  %2: f32[3,2] = transpose %0 {perm=true}\n  return %0\n}\n`,
      "line 2: transpose: param 'perm' must be an array of integers, got true",
    ],
    ["an unknown param", `${head}  %2: f32[2,3] = neg %0 {x=1}\n  return %2\n}\n`, "line 2: neg: unknown param 'x'"],
    [
      "a wrong result count",
      `${head}  %2: f32[2,3] = neg %0\n  return %2, %2\n}\n`,
      "line 3: return gives 2 values, the signature declares 1",
    ],
    ["a return type mismatch", `${head}  return %1\n}\n`, "line 2: result 0 is declared f32[2,3] but returns f32[3,2]"],
    ["a bad character", `${head}  %2: f32[2,3] = neg %0 $\n  return %2\n}\n`, "line 2: unexpected character '$'"],
    [
      "a missing return",
      `${head}  %2: f32[2,3] = neg %0\n}\n`,
      "line 3: expected 'return' before the end of the graph",
    ],
    ["trailing text", `${head}  return %0\n}\nfunc\n`, "line 4: unexpected 'func' after the end of the function"],
    ["an unterminated string", `func @main(%0: f32[] "x) -> () {\n  return\n}\n`, "line 1: unterminated string"],
    [
      "a scan body that captures an outer value",
      `func @main(%0: f32[], %1: f32[3]) -> (f32[]) {
  %2: f32[] = scan %0, %1 {length=3, numCarry=1, numConsts=0, reverse=false} body (%3: f32[], %4: f32[]) -> (f32[]) {
    %5: f32[] = add %3, %0
    return %5
  }
  return %2
}
`,
      "line 3: %0 is defined outside this nested graph; nested graphs are closed",
    ],
  ];
  for (const [what, text, msg] of cases) {
    it(`reports ${what}`, () => {
      let err: unknown;
      try {
        parse(text);
      } catch (e) {
        err = e;
      }
      expect(err).toBeInstanceOf(ParseError);
      expect((err as Error).message).toBe(msg);
    });
  }
});
