// The runtime's public surface: clients, devices, buffers, executables over PJRT, and the errors they raise.
export { Client, Device, createClient, getClient, loadPlugin, REQUIRED_FUNCTIONS } from "./client.ts";
export type {
  BufferFromHostOptions,
  ClientOptions,
  DeviceMemoryStats,
  PluginAttributes,
  PluginInfo,
} from "./client.ts";
export { DeviceBuffer } from "./buffer.ts";
export type { Buffer } from "./buffer.ts";
export { Executable } from "./executable.ts";
export type { CompiledMemoryStats, ExecuteOptions, TensorType } from "./executable.ts";
export { encodeCompileOptions, inspectProgram, resolveCompileOptions } from "./compile_options.ts";
export type { CompileOptions, ProgramFacts, ResolvedCompileOptions } from "./compile_options.ts";
export { HOST_ARRAY, RUNTIME_DTYPES, allocHost, checkDType, isRuntimeDType } from "./host_array.ts";
export type { RuntimeDType, HostArray, HostArrays } from "./host_array.ts";
export { PJRT_CODE_NAMES, PjrtError, RuntimeError } from "./errors.ts";
export type { PjrtCodeName, RuntimeErrorCode } from "./errors.ts";
export { COLLECTIVE_OPCODES, countCollectives, decodeHloModule, printHloModule } from "./hlo_module.ts";
export type { HloAlias, HloComputation, HloInstruction, HloModule, HloShape } from "./hlo_module.ts";
export { nativeStats } from "./native.ts";
export { DEFAULT_PLUGIN, PLUGINS, PLUGIN_ENV, cacheRoot, cachedPluginFiles, resolvePlugin } from "./plugins.ts";
export type { PluginName, PluginSpec, ResolvedPlugin } from "./plugins.ts";
export {
  compileCached,
  compileCounters,
  compileShared,
  executableCacheDir,
  executableCacheKey,
  onCompile,
  persistentCacheEnabled,
} from "./executable_cache.ts";
export type { CachedCompile, CompileCounters, CompileEvent } from "./executable_cache.ts";
export { ShardedBuffer, collectiveTensors } from "./sharded.ts";
export type { CollectiveTensor } from "./sharded.ts";
