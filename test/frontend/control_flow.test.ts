// cond, switch, whileLoop, foriLoop, stopGradient, customVjp: interpreter and PJRT values, gradients, StableHLO, misuse.
import { readFileSync } from "node:fs";
import { describe, expect, it } from "vitest";
import { array, jit, spec, trace, tx, TraceError } from "./api.ts";
import { emitStableHLO } from "../../src/backend/stablehlo/index.ts";
import { interpret } from "../../src/ir/interpret.ts";
import { verify } from "../../src/ir/verify.ts";
import { runPasses } from "../../src/passes/manager.ts";
import { CLEANUP_PIPELINE } from "../../src/passes/pipeline.ts";
import { checkGrad } from "../passes/gradcheck.ts";
import { caught, host, ir, run } from "./helpers.ts";

type T = tx.Tensor;
const HERE = "test/frontend/control_flow.test.ts";

const x3 = host("f32", [3], [0.5, -1, 2]);
const f32 = (...shape: number[]) => spec("f32", shape);

/** The function's outputs from the interpreter and from PJRT (through jit), on the same host arguments. */
async function both(
  fn: (...a: never[]) => unknown,
  args: ReturnType<typeof host>[],
): Promise<[number[][], number[][]]> {
  const interp = run(fn, args);
  const out = await jit(fn as (...a: unknown[]) => unknown)(
    ...args.map((a) => array(Array.from(a.data), { dtype: a.type.dtype, shape: [...a.type.shape] })),
  );
  const leaves = Array.isArray(out) ? out : [out];
  const dev = await Promise.all(leaves.map(async (d) => Array.from(await (d as tx.DeviceArray).toArray())));
  return [interp, dev];
}

function close(a: number[][], b: number[][]): void {
  expect(a.length).toBe(b.length);
  a.forEach((row, i) => {
    row.forEach((v, j) => {
      expect(b[i]![j]).toBeCloseTo(v, 5);
    });
  });
}

describe("cond", () => {
  const f = (x: T, p: T) =>
    tx.cond(
      p.gt(0),
      (a: T) => a.sin().mul(2),
      (a: T) => a.cos().mul(x),
      x,
    );

  it("runs only the taken branch, in the interpreter and on PJRT", async () => {
    for (const p of [1, -1]) {
      const [interp, dev] = await both(f, [x3, host("f32", [], [p])]);
      const want = [0.5, -1, 2].map((v) => (p > 0 ? Math.sin(v) * 2 : Math.cos(v) * v));
      interp[0]!.forEach((v, i) => {
        expect(v).toBeCloseTo(want[i]!, 5);
      });
      close(interp, dev);
    }
  });

  it("is differentiable: gradients match finite differences in both branches", () => {
    const { graph } = trace(f, [f32(3), f32()]);
    for (const p of [1, -1]) checkGrad(graph, [x3, host("f32", [], [p])], { wrt: [0] });
  });

  it("closed-over tensors and operand trees; a JS boolean or a numeric pred", () => {
    const g = (x: T, w: T) =>
      tx.cond(
        w.sum(),
        (o: { a: T; b: T }) => ({ s: o.a.mul(w), t: o.b }),
        (o: { a: T; b: T }) => ({ s: o.a, t: o.b.neg() }),
        { a: x, b: x.sum() },
      );
    const [s, t] = run((x: T, w: T) => Object.values(g(x, w)), [x3, host("f32", [3], [1, 1, 1])]);
    expect(s).toEqual([0.5, -1, 2]);
    expect(t).toEqual([1.5]);
    const [s0] = run(
      (x: T) =>
        tx.cond(
          false,
          (a: T) => a,
          (a: T) => a.mul(3),
          x,
        ),
      [x3],
    );
    expect(s0).toEqual([1.5, -3, 6]);
  });

  it("lowers to stablehlo.if (golden)", () => {
    const { graph } = trace(
      (x: T, p: T) =>
        tx.cond(
          p,
          (a: T) => a.exp(),
          (a: T) => a.neg(),
          x,
        ),
      [f32(2), spec("bool", [])],
    );
    expect(emitStableHLO(graph, { locs: false })).toMatchInlineSnapshot(`
      "module @tessera attributes {mhlo.num_partitions = 1 : i32, mhlo.num_replicas = 1 : i32} {
        func.func public @main(%arg0: tensor<2xf32>, %arg1: tensor<i1>) -> tensor<2xf32> {
          %0 = "stablehlo.if"(%arg1) ({
            %1 = stablehlo.exponential %arg0 : tensor<2xf32>
            stablehlo.return %1 : tensor<2xf32>
          }, {
            %2 = stablehlo.negate %arg0 : tensor<2xf32>
            stablehlo.return %2 : tensor<2xf32>
          }) : (tensor<i1>) -> (tensor<2xf32>)
          return %0 : tensor<2xf32>
        }
      }
      "
    `);
  });

  it("branches returning different types or structures: a TraceError at the user's line naming both", () => {
    const e = caught(() =>
      trace(
        (x: T) =>
          // biome-ignore format: the marker must stay on the cond's line
          tx.cond(x.sum().gt(0), (a: T) => a, (a: T) => a.sum(), x), // LINE_COND
        [f32(3)],
      ),
    );
    expect(e).toBeInstanceOf(TraceError);
    expect(e.message).toMatch(/^cond: trueFn returns out as f32\[3\], but falseFn returns it as f32\[\] at /);
    expect(e.message).toMatch(new RegExp(` at ${HERE}:${lineOf("LINE_COND")}:\\d+$`));
    const s = caught(() =>
      trace(
        (x: T) =>
          tx.cond(
            true,
            (a: T) => [a, a],
            (a: T) => [a],
            x,
          ),
        [f32(3)],
      ),
    );
    expect(s.message).toMatch(/^cond: trueFn returns out of structure \[\*,\*\], but falseFn returns \[\*\]/);
    expect(
      caught(() =>
        trace(
          (x: T) =>
            tx.cond(
              x,
              (a: T) => a,
              (a: T) => a,
              x,
            ),
          [f32(3)],
        ),
      ).message,
    ).toMatch(/^cond: pred must be a scalar \(rank 0\), got f32\[3\]/);
  });
});

