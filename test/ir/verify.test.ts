// Verifier: one hand-built bad graph per kind of problem (bypassing the builder), plus builder OpTypeError messages.
import { describe, expect, it } from "vitest";
import { GraphBuilder, makeOp, Value, type AnyOp, type Graph } from "../../src/ir/graph.ts";
import { OpTypeError } from "../../src/ir/errors.ts";
import type { OpParams } from "../../src/ir/ops.ts";
import { tensorType } from "../../src/ir/types.ts";
import { verify, verifyAfter, VerifyError } from "../../src/ir/verify.ts";

const f32 = (...shape: number[]) => tensorType("f32", shape);
const val = (...shape: number[]) => new Value(f32(...shape));
const graph = (inputs: Value[], ops: AnyOp[], outputs: Value[], extra: Partial<Graph> = {}): Graph => ({
  inputs,
  ops,
  outputs,
  ...extra,
});
const matmul: OpParams["dot_general"] = {
  lhsBatch: [],
  rhsBatch: [],
  lhsContract: [1],
  rhsContract: [0],
  outDtype: "f32",
};

function problems(g: Graph): string[] {
  try {
    verify(g);
  } catch (e) {
    expect(e).toBeInstanceOf(VerifyError);
    return [...(e as VerifyError).problems];
  }
  return [];
}

describe("verify accepts", () => {
  it("builder-made graphs, including a scan", () => {
    const body = new GraphBuilder();
    const c = body.input(f32(2));
    const x = body.input(f32(2));
    const bodyG = body.build([body.add1("add", [c, x], {})]);
    const b = new GraphBuilder();
    const init = b.input(f32(2));
    const xs = b.input(f32(3, 2));
    const [last] = b.add("scan", [init, xs], { body: bodyG, length: 3, numConsts: 0, numCarry: 1, reverse: false });
    const g = b.build([b.add1("neg", [last!], {})], ["out"]);
    expect(problems(g)).toEqual([]);
    expect(() => verifyAfter("dce", g)).not.toThrow();
  });
});

