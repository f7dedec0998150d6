// Frontend ops run through the reference interpreter and compared with values computed here by hand.
import { describe, expect, it } from "vitest";
import { tx } from "./api.ts";
import { host, run } from "./helpers.ts";

const seq = (n: number, scale = 1, offset = 0) => Array.from({ length: n }, (_, i) => offset + scale * i);
const close = (got: number[], want: number[], tol = 1e-5) => {
  expect(got.length).toBe(want.length);
  got.forEach((g, i) => {
    expect(Math.abs(g - want[i]!)).toBeLessThanOrEqual(tol * Math.max(1, Math.abs(want[i]!)));
  });
};

/** Row-major matmul of a [m,k] by b [k,n]. */
function mm(a: number[], b: number[], m: number, k: number, n: number): number[] {
  const out: number[] = [];
  for (let i = 0; i < m; i++)
    for (let j = 0; j < n; j++) {
      let s = 0;
      for (let l = 0; l < k; l++) s += a[i * k + l]! * b[l * n + j]!;
      out.push(s);
    }
  return out;
}

describe("values", () => {
  it("broadcast add and number operands", () => {
    const [r] = run(
      (x: tx.Tensor, b: tx.Tensor) => x.add(b).mul(2),
      [host("f32", [2, 3], seq(6)), host("f32", [3], [10, 20, 30])],
    );
    expect(r).toEqual([20, 42, 64, 26, 48, 70]);
  });

  it("erf as tx.erf and Tensor.erf", () => {
    const x = host("f32", [4], [-1, 0, 0.5, 2]);
    const want = [-0.8427007929497149, 0, 0.5204998778130465, 0.9953222650189527].map(Math.fround);
    expect(run((t: tx.Tensor) => tx.erf(t), [x])[0]).toEqual(want);
    expect(run((t: tx.Tensor) => t.erf(), [x])[0]).toEqual(want);
  });

  it("softmax matches the closed form and logsumexp is stable for large and all -inf rows", () => {
    const x = [1, 2, 3, 1000, 1000, 1000];
    const [sm, lse] = run((a: tx.Tensor) => [tx.softmax(a), tx.logsumexp(a, -1)], [host("f32", [2, 3], x)]);
    const e = [1, 2, 3].map(Math.exp),
      z = e.reduce((p, q) => p + q);
    close(sm!, [...e.map((v) => v / z), 1 / 3, 1 / 3, 1 / 3]);
    close(lse!, [Math.log(z), 1000 + Math.log(3)]);
    const [ninf] = run((a: tx.Tensor) => tx.logsumexp(a, 0), [host("f32", [2], [-Infinity, -Infinity])]);
    expect(ninf).toEqual([-Infinity]);
  });

  it("logSoftmax and mean", () => {
    const [ls, mean] = run(
      (a: tx.Tensor) => [tx.logSoftmax(a), a.mean(0)],
      [host("f32", [2, 2], [0, Math.log(3), 1, 5])],
    );
    close(ls!, [
      Math.log(1 / 4),
      Math.log(3 / 4),
      1 - Math.log(Math.exp(1) + Math.exp(5)),
      5 - Math.log(Math.exp(1) + Math.exp(5)),
    ]);
    close(mean!, [0.5, (Math.log(3) + 5) / 2]);
  });

  it("matmul (2-D weights, batched with broadcast, vectors) against a hand loop, and einsum agrees", () => {
    const a = seq(2 * 3 * 4, 0.5, -3),
      w = seq(4 * 5, 0.25, -2);
    const [r1, r2] = run(
      (x: tx.Tensor, y: tx.Tensor) => [x.matmul(y), tx.einsum("bij,jk->bik", x, y)],
      [host("f32", [2, 3, 4], a), host("f32", [4, 5], w)],
    );
    const want = [...mm(a.slice(0, 12), w, 3, 4, 5), ...mm(a.slice(12), w, 3, 4, 5)];
    close(r1!, want);
    expect(r2).toEqual(r1);

    // [2,1,2,3] @ [3,3,2] -> [2,3,2,2] with the batch broadcast.
    const p = seq(12, 1, -6),
      q = seq(18, 0.5, -4);
    const [r3, r4] = run(
      (x: tx.Tensor, y: tx.Tensor) => [
        tx.matmul(x, y),
        tx.einsum("...ij,...jk->...ik", x.broadcastTo([2, 3, 2, 3]), y.broadcastTo([2, 3, 3, 2])),
      ],
      [host("f32", [2, 1, 2, 3], p), host("f32", [3, 3, 2], q)],
    );
    const want3: number[] = [];
    for (let b0 = 0; b0 < 2; b0++)
      for (let b1 = 0; b1 < 3; b1++)
        want3.push(...mm(p.slice(b0 * 6, b0 * 6 + 6), q.slice(b1 * 6, b1 * 6 + 6), 2, 3, 2));
    close(r3!, want3);
    expect(r4).toEqual(r3);

    const [mv, vm, vv] = run(
      (x: tx.Tensor, v: tx.Tensor) => [tx.matmul(x, v), tx.matmul(v.slice([0, 2]), x), tx.matmul(v, v)],
      [host("f32", [2, 3], seq(6)), host("f32", [3], [1, 2, 3])],
    );
    expect(mv).toEqual([8, 26]);
    expect(vm).toEqual([6, 9, 12]);
    expect(vv).toEqual([14]);
  });

  it("einsum: transpose, sums, a three-operand chain and ellipsis", () => {
    const a = seq(6),
      b = seq(12, 1, 1),
      c = seq(8, -1, 3);
    const [t, rows, total, chain, ref] = run(
      (x: tx.Tensor, y: tx.Tensor, z: tx.Tensor) => [
        tx.einsum("ij->ji", x),
        tx.einsum("ij->i", x),
        tx.einsum("ij->", x),
        tx.einsum("ij,jk,kl->il", x, y, z),
        x.matmul(y).matmul(z),
      ],
      [host("f32", [2, 3], a), host("f32", [3, 4], b), host("f32", [4, 2], c)],
    );
    expect(t).toEqual([0, 3, 1, 4, 2, 5]);
    expect(rows).toEqual([3, 12]);
    expect(total).toEqual([15]);
    expect(chain).toEqual(ref);
    // A label in one operand only and absent from the output is summed before contracting.
    const [outer] = run(
      (x: tx.Tensor, y: tx.Tensor) => tx.einsum("ij,k->jk", x, y),
      [host("f32", [2, 2], [1, 2, 3, 4]), host("f32", [2], [1, 10])],
    );
    expect(outer).toEqual([4, 40, 6, 60]);
  });

  it("slice, pad, concatenate, stack, split", () => {
    const x = seq(20);
    const [s1, s2, s3, p, cat, st, sp0, sp1] = run(
      (a: tx.Tensor) => [
        a.slice([1, -1], [null, null, 2]),
        a.slice(-1),
        a.slice(null, 2),
        tx.pad(
          a.slice([0, 1], [0, 2]),
          [
            [1, 1],
            [0, 1],
          ],
          -1,
        ),
        tx.concatenate([a.slice([0, 1]), a.slice([3, 4])], 0),
        tx.stack([a.slice(0, [0, 2]), a.slice(1, [0, 2])], 1),
        ...tx.split(a.slice(0), [2], 0),
      ],
      [host("f32", [4, 5], x)],
    );
    expect(s1).toEqual([5, 7, 9, 10, 12, 14]);
    expect(s2).toEqual([15, 16, 17, 18, 19]);
    expect(s3).toEqual([2, 7, 12, 17]);
    expect(p).toEqual([-1, -1, -1, 0, 1, -1, -1, -1, -1]);
    expect(cat).toEqual([0, 1, 2, 3, 4, 15, 16, 17, 18, 19]);
    expect(st).toEqual([0, 5, 1, 6]);
    expect(sp0).toEqual([0, 1]);
    expect(sp1).toEqual([2, 3, 4]);
  });

  it("take on axes 0 and 1, takeAlongAxis, oneHot, argmax", () => {
    const t = seq(12);
    const [g0, g1, along, oh, am] = run(
      (tab: tx.Tensor, ids: tx.Tensor) => [
        tx.take(tab, ids),
        tx.take(tab, ids, 1),
        tx.takeAlongAxis(tab.slice([0, 2]), ids.reshape([2, 1]), 1),
        tx.oneHot(ids, 3),
        tx.argmax(
          tx.constant([
            [1, 5, 5],
            [7, 0, 2],
          ]),
          -1,
        ),
      ],
      [host("f32", [3, 4], t), host("s32", [2], [2, 0])],
    );
    expect(g0).toEqual([8, 9, 10, 11, 0, 1, 2, 3]);
    expect(g1).toEqual([2, 0, 6, 4, 10, 8]);
    expect(along).toEqual([2, 4]);
    expect(oh).toEqual([0, 0, 1, 1, 0, 0]);
    expect(am).toEqual([1, 0]);
  });

  it("dynamicSlice clamps its start; dynamicUpdateSlice writes; dynamicIndex picks a row", () => {
    const [ds, dus, row] = run(
      (x: tx.Tensor, i: tx.Tensor) => [
        tx.dynamicSlice(x, [i, 0], [2, 2]),
        tx.dynamicUpdateSlice(x, tx.zeros([1, 2]), [1, i]),
        tx.dynamicIndex(x, 1),
      ],
      [host("f32", [3, 2], seq(6)), host("s32", [], [5])],
    );
    expect(ds).toEqual([2, 3, 4, 5]);
    expect(dus).toEqual([0, 1, 0, 0, 4, 5]);
    expect(row).toEqual([2, 3]);
  });

  it("where, comparisons, clip, astype truncation, arange with float steps", () => {
    const [w, c, tr, ar] = run(
      (x: tx.Tensor) => [tx.where(x.ge(0), x, x.mul(0.5)), tx.clip(x, -1, 1), x.astype("s32"), tx.arange(0, 1, 0.25)],
      [host("f32", [4], [-3, -0.5, 0.5, 2.5])],
    );
    expect(w).toEqual([-1.5, -0.25, 0.5, 2.5]);
    expect(c).toEqual([-1, -0.5, 0.5, 1]);
    expect(tr).toEqual([-3, 0, 0, 2]);
    expect(ar).toEqual([0, 0.25, 0.5, 0.75]);
  });

  it("bf16 sum and mean round once to bf16", () => {
    const [s] = run((x: tx.Tensor) => x.sum(), [host("bf16", [257], new Array(257).fill(1))]);
    expect(s).toEqual([256]); // 257 needs 9 bits of mantissa; bf16 has 8
    const [m] = run((x: tx.Tensor) => x.mean(), [host("bf16", [3], [1, 2, 4])]);
    expect(m).toEqual([2.328125]); // 7/3 = 2.333... rounded to bf16
  });
});
