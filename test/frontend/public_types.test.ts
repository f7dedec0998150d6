// The public typings against the runtime: each call's static type (checked by tsc in `npm test`) and its run-time class.
import { describe, expect, expectTypeOf, it } from "vitest";
import { array, DeviceArray, grad, jit, spec, type Tensor, tx, valueAndGrad } from "tessera";

type T = Tensor;
type D = DeviceArray;

/** A user's parameter tree, declared as an interface (no index signature), as most TypeScript code does. */
interface Params {
  w: Tensor;
  b: Tensor;
}

const isDevice = (x: unknown) => x instanceof DeviceArray;

describe("public typings match the runtime", () => {
  it("free ops, tx.nn and tx.random on device arrays are typed and return DeviceArrays", async () => {
    const d = array([1, -2, 3]);
    const key = tx.random.keyArray(0);

    const results = {
      add: tx.add(d, d),
      addNumber: tx.add(d, 1),
      numberFirst: tx.sub(1, d),
      exp: tx.exp(d),
      where: tx.where(d.gt(0), d, 0),
      sum: tx.sum(d),
      reshape: tx.reshape(d, [3, 1]),
      matmul: tx.matmul(tx.reshape(d, [1, 3]), tx.reshape(d, [3, 1])),
      gelu: tx.nn.gelu(d),
      layerNorm: tx.nn.layerNorm(d, { scale: d, bias: d }),
      softmax: tx.nn.softmax(d),
      stopGradient: tx.stopGradient(d),
      normal: tx.random.normal(key, [2]),
      splitKey: tx.random.split(key),
    };
    expectTypeOf(results.add).toEqualTypeOf<D>();
    expectTypeOf(results.addNumber).toEqualTypeOf<D>();
    expectTypeOf(results.numberFirst).toEqualTypeOf<D>();
    expectTypeOf(results.exp).toEqualTypeOf<D>();
    expectTypeOf(results.where).toEqualTypeOf<D>();
    expectTypeOf(results.sum).toEqualTypeOf<D>();
    expectTypeOf(results.reshape).toEqualTypeOf<D>();
    expectTypeOf(results.matmul).toEqualTypeOf<D>();
    expectTypeOf(results.gelu).toEqualTypeOf<D>();
    expectTypeOf(results.layerNorm).toEqualTypeOf<D>();
    expectTypeOf(results.softmax).toEqualTypeOf<D>();
    expectTypeOf(results.stopGradient).toEqualTypeOf<D>();
    expectTypeOf(results.normal).toEqualTypeOf<D>();
    expectTypeOf(results.splitKey).toEqualTypeOf<D>();
    for (const [name, v] of Object.entries(results)) expect(isDevice(v), name).toBe(true);

    // Ops returning several arrays map each one.
    const parts = tx.split(d, 3);
    expectTypeOf(parts).toEqualTypeOf<D[]>();
    const [values, indices] = tx.topK(d, 2);
    expectTypeOf(values).toEqualTypeOf<D>();
    expectTypeOf(indices).toEqualTypeOf<D>();
    const joined = tx.concatenate([d, d]);
    expectTypeOf(joined).toEqualTypeOf<D>();
    expect([...parts, values, indices, joined].every(isDevice)).toBe(true);
    expect(Array.from(await joined.toArray())).toEqual([1, -2, 3, 1, -2, 3]);

    // cond and switch with a device-array predicate or index run at once and return device arrays.
    const chosen = tx.cond(
      d.sum().gt(0),
      (v: T) => v.mul(2),
      (v: T) => v,
      d,
    );
    expectTypeOf(chosen).toEqualTypeOf<D>();
    const picked = tx.switchCase(array(1, { dtype: "s32" }), [(v: T) => ({ r: v }), (v: T) => ({ r: v.neg() })], d);
    expectTypeOf(picked).toEqualTypeOf<{ r: D }>();
    expect(isDevice(chosen) && isDevice(picked.r)).toBe(true);
    expect(Array.from(await chosen.toArray())).toEqual([2, -4, 6]);
    expect(Array.from(await picked.r.toArray())).toEqual([-1, 2, -3]);

    // @ts-expect-error a string is not an operand
    expect(() => tx.add(d, "1")).toThrow();
  });

  it("the same ops on traced tensors stay Tensors (a DeviceArray mixed in is a Tensor too)", async () => {
    const f = jit((x: T) => {
      const y = tx.exp(tx.add(x, 1));
      expectTypeOf(y).toEqualTypeOf<T>();
      expectTypeOf(tx.nn.relu(y)).toEqualTypeOf<T>();
      expectTypeOf(tx.random.split(tx.random.key(0))).toEqualTypeOf<T>();
      expectTypeOf(
        tx.cond(
          y.sum().gt(0),
          (v: T) => v,
          (v: T) => v.neg(),
          y,
        ),
      ).toEqualTypeOf<T>();
      expect(isDevice(y)).toBe(false);
      return tx.sum(y);
    });
    expectTypeOf(f(0)).toEqualTypeOf<Promise<D>>();
    const out = await f(array([0, 0]));
    expectTypeOf(out).toEqualTypeOf<D>();
    expect(await out.item()).toBeCloseTo(2 * Math.E, 5);
    const mixed = (t: T, d: D) => tx.add(t, d);
    expectTypeOf(mixed).returns.toEqualTypeOf<T>();
  });

  it("jit takes numbers and booleans for Tensors, static values as themselves, and resolves to device arrays", async () => {
    const f = jit((x: T, s: T, on: T) => ({ y: tx.where(on, x.mul(s), x), parts: [x, s] }));
    const call = f(array([1, 2]), 3, true);
    expectTypeOf(call).toEqualTypeOf<Promise<{ y: D; parts: D[] }>>();
    expect(call).toBeInstanceOf(Promise);
    const { y, parts } = await call;
    expect(Array.from(await y.toArray())).toEqual([3, 6]);
    expect(parts.every(isDevice)).toBe(true);
    // lower takes specs, arrays or plain numbers as a call does.
    expect(f.lower(spec("f32", [2]), 3, true).stablehlo).toContain("stablehlo");

    const pow = jit((x: T, n: number) => x.pow(n), { static: 1 });
    expectTypeOf(pow).parameter(1).toEqualTypeOf<number>();
    expect(Array.from(await (await pow(array([2]), 3)).toArray())).toEqual([8]);
    // @ts-expect-error a string is neither an array nor a number
    await expect(async () => f(array([1, 2]), "3", true)).rejects.toThrow();
  });

  it("valueAndGrad and grad on device arrays are typed as the Promise they return", async () => {
    const lossFn = (p: Params, x: T) => p.w.mul(x).add(p.b).square().sum();
    const p = { w: array([1, 2]), b: array([0.5]) };
    const x = array([3, 4]);

    const call = valueAndGrad(lossFn)(p, x);
    expect(call).toBeInstanceOf(Promise);
    expectTypeOf(call).toEqualTypeOf<Promise<[D, { w: D; b: D }]>>();
    const [loss, g] = await call;
    expect(await loss.item()).toBeCloseTo(3.5 ** 2 + 8.5 ** 2, 4);
    expect(Array.from(await g.w.toArray())).toEqual([21, 68]);

    const both = await valueAndGrad(lossFn, { wrt: [0, 1] })(p, x);
    expectTypeOf(both).toEqualTypeOf<[D, [{ w: D; b: D }, D]]>();
    expect(isDevice(both[1][1])).toBe(true);

    const withAux = await valueAndGrad((q: Params, v: T) => [lossFn(q, v), { n: v.sum() }] as [T, { n: T }], {
      hasAux: true,
    })(p, x);
    expectTypeOf(withAux).toEqualTypeOf<[[D, { n: D }], { w: D; b: D }]>();
    expect(await withAux[0][1].n.item()).toBe(7);

    const gw = await grad(lossFn)(p, x);
    expectTypeOf(gw).toEqualTypeOf<{ w: D; b: D }>();
    expect(isDevice(gw.b)).toBe(true);
    const gx = await grad(lossFn, { wrt: 1 })(p, 2);
    expectTypeOf(gx).toEqualTypeOf<D>();

    // Inside a trace the same function is traced inline and returns Tensors, not a Promise.
    const inner = jit((q: Params, v: T) => {
      const r = valueAndGrad(lossFn)(q, v);
      expect(r).not.toBeInstanceOf(Promise);
      return r[1].w as T;
    });
    expect(Array.from(await (await inner(p, x)).toArray())).toEqual([21, 68]);
  });

  it("tx.optim and tx.tree take interface-typed parameter trees", async () => {
    const opt = tx.optim.chain(tx.optim.clipByGlobalNorm(1), tx.optim.adamw({ lr: 0.1 }));
    const step = jit((p: Params, s: unknown[], x: T) => {
      const g = grad((q: Params) => q.w.mul(x).sum().add(q.b.sum()))(p) as Params;
      const [u, s2] = opt.update(g, s, p);
      expectTypeOf(u).toEqualTypeOf<Params>();
      const next = tx.optim.applyUpdates(p, u);
      expectTypeOf(next).toEqualTypeOf<Params>();
      return { p: next, s: s2 };
    });
    const p = { w: array([1, 2]), b: array([0]) };
    const s = await jit((q: Params) => opt.init(q))(p);
    const out = await step(p, s, array([1, 1]));
    expectTypeOf(out.p).toEqualTypeOf<{ w: D; b: D }>();
    expect(Array.from(await out.p.w.toArray()).every((v, i) => v < [1, 2][i]!)).toBe(true);
    expect(tx.tree.leaves(out.p).every(isDevice)).toBe(true);
  });
});
