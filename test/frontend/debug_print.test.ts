// tx.debug.print: exact text under jit, scan, grad, vmap, cond/switch, checkpoint, eager and disableJit; misuse errors.
import { readFileSync } from "node:fs";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { array, disableJit, evalShape, jit, spec, trace, tx, TraceError } from "./api.ts";
import { formatArray } from "../../src/frontend/debug_format.ts";
import { caught } from "./helpers.ts";

type T = tx.Tensor;
const HERE = "test/frontend/debug_print.test.ts";

let lines: string[] = [];
beforeEach(() => {
  lines = [];
  tx.debug.setSink((text) => {
    lines.push(text);
  });
});
afterEach(() => tx.debug.setSink(undefined));

/** What was printed so far, as one string of lines. */
const printed = () => lines.join("");

function lineOf(marker: string): number {
  const src = readFileSync(new URL(import.meta.url), "utf8").split("\n");
  return src.findIndex((l) => l.includes(marker) && !l.includes("lineOf(")) + 1;
}

async function values(d: unknown): Promise<number[]> {
  return Array.from(await (d as tx.DeviceArray).toArray());
}

describe("formatting as numpy's str()", () => {
  // Each expected string is what numpy 2.4.6 printed for the same float32/int32/bool array.
  const cases: [string, number[], number[], string][] = [
    ["f32", [0.5], [], "0.5"],
    ["f32", [1], [], "1.0"],
    ["f32", [1e-5], [], "1e-05"],
    ["f32", [12345678], [], "1.2345678e+07"],
    ["f32", [1 / 3], [], "0.33333334"],
    ["s32", [-3], [], "-3"],
    ["bool", [1], [], "True"],
    ["f32", [0.5, 1.25, 3], [3], "[0.5  1.25 3.  ]"],
    ["f32", [-0.5, 1.25, Number.NaN], [3], "[-0.5   1.25   nan]"],
    ["f32", [1e-5, 1, 3], [3], "[1.e-05 1.e+00 3.e+00]"],
    ["f32", [1.5, Number.POSITIVE_INFINITY, Number.NEGATIVE_INFINITY], [3], "[ 1.5  inf -inf]"],
    ["s32", [-2, -1, 0, 1, 2, 3], [2, 3], "[[-2 -1  0]\n [ 1  2  3]]"],
    ["bool", [1, 0], [2], "[ True False]"],
    [
      "f32",
      Array.from({ length: 12 }, (_, i) => i / 3),
      [12],
      "[0.         0.33333334 0.6666667  1.         1.3333334  1.6666666\n 2.         2.3333333  2.6666667  3.         3.3333333  3.6666667 ]",
    ],
    ["s32", Array.from({ length: 2000 }, (_, i) => i), [2000], "[   0    1    2 ... 1997 1998 1999]"],
    ["f32", [1, 2, 3, 4], [2, 1, 2], "[[[1. 2.]]\n\n [[3. 4.]]]"],
  ];
  it.each(cases)("%s %j as shape %j", (dtype, data, shape, want) => {
    expect(formatArray(dtype as "f32", Float32Array.from(data), shape)).toBe(want);
  });
});

describe("under jit", () => {
  it("prints each time the compiled step runs, values as numpy writes them", async () => {
    const f = jit((x: T) => {
      tx.debug.print("x {} sum {} n {}", x, x.sum(), 3);
      return x.mul(2);
    });
    const a = array([0.5, 1.25, 3]);
    expect(await values(await f(a))).toEqual([1, 2.5, 6]);
    expect(printed()).toBe("x [0.5  1.25 3.  ] sum 4.75 n 3\n");
    await f(array([1, 2, 3]));
    expect(printed()).toBe("x [0.5  1.25 3.  ] sum 4.75 n 3\nx [1. 2. 3.] sum 6.0 n 3\n");
    expect(f.cacheSize).toBe(1);
  });

  it("prints values nothing else uses (no DCE), in program order, with {0} and {name} fields", async () => {
    const f = jit((x: T, i: T) => {
      tx.debug.print("second {1}, first {0}", x.mul(10), i);
      tx.debug.print("{{literal}} {n} of {total}", { n: i.add(1), total: 4 });
      return x;
    });
    await f(array([2]), array(1, { dtype: "s32" }));
    expect(printed()).toBe("second 1, first [20.]\n{literal} 2 of 4\n");
  });

  it("prints from a program laid out over 8 devices (SPMD)", async () => {
    const f = jit(
      (x: T) => {
        tx.debug.print("x {} sum {}", x, x.sum());
        return x.mul(2);
      },
      { mesh: tx.mesh({ d: 8 }), in: [tx.P("d")] },
    );
    const out = await f(array([1, 2, 3, 4, 5, 6, 7, 8]));
    expect(await values(out)).toEqual([2, 4, 6, 8, 10, 12, 14, 16]);
    expect(printed()).toBe("x [1. 2. 3. 4. 5. 6. 7. 8.] sum 36.0\n");
  });

  it("keeps the values as outputs after the function's own, named in the IR", () => {
    const fn = (x: T) => {
      tx.debug.print("{}", x.sum());
      return x.exp();
    };
    const t = trace(fn, [spec("f32", [2])]);
    expect(t.graph.outputs.length).toBe(2);
    expect(t.graph.outputNames).toEqual(["out", "debug.print#0"]);
    expect(evalShape(fn, spec("f32", [2]))).toEqual(spec("f32", [2]));
  });
});