describe("switch", () => {
  const branches = [(a: T) => a.mul(2), (a: T) => a.sin(), (a: T) => a.exp()];
  const f = (x: T, i: T) => tx.switch(i, branches, x);

  it("picks branches[index], the index clamped into range as in JAX", async () => {
    for (const [i, k] of [
      [-1, 0],
      [0, 0],
      [1, 1],
      [2, 2],
      [7, 2],
    ] as const) {
      const [interp, dev] = await both(f, [x3, host("s32", [], [i])]);
      const want = [0.5, -1, 2].map((v) => [v * 2, Math.sin(v), Math.exp(v)][k]!);
      interp[0]!.forEach((v, j) => {
        expect(v).toBeCloseTo(want[j]!, 5);
      });
      close(interp, dev);
    }
    expect(tx.switchCase).toBe(tx.switch);
  });

  it("gradients match finite differences for each branch", () => {
    const { graph } = trace(f, [f32(3), spec("s32", [])]);
    for (const i of [0, 1, 2]) checkGrad(graph, [x3, host("s32", [], [i])], { wrt: [0] });
  });

  it("refuses a float index and an empty branch list", () => {
    expect(caught(() => trace((x: T) => tx.switch(x.sum(), branches, x), [f32(3)])).message).toMatch(
      /^switch: index must be an integer, got f32\[\]/,
    );
    expect(caught(() => trace((x: T) => tx.switch(0, [], x), [f32(3)])).message).toMatch(
      /^switch: branches must be a non-empty array/,
    );
  });
});

