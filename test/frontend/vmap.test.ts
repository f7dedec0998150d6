// tx.vmap against a loop over examples: inAxes/outAxes, trees, control flow, grad of vmap, vmap of grad, jit, misuse.
import { execFile } from "node:child_process";
import { readFileSync } from "node:fs";
import { fileURLToPath } from "node:url";
import { describe, expect, it } from "vitest";
import { array, grad, jit, random, spec, trace, tx, TraceError, vmap } from "./api.ts";
import { interpret, type HostArray } from "../../src/ir/interpret.ts";
import { numel } from "../../src/ir/types.ts";
import { checkGrad } from "../passes/gradcheck.ts";
import { host, run, caught } from "./helpers.ts";

type T = tx.Tensor;
const HERE = "test/frontend/vmap.test.ts";

let seed = 1;
/** A host f32 array of deterministic pseudo-random values in [-1, 1]. */
function rand(...shape: number[]): HostArray {
  const n = numel(shape);
  const v = Array.from({ length: n }, (_, i) => Math.sin(seed * 12.9898 + i * 78.233) * 0.9);
  seed++;
  return host("f32", shape, v);
}

/** Example `b` of `h` along `axis` (the axis removed). */
function take(h: HostArray, axis: number, b: number): HostArray {
  const s = h.type.shape;
  const outer = numel(s.slice(0, axis)),
    n = s[axis]!,
    inner = numel(s.slice(axis + 1));
  const v: number[] = [];
  for (let o = 0; o < outer; o++) for (let i = 0; i < inner; i++) v.push(h.data[(o * n + b) * inner + i]!);
  return host(h.type.dtype, [...s.slice(0, axis), ...s.slice(axis + 1)], v);
}

/** `fn` run once per example (args split along `axes`, null: shared), each output's examples stacked on axis 0. */
function loop(fn: (...a: never[]) => unknown, args: HostArray[], axes: (number | null)[], size: number): number[][] {
  const per = Array.from({ length: size }, (_, b) =>
    run(
      fn,
      args.map((a, i) => (axes[i] === null ? a : take(a, axes[i]!, b))),
    ),
  );
  return per[0]!.map((_, j) => per.flatMap((p) => p[j]!));
}

function close(got: number[][], want: number[][], tol = 1e-5): void {
  expect(got.length).toBe(want.length);
  got.forEach((g, j) => {
    expect(g.length).toBe(want[j]!.length);
    g.forEach((v, k) => {
      expect(Math.abs(v - want[j]![k]!)).toBeLessThanOrEqual(tol * Math.max(1, Math.abs(want[j]![k]!)));
    });
  });
}

/** A two-layer MLP on one example x [4] with params p. */
const mlp = (p: { w1: T; w2: T }, x: T) => tx.tanh(x.matmul(p.w1)).matmul(p.w2);