describe("inside scan and foriLoop", () => {
  it("prints once per iteration, in iteration order", async () => {
    const f = jit((xs: T) =>
      tx.scan(
        (c: T, x: T) => {
          tx.debug.print("c {} x {}", c, x);
          return [c.add(x), c];
        },
        tx.zeros([]),
        xs,
      ),
    );
    const [c] = await f(array([1, 2, 3]));
    expect(await values(c)).toEqual([6]);
    expect(printed()).toBe("c 0.0 x 1.0\nc 1.0 x 2.0\nc 3.0 x 3.0\n");
  });

  it("walks a reverse scan from the last slice, and nests", async () => {
    const f = jit((xs: T) =>
      tx.scan(
        (c: T, row: T) => {
          tx.debug.print("row {}", row);
          const [inner] = tx.scan(
            (s: T, v: T) => {
              tx.debug.print("  v {}", v);
              return [s.add(v), null];
            },
            tx.zeros([]),
            row,
          );
          return [c.add(inner), null];
        },
        tx.zeros([]),
        xs,
        { reverse: true },
      ),
    );
    await f(array([1, 2, 3, 4], { shape: [2, 2] }));
    expect(printed()).toBe("row [3. 4.]\n  v 3.0\n  v 4.0\nrow [1. 2.]\n  v 1.0\n  v 2.0\n");
  });

  it("prints each foriLoop step with number bounds", async () => {
    const f = jit((x: T) =>
      tx.foriLoop(
        1,
        4,
        (i: T, c: T) => {
          tx.debug.print("i={} c={}", i, c);
          return c.mul(2);
        },
        x,
      ),
    );
    expect(await values(await f(array(1)))).toEqual([8]);
    expect(printed()).toBe("i=1 c=1.0\ni=2 c=2.0\ni=3 c=4.0\n");
  });
});

describe("under grad", () => {
  const loss = (w: T, x: T) => {
    const y = w.mul(x);
    tx.debug.print("y {}", y);
    return y.mul(y).sum();
  };
  const plain = (w: T, x: T) => w.mul(x).mul(w.mul(x)).sum();

  it("prints the primal once and leaves the gradient unchanged", async () => {
    const w = array([1, -2]);
    const x = array([3, 0.5]);
    const g = await jit(tx.grad(loss))(w, x);
    expect(printed()).toBe("y [ 3. -1.]\n");
    expect(await values(g)).toEqual(await values(await jit(tx.grad(plain))(w, x)));
    expect(await values(g)).toEqual([18, -1]);
  });

  it("keeps aux and gradients in place with hasAux, and prints a donated input's old value", async () => {
    const step = jit(
      (w: T, x: T) => {
        const [[l, aux], g] = tx.valueAndGrad(
          (p: T) => {
            tx.debug.print("w {}", p);
            return [p.mul(x).sum(), p.add(100)];
          },
          { hasAux: true },
        )(w);
        return { w: w.sub(g), l, aux };
      },
      { donate: 0 },
    );
    const out = (await step(array([1, 2]), array([3, 4]))) as unknown as Record<string, tx.DeviceArray>;
    expect(printed()).toBe("w [1. 2.]\n");
    expect(await values(out.w)).toEqual([-2, -2]);
    expect(await values(out.l)).toEqual([11]);
    expect(await values(out.aux)).toEqual([101, 102]);
  });

  it("differentiates through a cond that prints, and composes with vmap (per-example gradients)", async () => {
    const f = (x: T) =>
      tx.cond(
        x.gt(0),
        (a: T) => {
          tx.debug.print("square {}", a);
          return a.mul(a);
        },
        (a: T) => a.mul(-3),
        x,
      );
    const g = jit(tx.vmap(tx.grad(f)));
    expect(await values(await g(array([2, -1, 0.5])))).toEqual([4, -3, 1]);
    expect(printed()).toBe("square 2.0\nsquare 0.5\n");
  });

  it("prints once per step of a scanned loss, and inside a checkpoint", async () => {
    const f = jit(
      tx.grad((w: T, xs: T) => {
        const [acc] = tx.scan(
          (c: T, x: T) => {
            const y = tx.checkpoint((a: T) => {
              tx.debug.print("in checkpoint {}", a);
              return a.sin();
            })(w.mul(x));
            return [c.add(y), null];
          },
          tx.zeros([]),
          xs,
        );
        return acc;
      }),
    );
    const g = await f(array(2), array([0, 1]));
    expect(printed()).toBe("in checkpoint 0.0\nin checkpoint 2.0\n");
    expect((await values(g))[0]).toBeCloseTo(0 + Math.cos(2), 5);
  });
});

