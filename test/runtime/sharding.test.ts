// Runtime: SPMD over 8 CPU devices with Shardy annotations equals the one-device result; collectives in the optimized HLO.
import { describe, expect, it } from "vitest";
import type { Client, DeviceBuffer } from "../../src/backend/runtime/index.ts";
import { matmulModule, maxAbsDiff, randomF32, testClient } from "./helpers.ts";

const [M, K, N] = [16, 32, 8];

/** The mesh over the client's devices: 4 x 2 for 8 CPU devices, smaller where there are fewer. */
function meshOf(client: Client): { x: number; y: number } {
  const n = Math.min(8, client.devices.length);
  return n >= 8 ? { x: 4, y: 2 } : n >= 4 ? { x: 2, y: 2 } : n >= 2 ? { x: 2, y: 1 } : { x: 1, y: 1 };
}

function shardyMatmul(x: number, y: number, a: string, b: string, c: string): string {
  return `module @sharded_matmul attributes {mhlo.num_partitions = ${x * y} : i32, mhlo.num_replicas = 1 : i32} {
  sdy.mesh @mesh = <["x"=${x}, "y"=${y}]>
  func.func public @main(%a: tensor<${M}x${K}xf32> {sdy.sharding = #sdy.sharding<@mesh, ${a}>},
                         %b: tensor<${K}x${N}xf32> {sdy.sharding = #sdy.sharding<@mesh, ${b}>})
      -> (tensor<${M}x${N}xf32> {sdy.sharding = #sdy.sharding<@mesh, ${c}>}) {
    %0 = stablehlo.dot_general %a, %b, contracting_dims = [1] x [0] : (tensor<${M}x${K}xf32>, tensor<${K}x${N}xf32>) -> tensor<${M}x${N}xf32>
    return %0 : tensor<${M}x${N}xf32>
  }
}`;
}

/** Rows [r0, r0+rows) and columns [c0, c0+cols) of a row-major matrix with `width` columns. */
function block(m: Float32Array, width: number, r0: number, rows: number, c0: number, cols: number): Float32Array {
  const out = new Float32Array(rows * cols);
  for (let i = 0; i < rows; i++) out.set(m.subarray((r0 + i) * width + c0, (r0 + i) * width + c0 + cols), i * cols);
  return out;
}

async function oneDevice(client: Client, a: Float32Array, b: Float32Array): Promise<Float32Array> {
  const exe = await client.compile(matmulModule(M, K, N));
  const [c] = await exe.run([client.bufferFromHost(a, "f32", [M, K]), client.bufferFromHost(b, "f32", [K, N])]);
  return c!.toHostAs("f32");
}

describe("SPMD with Shardy", () => {
  it("shards a matmul over 8 devices (rows over x, columns over y) and equals the one-device result", async () => {
    const client = await testClient();
    const { x, y } = meshOf(client);
    const exe = await client.compile(shardyMatmul(x, y, `[{"x"}, {}]`, `[{}, {"y"}]`, `[{"x"}, {"y"}]`), {
      numPartitions: x * y,
    });
    expect(exe.devices.length).toBe(x * y);
    expect(exe.numPartitions).toBe(x * y);
    const [mr, nc] = [M / x, N / y];
    expect(exe.parameterTypes).toEqual([
      { dtype: "f32", shape: [mr, K] },
      { dtype: "f32", shape: [K, nc] },
    ]);
    expect(exe.outputTypes).toEqual([{ dtype: "f32", shape: [mr, nc] }]);
    expect(exe.collectives()).toEqual({}); // nothing to communicate: each device owns its block

    const a = randomF32(M * K, 11);
    const b = randomF32(K * N, 12);
    // Partition p sits at mesh position (p / y, p % y) and gets its blocks of a and b.
    const args: DeviceBuffer[][] = exe.devices.map((device, p) => {
      const [i, j] = [Math.floor(p / y), p % y];
      return [
        client.bufferFromHost(block(a, K, i * mr, mr, 0, K), "f32", [mr, K], device),
        client.bufferFromHost(block(b, N, 0, K, j * nc, nc), "f32", [K, nc], device),
      ];
    });
    const outs = await exe.execute(args);
    expect(outs.length).toBe(x * y);
    const c = new Float32Array(M * N);
    await Promise.all(
      outs.map(async ([shard], p) => {
        expect(shard!.device).toBe(exe.devices[p]);
        const host = await shard!.toHostAs("f32");
        const [i, j] = [Math.floor(p / y), p % y];
        for (let r = 0; r < mr; r++) c.set(host.subarray(r * nc, (r + 1) * nc), (i * mr + r) * N + j * nc);
      }),
    );
    expect(maxAbsDiff(c, await oneDevice(client, a, b))).toBeLessThan(1e-5);
  });

  it("shards the contracted dimension: partial products meet in an all-reduce", async () => {
    const client = await testClient();
    const { x, y } = meshOf(client);
    const n = x * y;
    const exe = await client.compile(shardyMatmul(x, y, `[{}, {"x", "y"}]`, `[{"x", "y"}, {}]`, `[{}, {}]`), {
      numPartitions: n,
    });
    if (n > 1) expect(exe.collectives()["all-reduce"]).toBeGreaterThanOrEqual(1);
    expect(exe.optimizedHlo()).toContain(n > 1 ? "all-reduce" : "dot");
    const a = randomF32(M * K, 21);
    const b = randomF32(K * N, 22);
    const kc = K / n;
    const outs = await exe.execute(
      exe.devices.map((device, p) => [
        client.bufferFromHost(block(a, K, 0, M, p * kc, kc), "f32", [M, kc], device),
        client.bufferFromHost(block(b, N, p * kc, kc, 0, N), "f32", [kc, N], device),
      ]),
    );
    const expected = await oneDevice(client, a, b);
    for (const [shard] of outs) expect(maxAbsDiff(await shard!.toHostAs("f32"), expected)).toBeLessThan(1e-5);
  });

  it("checks the per-device argument lists", async () => {
    const client = await testClient();
    const { x, y } = meshOf(client);
    if (x * y < 2) return;
    const exe = await client.compile(shardyMatmul(x, y, `[{"x"}, {}]`, `[{}, {"y"}]`, `[{"x"}, {"y"}]`), {
      numPartitions: x * y,
    });
    const a = client.bufferFromHost(new Float32Array((M / x) * K), "f32", [M / x, K], exe.devices[0]);
    const b = client.bufferFromHost(new Float32Array(K * (N / y)), "f32", [K, N / y], exe.devices[0]);
    await expect(exe.execute([[a, b]])).rejects.toMatchObject({
      code: "ERR_ARG_COUNT",
      message: `sharded_matmul runs on ${x * y} device(s) and takes one argument list per device; got 1`,
    });
    await expect(exe.execute(exe.devices.map(() => [a, b]))).rejects.toMatchObject({
      code: "ERR_DEVICE",
      message: `argument 0 of device 1 of sharded_matmul is on ${exe.devices[0]}; the executable runs it on ${exe.devices[1]}`,
    });
    await expect(exe.run([a, b])).rejects.toMatchObject({
      code: "ERR_ARG_COUNT",
      message: expect.stringContaining("run() is for single-device"),
    });
  });
});