describe("whileLoop", () => {
  // Doubles x until its sum reaches the limit: a data-dependent trip count.
  const f = (x: T, limit: T) =>
    tx.whileLoop(
      ([v]: [T, T]) => v.sum().lt(limit),
      ([v, n]: [T, T]) => [v.mul(2), n.add(1)] as [T, T],
      [x, tx.constant(0, { dtype: "s32" })] as [T, T],
    );

  it("loops while condFn holds, in the interpreter and on PJRT", async () => {
    const [interp, dev] = await both(f, [host("f32", [2], [1, 2]), host("f32", [], [20])]);
    expect(interp).toEqual([[8, 16], [3]]);
    expect(dev).toEqual(interp);
  });

  it("lowers to stablehlo.while (golden)", () => {
    const { graph } = trace(
      (n: T) =>
        tx.whileLoop(
          (i: T) => i.lt(n),
          (i: T) => i.add(1),
          tx.constant(0, { dtype: "s32" }),
        ),
      [spec("s32", [])],
    );
    expect(emitStableHLO(graph, { locs: false })).toMatchInlineSnapshot(`
      "module @tessera attributes {mhlo.num_partitions = 1 : i32, mhlo.num_replicas = 1 : i32} {
        func.func public @main(%arg0: tensor<i32>) -> tensor<i32> {
          %0 = stablehlo.constant dense<0> : tensor<i32>
          %3:2 = stablehlo.while(%it1 = %arg0, %it2 = %0) : tensor<i32>, tensor<i32>
            cond {
              %4 = stablehlo.compare LT, %it2, %it1, SIGNED : (tensor<i32>, tensor<i32>) -> tensor<i1>
              stablehlo.return %4 : tensor<i1>
            } do {
              %5 = stablehlo.constant dense<1> : tensor<i32>
              %6 = stablehlo.add %it2, %5 : tensor<i32>
              stablehlo.return %it1, %6 : tensor<i32>, tensor<i32>
            }
          return %3#1 : tensor<i32>
        }
      }
      "
    `);
  });

  it("a carry whose type changes: an error naming the leaf", () => {
    const e = caught(() =>
      trace(
        (x: T) =>
          tx.whileLoop(
            (c: { a: T; b: T }) => c.b.sum().lt(3),
            (c: { a: T; b: T }) => ({ a: c.a, b: c.b.sum() }),
            { a: x, b: x },
          ),
        [f32(3)],
      ),
    );
    expect(e).toBeInstanceOf(TraceError);
    expect(e.message).toMatch(
      /^whileLoop: bodyFn returned carry\.b as f32\[\], but init has f32\[3\]; the carry must keep its dtype and shape at /,
    );
    expect(
      caught(() =>
        trace(
          (x: T) =>
            tx.whileLoop(
              (c: T) => c.sum(),
              (c: T) => c,
              x,
            ),
          [f32(3)],
        ),
      ).message,
    ).toMatch(/^whileLoop: condFn must return a scalar bool tensor, got a f32\[\] tensor/);
  });

  it("is not reverse-differentiable: a clear error at the loop's line", () => {
    const e = caught(() => trace((x: T) => tx.grad((x: T) => f(x, tx.constant(20))[0].sum())(x), [f32(2)]));
    expect(e.message).toMatch(
      /^whileLoop: reverse-mode differentiation does not work for a while loop .*foriLoop with static bounds or scan at /,
    );
    // A loop over values that are not differentiated is fine inside grad.
    const g = (x: T) => tx.grad((x: T) => x.mul(f(tx.onesLike(x), tx.constant(5))[0]).sum())(x);
    expect(run(g, [host("f32", [2], [1, 2])])).toEqual([[4, 4]]);
  });
});

