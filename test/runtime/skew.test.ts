// Runtime: version skew — the 0.81-header addon drives lammps-jax-pjrt-cpu (PJRT 0.115, the CUDA plugin's XLA) the same way.
import { describe, expect, it } from "vitest";
import { getClient, type Client } from "../../src/backend/runtime/index.ts";
import { nativeAddon } from "../../src/backend/runtime/native.ts";
import {
  ADD_F32,
  REDUCE_SUM_ROWS,
  lammpsAvailable,
  matmulModule,
  matmulRef,
  maxAbsDiff,
  randomF32,
} from "./helpers.ts";

const available = lammpsAvailable();
if (!available)
  console.warn(
    "lammps-jax-pjrt-cpu is not in the cache (npx tsx scripts/install.ts fetches it): skipping the 0.115 cross-check",
  );

describe.skipIf(!available)("plugin built from a newer PJRT C API (0.115) than the header (0.81)", () => {
  const client = (): Promise<Client> => getClient({ plugin: "lammps-jax-pjrt-cpu" });

  it("loads, reports its newer API and a larger PJRT_Api, and offers every function the runtime uses", async () => {
    const c = await client();
    const header = nativeAddon().headerInfo();
    expect(c.plugin.apiVersion).toBe("0.115");
    expect(c.plugin.headerApiVersion).toBe("0.81");
    expect(c.plugin.apiStructSize).toBeGreaterThan(header.apiStructSize);
    expect(Object.values(c.plugin.slots).every(Boolean)).toBe(true);
    expect(c.pluginAttributes.stablehloCurrentVersion).toBe("1.20.0");
    expect(c.devices.length).toBe(8);
  });

  it("compiles and runs add, dot_general and reduce, with padded args structs", async () => {
    const c = await client();
    const add = await c.compile(ADD_F32);
    const a = c.bufferFromHost(new Float32Array([1, 2, 3, 4]), "f32", [4]);
    expect(Array.from(await (await add.run([a, a]))[0]!.toHostAs("f32"))).toEqual([2, 4, 6, 8]);
    const mm = await c.compile(matmulModule(4, 8, 2));
    const x = randomF32(32, 5);
    const y = randomF32(16, 6);
    const [z] = await mm.run([c.bufferFromHost(x, "f32", [4, 8]), c.bufferFromHost(y, "f32", [8, 2])]);
    expect(maxAbsDiff(await z!.toHostAs("f32"), matmulRef(x, y, 4, 8, 2))).toBeLessThan(1e-5);
    const red = await c.compile(REDUCE_SUM_ROWS);
    const [s] = await red.run([
      c.bufferFromHost(
        Float32Array.from({ length: 32 }, (_, i) => i),
        "f32",
        [4, 8],
      ),
    ]);
    expect(Array.from(await s!.toHostAs("f32"))).toEqual([28, 92, 156, 220]);
  });

  it("donates, serializes, and partitions with Shardy like the 0.81 plugin", async () => {
    const c = await client();
    const exe = await c.compile(`module {
  func.func @main(%acc: tensor<4xf32> {tf.aliasing_output = 0 : i32}, %x: tensor<4xf32>) -> tensor<4xf32> {
    %0 = stablehlo.add %acc, %x : tensor<4xf32>
    return %0 : tensor<4xf32>
  }
}`);
    const acc = c.bufferFromHost(new Float32Array([1, 2, 3, 4]), "f32", [4]);
    const x = c.bufferFromHost(new Float32Array([1, 1, 1, 1]), "f32", [4]);
    const [out] = await exe.run([acc, x]);
    expect(acc.donated).toBe(true);
    expect(Array.from(await out!.toHostAs("f32"))).toEqual([2, 3, 4, 5]);
    const again = await c.deserialize(exe.serialize());
    const [out2] = await again.run([out!, x], { donate: false });
    expect(Array.from(await out2!.toHostAs("f32"))).toEqual([3, 4, 5, 6]);

    const sharded = await c.compile(
      `module {
  sdy.mesh @mesh = <["x"=8]>
  func.func @main(%a: tensor<16x4xf32> {sdy.sharding = #sdy.sharding<@mesh, [{"x"}, {}]>}) -> (tensor<4xf32> {sdy.sharding = #sdy.sharding<@mesh, [{}]>}) {
    %init = stablehlo.constant dense<0.000000e+00> : tensor<f32>
    %0 = stablehlo.reduce(%a init: %init) applies stablehlo.add across dimensions = [0] : (tensor<16x4xf32>, tensor<f32>) -> tensor<4xf32>
    return %0 : tensor<4xf32>
  }
}`,
      { numPartitions: 8 },
    );
    expect(sharded.collectives()["all-reduce"]).toBeGreaterThanOrEqual(1);
    const outs = await sharded.execute(
      sharded.devices.map((d, p) => [
        c.bufferFromHost(
          Float32Array.from({ length: 8 }, (_, i) => p * 8 + i),
          "f32",
          [2, 4],
          d,
        ),
      ]),
    );
    // column sums of 0..63 laid out 16 x 4
    for (const [o] of outs) expect(Array.from(await o!.toHostAs("f32"))).toEqual([480, 496, 512, 528]);
  });
});
