// tril/triu, cumsum/cumprod, argmin, var/std, sort/argsort/topK and random.randint/permutation/choice: values against
// plain-JS references in the interpreter and on PJRT CPU, gradients against finite differences, vmap against a loop.
import { describe, expect, it } from "vitest";
import { array, jit, random, spec, trace, tx, TraceError, vmap } from "./api.ts";
import { checkGrad } from "../passes/gradcheck.ts";
import { host, run, caught } from "./helpers.ts";

type T = tx.Tensor;

// A 3x4 matrix with distinct values at least 0.25 apart (finite differences never swap two of them), a tie-free
// order that is not the index order, and negative entries.
const M = [0.5, -1.25, 2, 0.75, -0.5, 1.5, -2, 3.25, 1, -0.25, 2.5, -1.75];
const m = () => host("f32", [3, 4], M);
const f32 = (xs: number[]) => xs.map(Math.fround);
const rows = (xs: number[], n: number) => Array.from({ length: xs.length / n }, (_, i) => xs.slice(i * n, i * n + n));

/** Per-row references, as numpy computes them. */
const ref = {
  tril: (k: number) => M.map((v, i) => ((i % 4) - Math.floor(i / 4) <= k ? v : 0)),
  triu: (k: number) => M.map((v, i) => ((i % 4) - Math.floor(i / 4) >= k ? v : 0)),
  cumsum1: () => rows(M, 4).flatMap((r) => r.map((_, j) => r.slice(0, j + 1).reduce((a, b) => a + b, 0))),
  cumprod0: () => M.map((_, i) => M.filter((_, k) => k % 4 === i % 4 && k <= i).reduce((a, b) => a * b, 1)),
  argmin1: () => rows(M, 4).map((r) => r.indexOf(Math.min(...r))),
  var1: (ddof: number) =>
    rows(M, 4).map((r) => {
      const mu = r.reduce((a, b) => a + b, 0) / r.length;
      return r.reduce((a, b) => a + (b - mu) ** 2, 0) / (r.length - ddof);
    }),
  sort1: () => rows(M, 4).flatMap((r) => [...r].sort((a, b) => a - b)),
  argsort0: () => {
    const out = new Array<number>(12);
    for (let c = 0; c < 4; c++) {
      const col = [0, 1, 2].sort((a, b) => M[a * 4 + c]! - M[b * 4 + c]!);
      col.forEach((r, i) => {
        out[i * 4 + c] = r;
      });
    }
    return out;
  },
};

const close = (got: readonly number[], want: readonly number[], tol = 1e-5) => {
  expect(got.length).toBe(want.length);
  got.forEach((v, i) => {
    expect(Math.abs(v - want[i]!), `[${i}]: ${v} vs ${want[i]}`).toBeLessThanOrEqual(tol * (1 + Math.abs(want[i]!)));
  });
};

/** Every op of this file on one matrix: the outputs the interpreter and PJRT must both produce. */
const all = (x: T) => [
  tx.tril(x),
  tx.triu(x, 1),
  tx.tril(x, -1),
  x.cumsum(1),
  tx.cumprod(x, 0),
  x.argmin(1),
  tx.argmin(x, 0),
  tx.var(x, 1),
  x.std(1, { ddof: 1 }),
  tx.std(x),
  x.sort(),
  tx.argsort(x, 0),
  ...tx.topK(x, 2),
  tx.sort(x, 1, { descending: true }),
];

