// jit: trace once per input signature, run the cleanup passes, emit StableHLO, compile with PJRT, cache, execute.
import type { Executable } from "../backend/runtime/index.ts";
import { emitStableHLO } from "../backend/stablehlo/index.ts";
import type { Graph } from "../ir/graph.ts";
import { formatType, sameType, type DType } from "../ir/types.ts";
import { runPasses } from "../passes/manager.ts";
import { CLEANUP_PIPELINE } from "../passes/pipeline.ts";
import { array, defaultClient, DeviceArray } from "./array.ts";
import { currentTrace, Tensor } from "./core.ts";
import { TraceError } from "./errors.ts";
import { describe as describeValue, trace, type HasType, type Traced } from "./trace.ts";
import { flatten, treeDefKey, unflatten, type Tree, type TreeDef } from "./tree.ts";

export interface JitOpts {
  /**
   * Positional arguments whose buffers the compiled program may reuse for outputs of the same type (updated
   * weights, optimizer state). After a call they are donated: using them again is an error.
   */
  donate?: number | readonly number[];
  /** Module name in XLA dumps and errors (default: the function's name). */
  name?: string;
}

/** Tensors in a traced signature become device arrays (or JS numbers, uploaded as f32 scalars) when called. */
export type Concrete<T> = T extends Tensor ? DeviceArray : T extends object ? { [K in keyof T]: Concrete<T[K]> } : T;
/** Abstract stand-ins for `lower`: anything with dtype and shape (spec(...), a DeviceArray, a Tensor). */
export type Abstract<T> = T extends Tensor ? HasType : T extends object ? { [K in keyof T]: Abstract<T[K]> } : T;

export interface Lowered {
  /** The graph as traced, before any pass. */
  readonly traced: Graph;
  /** The graph after the cleanup pipeline: what is emitted. */
  readonly graph: Graph;
  readonly stablehlo: string;
  readonly inTree: TreeDef;
  readonly outTree: TreeDef;
  /** Per graph input: the output its buffer is donated into (tf.aliasing_output), if any. */
  readonly donate: readonly (number | undefined)[];
}

export interface Jitted<F extends (...args: any[]) => any> {
  /** With device arrays: compiles on the first call for this signature, then runs; resolves to the outputs. */
  (...args: Concrete<Parameters<F>>): Promise<Concrete<ReturnType<F>>>;
  /** Inside a trace (another jit, grad, scan), the function is simply traced inline. */
  (...args: Parameters<F>): ReturnType<F>;
  /** Traces and lowers for abstract arguments, without compiling or running. */
  lower(...args: Abstract<Parameters<F>>): Lowered;
  /** Compiled signatures so far. */
  readonly cacheSize: number;
}

interface Compiled {
  readonly lowered: Lowered;
  readonly exe: Promise<Executable>;
}

function donatedArgs(donate: JitOpts["donate"]): number[] {
  if (donate === undefined) return [];
  return typeof donate === "number" ? [donate] : [...donate];
}

/** Which argument each flattened leaf belongs to (leaf paths start with `[i]`). */
function argIndexOf(path: string): number {
  return Number(/^\[(\d+)\]/.exec(path)![1]);
}

/**
 * Pairs donated inputs with outputs of the same type: an output whose name ends with the input's tree path
 * (`params.layers[0].wq` -> `...layers[0].wq`) first, else the first free output of that type.
 */
