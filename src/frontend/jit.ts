// jit: trace once per input signature, run the cleanup passes, emit StableHLO, compile with PJRT, cache, execute.
import { compileShared, type Executable } from "../backend/runtime/index.ts";
import { formatType, type SourceLoc } from "../ir/types.ts";
import { array, defaultClient, DeviceArray, meshDevices } from "./array.ts";
import { ShardedBuffer } from "../backend/runtime/index.ts";
import { annotationMark, annotationsSince, type ShardAnnotation } from "./annotations.ts";
import { userLoc } from "./loc.ts";
import type { DeviceMesh } from "./mesh.ts";
import { emitProgram, lowerProgram, type Program } from "./lowering.ts";
import type { ShardingOpts } from "./spmd.ts";
import type { Sharding } from "../ir/sharding.ts";
import { currentTrace, Tensor } from "./core.ts";
import { TraceError } from "./errors.ts";
import { describe as describeValue } from "../errors.ts";
import { joinName, paramNames, trace, type HasType, type Traced } from "./trace.ts";
import { isPlainObject, numLeaves } from "./tree.ts";
import { effectsBarrier, schedulePrints } from "./debug.ts";
import "./eager.ts";
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
  /**
   * Positional arguments that are static (JAX's static_argnums): plain JS values (numbers, booleans, strings,
   * null/undefined, arrays and plain objects of them) the function sees as themselves, hashed by value: each
   * distinct value traces and compiles its own program. Functions, arrays on the device and class instances are
   * refused (they have no value to hash).
   */
  static?: number | readonly number[];
}

/** Tensors in a traced signature are device arrays in a call's results. */
export type Concrete<T> = T extends Tensor ? DeviceArray : T extends object ? { [K in keyof T]: Concrete<T[K]> } : T;
/**
 * What a call may pass for a traced signature's arguments: a device array, or a JS number (uploaded as an f32
 * scalar) or boolean (a bool scalar) for a Tensor; a static argument is passed as the value itself.
 */
export type ConcreteArg<T> = T extends Tensor
  ? DeviceArray | number | boolean
  : T extends object
    ? { [K in keyof T]: ConcreteArg<T[K]> }
    : T;
/**
 * Abstract stand-ins for `lower`: anything with dtype and shape (spec(...), a DeviceArray, a Tensor), or a JS
 * number (an f32 scalar) or boolean (a bool scalar) as a call passes them.
 */
export type Abstract<T> = T extends Tensor
  ? HasType | number | boolean
  : T extends object
    ? { [K in keyof T]: Abstract<T[K]> }
    : T;

/** What jit lowers for one signature: the program after the passes (see lowering.ts) and its StableHLO text. */
export interface Lowered extends Program {
  readonly stablehlo: string;
}

export interface Jitted<F extends (...args: never[]) => unknown> {
  /** With device arrays: compiles on the first call for this signature, then runs; resolves to the outputs. */
  (...args: ConcreteArg<Parameters<F>>): Promise<Concrete<ReturnType<F>>>;
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
  names: readonly string[],
): { t: Traced; made: ShardAnnotation[] } {
  const mark = annotationMark();
  try {
    const t = trace(fn, args, names);
    return { t, made: annotationsSince(mark) };
  } catch (e) {
    annotationsSince(mark);
    throw e;
  }
}

/** @internal The StableHLO module name jit gives `fn`: `jit_<name>`. */
export function moduleName(fn: { readonly name: string }, opts: Pick<JitOpts, "name">): string {
  const n = (opts.name ?? fn.name ?? "").replace(/[^A-Za-z0-9_]/g, "_");
  return n ? `jit_${n}` : "jit_main";
}

/** One traced signature, as the retrace warning compares them: each input leaf's name and type, each static value. */
interface SignatureInfo {
  readonly leaves: ReadonlyMap<string, string>;
  readonly statics: ReadonlyMap<string, string>;
  readonly structure: string;
}

/** What every signature of one jitted function shares, and its per-signature program cache. */
interface JitState {
  readonly fn: (...args: never[]) => unknown;
  readonly cache: Map<string, Compiled>;
  readonly donate: readonly number[];
  readonly statics: readonly number[];
  readonly name: string;
  readonly loc: SourceLoc | undefined;
  readonly spmdOpts: ShardingOpts | undefined;
  /** Traces so far (one per signature), the last signature traced, and whether the retrace warning was given. */
  traces: number;
  last: SignatureInfo | undefined;
  warned: boolean;
  /** >0 while disableJit runs the function itself (a nested call of the same jit, e.g. grad's, then compiles). */
  unjitted: number;
}

