// Compile options: checks a program and the caller's options against XLA's abort paths, then encodes CompileOptionsProto.
import { readFileSync } from "node:fs";
import protobuf from "protobufjs";
import { RuntimeError } from "./errors.ts";

export interface CompileOptions {
  /** Replicas (data-parallel copies). Default 1. */
  numReplicas?: number;
  /** SPMD partitions. Default 1. With N > 1 the program is partitioned over N devices. */
  numPartitions?: number;
  /**
   * Device ids, replica-major: entry r * numPartitions + p runs replica r, partition p.
   * Default: [device] for one device, else the client's default assignment.
   */
  deviceAssignment?: readonly number[];
  /** The device of a single-device program (an id or a Device). Default: the client's first device. */
  device?: number | { readonly id: number };
  /**
   * Shardy (`sdy`) partitioner rather than GSPMD. Default: true for Shardy-annotated modules and for
   * unannotated multi-partition modules, false for modules with `mhlo.sharding`.
   */
  useShardy?: boolean;
  /** Default: true when numPartitions > 1. */
  useSpmdPartitioning?: boolean;
  /** Let the partitioner choose the shardings of results (resp. parameters) the module leaves open. */
  propagateShardingToOutput?: boolean;
  propagateShardingToParameters?: boolean;
}

export interface ResolvedCompileOptions {
  numReplicas: number;
  numPartitions: number;
  deviceAssignment: number[];
  useShardy: boolean;
  useSpmdPartitioning: boolean;
  propagateShardingToOutput?: boolean;
  propagateShardingToParameters?: boolean;
}

/** What the runtime needs to know about a StableHLO text before handing it to XLA. */
export interface ProgramFacts {
  hasMain: boolean;
  usesShardy: boolean;
  usesGspmd: boolean;
  numPartitions?: number;
  numReplicas?: number;
}

const SHARDY =
  /#sdy\.|\bsdy\.(?:mesh|sharding|sharding_constraint|manual_computation|sharding_group|propagation_barrier)\b/;
const GSPMD = /\bmhlo\.sharding\b/;
const MAIN = /@main\b|sym_name\s*=\s*"main"/;

export function inspectProgram(text: string): ProgramFacts {
  const attr = (name: string) => {
    const m = new RegExp(`\\bmhlo\\.${name}\\s*=\\s*(\\d+)`).exec(text);
    return m ? Number(m[1]) : undefined;
  };
  const numPartitions = attr("num_partitions");
  const numReplicas = attr("num_replicas");
  return {
    hasMain: MAIN.test(text),
    usesShardy: SHARDY.test(text),
    usesGspmd: GSPMD.test(text),
    ...(numPartitions !== undefined ? { numPartitions } : {}),
    ...(numReplicas !== undefined ? { numReplicas } : {}),
  };
}

function positiveInt(x: unknown, what: string): number {
  if (!Number.isSafeInteger(x) || (x as number) < 1) {
    throw new RuntimeError("ERR_COMPILE_OPTIONS", `${what} must be a positive integer, got ${String(x)}`);
  }
  return x as number;
}

/**
 * Checks `program` and `opts` and fills in the defaults. Refuses, before XLA sees them, what would
 * abort the process (empty or zero-sized options; `mhlo.sharding` mixed with Shardy) or is surely
 * a mistake (no @main, counts that contradict the module, unknown or repeated devices).
 */
export function resolveCompileOptions(
  program: string,
  opts: CompileOptions,
  client: CompileClient,
): ResolvedCompileOptions {
  const facts = checkedProgramFacts(program, opts);
  const { numReplicas, numPartitions } = checkedCounts(facts, opts);
  const assignment = deviceAssignmentFor(opts, client, numReplicas, numPartitions);
  checkAssignment(assignment, client, numReplicas, numPartitions);
  return {
    numReplicas,
    numPartitions,
    deviceAssignment: assignment,
    useShardy: opts.useShardy ?? (facts.usesShardy || (numPartitions > 1 && !facts.usesGspmd)),
    useSpmdPartitioning: opts.useSpmdPartitioning ?? numPartitions > 1,
    ...(opts.propagateShardingToOutput !== undefined
      ? { propagateShardingToOutput: opts.propagateShardingToOutput }
      : {}),
    ...(opts.propagateShardingToParameters !== undefined
      ? { propagateShardingToParameters: opts.propagateShardingToParameters }
      : {}),
  };
}

/** What resolveCompileOptions needs of a client. */
interface CompileClient {
  deviceIds: readonly number[];
  defaultDeviceAssignment(numReplicas: number, numPartitions: number): number[];
}

/** The program's facts, once it is known to have a @main and a sharding dialect the options agree with. */
function checkedProgramFacts(program: string, opts: CompileOptions): ProgramFacts {
  if (typeof program !== "string" || program.trim() === "") {
    throw new RuntimeError("ERR_PROGRAM", "empty program: expected StableHLO text with a func.func @main");
  }
  const facts = inspectProgram(program);
  if (!facts.hasMain) {
    throw new RuntimeError("ERR_PROGRAM", "the program has no @main function (XLA runs `func.func @main`)");
  }
  if (facts.usesShardy && facts.usesGspmd) {
    throw new RuntimeError(
      "ERR_SHARDING_DIALECTS",
      "the program mixes mhlo.sharding (GSPMD) with sdy (Shardy) annotations; use one dialect per module (XLA can abort on the mix)",
    );
  }
  if (facts.usesGspmd && opts.useShardy === true) {
    throw new RuntimeError(
      "ERR_SHARDING_DIALECTS",
      "useShardy is set but the program uses mhlo.sharding: the Shardy partitioner aborts on GSPMD shardings of arguments; annotate with sdy or leave useShardy unset",
    );
  }
  if (facts.usesShardy && opts.useShardy === false) {
    throw new RuntimeError(
      "ERR_SHARDING_DIALECTS",
      "useShardy is false but the program uses sdy annotations, which need the Shardy partitioner",
    );
  }
  return facts;
}

