// jit: trace once per input signature, run the cleanup passes, emit StableHLO, compile with PJRT, cache, execute.
import type { Executable } from "../backend/runtime/index.ts";
import { formatType, type DType } from "../ir/types.ts";
import { array, defaultClient, DeviceArray, meshDevices } from "./array.ts";
import { ShardedBuffer } from "../backend/runtime/index.ts";
import { annotationMark, annotationsSince, type ShardAnnotation } from "./annotations.ts";
import { userLoc } from "./loc.ts";
import type { DeviceMesh } from "./mesh.ts";
import { emitProgram, lowerProgram, type Program } from "./lowering.ts";
import type { ShardingOpts } from "./spmd.ts";
import { currentTrace, Tensor } from "./core.ts";
import { TraceError } from "./errors.ts";
import { describe as describeValue } from "../errors.ts";
import { paramNames, trace, type HasType, type Traced } from "./trace.ts";
import { flatten, treeDefKey, unflatten, type Tree, type TreeDef } from "./tree.ts";

export interface JitOpts {
  /**
   * Positional arguments whose buffers the compiled program may reuse for outputs of the same type (updated
   * weights, optimizer state). After a call they are donated: using them again is an error.
   */
  donate?: number | readonly number[];
  /** Module name in XLA dumps and errors (default: the function's name). */
  name?: string;
  /**
   * SPMD: run over this mesh's devices. Arguments are laid out as `in` says (one partition-spec tree per positional
   * argument, `P(...)` leaves; unspecified: replicated), results as `out` says or as sharding propagation decides;
   * `shard(x, spec)` pins intermediates. Outputs are sharded DeviceArrays that feed the next call in place.
   */
  mesh?: DeviceMesh;
  in?: unknown;
  out?: unknown;
}

/** Tensors in a traced signature become device arrays (or JS numbers, uploaded as f32 scalars) when called. */
export type Concrete<T> = T extends Tensor ? DeviceArray : T extends object ? { [K in keyof T]: Concrete<T[K]> } : T;
/** Abstract stand-ins for `lower`: anything with dtype and shape (spec(...), a DeviceArray, a Tensor). */
export type Abstract<T> = T extends Tensor ? HasType : T extends object ? { [K in keyof T]: Abstract<T[K]> } : T;

/** What jit lowers for one signature: the program after the passes (see lowering.ts) and its StableHLO text. */
export interface Lowered extends Program {
  readonly stablehlo: string;
}

