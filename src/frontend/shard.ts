// `shard(x, spec)`: pins how a traced value is laid out over the jit's mesh, recorded beside the IR with the user's line.
import { formatType } from "../ir/types.ts";
import { ShardingError } from "../ir/sharding.ts";
import { annotate, annotationOf } from "./annotations.ts";
import { requireTrace, Tensor } from "./core.ts";
import { userLoc } from "./loc.ts";
import { P, PartitionSpec, specSharding, type DimSpec } from "./mesh.ts";

/**
 * Lays `x` out as `spec` says on the mesh of the enclosing `jit(f, { mesh })` (JAX's with_sharding_constraint):
 * `shard(h, P("data", null, null))`. Returns `x` itself; the annotation is fixed during sharding propagation and
 * pinned in the emitted module. Axis names are checked against the mesh when the jit lowers; rank now.
 */
export function shard(x: Tensor, spec: PartitionSpec | readonly DimSpec[]): Tensor {
  const loc = userLoc();
  requireTrace("shard");
  if (!(x instanceof Tensor)) throw new ShardingError("shard()", `the first argument must be a traced Tensor`, loc);
  const ps =
    spec instanceof PartitionSpec
      ? spec
      : Array.isArray(spec)
        ? new PartitionSpec(spec as readonly DimSpec[], loc)
        : undefined;
  if (!ps)
    throw new ShardingError(
      `shard() of ${formatType(x.type)}`,
      `the spec must be P(...) or an array with one entry per dimension`,
      loc,
    );
  if (!ps.isReplicated && ps.dims.length !== x.ndim) {
    throw new ShardingError(
      `shard() of ${formatType(x.type)}`,
      `the spec ${ps} has ${ps.dims.length} entr${ps.dims.length === 1 ? "y" : "ies"} but the value has rank ${x.ndim}`,
      loc,
    );
  }
  specSharding(ps, x.ndim); // priorities checked here
  const prev = annotationOf(x.value);
  if (prev && String(prev.spec) !== String(ps)) {
    throw new ShardingError(
      `shard() of ${formatType(x.type)}`,
      `the value is already pinned to ${prev.spec}${prev.loc ? ` at ${prev.loc.file}:${prev.loc.line}:${prev.loc.col}` : ""}`,
      loc,
    );
  }
  annotate(x.value, { spec: ps, type: x.type, ...(loc ? { loc } : {}) });
  return x;
}

export { P };
