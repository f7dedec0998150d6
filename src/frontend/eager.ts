// Eager execution: an op on device arrays outside any trace runs at once as a one-op program, compiled once per (op, params, operand types).
import type { DeviceBuffer, Executable } from "../backend/runtime/index.ts";
import { compileShared } from "../backend/runtime/index.ts";
import { emitStableHLO } from "../backend/stablehlo/index.ts";
import { GraphBuilder } from "../ir/graph.ts";
import type { OpName, OpParams } from "../ir/ops.ts";
import { formatType, numel, type TensorType } from "../ir/types.ts";
import { array, defaultClient, DeviceArray } from "./array.ts";
import { currentTrace, setEagerBind, type Tensor } from "./core.ts";
import { emitProgram, lowerProgram } from "./lowering.ts";
import { opLoc } from "./loc.ts";
import { spec, trace } from "./trace.ts";
import { flatten, numLeaves, unflatten, type Tree } from "./tree.ts";
import { reportPrintFailure, schedulePrints } from "./debug.ts";

interface OpProgram {
  readonly outTypes: readonly TensorType[];
  readonly exe: Promise<Executable>;
  /** Set once compiled, so later calls launch without waiting a turn of the event loop. */
  ready?: Executable;
}

const programs = new Map<string, OpProgram>();

/** What eager execution did in this process: ops run, and the one-op programs it built (each compiled once). */
export const eagerCounters = { ops: 0, programs: 0 };

// Objects that are not plain data (nested graphs of control-flow ops) are keyed by identity.
const ids = new WeakMap<object, number>();
let nextId = 0;

function paramsKey(params: unknown): string {
  return JSON.stringify(params, (_k, v: unknown) => {
    if (ArrayBuffer.isView(v)) return Array.from(v as unknown as ArrayLike<number>);
    if (typeof v === "bigint") return `${v}n`;
    if (typeof v === "number" && !Number.isFinite(v)) return String(v);
    if (v !== null && typeof v === "object" && !Array.isArray(v)) {
      const proto = Object.getPrototypeOf(v);
      if (proto !== Object.prototype && proto !== null) {
        let id = ids.get(v);
        if (id === undefined) {
          id = nextId++;
          ids.set(v, id);
        }
        return `#obj${id}`;
      }
    }
    return v;
  });
}

/** Eager splat constants (`x.add(1)`'s 1): one-op programs take them in as literals, so they need not go up. */
const splats = new WeakMap<DeviceArray, OpParams["constant"]>();

// Literals baked per program shape: past this many distinct values (a changing learning rate) the constant goes
// up as an input instead, so that a loop over values does not compile a program per value.
const MAX_BAKED_VALUES = 16;
const bakedValues = new Map<string, Set<string>>();

/**
 * The one-op program for this op, params and operand types; type errors throw here, at the user's line. Splat
 * constants among the operands become literals of the program (`literal[k]` holds their params, else the input
 * is a program argument), as a JAX user's `x + 1.0` dispatches once.
 */
function programFor<N extends OpName>(
  name: N,
  inputs: readonly Tensor[],
  params: OpParams[N],
): { prog: OpProgram; args: DeviceArray[] } {
  const types = inputs.map((t) => t.type);
  const base = `${name}|${paramsKey(params)}|${types.map((t) => formatType(t)).join(",")}`;
  const valuesOf = (ls: readonly (OpParams["constant"] | undefined)[]) =>
    ls.map((l) => (l ? String(l.value[0]) : "")).join(",");
  let literal = inputs.map((t) => splats.get(t as DeviceArray));
  let values = valuesOf(literal);
  if (literal.some((l) => l)) {
    const seen = bakedValues.get(base) ?? new Set<string>();
    bakedValues.set(base, seen);
    if (!seen.has(values) && seen.size >= MAX_BAKED_VALUES) {
      literal = literal.map(() => undefined);
      values = valuesOf(literal);
    } else seen.add(values);
  }
  const args = inputs.filter((_, k) => !literal[k]) as DeviceArray[];
  const key = `${base}|${values}`;
  const have = programs.get(key);
  if (have) return { prog: have, args };
  const b = new GraphBuilder();
  const ins = types.map((t, k) => {
    const l = literal[k];
    return l ? b.add("constant", [], l)[0]! : b.input(t);
  });
  const outs = b.add(name, ins, params, opLoc());
  // Without locations the text depends only on the op, so every call site shares one executable (and disk entry).
  const text = emitStableHLO(b.build(outs), { moduleName: `eager_${name}`, locs: false });
  const exe = defaultClient().then((c) => compileShared(c, text));
  const prog: OpProgram = { outTypes: outs.map((v) => v.type), exe };
  exe.then(
    (e) => {
      prog.ready = e;
    },
    () => programs.delete(key),
  );
  programs.set(key, prog);
  eagerCounters.programs++;
  return { prog, args };
}

