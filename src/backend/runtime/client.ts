// Clients: load a PJRT plugin once, create a client with platform options, list devices, compile, upload buffers.
import { DeviceBuffer } from "./buffer.ts";
import { encodeCompileOptions, resolveCompileOptions, type CompileOptions } from "./compile_options.ts";
import { ELEMENT_TYPES } from "../../ir/types.ts";
import { checkDType, checkHostData, type RuntimeDType, type HostArray } from "./host_array.ts";
import { PjrtError, RuntimeError, fromNative } from "./errors.ts";
import { Executable } from "./executable.ts";
import {
  nativeAddon,
  type BufferHandle,
  type ClientHandle,
  type NamedValue,
  type NativeDevice,
  type NativeExecutable,
  type NativePlugin,
} from "./native.ts";
import { registerCpuGemm } from "./cpu_gemm.ts";
import { cacheHostAllocations } from "./host_alloc.ts";
import { cachedPluginAt, platformByName, resolvePlugin, verifyCachedPlugin, type PluginName } from "./plugins.ts";

/** PJRT functions without which the runtime cannot work; a plugin lacking one is refused at load. */
export const REQUIRED_FUNCTIONS = [
  "PJRT_Error_Destroy",
  "PJRT_Error_Message",
  "PJRT_Error_GetCode",
  "PJRT_Plugin_Initialize",
  "PJRT_Event_Destroy",
  "PJRT_Event_OnReady",
  "PJRT_Client_Create",
  "PJRT_Client_PlatformName",
  "PJRT_Client_AddressableDevices",
  "PJRT_Client_Compile",
  "PJRT_Client_BufferFromHostBuffer",
  "PJRT_Device_GetDescription",
  "PJRT_DeviceDescription_Id",
  "PJRT_DeviceDescription_Kind",
  "PJRT_LoadedExecutable_Destroy",
  "PJRT_LoadedExecutable_GetExecutable",
  "PJRT_LoadedExecutable_AddressableDevices",
  "PJRT_LoadedExecutable_Execute",
  "PJRT_Executable_Destroy",
  "PJRT_Executable_NumOutputs",
  "PJRT_Executable_OutputElementTypes",
  "PJRT_Executable_OutputDimensions",
  "PJRT_Buffer_Destroy",
  "PJRT_Buffer_IsDeleted",
  "PJRT_Buffer_ToHostBuffer",
  "PJRT_Buffer_ReadyEvent",
] as const;

export interface PluginInfo {
  path: string;
  /** catalogued name, when loaded by name or from the default */
  name?: PluginName;
  /** PJRT C API version the plugin reports, "0.81" */
  apiVersion: string;
  /** PJRT C API version of the header the addon was built with */
  headerApiVersion: string;
  apiStructSize: number;
  /** which function slots the plugin provides (checked against its PJRT_Api.struct_size) */
  slots: Readonly<Record<string, boolean>>;
}

export interface PluginAttributes {
  xlaVersion?: number;
  /** "1.13.3" */
  stablehloCurrentVersion?: string;
  stablehloMinimumVersion?: string;
  /** every attribute the plugin reports, as given */
  raw: Readonly<Record<string, string | number | boolean | number[]>>;
}

export interface ClientOptions {
  /** A plugin .so path or catalogued name. Default: $TESSERA_PJRT_PLUGIN, else "xla-cpu-pjrt". */
  plugin?: string;
  /** Which family of create options to send. Default: from the plugin ("cuda" if it reports cuda attributes or is named so). */
  platform?: "cpu" | "cuda";
  /** CPU: number of devices (create option cpu_device_count). Default: $TESSERA_CPU_DEVICES, else defaultCpuDevices(). */
  cpuDeviceCount?: number;
  /** CUDA: platform_name. Default "cuda". */
  platformName?: string;
  /** CUDA: allocator ("default" | "platform" | "bfc" | "cuda_async"). Default "bfc". */
  allocator?: string;
  /** CUDA: preallocate the memory pool. Default false. */
  preallocate?: boolean;
  /** CUDA: fraction of device memory for the pool (memory_fraction). Default: the plugin's. */
  memoryFraction?: number;
  /** CUDA: device ordinals to use (visible_devices). */
  visibleDevices?: number[];
  /** More create options, sent as given (an unknown key or wrong type is an error of the plugin). */
  extraCreateOptions?: NamedValue[];
  /** Executions in flight below which execute() launches on the main thread (see ExecuteOptions.dispatch). Default 16. */
  inlineDispatchLimit?: number;
}

export class Device {
  /** @internal */
  constructor(
    readonly client: Client,
    /** position among the client's addressable devices */
    readonly index: number,
    /** global device id (what device assignments list) */
    readonly id: number,
    /** "cpu", "NVIDIA H200", ... */
    readonly kind: string,
    readonly localHardwareId: number | undefined,
    readonly processIndex: number | undefined,
    readonly description: string,
    readonly debugString: string,
  ) {}

