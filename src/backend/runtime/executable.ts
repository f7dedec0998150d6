// Compiled programs: argument checks, execution (inline or on the dispatcher thread), donation, serialization, HLO.
import { DeviceBuffer } from "./buffer.ts";
import { formatType, sameShape } from "../../ir/types.ts";
import { dtypeFromPjrt, isRuntimeDType, pjrtTypeName, type RuntimeDType } from "./host_array.ts";
import { RuntimeError, fromNative } from "./errors.ts";
import { countCollectives, decodeHloModule, printHloModule, type HloModule } from "./hlo_module.ts";
import {
  nativeAddon,
  type BufferHandle,
  type ExecutableHandle,
  type NativeExecutable,
  type NativeExecuteResult,
  type NativeMemoryStats,
} from "./native.ts";
import type { Client, Device } from "./client.ts";

export interface TensorType {
  dtype: RuntimeDType;
  shape: readonly number[];
}

/** Static memory sizes from XLA's compiled memory stats (bytes, per device). */
export type CompiledMemoryStats = NativeMemoryStats;

export interface ExecuteOptions {
  /**
   * Donation of inputs the program marks as donors (`tf.aliasing_output`, `jax.buffer_donor`):
   * true (default) lets XLA reuse them for outputs, after which they are `donated` and unusable;
   * false keeps every input; an array lists the argument indices that must not be donated.
   */
  donate?: boolean | readonly number[];
  /**
   * "auto" (default): launch on the main thread while few executions are in flight, else on the
   * client's dispatcher thread (PJRT's Execute blocks once a device has too many in flight).
   * "worker" always uses the dispatcher thread.
   */
  dispatch?: "auto" | "worker";
}

export class Executable {
  #handle: ExecutableHandle | null;
  #disposed = false;
  #inUse = 0;
  #hlo: Uint8Array | undefined;
  #hloFormat: string;
  #module: HloModule | undefined;
  #launched = false;
  readonly name: string;
  readonly numReplicas: number;
  readonly numPartitions: number;
  /** The devices the executable runs on, in the order of Execute's per-device argument lists. */
  readonly devices: readonly Device[];
  /** Per-device result types (the local shard of a partitioned result). */
  readonly outputTypes: readonly TensorType[];
  /** Per-device parameter types from the optimized HLO; undefined if the plugin cannot give the HLO. */
  readonly parameterTypes: readonly TensorType[] | undefined;
  /** Parameters that the program lets XLA reuse for outputs (donors). */
  readonly donorParameters: readonly number[];
  readonly memoryStats: CompiledMemoryStats | undefined;
  readonly fingerprint: string | undefined;

  /** @internal Use Client.compile or Client.deserialize. */
  constructor(
    readonly client: Client,
    info: NativeExecutable,
  ) {
    this.#handle = info.handle;
    this.name = info.name || "main";
    this.numReplicas = info.numReplicas;
    this.numPartitions = info.numPartitions;
    this.devices = info.deviceIndices.map((i) => client.devices[i]!);
    this.memoryStats = info.memoryStats;
    this.fingerprint = info.fingerprint;
    this.#hlo = info.hlo;
    this.#hloFormat = info.hloFormat ?? "hlo";
    if (!info.outputTypes || !info.outputDims) {
      throw new RuntimeError(
        "ERR_UNSUPPORTED",
        "the plugin cannot report the executable's output types (PJRT_Executable_OutputElementTypes)",
      );
    }
    const dims = info.outputDims;
    this.outputTypes = info.outputTypes.map((t, i) => {
      const dtype = dtypeFromPjrt(t);
      if (!dtype) {
        throw new RuntimeError(
          "ERR_DTYPE",
          `output ${i} of ${this.name} has type ${pjrtTypeName(t)}, which the runtime does not move`,
        );
      }
      return { dtype, shape: dims[i]! };
    });
    let parameterTypes: TensorType[] | undefined;
    let donors: number[] = [];
    if (this.#hlo) {
      const m = this.hloModule();
      if (m.parameters.every((p) => isRuntimeDType(p.dtype))) {
        parameterTypes = m.parameters.map((p) => ({ dtype: p.dtype as RuntimeDType, shape: p.shape }));
      }
      donors = [...new Set(m.aliases.map((a) => a.parameter))].sort((a, b) => a - b);
    }
    this.parameterTypes = parameterTypes;
    this.donorParameters = donors;
  }

  get disposed(): boolean {
    return this.#disposed;
  }

  /**
   * Runs the program: `args[d]` are the arguments of device `d` (this.devices[d]), each the local
   * shard. Resolves once the work is enqueued, with the outputs per device; they can feed the next
   * call at once. Errors of the computation itself surface when outputs are read or awaited.
   */
  execute(args: readonly (readonly DeviceBuffer[])[], opts: ExecuteOptions = {}): Promise<DeviceBuffer[][]> {
    try {
      const out = this.#launch(args, opts);
      return out instanceof Promise ? out : Promise.resolve(out);
    } catch (e) {
      return Promise.reject(e);
    }
  }

