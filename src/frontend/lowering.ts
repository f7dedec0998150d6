// Trace to emitted program, the one path jit, `tessera compile` and `tessera inspect` share: passes, donation, SPMD plan, StableHLO.
import { cpuGemmEnabled } from "../backend/runtime/cpu_gemm.ts";
import { emitStableHLO } from "../backend/stablehlo/index.ts";
import type { Graph } from "../ir/graph.ts";
import { sameType, type SourceLoc } from "../ir/types.ts";
import { runPasses, type RunPassesOptions } from "../passes/manager.ts";
import { CLEANUP_PIPELINE } from "../passes/pipeline.ts";
import { unshareBroadcastsPass } from "../passes/unshare_broadcasts.ts";
import type { ShardAnnotation } from "./annotations.ts";
import { planShardings, shardedEmitOptions, type ShardedLowering, type ShardingOpts } from "./spmd.ts";
import type { Traced } from "./trace.ts";
import type { PrintNode } from "./debug.ts";
import { numLeaves, type TreeDef } from "./tree.ts";

/** How to lay a program out over a mesh: jit's `{ mesh, in, out }` plus what the trace recorded about it. */
export interface ProgramSharding extends ShardingOpts {
  /** The shard() annotations the trace made (annotationMark/annotationsSince around the trace). */
  readonly made: readonly ShardAnnotation[];
  /** Where the user asked for the sharding (the jit call), for errors that have no better place. */
  readonly loc?: SourceLoc | undefined;
  /** Names of the positional arguments, so errors say `params.w` rather than `[1].w`. */
  readonly argNames?: readonly string[];
}

export interface LowerOptions {
  /** Positional arguments whose buffers the program may reuse for outputs of the same type. */
  readonly donate?: readonly number[];
  /** SPMD over a device mesh; absent: one device. */
  readonly sharding?: ProgramSharding;
  /** Passes after which to dump the IR (`--dump-after`), and where the dumps go (default stderr). */
  readonly dumpAfter?: RunPassesOptions["dumpAfter"];
  readonly dump?: RunPassesOptions["dump"];
}

/** A traced program after the passes, with its donation and (on a mesh) its sharding plan: everything but the text. */
export interface Program {
  /** The graph as traced, before any pass. */
  readonly traced: Graph;
  /** The graph after the pipeline: what is emitted. */
  readonly graph: Graph;
  readonly inTree: TreeDef;
  readonly outTree: TreeDef;
  /** Per graph input: the output its buffer is donated into (tf.aliasing_output), if any. */
  readonly donate: readonly (number | undefined)[];
  /** Per graph input: donated but with no same-typed output, so only offered to XLA as a buffer donor. */
  readonly donors: readonly boolean[];
  /** With a mesh: every value's sharding, the predicted collectives, the argument and result layouts. */
  readonly sharding?: ShardedLowering;
  /** The debug.print calls, over the indices of the outputs after outTree's that carry their values. */
  readonly prints?: readonly PrintNode<number>[];
}

/**
 * Pairs donated inputs with outputs of the same type: an output whose name ends with the input's tree path
 * (`params.layers[0].wq` -> `...layers[0].wq`) first, else the first free output of that type.
 */
export function donationMap(g: Graph, donatedInputs: ReadonlySet<number>): (number | undefined)[] {
  const taken = new Set<number>();
  const map: (number | undefined)[] = g.inputs.map(() => undefined);
  const candidates = (i: number) =>
    g.outputs.flatMap((o, k) => (!taken.has(k) && sameType(o.type, g.inputs[i]!.type) ? [k] : []));
  const pathOf = (name: string) => name.replace(/^[^.[]*\.?/, "");
  // Name matches first, so that one input's fallback does not take another input's namesake.
  for (const i of donatedInputs) {
    const path = pathOf(g.inputNames?.[i] ?? "");
    if (!path) continue;
    const k = candidates(i).find((k) => (g.outputNames?.[k] ?? "").endsWith(path));
    if (k !== undefined) {
      map[i] = k;
      taken.add(k);
    }
  }
  for (const i of donatedInputs) {
    if (map[i] !== undefined) continue;
    const k = candidates(i)[0];
    if (k !== undefined) {
      map[i] = k;
      taken.add(k);
    }
  }
  return map;
}

/** Graph inputs (flattened leaves) that belong to a donated positional argument. */
function donatedLeaves(inTree: TreeDef, donate: readonly number[]): Set<number> {
  // A traced argument list is an array tree with one child per positional argument.
  if (!donate.length || inTree.kind !== "array") return new Set();
  const argOfLeaf = inTree.children.flatMap((child, arg) => Array<number>(numLeaves(child)).fill(arg));
  return new Set(argOfLeaf.flatMap((arg, i) => (donate.includes(arg) ? [i] : [])));
}

/**
 * Runs the pipeline over a traced program (the cleanup passes; on a mesh also unshare-broadcasts, so every user
 * of a broadcast gets its own copy to lay out), pairs donated inputs with outputs, and plans the shardings.
 */
export function lowerProgram(t: Traced, opts: LowerOptions = {}): Program {
  const passes = opts.sharding ? [...CLEANUP_PIPELINE, unshareBroadcastsPass] : CLEANUP_PIPELINE;
  const graph = runPasses(t.graph, passes, {
    ...(opts.dumpAfter ? { dumpAfter: opts.dumpAfter } : {}),
    ...(opts.dump ? { dump: opts.dump } : {}),
  });
  if (graph.inputs.length !== t.graph.inputs.length)
    throw new Error("internal: the pipeline changed the number of inputs");
  const donated = donatedLeaves(t.inTree, opts.donate ?? []);
  const donate = donationMap(graph, donated);
  // Donated inputs without a same-typed output are still offered to XLA (jax.buffer_donor), which may reuse them.
  const donors = graph.inputs.map((_, i) => donated.has(i) && donate[i] === undefined);
  const s = opts.sharding;
  const sharding = s ? planShardings(graph, t.inTree, t.outTree, s, s.made, s.loc, s.argNames) : undefined;
  return {
    traced: t.graph,
    graph,
    inTree: t.inTree,
    outTree: t.outTree,
    donate,
    donors,
    ...(sharding ? { sharding } : {}),
    ...(t.prints ? { prints: t.prints } : {}),
  };
}

/**
 * The program as a StableHLO module named `moduleName`: donation attributes and, on a mesh, Shardy shardings.
 * `cpuGemm` (default: when the default client is a CPU plugin with OpenBLAS, for unsharded programs, which Shardy
 * could not partition around the call) sends f32 matmuls to the OpenBLAS custom call; exported programs pass
 * false, to stay runnable on any plugin.
 */
export function emitProgram(p: Program, moduleName: string, opts: { cpuGemm?: boolean } = {}): string {
  const shardOpts = p.sharding ? shardedEmitOptions(p.graph, p.sharding) : {};
  const cpuGemm = !p.sharding && (opts.cpuGemm ?? cpuGemmEnabled());
  return emitStableHLO(p.graph, { moduleName, donate: p.donate, donors: p.donors, cpuGemm, ...shardOpts });
}
