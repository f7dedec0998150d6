// The runtime's public surface: clients, devices, buffers, executables over PJRT, and the errors they raise.
export { Client, Device, createClient, getClient, loadPlugin, REQUIRED_FUNCTIONS } from "./client.ts";
export type { BufferFromHostOptions, ClientOptions, DeviceMemoryStats, PluginAttributes, PluginInfo } from "./client.ts";
export { DeviceBuffer } from "./buffer.ts";
export type { Buffer } from "./buffer.ts";
export { Executable } from "./executable.ts";
export type { CompiledMemoryStats, ExecuteOptions, TensorType } from "./executable.ts";
export { encodeCompileOptions, inspectProgram, resolveCompileOptions } from "./compile-options.ts";
export type { CompileOptions, ProgramFacts, ResolvedCompileOptions } from "./compile-options.ts";
export { DTYPES, allocHost, byteSize, checkDType, formatType, isDType } from "./dtypes.ts";
export type { DType, HostArray, HostArrays } from "./dtypes.ts";
export { PJRT_CODE_NAMES, PjrtError, RuntimeError } from "./errors.ts";
export type { PjrtCodeName, RuntimeErrorCode } from "./errors.ts";
export { COLLECTIVE_OPCODES, countCollectives, decodeHloModule, printHloModule } from "./hlo-module.ts";
export type { HloAlias, HloComputation, HloInstruction, HloModule, HloShape } from "./hlo-module.ts";
export { nativeStats } from "./native.ts";
export { DEFAULT_PLUGIN, PLUGINS, PLUGIN_ENV, cacheRoot, cachedPluginFiles, resolvePlugin } from "./plugins.ts";
export type { PluginName, PluginSpec, ResolvedPlugin } from "./plugins.ts";
