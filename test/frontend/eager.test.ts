// Eager execution on device arrays, disableJit, the shared compilation cache (in process and on disk), retrace
// warnings and static arguments, on the PJRT CPU plugin.
import { execFileSync } from "node:child_process";
import { mkdtempSync, readdirSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterEach, describe, expect, expectTypeOf, it, vi } from "vitest";
import { onCompile, resolvePlugin } from "../../src/backend/runtime/index.ts";
import { defaultClient } from "../../src/frontend/array.ts";
import { eagerCounters } from "../../src/frontend/eager.ts";
import { array, DeviceArray, disableJit, grad, isJitDisabled, jit, random, spec, tx, valueAndGrad } from "./api.ts";

type T = tx.Tensor;
// Free functions are typed as returning Tensor, which has toArray (a DeviceArray's values; a tracer throws).
const vals = async (a: T) => Array.from(await a.toArray());

describe("eager execution", () => {
  it("ops and methods on device arrays run at once and return device arrays; numbers mix in", async () => {
    const s = array([1, 2, 3]).mul(2).sum();
    expect(s).toBeInstanceOf(DeviceArray);
    expect(s.dtype).toBe("f32");
    expect(s.shape).toEqual([]);
    expect(await s.item()).toBe(12);
    const x = array([
      [1, -2],
      [3, 4],
    ]);
    expect(await vals(tx.add(x, 1).T)).toEqual([2, 4, -1, 5]);
    expect(await vals(tx.maximum(x, 0).matmul(array([[1], [1]])))).toEqual([1, 7]);
    expect(await vals(array([1, 2, 3], { dtype: "s32" }).div(2))).toEqual([0.5, 1, 1.5]);
    expect(await vals(tx.where(x.gt(0), x, tx.zerosLike(x)))).toEqual([1, 0, 3, 4]);
  });

  it("tx.nn and tx.random work on the host and agree with the same calls under jit", async () => {
    const key = random.keyArray(0);
    const [k1, k2] = random.split(key);
    expect(k1).toBeInstanceOf(DeviceArray);
    const jitted = await jit((k: T) => random.split(k))(key);
    expect(await vals(k1!)).toEqual(await vals(jitted.slice(0) as DeviceArray));
    expect(await vals(k2!)).toEqual(await vals(jitted.slice(1) as DeviceArray));
    const x = array([[-1.5, 0.25, 2]]);
    const eager = [tx.nn.gelu(x), tx.nn.logSoftmax(x), tx.nn.layerNorm(x)];
    const compiled = await jit((y: T) => [tx.nn.gelu(y), tx.nn.logSoftmax(y), tx.nn.layerNorm(y)])(x);
    for (let i = 0; i < 3; i++) {
      const e = await vals(eager[i]!);
      const c = await vals(compiled[i]!);
      for (const [k, v] of e.entries()) expect(v).toBeCloseTo(c[k]!, 5);
    }
    // categorical, randint, permutation and choice: eager (op by op) equals the same draws compiled whole.
    const logits = array([
      [0.1, 2, -1, 0.5],
      [3, 0, 0, 0],
    ]);
    const draws = (k: T, l: T) => [
      random.categorical(k, l.reshape([2, 1, 4]).broadcastTo([2, 8, 4])),
      random.randint(k, [5], 0, 100),
      random.permutation(k, 6),
      random.choice(k, 10, [3], { replace: false }),
    ];
    const eagerDraws = draws(k2!, logits);
    const jitDraws = await jit(draws)(k2!, logits);
    for (let i = 0; i < 4; i++) expect(await vals(eagerDraws[i]!)).toEqual(await vals(jitDraws[i]!));
    const u = random.uniform(k1!, [1000]);
    const mean = (await vals(u)).reduce((a, b) => a + b) / 1000;
    expect(mean).toBeGreaterThan(0.45);
    expect(mean).toBeLessThan(0.55);
  });

  it("compiles one program per (op, params, operand types) and reuses it", async () => {
    const a = array([1, 2, 3]);
    await a.add(a).toArray();
    const before = eagerCounters.programs;
    let y = a;
    for (let i = 0; i < 20; i++) y = y.add(a);
    expect(await vals(y)).toEqual([21, 42, 63]);
    expect(eagerCounters.programs).toBe(before);
    await a.astype("s32").toArray();
    expect(eagerCounters.programs).toBe(before + 1);
  });

  it("a number in an eager op is a literal of its one-op program, not an upload; a changing number goes up", async () => {
    const client = await defaultClient();
    const uploads = vi.spyOn(client, "bufferFromHost");
    try {
      const x = array([1, 2, 3]);
      await x.toArray();
      uploads.mockClear();
      let y = x;
      for (let i = 0; i < 5; i++) y = y.add(1);
      expect(await vals(y)).toEqual([6, 7, 8]);
      expect(uploads).not.toHaveBeenCalled();
      // Each new value would be a new program: past 16 distinct ones they are inputs (one upload each).
      let z = array([1, 1], { dtype: "s32" });
      for (let i = 1; i <= 40; i++) z = z.add(i);
      expect(await vals(z)).toEqual([821, 821]);
      expect(uploads.mock.calls.length).toBe(40 - 16 + 1);
      // A splat used as an array goes up when read; one never used is never uploaded, and disposes quietly.
      uploads.mockClear();
      expect(await vals(tx.full([2, 2], 3))).toEqual([3, 3, 3, 3]);
      (tx.zeros([4]) as DeviceArray).dispose();
      expect(uploads).toHaveBeenCalledTimes(1);
    } finally {
      uploads.mockRestore();
    }
  });

  it("an eager shape error names the op, both types and the user's line", () => {
    const a = array([[1, 2, 3]]);
    let msg = "";
    try {
      a.matmul(array([[1, 2]])); // MATMUL_LINE
    } catch (e) {
      msg = (e as Error).message;
    }
    expect(msg).toMatch(/^matmul: /);
    expect(msg).toContain("f32[1,3]");
    expect(msg).toContain("f32[1,2]");
    expect(msg).toContain("eager.test.ts:");
  });

  it("valueAndGrad and grad take device arrays outside a trace (compiled) and type-check", async () => {
    const f = (w: T, x: T) => w.mul(x).sum().square();
    const w = array([1, 2]);
    const x = array([3, 4]);
    const [l, g] = await valueAndGrad(f)(w, x);
    expect(await l.item()).toBe(121);
    expect(await vals(g)).toEqual([66, 88]);
    expect(await vals(await grad(f)(w, x))).toEqual([66, 88]);
  });

  it("reading a traced tensor's values throws at that line and says how to get them", () => {
    let msg = "";
    jit((v: T) => {
      try {
        v.toArray();
      } catch (e) {
        msg = (e as Error).message;
      }
      return v;
    }).lower(spec("f32", [2]));
    expect(msg).toMatch(
      /^toArray: Tensor<f32\[2\]> is traced: it has no value while its function is traced \(under jit, grad, scan\.\.\.\); return it from the jitted function and read the result, or run op by op with disableJit/,
    );
  });

  it("a device array used as a JS number says how to read it", () => {
    const a = array([1, 2]).sum();
    expect(() => +a).toThrow(
      /DeviceArray<f32\[\]> was used as a number; its values are on the device: read them with `await a.item\(\)`/,
    );
    expect(`${a}`).toBe("DeviceArray<f32[]>");
  });
});

