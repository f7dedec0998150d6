// Eager execution: an op on device arrays outside any trace runs at once as a one-op program, compiled once per (op, params, operand types).
import type { DeviceBuffer, Executable } from "../backend/runtime/index.ts";
import { compileShared } from "../backend/runtime/index.ts";
import { emitStableHLO } from "../backend/stablehlo/index.ts";
import { GraphBuilder } from "../ir/graph.ts";
import type { OpName, OpParams } from "../ir/ops.ts";
import { formatType, numel, type TensorType } from "../ir/types.ts";
import { array, defaultClient, DeviceArray } from "./array.ts";
import { setEagerBind, type Tensor } from "./core.ts";
import { opLoc } from "./loc.ts";

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

/** The one-op program for this op, params and operand types; type errors throw here, at the user's line. */
function programFor<N extends OpName>(name: N, inputs: readonly Tensor[], params: OpParams[N]): OpProgram {
  const types = inputs.map((t) => t.type);
  const key = `${name}|${paramsKey(params)}|${types.map((t) => formatType(t)).join(",")}`;
  const have = programs.get(key);
  if (have) return have;
  const b = new GraphBuilder();
  const ins = types.map((t) => b.input(t));
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
  return prog;
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
 * A constant needs no program: its values go up from the host. (Not shared between calls: `zerosLike(p)` twice
 * must give two arrays, since donating one to a jit must not invalidate the other.)
 */
function constantArray(params: OpParams["constant"]): DeviceArray {
  const { dtype, shape, value } = params;
  const n = numel(shape);
  const values = value.length === n ? value : Array.from({ length: n }, () => value[0] ?? 0);
  return array(values, { dtype, shape });
}

function eagerBind<N extends OpName>(name: N, inputs: readonly Tensor[], params: OpParams[N]): Tensor[] {
  eagerCounters.ops++;
  if (name === "constant") return [constantArray(params as OpParams["constant"])];
  const prog = programFor(name, inputs, params);
  const outs = launch(prog, inputs as readonly DeviceArray[], `eager ${name}`);
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
