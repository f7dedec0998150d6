// Runtime: every failure is a clear JS error (XLA's message and code, or our check first) and the process lives on.
import { describe, expect, it } from "vitest";
import {
  PjrtError,
  RuntimeError,
  REQUIRED_FUNCTIONS,
  createClient,
  getClient,
  loadPlugin,
} from "../../src/backend/runtime/index.ts";
import { nativeAddon } from "../../src/backend/runtime/native.ts";
import { ADD_F32, buildFakePlugin, buildNotAPlugin, headerCached, testClient } from "./helpers.ts";

describe("errors", () => {
  it("turns a malformed module into a PjrtError with XLA's message and code", async () => {
    const client = await testClient();
    const err = await client.compile("module { func.func @main() { garbage } }").catch((e: unknown) => e);
    expect(err).toBeInstanceOf(PjrtError);
    const e = err as PjrtError;
    expect(e.op).toBe("PJRT_Client_Compile");
    expect(typeof e.pjrtCode).toBe("number");
    expect(e.code).not.toBe("OK");
    expect(e.xlaMessage).toMatch(/garbage|custom op|expected/);
    expect(e.message).toBe(`compile: PJRT_Client_Compile failed (${e.code}): ${e.xlaMessage}`);
  });

  it("reports a type error in the module as XLA words it", async () => {
    const client = await testClient();
    const bad = ADD_F32.replace(
      "%0 = stablehlo.add %arg0, %arg1 : tensor<4xf32>",
      "%0 = stablehlo.add %arg0, %arg1 : (tensor<4xf32>, tensor<4xf32>) -> tensor<8xf32>",
    );
    await expect(client.compile(bad)).rejects.toMatchObject({ name: "PjrtError", op: "PJRT_Client_Compile" });
  });

  it("refuses programs and options that would abort XLA, before XLA sees them", async () => {
    const client = await testClient();
    await expect(client.compile("")).rejects.toMatchObject({
      code: "ERR_PROGRAM",
      message: expect.stringContaining("empty program"),
    });
    await expect(client.compile("module { }")).rejects.toMatchObject({
      code: "ERR_PROGRAM",
      message: expect.stringContaining("no @main"),
    });
    await expect(client.compile(ADD_F32, { numPartitions: 0 })).rejects.toMatchObject({
      code: "ERR_COMPILE_OPTIONS",
      message: "numPartitions must be a positive integer, got 0",
    });
    await expect(client.compile(ADD_F32, { numReplicas: 1.5 })).rejects.toMatchObject({ code: "ERR_COMPILE_OPTIONS" });
    // The addon refuses empty options even if TypeScript were bypassed (XLA would SIGABRT).
    expect(() => nativeAddon().compile(client.handle, ADD_F32, new Uint8Array())).toThrow(
      expect.objectContaining({
        code: "TESSERA_NATIVE",
        message: "compile: refusing empty compile options (XLA aborts on them)",
      }),
    );
    const mixed = `module {
  sdy.mesh @mesh = <["x"=2]>
  func.func @main(%a: tensor<4xf32> {sdy.sharding = #sdy.sharding<@mesh, [{"x"}]>}) -> (tensor<4xf32> {mhlo.sharding = "{replicated}"}) {
    return %a : tensor<4xf32>
  }
}`;
    await expect(client.compile(mixed, { numPartitions: 2 })).rejects.toMatchObject({
      code: "ERR_SHARDING_DIALECTS",
      message: expect.stringContaining("mixes mhlo.sharding (GSPMD) with sdy (Shardy)"),
    });
    const gspmdArgsOnly = `module {
  func.func @main(%a: tensor<8xf32> {mhlo.sharding = "{devices=[2]<=[2]}"}) -> tensor<8xf32> {
    return %a : tensor<8xf32>
  }
}`;
    await expect(client.compile(gspmdArgsOnly, { numPartitions: 2, useShardy: true })).rejects.toMatchObject({
      code: "ERR_SHARDING_DIALECTS",
      message: expect.stringContaining("the Shardy partitioner aborts on GSPMD shardings"),
    });
    await expect(
      client.compile(ADD_F32.replace("module {", "module attributes {mhlo.num_partitions = 2 : i32} {")),
    ).rejects.toMatchObject({
      code: "ERR_COMPILE_OPTIONS",
      message: "the module declares mhlo.num_partitions = 2 but the options ask for 1; make them agree",
    });
    await expect(client.compile(ADD_F32, { deviceAssignment: [0, 0], numPartitions: 2 })).rejects.toMatchObject({
      message: "device 0 appears twice in deviceAssignment",
    });
    await expect(client.compile(ADD_F32, { device: 42 })).rejects.toMatchObject({ code: "ERR_DEVICE" });
    if (client.devices.length >= 2) {
      // GSPMD with its own partitioner compiles fine: the guard is only for the abort path.
      const exe = await client.compile(gspmdArgsOnly, { numPartitions: 2 });
      expect(exe.parameterTypes).toEqual([{ dtype: "f32", shape: [4] }]);
    }
  });

  it("checks argument count, dtype, shape, device and liveness before executing", async () => {
    const client = await testClient();
    const exe = await client.compile(ADD_F32);
    const a = client.bufferFromHost(new Float32Array(4), "f32", [4]);
    const wrongShape = client.bufferFromHost(new Float32Array(8), "f32", [8]);
    const wrongType = client.bufferFromHost(new Int32Array(4), "s32", [4]);
    await expect(exe.run([a])).rejects.toMatchObject({
      code: "ERR_ARG_COUNT",
      message: "main takes 2 argument(s); got 1",
    });
    await expect(exe.run([a, wrongShape])).rejects.toMatchObject({
      code: "ERR_ARG_TYPE",
      message: "argument 1 of main: expected f32[4], got f32[8]",
    });
    await expect(exe.run([wrongType, a])).rejects.toMatchObject({
      code: "ERR_ARG_TYPE",
      message: "argument 0 of main: expected f32[4], got s32[4]",
    });
    await expect(exe.run([a, {} as never])).rejects.toMatchObject({
      code: "ERR_ARG_TYPE",
      message: "argument 1 of main is not a DeviceBuffer",
    });
    if (client.devices.length > 1) {
      const elsewhere = client.bufferFromHost(new Float32Array(4), "f32", [4], client.devices[1]);
      await expect(exe.run([a, elsewhere])).rejects.toMatchObject({
        code: "ERR_DEVICE",
        message: `argument 1 of main is on ${client.devices[1]}; the executable runs it on ${client.devices[0]}`,
      });
    }
    const gone = client.bufferFromHost(new Float32Array(4), "f32", [4]);
    gone.dispose();
    await expect(exe.run([a, gone])).rejects.toMatchObject({
      code: "ERR_DISPOSED",
      message: `argument 1 of main: buffer f32[4] on ${client.devices[0]} has been disposed`,
    });
    // The addon checks too, if TypeScript were bypassed.
    expect(() => nativeAddon().execute({} as never, [], null, false)).toThrow(
      expect.objectContaining({
        name: "TypeError",
        code: "TESSERA_NATIVE",
        message: "execute: executable must be a native executable handle, got an object",
      }),
    );
    // ... and after all that, the process runs programs as before.
    const [sum] = await exe.run([a, a]);
    expect(Array.from(await sum!.toHostAs("f32"))).toEqual([0, 0, 0, 0]);
  });

  it("refuses a buffer of another client", async () => {
    const client = await testClient();
    if (client.platform !== "cpu") return;
    const other = await getClient({ cpuDeviceCount: 2 });
    const exe = await client.compile(ADD_F32);
    const b = other.bufferFromHost(new Float32Array(4), "f32", [4]);
    await expect(exe.run([b, b])).rejects.toMatchObject({ code: "ERR_CLIENT_MISMATCH" });
  });

  it("names a missing plugin, a file that is no plugin, and a plugin of another major version", async () => {
    await expect(getClient({ plugin: "/nonexistent/pjrt_plugin.so" })).rejects.toMatchObject({
      code: "ERR_PLUGIN_NOT_FOUND",
      message: expect.stringContaining("PJRT plugin not found: /nonexistent/pjrt_plugin.so (from the `plugin` option)"),
    });
    if (!headerCached()) return; // the fake plugins need the cached header and a C compiler
    const notPlugin = buildNotAPlugin();
    expect(() => loadPlugin(notPlugin)).toThrow(
      expect.objectContaining({
        code: "ERR_PLUGIN_LOAD",
        message: expect.stringContaining("is not a PJRT plugin: it exports no GetPjrtApi"),
      }),
    );
    const major1 = buildFakePlugin({ major: 1 });
    expect(() => loadPlugin(major1)).toThrow(
      expect.objectContaining({
        code: "ERR_PLUGIN_LOAD",
        message: expect.stringContaining("speaks PJRT C API 1.81, but this addon was built for major 0"),
      }),
    );
  });

  it.skipIf(!headerCached())(
    "checks function slots against the plugin's PJRT_Api.struct_size and refuses a plugin lacking a needed one",
    async () => {
      // Every slot of this fake plugin holds a pointer, but its struct_size ends before
      // PJRT_Executable_OutputElementTypes: the two slots past it must count as missing.
      const old = buildFakePlugin({ cutAt: "PJRT_Executable_OutputElementTypes" });
      let err: unknown;
      try {
        loadPlugin(old);
      } catch (e) {
        err = e;
      }
      expect(err).toBeInstanceOf(RuntimeError);
      expect((err as RuntimeError).code).toBe("ERR_PLUGIN_TOO_OLD");
      expect((err as RuntimeError).message).toMatch(
        /^PJRT plugin .*fake_pjrt\.so \(C API 0\.81, PJRT_Api of \d+ bytes; header 0\.81: 984 bytes\) lacks PJRT_Executable_OutputElementTypes, PJRT_Executable_OutputDimensions, which Tessera needs$/,
      );
      await expect(createClient({ plugin: old })).rejects.toMatchObject({ code: "ERR_PLUGIN_TOO_OLD" });
      // A complete fake passes the checks (it is never asked to create a client).
      const full = loadPlugin(buildFakePlugin({}));
      expect(REQUIRED_FUNCTIONS.every((f) => full.slots[f])).toBe(true);
    },
  );
});