describe("values against plain-JS references (interpreter)", () => {
  const out = run(all, [m()]);
  it("tril/triu with k", () => {
    expect(out[0]).toEqual(f32(ref.tril(0)));
    expect(out[1]).toEqual(f32(ref.triu(1)));
    expect(out[2]).toEqual(f32(ref.tril(-1)));
  });
  it("cumsum and cumprod along either axis, or flattened without one", () => {
    close(out[3]!, ref.cumsum1());
    close(out[4]!, ref.cumprod0());
    const [flat, prod] = run((x: T) => [x.cumsum(), tx.cumprod(x.slice([0, 2]))], [m()]);
    close(
      flat!,
      M.map((_, i) => M.slice(0, i + 1).reduce((a, b) => a + b, 0)),
    );
    close(
      prod!,
      M.slice(0, 8).map((_, i) => M.slice(0, i + 1).reduce((a, b) => a * b, 1)),
    );
  });
  it("argmin is the first minimum, s32", () => {
    expect(out[5]).toEqual(ref.argmin1());
    expect(out[6]).toEqual([1, 0, 1, 2]);
    expect(run((x: T) => x.argmin(), [host("s32", [5], [3, 1, 4, 1, 5])])[0]).toEqual([1]);
  });
  it("var and std with ddof, over one axis and over all", () => {
    close(out[7]!, ref.var1(0));
    close(out[8]!, ref.var1(1).map(Math.sqrt));
    const mu = M.reduce((a, b) => a + b, 0) / 12;
    close(out[9]!, [Math.sqrt(M.reduce((a, b) => a + (b - mu) ** 2, 0) / 12)]);
  });
  it("sort, argsort, topK and descending sort", () => {
    expect(out[10]).toEqual(f32(ref.sort1()));
    expect(out[11]).toEqual(ref.argsort0());
    const desc = rows(M, 4).map((r) => [...r].sort((a, b) => b - a));
    expect(out[12]).toEqual(f32(desc.flatMap((r) => r.slice(0, 2))));
    expect(out[13]).toEqual(rows(M, 4).flatMap((r, i) => desc[i]!.slice(0, 2).map((v) => r.indexOf(v))));
    expect(out[14]).toEqual(f32(desc.flat()));
  });
  it("sort is stable, NaNs sort last, -0 before +0, and ints sort as ints", () => {
    const [s, a] = run((x: T) => [x.sort(), x.argsort()], [host("f32", [6], [2, NaN, -0, 0, -Infinity, 2])]);
    expect(s!.slice(0, 5)).toEqual([-Infinity, -0, 0, 2, 2]);
    expect(Object.is(s![1], -0)).toBe(true);
    expect(s![5]).toBeNaN();
    expect(a).toEqual([4, 2, 3, 0, 5, 1]);
    const [v, i] = run((x: T) => tx.topK(x, 3), [host("s32", [5], [1, 7, 7, -3, 7])]);
    expect(v).toEqual([7, 7, 7]);
    expect(i).toEqual([1, 2, 4]);
  });
  it("types: argmin/argsort/topK indices are s32, var of ints is f32", () => {
    const { graph } = trace((x: T) => [x.argmin(0), x.argsort(), tx.topK(x, 1)[1], tx.var(x)], [spec("s32", [3, 4])]);
    expect(graph.outputs.map((o) => o.type.dtype)).toEqual(["s32", "s32", "s32", "f32"]);
  });
  it("misuse names the op", () => {
    expect(caught(() => trace((x: T) => tx.tril(x), [spec("f32", [4])])).message).toMatch(/tril.*rank >= 2/);
    expect(caught(() => trace((x: T) => tx.topK(x, 5), [spec("f32", [2, 4])])).message).toMatch(/topK.*k must be/);
    expect(caught(() => trace((x: T) => x.sort(2), [spec("f32", [2, 4])]))).toBeInstanceOf(TraceError);
  });
});

describe("on PJRT CPU", () => {
  it("every op compiles through XLA (stablehlo.sort with its comparator) and equals the interpreter", async () => {
    const want = run(all, [m()]);
    const got = await jit(all)(array(M, { shape: [3, 4] }));
    for (let k = 0; k < want.length; k++) close(Array.from(await got[k]!.toArray()), want[k]!);
    // Ties and NaN in XLA's total order, as the interpreter.
    const ties = (x: T) => [x.sort(), x.argsort(), ...tx.topK(x, 2)];
    const xs = [2, NaN, -0, 0, -Infinity, 2];
    const w = run(ties, [host("f32", [6], xs)]);
    const g = await jit(ties)(array(xs));
    for (let k = 0; k < w.length; k++) expect(Array.from(await g[k]!.toArray())).toEqual(w[k]);
  });
});

