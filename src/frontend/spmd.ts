// SPMD lowering for jit's `mesh` option: spec trees to seeds, propagation, and the Shardy annotations of the emitted module.
import type { AnyOp, Graph, Value } from "../ir/graph.ts";
import { dropUnitAxes, ShardingError, shardyDims, type Sharding } from "../ir/sharding.ts";
import { describe } from "../errors.ts";
import { formatType, type SourceLoc } from "../ir/types.ts";
import { propagateShardings, type Seed, type ShardingPlan } from "../passes/shard_propagate.ts";
import type { EmitOptions } from "../backend/stablehlo/index.ts";
import { annotationOf, type ShardAnnotation } from "./annotations.ts";
import { DeviceMesh, PartitionSpec, specSharding, type DimSpec } from "./mesh.ts";
import { isPlainObject, numLeaves, type TreeDef } from "./tree.ts";

/** jit's sharding options: the mesh, and partition specs for the arguments and results (trees, or prefixes of them). */
export interface ShardingOpts {
  readonly mesh: DeviceMesh;
  /** One spec tree per positional argument (a PartitionSpec covers its whole subtree; null or absent: replicated). */
  readonly in?: unknown;
  /** Specs for the result tree; absent leaves take the sharding propagation gives them. */
  readonly out?: unknown;
}

export interface ShardedLowering {
  readonly mesh: DeviceMesh;
  readonly plan: ShardingPlan;
  /** Per graph input and output: its layout in the emitted module (and so of the arrays passed and returned). */
  readonly argShardings: readonly Sharding[];
  readonly resultShardings: readonly Sharding[];
  /** shard() annotations the cleanup passes removed along with their value (e.g. merged by CSE). */
  readonly dropped: readonly ShardAnnotation[];
}

const isDimList = (x: unknown): x is DimSpec[] =>
  Array.isArray(x) &&
  x.every(
    (d) =>
      d === null || typeof d === "string" || Array.isArray(d) || (typeof d === "object" && d !== null && "axes" in d),
  );

/**
 * Matches a spec tree against a value tree's structure: one PartitionSpec (or undefined) per leaf, in flatten order.
 * A spec at an inner node covers every leaf below it; keys the value tree lacks are errors naming the path.
 */
export function matchSpecs(
  spec: unknown,
  def: TreeDef,
  path: string,
  what: string,
  loc: SourceLoc | undefined,
  argNames?: readonly string[],
): (PartitionSpec | undefined)[] {
  const out: (PartitionSpec | undefined)[] = [];
  // `[1].w` reads better as `params.w` when the arguments have names.
  const show = (p: string) =>
    (argNames ? p.replace(/^\[(\d+)\]/, (m, i: string) => argNames[Number(i)] ?? m) : p) || "(root)";
  const walk = (s: unknown, d: TreeDef, p: string): void => {
    const n = numLeaves(d);
    if (s instanceof PartitionSpec) return void out.push(...Array<PartitionSpec>(n).fill(s));
    if (s === null || s === undefined) return void out.push(...Array<undefined>(n).fill(undefined));
    if (d.kind === "leaf" && isDimList(s)) return void out.push(new PartitionSpec(s, loc));
    switch (d.kind) {
      case "none":
        return;
      case "leaf":
        throw new ShardingError(
          `${what} ${show(p)}`,
          `expected a partition spec P(...) for this tensor, got ${describe(s)}`,
          loc,
        );
      case "array": {
        if (!Array.isArray(s))
          throw new ShardingError(
            `${what} ${show(p)}`,
            `the value is an array of ${d.children.length}; the specs give ${describe(s)}`,
            loc,
          );
        if (s.length > d.children.length)
          throw new ShardingError(
            `${what} ${show(p)}`,
            `the specs have ${s.length} entries for an array of ${d.children.length}`,
            loc,
          );
        d.children.forEach((c, i) => {
          walk(s[i], c, `${p}[${i}]`);
        });
        return;
      }
      case "object": {
        if (!isPlainObject(s))
          throw new ShardingError(
            `${what} ${show(p)}`,
            `the value is an object with keys ${d.keys.join(", ")}; the specs give ${describe(s)}`,
            loc,
          );
        for (const k of Object.keys(s)) {
          if (!d.keys.includes(k) && s[k] !== undefined)
            throw new ShardingError(
              `${what} ${show(p ? `${p}.${k}` : k)}`,
              `the specs name '${k}', which the value does not have (keys: ${d.keys.join(", ")})`,
              loc,
            );
        }
        d.keys.forEach((k, i) => {
          walk(s[k], d.children[i]!, p ? `${p}.${k}` : k);
        });
        return;
      }
    }
  };
  walk(spec, def, path);
  return out;
}