  toString(): string {
    return `${this.client.platformName}:${this.id}`;
  }
}

export interface DeviceMemoryStats {
  bytesInUse: number;
  peakBytesInUse?: number;
  bytesLimit?: number;
  [stat: string]: number | undefined;
}

export interface BufferFromHostOptions {
  /**
   * false (default): PJRT may read the TypedArray after the call returns, while the transfer runs;
   * the runtime keeps the array alive exactly until PJRT is done with it. Do not write to the array
   * until `await buffer.ready()`. true: PJRT copies the data before the call returns.
   */
  copy?: boolean;
}

function attributesOf(plugin: NativePlugin): PluginAttributes {
  const raw: Record<string, string | number | boolean | number[]> = {};
  for (const a of plugin.attributes) raw[a.name] = a.value;
  const version = (v: unknown) => (Array.isArray(v) ? v.join(".") : typeof v === "string" ? v : undefined);
  const attrs: PluginAttributes = { raw };
  if (typeof raw.xla_version === "number") attrs.xlaVersion = raw.xla_version;
  const cur = version(raw.stablehlo_current_version);
  const min = version(raw.stablehlo_minimum_version);
  if (cur) attrs.stablehloCurrentVersion = cur;
  if (min) attrs.stablehloMinimumVersion = min;
  return attrs;
}

const loadedPlugins = new Map<string, NativePlugin>();

/** Loads (once per path, never unloads) and initializes a plugin; refuses one that lacks a needed function. */
export function loadPlugin(path: string): NativePlugin {
  let plugin = loadedPlugins.get(path);
  if (plugin) return plugin;
  const addon = nativeAddon();
  // XLA logs INFO lines to stderr (e.g. "cpu_device_count set via create_options") unless told not
  // to; it reads this variable when the plugin starts logging, so it must be set before loading.
  process.env.TF_CPP_MIN_LOG_LEVEL ??= "1";
  // XLA's CPU backend drops NaN in max/min unless told otherwise; Tessera's IR (like XLA on GPU and JAX)
  // propagates it. XLA reads XLA_FLAGS once, when the plugin first compiles, so it is set before loading.
  const flags = process.env.XLA_FLAGS ?? "";
  if (!flags.includes("xla_cpu_enable_fast_min_max"))
    process.env.XLA_FLAGS = `${flags} --xla_cpu_enable_fast_min_max=false`.trim();
  const cached = cachedPluginAt(path);
  if (cached) verifyCachedPlugin(cached);
  try {
    plugin = addon.loadPlugin(path);
  } catch (e) {
    const err = fromNative(e);
    if (err instanceof PjrtError) throw err;
    throw new RuntimeError("ERR_PLUGIN_LOAD", err.message);
  }
  const missing = REQUIRED_FUNCTIONS.filter((f) => !plugin!.slots[f]);
  if (missing.length > 0) {
    const header = addon.headerInfo();
    throw new RuntimeError(
      "ERR_PLUGIN_TOO_OLD",
      `PJRT plugin ${path} (C API ${plugin.apiMajor}.${plugin.apiMinor}, PJRT_Api of ${plugin.apiStructSize} bytes; ` +
        `header 0.${header.minor}: ${header.apiStructSize} bytes) lacks ${missing.join(", ")}, which Tessera needs`,
    );
  }
  loadedPlugins.set(path, plugin);
  return plugin;
}

function detectPlatform(plugin: NativePlugin, path: string): "cpu" | "cuda" {
  if (plugin.attributes.some((a) => a.name.startsWith("cuda"))) return "cuda";
  return platformByName(path);
}

/** `$TESSERA_CPU_DEVICES`: the CPU client's device count when createClient is not given one. */
export const CPU_DEVICES_ENV = "TESSERA_CPU_DEVICES";
let cpuDevicesDefault = 8;

/**
 * The CPU device count of clients created from now on without an explicit count or $TESSERA_CPU_DEVICES (8 unless
 * changed: meshes of 8 virtual devices to shard over). The single-device commands (train, eval, generate) set 1:
 * XLA's CPU client gives its intra-op thread pool a thread per device, and on a machine with fewer cores the
 * oversubscribed pool made a SmolLM2 LoRA step 8% slower (4.37 s against 4.73 s, 2 cores).
 */
export function setDefaultCpuDevices(n: number): void {
  cpuDevicesDefault = n;
}