describe("under vmap", () => {
  it("prints once per example, unbatched values too", async () => {
    const f = jit(
      tx.vmap(
        (x: T, s: T) => {
          tx.debug.print("x {} s {}", x, s);
          return x.mul(s);
        },
        { inAxes: [0, null] },
      ),
    );
    const out = await f(array([1, 2, 3, 4], { shape: [2, 2] }), array(10));
    expect(await values(out)).toEqual([10, 20, 30, 40]);
    expect(printed()).toBe("x [1. 2.] s 10.0\nx [3. 4.] s 10.0\n");
  });

  it("prints every example of a scan iteration before the next iteration, as JAX does", async () => {
    const f = jit(
      tx.vmap((xs: T) =>
        tx.scan(
          (c: T, x: T) => {
            tx.debug.print("c {} x {}", c, x);
            return [c.add(x), null];
          },
          tx.zeros([]),
          xs,
        ),
      ),
    );
    await f(array([1, 2, 3, 10, 20, 30], { shape: [2, 3] }));
    // What jax.jit(jax.vmap(g)) printed for the same scan (jax 0.10.2).
    expect(printed()).toBe("c 0.0 x 1.0\nc 0.0 x 10.0\nc 1.0 x 2.0\nc 10.0 x 20.0\nc 3.0 x 3.0\nc 30.0 x 30.0\n");
  });

  it("prints nested vmaps example by example, row-major", async () => {
    const f = jit(
      tx.vmap(
        tx.vmap((x: T) => {
          tx.debug.print("v {}", x);
          return x;
        }),
      ),
    );
    await f(array([1, 2, 3, 4], { shape: [2, 2] }));
    expect(printed()).toBe("v 1.0\nv 2.0\nv 3.0\nv 4.0\n");
  });

  it("prints from the branch each example takes when a batched cond runs both", async () => {
    const f = jit(
      tx.vmap((x: T) =>
        tx.cond(
          x.gt(0),
          (a: T) => {
            tx.debug.print("pos {}", a);
            return a;
          },
          (a: T) => {
            tx.debug.print("neg {}", a);
            return a.neg();
          },
          x,
        ),
      ),
    );
    expect(await values(await f(array([1, -2, 3])))).toEqual([1, 2, 3]);
    expect(printed()).toBe("pos 1.0\nneg -2.0\npos 3.0\n");
  });
});