describe("disableJit", () => {
  it("runs a jitted function op by op on device arrays, compiling nothing, with the jitted results", async () => {
    const seen: string[] = [];
    const f = jit((x: T, y: T) => {
      seen.push(x.constructor.name);
      return x.mul(y).add(1);
    });
    const a = array([1, 2]);
    const b = array([3, 4]);
    const off = await disableJit(() => f(a, b));
    expect(seen).toEqual(["DeviceArray"]);
    expect(f.cacheSize).toBe(0);
    expect(isJitDisabled()).toBe(false);
    const on = await f(a, b);
    expect(f.cacheSize).toBe(1);
    expect(await vals(off)).toEqual(await vals(on));
    expect(seen).toEqual(["DeviceArray", "Tensor"]);
  });

  it("an async scope lasts until it settles; grad inside it still compiles", async () => {
    const loss = (w: T) => w.square().sum();
    const g = jit((w: T) => grad(loss)(w));
    const r = await disableJit(async () => {
      expect(isJitDisabled()).toBe(true);
      return g(array([1, 3]));
    });
    expect(isJitDisabled()).toBe(false);
    expect(await vals(r)).toEqual([2, 6]);
    disableJit(true);
    expect(isJitDisabled()).toBe(true);
    disableJit(false);
    expect(isJitDisabled()).toBe(false);
  });
});