describe("eagerly, on device arrays", () => {
  it("run at once as methods and functions, random ops included", async () => {
    const vals = async (a: T) => Array.from(await a.toArray());
    const x = array([3, -1, 2, 0.5]);
    expect(await vals(x.sort())).toEqual([-1, 0.5, 2, 3]);
    expect(await vals(x.argsort())).toEqual([1, 3, 2, 0]);
    expect(await vals(x.cumsum(0))).toEqual([3, 2, 4, 4.5]);
    expect(await vals(x.argmin())).toEqual([1]);
    const [v, i] = tx.topK(x, 2);
    expect([await vals(v!), await vals(i!)]).toEqual([
      [3, 2],
      [0, 2],
    ]);
    const p = await vals(random.permutation(random.keyArray(0), 6));
    expect([...p].sort()).toEqual([0, 1, 2, 3, 4, 5]);
  });
});

describe("gradients against finite differences", () => {
  const cases: [string, (x: T) => T][] = [
    ["cumsum", (x) => x.cumsum(1)],
    ["cumprod", (x) => tx.cumprod(x, 0)],
    ["var", (x) => tx.var(x, 0, { ddof: 1 })],
    ["std", (x) => x.std(1)],
    ["sort", (x) => x.sort(0)],
    ["sort descending", (x) => tx.sort(x, 1, { descending: true })],
    ["topK values", (x) => tx.topK(x, 2)[0]],
    ["tril", (x) => tx.tril(x, 1)],
  ];
  it.each(cases)("%s", (_name, f) => {
    checkGrad(trace(f, [spec("f32", [3, 4])]).graph, [m()]);
  });
  it("values sorted along with a key get the key's permutation", () => {
    // Sorting y by x: d/dy is the permutation; x gets no gradient through y's order.
    const g = trace(
      (x: T, y: T) => tx.takeAlongAxis(y, x.argsort(1), 1).mul(x.sort(1)),
      [spec("f32", [3, 4]), spec("f32", [3, 4])],
    ).graph;
    checkGrad(g, [
      m(),
      host(
        "f32",
        [3, 4],
        M.map((v) => v * 0.5 + 1),
      ),
    ]);
  });
});

describe("vmap", () => {
  it("vmap of sort, argsort and topK equals a loop over examples", () => {
    const f = (x: T) => [x.sort(0), x.argsort(-1), tx.topK(x, 2)[1]];
    const batched = run((xs: T) => vmap(f)(xs), [m()]);
    const loop = rows(M, 4).map((r) => run(f, [host("f32", [4], r)]));
    for (let k = 0; k < 3; k++) expect(batched[k]).toEqual(loop.flatMap((o) => o[k]!));
  });
});

