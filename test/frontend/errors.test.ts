// Shape and dtype mistakes fail at trace time, naming the op, the operand types and the user's file:line:col.
import { describe, expect, it } from "vitest";
import { spec, trace, tx, TraceError } from "./api.ts";
import { OpTypeError } from "../../src/ir/errors.ts";
import { caught } from "./helpers.ts";

const HERE = "test/frontend/errors.test.ts";

/** The line of the caller of `lineHere()` (1-based), for asserting which line an error names. */
function lineHere(): number {
  const stack = new Error().stack!.split("\n")[2]!;
  return Number(/:(\d+):\d+\)?$/.exec(stack)![1]);
}

// A user helper two calls deep: the error must point inside it, at the op, not at Tessera's code.
function attention(q: tx.Tensor, k: tx.Tensor): tx.Tensor {
  const scores = tx.matmul(q, k); // LINE_ATTENTION
  return tx.softmax(scores);
}
function block(x: tx.Tensor, w: tx.Tensor): tx.Tensor {
  return attention(x, w);
}

describe("trace-time errors", () => {
  it("matmul of [2,3] and [4,5] names the op, both shapes and this line", () => {
    const line = lineHere() + 2;
    const e = caught(() =>
      trace((a: tx.Tensor, b: tx.Tensor) => tx.matmul(a, b), [spec("f32", [2, 3]), spec("f32", [4, 5])]),
    );
    expect(e).toBeInstanceOf(TraceError);
    expect(e.message).toMatch(
      /^matmul: contracting dims must match: lhs dim 1 = 3, rhs dim 0 = 4 \(operands f32\[2,3\], f32\[4,5\]\) at /,
    );
    expect(e.message).toContain(`${HERE}:${line}:`);
  });

  it("an op deep inside a user helper points at the helper's line", () => {
    const e = caught(() => trace(block, [spec("f32", [2, 8]), spec("f32", [4, 2])]));
    const m = /at (.+):(\d+):(\d+)$/.exec(e.message);
    expect(m?.[1]).toBe(HERE);
    // The line of `tx.matmul(q, k)` in attention(), found by searching this file's text.
    expect(Number(m![2])).toBe(lineOf("LINE_ATTENTION"));
  });

  it("broadcasting mistakes are frontend errors with the same form", () => {
    const line = lineHere() + 1;
    const e = caught(() => trace((a: tx.Tensor, b: tx.Tensor) => a.add(b), [spec("f32", [2, 3]), spec("f32", [4])]));
    expect(e.message).toBe(
      `add: cannot broadcast shapes [2,3] and [4] (dim 1 from the right-aligned end: 3 vs 4) (operands f32[2,3], f32[4]) at ${HERE}:${line}:${colOf(line, "a.add(b)") + 2}`,
    );
  });

  it("mixing tensor dtypes is an error; a JS number adopts the tensor's dtype", () => {
    const e = caught(() => trace((a: tx.Tensor, b: tx.Tensor) => a.mul(b), [spec("f32", [2]), spec("bf16", [2])]));
    expect(e.message).toMatch(
      /^mul: operand dtypes differ \(f32 vs bf16\).*astype \(operands f32\[2\], bf16\[2\]\) at test\/frontend\/errors\.test\.ts:\d+:\d+$/,
    );
    const e2 = caught(() => trace((a: tx.Tensor) => a.add(0.5), [spec("s32", [2])]));
    expect(e2.message).toMatch(/^add: the number 0.5 is not an integer, so it cannot adopt the s32 tensor's dtype/);
  });

  it("IR rule violations carry the user's location too (OpTypeError from the builder)", () => {
    const line = lineHere() + 1;
    const e = caught(() => trace((a: tx.Tensor) => a.exp(), [spec("s32", [2])]));
    expect(e).toBeInstanceOf(OpTypeError);
    expect(e.message).toContain(`exp: needs a float operand, got s32 (operands s32[2]) at ${HERE}:${line}:`);
  });

  it("reshape, einsum and axis errors name their op", () => {
    const f32 = spec("f32", [2, 3]);
    expect(caught(() => trace((a: tx.Tensor) => a.reshape([4, -1]), [f32])).message).toMatch(
      /^reshape: cannot infer -1 in \[4,-1\] for 6 elements/,
    );
    expect(caught(() => trace((a: tx.Tensor) => a.sum(2), [f32])).message).toMatch(
      /^sum: axis 2 is out of range for rank 2/,
    );
    expect(caught(() => trace((a: tx.Tensor) => tx.einsum("ij,jk->ik", a, a), [f32])).message).toMatch(
      /^einsum: "ij,jk->ik": label 'j' has size 3 in one operand and 2 in the other/,
    );
    expect(caught(() => trace((a: tx.Tensor) => tx.einsum("ij,jk", a, a), [f32])).message).toMatch(
      /^einsum: "ij,jk": give the output explicitly/,
    );
  });

  it("a tensor leaking out of its trace is reported when used", () => {
    let leaked: tx.Tensor | undefined;
    trace((a: tx.Tensor) => (leaked = a.exp()), [spec("f32", [2])]);
    const e = caught(() => trace((b: tx.Tensor) => b.add(leaked!), [spec("f32", [2])]));
    expect(e.message).toMatch(/^add: operand f32\[2\] comes from a trace that has already finished/);
  });

  it("outside any trace, ops on device arrays run eagerly; transforms that need a trace say so", () => {
    // tx.zeros outside a trace is a device array now (eager execution), as jnp.zeros is in JAX.
    expect(tx.zeros([2])).toBeInstanceOf(tx.DeviceArray);
    const msg = caught(() => tx.checkpoint((x: tx.Tensor) => x.exp())(tx.array([1]))).message;
    expect(msg).toMatch(/^checkpoint: called outside of a trace/);
    expect(msg).toContain("wrap the call in jit");
  });

  it("a device array used inside a trace names the array and says to pass it as an argument", () => {
    const w = tx.array([1, 2]);
    const e = caught(() => trace((b: tx.Tensor) => b.add(w), [spec("f32", [2])]));
    expect(e.message).toMatch(
      /^add: operand DeviceArray<f32\[2\]> is a device array used inside a traced function, which cannot read its values while tracing; pass it to the function as an argument/,
    );
  });
});

import { readFileSync } from "node:fs";
const LINES = readFileSync(new URL(import.meta.url), "utf8").split("\n");
function lineOf(marker: string): number {
  return LINES.findIndex((l) => l.includes(marker) && !l.includes("lineOf(") && !l.includes("toContain(")) + 1;
}
function colOf(line: number, text: string): number {
  return LINES[line - 1]!.indexOf(text) + 1;
}