/** The options' replica and partition counts, which must match what the module declares. */
function checkedCounts(facts: ProgramFacts, opts: CompileOptions): { numReplicas: number; numPartitions: number } {
  const numReplicas = positiveInt(opts.numReplicas ?? 1, "numReplicas");
  const numPartitions = positiveInt(opts.numPartitions ?? 1, "numPartitions");
  for (const [attr, value, name] of [
    [facts.numPartitions, numPartitions, "num_partitions"],
    [facts.numReplicas, numReplicas, "num_replicas"],
  ] as const) {
    if (attr !== undefined && attr !== value) {
      throw new RuntimeError(
        "ERR_COMPILE_OPTIONS",
        `the module declares mhlo.${name} = ${attr} but the options ask for ${value}; make them agree`,
      );
    }
  }
  return { numReplicas, numPartitions };
}

/** The caller's assignment, the single device, or the client's default; not yet checked against the client. */
function deviceAssignmentFor(
  opts: CompileOptions,
  client: CompileClient,
  numReplicas: number,
  numPartitions: number,
): number[] {
  const total = numReplicas * numPartitions;
  if (opts.deviceAssignment !== undefined) {
    if (opts.device !== undefined)
      throw new RuntimeError("ERR_COMPILE_OPTIONS", "give either device or deviceAssignment, not both");
    return [...opts.deviceAssignment];
  }
  if (total === 1) {
    const d = opts.device;
    return [d === undefined ? client.deviceIds[0]! : typeof d === "number" ? d : d.id];
  }
  if (opts.device !== undefined)
    throw new RuntimeError("ERR_COMPILE_OPTIONS", "device is for single-device programs; use deviceAssignment");
  if (total > client.deviceIds.length) {
    throw new RuntimeError(
      "ERR_COMPILE_OPTIONS",
      `${numReplicas} replica(s) x ${numPartitions} partition(s) need ${total} devices; the client has ${client.deviceIds.length}`,
    );
  }
  return client.defaultDeviceAssignment(numReplicas, numPartitions);
}

/** One device per replica x partition, each a device of the client and none twice. */
function checkAssignment(assignment: number[], client: CompileClient, numReplicas: number, numPartitions: number) {
  const total = numReplicas * numPartitions;
  if (assignment.length !== total) {
    throw new RuntimeError(
      "ERR_COMPILE_OPTIONS",
      `deviceAssignment has ${assignment.length} device(s); ${numReplicas} replica(s) x ${numPartitions} partition(s) need ${total}`,
    );
  }
  const known = new Set(client.deviceIds);
  const seen = new Set<number>();
  for (const id of assignment) {
    if (!known.has(id)) {
      throw new RuntimeError(
        "ERR_DEVICE",
        `device id ${String(id)} is not a device of this client (ids: ${client.deviceIds.join(", ")})`,
      );
    }
    if (seen.has(id)) throw new RuntimeError("ERR_COMPILE_OPTIONS", `device ${id} appears twice in deviceAssignment`);
    seen.add(id);
  }
}

let compileOptionsType: protobuf.Type | undefined;

function messageType(): protobuf.Type {
  if (!compileOptionsType) {
    const text = readFileSync(new URL("./compile_options.proto", import.meta.url), "utf8");
    const root = protobuf.parse(text, { keepCase: true }).root.resolveAll(); // resolveAll: proto3 packing
    compileOptionsType = root.lookupType("tessera.xla.CompileOptionsProto");
  }
  return compileOptionsType;
}

/** Serialized CompileOptionsProto, as JAX builds it for the same settings (never empty). */
export function encodeCompileOptions(r: ResolvedCompileOptions): Uint8Array {
  if (r.numReplicas < 1 || r.numPartitions < 1) {
    throw new RuntimeError("ERR_COMPILE_OPTIONS", "refusing zero replicas or partitions (XLA aborts on them)");
  }
  const computation_devices = Array.from({ length: r.numPartitions }, (_, p) => ({
    replica_device_ids: Array.from(
      { length: r.numReplicas },
      (_, rep) => r.deviceAssignment[rep * r.numPartitions + p]!,
    ),
  }));
  const build: Record<string, unknown> = {
    device_ordinal: -1,
    num_replicas: r.numReplicas,
    num_partitions: r.numPartitions,
    device_assignment: { replica_count: r.numReplicas, computation_count: r.numPartitions, computation_devices },
  };
  if (r.useSpmdPartitioning) build.use_spmd_partitioning = true;
  if (r.propagateShardingToOutput !== undefined)
    build.allow_spmd_sharding_propagation_to_output = [r.propagateShardingToOutput];
  if (r.propagateShardingToParameters !== undefined) {
    build.allow_spmd_sharding_propagation_to_parameters = [r.propagateShardingToParameters];
  }
  if (r.useShardy) build.use_shardy_partitioner = true;
  const type = messageType();
  const bytes = type.encode(type.fromObject({ executable_build_options: build })).finish();
  if (bytes.length === 0) throw new RuntimeError("ERR_COMPILE_OPTIONS", "encoded compile options are empty");
  return bytes;
}
