// Everything a model file uses, in one module: `import { tx } from "tessera"` or named imports.
import * as ctl from "./control.ts";
import * as cf from "./control_flow.ts";
import { eagerable } from "./eager.ts";
import type { EagerCond, EagerSwitch } from "./eager_types.ts";
export * from "./numpy.ts";
export { Tensor, type TensorLike, type SliceSpec } from "./core.ts";
export { TraceError } from "./errors.ts";
export { setLocationCapture, namedScope } from "./loc.ts";
export { spec, TensorSpec, trace, evalShape, entry, type Entry, type Traced } from "./trace.ts";
export { valueAndGrad, grad, type GradOpts, type ValueAndGradFn, type GradFn, type GradsOf } from "./grad.ts";
export { vmap, type VmapOpts, type AxisSpec } from "./vmap.ts";
export type { ScanOpts } from "./control.ts";
export type { CustomVjpRules } from "./control_flow.ts";
// The transforms that need a trace also run on device arrays outside one (eager.ts traces and compiles the call).
export const scan: typeof ctl.scan = eagerable("scan", ctl.scan);
export const optimizationBarrier: typeof ctl.optimizationBarrier = eagerable(
  "optimizationBarrier",
  ctl.optimizationBarrier,
);
export const cond: EagerCond = eagerable("cond", cf.cond) as EagerCond;
export const switchCase: EagerSwitch = eagerable("switch", cf.switchCase) as EagerSwitch;
export { switchCase as switch };
export const whileLoop: typeof cf.whileLoop = eagerable("whileLoop", cf.whileLoop);
export const foriLoop: typeof cf.foriLoop = eagerable("foriLoop", cf.foriLoop);
export const stopGradient: typeof cf.stopGradient = eagerable("stopGradient", cf.stopGradient);
export const customVjp: typeof cf.customVjp = (fn, rules) => eagerable("customVjp", cf.customVjp(fn, rules));
export {
  checkpoint,
  checkpointName,
  checkpointPolicies,
  type CheckpointOpts,
  type SavePolicy,
} from "./checkpoint.ts";
export {
  flatten as treeFlatten,
  unflatten as treeUnflatten,
  treeMap,
  leaves as treeLeaves,
  type Tree,
  type TreeDef,
} from "./tree.ts";
export * as random from "./random_api.ts";
export * as nn from "./nn_api.ts";
export * as tree from "./tree_ns.ts";
export * as optim from "./optim.ts";
export * as debug from "./debug_ns.ts";
export { print as debugPrint } from "./debug.ts";
export { dropout } from "./random_api.ts";
export {
  jit,
  disableJit,
  isJitDisabled,
  type JitOpts,
  type Jitted,
  type Lowered,
  type Concrete,
  type ConcreteArg,
  type Abstract,
} from "./jit.ts";
export { array, DeviceArray, type ArrayOpts, type ReadArray } from "./array.ts";
export { mesh, P, DeviceMesh, PartitionSpec, type DimSpec } from "./mesh.ts";
export { shard } from "./shard.ts";
export { put } from "./array.ts";
export { ShardingError } from "../ir/sharding.ts";
export {
  exportJitted,
  loadExported,
  parseExported,
  Exported,
  ExportedError,
  EXPORTED_FORMAT_VERSION,
  type ExportedHeader,
  type ExportedLeaf,
  type ExportedInput,
  type LoadedExported,
  type ExportedArg,
} from "./exported.ts";
export { exportJitted as export } from "./exported.ts";
