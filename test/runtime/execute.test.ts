// Runtime: compile and run hand-written StableHLO (add, dot_general, reduce, dtypes), chaining, donation, serialization, 100 in flight.
import { mkdtempSync, readFileSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { describe, expect, it } from "vitest";
import type { DeviceBuffer } from "../../src/backend/runtime/index.ts";
import { ADD_F32, REDUCE_SUM_ROWS, matmulModule, matmulRef, maxAbsDiff, randomF32, testClient } from "./helpers.ts";

describe("compile and execute on one device", () => {
  it("adds two vectors and reports output types and compiled memory stats", async () => {
    const client = await testClient();
    const exe = await client.compile(ADD_F32);
    expect(exe.devices).toEqual([client.devices[0]]);
    expect(exe.outputTypes).toEqual([{ dtype: "f32", shape: [4] }]);
    expect(exe.parameterTypes).toEqual([
      { dtype: "f32", shape: [4] },
      { dtype: "f32", shape: [4] },
    ]);
    expect(exe.memoryStats?.argumentBytes).toBe(32);
    expect(exe.memoryStats?.outputBytes).toBe(16);
    const a = client.bufferFromHost(new Float32Array([1, 2, 3, 4]), "f32", [4]);
    const b = client.bufferFromHost(new Float32Array([10, 20, 30, 40]), "f32", [4]);
    const [sum] = await exe.run([a, b]);
    expect(sum!.dtype).toBe("f32");
    expect(sum!.shape).toEqual([4]);
    expect(Array.from(await sum!.toHostAs("f32"))).toEqual([11, 22, 33, 44]);
    // Outputs feed the next call directly, no trip to the host in between.
    let x = sum!;
    for (let i = 0; i < 10; i++) [x] = (await exe.run([x, b])) as [DeviceBuffer];
    expect(Array.from(await x.toHostAs("f32"))).toEqual([111, 222, 333, 444]);
    expect(exe.optimizedHlo()).toMatch(/ROOT %\S+ = f32\[4\] (add|fusion)\(/);
    expect(exe.collectives()).toEqual({});
  });

  it("runs dot_general against a reference matmul", async () => {
    const client = await testClient();
    const [m, k, n] = [8, 16, 4];
    const exe = await client.compile(matmulModule(m, k, n));
    const a = randomF32(m * k, 1);
    const b = randomF32(k * n, 2);
    const [c] = await exe.run([client.bufferFromHost(a, "f32", [m, k]), client.bufferFromHost(b, "f32", [k, n])]);
    expect(c!.shape).toEqual([m, n]);
    expect(maxAbsDiff(await c!.toHostAs("f32"), matmulRef(a, b, m, k, n))).toBeLessThan(1e-5);
  });

  it("runs a reduce", async () => {
    const client = await testClient();
    const exe = await client.compile(REDUCE_SUM_ROWS);
    const x = Float32Array.from({ length: 32 }, (_, i) => i);
    const [s] = await exe.run([client.bufferFromHost(x, "f32", [4, 8])]);
    expect(Array.from(await s!.toHostAs("f32"))).toEqual([28, 92, 156, 220]);
  });

  it("computes with bf16, f16, s64, u32, u8 and pred", async () => {
    const client = await testClient();
    const exe = await client.compile(`module {
  func.func @main(%h: tensor<3xbf16>, %f: tensor<3xf16>, %l: tensor<3xi64>, %u: tensor<3xui32>, %b: tensor<3xui8>) ->
      (tensor<3xf32>, tensor<3xf32>, tensor<3xi64>, tensor<3xui32>, tensor<3xui8>, tensor<3xi1>, tensor<3xbf16>) {
    %0 = stablehlo.convert %h : (tensor<3xbf16>) -> tensor<3xf32>
    %1 = stablehlo.convert %f : (tensor<3xf16>) -> tensor<3xf32>
    %2 = stablehlo.add %l, %l : tensor<3xi64>
    %3 = stablehlo.multiply %u, %u : tensor<3xui32>
    %4 = stablehlo.add %b, %b : tensor<3xui8>
    %5 = stablehlo.compare GT, %0, %1 : (tensor<3xf32>, tensor<3xf32>) -> tensor<3xi1>
    %6 = stablehlo.add %h, %h : tensor<3xbf16>
    return %0, %1, %2, %3, %4, %5, %6 : tensor<3xf32>, tensor<3xf32>, tensor<3xi64>, tensor<3xui32>, tensor<3xui8>, tensor<3xi1>, tensor<3xbf16>
  }
}`);
    expect(exe.outputTypes.map((t) => t.dtype)).toEqual(["f32", "f32", "s64", "u32", "u8", "bool", "bf16"]);
    const outs = await exe.run([
      client.bufferFromHost(new Uint16Array([0x3f80, 0x4000, 0xc060]), "bf16", [3]), // 1, 2, -3.5
      client.bufferFromHost(new Uint16Array([0x3c00, 0x4200, 0xc300]), "f16", [3]), // 1, 3, -3.5
      client.bufferFromHost(new BigInt64Array([1n, -(2n ** 40n), 2n ** 61n]), "s64", [3]),
      client.bufferFromHost(new Uint32Array([3, 65536, 65535]), "u32", [3]),
      client.bufferFromHost(new Uint8Array([1, 100, 200]), "u8", [3]),
    ]);
    const host = await Promise.all(outs.map((o) => o.toHost()));
    expect(Array.from(host[0] as Float32Array)).toEqual([1, 2, -3.5]);
    expect(Array.from(host[1] as Float32Array)).toEqual([1, 3, -3.5]);
    expect(Array.from(host[2] as BigInt64Array)).toEqual([2n, -(2n ** 41n), 2n ** 62n]);
    expect(Array.from(host[3] as Uint32Array)).toEqual([9, 0, 4294836225]); // wraps mod 2^32
    expect(Array.from(host[4] as Uint8Array)).toEqual([2, 200, 144]); // wraps mod 256
    expect(Array.from(host[5] as Uint8Array)).toEqual([0, 0, 0]);
    expect(Array.from(host[6] as Uint16Array)).toEqual([0x4000, 0x4080, 0xc0e0]); // 2, 4, -7
  });

  it("donates inputs the program marks, and keeps them when told not to", async () => {
    const client = await testClient();
    const exe = await client.compile(`module {
  func.func @main(%acc: tensor<4xf32> {tf.aliasing_output = 0 : i32}, %x: tensor<4xf32>) -> tensor<4xf32> {
    %0 = stablehlo.add %acc, %x : tensor<4xf32>
    return %0 : tensor<4xf32>
  }
}`);
    expect(exe.donorParameters).toEqual([0]);
    expect(exe.memoryStats?.aliasBytes).toBe(16);
    const x = client.bufferFromHost(new Float32Array([1, 1, 1, 1]), "f32", [4]);
    for (const dispatch of ["auto", "worker"] as const) {
      const acc = client.bufferFromHost(new Float32Array([1, 2, 3, 4]), "f32", [4]);
      const [out] = await exe.run([acc, x], { dispatch });
      expect(acc.donated).toBe(true);
      expect(acc.disposed).toBe(true);
      expect(x.donated).toBe(false);
      expect(() => acc.nativeInfo()).toThrow(/was donated to main/); // its handle is released too
      await expect(acc.toHost()).rejects.toMatchObject({
        code: "ERR_DISPOSED",
        message: expect.stringContaining("was donated to main and no longer holds data"),
      });
      await expect(exe.run([acc, x])).rejects.toMatchObject({ code: "ERR_DISPOSED" });
      expect(Array.from(await out!.toHostAs("f32"))).toEqual([2, 3, 4, 5]);

      for (const donate of [false, [0]] as const) {
        const keep = client.bufferFromHost(new Float32Array([5, 5, 5, 5]), "f32", [4]);
        const [o] = await exe.run([keep, x], { donate, dispatch });
        expect(keep.donated).toBe(false);
        expect(Array.from(await keep.toHost())).toEqual([5, 5, 5, 5]);
        expect(Array.from(await o!.toHostAs("f32"))).toEqual([6, 6, 6, 6]);
        keep.dispose();
      }
    }
    await expect(exe.run([x, x], { donate: [7] })).rejects.toThrow(
      /donate: 7 is not an argument index of main \(0\.\.1\)/,
    );
  });

  it("serializes an executable to disk and runs it after deserializing", async () => {
    const client = await testClient();
    const [m, k, n] = [4, 8, 2];
    const exe = await client.compile(matmulModule(m, k, n));
    const file = join(mkdtempSync(join(tmpdir(), "tessera-exe-")), "matmul.pjrt");
    writeFileSync(file, exe.serialize());
    exe.dispose();
    expect(exe.disposed).toBe(true);
    await expect(exe.run([])).rejects.toMatchObject({
      code: "ERR_DISPOSED",
      message: "execute: executable main has been disposed",
    });
    const back = await client.deserialize(new Uint8Array(readFileSync(file)));
    expect(back.outputTypes).toEqual([{ dtype: "f32", shape: [m, n] }]);
    expect(back.parameterTypes).toEqual([
      { dtype: "f32", shape: [m, k] },
      { dtype: "f32", shape: [k, n] },
    ]);
    const a = randomF32(m * k, 3);
    const b = randomF32(k * n, 4);
    const [c] = await back.run([client.bufferFromHost(a, "f32", [m, k]), client.bufferFromHost(b, "f32", [k, n])]);
    expect(maxAbsDiff(await c!.toHostAs("f32"), matmulRef(a, b, m, k, n))).toBeLessThan(1e-5);
    await expect(client.deserialize(new Uint8Array([1, 2, 3]))).rejects.toMatchObject({
      name: "PjrtError",
      op: "PJRT_Executable_DeserializeAndLoad",
    });
  });

  it("keeps 100 executions in flight at once without blocking the event loop", async () => {
    const client = await testClient();
    const n = 192;
    const exe = await client.compile(`module {
  func.func @main(%x: tensor<${n}x${n}xf32>, %s: tensor<f32>) -> tensor<${n}x${n}xf32> {
    %0 = stablehlo.dot_general %x, %x, contracting_dims = [1] x [0] : (tensor<${n}x${n}xf32>, tensor<${n}x${n}xf32>) -> tensor<${n}x${n}xf32>
    %1 = stablehlo.dot_general %0, %x, contracting_dims = [1] x [0] : (tensor<${n}x${n}xf32>, tensor<${n}x${n}xf32>) -> tensor<${n}x${n}xf32>
    %2 = stablehlo.broadcast_in_dim %s, dims = [] : (tensor<f32>) -> tensor<${n}x${n}xf32>
    %3 = stablehlo.add %1, %2 : tensor<${n}x${n}xf32>
    return %3 : tensor<${n}x${n}xf32>
  }
}`);
    const x = client.bufferFromHost(new Float32Array(n * n).fill(0.01), "f32", [n, n]);
    const shifts = Array.from({ length: 100 }, (_, i) => client.bufferFromHost(new Float32Array([i]), "f32", []));
    await Promise.all(shifts.map((s) => s.ready()));
    const t0 = performance.now();
    const calls = shifts.map((s) => exe.run([x, s]));
    const launch = performance.now() - t0;
    const queuedAtLaunch = client.queued; // beyond the inline limit, calls wait on the dispatcher thread
    let ticks = 0;
    const timer = setInterval(() => ticks++, 1);
    const outs = await Promise.all(calls);
    const values = await Promise.all(outs.map(async ([o]) => (await o!.toHostAs("f32"))[0]!));
    clearInterval(timer);
    const total = performance.now() - t0;
    const base = n * n * 0.01 ** 3; // every element of x@x@x
    values.forEach((v, i) => {
      expect(v).toBeCloseTo(base + i, 3);
    });
    // Launching the 100 must not wait for the plugin's in-flight limit (32 per device on CPU).
    expect(launch).toBeLessThan(Math.max(100, total / 3));
    expect(ticks).toBeGreaterThan(0);
    // On CPU the executions are slow enough for the in-flight limit to be reached while launching.
    if (client.platform === "cpu") expect(queuedAtLaunch).toBeGreaterThan(0);
    expect(client.queued).toBe(0);
  });
});