describe("random.randint, permutation, choice", () => {
  const draw = (f: (k: T) => T | T[]) => run(() => f(random.key(42)), []);
  it("randint: s32 in [minval, maxval), every value hit, seeded and reproducible", () => {
    const [a] = draw((k) => random.randint(k, [2000], -3, 5));
    const { graph } = trace(() => random.randint(random.key(0), [2], 0, 10), []);
    expect(graph.outputs[0]!.type.dtype).toBe("s32");
    expect(Math.min(...a!)).toBe(-3);
    expect(Math.max(...a!)).toBe(4);
    const counts = new Map<number, number>();
    for (const v of a!) counts.set(v, (counts.get(v) ?? 0) + 1);
    expect(counts.size).toBe(8);
    for (const c of counts.values()) expect(Math.abs(c - 250)).toBeLessThan(80);
    expect(draw((k) => random.randint(k, [2000], -3, 5))[0]).toEqual(a);
    expect(draw((k) => random.randint(k, [4], 7, 7))[0]).toEqual([7, 7, 7, 7]);
    const [u] = draw((k) => random.randint(k, [500], 2 ** 32 - 10, 2 ** 32 - 1, "u32"));
    expect(Math.min(...u!)).toBe(2 ** 32 - 10);
    expect(Math.max(...u!)).toBe(2 ** 32 - 2);
    const wide = draw((k) => random.randint(k, [500], -(2 ** 31), 2 ** 31 - 1))[0]!;
    expect(wide.some((v) => v < -(2 ** 30)) && wide.some((v) => v > 2 ** 30)).toBe(true);
  });
  it("permutation of n and of a tensor's rows is a permutation, seeded", () => {
    const [p] = draw((k) => random.permutation(k, 50));
    expect([...p!].sort((a, b) => a - b)).toEqual(Array.from({ length: 50 }, (_, i) => i));
    expect(p).not.toEqual(Array.from({ length: 50 }, (_, i) => i));
    expect(draw((k) => random.permutation(k, 50))[0]).toEqual(p);
    expect(run(() => random.permutation(random.key(43), 50), [])[0]).not.toEqual(p);
    const [rowsOut] = run((x: T) => random.permutation(random.key(1), x), [m()]);
    const got = rows(rowsOut!, 4).map((r) => r.join());
    expect([...got].sort()).toEqual(
      rows(f32(M), 4)
        .map((r) => r.join())
        .sort(),
    );
  });
  it("choice with replacement, without, and with p", () => {
    const [w] = draw((k) => random.choice(k, 5, [400]));
    expect(new Set(w).size).toBe(5);
    expect(w!.every((v) => v >= 0 && v < 5)).toBe(true);
    const [wo] = draw((k) => random.choice(k, 10, [2, 5], { replace: false }));
    expect([...wo!].sort((a, b) => a - b)).toEqual(Array.from({ length: 10 }, (_, i) => i));
    // p: index 1 never drawn (p = 0), index 3 about 70%.
    const p = [0.1, 0, 0.2, 0.7];
    const [wp] = run((q: T) => random.choice(random.key(5), 4, [2000], { p: q }), [host("f32", [4], p)]);
    expect(wp!.includes(1)).toBe(false);
    const share = wp!.filter((v) => v === 3).length / 2000;
    expect(Math.abs(share - 0.7)).toBeLessThan(0.05);
    const [np] = run((q: T) => random.choice(random.key(5), 4, [3], { p: q, replace: false }), [host("f32", [4], p)]);
    expect(new Set(np).size).toBe(3);
    expect(np!.includes(1)).toBe(false);
    const [fromRows] = run((x: T) => random.choice(random.key(2), x, [2], { replace: false }), [m()]);
    expect(fromRows!.length).toBe(8);
    expect(caught(() => trace(() => random.choice(random.key(0), 3, [4], { replace: false }), [])).message).toMatch(
      /without replacement/,
    );
  });
  it("run on PJRT CPU with the interpreter's draws", async () => {
    const f = (k: T) => [
      random.randint(k, [64], 0, 1000),
      random.randint(k, [64], -(2 ** 31), 2 ** 31 - 1),
      random.randint(k, [64], 7, 2 ** 32 - 1, "u32"),
      random.permutation(k, 20),
      random.choice(k, 9, [4]),
      random.choice(k, 9, [4], { replace: false, p: tx.full([9], 1 / 9) }),
    ];
    const want = run(f, [host("u32", [2], [0, 3])]);
    const got = await jit(f)(random.keyArray(3));
    for (let k = 0; k < want.length; k++) expect(Array.from(await got[k]!.toArray())).toEqual(want[k]);
  });
});
