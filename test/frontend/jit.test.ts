// jit end to end on the PJRT CPU plugin: compile, cache, run, feed outputs back, donate; an MLP trained by SGD.
import { describe, expect, it } from "vitest";
import { array, DeviceArray, entry, grad, jit, random, spec, trace, tx, valueAndGrad } from "./api.ts";
import { interpret } from "../../src/ir/interpret.ts";
import { host } from "./helpers.ts";

type T = tx.Tensor;

describe("jit", () => {
  it("compiles once per signature and runs; outputs feed the next call without a host round trip", async () => {
    const f = jit((x: T, y: T) => ({ sum: x.add(y), prod: x.mul(y).sum() }));
    const a = array([1, 2, 3]),
      b = array([10, 20, 30]);
    const r1 = await f(a, b);
    expect(r1.sum).toBeInstanceOf(DeviceArray);
    expect(Array.from(await r1.sum.toArray())).toEqual([11, 22, 33]);
    expect(await r1.prod.item()).toBe(140);
    const r2 = await f(r1.sum, b);
    expect(Array.from(await r2.sum.toArray())).toEqual([21, 42, 63]);
    expect(f.cacheSize).toBe(1);
    await f(array([1, 2]), array([3, 4]));
    expect(f.cacheSize).toBe(2);
  });

  it("moves bf16, s32, u32 and bool through device arrays", async () => {
    const f = jit((x: T, i: T, u: T, m: T) => [x.mul(2), i.add(1), u.add(1), tx.logicalNot(m)]);
    const [x, i, u, m] = await f(
      array([1.5, 3], { dtype: "bf16" }),
      array([1, -2], { dtype: "s32" }),
      array(new Uint32Array([0xffffffff, 1])),
      array([1, 0], { dtype: "bool" }),
    );
    expect(x!.dtype).toBe("bf16");
    expect(Array.from(await x!.toArray())).toEqual([3, 6]);
    expect(Array.from(await i!.toArray())).toEqual([2, -1]);
    expect(Array.from(await u!.toArray())).toEqual([0, 2]);
    expect(Array.from(await m!.toArray())).toEqual([0, 1]);
  });

  it("lower() gives the graph and StableHLO without running", () => {
    const f = jit(function affine(x: T, w: T) {
      return x.matmul(w).add(1);
    });
    const low = f.lower(spec("f32", [2, 3]), spec("f32", [3, 4]));
    expect(low.stablehlo).toContain("func.func public @main");
    expect(low.stablehlo).toContain("stablehlo.dot_general");
    expect(low.stablehlo).toMatch(/module @jit_affine/);
    expect(low.graph.inputNames).toEqual(["x", "w"]);
    expect(f.cacheSize).toBe(0);
  });

  it("donated arguments alias same-typed outputs and cannot be used afterwards", async () => {
    const step = jit((p: { w: T; b: T }, g: { w: T; b: T }) => ({ w: p.w.sub(g.w), b: p.b.sub(g.b) }), { donate: 0 });
    const low = step.lower({ w: spec("f32", [2]), b: spec("f32", [3]) }, { w: spec("f32", [2]), b: spec("f32", [3]) });
    expect(low.donate).toEqual([0, 1, undefined, undefined]);
    expect(low.stablehlo).toContain("tf.aliasing_output = 0");
    const p = { w: array([1, 2]), b: array([3, 4, 5]) };
    const out = await step(p, { w: array([1, 1]), b: array([1, 1, 1]) });
    expect(Array.from(await out.w.toArray())).toEqual([0, 1]);
    expect(p.w.disposed).toBe(true);
    await expect(p.w.toArray()).rejects.toThrow(/was donated to a jit call/);
  });

  it("a small MLP trained with valueAndGrad and SGD inside jit: the loss decreases", async () => {
    // y = sin(x) on 16 points, a 1-16-1 tanh MLP, full-batch SGD.
    const n = 16,
      h = 16;
    const xs = Array.from({ length: n }, (_, i) => -2 + (4 * i) / (n - 1));
    const x = array(xs, { shape: [n, 1] }),
      y = array(xs.map(Math.sin), { shape: [n, 1] });
    type P = { w1: T; b1: T; w2: T; b2: T };
    const loss = (p: P, x: T, y: T) => tx.tanh(x.matmul(p.w1).add(p.b1)).matmul(p.w2).add(p.b2).sub(y).square().mean();
    const step = jit(
      (p: P, x: T, y: T) => {
        const [l, g] = valueAndGrad(loss)(p, x, y);
        const upd = (k: keyof P) => p[k].sub(g[k].mul(0.1));
        return [l, { w1: upd("w1"), b1: upd("b1"), w2: upd("w2"), b2: upd("b2") }] as const;
      },
      { donate: 0 },
    );
    const rnd = (k: number, scale: number) => Array.from({ length: k }, (_, i) => scale * Math.sin(1 + i * 2.3));
    let p: { w1: DeviceArray; b1: DeviceArray; w2: DeviceArray; b2: DeviceArray } = {
      w1: array(rnd(h, 1), { shape: [1, h] }),
      b1: array(rnd(h, 0.5), { shape: [h] }),
      w2: array(rnd(h, 0.5), { shape: [h, 1] }),
      b2: array([0], { shape: [1] }),
    };
    const losses: number[] = [];
    for (let i = 0; i < 30; i++) {
      const [l, next] = await step(p, x, y);
      losses.push(await l.item());
      p = next;
    }
    console.log(`losses ${losses[0]!.toFixed(4)} -> ${losses[29]!.toFixed(4)}`);
    expect(step.cacheSize).toBe(1);
    expect(losses[29]!).toBeLessThan(losses[0]! * 0.5);
    for (let i = 1; i < losses.length; i++) expect(losses[i]!).toBeLessThan(losses[i - 1]! + 1e-6);
  });

  it("rejects non-array arguments with the argument's path", async () => {
    const f = jit((p: { w: T }) => p.w);
    await expect(f({ w: "nope" } as never)).rejects.toThrow(
      /^jit: argument \[0\]\.w is the string "nope", not a DeviceArray/,
    );
  });
});

