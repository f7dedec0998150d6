// Loads the compiled addon (native/build/tessera_pjrt.node) once and types the functions it exports.
import { existsSync } from "node:fs";
import { createRequire } from "node:module";
import { fileURLToPath } from "node:url";
import { RuntimeError } from "./errors.ts";

declare const handleKind: unique symbol;
/** Opaque native handle (a napi external). */
export type Handle<K extends string> = { readonly [handleKind]: K };
export type PluginHandle = Handle<"plugin">;
export type ClientHandle = Handle<"client">;
export type BufferHandle = Handle<"buffer">;
export type ExecutableHandle = Handle<"executable">;

export type NamedValue =
  | { name: string; type: "string"; value: string }
  | { name: string; type: "int64"; value: number }
  | { name: string; type: "int64list"; value: number[] }
  | { name: string; type: "float"; value: number }
  | { name: string; type: "bool"; value: boolean };

export interface NativePlugin {
  handle: PluginHandle;
  path: string;
  apiMajor: number;
  apiMinor: number;
  apiStructSize: number;
  attributes: { name: string; value: string | number | boolean | number[] }[];
  /** For each function slot the runtime may call: whether this plugin's PJRT_Api has it. */
  slots: Record<string, boolean>;
}

export interface NativeDevice {
  index: number;
  id: number;
  kind: string;
  processIndex?: number;
  localHardwareId?: number;
  toString?: string;
  debugString?: string;
}

export interface NativeClientInfo {
  platformName: string;
  platformVersion?: string;
  processIndex?: number;
  deviceCount?: number;
  devices: NativeDevice[];
}

export interface NativeMemoryStats {
  generatedCodeBytes: number;
  argumentBytes: number;
  outputBytes: number;
  aliasBytes: number;
  tempBytes: number;
  hostGeneratedCodeBytes: number;
  hostArgumentBytes: number;
  hostOutputBytes: number;
  hostAliasBytes: number;
  hostTempBytes: number;
  peakMemoryBytes: number;
}

export interface NativeExecutable {
  handle: ExecutableHandle;
  name: string;
  numReplicas: number;
  numPartitions: number;
  numOutputs: number;
  outputTypes?: number[];
  outputDims?: number[][];
  deviceIndices: number[];
  memoryStats?: NativeMemoryStats;
  memoryStatsError?: string;
  hlo?: Uint8Array;
  hloFormat?: string;
  hloError?: string;
  fingerprint?: string;
}

/** native/host_alloc.cc's pool of large host blocks: served from the pool (hits) or newly mapped (misses). */
export interface HostAllocStats {
  hits: number;
  misses: number;
  evictions: number;
  liveBytes: number;
  idleBytes: number;
  peakLiveBytes: number;
}

/** Flat output handles [device * numOutputs + output]; `donated`: flat [device * numArgs + arg] indices. */
export type NativeExecuteResult = BufferHandle[] & { donated?: number[] };

export interface NativeAddon {
  headerInfo(): { major: number; minor: number; apiStructSize: number; argsPadding: number };
  /** PJRT buffers and executables created and not yet destroyed. */
  stats(): NativeStats;
  loadPlugin(path: string): NativePlugin;
  /** Registers native/cpu_gemm.cc's OpenBLAS GEMM targets with a plugin's FFI extension (dlopens `blasPath`). */
  registerCpuGemm(plugin: PluginHandle, blasPath: string, symbolPrefix: string): void;
  /** Sends a CPU plugin's large allocations through native/host_alloc.cc's pool; false: it imports no allocator. */
  cacheHostAllocations(plugin: PluginHandle): boolean;
  /** The pool's counters since the process started. */
  hostAllocStats(): HostAllocStats;
  createClient(plugin: PluginHandle, options: NamedValue[]): Promise<ClientHandle>;
  clientInfo(client: ClientHandle): NativeClientInfo;
  defaultDeviceAssignment(client: ClientHandle, numReplicas: number, numPartitions: number): number[];
  deviceMemoryStats(client: ClientHandle, deviceIndex: number): Record<string, number>;
  bufferFromHost(
    client: ClientHandle,
    deviceIndex: number,
    data: ArrayBufferView,
    pjrtType: number,
    dims: readonly number[],
    keepHost: boolean,
  ): BufferHandle;
  bufferToHost(buffer: BufferHandle, dst: ArrayBufferView): Promise<void>;
  /** Uninitialized, huge-page-advised host memory for downloads; null where external ArrayBuffers are not allowed. */
  allocHostBlock(bytes: number): ArrayBuffer | null;
  bufferReady(buffer: BufferHandle): Promise<void>;
  bufferDestroy(buffer: BufferHandle): void;
  bufferInfo(buffer: BufferHandle): { deleted: boolean; type?: number; dims?: number[]; onDeviceBytes?: number };
  bufferCopyToDevice(buffer: BufferHandle, client: ClientHandle, deviceIndex: number): BufferHandle;
  compile(client: ClientHandle, program: string, options: Uint8Array): Promise<NativeExecutable>;
  deserialize(client: ClientHandle, bytes: Uint8Array): Promise<NativeExecutable>;
  serialize(exe: ExecutableHandle): Uint8Array;
  executableDestroy(exe: ExecutableHandle): void;
  /** Launches on this thread (dispatch false), on the dispatcher thread (true: a Promise), or on this
   *  thread only while fewer than `dispatch` executions are in flight (a number: null when not launched). */
  execute(
    exe: ExecutableHandle,
    args: BufferHandle[][],
    nonDonatable: readonly number[] | null,
    dispatch: false,
  ): NativeExecuteResult;
  execute(
    exe: ExecutableHandle,
    args: BufferHandle[][],
    nonDonatable: readonly number[] | null,
    dispatch: true,
  ): Promise<NativeExecuteResult>;
  execute(
    exe: ExecutableHandle,
    args: BufferHandle[][],
    nonDonatable: readonly number[] | null,
    dispatch: number,
  ): NativeExecuteResult | null;
  inflight(client: ClientHandle): number;
}

/** Where the install step writes the addon. */
export const ADDON_PATH = fileURLToPath(new URL("../../../native/build/tessera_pjrt.node", import.meta.url));

let addon: NativeAddon | undefined;

export function nativeAddon(): NativeAddon {
  if (addon) return addon;
  if (!existsSync(ADDON_PATH)) {
    throw new RuntimeError(
      "ERR_ADDON_MISSING",
      `the native PJRT addon is not built (${ADDON_PATH} is missing): run \`npm install\`, or \`npx tsx scripts/install.ts\``,
    );
  }
  const require = createRequire(import.meta.url);
  try {
    addon = require(ADDON_PATH) as NativeAddon;
  } catch (e) {
    throw new RuntimeError(
      "ERR_ADDON_MISSING",
      `cannot load the native PJRT addon ${ADDON_PATH}: ${(e as Error).message}; rebuild it with \`npx tsx scripts/install.ts\``,
    );
  }
  return addon;
}

export interface NativeStats {
  /** PJRT buffers created and not yet destroyed */
  liveBuffers: number;
  /** PJRT executables created and not yet destroyed */
  liveExecutables: number;
  /** uploaded host arrays still referenced because PJRT may still read them */
  hostHolds: number;
}

/** Counts of live native objects (for leak checks and tests). */
export function nativeStats(): NativeStats {
  return nativeAddon().stats();
}
