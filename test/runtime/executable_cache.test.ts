// Runtime: the on-disk executable cache compiles once, loads afterwards, and recovers from a corrupt entry.
import { mkdtempSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { describe, expect, it } from "vitest";
import { compileCached, executableCacheKey } from "../../src/backend/runtime/index.ts";
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
});