function cpuDeviceCount(o: ClientOptions): number {
  if (o.cpuDeviceCount !== undefined) return o.cpuDeviceCount;
  const env = process.env[CPU_DEVICES_ENV];
  if (env === undefined || env === "") return cpuDevicesDefault;
  if (!/^\d+$/.test(env.trim()))
    throw new RuntimeError(
      "ERR_CLIENT_OPTIONS",
      `$${CPU_DEVICES_ENV} must be a positive integer, got ${JSON.stringify(env)}`,
    );
  return Number(env);
}

function createOptions(platform: "cpu" | "cuda", o: ClientOptions): NamedValue[] {
  const out: NamedValue[] = [];
  if (platform === "cpu") {
    const n = cpuDeviceCount(o);
    if (!Number.isSafeInteger(n) || n < 1)
      throw new RuntimeError("ERR_CLIENT_OPTIONS", `cpuDeviceCount must be a positive integer, got ${String(n)}`);
    out.push({ name: "cpu_device_count", type: "int64", value: n });
  } else {
    out.push({ name: "platform_name", type: "string", value: o.platformName ?? "cuda" });
    out.push({ name: "allocator", type: "string", value: o.allocator ?? "bfc" });
    out.push({ name: "preallocate", type: "bool", value: o.preallocate ?? false });
    if (o.memoryFraction !== undefined) {
      if (!(o.memoryFraction > 0 && o.memoryFraction <= 1))
        throw new RuntimeError("ERR_CLIENT_OPTIONS", `memoryFraction must be in (0, 1], got ${o.memoryFraction}`);
      out.push({ name: "memory_fraction", type: "float", value: o.memoryFraction });
    }
    if (o.visibleDevices) out.push({ name: "visible_devices", type: "int64list", value: [...o.visibleDevices] });
  }
  return [...out, ...(o.extraCreateOptions ?? [])];
}

export class Client {
  readonly plugin: PluginInfo;
  readonly pluginAttributes: PluginAttributes;
  readonly platform: "cpu" | "cuda";
  /** "cpu", "cuda" */
  readonly platformName: string;
  readonly platformVersion: string;
  /** Addressable devices, in the plugin's order. */
  readonly devices: readonly Device[];
  readonly inlineDispatchLimit: number;
  /** @internal executions waiting on the dispatcher thread; while > 0 new ones queue behind them (order) */
  queued = 0;

  /** @internal Use getClient or createClient. */
  constructor(
    /** @internal */ readonly handle: ClientHandle,
    plugin: NativePlugin,
    name: PluginName | undefined,
    platform: "cpu" | "cuda",
    inlineDispatchLimit: number,
  ) {
    const header = nativeAddon().headerInfo();
    this.plugin = {
      path: plugin.path,
      ...(name ? { name } : {}),
      apiVersion: `${plugin.apiMajor}.${plugin.apiMinor}`,
      headerApiVersion: `${header.major}.${header.minor}`,
      apiStructSize: plugin.apiStructSize,
      slots: plugin.slots,
    };
    this.pluginAttributes = attributesOf(plugin);
    this.platform = platform;
    this.inlineDispatchLimit = inlineDispatchLimit;
    const info = nativeAddon().clientInfo(handle);
    this.platformName = info.platformName;
    this.platformVersion = info.platformVersion ?? "";
    this.devices = info.devices.map(
      (d: NativeDevice) =>
        new Device(
          this,
          d.index,
          d.id,
          d.kind,
          d.localHardwareId,
          d.processIndex,
          d.toString ?? `${d.kind}:${d.id}`,
          d.debugString ?? "",
        ),
    );
  }

  /** The device with this global id (or an error naming the ids there are). */
  device(id: number): Device {
    const d = this.devices.find((x) => x.id === id);
    if (!d)
      throw new RuntimeError(
        "ERR_DEVICE",
        `no device with id ${String(id)} (ids: ${this.devices.map((x) => x.id).join(", ")})`,
      );
    return d;
  }

  /** Device ids of the plugin's default assignment, replica-major. */
  defaultDeviceAssignment(numReplicas: number, numPartitions: number): number[] {
    try {
      return nativeAddon().defaultDeviceAssignment(this.handle, numReplicas, numPartitions);
    } catch (e) {
      throw fromNative(e, "defaultDeviceAssignment");
    }
  }