export function donationMap(g: Graph, donatedInputs: ReadonlySet<number>): (number | undefined)[] {
  const taken = new Set<number>();
  const map: (number | undefined)[] = g.inputs.map(() => undefined);
  const candidates = (i: number) => g.outputs.flatMap((o, k) => (!taken.has(k) && sameType(o.type, g.inputs[i]!.type) ? [k] : []));
  const pathOf = (name: string) => name.replace(/^[^.[]*\.?/, "");
  // Name matches first, so that one input's fallback does not take another input's namesake.
  for (const i of donatedInputs) {
    const path = pathOf(g.inputNames?.[i] ?? "");
    if (!path) continue;
    const k = candidates(i).find((k) => (g.outputNames?.[k] ?? "").endsWith(path));
    if (k !== undefined) (map[i] = k), taken.add(k);
  }
  for (const i of donatedInputs) {
    if (map[i] !== undefined) continue;
    const k = candidates(i)[0];
    if (k !== undefined) (map[i] = k), taken.add(k);
  }
  return map;
}

function lowerTraced(t: Traced, donate: readonly number[], name: string): Lowered {
  const graph = runPasses(t.graph, CLEANUP_PIPELINE);
  if (graph.inputs.length !== t.graph.inputs.length) throw new Error(`internal: the pipeline changed the number of inputs of ${name}`);
  const { paths } = flatten<unknown>(unflatten(t.inTree, t.graph.inputs.map(() => 0)));
  const donated = new Set(paths.flatMap((p, i) => (donate.includes(argIndexOf(p)) ? [i] : [])));
  const map = donationMap(graph, donated);
  // Donated inputs without a same-typed output are still offered to XLA (jax.buffer_donor), which may reuse them.
  const donors = graph.inputs.map((_, i) => donated.has(i) && map[i] === undefined);
  const stablehlo = emitStableHLO(graph, { moduleName: name, donate: map, donors });
  return { traced: t.graph, graph, stablehlo, inTree: t.inTree, outTree: t.outTree, donate: map };
}

function moduleName(fn: Function, opts: JitOpts): string {
  const n = (opts.name ?? fn.name ?? "").replace(/[^A-Za-z0-9_]/g, "_");
  return n ? `jit_${n}` : "jit_main";
}

/**
 * Compiles `fn` with XLA. Called with device arrays (trees of them), it traces `fn` once per signature (the tree
 * structure plus every leaf's dtype and shape), runs the cleanup passes, emits StableHLO, compiles it through
 * PJRT and caches the executable; each call then just runs it and resolves to the output tree of device
 * arrays. Called inside another trace, it traces `fn` inline. `opts.donate` lets outputs reuse argument buffers.
 */
export function jit<F extends (...args: any[]) => any>(fn: F, opts: JitOpts = {}): Jitted<F> {
  const cache = new Map<string, Compiled>();
  const donate = donatedArgs(opts.donate);
  const name = moduleName(fn, opts);

  const lower = (...args: unknown[]): Lowered => lowerTraced(trace(fn, args), donate, name);

  const call = (...args: unknown[]): unknown => {
    if (currentTrace()) return fn(...args);
    return run(args);
  };

  const run = async (args: unknown[]): Promise<unknown> => {
    const { leaves, paths, def } = flatten<unknown>(args as Tree<unknown>);
    const arrays = leaves.map((leaf, i) => {
      if (leaf instanceof DeviceArray) return leaf;
      if (typeof leaf === "number") return array(leaf);
      if (leaf instanceof Tensor) throw new TraceError("jit", `argument ${paths[i]} is a traced Tensor, but no trace is active (a tensor leaked out of its transform?)`);
      throw new TraceError("jit", `argument ${paths[i] || "(root)"} is ${describeValue(leaf)}, not a DeviceArray (create one with array(...))`);
    });
    for (const d of donate) if (d >= args.length) throw new TraceError("jit", `donate names argument ${d}, but ${name} got ${args.length} arguments`);
    const key = `${treeDefKey(def)}|${arrays.map((a) => formatType(a)).join(",")}`;
    let compiled = cache.get(key);
    if (!compiled) {
      const specs = unflatten(def, arrays.map((a) => ({ dtype: a.dtype, shape: a.shape }))) as unknown[];
      const lowered = lowerTraced(trace(fn, specs), donate, name);
      const exe = defaultClient().then((c) => c.compile(lowered.stablehlo));
      exe.catch(() => cache.delete(key));
      compiled = { lowered, exe };
      cache.set(key, compiled);
    }
    const buffers = await Promise.all(arrays.map((a, i) => a.buffer(`jit argument ${paths[i]}`)));
    const exe = await compiled.exe;
    const outs = await exe.run(buffers);
    const g = compiled.lowered.graph;
    const results = outs.map((b, k) => new DeviceArray(g.outputs[k]!.type.dtype as DType, g.outputs[k]!.type.shape, b));
    return unflatten(compiled.lowered.outTree, results);
  };

  const jitted = call as unknown as Jitted<F>;
  Object.defineProperty(jitted, "lower", { value: lower });
  Object.defineProperty(jitted, "cacheSize", { get: () => cache.size });
  return jitted;
}
