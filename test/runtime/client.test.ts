// Runtime: plugin loading, attributes, client options, devices, plugin choice by option and environment.
import { describe, expect, it } from "vitest";
import { getClient, nativeStats, resolvePlugin, PLUGIN_ENV, RuntimeError } from "../../src/backend/runtime/index.ts";
import { CPU_DEVICES_ENV, createClient, setDefaultCpuDevices } from "../../src/backend/runtime/client.ts";
import { TEST_CPU_DEVICES, cpuPluginCached, quiesce, testClient } from "./helpers.ts";

describe("client", () => {
  it("loads the plugin, reads its attributes and lists devices with ids and kinds", async () => {
    const client = await testClient();
    expect(client.plugin.apiVersion).toMatch(/^0\.\d+$/);
    expect(client.plugin.headerApiVersion).toBe("0.81");
    expect(client.pluginAttributes.stablehloCurrentVersion).toMatch(/^\d+\.\d+\.\d+$/);
    expect(client.pluginAttributes.stablehloMinimumVersion).toMatch(/^\d+\.\d+\.\d+$/);
    expect(typeof client.pluginAttributes.xlaVersion).toBe("number");
    expect(client.devices.length).toBeGreaterThan(0);
    if (client.platform === "cpu") {
      expect(client.platformName).toBe("cpu");
      expect(client.devices.map((d) => d.id)).toEqual(Array.from({ length: TEST_CPU_DEVICES }, (_, i) => i));
      expect(client.devices.every((d) => d.kind === "cpu")).toBe(true);
      expect(client.memoryStats()).toBeUndefined(); // the CPU plugin keeps no allocator stats
    } else {
      expect(client.memoryStats()?.bytesInUse).toBeGreaterThanOrEqual(0);
    }
    expect(client.devices.map((d) => d.index)).toEqual(client.devices.map((_, i) => i));
    expect(String(client.devices[0])).toBe(`${client.platformName}:${client.devices[0]!.id}`);
    expect(client.device(client.devices[0]!.id)).toBe(client.devices[0]);
    expect(() => client.device(999)).toThrow(/no device with id 999/);
  });

  it("shares one client per plugin and options, and creates clients with other device counts", async () => {
    const a = await testClient();
    const b = await testClient();
    expect(a).toBe(b);
    if (a.platform !== "cpu") return;
    const two = await getClient({ cpuDeviceCount: 2 });
    expect(two).not.toBe(a);
    expect(two.devices.length).toBe(2);
    expect(two.defaultDeviceAssignment(1, 2)).toEqual([0, 1]);
  });

  it("takes the CPU device count from $TESSERA_CPU_DEVICES, then setDefaultCpuDevices, when not given", async () => {
    if ((await testClient()).platform !== "cpu") return;
    const saved = process.env[CPU_DEVICES_ENV];
    try {
      process.env[CPU_DEVICES_ENV] = "3";
      expect((await createClient({ platform: "cpu" })).devices.length).toBe(3);
      delete process.env[CPU_DEVICES_ENV];
      setDefaultCpuDevices(1);
      expect((await createClient({ platform: "cpu" })).devices.length).toBe(1);
      expect((await createClient({ platform: "cpu", cpuDeviceCount: 2 })).devices.length).toBe(2);
      process.env[CPU_DEVICES_ENV] = "many";
      await expect(createClient({ platform: "cpu" })).rejects.toThrow(
        /\$TESSERA_CPU_DEVICES must be a positive integer, got "many"/,
      );
    } finally {
      setDefaultCpuDevices(8);
      if (saved === undefined) delete process.env[CPU_DEVICES_ENV];
      else process.env[CPU_DEVICES_ENV] = saved;
    }
  });

  it("rejects bad client options before creating anything", async () => {
    await expect(getClient({ cpuDeviceCount: 0, platform: "cpu" })).rejects.toThrow(
      /cpuDeviceCount must be a positive integer, got 0/,
    );
    await expect(getClient({ memoryFraction: 2, platform: "cuda" })).rejects.toThrow(
      /memoryFraction must be in \(0, 1\], got 2/,
    );
    await expect(getClient({ inlineDispatchLimit: -1 })).rejects.toThrow(
      /inlineDispatchLimit must be a non-negative integer/,
    );
  });

  it("resolves the plugin from the option, then the environment, then the default", () => {
    const saved = process.env[PLUGIN_ENV];
    try {
      delete process.env[PLUGIN_ENV];
      if (cpuPluginCached()) {
        expect(resolvePlugin().source).toBe("default");
        expect(resolvePlugin().name).toBe("xla-cpu-pjrt");
        expect(resolvePlugin("xla-cpu-pjrt").source).toBe("option");
      } else {
        expect(() => resolvePlugin()).toThrow(
          /PJRT plugin xla-cpu-pjrt \(from the default\) is not in the cache .* run `npm install`/,
        );
      }
      process.env[PLUGIN_ENV] = "/nonexistent/libpjrt.so";
      expect(() => resolvePlugin()).toThrow(
        /PJRT plugin not found: \/nonexistent\/libpjrt\.so \(from \$TESSERA_PJRT_PLUGIN\)/,
      );
      expect(() => resolvePlugin("no-such-plugin")).toThrow(
        /PJRT plugin not found: .*no-such-plugin \(from the `plugin` option\)/,
      );
    } finally {
      if (saved === undefined) delete process.env[PLUGIN_ENV];
      else process.env[PLUGIN_ENV] = saved;
    }
  });

  it("counts live native objects", async () => {
    const client = await testClient();
    await quiesce();
    const before = nativeStats().liveBuffers;
    const b = client.bufferFromHost(new Float32Array(4), "f32", [4]);
    expect(nativeStats().liveBuffers).toBe(before + 1);
    b.dispose();
    b.dispose(); // idempotent
    expect(nativeStats().liveBuffers).toBe(before);
    expect(b.disposed).toBe(true);
    expect(RuntimeError).toBeDefined();
  });
});