  /** Allocator statistics of a device, or undefined where the plugin does not keep them (the CPU plugin). */
  memoryStats(device: Device = this.devices[0]!): DeviceMemoryStats | undefined {
    try {
      return nativeAddon().deviceMemoryStats(this.handle, this.#own(device).index) as DeviceMemoryStats;
    } catch (e) {
      const err = fromNative(e, "memoryStats");
      if (err instanceof PjrtError && err.code === "UNIMPLEMENTED") return undefined;
      throw err;
    }
  }

  /** Compiles StableHLO text (a module with func.func @main) on a worker thread. */
  async compile(program: string, opts: CompileOptions = {}): Promise<Executable> {
    const resolved = resolveCompileOptions(program, opts, {
      deviceIds: this.devices.map((d) => d.id),
      defaultDeviceAssignment: (r, p) => this.defaultDeviceAssignment(r, p),
    });
    const bytes = encodeCompileOptions(resolved);
    let info: NativeExecutable;
    try {
      info = await nativeAddon().compile(this.handle, program, bytes);
    } catch (e) {
      throw fromNative(e, "compile");
    }
    return new Executable(this, info);
  }

  /** Loads an executable from Executable.serialize() bytes (same plugin build), on a worker thread. */
  async deserialize(bytes: Uint8Array): Promise<Executable> {
    if (!(bytes instanceof Uint8Array) || bytes.length === 0)
      throw new RuntimeError("ERR_ARG_TYPE", "deserialize needs the non-empty Uint8Array from Executable.serialize()");
    if (!this.plugin.slots.PJRT_Executable_DeserializeAndLoad) {
      throw new RuntimeError("ERR_UNSUPPORTED", `plugin ${this.plugin.path} cannot deserialize executables`);
    }
    let info: NativeExecutable;
    try {
      info = await nativeAddon().deserialize(this.handle, bytes);
    } catch (e) {
      throw fromNative(e, "deserialize");
    }
    return new Executable(this, info);
  }

  /**
   * Uploads a TypedArray as a `dtype` array of `shape` to a device (default: the first). f32:
   * Float32Array; bf16, f16: Uint16Array (raw bits); s32: Int32Array; s64: BigInt64Array; u32:
   * Uint32Array; u8: Uint8Array; bool: Uint8Array of 0/1.
   */
  bufferFromHost<D extends RuntimeDType>(
    data: HostArray<D>,
    dtype: D,
    shape: readonly number[],
    device?: Device | number,
    opts: BufferFromHostOptions = {},
  ): DeviceBuffer<D> {
    checkDType(dtype);
    checkHostData(data, dtype, shape);
    const dev =
      device === undefined ? this.devices[0]! : typeof device === "number" ? this.device(device) : this.#own(device);
    let handle: BufferHandle;
    try {
      handle = nativeAddon().bufferFromHost(this.handle, dev.index, data, ELEMENT_TYPES[dtype].pjrt, shape, !opts.copy);
    } catch (e) {
      throw fromNative(e, "bufferFromHost");
    }
    return new DeviceBuffer(this, handle, dtype, [...shape], dev);
  }

  /** Executions launched and not yet complete (a plugin admits a bounded number per device). */
  inflight(): number {
    return nativeAddon().inflight(this.handle);
  }

  toString(): string {
    return `Client(${this.platformName}, ${this.devices.length} device(s), ${this.plugin.path})`;
  }

  #own(device: Device): Device {
    if (!(device instanceof Device) || device.client !== this)
      throw new RuntimeError("ERR_DEVICE", `${String(device)} is not a device of this client`);
    return device;
  }
}

/** Creates a new client (prefer getClient, which shares one per plugin and options). */
export async function createClient(opts: ClientOptions = {}): Promise<Client> {
  const resolved = resolvePlugin(opts.plugin);
  const plugin = loadPlugin(resolved.path);
  const platform = opts.platform ?? detectPlatform(plugin, resolved.path);
  const limit = opts.inlineDispatchLimit ?? 16;
  if (!Number.isSafeInteger(limit) || limit < 0)
    throw new RuntimeError("ERR_CLIENT_OPTIONS", `inlineDispatchLimit must be a non-negative integer`);
  if (platform === "cpu") cacheHostAllocations(plugin.handle, resolved.path);
  let handle: ClientHandle;
  try {
    handle = await nativeAddon().createClient(plugin.handle, createOptions(platform, opts));
  } catch (e) {
    throw fromNative(e, `creating a ${platform} client of ${resolved.path}`);
  }
  if (platform === "cpu") registerCpuGemm(plugin.handle, resolved.path);
  return new Client(handle, plugin, resolved.name, platform, limit);
}

const clients = new Map<string, Promise<Client>>();

/**
 * The shared client for these options (created on first use, then cached for the process).
 * Default: the CPU plugin with 8 devices; $TESSERA_PJRT_PLUGIN or `plugin` choose another.
 */
export function getClient(opts: ClientOptions = {}): Promise<Client> {
  let key: string;
  try {
    key = JSON.stringify({ ...opts, plugin: resolvePlugin(opts.plugin).path });
  } catch (e) {
    return Promise.reject(e);
  }
  let client = clients.get(key);
  if (!client) {
    client = createClient(opts);
    clients.set(key, client);
    client.catch(() => clients.delete(key));
  }
  return client;
}