function staticArgs(opts: JitOpts): number[] {
  const st = opts.static === undefined ? [] : typeof opts.static === "number" ? [opts.static] : [...opts.static];
  for (const i of st)
    if (!Number.isInteger(i) || i < 0)
      throw new TraceError("jit", `static names argument ${String(i)}; give argument positions (0, 1, ...)`);
  return st;
}

function jitState(fn: (...args: never[]) => unknown, opts: JitOpts): JitState {
  const statics = staticArgs(opts);
  const donate = donatedArgs(opts.donate);
  const both = donate.filter((d) => statics.includes(d));
  if (both.length)
    throw new TraceError("jit", `argument ${both[0]} is both static and donated; a static argument has no buffer`);
  return {
    fn,
    cache: new Map<string, Compiled>(),
    donate,
    statics,
    name: moduleName(fn, opts),
    // Captured at jit() time so sharding errors point at the user's jit call, not at whichever call compiled.
    loc: userLoc(),
    spmdOpts: opts.mesh ? { mesh: opts.mesh, in: opts.in, out: opts.out } : undefined,
    traces: 0,
    last: undefined,
    warned: false,
    unjitted: 0,
  };
}

/**
 * @internal A static argument's value as a key: plain data by value (object keys sorted), anything else refused with the
 * argument's name, since a function or an array on the device has no value the cache could compare.
 */
export function staticKey(v: unknown, where: string): string {
  const bad = (what: string): never => {
    throw new TraceError(
      "jit",
      `static argument ${where} is ${what}, which cannot be hashed by value; static arguments must be numbers, ` +
        "booleans, strings, null/undefined, or arrays and plain objects of them (pass arrays as ordinary arguments)",
    );
  };
  if (v === null) return "null";
  switch (typeof v) {
    case "undefined":
      return "undefined";
    case "number":
      return Object.is(v, -0) ? "-0" : String(v);
    case "boolean":
      return String(v);
    case "string":
      return JSON.stringify(v);
    case "bigint":
      return `${v}n`;
    case "function":
      return bad(`a function (${v.name || "anonymous"})`);
    case "symbol":
      return bad("a symbol");
  }
  if (Array.isArray(v)) return `[${v.map((x, i) => staticKey(x, `${where}[${i}]`)).join(",")}]`;
  if (isPlainObject(v))
    return `{${Object.keys(v)
      .sort()
      .map((k) => `${JSON.stringify(k)}:${staticKey(v[k], `${where}.${k}`)}`)
      .join(",")}}`;
  return bad(
    v instanceof Tensor ? `${v} (a ${v instanceof DeviceArray ? "device array" : "tensor"})` : describeValue(v),
  );
}

/** The call's arguments with static positions emptied (null), and the static values' key. */
function splitStatic(st: JitState, args: readonly unknown[]): { dynamic: unknown[]; key: string } {
  if (!st.statics.length) return { dynamic: [...args], key: "" };
  const names = paramNames(st.fn, args.length);
  const parts: string[] = [];
  for (const i of st.statics) {
    if (i >= args.length)
      throw new TraceError("jit", `static names argument ${i}, but ${st.name} got ${args.length} arguments`);
    parts.push(`${i}=${staticKey(args[i], `${i} (${names[i]})`)}`);
  }
  return { dynamic: args.map((a, i) => (st.statics.includes(i) ? null : a)), key: parts.join(";") };
}

function lowerArgs(st: JitState, args: readonly unknown[], statics: readonly unknown[] = args): Lowered {
  const names = paramNames(st.fn, args.length);
  // Static positions hold null in `args` (an empty subtree); the function sees the values themselves.
  const f = st.statics.length
    ? (...a: unknown[]) =>
        (st.fn as (...x: unknown[]) => unknown)(...a.map((x, i) => (st.statics.includes(i) ? statics[i] : x)))
    : st.fn;
  const { t, made } = traceAnnotated(f, args, names);
  const sharding = st.spmdOpts ? { ...st.spmdOpts, made, loc: st.loc, argNames: names } : undefined;
  const program = lowerProgram(t, { donate: st.donate, ...(sharding ? { sharding } : {}) });
  return { ...program, stablehlo: emitProgram(program, st.name) };
}

/** How a program's arguments and results lie over a mesh: what running it needs of a sharding plan. */
export interface RunLayout {
  readonly mesh: DeviceMesh;
  readonly argShardings: readonly Sharding[];
  readonly resultShardings: readonly Sharding[];
}

