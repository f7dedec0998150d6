// The side table of `shard(x, spec)` annotations, keyed by IR value (the IR op set has no annotation op).
import type { Value } from "../ir/graph.ts";
import type { SourceLoc, TensorType } from "../ir/types.ts";
import type { PartitionSpec } from "./mesh.ts";

/** One `shard(x, spec)` call: the spec and where the user wrote it. Copies of the value share the object. */
export interface ShardAnnotation {
  readonly spec: PartitionSpec;
  readonly type: TensorType;
  readonly loc?: SourceLoc;
}

const table = new WeakMap<Value, ShardAnnotation>();

/** Every annotation made, in order; `jit` reads the ones its trace made to report those the passes dropped. */
const made: ShardAnnotation[] = [];

export function annotate(v: Value, a: ShardAnnotation): void {
  table.set(v, a);
  if (!made.includes(a)) made.push(a);
}

export function annotationOf(v: Value): ShardAnnotation | undefined {
  return table.get(v);
}

/** Carries an annotation to the value that stands for `from` in another graph (inlining a transform's graph). */
export function copyAnnotation(from: Value, to: Value): void {
  const a = table.get(from);
  if (a) table.set(to, a);
}

/** A mark to pass to `annotationsSince` later. */
export function annotationMark(): number {
  return made.length;
}

/** Annotations made since `mark` (and forgets them, so the log stays small). */
export function annotationsSince(mark: number): ShardAnnotation[] {
  return made.splice(mark);
}