  /** Single-device convenience: execute([args]) and its one output list. */
  run(args: readonly DeviceBuffer[], opts: ExecuteOptions = {}): Promise<DeviceBuffer[]> {
    try {
      if (this.devices.length !== 1) {
        throw new RuntimeError(
          "ERR_ARG_COUNT",
          `run() is for single-device executables; ${this.name} runs on ${this.devices.length} devices: use execute()`,
        );
      }
      const out = this.#launch([args], opts);
      return out instanceof Promise ? out.then((o) => o[0]!) : Promise.resolve(out[0]!);
    } catch (e) {
      return Promise.reject(e);
    }
  }

  /**
   * `run` without the promise when it can: the outputs at once if the launch happened on the main thread (the
   * common case), else a promise of them (queued behind earlier work). Eager dispatch uses it to hand the next op
   * its inputs without a turn of the event loop. Throws (synchronously) what `run` would reject with.
   */
  runNow(args: readonly DeviceBuffer[], opts: ExecuteOptions = {}): DeviceBuffer[] | Promise<DeviceBuffer[]> {
    if (this.devices.length !== 1) return this.run(args, opts);
    const out = this.#launch([args], opts);
    return out instanceof Promise ? out.then((o) => o[0]!) : out[0]!;
  }

  // Checks the arguments, then launches on the main thread (returning the outputs) or queues on
  // the dispatcher thread (returning a promise of them).
  #launch(
    args: readonly (readonly DeviceBuffer[])[],
    opts: ExecuteOptions,
  ): DeviceBuffer[][] | Promise<DeviceBuffer[][]> {
    const handle = this.#liveHandle("execute");
    const nd = this.devices.length;
    if (!Array.isArray(args) || args.length !== nd) {
      throw new RuntimeError(
        "ERR_ARG_COUNT",
        `${this.name} runs on ${nd} device(s) and takes one argument list per device; got ${Array.isArray(args) ? args.length : typeof args}`,
      );
    }
    const params = this.parameterTypes;
    const na = params?.length ?? args[0]?.length ?? 0;
    const handles: BufferHandle[][] = new Array(nd);
    for (let d = 0; d < nd; d++) {
      const list = args[d]!;
      if (!Array.isArray(list) || list.length !== na) {
        throw new RuntimeError(
          "ERR_ARG_COUNT",
          `${this.name} takes ${na} argument(s)${nd > 1 ? ` per device` : ""}; got ${Array.isArray(list) ? list.length : typeof list}${nd > 1 ? ` for device ${d}` : ""}`,
        );
      }
      const row: BufferHandle[] = new Array(na);
      for (let i = 0; i < na; i++) row[i] = this.#checkArg(list[i], i, d);
      handles[d] = row;
    }
    const nonDonatable = this.#nonDonatable(opts.donate, na);
    // The first launch may load code onto the device (GPU plugins do it lazily), calls queued
    // earlier go first (order), and past the in-flight limit Execute could block: all on the thread.
    if (opts.dispatch === "worker" || !this.#launched || this.client.queued > 0) {
      this.#launched = true;
      return this.#queue(handle, handles, nonDonatable, args, na);
    }
    let result: NativeExecuteResult | null;
    try {
      result = nativeAddon().execute(handle, handles, nonDonatable, this.client.inlineDispatchLimit);
    } catch (e) {
      throw fromNative(e, `execute ${this.name}`);
    }
    if (result === null) return this.#queue(handle, handles, nonDonatable, args, na);
    return this.#outputs(result, args, na);
  }

  // Dispatcher thread: keep the handles alive, and fence off donors until the outcome is known.
  async #queue(
    handle: ExecutableHandle,
    handles: BufferHandle[][],
    nonDonatable: number[] | null,
    args: readonly (readonly DeviceBuffer[])[],
    na: number,
  ): Promise<DeviceBuffer[][]> {
    const client = this.client;
    const donating = this.#donating(nonDonatable, na);
    for (const list of args) for (const b of list) b.retain();
    for (const d of args) for (const i of donating) d[i]!.markDonating(this.name);
    this.#inUse++;
    client.queued++;
    try {
      const result = await nativeAddon().execute(handle, handles, nonDonatable, true);
      return this.#outputs(result, args, na);
    } catch (e) {
      for (const d of args) for (const i of donating) d[i]!.settleDonation(false, this.name);
      throw fromNative(e, `execute ${this.name}`);
    } finally {
      client.queued--;
      for (const list of args) for (const b of list) b.release();
      this.#inUse--;
      this.#destroyWhenIdle();
    }
  }

  /** Bytes that Client.deserialize turns back into this executable (same plugin and version only). */
  serialize(): Uint8Array {
    const handle = this.#liveHandle("serialize");
    if (!this.client.plugin.slots.PJRT_Executable_Serialize) {
      throw new RuntimeError("ERR_UNSUPPORTED", `plugin ${this.client.plugin.path} cannot serialize executables`);
    }
    try {
      return nativeAddon().serialize(handle);
    } catch (e) {
      throw fromNative(e, `serialize ${this.name}`);
    }
  }

  /** The optimized (post-partitioning) HLO module, decoded. */
  hloModule(): HloModule {
    if (!this.#module) {
      if (!this.#hlo)
        throw new RuntimeError("ERR_UNSUPPORTED", `the plugin gave no optimized program for ${this.name}`);
      this.#module = decodeHloModule(this.#hlo, this.#hloFormat);
    }
    return this.#module;
  }

  /** HLO-like text of the optimized module (see printHloModule: opcodes are XLA's, attributes left out). */
  optimizedHlo(): string {
    return printHloModule(this.hloModule());
  }

  /** Collectives in the optimized module, by opcode ("all-reduce", "all-gather", ...). */
  collectives(): Record<string, number> {
    return countCollectives(this.hloModule());
  }

  /** Frees the executable (after executions already in flight). Idempotent. */
  dispose(): void {
    this.#disposed = true;
    this.#destroyWhenIdle();
  }

  toString(): string {
    return `Executable(${this.name} on ${this.devices.map(String).join(", ")})`;
  }

  #liveHandle(op: string): ExecutableHandle {
    if (this.#disposed || this.#handle === null)
      throw new RuntimeError("ERR_DISPOSED", `${op}: executable ${this.name} has been disposed`);
    return this.#handle;
  }

  #destroyWhenIdle(): void {
    if (!this.#disposed || this.#inUse > 0 || this.#handle === null) return;
    nativeAddon().executableDestroy(this.#handle);
    this.#handle = null;
  }

  #checkArg(b: unknown, i: number, d: number): BufferHandle {
    const where = `argument ${i}${this.devices.length > 1 ? ` of device ${d}` : ""} of ${this.name}`;
    if (!(b instanceof DeviceBuffer)) throw new RuntimeError("ERR_ARG_TYPE", `${where} is not a DeviceBuffer`);
    if (b.client !== this.client) throw new RuntimeError("ERR_CLIENT_MISMATCH", `${where} belongs to another client`);
    const h = b.handle(where);
    const want = this.parameterTypes?.[i];
    if (want && (b.dtype !== want.dtype || !sameShape(b.shape, want.shape))) {
      throw new RuntimeError("ERR_ARG_TYPE", `${where}: expected ${formatType(want)}, got ${b.type}`);
    }
    const device = this.devices[d]!;
    if (b.device !== device)
      throw new RuntimeError("ERR_DEVICE", `${where} is on ${b.device}; the executable runs it on ${device}`);
    return h;
  }

  #nonDonatable(donate: ExecuteOptions["donate"], na: number): number[] | null {
    if (donate === undefined || donate === true) return null;
    if (donate === false) return Array.from({ length: na }, (_, i) => i);
    if (!Array.isArray(donate))
      throw new RuntimeError("ERR_ARG_TYPE", "donate must be a boolean or an array of argument indices not to donate");
    for (const i of donate) {
      if (!Number.isSafeInteger(i) || i < 0 || i >= na)
        throw new RuntimeError(
          "ERR_ARG_TYPE",
          `donate: ${String(i)} is not an argument index of ${this.name} (0..${na - 1})`,
        );
    }
    return [...donate];
  }

  #donating(nonDonatable: readonly number[] | null, na: number): number[] {
    const keep = new Set(nonDonatable ?? []);
    return this.donorParameters.filter((i) => i < na && !keep.has(i));
  }

  #outputs(result: NativeExecuteResult, args: readonly (readonly DeviceBuffer[])[], na: number): DeviceBuffer[][] {
    const donated = new Set(result.donated ?? []);
    const donorSet = this.donorParameters;
    if (donated.size > 0 || donorSet.length > 0) {
      for (let d = 0; d < args.length; d++) {
        for (const i of donorSet) if (i < na) args[d]![i]!.settleDonation(donated.has(d * na + i), this.name);
        // A donation XLA made that the HLO did not announce (it should not happen): honour it anyway.
        for (let i = 0; i < na; i++) if (donated.has(d * na + i)) args[d]![i]!.settleDonation(true, this.name);
      }
    }
    const no = this.outputTypes.length;
    const out: DeviceBuffer[][] = new Array(args.length);
    for (let d = 0; d < args.length; d++) {
      const row: DeviceBuffer[] = new Array(no);
      for (let k = 0; k < no; k++) {
        const t = this.outputTypes[k]!;
        row[k] = new DeviceBuffer(this.client, result[d * no + k]!, t.dtype, t.shape, this.devices[d]!);
      }
      out[d] = row;
    }
    return out;
  }
}
