// Everything a model file uses, in one module: `import { tx } from "tessera"` or named imports.
export * from "./numpy.ts";
export { Tensor, type TensorLike, type SliceSpec } from "./core.ts";
export { TraceError } from "./errors.ts";
export { setLocationCapture } from "./loc.ts";
export { spec, TensorSpec, trace, evalShape, entry, type Entry, type Traced } from "./trace.ts";
export { valueAndGrad, grad, type GradOpts } from "./grad.ts";
export { scan, optimizationBarrier, type ScanOpts } from "./control.ts";
export {
  cond,
  switchCase,
  switchCase as switch,
  whileLoop,
  foriLoop,
  stopGradient,
  customVjp,
  type CustomVjpRules,
} from "./control_flow.ts";
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
export * as random from "./random.ts";
export * as nn from "./nn.ts";
export * as tree from "./tree_ns.ts";
export * as optim from "./optim.ts";
export { dropout } from "./random.ts";
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