async function launchLater(prog: OpProgram, arrays: readonly DeviceArray[], name: string): Promise<DeviceBuffer[]> {
  const buffers = await Promise.all(arrays.map((a) => a.buffer(name)));
  return (await prog.exe).run(buffers);
}

/**
 * Runs the program on the arrays' buffers: at once when the program and every input are there (the outputs then
 * too, so the next op can launch at once as well), else once they arrive.
 */
function launch(
  prog: OpProgram,
  arrays: readonly DeviceArray[],
  name: string,
): DeviceBuffer[] | Promise<DeviceBuffer[]> {
  if (!prog.ready) return launchLater(prog, arrays, name);
  const now: DeviceBuffer[] = [];
  for (const a of arrays) {
    const b = a.bufferNow();
    if (!b) return launchLater(prog, arrays, name);
    now.push(b);
  }
  return prog.ready.runNow(now);
}

/**
 * A constant needs no program: its values go up from the host, when first needed (a splat that only feeds
 * one-op programs is baked into them and never goes up). Not shared between calls: `zerosLike(p)` twice must give
 * two arrays, since donating one to a jit must not invalidate the other.
 */
function constantArray(params: OpParams["constant"]): DeviceArray {
  const { dtype, shape, value } = params;
  const n = numel(shape);
  if (value.length === n && n !== 1) return array(value, { dtype, shape });
  const values = () => Array.from({ length: n }, () => value[0] ?? 0);
  const upload = () => {
    const up = array(values(), { dtype, shape });
    return up.bufferNow() ?? up.buffer("constant");
  };
  const a = new DeviceArray(dtype, shape, { lazy: upload });
  splats.set(a, params);
  return a;
}

function eagerBind<N extends OpName>(name: N, inputs: readonly Tensor[], params: OpParams[N]): Tensor[] {
  eagerCounters.ops++;
  if (name === "constant") return [constantArray(params as OpParams["constant"])];
  const { prog, args } = programFor(name, inputs, params);
  const outs = launch(prog, args, `eager ${name}`);
  if (Array.isArray(outs)) return prog.outTypes.map((t, k) => new DeviceArray(t.dtype, t.shape, outs[k]!));
  return prog.outTypes.map(
    (t, k) =>
      new DeviceArray(
        t.dtype,
        t.shape,
        outs.then((o) => o[k]!),
      ),
  );
}

setEagerBind(eagerBind);

/**
 * Calls a transform that needs a trace (cond, whileLoop, scan...) on device arrays outside any trace, as JAX runs
 * lax.cond eagerly: the call is traced with the arrays as inputs (everything else in `args` is passed as is),
 * compiled once per program text (the shared compilation cache), and run; the result's leaves are device arrays.
 */
export function callTraced<R>(op: string, fn: (...args: never[]) => R, args: readonly unknown[]): R {
  const { leaves, def } = flatten<unknown>(args as Tree<unknown>, (x) => x instanceof DeviceArray);
  const arrays = leaves.filter((l): l is DeviceArray => l instanceof DeviceArray);
  const wrapper = (...ins: Tensor[]): R => {
    let k = 0;
    const full = leaves.map((l) => (l instanceof DeviceArray ? ins[k++] : l));
    return (fn as (...a: unknown[]) => R)(...(unflatten(def, full) as unknown[]));
  };
  const t = trace(
    wrapper,
    arrays.map((a) => spec(a.dtype, a.shape)),
    arrays.map((_, i) => `arg${i}`),
  );
  const program = lowerProgram(t);
  const text = emitProgram(program, `eager_${op}`);
  const outs = defaultClient()
    .then((c) => compileShared(c, text))
    .then(async (exe) => exe.run(await Promise.all(arrays.map((a) => a.buffer(`eager ${op}`)))));
  outs.catch(() => {});
  const g = program.graph;
  const results = g.outputs.map(
    (v, k) =>
      new DeviceArray(
        v.type.dtype,
        v.type.shape,
        outs.then((o) => o[k]!),
      ),
  );
  // debug.print inside the call: written when its values arrive, in order with other prints.
  if (program.prints) void schedulePrints(program.prints, (k) => results[k]!).catch(reportPrintFailure);
  return unflatten(program.outTree, results.slice(0, numLeaves(program.outTree))) as R;
}

/** `fn` made callable outside a trace on device arrays (callTraced); inside a trace it is `fn` itself. */
export function eagerable<F extends (...args: never[]) => unknown>(op: string, fn: F): F {
  const wrapped = (...args: unknown[]) =>
    currentTrace() ? (fn as unknown as (...a: unknown[]) => unknown)(...args) : callTraced(op, fn, args);
  Object.defineProperty(wrapped, "name", { value: fn.name });
  return wrapped as unknown as F;
}