/**
 * @internal Compiles StableHLO text through the shared executable cache; SPMD programs for the mesh's devices,
 * partitioned by Shardy. jit and loadExported both come here, so one program text is one executable.
 */
export async function compileProgramText(stablehlo: string, layout: RunLayout | undefined): Promise<Executable> {
  const c = await defaultClient();
  if (!layout) return compileShared(c, stablehlo);
  const devices = meshDevices(c, layout.mesh);
  return compileShared(c, stablehlo, {
    numPartitions: devices.length,
    deviceAssignment: devices.map((d) => d.id),
    useShardy: true,
  });
}

function compileLowered(lowered: Lowered): Promise<Executable> {
  return compileProgramText(lowered.stablehlo, lowered.sharding);
}

/** Retraces of one jitted function before it warns (once), as JAX's explain_cache_misses would explain them. */
export const RETRACE_WARN_AFTER = 5;
/** Traces of fresh jits made at one line before that warns (a jit created inside a loop). */
const traceCountsAt = new Map<string, { jits: WeakSet<JitState>; count: number; warned: boolean }>();

function signatureInfo(st: JitState, args: readonly unknown[], paths: readonly string[], types: readonly HasType[]) {
  const names = paramNames(st.fn, args.length);
  const named = (p: string) => {
    const i = Number(/^\[(\d+)\]/.exec(p)?.[1] ?? 0);
    return joinName(names[i] ?? `arg${i}`, p.replace(/^\[\d+\]\.?/, ""));
  };
  const leaves = new Map(paths.map((p, k) => [named(p), formatType(types[k]!)]));
  const statics = new Map(
    st.statics.map((i) => [`${names[i] ?? `arg${i}`} (static argument ${i})`, staticKey(args[i], String(i))]),
  );
  return { leaves, statics, structure: `${args.length} arguments` };
}

/** Why `now` missed the cache, compared with the signature traced before it. */
function explainRetrace(before: SignatureInfo, now: SignatureInfo): string {
  for (const [name, v] of now.statics) {
    const was = before.statics.get(name);
    if (was !== v) return `${name} changed from ${was} to ${v}`;
  }
  const changed: string[] = [];
  for (const [name, t] of now.leaves) {
    const was = before.leaves.get(name);
    if (was === undefined) changed.push(`${name} (${t}) is new`);
    else if (was !== t) changed.push(`${name} changed from ${was} to ${t}`);
  }
  for (const name of before.leaves.keys()) if (!now.leaves.has(name)) changed.push(`${name} is gone`);
  if (changed.length)
    return changed.slice(0, 3).join("; ") + (changed.length > 3 ? `; ${changed.length - 3} more` : "");
  return "the argument tree's structure changed";
}

function warnRetrace(st: JitState, reason: string): void {
  const at = st.loc ? ` (jit at ${st.loc.file}:${st.loc.line})` : "";
  process.stderr.write(
    `tessera: warning: ${st.name}${at} was traced ${st.traces} times: ${reason}. Each new argument shape, dtype or ` +
      "static value traces and compiles again; pad to fixed shapes, or mark plain-value arguments static\n",
  );
}

/** Counts a trace; warns once when one function keeps retracing, or one line keeps making fresh jits. */
function noteTrace(st: JitState, sig: SignatureInfo): void {
  st.traces++;
  const before = st.last;
  st.last = sig;
  if (before && st.traces > RETRACE_WARN_AFTER && !st.warned) {
    st.warned = true;
    warnRetrace(st, `the last retrace was because ${explainRetrace(before, sig)}`);
  }
  if (!st.loc) return;
  const where = `${st.loc.file}:${st.loc.line}:${st.loc.col}`;
  let at = traceCountsAt.get(where);
  if (!at) {
    at = { jits: new WeakSet(), count: 0, warned: false };
    traceCountsAt.set(where, at);
  }
  if (at.jits.has(st)) return;
  at.jits.add(st);
  at.count++;
  if (at.count > RETRACE_WARN_AFTER && !at.warned) {
    at.warned = true;
    process.stderr.write(
      `tessera: warning: jit at ${st.loc.file}:${st.loc.line} made ${at.count} separate jitted functions (${st.name}), ` +
        "each traced anew (a jit inside a loop?); create the jitted function once and call it in the loop\n",
    );
  }
}