export interface Jitted<F extends (...args: never[]) => unknown> {
  /** With device arrays: compiles on the first call for this signature, then runs; resolves to the outputs. */
  (...args: Concrete<Parameters<F>>): Promise<Concrete<ReturnType<F>>>;
  /** Inside a trace (another jit, grad, scan), the function is simply traced inline. */
  (...args: Parameters<F>): ReturnType<F>;
  /** Traces and lowers for abstract arguments, without compiling or running. */
  lower(...args: Abstract<Parameters<F>>): Lowered;
  /**
   * Traces, lowers and compiles for abstract arguments without running: the XLA executable (optimized HLO,
   * collectives, memory statistics) next to what was lowered. Cached like a call with arrays of these types.
   */
  compile(...args: Abstract<Parameters<F>>): Promise<{ lowered: Lowered; executable: Executable }>;
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

/** Traces `fn`, collecting the shard() annotations the trace makes. */
function traceAnnotated(
  fn: (...args: never[]) => unknown,
  args: readonly unknown[],
): { t: Traced; made: ShardAnnotation[] } {
  const mark = annotationMark();
  try {
    const t = trace(fn, args);
    return { t, made: annotationsSince(mark) };
  } catch (e) {
    annotationsSince(mark);
    throw e;
  }
}

function moduleName(fn: { readonly name: string }, opts: JitOpts): string {
  const n = (opts.name ?? fn.name ?? "").replace(/[^A-Za-z0-9_]/g, "_");
  return n ? `jit_${n}` : "jit_main";
}

/**
 * Compiles `fn` with XLA. Called with device arrays (trees of them), it traces `fn` once per signature (the tree
 * structure plus every leaf's dtype and shape), runs the cleanup passes, emits StableHLO, compiles it through
 * PJRT and caches the executable; each call then just runs it and resolves to the output tree of device
 * arrays. Called inside another trace, it traces `fn` inline. `opts.donate` lets outputs reuse argument buffers.
 */
export function jit<F extends (...args: never[]) => unknown>(fn: F, opts: JitOpts = {}): Jitted<F> {
  const cache = new Map<string, Compiled>();
  const donate = donatedArgs(opts.donate);
  const name = moduleName(fn, opts);
  const loc = userLoc();
  const spmdOpts: ShardingOpts | undefined = opts.mesh ? { mesh: opts.mesh, in: opts.in, out: opts.out } : undefined;

  const lowerArgs = (args: readonly unknown[]): Lowered => {
    const { t, made } = traceAnnotated(fn, args);
    const sharding = spmdOpts ? { ...spmdOpts, made, loc, argNames: paramNames(fn, args.length) } : undefined;
    const program = lowerProgram(t, { donate, ...(sharding ? { sharding } : {}) });
    return { ...program, stablehlo: emitProgram(program, name) };
  };
  const lower = (...args: unknown[]): Lowered => lowerArgs(args);

  const call = (...args: unknown[]): unknown => {
    if (currentTrace()) return fn(...(args as Parameters<F>));
    return run(args);
  };

  /** The cached program for a signature (tree structure plus leaf types), lowered and compiling on first use. */
  const compiledFor = (def: TreeDef, types: readonly HasType[]): Compiled => {
    const key = `${treeDefKey(def)}|${types.map((a) => formatType(a)).join(",")}`;
    let compiled = cache.get(key);
    if (!compiled) {
      const specs = unflatten(
        def,
        types.map((a) => ({ dtype: a.dtype, shape: a.shape })),
      ) as unknown[];
      const lowered = lowerArgs(specs);
      const exe = defaultClient().then((c) => {
        if (!lowered.sharding) return c.compile(lowered.stablehlo);
        const devices = meshDevices(c, lowered.sharding.mesh);
        return c.compile(lowered.stablehlo, {
          numPartitions: devices.length,
          deviceAssignment: devices.map((d) => d.id),
          useShardy: true,
        });
      });
      exe.catch(() => cache.delete(key));
      compiled = { lowered, exe };
      cache.set(key, compiled);
    }
    return compiled;
  };

  /** Compiles for abstract arguments (cached: a later call with arrays of these types reuses the program). */
  const compile = async (...args: unknown[]): Promise<{ lowered: Lowered; executable: Executable }> => {
    const { leaves, paths, def } = flatten<unknown>(
      args as Tree<unknown>,
      (x) =>
        typeof x === "object" &&
        x !== null &&
        typeof (x as HasType).dtype === "string" &&
        Array.isArray((x as HasType).shape),
    );
    const types = leaves.map((l, i) => {
      const t = l as HasType;
      if (typeof t !== "object" || t === null || typeof t.dtype !== "string")
        throw new TraceError(
          "jit",
          `argument ${paths[i] || "(root)"} of compile() is ${describeValue(l)}, not a spec, tensor or array`,
        );
      return t;
    });
    const c = compiledFor(def, types);
    return { lowered: c.lowered, executable: await c.exe };
  };

  const run = async (args: unknown[]): Promise<unknown> => {
    const { leaves, paths, def } = flatten<unknown>(args as Tree<unknown>);
    const arrays = leaves.map((leaf, i) => {
      if (leaf instanceof DeviceArray) return leaf;
      if (typeof leaf === "number") return array(leaf);
      if (leaf instanceof Tensor)
        throw new TraceError(
          "jit",
          `argument ${paths[i]} is a traced Tensor, but no trace is active (a tensor leaked out of its transform?)`,
        );
      throw new TraceError(
        "jit",
        `argument ${paths[i] || "(root)"} is ${describeValue(leaf)}, not a DeviceArray (create one with array(...))`,
      );
    });
    for (const d of donate)
      if (d >= args.length)
        throw new TraceError("jit", `donate names argument ${d}, but ${name} got ${args.length} arguments`);
    const compiled = compiledFor(def, arrays);
    if (compiled.lowered.sharding) return runSharded(compiled, arrays, paths);
    const buffers = await Promise.all(arrays.map((a, i) => a.buffer(`jit argument ${paths[i]}`)));
    const exe = await compiled.exe;
    const outs = await exe.run(buffers);
    const g = compiled.lowered.graph;
    const results = outs.map((b, k) => new DeviceArray(g.outputs[k]!.type.dtype as DType, g.outputs[k]!.type.shape, b));
    return unflatten(compiled.lowered.outTree, results);
  };

  /** Each argument as per-device blocks in its layout; outputs come back as sharded arrays. */
  const runSharded = async (compiled: Compiled, arrays: DeviceArray[], paths: string[]): Promise<unknown> => {
    const s = compiled.lowered.sharding!;
    const exe = await compiled.exe;
    const client = exe.client;
    const devices = exe.devices;
    const perArg = await Promise.all(
      arrays.map((a, i) => a.shardsFor(client, s.mesh, s.argShardings[i]!, devices, `jit argument ${paths[i]}`)),
    );
    const outs = await exe.execute(devices.map((_, p) => perArg.map((shards) => shards[p]!)));
    const g = compiled.lowered.graph;
    const results = g.outputs.map((v, k) => {
      const sb = new ShardedBuffer(
        v.type.dtype,
        v.type.shape,
        s.mesh,
        s.resultShardings[k]!,
        outs.map((row) => row[k]!),
      );
      return new DeviceArray(v.type.dtype as DType, v.type.shape, sb);
    });
    return unflatten(compiled.lowered.outTree, results);
  };

  const jitted = call as unknown as Jitted<F>;
  Object.defineProperty(jitted, "lower", { value: lower });
  Object.defineProperty(jitted, "compile", { value: compile });
  Object.defineProperty(jitted, "cacheSize", { get: () => cache.size });
  return jitted;
}
