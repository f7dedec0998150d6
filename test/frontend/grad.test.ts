// valueAndGrad/grad traced inside a trace, differentiated by the autodiff pass, checked against closed forms.
import { describe, expect, it } from "vitest";
import { grad, spec, trace, tx, valueAndGrad } from "./api.ts";
import { print } from "../../src/ir/print.ts";
import { host, run } from "./helpers.ts";

const close = (got: number[], want: number[], tol = 1e-5) => {
  expect(got.length).toBe(want.length);
  got.forEach((g, i) => {
    expect(Math.abs(g - want[i]!)).toBeLessThanOrEqual(tol * Math.max(1, Math.abs(want[i]!)));
  });
};

describe("valueAndGrad", () => {
  it("d/dx sum(x^2) = 2x, with the value", () => {
    const [v, g] = run(
      (x: tx.Tensor) => valueAndGrad((y: tx.Tensor) => y.square().sum())(x),
      [host("f32", [3], [1, -2, 3])],
    );
    expect(v).toEqual([14]);
    expect(g).toEqual([2, -4, 6]);
  });

  it("wrt several arguments of a linear layer, in wrt order; other arguments get no gradient", () => {
    // loss = sum((x @ w + b)^2); dL/dw = x^T (2 r), dL/db = sum_rows(2 r)
    const x = [1, 2, 3, 4],
      w = [0.5, -1, 2, 0],
      b = [0.25, -0.5];
    const f = (w: tx.Tensor, b: tx.Tensor, x: tx.Tensor) => x.matmul(w).add(b).square().sum();
    const [gb, gw] = run(
      (w: tx.Tensor, b: tx.Tensor, x: tx.Tensor) => valueAndGrad(f, { wrt: [1, 0] })(w, b, x)[1],
      [host("f32", [2, 2], w), host("f32", [2], b), host("f32", [2, 2], x)],
    );
    const r = [1 * 0.5 + 2 * 2 + 0.25, 1 * -1 + 0 - 0.5, 3 * 0.5 + 4 * 2 + 0.25, 3 * -1 - 0.5];
    close(gw!, [
      2 * (1 * r[0]! + 3 * r[2]!),
      2 * (1 * r[1]! + 3 * r[3]!),
      2 * (2 * r[0]! + 4 * r[2]!),
      2 * (2 * r[1]! + 4 * r[3]!),
    ]);
    close(gb!, [2 * (r[0]! + r[2]!), 2 * (r[1]! + r[3]!)]);
  });

  it("gradients of a parameter tree come back as a tree with the same paths", () => {
    const loss = (p: { layers: { w: tx.Tensor }[]; scale: tx.Tensor }) =>
      p.layers[0]!.w.mul(p.layers[1]!.w).mul(p.scale).sum();
    const { graph, outTree } = trace(
      (p: Parameters<typeof loss>[0]) => valueAndGrad(loss)(p)[1],
      [{ layers: [{ w: spec("f32", [2]) }, { w: spec("f32", [2]) }], scale: spec("f32", []) }],
    );
    expect(graph.inputNames).toEqual(["p.layers[0].w", "p.layers[1].w", "p.scale"]);
    expect(graph.outputNames).toEqual(["layers[0].w", "layers[1].w", "scale"]);
    expect(outTree.kind).toBe("object");
  });

  it("hasAux passes aux through; grad returns [grads, aux]", () => {
    const f = (x: tx.Tensor) => [x.square().sum(), x.max()] as const;
    const [loss, aux, g1, g2, aux2] = run(
      (x: tx.Tensor) => {
        const [[l, a], g] = valueAndGrad(f, { hasAux: true })(x);
        const [gg, a2] = grad(f, { hasAux: true })(x);
        return [l, a, g, gg, a2];
      },
      [host("f32", [2], [3, 4])],
    );
    expect([loss, aux, g1, g2, aux2]).toEqual([[25], [4], [6, 8], [6, 8], [4]]);
  });

  it("closed-over tensors of the enclosing trace are constants to the derivative", () => {
    const [g] = run(
      (x: tx.Tensor, c: tx.Tensor) => grad((y: tx.Tensor) => y.mul(c).sum())(x),
      [host("f32", [2], [1, 1]), host("f32", [2], [5, 7])],
    );
    expect(g).toEqual([5, 7]);
  });

  it("nests: the second derivative of sum(x^3) is 6x", () => {
    const d1 = grad((x: tx.Tensor) => x.pow(3).sum());
    const d2 = grad((x: tx.Tensor) => d1(x).sum());
    const [g] = run((x: tx.Tensor) => d2(x), [host("f32", [3], [1, 2, -1])]);
    close(g!, [6, 12, -6]);
  });

  it("cross-entropy of logSoftmax has gradient softmax - onehot", () => {
    const logits = [1, 2, 0.5, -1, 0, 3];
    const ce = (z: tx.Tensor, y: tx.Tensor) => tx.takeAlongAxis(tx.logSoftmax(z), y.expandDims(-1), -1).mean().neg();
    const [g] = run(
      (z: tx.Tensor, y: tx.Tensor) => grad(ce)(z, y),
      [host("f32", [2, 3], logits), host("s32", [2], [1, 2])],
    );
    const want: number[] = [];
    for (let r = 0; r < 2; r++) {
      const row = logits.slice(r * 3, r * 3 + 3),
        z = row.reduce((p, q) => p + Math.exp(q), 0);
      row.forEach((v, j) => {
        want.push((Math.exp(v) / z - (j === [1, 2][r] ? 1 : 0)) / 2);
      });
    }
    close(g!, want);
  });

  it("a non-scalar loss or an integer wrt argument is a trace-time error", () => {
    expect(() => trace((x: tx.Tensor) => grad((y: tx.Tensor) => y.square())(x), [spec("f32", [2])])).toThrow(
      /^valueAndGrad: the function must return a rank-0 float loss, got a f32\[2\] Tensor/,
    );
    expect(() => trace((x: tx.Tensor) => grad((y: tx.Tensor) => y.sum())(x), [spec("s32", [2])])).toThrow(
      /cannot differentiate with respect to y: it is s32/,
    );
  });

  it("inlines forward and backward ops into the enclosing trace with the user's locations", () => {
    const { graph } = trace((x: tx.Tensor) => grad((y: tx.Tensor) => y.exp().sum())(x), [spec("f32", [2])]);
    const text = print(graph);
    expect(text).toMatch(/exp %0 loc\("test\/frontend\/grad\.test\.ts":\d+:\d+\)/);
    expect(graph.outputs.length).toBe(1);
  });
});
