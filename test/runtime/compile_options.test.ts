// Runtime: CompileOptionsProto bytes as JAX/XLA expect them, defaults, and the program checks (no plugin needed).
import { describe, expect, it } from "vitest";
import { encodeCompileOptions, inspectProgram, resolveCompileOptions } from "../../src/backend/runtime/index.ts";
import { ADD_F32 } from "./helpers.ts";

const client = {
  deviceIds: [0, 1, 2, 3, 4, 5, 6, 7],
  defaultDeviceAssignment: (r: number, p: number) => Array.from({ length: r * p }, (_, i) => i),
};
const hex = (b: Uint8Array) => Buffer.from(b).toString("hex");

const SDY = `module {
  sdy.mesh @mesh = <["x"=4]>
  func.func @main(%a: tensor<8xf32> {sdy.sharding = #sdy.sharding<@mesh, [{"x"}]>}) -> tensor<8xf32> { return %a : tensor<8xf32> }
}`;

describe("compile options", () => {
  it("encodes SPMD over 4 devices with Shardy byte for byte as notes/pjrt.md recorded (JAX's layout)", () => {
    const r = resolveCompileOptions(SDY, { numPartitions: 4, deviceAssignment: [0, 1, 2, 3] }, client);
    expect(r).toEqual({
      numReplicas: 1,
      numPartitions: 4,
      deviceAssignment: [0, 1, 2, 3],
      useShardy: true,
      useSpmdPartitioning: true,
    });
    expect(hex(encodeCompileOptions(r))).toBe(
      "1a2e08ffffffffffffffffff012001280430014a18080110041a030a01001a030a01011a030a01021a030a0103980101",
    );
  });

  it("encodes one device with an explicit assignment, never empty", () => {
    const r = resolveCompileOptions(ADD_F32, { device: 3 }, client);
    expect(r).toEqual({
      numReplicas: 1,
      numPartitions: 1,
      deviceAssignment: [3],
      useShardy: false,
      useSpmdPartitioning: false,
    });
    // build options {device_ordinal: -1, num_replicas: 1, num_partitions: 1, device_assignment {1, 1, [[3]]}}
    expect(hex(encodeCompileOptions(r))).toBe("1a1a08ffffffffffffffffff01200128014a09080110011a030a0103");
  });

  it("lays out replicas x partitions as computation_devices[p].replica_device_ids[r]", () => {
    const r = resolveCompileOptions(
      ADD_F32,
      { numReplicas: 2, numPartitions: 2, deviceAssignment: [4, 5, 6, 7] },
      client,
    );
    const bytes = encodeCompileOptions(r);
    // partition 0 holds replicas [4, 6]; partition 1 holds [5, 7]
    expect(hex(bytes)).toContain("1a040a020406");
    expect(hex(bytes)).toContain("1a040a020507");
  });

  it("chooses the partitioner from the module's sharding dialect", () => {
    const gspmd = ADD_F32.replace("%arg0: tensor<4xf32>", '%arg0: tensor<4xf32> {mhlo.sharding = "{replicated}"}');
    expect(inspectProgram(gspmd)).toMatchObject({ usesGspmd: true, usesShardy: false, hasMain: true });
    expect(resolveCompileOptions(gspmd, { numPartitions: 2 }, client).useShardy).toBe(false);
    expect(resolveCompileOptions(SDY, { numPartitions: 4 }, client).useShardy).toBe(true);
    expect(resolveCompileOptions(ADD_F32, { numPartitions: 2 }, client).useShardy).toBe(true);
    expect(() => resolveCompileOptions(SDY, { numPartitions: 4, useShardy: false }, client)).toThrow(
      /useShardy is false but the program uses sdy/,
    );
    expect(
      inspectProgram(`module attributes {mhlo.num_partitions = 8 : i32, mhlo.num_replicas = 1 : i32} {}`),
    ).toMatchObject({
      numPartitions: 8,
      numReplicas: 1,
      hasMain: false,
    });
  });

  it("refuses counts and assignments that do not fit the client", () => {
    expect(() => resolveCompileOptions(ADD_F32, { numPartitions: 16 }, client)).toThrow(
      "1 replica(s) x 16 partition(s) need 16 devices; the client has 8",
    );
    expect(() => resolveCompileOptions(ADD_F32, { numPartitions: 2, deviceAssignment: [1] }, client)).toThrow(
      "deviceAssignment has 1 device(s); 1 replica(s) x 2 partition(s) need 2",
    );
    expect(() => resolveCompileOptions(ADD_F32, { numPartitions: 2, deviceAssignment: [1, 9] }, client)).toThrow(
      "device id 9 is not a device of this client (ids: 0, 1, 2, 3, 4, 5, 6, 7)",
    );
    expect(() => resolveCompileOptions(ADD_F32, { numPartitions: 2, device: 1 }, client)).toThrow(
      /device is for single-device programs/,
    );
    expect(() =>
      encodeCompileOptions({
        numReplicas: 0,
        numPartitions: 1,
        deviceAssignment: [],
        useShardy: false,
        useSpmdPartitioning: false,
      }),
    ).toThrow(/refusing zero replicas or partitions/);
  });
});
