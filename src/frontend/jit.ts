// jit: trace once per input signature, run the cleanup passes, emit StableHLO, compile with PJRT, cache, execute.
import type { Executable } from "../backend/runtime/index.ts";
import { formatType, type DType, type SourceLoc } from "../ir/types.ts";
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

/** What every signature of one jitted function shares, and its per-signature program cache. */
interface JitState {
  readonly fn: (...args: never[]) => unknown;
  readonly cache: Map<string, Compiled>;
  readonly donate: readonly number[];
  readonly name: string;
  readonly loc: SourceLoc | undefined;
  readonly spmdOpts: ShardingOpts | undefined;
}

function jitState(fn: (...args: never[]) => unknown, opts: JitOpts): JitState {
  return {
    fn,
    cache: new Map<string, Compiled>(),
    donate: donatedArgs(opts.donate),
    name: moduleName(fn, opts),
    // Captured at jit() time so sharding errors point at the user's jit call, not at whichever call compiled.
    loc: userLoc(),
    spmdOpts: opts.mesh ? { mesh: opts.mesh, in: opts.in, out: opts.out } : undefined,
  };
}

function lowerArgs(st: JitState, args: readonly unknown[]): Lowered {
  const { t, made } = traceAnnotated(st.fn, args);
  const sharding = st.spmdOpts
    ? { ...st.spmdOpts, made, loc: st.loc, argNames: paramNames(st.fn, args.length) }
    : undefined;
  const program = lowerProgram(t, { donate: st.donate, ...(sharding ? { sharding } : {}) });
  return { ...program, stablehlo: emitProgram(program, st.name) };
}

/** SPMD programs are compiled for the mesh's devices, partitioned by Shardy. */
async function compileLowered(lowered: Lowered): Promise<Executable> {
  const c = await defaultClient();
  if (!lowered.sharding) return c.compile(lowered.stablehlo);
  const devices = meshDevices(c, lowered.sharding.mesh);
  return c.compile(lowered.stablehlo, {
    numPartitions: devices.length,
    deviceAssignment: devices.map((d) => d.id),
    useShardy: true,
  });
}

/** The cached program for a signature (tree structure plus leaf types), lowered and compiling on first use. */
function compiledFor(st: JitState, def: TreeDef, types: readonly HasType[]): Compiled {
  const key = `${treeDefKey(def)}|${types.map((a) => formatType(a)).join(",")}`;
  let compiled = st.cache.get(key);
  if (!compiled) {
    const specs = unflatten(
      def,
      types.map((a) => ({ dtype: a.dtype, shape: a.shape })),
    ) as unknown[];
    const lowered = lowerArgs(st, specs);
    const exe = compileLowered(lowered);
    // A failed compile must not poison the signature: the next call retries.
    exe.catch(() => st.cache.delete(key));
    compiled = { lowered, exe };
    st.cache.set(key, compiled);
  }
  return compiled;
}

function isSpecLike(x: unknown): boolean {
  return (
    typeof x === "object" &&
    x !== null &&
    typeof (x as HasType).dtype === "string" &&
    Array.isArray((x as HasType).shape)
  );
}

/** compile()'s arguments as a tree structure and leaf types, rejecting leaves that carry no type. */
function abstractSignature(args: unknown[]): { def: TreeDef; types: HasType[] } {
  const { leaves, paths, def } = flatten<unknown>(args as Tree<unknown>, isSpecLike);
  const types = leaves.map((l, i) => {
    const t = l as HasType;
    if (typeof t !== "object" || t === null || typeof t.dtype !== "string")
      throw new TraceError(
        "jit",
        `argument ${paths[i] || "(root)"} of compile() is ${describeValue(l)}, not a spec, tensor or array`,
      );
    return t;
  });
  return { def, types };
}

/** Compiles for abstract arguments (cached: a later call with arrays of these types reuses the program). */
async function compileAbstract(st: JitState, args: unknown[]): Promise<{ lowered: Lowered; executable: Executable }> {
  const { def, types } = abstractSignature(args);
  const c = compiledFor(st, def, types);
  return { lowered: c.lowered, executable: await c.exe };
}

/** A call's arguments as device arrays (JS numbers uploaded as scalars), with their paths for messages. */
function deviceArgs(args: unknown[]): { arrays: DeviceArray[]; paths: string[]; def: TreeDef } {
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
  return { arrays, paths, def };
}

function checkDonation(st: JitState, argCount: number): void {
  for (const d of st.donate)
    if (d >= argCount)
      throw new TraceError("jit", `donate names argument ${d}, but ${st.name} got ${argCount} arguments`);
}

async function run(st: JitState, args: unknown[]): Promise<unknown> {
  const { arrays, paths, def } = deviceArgs(args);
  checkDonation(st, args.length);
  const compiled = compiledFor(st, def, arrays);
  if (compiled.lowered.sharding) return runSharded(compiled, arrays, paths);
  return runSingle(compiled, arrays, paths);
}

async function runSingle(compiled: Compiled, arrays: DeviceArray[], paths: string[]): Promise<unknown> {
  const buffers = await Promise.all(arrays.map((a, i) => a.buffer(`jit argument ${paths[i]}`)));
  const exe = await compiled.exe;
  const outs = await exe.run(buffers);
  const g = compiled.lowered.graph;
  const results = outs.map((b, k) => new DeviceArray(g.outputs[k]!.type.dtype as DType, g.outputs[k]!.type.shape, b));
  return unflatten(compiled.lowered.outTree, results);
}

/** Each argument as per-device blocks in its layout; outputs come back as sharded arrays. */
async function runSharded(compiled: Compiled, arrays: DeviceArray[], paths: string[]): Promise<unknown> {
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
}

/**
 * Compiles `fn` with XLA. Called with device arrays (trees of them), it traces `fn` once per signature (the tree
 * structure plus every leaf's dtype and shape), runs the cleanup passes, emits StableHLO, compiles it through
 * PJRT and caches the executable; each call then just runs it and resolves to the output tree of device
 * arrays. Called inside another trace, it traces `fn` inline. `opts.donate` lets outputs reuse argument buffers.
 */
export function jit<F extends (...args: never[]) => unknown>(fn: F, opts: JitOpts = {}): Jitted<F> {
  const st = jitState(fn, opts);
  const call = (...args: unknown[]): unknown => {
    // Nested in another transform: stay part of its trace instead of compiling separately.
    if (currentTrace()) return fn(...(args as Parameters<F>));
    return run(st, args);
  };
  const jitted = call as unknown as Jitted<F>;
  Object.defineProperty(jitted, "lower", { value: (...args: unknown[]): Lowered => lowerArgs(st, args) });
  Object.defineProperty(jitted, "compile", { value: (...args: unknown[]) => compileAbstract(st, args) });
  Object.defineProperty(jitted, "cacheSize", { get: () => st.cache.size });
  return jitted;
}
