// A Tensor used as a boolean, number or string throws at the user's line instead of branching on nothing.
import { describe, expect, it } from "vitest";
import { spec, trace, type tx, TraceError } from "./api.ts";
import { caught } from "./helpers.ts";

const HERE = "test/frontend/coercion.test.ts";

function lineOf(marker: string): number {
  const lines = readFileSync(new URL(import.meta.url), "utf8").split("\n");
  return lines.findIndex((l) => l.includes(marker) && !l.includes("lineOf(")) + 1;
}

// A user's Python-style branch on a traced value: the comparison coerces the tensor to a number.
function relu(x: tx.Tensor): tx.Tensor {
  if ((x.sum() as unknown as number) > 0) return x; // LINE_BRANCH
  return x.mul(0);
}

describe("a traced Tensor is not a primitive", () => {
  it("`if (x.sum() > 0)` throws a TraceError at that line, pointing to where, cond and whileLoop", () => {
    const e = caught(() => trace(relu, [spec("f32", [3])]));
    expect(e).toBeInstanceOf(TraceError);
    expect(e.message).toMatch(
      /^Tensor: a f32\[\] tensor was used as a number, .*where\(c, a, b\).*cond\(pred, trueFn, falseFn, \.\.\.operands\).*whileLoop\(condFn, bodyFn, init\)/,
    );
    expect(e.message).toContain(` at ${HERE}:${lineOf("LINE_BRANCH")}:`);
  });

  it("a template literal, unary plus, string concatenation and == all throw", () => {
    const f32 = [spec("f32", [2])];
    expect(caught(() => trace((x: tx.Tensor) => `${x}`, f32)).message).toMatch(/used as a string/);
    expect(caught(() => trace((x: tx.Tensor) => +x, f32)).message).toMatch(/used as a number/);
    expect(caught(() => trace((x: tx.Tensor) => `a${String(x)}`, f32)).message).toMatch(/used as a string/);
    // biome-ignore lint/suspicious/noDoubleEquals: the loose comparison is the mistake under test
    expect(caught(() => trace((x: tx.Tensor) => (x as unknown as number) == 1, f32)).message).toMatch(
      /used as a primitive/,
    );
    expect(caught(() => trace((x: tx.Tensor) => x.valueOf(), f32)).message).toMatch(/used as a number/);
  });

  it("toString() stays explicit, and ordinary tracing (and error messages naming tensors) still work", () => {
    const { graph } = trace(
      (x: tx.Tensor) => {
        expect(x.toString()).toBe("Tensor<f32[2]>");
        return x.exp().sum();
      },
      [spec("f32", [2])],
    );
    expect(graph.outputs.length).toBe(1);
    // Messages that name a wrong operand do not coerce it.
    const e = caught(() => trace((x: tx.Tensor) => x.add(x.sum(1)), [spec("f32", [2, 3])]));
    expect(e.message).toMatch(/^add: cannot broadcast shapes \[2,3\] and \[2\]/);
  });
});

import { readFileSync } from "node:fs";