describe("cond and switch", () => {
  it("prints only from the branch taken, per iteration inside a scan", async () => {
    const f = jit((xs: T) =>
      tx.scan(
        (c: T, x: T) => {
          const y = tx.cond(
            x.gt(1),
            (a: T) => {
              tx.debug.print("big {}", a);
              return a.mul(2);
            },
            (a: T) => a,
            x,
          );
          return [c.add(y), null];
        },
        tx.zeros([]),
        xs,
      ),
    );
    const [c] = await f(array([1, 2, 0, 3]));
    expect(await values(c)).toEqual([11]);
    expect(printed()).toBe("big 2.0\nbig 3.0\n");
  });

  it("follows switch's clamped index", async () => {
    const f = jit((i: T, x: T) =>
      tx.switchCase(
        i,
        [0, 1, 2].map((k) => (a: T) => {
          tx.debug.print("branch {} of {}", k, a);
          return a.add(k);
        }),
        x,
      ),
    );
    await f(array(1, { dtype: "s32" }), array(5));
    await f(array(7, { dtype: "s32" }), array(5));
    await f(array(-1, { dtype: "s32" }), array(5));
    expect(printed()).toBe("branch 1 of 5.0\nbranch 2 of 5.0\nbranch 0 of 5.0\n");
  });
});

describe("eager", () => {
  it("prints device arrays in order once their values are ready", async () => {
    const a = array([1, 2, 3]);
    tx.debug.print("a {}", a);
    tx.debug.print("twice {}", a.mul(2));
    tx.debugPrint("sum {} of {}", a.sum(), "a");
    await tx.debug.effectsBarrier();
    expect(printed()).toBe("a [1. 2. 3.]\ntwice [2. 4. 6.]\nsum 6.0 of a\n");
  });

  it("prints from an eager cond, and op by op under disableJit", async () => {
    const x = array(2);
    tx.cond(
      x.gt(0),
      (v: T) => {
        tx.debug.print("cond took true: {}", v);
        return v;
      },
      (v: T) => v,
      x,
    );
    await tx.debug.effectsBarrier();
    const f = jit((v: T) => {
      tx.debug.print("h {}", v.mul(v));
      return v.add(1);
    });
    const out = await disableJit(() => f(array([1, 3])));
    expect(await values(out)).toEqual([2, 4]);
    expect(printed()).toBe("cond took true: 2.0\nh [1. 9.]\n");
  });
});

describe("misuse", () => {
  it("names the call site when the fields and values do not match", () => {
    const f = (x: T) => {
      tx.debug.print("loss {} at {}", x); // LINE_MISMATCH
      return x;
    };
    const e = caught(() => trace(f, [spec("f32", [])]));
    expect(e).toBeInstanceOf(TraceError);
    expect(e.message).toBe(
      `debug.print: the format has more {} fields than the 1 value given at ${HERE}:${lineOf("LINE_MISMATCH")}:16`,
    );
    const extra = caught(() => trace((x: T) => tx.debug.print("loss {}", x, x), [spec("f32", [])]));
    expect(extra.message).toMatch(/^debug\.print: the format has 1 \{\} field but 2 values were given at /);
    const named = caught(() => trace((x: T) => tx.debug.print("{lr}", { loss: x }), [spec("f32", [])]));
    expect(named.message).toMatch(/^debug\.print: the format's field \{lr\} has no value: the named values are loss/);
    const obj = caught(() => trace((x: T) => tx.debug.print("{}", { x }), [spec("f32", [])]));
    expect(obj.message).toMatch(/^debug\.print: value 0 is an object/);
    expect(caught(() => tx.debug.print("{:.3f}", 1)).message).toMatch(/format specs are not supported/);
  });

  it("refuses a print inside whileLoop or customVjp at the print's line", () => {
    const w = caught(() =>
      trace(
        (x: T) =>
          tx.whileLoop(
            (c: T) => c.lt(10),
            (c: T) => {
              tx.debug.print("c {}", c); // LINE_WHILE
              return c.mul(2);
            },
            x,
          ),
        [spec("f32", [])],
      ),
    );
    expect(w).toBeInstanceOf(TraceError);
    expect(w.message).toMatch(
      new RegExp(
        `^debug\\.print: not supported inside whileLoop: its trip count is not known while tracing.* at ${HERE}:${lineOf("LINE_WHILE")}:\\d+$`,
      ),
    );
    const sq = tx.customVjp(
      (x: T) => {
        tx.debug.print("x {}", x); // LINE_VJP
        return x.mul(x);
      },
      { fwd: (x: T) => [x.mul(x), x], bwd: (x: T, g: T) => [g.mul(x).mul(2)] },
    );
    const v = caught(() => trace(sq, [spec("f32", [])]));
    expect(v.message).toMatch(
      new RegExp(`^debug\\.print: not supported inside customVjp: .* at ${HERE}:${lineOf("LINE_VJP")}:\\d+$`),
    );
  });
});