describe("foriLoop", () => {
  // c <- c * x + i, three times from 1: x^3 + x + 2 (gradient 3x^2 + 1).
  const f = (x: T) => tx.foriLoop(0, 3, (i: T, c: T) => c.mul(x).add(i.astype("f32")), tx.onesLike(x));

  it("static bounds lower to a scan and are differentiable", () => {
    const { graph } = trace(f, [f32(3)]);
    expect(graph.ops.map((o) => o.name)).toContain("scan");
    expect(run(f, [x3])[0]).toEqual([0.5, -1, 2].map((v) => Math.fround(v ** 3 + v + 2)));
    checkGrad(graph, [x3]);
    const g = run((x: T) => tx.grad((x: T) => f(x).sum())(x), [x3])[0]!;
    g.forEach((v, i) => {
      expect(v).toBeCloseTo(3 * [0.5, -1, 2][i]! ** 2 + 1, 5);
    });
  });

  it("tensor bounds lower to a while; both agree on PJRT", async () => {
    const dyn = (x: T, n: T) =>
      tx.foriLoop(tx.constant(0, { dtype: "s32" }), n, (i: T, c: T) => c.add(i.astype("f32")), x);
    const { graph } = trace(dyn, [f32(3), spec("s32", [])]);
    expect(graph.ops.map((o) => o.name)).toContain("while");
    const [interp, dev] = await both(dyn, [x3, host("s32", [], [4])]);
    expect(interp).toEqual([[6.5, 5, 8]]);
    expect(dev).toEqual(interp);
  });

  it("a body that changes the carry: an error naming the leaf", () => {
    expect(
      caught(() => trace((x: T) => tx.foriLoop(0, 2, (_i: T, c: T[]) => [c[0]!.sum()], [x]), [f32(3)])).message,
    ).toMatch(/^foriLoop: body returned carry\[0\] as f32\[\], but init has f32\[3\]/);
  });
});

describe("stopGradient", () => {
  it("is the identity forward, and no cotangent flows through it", () => {
    const g = (x: T) => tx.grad((x: T) => x.mul(tx.stopGradient(x)).sum())(x);
    expect(run(g, [x3])).toEqual([[0.5, -1, 2]]);
    expect(run((x: T) => tx.stopGradient({ a: x }).a, [x3])).toEqual([[0.5, -1, 2]]);
  });

  it("tx.nn.logsumexp's backward pass has no max mask any more, and the s32 cast is gone", () => {
    const { graph } = trace((x: T) => tx.grad((x: T) => tx.nn.logsumexp(x).sum())(x), [f32(2, 4)]);
    expect(graph.ops.map((o) => o.name)).toContain("stop_gradient");
    expect(graph.ops.filter((o) => o.name === "convert")).toEqual([]);
  });

  it("tx.softmax/logsumexp/logSoftmax are the same code as tx.nn's: the same IR, the shift stopped", () => {
    const gradIr = (fn: (x: T) => T) => ir((x: T) => tx.grad((x: T) => fn(x).square().sum())(x), [f32(2, 4)]);
    expect(gradIr((x) => tx.softmax(x))).toBe(gradIr((x) => tx.nn.softmax(x)));
    expect(gradIr((x) => tx.logSoftmax(x, 0))).toBe(gradIr((x) => tx.nn.logSoftmax(x, 0)));
    expect(gradIr((x) => tx.logsumexp(x, -1))).toBe(gradIr((x) => tx.nn.logsumexp(x)));
    expect(gradIr((x) => tx.logsumexp(x))).toContain("stop_gradient");
  });
});

