// Runtime: the on-disk executable cache compiles once, loads afterwards, and recovers from a corrupt entry.
import { mkdtempSync, readdirSync, statSync, utimesSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterEach, describe, expect, it } from "vitest";
import { compileCached, executableCacheKey } from "../../src/backend/runtime/index.ts";
import { pruneExecutableCache } from "../../src/backend/runtime/executable_cache.ts";
import { ADD_F32, matmulModule, testClient } from "./helpers.ts";

describe("executable cache", () => {
  it("compiles on a miss, loads from disk on a hit, and recompiles a corrupt entry", async () => {
    const client = await testClient();
    const dir = mkdtempSync(join(tmpdir(), "tessera-exe-cache-"));
    const first = await compileCached(client, ADD_F32, {}, dir);
    expect(first.source).toBe("miss");
    const second = await compileCached(client, ADD_F32, {}, dir);
    expect(second.source).toBe("hit");
    expect(second.key).toBe(first.key);
    const a = client.bufferFromHost(new Float32Array([1, 2, 3, 4]), "f32", [4]);
    const [s] = await second.executable.run([a, a]);
    expect(Array.from(await s!.toHostAs("f32"))).toEqual([2, 4, 6, 8]);

    // Other program, other options, other key.
    expect(executableCacheKey(client, matmulModule(2, 2, 2))).not.toBe(first.key);
    if (client.devices.length > 1)
      expect(executableCacheKey(client, ADD_F32, { device: client.devices[1]! })).not.toBe(first.key);

    writeFileSync(join(dir, `${first.key}.pjrt`), "not an executable");
    const third = await compileCached(client, ADD_F32, {}, dir);
    expect(third.source).toBe("stale");
    expect((await compileCached(client, ADD_F32, {}, dir)).source).toBe("hit");
  });

  afterEach(() => {
    delete process.env.TESSERA_JIT_CACHE_MAX_MB;
  });

  it("stays under its size bound by dropping the least recently used entries; a hit counts as a use", async () => {
    const client = await testClient();
    const dir = mkdtempSync(join(tmpdir(), "tessera-exe-cache-"));
    const a = await compileCached(client, matmulModule(2, 2, 2), {}, dir);
    const b = await compileCached(client, matmulModule(3, 3, 3), {}, dir);
    const size = (k: string) => statSync(join(dir, `${k}.pjrt`)).size;
    // a is older than b on disk, but a hit on a makes b the least recently used.
    const past = new Date(Date.now() - 60_000);
    utimesSync(join(dir, `${a.key}.pjrt`), past, past);
    utimesSync(join(dir, `${b.key}.pjrt`), past, new Date(Date.now() - 30_000));
    expect((await compileCached(client, matmulModule(2, 2, 2), {}, dir)).source).toBe("hit");
    process.env.TESSERA_JIT_CACHE_MAX_MB = String((size(a.key) + size(b.key) + 10) / 2 ** 20);
    const c = await compileCached(client, matmulModule(4, 4, 4), {}, dir); // over the bound: b goes
    expect(readdirSync(dir).sort()).toEqual([`${a.key}.pjrt`, `${c.key}.pjrt`].sort());
    // b again: compiled, and now a is the least recently used.
    expect((await compileCached(client, matmulModule(3, 3, 3), {}, dir)).source).toBe("miss");
    expect(readdirSync(dir).sort()).toEqual([`${b.key}.pjrt`, `${c.key}.pjrt`].sort());
    // The entry being written always stays, even alone over the bound.
    expect(pruneExecutableCache(dir, 0, join(dir, `${b.key}.pjrt`))).toBe(1);
    expect(readdirSync(dir)).toEqual([`${b.key}.pjrt`]);
  });
});
