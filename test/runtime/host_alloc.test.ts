// The CPU plugin's host-buffer pool (native/host_alloc.cc): a repeated program's large buffers come back from the pool, results are unchanged, and bad settings are named.
import { afterEach, describe, expect, it } from "vitest";
import { array, jit, tx, type Tensor } from "tessera";
import { CPU_ALLOC_ENV, cacheHostAllocations, hostAllocStats } from "../../src/backend/runtime/host_alloc.ts";
import type { PluginHandle } from "../../src/backend/runtime/native.ts";

const saved = process.env[CPU_ALLOC_ENV];
afterEach(() => {
  if (saved === undefined) delete process.env[CPU_ALLOC_ENV];
  else process.env[CPU_ALLOC_ENV] = saved;
});

/** Lets a dispose (which frees once the buffer's promise settles) reach the plugin. */
const settle = () => new Promise((resolve) => setImmediate(resolve));

describe("host allocation pool", () => {
  it("serves a repeated program's large outputs from the pool and returns them on dispose", async () => {
    // 4 MiB of f32 in and out: one fused loop, so the output is the execution's only large block.
    const x = array(
      Float32Array.from({ length: 1 << 20 }, (_, i) => (i % 97) - 48),
      { shape: [1024, 1024] },
    );
    const f = jit((a: Tensor) => tx.add(tx.mul(a, 2), 1));
    const first = await f(x);
    const expected = (await first.toArray()) as Float32Array;
    expect(expected[5]).toBe(2 * (5 - 48) + 1);
    first.dispose();
    await settle();
    const before = hostAllocStats();
    for (let i = 0; i < 3; i++) {
      const y = await f(x);
      expect(await y.toArray()).toEqual(expected);
      expect(hostAllocStats().liveBytes).toBe(before.liveBytes + 4 * 2 ** 20); // the output, live until disposed
      y.dispose();
      await settle();
    }
    const after = hostAllocStats();
    expect(after.hits - before.hits).toBe(3);
    expect(after.misses - before.misses).toBe(0);
    expect(after.liveBytes).toBe(before.liveBytes);
    // What the pool keeps mapped never exceeds the largest live total: no more than glibc would have mapped.
    expect(after.liveBytes + after.idleBytes).toBeLessThanOrEqual(after.peakLiveBytes);
  });

  it("keeps results exact when blocks of other sizes are evicted and mapped afresh", async () => {
    const sizes = [300, 700, 1100, 500];
    const before = hostAllocStats();
    for (const rows of sizes) {
      const x = array(
        Float32Array.from({ length: rows * 1024 }, (_, i) => i % 13),
        { shape: [rows, 1024] },
      );
      const y = await jit((a: Tensor) => tx.mul(a, 3))(x);
      const out = (await y.toArray()) as Float32Array;
      expect(out.length).toBe(rows * 1024);
      expect(out[rows * 1024 - 1]).toBe(3 * ((rows * 1024 - 1) % 13));
      y.dispose();
      x.dispose();
      await settle();
    }
    const s = hostAllocStats();
    expect(s.evictions).toBeGreaterThan(before.evictions); // a larger block than any idle one evicts them
    expect(s.liveBytes + s.idleBytes).toBeLessThanOrEqual(s.peakLiveBytes);
  });

  it("is off with $TESSERA_CPU_ALLOC=system and names a bad value", () => {
    const noPlugin = {} as PluginHandle;
    process.env[CPU_ALLOC_ENV] = "system";
    expect(cacheHostAllocations(noPlugin, "/x/plugin.so")).toBe(false);
    process.env[CPU_ALLOC_ENV] = "jemalloc";
    expect(() => cacheHostAllocations(noPlugin, "/x/plugin.so")).toThrow(
      /TESSERA_CPU_ALLOC must be "cache" or "system", got "jemalloc"/,
    );
  });
});