describe("transforms outside jit", () => {
  it("valueAndGrad and grad called with device arrays compile themselves", async () => {
    const f = (x: T) => x.square().sum();
    const [v, g] = await (valueAndGrad(f) as unknown as (x: DeviceArray) => Promise<[DeviceArray, DeviceArray]>)(
      array([1, 2]),
    );
    expect(await v.item()).toBe(5);
    expect(Array.from(await g.toArray())).toEqual([2, 4]);
    const g2 = await (grad(f) as unknown as (x: DeviceArray) => Promise<DeviceArray>)(array([3]));
    expect(Array.from(await g2.toArray())).toEqual([6]);
  });
});

describe("RNG on XLA", () => {
  it("threefry, uniform and normal give the interpreter's bits and values on the CPU plugin", async () => {
    const draw = (seed: T) => {
      const key = random.key(seed);
      const [k1, k2] = random.split(key);
      return [
        random.bits(k1!, [64]),
        random.uniform(k2!, [64]),
        random.uniform(k2!, [64], { dtype: "bf16" }),
        random.normal(key, [64]),
      ];
    };
    const seedHost = host("s32", [], [7]);
    const want = interpret(trace(draw, [spec("s32", [])]).graph, [seedHost]).map((o) => Array.from(o.data));
    const got = await jit(draw)(array([7], { dtype: "s32", shape: [] }));
    expect(Array.from(await got[0]!.toArray())).toEqual(want[0]);
    expect(Array.from(await got[1]!.toArray())).toEqual(want[1]);
    expect(Array.from(await got[2]!.toArray())).toEqual(want[2]);
    // Transcendentals may differ in the last bits between XLA and the float64 interpreter.
    const n = await got[3]!.toArray();
    want[3]!.forEach((w, i) => {
      expect(Math.abs(n[i]! - w)).toBeLessThan(1e-5);
    });
  });
});

describe("keys made on the host", () => {
  it("keyArray(seed) equals key(seed) traced", async () => {
    const fromHost = await jit((k: T) => random.uniform(k, [8]))(random.keyArray(2 ** 33 + 9));
    const traced = await jit(() => random.uniform(random.key(2 ** 33 + 9), [8]))();
    expect(Array.from(await fromHost.toArray())).toEqual(Array.from(await traced.toArray()));
  });
});

describe("entry", () => {
  it("marks a function and its specs for the CLI; trace(e.fn, e.args) traces it", () => {
    const e = entry((p: { w: T }, x: T) => x.matmul(p.w), [{ w: spec("f32", [3, 2]) }, spec("f32", [4, 3])], {
      donate: 0,
    });
    expect(e.kind).toBe("tessera.entry");
    expect(e.donate).toEqual([0]);
    const { graph } = trace(e.fn, e.args);
    expect(graph.inputNames).toEqual(["p.w", "x"]);
  });
});

describe("numbers and booleans as abstract arguments", () => {
  // As a jitted call uploads them: a number is an f32 scalar input, a boolean a bool scalar input (not constants).
  const step = (x: T, lr: T, flip: T) => tx.where(flip, x.mul(lr).neg(), x.mul(lr));

  it("trace, entry, evalShape and lower take them as f32[] and bool[] inputs", () => {
    const e = entry(step, [spec("f32", [3]), 0.5, true]);
    const { graph } = trace(e.fn, e.args);
    expect(graph.inputNames).toEqual(["x", "lr", "flip"]);
    expect(graph.inputs.map((v) => `${v.type.dtype}[${v.type.shape.join(",")}]`)).toEqual([
      "f32[3]",
      "f32[]",
      "bool[]",
    ]);
    // The value is an input, not baked in: the traced program does not depend on 0.5.
    expect(graph.ops.some((op) => op.name === "constant")).toBe(false);
    // Tessera has no weak types: the number is an f32 tensor, so it scales an f32 array and a bool selects.
    expect(tx.evalShape(step, spec("f32", [2, 2]), 3, false)).toEqual(spec("f32", [2, 2]));
  });

  it("jit.lower and jit.compile with numbers share the program a call with numbers uses", async () => {
    const f = jit(step);
    const lowered = f.lower(spec("f32", [3]), 0.25, false);
    expect(lowered.graph.inputs.map((v) => v.type.dtype)).toEqual(["f32", "f32", "bool"]);
    await f.compile(spec("f32", [3]), 2, true);
    expect(f.cacheSize).toBe(1);
    const out = (await f(array([1, 2, 3]), 2, true)) as DeviceArray;
    expect(f.cacheSize).toBe(1); // the call reused what compile() built
    expect(await out.toArray()).toEqual(new Float32Array([-2, -4, -6]));
    const out2 = (await f(array([1, 2, 3]), 0.5, false)) as DeviceArray;
    expect(await out2.toArray()).toEqual(new Float32Array([0.5, 1, 1.5]));
  });

  it("still refuses strings and other non-tensors, naming the argument", () => {
    expect(() => trace(step, [spec("f32", [3]), "0.5", true])).toThrow(
      /trace: argument lr is the string "0.5", not a tensor spec \(use spec\(dtype, shape\)\), number or boolean/,
    );
  });
});
