// Sharded arrays: a global host array placed as per-device blocks and gathered back; sharded jit results feed the next call in place.
import { beforeAll, describe, expect, it } from "vitest";
import "./helpers.ts";
import { tx } from "tessera";
import { getClient, ShardedBuffer, type Client } from "../../src/backend/runtime/index.ts";
import { makeMesh, shardBox, type Sharding } from "../../src/ir/sharding.ts";

let client: Client;
let eight = false;
beforeAll(async () => {
  client = await getClient();
  eight = client.devices.length === 8;
});

const iota = (n: number) => Float32Array.from({ length: n }, (_, i) => i);

describe("ShardedBuffer", () => {
  it("places each device's block and gathers the global array back, for every layout", async () => {
    if (!eight) return;
    const m = makeMesh({ x: 2, y: 4 });
    const shape = [8, 16, 4];
    const data = iota(8 * 16 * 4);
    const layouts: Sharding[] = [
      { dims: [["x"], ["y"], []] },
      { dims: [["y"], [], ["x"]] },
      { dims: [[], ["x", "y"], []] },
      { dims: [["y", "x"], [], []] },
      { dims: [[], [], []] },
    ];
    for (const s of layouts) {
      const sb = ShardedBuffer.fromHost(client, data, "f32", shape, m, s, client.devices);
      // Partition 5 (x 1, y 1) holds exactly its box of the global array.
      const { start, size } = shardBox(shape, s, m, 5);
      const block = await sb.shards[5]!.toHostAs("f32");
      expect(sb.shards[5]!.device).toBe(client.devices[5]);
      expect(block[0]).toBe(data[(start[0]! * 16 + start[1]!) * 4 + start[2]!]);
      expect(block.length).toBe(size.reduce((a, b) => a * b, 1));
      expect(Array.from((await sb.toHost()) as Float32Array)).toEqual(Array.from(data));
      sb.dispose();
    }
  });

  it("moves bf16 as raw bits and s32 as is", async () => {
    if (!eight) return;
    const m = makeMesh({ d: 8 });
    const bits = Uint16Array.from({ length: 16 }, (_, i) => 0x3f80 + i);
    const sb = ShardedBuffer.fromHost(client, bits, "bf16", [16], m, { dims: [["d"]] }, client.devices);
    expect(Array.from((await sb.toHost()) as Uint16Array)).toEqual(Array.from(bits));
    const ints = Int32Array.from({ length: 8 * 3 }, (_, i) => i - 5);
    const si = ShardedBuffer.fromHost(client, ints, "s32", [8, 3], m, { dims: [["d"], []] }, client.devices);
    expect(Array.from((await si.toHost()) as Int32Array)).toEqual(Array.from(ints));
  });
});

describe("sharded DeviceArrays", () => {
  it("array(data, { mesh, spec }) and put() split an array; toArray gathers it", async () => {
    if (!eight) return;
    const m = tx.mesh({ data: 2, model: 4 });
    const a = tx.array(iota(64), { shape: [8, 8], mesh: m, spec: tx.P("data", "model") });
    expect(a.sharding?.sharding).toEqual({ dims: [["data"], ["model"]] });
    expect(Array.from(await a.toArray())).toEqual(Array.from(iota(64)));
    const b = await tx.put(tx.array(iota(64), { shape: [8, 8] }), m, tx.P(null, ["data", "model"]));
    expect(b.sharding?.sharding).toEqual({ dims: [[], ["data", "model"]] });
    expect(Array.from(await b.toArray())).toEqual(Array.from(iota(64)));
    expect(() => tx.array(iota(6), { shape: [6], mesh: m, spec: tx.P("model") })).toThrow(
      /dimension 0 of f32\[6\] has size 6, which 'model' \(4 devices\) does not divide/,
    );
  });

  it("a sharded jit's results feed the next call in place (donated shards), and read back whole", async () => {
    if (!eight) return;
    const m = tx.mesh({ data: 2, model: 4 });
    const f = tx.jit((x: tx.Tensor) => x.mul(2), {
      mesh: m,
      in: [tx.P("data", "model")],
      out: tx.P("data", "model"),
      donate: 0,
    });
    const y = (await f(tx.array(iota(64), { shape: [8, 8] }))) as tx.DeviceArray; // placed from one device through the host
    expect(y.sharding?.sharding).toEqual({ dims: [["data"], ["model"]] });
    const z = (await f(y)) as tx.DeviceArray;
    expect(y.donated).toBe(true); // its own shards went in, and XLA reused them for the output
    expect(Array.from(await z.toArray())).toEqual(Array.from(iota(64), (v) => 4 * v));
    await expect(y.toArray()).rejects.toThrow(/was donated to a jit call/);
    // A single-device program takes a sharded array too (gathered onto one device).
    const g = tx.jit((x: tx.Tensor) => x.sum());
    expect(await ((await g(z)) as tx.DeviceArray).item()).toBe((4 * (63 * 64)) / 2);
  });
});
