// Runtime: the addon's own argument checks (TypeScript bypassed): integers are range-checked before any cast, errors name the argument.
import { describe, expect, it } from "vitest";
import { nativeAddon } from "../../src/backend/runtime/native.ts";
import { testClient } from "./helpers.ts";

const F32 = 11; // PJRT_Buffer_Type_F32
const INT64 = "an integer in the int64 range [-2^63, 2^63)";

/** The error `fn` throws (fails the test if it returns). */
function thrown(fn: () => unknown): Error & { code?: string } {
  try {
    fn();
  } catch (e) {
    return e as Error & { code?: string };
  }
  throw new Error("expected a throw");
}

function expectTypeError(fn: () => unknown, message: string): void {
  const e = thrown(fn);
  expect(e).toBeInstanceOf(TypeError);
  expect(e).toMatchObject({ code: "TESSERA_NATIVE", message });
}

describe("native argument checks", () => {
  // NaN, ±Infinity and 2^63 would be undefined behaviour if cast to int64; JS prints 2^63 as 9223372036854776000.
  const notInt64: [number | bigint, string][] = [
    [Number.NaN, "NaN"],
    [Number.POSITIVE_INFINITY, "Infinity"],
    [Number.NEGATIVE_INFINITY, "-Infinity"],
    [2 ** 63, "9223372036854776000"],
    [-(2 ** 64), "-18446744073709552000"],
    [1.5, "1.5"],
    [2n ** 63n, "9223372036854775808n"],
  ];

  for (const [value, shown] of notInt64) {
    it(`refuses ${shown} where an integer is expected, with a TypeError naming the argument`, async () => {
      const client = await testClient();
      const addon = nativeAddon();
      expectTypeError(
        () => addon.bufferFromHost(client.handle, 0, new Float32Array(4), F32, [4, value as number], false),
        `bufferFromHost: dims[1] must be ${INT64}, got ${shown}`,
      );
      expectTypeError(
        () => addon.bufferFromHost(client.handle, value as number, new Float32Array(4), F32, [4], false),
        `bufferFromHost: deviceIndex must be ${INT64}, got ${shown}`,
      );
      expectTypeError(
        () => addon.allocHostBlock(value as number),
        `allocHostBlock: bytes must be ${INT64}, got ${shown}`,
      );
      expectTypeError(
        () => addon.deviceMemoryStats(client.handle, value as number),
        `deviceMemoryStats: deviceIndex must be ${INT64}, got ${shown}`,
      );
      expectTypeError(
        () => addon.defaultDeviceAssignment(client.handle, 1, value as number),
        `defaultDeviceAssignment: numPartitions must be ${INT64}, got ${shown}`,
      );
    });
  }

  it("accepts the int64 range up to its ends, then checks the value's own range with a plain Error", async () => {
    const client = await testClient();
    const addon = nativeAddon();
    // -2^63 and the largest double below 2^63 convert; the functions then refuse them for what they are.
    const low = thrown(() => addon.allocHostBlock(-(2 ** 63)));
    expect(low).not.toBeInstanceOf(TypeError);
    expect(low.message).toBe("allocHostBlock: expected a positive byte count, got -9223372036854775808");
    const high = thrown(() =>
      addon.bufferFromHost(client.handle, 2 ** 63 - 1024, new Float32Array(4), F32, [4], false),
    );
    expect(high).not.toBeInstanceOf(TypeError);
    expect(high.message).toBe(
      `bufferFromHost: deviceIndex 9223372036854774784 is out of range [0, ${client.devices.length})`,
    );
    const overflow = thrown(() =>
      addon.bufferFromHost(client.handle, 0, new Float32Array(4), F32, [2 ** 62, 4], false),
    );
    expect(overflow.message).toBe("bufferFromHost: dims[1] = 4 is negative or makes the element count overflow");
  });

  it("names a missing or mistyped argument and what was expected", async () => {
    const client = await testClient();
    const addon = nativeAddon();
    const call = addon.bufferFromHost as (...args: unknown[]) => unknown;
    expectTypeError(
      () => call(client.handle, 0, [1, 2, 3, 4], F32, [4], false),
      "bufferFromHost: data must be a TypedArray, got an object",
    );
    expectTypeError(
      () => call(client.handle, 0, new Float32Array(4), F32, [4]),
      "bufferFromHost: keepHost must be a boolean, got undefined",
    );
    expectTypeError(
      () => call(client.handle, 0, new Float32Array(4), F32, "4", false),
      "bufferFromHost: dims must be an array, got a string",
    );
    const load = addon.loadPlugin as (...args: unknown[]) => unknown;
    expectTypeError(() => load(42), "loadPlugin: path must be a string, got 42");
    expectTypeError(
      () => addon.clientInfo({} as never),
      "clientInfo: client must be a native client handle, got an object",
    );
    // ... and the addon still works afterwards.
    const b = addon.bufferFromHost(client.handle, 0, new Float32Array([1, 2, 3, 4]), F32, [4], false);
    const back = new Float32Array(4);
    await addon.bufferToHost(b, back);
    expect(Array.from(back)).toEqual([1, 2, 3, 4]);
    addon.bufferDestroy(b);
  });
});
