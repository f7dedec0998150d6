// Runtime: buffers from TypedArrays to devices and back for every dtype, shape checks, dispose, GC, flat memory.
import { describe, expect, it } from "vitest";
import { nativeStats, type RuntimeDType, type HostArray } from "../../src/backend/runtime/index.ts";
import { gc, quiesce, settle, testClient, toBf16Bits } from "./helpers.ts";

describe("buffers", () => {
  const samples: { [D in RuntimeDType]: HostArray<D> } = {
    f32: new Float32Array([1.5, -2, 3.25, 0, 1e-8, -1e30]),
    bf16: new Uint16Array([0x3f80, 0x4000, 0xc060, 0x0000, 0x7f80, 0x8001]),
    f16: new Uint16Array([0x3c00, 0x4000, 0xc300, 0x0000, 0x7c00, 0x0001]),
    s32: new Int32Array([1, -2, 2147483647, -2147483648, 0, 7]),
    s64: new BigInt64Array([1n, -2n, 9007199254740993n, -(2n ** 63n), 0n, 7n]),
    u32: new Uint32Array([1, 2, 4294967295, 0, 123456, 7]),
    u8: new Uint8Array([0, 1, 255, 128, 3, 7]),
    bool: new Uint8Array([1, 0, 0, 1, 1, 0]),
  };

  for (const dtype of Object.keys(samples) as RuntimeDType[]) {
    it(`round-trips ${dtype} through a device unchanged`, async () => {
      const client = await testClient();
      const data = samples[dtype];
      for (const copy of [false, true]) {
        const buf = client.bufferFromHost(data, dtype, [2, 3], client.devices.at(-1), { copy });
        expect(buf.dtype).toBe(dtype);
        expect(buf.shape).toEqual([2, 3]);
        expect(buf.device).toBe(client.devices.at(-1));
        const back = await buf.toHost();
        expect(back.constructor).toBe(data.constructor);
        expect(Array.from(back as ArrayLike<unknown>)).toEqual(Array.from(data as ArrayLike<unknown>));
        const info = buf.nativeInfo();
        expect(info.dims).toEqual([2, 3]);
        buf.dispose();
      }
    });
  }

  it("handles scalars and empty arrays", async () => {
    const client = await testClient();
    const s = client.bufferFromHost(new Float32Array([42]), "f32", []);
    expect(Array.from(await s.toHost())).toEqual([42]);
    const e = client.bufferFromHost(new Float32Array(0), "f32", [0, 3]);
    expect((await e.toHost()).length).toBe(0);
    s.dispose();
    e.dispose();
  });

  it("keeps bf16 as raw bits", async () => {
    const client = await testClient();
    const bits = new Uint16Array([1, -2.5, 3.140625].map(toBf16Bits));
    expect(Array.from(bits)).toEqual([0x3f80, 0xc020, 0x4049]);
    const b = client.bufferFromHost(bits, "bf16", [3]);
    expect(Array.from(await b.toHost())).toEqual(Array.from(bits));
    b.dispose();
  });

  it("checks shapes against data length and the TypedArray against the dtype", async () => {
    const client = await testClient();
    expect(() => client.bufferFromHost(new Float32Array(6), "f32", [2, 2])).toThrow(
      expect.objectContaining({
        code: "ERR_SHAPE",
        message: "shape [2, 2] needs 4 elements, the Float32Array holds 6",
      }),
    );
    expect(() => client.bufferFromHost(new Float32Array(4) as unknown as Int32Array, "s32", [4])).toThrow(
      expect.objectContaining({ code: "ERR_DTYPE", message: "dtype s32 needs a Int32Array, got Float32Array" }),
    );
    expect(() => client.bufferFromHost(new Float32Array(4), "f64" as "f32", [4])).toThrow(/unknown dtype "f64"/);
    expect(() => client.bufferFromHost(new Float32Array(4), "f32", [2, -2])).toThrow(/invalid dimension -2/);
    expect(() => client.bufferFromHost(new Float32Array(4), "f32", [2, 2.5])).toThrow(/invalid dimension 2.5/);
    expect(() => client.bufferFromHost(new Float32Array(4), "f32", [4], 99)).toThrow(/no device with id 99/);
  });

  it("refuses a disposed buffer with a clear error, and the process lives on", async () => {
    const client = await testClient();
    const b = client.bufferFromHost(new Float32Array([1, 2]), "f32", [2]);
    b.dispose();
    await expect(b.toHost()).rejects.toMatchObject({
      code: "ERR_DISPOSED",
      message: `toHost: buffer f32[2] on ${client.devices[0]} has been disposed`,
    });
    await expect(b.ready()).rejects.toThrow(/has been disposed/);
    const c = client.bufferFromHost(new Float32Array([3]), "f32", [1]);
    expect(Array.from(await c.toHost())).toEqual([3]);
    c.dispose();
  });

  it("copies between devices", async () => {
    const client = await testClient();
    if (client.devices.length < 2) return;
    const a = client.bufferFromHost(new Int32Array([5, 6]), "s32", [2]);
    const b = a.copyTo(client.devices[1]!);
    expect(b.device).toBe(client.devices[1]);
    expect(Array.from(await b.toHost())).toEqual([5, 6]);
    a.dispose();
    b.dispose();
  });

  it("uploads large arrays asynchronously and keeps the host array alive exactly until PJRT is done", async () => {
    const client = await testClient();
    const n = 8 << 20; // 32 MiB: large enough for the plugin to copy after returning
    await quiesce();
    const holds0 = nativeStats().hostHolds;
    // The only reference to the host array is the one the runtime keeps for PJRT.
    const b = (() => {
      const data = new Float32Array(n);
      for (let i = 0; i < n; i += 4096) data[i] = i;
      return client.bufferFromHost(data, "f32", [n]);
    })();
    const heldDuringTransfer = nativeStats().hostHolds - holds0;
    gc(); // must not free the array while the plugin may still read it
    await b.ready();
    for (let i = 0; i < 20 && nativeStats().hostHolds > holds0; i++) await settle();
    expect(nativeStats().hostHolds).toBe(holds0); // released once PJRT signalled done_with_host_buffer
    expect(heldDuringTransfer).toBeLessThanOrEqual(1);
    const back = await b.toHost();
    expect(back[4096 * 100]).toBe(4096 * 100);
    expect(back[n - 4096]).toBe(n - 4096);
    b.dispose();
    // With copy: true the plugin copies during the call and nothing is held.
    const c = client.bufferFromHost(new Float32Array(n), "f32", [n], undefined, { copy: true });
    expect(nativeStats().hostHolds).toBe(holds0);
    c.dispose();
  });

  it("runs 10,000 create/dispose cycles with flat memory", async () => {
    const client = await testClient();
    const data = new Float32Array(1024);
    const cycle = async (count: number) => {
      for (let i = 0; i < count; i++) {
        const b = client.bufferFromHost(data, "f32", [32, 32]);
        b.dispose();
        if (i % 1000 === 999) await settle();
      }
      await settle();
      gc();
    };
    await cycle(1000); // warm up allocators and JIT
    const live0 = nativeStats().liveBuffers;
    const rss0 = process.memoryUsage().rss;
    await cycle(10_000);
    const grew = process.memoryUsage().rss - rss0;
    expect(nativeStats().liveBuffers).toBe(live0);
    expect(grew).toBeLessThan(24 << 20); // 10,000 x 4 KiB would be 40 MiB if buffers leaked
  });

  it("frees buffers that are dropped without dispose when they are garbage collected", async () => {
    const client = await testClient();
    await quiesce();
    const live0 = nativeStats().liveBuffers;
    (() => {
      for (let i = 0; i < 500; i++) client.bufferFromHost(new Float32Array(256), "f32", [256]);
    })();
    expect(nativeStats().liveBuffers).toBe(live0 + 500);
    for (let i = 0; i < 10 && nativeStats().liveBuffers > live0; i++) {
      gc();
      await settle();
    }
    expect(nativeStats().liveBuffers).toBe(live0);
  });
});
