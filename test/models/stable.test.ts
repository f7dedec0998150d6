// tx.nn softmax/logsumexp with a stopGradient shift: same values as the textbook forms, exact gradients, no mask pass.
import { describe, expect, it } from "vitest";
import { tx, type Tensor } from "tessera";
import { fromFloat32, toFloat32, type HostTensor } from "../../src/formats/host_tensor.ts";
import { interpretOnHost } from "../../src/parity/execute.ts";

const { logsumexp, softmax } = tx.nn;

const x = [
  [1000.5, 999.25, -3, 998],
  [-1e30, 0.5, -0.25, -1e30],
];
const host = (v: number[][]) => fromFloat32(v.flat(), [v.length, v[0]!.length]);

function refLse(row: number[]): number {
  const m = Math.max(...row);
  return m + Math.log(row.reduce((s, v) => s + Math.exp(v - m), 0));
}

describe("stable softmax and logsumexp", () => {
  it("match the max-shifted definitions, including huge and masked-out entries", () => {
    const [lse, sm] = interpretOnHost((x: Tensor) => [logsumexp(x, -1), softmax(x, -1)], [host(x)]) as HostTensor[];
    const l = toFloat32(lse!),
      s = toFloat32(sm!);
    x.forEach((row, i) => {
      expect(l[i]!).toBeCloseTo(refLse(row), 3);
      row.forEach((v, j) => {
        expect(s[i * 4 + j]!).toBeCloseTo(Math.exp(v - refLse(row)), 6);
      });
    });
  });

  it("the gradient of logsumexp is the softmax, and the backward pass has no max mask (no compare)", () => {
    const f = (x: Tensor) => tx.grad((x: Tensor) => logsumexp(x, -1).sum())(x);
    const g = toFloat32(interpretOnHost(f, [host(x)]) as HostTensor);
    x.forEach((row, i) => {
      row.forEach((v, j) => {
        expect(g[i * 4 + j]!).toBeCloseTo(Math.exp(v - refLse(row)), 6);
      });
    });
    const { graph } = tx.trace(f, [tx.spec("f32", [2, 4])]);
    expect(graph.ops.filter((op) => op.name === "compare")).toEqual([]);
  });
});