/** The cached program for a signature (tree structure plus leaf types), lowered and compiling on first use. */
function compiledFor(
  st: JitState,
  args: readonly unknown[],
  sk: string,
  def: TreeDef,
  paths: readonly string[],
  types: readonly HasType[],
): Compiled {
  const key = `${sk}|${treeDefKey(def)}|${types.map((a) => formatType(a)).join(",")}`;
  let compiled = st.cache.get(key);
  if (!compiled) {
    const specs = unflatten(
      def,
      types.map((a) => ({ dtype: a.dtype, shape: a.shape })),
    ) as unknown[];
    noteTrace(st, signatureInfo(st, args, paths, types));
    const lowered = lowerArgs(st, specs, args);
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
function abstractSignature(args: unknown[]): { def: TreeDef; paths: string[]; types: HasType[] } {
  const { leaves, paths, def } = flatten<unknown>(args as Tree<unknown>, isSpecLike);
  const types = leaves.map((l, i): HasType => {
    // As a call uploads them: a number is an f32 scalar, a boolean a bool scalar (the same cached program).
    if (typeof l === "number") return { dtype: "f32", shape: [] };
    if (typeof l === "boolean") return { dtype: "bool", shape: [] };
    const t = l as HasType;
    if (typeof t !== "object" || t === null || typeof t.dtype !== "string")
      throw new TraceError(
        "jit",
        `argument ${paths[i] || "(root)"} of compile() is ${describeValue(l)}, not a spec, tensor, array, number or boolean`,
      );
    return t;
  });
  return { def, paths, types };
}

/** Compiles for abstract arguments (cached: a later call with arrays of these types reuses the program). */
async function compileAbstract(st: JitState, args: unknown[]): Promise<{ lowered: Lowered; executable: Executable }> {
  const { dynamic, key } = splitStatic(st, args);
  const { def, paths, types } = abstractSignature(dynamic);
  const c = compiledFor(st, args, key, def, paths, types);
  return { lowered: c.lowered, executable: await c.exe };
}

/** A JS number or boolean where an array goes: an f32 or bool scalar (Tessera has no weak types; see the README). */
function scalarArray(leaf: number | boolean): DeviceArray {
  return typeof leaf === "boolean" ? array(leaf, { dtype: "bool" }) : array(leaf);
}

/** A call's arguments as device arrays (JS numbers and booleans uploaded as scalars), with their paths for messages. */
function deviceArgs(args: unknown[]): { arrays: DeviceArray[]; paths: string[]; def: TreeDef } {
  const { leaves, paths, def } = flatten<unknown>(args as Tree<unknown>);
  const arrays = leaves.map((leaf, i) => {
    if (leaf instanceof DeviceArray) return leaf;
    if (typeof leaf === "number" || typeof leaf === "boolean") return scalarArray(leaf);
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
  const { dynamic, key } = splitStatic(st, args);
  const { arrays, paths, def } = deviceArgs(dynamic);
  checkDonation(st, args.length);
  const compiled = compiledFor(st, args, key, def, paths, arrays);
  const g = compiled.lowered.graph;
  const outTypes = g.outputs.map((v) => v.type);
  return runExecutable(
    await compiled.exe,
    arrays,
    paths,
    outTypes,
    compiled.lowered.outTree,
    compiled.lowered.sharding,
    compiled.lowered.prints,
  );
}

/**
 * @internal Runs a compiled program on device arrays (one per graph input, `paths` naming them for errors) and
 * rebuilds the output tree; with a layout, each argument as per-device blocks and the outputs as sharded arrays.
 */
export async function runExecutable(
  exe: Executable,
  arrays: readonly DeviceArray[],
  paths: readonly string[],
  outTypes: readonly HasType[],
  outTree: TreeDef,
  layout: RunLayout | undefined,
  prints?: Lowered["prints"],
): Promise<unknown> {
  if (layout) return runSharded(exe, layout, arrays, paths, outTypes, outTree, prints);
  const buffers = await Promise.all(arrays.map((a, i) => a.buffer(`jit argument ${paths[i]}`)));
  const outs = await exe.run(buffers);
  const results = outs.map((b, k) => new DeviceArray(outTypes[k]!.dtype, outTypes[k]!.shape, b));
  return finish(outTree, results, prints);
}

/** The output tree; with debug.print calls, once their lines are written (so `await f(x)` has printed). */
async function finish(
  outTree: TreeDef,
  results: DeviceArray[],
  prints: Lowered["prints"] | undefined,
): Promise<unknown> {
  if (prints) await schedulePrints(prints, (k) => results[k]!);
  return unflatten(outTree, results.slice(0, numLeaves(outTree)));
}

/** Each argument as per-device blocks in its layout; outputs come back as sharded arrays. */
async function runSharded(
  exe: Executable,
  s: RunLayout,
  arrays: readonly DeviceArray[],
  paths: readonly string[],
  outTypes: readonly HasType[],
  outTree: TreeDef,
  prints: Lowered["prints"] | undefined,
): Promise<unknown> {
  const client = exe.client;
  const devices = exe.devices;
  const perArg = await Promise.all(
    arrays.map((a, i) => a.shardsFor(client, s.mesh, s.argShardings[i]!, devices, `jit argument ${paths[i]}`)),
  );
  const outs = await exe.execute(devices.map((_, p) => perArg.map((shards) => shards[p]!)));
  const results = outTypes.map((t, k) => {
    const sb = new ShardedBuffer(
      t.dtype,
      t.shape,
      s.mesh,
      s.resultShardings[k]!,
      outs.map((row) => row[k]!),
    );
    return new DeviceArray(t.dtype, t.shape, sb);
  });
  return finish(outTree, results, prints);
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
    if (jitDisabled > 0 && st.unjitted === 0) return runUnjitted(st, args);
    return run(st, args);
  };
  const jitted = call as unknown as Jitted<F>;
  Object.defineProperty(jitted, "lower", {
    value: (...args: unknown[]): Lowered => {
      const { dynamic } = splitStatic(st, args);
      return lowerArgs(st, dynamic, args);
    },
  });
  Object.defineProperty(jitted, "compile", { value: (...args: unknown[]) => compileAbstract(st, args) });
  Object.defineProperty(jitted, "cacheSize", { get: () => st.cache.size });
  jitStates.set(jitted, st);
  return jitted;
}

const jitStates = new WeakMap<object, JitState>();

/** @internal What export needs of a jitted function beyond its lowering: its name, donation and static positions. */
export function jitInfo(f: unknown):
  | {
      readonly fn: (...args: never[]) => unknown;
      readonly name: string;
      readonly donate: readonly number[];
      readonly statics: readonly number[];
    }
  | undefined {
  const st = typeof f === "function" ? jitStates.get(f) : undefined;
  return st && { fn: st.fn, name: st.name, donate: st.donate, statics: st.statics };
}

let jitDisabled = process.env.TESSERA_DISABLE_JIT === "1" ? 1 : 0;

/**
 * Runs jitted functions op by op on device arrays, for debugging (JAX's disable_jit): `disableJit(() => ...)` for
 * a scope (an async scope lasts until its promise settles), `disableJit(true | false)` as a switch, or
 * TESSERA_DISABLE_JIT=1. The function then sees device arrays, so values can be read (`await x.toArray()` in an
 * async helper) and each op runs eagerly; calls still resolve to the outputs. Transforms that need a trace
 * (valueAndGrad, grad) still compile.
 */
export function disableJit<T>(scope: () => T): T;
export function disableJit(on: boolean): void;
export function disableJit<T>(arg: (() => T) | boolean): T | undefined {
  if (typeof arg === "boolean") {
    jitDisabled = arg ? Math.max(jitDisabled, 1) : 0;
    return undefined;
  }
  jitDisabled++;
  let out: T;
  try {
    out = arg();
  } catch (e) {
    jitDisabled--;
    throw e;
  }
  if (out instanceof Promise) {
    return out.finally(() => {
      jitDisabled--;
    }) as T;
  }
  jitDisabled--;
  return out;
}

/** Whether jitted functions currently run op by op (disableJit). */
export function isJitDisabled(): boolean {
  return jitDisabled > 0;
}

/** disableJit: the function itself on the call's device arrays (numbers and booleans as jit would upload them). */
function runUnjitted(st: JitState, args: unknown[]): Promise<unknown> {
  const { dynamic } = splitStatic(st, args);
  const { arrays, def } = deviceArgs(dynamic);
  checkDonation(st, args.length);
  const given = unflatten(def, arrays) as unknown[];
  const full = args.map((a, i) => (st.statics.includes(i) ? a : given[i]));
  st.unjitted++;
  try {
    // Op by op, debug.print writes as values arrive; the call resolves after its lines, as a compiled call does.
    return Promise.resolve((st.fn as (...a: unknown[]) => unknown)(...full)).then(async (r) => {
      await effectsBarrier();
      return r;
    });
  } catch (e) {
    return Promise.reject(e);
  } finally {
    st.unjitted--;
  }
}
