// scan: one IR scan op with the body traced once; trees of carries/xs/ys; captured constants; reverse; errors.
import { describe, expect, it } from "vitest";
import { grad, optimizationBarrier, scan, spec, trace, tx } from "./api.ts";
import { host, ir, run } from "./helpers.ts";

describe("scan", () => {
  it("records one scan op; closed-over tensors become loop constants (consts first)", () => {
    const f = (xs: tx.Tensor, w: tx.Tensor) =>
      scan(
        (c: tx.Tensor, x: tx.Tensor) => {
          const n = c.mul(w).add(x);
          return [n, n.sum()];
        },
        tx.zeros([2]),
        xs,
      );
    expect(ir(f, [spec("f32", [5, 2]), spec("f32", [2])])).toMatchInlineSnapshot(`
      "func @main(%0: f32[5,2] "xs", %1: f32[2] "w") -> (f32[2] "out[0]", f32[5] "out[1]") {
        %2: f32[2] = constant {dtype=f32, shape=[2], value=[0]}
        %3: f32[2], %4: f32[5] = scan %1, %2, %0 {length=5, numCarry=1, numConsts=1, reverse=false} body (%5: f32[2], %6: f32[2], %7: f32[2]) -> (f32[2], f32[]) {
          %8: f32[2] = mul %6, %5
          %9: f32[2] = add %8, %7
          %10: f32[] = reduce_sum %9 {axes=[0]}
          return %9, %10
        }
        return %3, %4
      }
      "
    `);
  });

  it("cumulative sums forward and in reverse", () => {
    const step = (c: tx.Tensor, x: tx.Tensor): [tx.Tensor, tx.Tensor] => [c.add(x), c.add(x)];
    const [fc, fy, rc, ry] = run(
      (xs: tx.Tensor) => [...scan(step, tx.zeros([]), xs), ...scan(step, tx.zeros([]), xs, { reverse: true })],
      [host("f32", [4], [1, 2, 3, 4])],
    );
    expect(fc).toEqual([10]);
    expect(fy).toEqual([1, 3, 6, 10]);
    expect(rc).toEqual([10]);
    expect(ry).toEqual([10, 9, 7, 4]);
  });

  it("trees of carries and xs, no ys, and length without xs", () => {
    const [a, b, count] = run(
      (xs: tx.Tensor, ys: tx.Tensor) => {
        const [c] = scan(
          (c: { a: tx.Tensor; b: tx.Tensor[] }, x: { p: tx.Tensor; q: tx.Tensor }) => [
            { a: c.a.add(x.p), b: [c.b[0]!.mul(x.q)] },
            null,
          ],
          { a: tx.zeros([]), b: [tx.ones([])] },
          { p: xs, q: ys },
        );
        const [n] = scan((k: tx.Tensor) => [k.add(1), null], tx.zeros([], "s32"), null, { length: 7 });
        return [c.a, c.b[0]!, n];
      },
      [host("f32", [3], [1, 2, 3]), host("f32", [3], [2, 3, 4])],
    );
    expect([a, b, count]).toEqual([[6], [24], [7]]);
  });

  it("nested scans capture from the outermost trace through the middle one", () => {
    const [r] = run(
      (xs: tx.Tensor, k: tx.Tensor) =>
        scan(
          (c: tx.Tensor, x: tx.Tensor) => {
            const [inner] = scan((d: tx.Tensor) => [d.add(k), null], c, null, { length: 2 });
            return [inner.add(x), null];
          },
          tx.zeros([]),
          xs,
        )[0],
      [host("f32", [3], [1, 1, 1]), host("f32", [], [10])],
    );
    expect(r).toEqual([63]);
  });

  it("differentiates through the loop (an RNN-like recurrence)", () => {
    // c_{t+1} = c_t * w + x_t, loss = c_T; dL/dw for T=3 with c_0 = 0: c_T = x0 w^2 + x1 w + x2 -> 2 x0 w + x1.
    const [g] = run(
      (w: tx.Tensor, xs: tx.Tensor) =>
        grad((w: tx.Tensor) => scan((c: tx.Tensor, x: tx.Tensor) => [c.mul(w).add(x), null], tx.zeros([]), xs)[0])(w),
      [host("f32", [], [3]), host("f32", [3], [2, 5, 7])],
    );
    expect(g).toEqual([2 * 2 * 3 + 5]);
  });

  it("a carry that changes type or structure is a trace-time error naming the leaf", () => {
    expect(() =>
      trace(
        (xs: tx.Tensor) => scan((c: tx.Tensor, x: tx.Tensor) => [c.astype("bf16"), x], tx.zeros([]), xs),
        [spec("f32", [3])],
      ),
    ).toThrow(/^scan: the body returned carry as bf16\[\], but init has f32\[\]/);
    expect(() =>
      trace(
        (xs: tx.Tensor) =>
          scan(((_c: { a: tx.Tensor }, x: tx.Tensor) => [{ b: x }, x]) as never, { a: tx.zeros([]) }, xs),
        [spec("f32", [3])],
      ),
    ).toThrow(/carry of structure \{"b":\*\}, but init has structure \{"a":\*\}/);
    expect(() =>
      trace(
        (xs: tx.Tensor, ys: tx.Tensor) => scan((c: tx.Tensor) => [c, null], tx.zeros([]), [xs, ys]),
        [spec("f32", [3]), spec("f32", [4])],
      ),
    ).toThrow(/xs\[1\] has leading dim 4, expected 3/);
  });
});

describe("optimizationBarrier", () => {
  it("wraps all leaves of a tree in one op and keeps the structure", () => {
    expect(
      ir((a: tx.Tensor, b: tx.Tensor) => optimizationBarrier({ a, rest: [b] }), [spec("f32", [2]), spec("s32", [])]),
    ).toMatchInlineSnapshot(`
      "func @main(%0: f32[2] "a", %1: s32[] "b") -> (f32[2] "a", s32[] "rest[0]") {
        %2: f32[2], %3: s32[] = optimization_barrier %0, %1
        return %2, %3
      }
      "
    `);
  });
});