describe("vmap", () => {
  it("maps a function over axis 0, params shared (inAxes [null, 0]), as a loop does", () => {
    const w1 = rand(4, 5),
      w2 = rand(5, 3),
      xs = rand(6, 4);
    const f = vmap(mlp, { inAxes: [null, 0] });
    const got = run((a: T, b: T, x: T) => f({ w1: a, w2: b }, x), [w1, w2, xs]);
    const want = loop((a: T, b: T, x: T) => mlp({ w1: a, w2: b }, x), [w1, w2, xs], [null, null, 0], 6);
    close(got, want);
    const { graph } = trace((a: T, b: T, x: T) => f({ w1: a, w2: b }, x), [w1.type, w2.type, xs.type]);
    expect(graph.outputs[0]!.type.shape).toEqual([6, 3]);
  });

  it("inAxes as tree prefixes, negative axes, and outAxes", () => {
    const xs = rand(3, 5), // mapped on axis 1
      ys = rand(3, 5); // mapped on axis -1 (1)
    const body = (t: { a: T; b: T }) => ({ s: t.a.mul(t.b).sum(), v: t.a.sub(t.b) });
    const f = vmap(body, { inAxes: [{ a: 1, b: -1 }], outAxes: { s: 0, v: 1 } });
    const got = run(
      (a: T, b: T) => {
        const r = f({ a, b });
        return [r.s, r.v];
      },
      [xs, ys],
    );
    const per = loop(
      (a: T, b: T) => {
        const r = body({ a, b });
        return [r.s, r.v];
      },
      [xs, ys],
      [1, 1],
      5,
    );
    // v comes back [3, 5] (batch axis at 1): the loop's [5, 3] transposed.
    const v = per[1]!;
    const vT = Array.from({ length: 15 }, (_, k) => v[(k % 5) * 3 + Math.floor(k / 5)]!);
    close(got, [per[0]!, vT]);
  });

  it("outAxes null for an output that does not depend on the mapped arguments; an unbatched output is broadcast", () => {
    const xs = rand(4, 3),
      w = rand(3);
    const f = vmap((x: T, w: T) => [x.mul(w).sum(), w.sum(), w.mul(2)], { inAxes: [0, null], outAxes: [0, null, 0] });
    const [a, b, c] = run((x: T, w: T) => f(x, w), [xs, w]);
    close(
      [a!],
      loop((x: T, w: T) => x.mul(w).sum(), [xs, w], [0, null], 4),
    );
    expect(b!.length).toBe(1);
    expect(c!.length).toBe(12);
    close([c!], [[...w.data, ...w.data, ...w.data, ...w.data].map((v) => v * 2)]);
  });

  it("vmap of vmap: a matrix-vector product built from a dot of vectors", () => {
    const m = rand(3, 4),
      n = rand(5, 4);
    const dot = (a: T, b: T) => a.mul(b).sum();
    const f = vmap(vmap(dot, { inAxes: [null, 0] }), { inAxes: [0, null] });
    const [got] = run((a: T, b: T) => f(a, b), [m, n]);
    const want: number[] = [];
    for (let i = 0; i < 3; i++)
      for (let j = 0; j < 5; j++) {
        let s = 0;
        for (let k = 0; k < 4; k++) s += m.data[i * 4 + k]! * n.data[j * 4 + k]!;
        want.push(s);
      }
    close([got!], [want]);
  });

  it("a batched cond predicate selects between both branches per example, as a loop does", () => {
    const xs = host("f32", [4, 3], [1, 2, 3, -1, -2, -3, 0.5, -0.5, 0, -4, 4, 1]);
    const body = (x: T) =>
      tx.cond(
        x.sum().gt(0),
        (v: T) => v.exp(),
        (v: T) => v.mul(-2),
        x,
      );
    const got = run((x: T) => vmap(body)(x), [xs]);
    close(got, loop(body, [xs], [0], 4));
    // With a shared predicate the cond stays a cond (only the taken branch runs).
    const { graph } = trace(
      (x: T, p: T) =>
        vmap((v: T) =>
          tx.cond(
            p,
            (u: T) => u.exp(),
            (u: T) => u,
            v,
          ),
        )(x),
      [xs.type, spec("bool", [])],
    );
    expect(graph.ops.some((o) => o.name === "cond")).toBe(true);
  });

  it("switch with a batched index picks per example (clamped)", () => {
    const idx = host("s32", [5], [0, 1, 2, 7, -3]);
    const xs = rand(5, 2);
    const body = (i: T, x: T) => tx.switchCase(i, [(v: T) => v.neg(), (v: T) => v.exp(), (v: T) => v.mul(v)], x);
    close(
      run((i: T, x: T) => vmap(body)(i, x), [idx, xs]),
      loop(body, [idx, xs], [0, 0], 5),
    );
  });

  it("a batched whileLoop predicate runs while any example's holds; each example stops at its own count", () => {
    const ns = host("s32", [4], [0, 3, 1, 5]);
    const body = (n: T) =>
      tx.whileLoop(
        ([i]: [T, T]) => i.lt(n),
        ([i, x]: [T, T]) => [i.add(1), x.mul(1.5)] as [T, T],
        [tx.constant(0, { dtype: "s32" }), tx.constant(1)] as [T, T],
      );
    const got = run((n: T) => vmap(body)(n), [ns]);
    expect(got[0]).toEqual([0, 3, 1, 5]);
    close([got[1]!], [[1, 1.5 ** 3, 1.5, 1.5 ** 5]]);
    close(got, loop(body, [ns], [0], 4));
  });

  it("scan, foriLoop and a closed-over tensor inside the mapped function", () => {
    const h0 = rand(3, 2),
      xs = rand(3, 5, 2),
      c = rand(2);
    const body = (h: T, x: T, c: T) => {
      const [hN, ys] = tx.scan(
        (h: T, xt: T) => {
          const n = tx.tanh(h.mul(c).add(xt));
          return [n, n.sum()];
        },
        h,
        x,
      );
      const k = tx.foriLoop(0, 3, (_i: T, a: T) => a.mul(c), hN);
      return [k, ys];
    };
    close(
      run((h: T, x: T, c: T) => vmap((h: T, x: T) => body(h, x, c))(h, x), [h0, xs, c]),
      loop(body, [h0, xs, c], [0, 0, null], 3),
    );
  });

  it("random: per-example keys give the loop's per-example samples", () => {
    const keys = host("u32", [3, 2], [1, 2, 3, 4, 5, 6]);
    const body = (k: T) => random.normal(k, [4]).add(random.uniform(random.foldIn(k, 7), [4]));
    close(
      run((k: T) => vmap(body)(k), [keys]),
      loop(body, [keys], [0], 3),
    );
  });

  it("random categorical, randint, permutation and choice: per-example keys give the loop's draws", () => {
    const keys = host("u32", [3, 2], [11, 2, 3, 40, 5, 6]);
    const logits = host("f32", [3, 5], [0.1, 2, -1, 0.5, 0, 1, 1, 1, 1, 1, -3, 0, 3, 0.2, 0.2]);
    const body = (k: T, l: T) => {
      const [a, b, c, d] = random.split(k, 4);
      return [
        random.categorical(a!, l.reshape([1, 5]).broadcastTo([6, 5])).astype("f32"),
        random.randint(b!, [4], -3, 9).astype("f32"),
        random.permutation(c!, 7).astype("f32"),
        random.choice(d!, l, [3], { replace: false }),
      ];
    };
    const got = run((k: T, l: T) => vmap(body)(k, l), [keys, logits]);
    close(got, loop(body, [keys, logits], [0, 0], 3), 0);
    // Not one draw repeated: the three examples' permutations differ.
    const perms = got[2]!;
    expect(new Set([0, 1, 2].map((i) => perms.slice(7 * i, 7 * i + 7).join())).size).toBeGreaterThan(1);
  });

  it("vmap of grad: per-example gradients equal a loop of grad", () => {
    const w = rand(4, 2),
      xs = rand(5, 4),
      ys = rand(5, 2);
    const loss = (w: T, x: T, y: T) => tx.tanh(x.matmul(w)).sub(y).square().sum();
    const perEx = vmap(grad(loss), { inAxes: [null, 0, 0] });
    const got = run((w: T, x: T, y: T) => perEx(w, x, y), [w, xs, ys]);
    close(got, loop(grad(loss), [w, xs, ys], [null, 0, 0], 5));
    const { graph } = trace((w: T, x: T, y: T) => perEx(w, x, y), [w.type, xs.type, ys.type]);
    expect(graph.outputs[0]!.type.shape).toEqual([5, 4, 2]);
  });

  it("grad of vmap: the gradient of a summed batched loss is the sum of per-example gradients, and matches finite differences", () => {
    const w = rand(4, 2),
      xs = rand(5, 4),
      ys = rand(5, 2);
    const loss = (w: T, x: T, y: T) => tx.tanh(x.matmul(w)).sub(y).square().sum();
    const total = (w: T, x: T, y: T) => vmap(loss, { inAxes: [null, 0, 0] })(w, x, y).sum();
    const [got] = run((w: T, x: T, y: T) => grad(total)(w, x, y), [w, xs, ys]);
    const per = loop(grad(loss), [w, xs, ys], [null, 0, 0], 5)[0]!;
    const summed = Array.from({ length: 8 }, (_, k) => per.reduce((s, _v, i) => (i % 8 === k ? s + per[i]! : s), 0));
    close([got!], [summed]);
    // Gradients through the batching rules of control flow (a batched cond, a scan) against finite differences.
    const g = trace(
      (w: T, x: T) =>
        vmap((x: T) => {
          const [h] = tx.scan(
            (h: T, xt: T) => [tx.tanh(h.mul(w.sum()).add(xt)), null],
            x.slice([0, 2]),
            x.reshape([2, 2]),
          );
          return tx
            .cond(
              h.sum().gt(0),
              (v: T) => v.exp(),
              (v: T) => v.square(),
              h,
            )
            .sum();
        })(x).sum(),
      [w.type, xs.type],
    ).graph;
    checkGrad(g, [w, xs]);
  });

  it("per-example gradients of an embedding table (a batched scatter into a shared table) equal a loop of grad", () => {
    const table = rand(6, 3);
    const ids = host("s32", [4, 2], [0, 5, 2, 2, 5, 1, 3, 0]);
    const loss = (t: T, i: T) => tx.tanh(tx.nn.embedding(t, i)).sum();
    const got = run((t: T, i: T) => vmap(grad(loss), { inAxes: [null, 0] })(t, i), [table, ids]);
    close(got, loop(grad(loss), [table, ids], [null, 0], 4));
  });

  it("axisSize gives the batch size when nothing is mapped; it must agree with the mapped axes", () => {
    const w = rand(3);
    const [got] = run((w: T) => vmap((w: T) => w.mul(2), { inAxes: null, axisSize: 2 })(w), [w]);
    close([got!], [[...w.data, ...w.data].map((v) => v * 2)]);
    const e = caught(() => trace((x: T) => vmap((u: T) => u, { axisSize: 4 })(x), [spec("f32", [3])]));
    expect(e.message).toContain("vmap: mapped axes differ in size: axisSize is 4, but argument u has size 3 on axis 0");
  });

  it("customVjp inside vmap: forward runs fn, grad of the batched function uses bwd", () => {
    const xs = rand(3, 4);
    // bwd deliberately returns 3 * ct (not the true derivative 2x) so that using it is visible.
    const f = tx.customVjp((x: T) => x.square(), {
      fwd: (x: T) => [x.square(), x],
      bwd: (_x: T, ct: T) => [ct.mul(3)],
    });
    const [fwd] = run((x: T) => vmap(f)(x), [xs]);
    close([fwd!], [Array.from(xs.data, (v) => v * v)]);
    const [g] = run((x: T) => grad((x: T) => vmap(f)(x).sum())(x), [xs]);
    close([g!], [Array.from(xs.data, () => 3)]);
  });

  it("jit(vmap) and vmap called eagerly on device arrays run on PJRT and agree with the interpreter", async () => {
    const w1 = rand(4, 5),
      w2 = rand(5, 3),
      xs = rand(6, 4);
    const f = jit((p: { w1: T; w2: T }, x: T) => vmap(mlp, { inAxes: [null, 0] })(p, x));
    const dev = (h: HostArray) => array(Float32Array.from(h.data), { shape: [...h.type.shape] });
    const out = await f({ w1: dev(w1), w2: dev(w2) }, dev(xs));
    const want = loop((a: T, b: T, x: T) => mlp({ w1: a, w2: b }, x), [w1, w2, xs], [null, null, 0], 6);
    close([Array.from(await out.toArray())], want);
    const eager = vmap((x: T) => x.mul(x).sum());
    const r = await (eager(dev(xs) as never) as unknown as Promise<tx.DeviceArray>);
    close(
      [Array.from(await r.toArray())],
      loop((x: T) => x.mul(x).sum(), [xs], [0], 6),
    );
    // The interpreter on the same graph agrees with PJRT.
    const { graph } = trace(
      (p: { w1: T; w2: T }, x: T) => vmap(mlp, { inAxes: [null, 0] })(p, x),
      [{ w1: w1.type, w2: w2.type }, xs.type],
    );
    close([Array.from(interpret(graph, [w1, w2, xs])[0]!.data)], [Array.from(await out.toArray())], 1e-5);
  });
});