function seedFor(
  spec: PartitionSpec,
  v: Value,
  kind: "in" | "out" | "shard",
  name: string,
  fallbackLoc: SourceLoc | undefined,
): Seed {
  const rank = v.type.shape.length;
  if (!spec.isReplicated && spec.dims.length !== rank) {
    const what = kind === "in" ? `argument ${name}` : kind === "out" ? `result ${name}` : `shard() of ${name}`;
    throw new ShardingError(
      what,
      `the spec ${spec} has ${spec.dims.length} entr${spec.dims.length === 1 ? "y" : "ies"} but the value is ${formatType(v.type)} (rank ${rank})`,
      spec.loc ?? fallbackLoc,
    );
  }
  const { sharding, priorities } = specSharding(spec, rank);
  // A shard() call is where the user pinned the value; for spec trees, where the P(...) was written.
  const loc = kind === "shard" ? (fallbackLoc ?? spec.loc) : (spec.loc ?? fallbackLoc);
  return { sharding, priorities, source: { kind, name, ...(loc ? { loc } : {}) } };
}

/** Every value of a graph and of its scan bodies, in program order. */
function allValues(g: Graph): Value[] {
  const out: Value[] = [...g.inputs];
  for (const op of g.ops) {
    out.push(...op.outputs);
    if (op.name === "scan") out.push(...allValues(op.params.body));
  }
  return out;
}

/**
 * Seeds from the spec trees and the shard() annotations found in `graph` (after the cleanup passes), then
 * propagation. Throws ShardingError for a spec that does not fit its value or the mesh.
 */
export function planShardings(
  graph: Graph,
  inTree: TreeDef,
  outTree: TreeDef,
  opts: ShardingOpts,
  made: readonly ShardAnnotation[],
  loc: SourceLoc | undefined,
  argNames?: readonly string[],
): ShardedLowering {
  const { mesh } = opts;
  if (!(mesh instanceof DeviceMesh)) throw new ShardingError("jit", "the mesh option must be a mesh({...})", loc);
  const inSpecs = matchSpecs(opts.in, inTree, "", "argument", loc, argNames);
  const outSpecs = matchSpecs(opts.out, outTree, "", "result", loc);
  const seeds = new Map<Value, Seed>();
  graph.inputs.forEach((v, i) => {
    const s = inSpecs[i];
    if (s) seeds.set(v, seedFor(s, v, "in", graph.inputNames?.[i] || `arg${i}`, loc));
  });
  const found = new Set<ShardAnnotation>();
  for (const v of allValues(graph)) {
    const a = annotationOf(v);
    if (!a) continue;
    found.add(a);
    const seed = seedFor(a.spec, v, "shard", formatType(a.type), a.loc);
    const prev = seeds.get(v);
    if (prev && shardyDims(prev.sharding) !== shardyDims(seed.sharding)) {
      throw new ShardingError(
        `argument ${prev.source.name}`,
        `the in-specs give it ${shardyDims(prev.sharding)} but shard() pins it to ${a.spec}`,
        a.loc ?? loc,
      );
    }
    seeds.set(v, seed);
  }
  const outSeeds: (Seed | undefined)[] = graph.outputs.map((v, k) => {
    const s = outSpecs[k];
    if (!s) return undefined;
    const seed = seedFor(s, v, "out", graph.outputNames?.[k] || `out${k}`, loc);
    if (!seeds.has(v)) seeds.set(v, seed);
    return seed;
  });
  const plan = propagateShardings(graph, mesh, seeds);
  const shardingOf = (v: Value): Sharding => plan.values.get(v)!.sharding;
  return {
    mesh,
    plan,
    argShardings: graph.inputs.map(shardingOf),
    resultShardings: graph.outputs.map((v, k) => dropUnitAxes(outSeeds[k]?.sharding ?? shardingOf(v), mesh)),
    dropped: made.filter((a) => !found.has(a)),
  };
}

/**
 * The emitter options of a sharded module: the mesh, every argument and result annotated (closed), and every op
 * result pinned with sdy.sharding_constraint, so XLA's partitioner lays out each value exactly as the plan says;
 * operands that an op needs in another layout are moved by a constraint right before it (explicit reshards), so
 * the partitioner needs exactly the collectives the plan predicts.
 */
export function shardedEmitOptions(
  graph: Graph,
  s: ShardedLowering,
  meshName = "mesh",
): Pick<
  EmitOptions,
  "argShardings" | "resultShardings" | "mesh" | "numPartitions" | "constraints" | "operandConstraints"
> {
  const attr = (x: Sharding) => `#sdy.sharding<@${meshName}, ${shardyDims(x)}>`;
  const constraints = new Map<Value, string | string[]>();
  const pin = (g: Graph) => {
    for (const op of g.ops) {
      for (const v of op.outputs) {
        const own = `<@${meshName}, ${shardyDims(s.plan.values.get(v)!.sharding)}>`;
        const computed = s.plan.computedShardings.get(v);
        constraints.set(v, computed ? [`<@${meshName}, ${shardyDims(computed)}>`, own] : own);
      }
      if (op.name === "scan") pin(op.params.body);
    }
  };
  pin(graph);
  const operandConstraints = new Map<AnyOp, (string | undefined)[]>();
  for (const [op, list] of s.plan.operandShardings)
    operandConstraints.set(
      op,
      list.map((x) => (x ? `<@${meshName}, ${shardyDims(x)}>` : undefined)),
    );
  return {
    operandConstraints,
    argShardings: s.argShardings.map(attr),
    resultShardings: s.resultShardings.map(attr),
    mesh: { name: meshName, axes: s.mesh.axes },
    numPartitions: s.mesh.size,
    constraints,
  };
}