describe("verify rejects", () => {
  it("a value used before it is defined", () => {
    const x = val(2);
    const a = val(2);
    const b = val(2);
    const g = graph([x], [makeOp("neg", [a], {}, [b]), makeOp("neg", [x], {}, [a])], [b]);
    expect(problems(g)).toEqual(["op #0 'neg': operand 0 %1 is used before it is defined (by op #1)"]);
  });
  it("a value never defined", () => {
    const x = val(2);
    const ghost = val(2);
    const y = val(2);
    expect(problems(graph([x], [makeOp("add", [x, ghost], {}, [y])], [y]))).toEqual([
      "op #0 'add': operand 1 %1 is never defined",
    ]);
  });
  it("a value defined twice", () => {
    const x = val(2);
    const y = val(2);
    const g = graph([x], [makeOp("neg", [x], {}, [y]), makeOp("abs", [x], {}, [y])], [y]);
    expect(problems(g)).toEqual(["op #1 'abs': %1 is defined twice"]);
    expect(problems(graph([x, x], [], [x]))).toEqual(["input 1: %0 is defined twice"]);
  });
  it("a recorded result type that differs from the re-inferred one", () => {
    const a = val(4, 3);
    const w = val(3, 16);
    const y = val(4, 8);
    const g = graph([a, w], [makeOp("dot_general", [a, w], matmul, [y])], [y]);
    expect(problems(g)).toEqual(["op #0 'dot_general': result type f32[4,8] differs from inferred f32[4,16]"]);
  });
  it("operands that break the op's type rule", () => {
    const a = val(2);
    const b = val(3);
    const y = val(2);
    expect(problems(graph([a, b], [makeOp("add", [a, b], {}, [y])], [y]))).toEqual([
      "op #0 'add': operands must have the same type, got f32[2] and f32[3]",
    ]);
  });
  it("a wrong number of results", () => {
    const a = val(2);
    const y = val(2);
    const z = val(2);
    expect(problems(graph([a], [makeOp("neg", [a], {}, [y, z])], [y]))).toEqual([
      "op #0 'neg': has 2 results, its type rule gives 1",
    ]);
  });
  it("a graph output that is not defined", () => {
    const a = val(2);
    expect(problems(graph([a], [], [a, val(3)]))).toEqual(["return: output 1 %1 is never defined"]);
  });
  it("malformed params", () => {
    const a = val(2, 3);
    const y = val(3, 2);
    const bad = [
      makeOp("transpose", [a], {} as OpParams["transpose"], [y]),
      makeOp("transpose", [a], { perm: [1.5, 0] }, [y]),
      makeOp("convert", [a], { dtype: "f64" } as unknown as OpParams["convert"], [val(2, 3)]),
      makeOp("neg", [a], { extra: 1 } as OpParams["neg"], [val(2, 3)]),
    ];
    expect(problems(graph([a], bad, [a]))).toEqual([
      "op #0 'transpose': missing param 'perm'",
      "op #1 'transpose': param 'perm' must be an array of integers, got [1.5,0]",
      "op #1 'transpose': %1 is defined twice", // the test reuses y; each op's problems come before its definitions
      "op #2 'convert': param 'dtype' must be a dtype, got \"f64\"",
      "op #3 'neg': unknown param 'extra'",
    ]);
  });
  it("a scan body that captures an outer value", () => {
    const outerV = val(2);
    const c = val(2);
    const x = val(2);
    const s = val(2);
    const body = graph([c, x], [makeOp("add", [c, outerV], {}, [s])], [s]);
    const init = val(2);
    const xs = val(3, 2);
    const out = val(2);
    const g = graph(
      [outerV, init, xs],
      [makeOp("scan", [init, xs], { body, length: 3, numConsts: 0, numCarry: 1, reverse: false }, [out])],
      [out],
    );
    expect(problems(g)).toEqual([
      "op #0 'scan' body: op #0 'add': operand 1 %0 is defined outside this nested graph (nested graphs must be closed)",
    ]);
  });
  it("problems inside a nested body, prefixed with the scan", () => {
    const c = val(2);
    const x = val(2);
    const s = val(3);
    const body = graph([c, x], [makeOp("add", [c, x], {}, [s])], [c]);
    const init = val(2);
    const xs = val(3, 2);
    const out = val(2);
    const g = graph(
      [init, xs],
      [makeOp("scan", [init, xs], { body, length: 3, numConsts: 0, numCarry: 1, reverse: false }, [out])],
      [out],
    );
    expect(problems(g)).toEqual(["op #0 'scan' body: op #0 'add': result type f32[3] differs from inferred f32[2]"]);
  });
  it("name lists of the wrong length", () => {
    const a = val(2);
    expect(problems(graph([a], [], [a], { inputNames: ["a", "b"], outputNames: [] }))).toEqual([
      "graph has 1 inputs but 2 input names",
      "graph has 1 outputs but 0 output names",
    ]);
  });
  it("lists several problems in one error, prefixed by the pass with verifyAfter", () => {
    const a = val(2);
    const y = val(3);
    const g = graph([a], [makeOp("neg", [a], {}, [y])], [y, val(1)]);
    expect(() => verifyAfter("cse", g)).toThrow(
      "after pass 'cse': 2 problems:\n  op #0 'neg': result type f32[3] differs from inferred f32[2]\n  return: output 1 %2 is never defined",
    );
    expect(() => verifyAfter("cse", graph([a], [], [y]))).toThrow(
      /^after pass 'cse': return: output 0 %1 is never defined$/,
    );
  });
});

describe("builder OpTypeError messages", () => {
  const b = new GraphBuilder();
  const a = b.input(f32(4, 128));
  const w = b.input(f32(64, 32));
  const loc = { file: "models/llama.ts", line: 42, col: 17 };
  const catchErr = (f: () => unknown): OpTypeError => {
    try {
      f();
    } catch (e) {
      expect(e).toBeInstanceOf(OpTypeError);
      return e as OpTypeError;
    }
    throw new Error("expected an OpTypeError");
  };
  it("dot_general contracting mismatch names both dims and sizes and the location", () => {
    const e = catchErr(() => b.add("dot_general", [a, w], matmul, loc));
    expect(e.message).toBe(
      "dot_general: contracting dims must match: lhs dim 1 = 128, rhs dim 0 = 64 (operands f32[4,128], f32[64,32]) at models/llama.ts:42:17",
    );
    expect(e.op).toBe("dot_general");
  });
  it("reshape element count, broadcast_in_dim size, concatenate dims", () => {
    expect(catchErr(() => b.add("reshape", [a], { shape: [3, 100] })).message).toBe(
      "reshape: cannot reshape f32[4,128] (512 elements) to [3,100] (300 elements) (operands f32[4,128])",
    );
    expect(catchErr(() => b.add("broadcast_in_dim", [a], { shape: [4, 64], dims: [0, 1] })).message).toBe(
      "broadcast_in_dim: operand dim 1 (size 128) cannot broadcast to result dim 1 (size 64) of [4,64] (operands f32[4,128])",
    );
    expect(catchErr(() => b.add("concatenate", [a, w], { axis: 0 })).message).toBe(
      "concatenate: operands differ in dim 1 (32 vs 128), only axis 0 may differ (operands f32[4,128], f32[64,32])",
    );
  });
});