describe("customVjp", () => {
  // sin with its own backward: cos(x) saved by fwd.
  const mySin = tx.customVjp((x: T) => x.sin(), {
    fwd: (x: T) => [x.sin(), x.cos()],
    bwd: (cosx: T, ct: T) => [cosx.mul(ct)],
  });
  // The straight-through identity with a clipped gradient: bwd is not the derivative of fn.
  const clipGrad = tx.customVjp((x: T) => x, {
    fwd: (x: T) => [x, null],
    bwd: (_res: null, ct: T) => [ct.clip(-0.25, 0.25)],
  });

  it("runs fn when not differentiated (interpreter and PJRT)", async () => {
    const [interp, dev] = await both((x: T) => mySin(x), [x3]);
    close([[0.5, -1, 2].map(Math.sin)], interp);
    close(interp, dev);
  });

  it("grad uses bwd; it matches finite differences when bwd is the true derivative", () => {
    const { graph } = trace((x: T) => mySin(x).mul(x), [f32(3)]);
    checkGrad(graph, [x3]);
    const g = run((x: T) => tx.grad((x: T) => clipGrad(x).mul(x).sum())(x), [x3])[0]!;
    // d/dx (x * x) through the clipped path: clip(x) + x.
    expect(g).toEqual([0.25 + 0.5, -0.25 - 1, 0.25 + 2]);
  });

  it("survives jit(grad) and nested grad (second derivative through bwd)", async () => {
    const g2 = (x: T) =>
      tx.grad((x: T) =>
        tx
          .grad((x: T) => mySin(x).sum())(x)
          .sum(),
      )(x);
    const [interp, dev] = await both(g2, [x3]);
    close([[0.5, -1, 2].map((v) => -Math.sin(v))], interp);
    close(interp, dev);
    // Without grad the trace holds the op and the cleanup inlines fn (inline-checkpoints), as the emitter would.
    const { graph } = trace((x: T) => mySin(x), [f32(3)]);
    expect(graph.ops.map((o) => o.name)).toEqual(["custom_vjp"]);
    const cleaned = runPasses(graph, CLEANUP_PIPELINE);
    verify(cleaned);
    expect(cleaned.ops.map((o) => o.name)).toEqual(["sin"]);
    expect(interpret(cleaned, [x3])[0]!.data[0]).toBeCloseTo(Math.sin(0.5), 6);
  });

  it("several arguments as trees; null for a zero cotangent", () => {
    const f = tx.customVjp((p: { w: T; b: T }, x: T) => x.mul(p.w).add(p.b), {
      fwd: (p: { w: T; b: T }, x: T) => [x.mul(p.w).add(p.b), [p.w, x]],
      bwd: ([_w, x]: T[], ct: T) => [{ w: ct.mul(x!), b: ct }, null],
    });
    const g = (w: T, b: T, x: T) => tx.grad((p: { w: T; b: T }) => f(p, x).sum())({ w, b });
    const [gb, gw] = run((w: T, b: T, x: T) => Object.values(g(w, b, x)), [x3, x3, host("f32", [3], [1, 2, 3])]);
    expect(gb).toEqual([1, 1, 1]);
    expect(gw).toEqual([1, 2, 3]);
  });

  it("bwd returning the wrong structure or type: an error naming the mismatch", () => {
    const bad = (bwd: (r: T, ct: T) => unknown[]) =>
      caught(() =>
        trace(
          (x: T) =>
            tx.grad((x: T) =>
              tx
                .customVjp((x: T) => x.sin(), { fwd: (x: T) => [x.sin(), x], bwd })(x)
                .sum(),
            )(x),
          [f32(3)],
        ),
      ).message;
    expect(bad((_r, ct) => [ct.sum()])).toMatch(
      /^customVjp: bwd returned the cotangent of args\[0\] as f32\[\], but the argument is f32\[3\] at /,
    );
    expect(bad((_r, ct) => [ct, ct])).toMatch(
      /^customVjp: bwd must return an array with one cotangent per argument \(1\), got an array of 2/,
    );
    expect(bad((_r, ct) => [{ a: ct }])).toMatch(
      /^customVjp: bwd returned a cotangent of structure \{"a":\*\} for argument 0, whose structure is \*/,
    );
    expect(
      caught(() =>
        trace(
          (x: T) => tx.customVjp((x: T) => x.sin(), { fwd: (x: T) => [x.sum(), x], bwd: (_r: T, c: T) => [c] })(x),
          [f32(3)],
        ),
      ).message,
    ).toMatch(/^customVjp: fwd returns out as f32\[\], but fn returns it as f32\[3\]/);
  });

  it("a differentiated value the functions close over is an error (pass it as an argument)", () => {
    const e = caught(() =>
      trace(
        (w: T, x: T) =>
          tx.grad((w: T) =>
            tx
              .customVjp((x: T) => x.mul(w), {
                fwd: (x: T) => [x.mul(w), null],
                bwd: (_r: null, ct: T) => [ct.mul(w)],
              })(x)
              .sum(),
          )(w),
        [f32(3), f32(3)],
      ),
    );
    expect(e.message).toMatch(
      /^customVjp: the function closes over a f32\[3\] value that is being differentiated; pass it as an operand/,
    );
  });
});

function lineOf(marker: string): number {
  const lines = readFileSync(new URL(import.meta.url), "utf8").split("\n");
  return lines.findIndex((l) => l.includes(marker) && !l.includes("lineOf(")) + 1;
}