it("examples/vmap.ts prints what the README shows", async () => {
  const root = fileURLToPath(new URL("../../", import.meta.url));
  const stdout = await new Promise<string>((resolve, reject) => {
    execFile(process.execPath, ["--import", "tsx", "examples/vmap.ts"], { cwd: root }, (err, out) =>
      err ? reject(err) : resolve(out),
    );
  });
  const readme = readFileSync(`${root}README.md`, "utf8");
  const block = /\$ npx tsx examples\/vmap\.ts\n([^`]*)```/.exec(readme);
  expect(block).not.toBeNull();
  expect(stdout).toBe(block![1]);
});

describe("vmap misuse: a TraceError at the user's line naming the argument and axis", () => {
  const x = spec("f32", [3, 4]);
  const y = spec("f32", [5, 4]);

  it("an inAxes axis out of range for the argument's rank", () => {
    const e = caught(() => trace((a: T, b: T) => vmap((u: T, v: T) => u.add(v), { inAxes: [0, 2] })(a, b), [x, x]));
    expect(e).toBeInstanceOf(TraceError);
    expect(e.message).toContain("vmap: inAxes gives axis 2 for argument v, out of range for its f32[3,4] (rank 2)");
    expect(e.message).toContain(`at ${HERE}:`);
    const neg = caught(() => trace((a: T) => vmap((u: T) => u, { inAxes: -3 })(a), [x]));
    expect(neg.message).toContain("inAxes gives axis -3 for argument u, out of range");
  });

  it("mapped axes of different sizes name both arguments and axes", () => {
    const e = caught(() => trace((a: T, b: T) => vmap((u: T, v: T) => u.add(v))(a, b), [x, y]));
    expect(e.message).toContain(
      "vmap: mapped axes differ in size: argument u has size 3 on axis 0, but argument v has size 5 on axis 0",
    );
    expect(e.message).toContain(`at ${HERE}:`);
    const tree = caught(() =>
      trace((a: T, b: T) => vmap((p: { a: T; b: T }) => p.a, { inAxes: [{ a: 1, b: 0 }] })({ a, b }), [x, y]),
    );
    expect(tree.message).toContain("argument p.a has size 4 on axis 1, but argument p.b has size 5 on axis 0");
  });

  it("inAxes of the wrong length or structure, a non-tensor argument, nothing mapped", () => {
    expect(caught(() => trace((a: T) => vmap((u: T) => u, { inAxes: [0, 0] })(a), [x])).message).toContain(
      "vmap: inAxes has 2 entries, but the function got 1 arguments; give one per argument",
    );
    expect(
      caught(() => trace((a: T) => vmap((p: { u: T }) => p.u, { inAxes: [{ w: 0 }] })({ u: a }), [x])).message,
    ).toContain("inAxes[0] names w, which p does not have");
    expect(caught(() => trace((a: T) => vmap((u: T, _n: number) => u)(a, 3 as never), [x])).message).toContain(
      "vmap: argument _n is number 3, not a Tensor",
    );
    expect(caught(() => trace((a: T) => vmap((u: T) => u, { inAxes: null })(a), [x])).message).toContain(
      "no argument is mapped (every inAxes entry is null); give axisSize for the batch size",
    );
  });

  it("outAxes null for a batched output, and an outAxes axis out of range", () => {
    expect(caught(() => trace((a: T) => vmap((u: T) => u.sum(), { outAxes: null })(a), [x])).message).toContain(
      "vmap: outAxes is null for the output, but it depends on a mapped argument (it is batched); give it an axis",
    );
    const e = caught(() => trace((a: T) => vmap((u: T) => [u, u.sum()], { outAxes: [0, 1] })(a), [x]));
    expect(e.message).toContain("outAxes gives axis 1 for output [1], out of range for its batched rank 1");
    expect(e.message).toContain(`at ${HERE}:`);
  });
});