describe("compilation cache", () => {
  it("a function jitted afresh (a jit in a loop) reuses the executable: one compile, then memory hits", async () => {
    const events: string[] = [];
    const stop = onCompile((e) => {
      if (e.name === "jit_fresh_in_loop") events.push(e.source);
    });
    const x = array([1, 2, 3]);
    for (let i = 0; i < 4; i++) {
      const f = jit((v: T) => v.mul(v).add(0.5), { name: "fresh_in_loop" });
      expect(await vals(await f(x))).toEqual([1.5, 4.5, 9.5]);
    }
    stop();
    expect(events.slice(1)).toEqual(["memory", "memory", "memory"]);
    expect(["miss", "hit", "stale", "nocache"]).toContain(events[0]);
  });

  it("a second process loads the executable from the on-disk cache instead of compiling; TESSERA_JIT_CACHE=0 turns it off", () => {
    const dir = mkdtempSync(join(tmpdir(), "tessera-jit-cache-"));
    try {
      const child = (extra: Record<string, string> = {}) =>
        JSON.parse(
          execFileSync(process.execPath, ["--import", "tsx", join(__dirname, "fixtures", "jit_cache_child.ts")], {
            // The plugin stays where it is; only the caches move.
            env: { ...process.env, TESSERA_CACHE_DIR: dir, TESSERA_PJRT_PLUGIN: resolvePlugin().path, ...extra },
            encoding: "utf8",
          }),
        );
      const off = child({ TESSERA_JIT_CACHE: "0" });
      expect(off.out).toBe(41);
      expect(off.compiled).toBe(1);
      expect(readdirSync(dir).includes("executables")).toBe(false);
      const first = child();
      expect(first).toMatchObject({ out: 41, compiled: 1, diskHits: 0 });
      expect(readdirSync(join(dir, "executables")).filter((f) => f.endsWith(".pjrt"))).toHaveLength(1);
      const second = child();
      expect(second).toMatchObject({ out: 41, compiled: 0, diskHits: 1 });
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});

describe("retrace warnings", () => {
  afterEach(() => vi.restoreAllMocks());

  it("warn once, naming the function and the argument whose shape changed", async () => {
    const writes: string[] = [];
    vi.spyOn(process.stderr, "write").mockImplementation((s) => {
      writes.push(String(s));
      return true;
    });
    const f = jit((scale: T, x: T) => x.mul(scale), { name: "retracer" });
    for (let n = 1; n <= 8; n++) await f(array(2), array(new Float32Array(n)));
    const warnings = writes.filter((w) => w.includes("retracer"));
    expect(warnings).toHaveLength(1);
    expect(warnings[0]).toMatch(
      /^tessera: warning: jit_retracer \(jit at .*eager\.test\.ts:\d+\) was traced 6 times: the last retrace was because x changed from f32\[5\] to f32\[6\]\./,
    );
  });

  it("warn when one line keeps making fresh jits", async () => {
    const writes: string[] = [];
    vi.spyOn(process.stderr, "write").mockImplementation((s) => {
      writes.push(String(s));
      return true;
    });
    const x = array([1]);
    for (let i = 0; i < 7; i++) await jit((v: T) => v.add(1), { name: "made_in_loop" })(x);
    const warnings = writes.filter((w) => w.includes("made_in_loop"));
    expect(warnings).toHaveLength(1);
    expect(warnings[0]).toMatch(
      /made 6 separate jitted functions \(jit_made_in_loop\), each traced anew \(a jit inside a loop\?\)/,
    );
  });
});

describe("static arguments", () => {
  it("are hashed by value: one trace per distinct value, the function sees the value itself", async () => {
    const seen: unknown[] = [];
    const f = jit(
      (x: T, opts: { power: number; negate: boolean }) => {
        seen.push(opts);
        const y = x.pow(opts.power);
        return opts.negate ? y.neg() : y;
      },
      { static: 1 },
    );
    const x = array([2, 3]);
    expect(await vals(await f(x, { power: 2, negate: false }))).toEqual([4, 9]);
    expect(await vals(await f(x, { negate: false, power: 2 }))).toEqual([4, 9]);
    expect(await vals(await f(x, { power: 3, negate: true }))).toEqual([-8, -27]);
    expect(f.cacheSize).toBe(2);
    expect(seen).toEqual([
      { power: 2, negate: false },
      { power: 3, negate: true },
    ]);
    expect(f.lower(spec("f32", [2]), { power: 2, negate: false }).stablehlo).toContain("stablehlo.multiply");
  });

  it("unhashable values, donated statics and out-of-range positions are errors naming the argument", async () => {
    const f = jit((x: T, how: unknown) => (how === 0 ? x : x.add(1)), { static: [1] });
    await expect(f(array([1]), () => 1)).rejects.toThrow(
      "jit: static argument 1 (how) is a function (anonymous), which cannot be hashed by value; static arguments must be numbers, booleans, strings, null/undefined, or arrays and plain objects of them (pass arrays as ordinary arguments)",
    );
    await expect(f(array([1]), { w: array([2]) })).rejects.toThrow(
      "jit: static argument 1 (how).w is DeviceArray<f32[1]> (a device array), which cannot be hashed by value",
    );
    expect(() => jit((x: T) => x, { static: 0, donate: 0 })).toThrow(
      "jit: argument 0 is both static and donated; a static argument has no buffer",
    );
    await expect(jit((x: T) => x, { static: 2, name: "one_arg" })(array([1]))).rejects.toThrow(
      "jit: static names argument 2, but jit_one_arg got 1 arguments",
    );
  });

  it("numbers and booleans in other positions are f32 and bool scalars", async () => {
    const f = jit((x: T, s: T, flip: T) => tx.where(flip, x.mul(s).neg(), x.mul(s)));
    expect(await vals(await f(array([1, 2]), 3, true))).toEqual([-3, -6]);
    expect(await vals(await f(array([1, 2]), 0.5, false))).toEqual([0.5, 1]);
    expect(f.cacheSize).toBe(1);
  });
});

describe("eager control flow", () => {
  it("cond, whileLoop, foriLoop, scan and customVjp run on device arrays outside a trace", async () => {
    const x = array([1, 2, 3]);
    const c = tx.cond(
      x.sum().gt(5),
      (v: T) => v.mul(10),
      (v: T) => v.neg(),
      x,
    );
    expect(c).toBeInstanceOf(DeviceArray);
    expect(await vals(c)).toEqual([10, 20, 30]);
    const [i, acc] = tx.whileLoop(
      ([k]: [T, T]) => k.lt(4),
      ([k, a]: [T, T]) => [k.add(1), a.mul(2)] as [T, T],
      [array(0, { dtype: "s32" }), x] as [T, T],
    );
    expect(await vals(i)).toEqual([4]);
    expect(await vals(acc)).toEqual([16, 32, 48]);
    expect(await vals(tx.foriLoop(0, 3, (_k: T, a: T) => a.add(1), x))).toEqual([4, 5, 6]);
    const [carry, ys] = tx.scan((cy: T, v: T) => [cy.add(v), cy.mul(v)], array(0), x);
    expect(await vals(carry)).toEqual([6]);
    expect(await vals(ys)).toEqual([0, 2, 9]);
    const f = tx.customVjp((v: T) => v.square(), {
      fwd: (v: T) => [v.square(), v],
      bwd: (v: T, g: T) => [g.mul(v).mul(100)],
    });
    expect(await vals(f(x))).toEqual([1, 4, 9]);
  });
});

describe("typings of eager use (checked by tsc)", () => {
  it("methods on device arrays are DeviceArrays; jit takes numbers and booleans; grad takes device arrays", async () => {
    const a = array([1, 2]);
    expectTypeOf(a.mul(2).sum()).toEqualTypeOf<DeviceArray>();
    expectTypeOf(a.T).toEqualTypeOf<DeviceArray>();
    expectTypeOf(tx.nn.relu(a).toArray).returns.resolves.toEqualTypeOf<
      Float32Array | Int32Array | Uint32Array | Uint8Array
    >();
    const f = jit((x: T, s: T, n: number) => x.mul(s).add(n), { static: 2 });
    const out = await f(a, 3, 4);
    expectTypeOf(out).toEqualTypeOf<DeviceArray>();
    expect(await vals(out)).toEqual([7, 10]);
    const [l] = await valueAndGrad((w: T) => w.sum())(a);
    expect(await l.item()).toBe(3);
  });
});
