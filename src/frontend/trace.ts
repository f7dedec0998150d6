// Abstract specs, `trace` (function + specs -> Graph), `entry` for the CLI, and inlining a graph into a trace.
import type { Graph, Value } from "../ir/graph.ts";
import { formatType, isDType, tensorType, type DType, type Shape, type TensorType } from "../ir/types.ts";
import { Tensor, Trace, withTrace } from "./core.ts";
import { describe } from "../errors.ts";
// Every tensor belongs to a trace opened here (nested ones have a parent), so this import guarantees them methods.
import "./methods.ts";
import { TraceError } from "./errors.ts";
import { flatten, numLeaves, unflatten, type Tree, type TreeDef } from "./tree.ts";
import { mapPrints, printLeaves, type PrintNode } from "./debug.ts";
import { opLoc } from "./loc.ts";
import { copyAnnotation } from "./annotations.ts";
import type { DeviceMesh } from "./mesh.ts";

/** A stand-in for an argument: only its dtype and shape matter to tracing. */
export class TensorSpec implements TensorType {
  readonly shape: Shape;
  constructor(
    readonly dtype: DType,
    shape: readonly number[],
  ) {
    if (!isDType(dtype)) throw new TraceError("spec", `unknown dtype '${String(dtype)}'`);
    for (const d of shape)
      if (!Number.isInteger(d) || d < 0) throw new TraceError("spec", `invalid dimension ${d} in [${shape.join(",")}]`);
    this.shape = Object.freeze([...shape]);
  }
  toString(): string {
    return `spec(${formatType(this)})`;
  }
}

/** `spec("f32", [2, 3])`: an abstract argument for `trace`, `entry` and `jit(f).lower`. */
export function spec(dtype: DType, shape: readonly number[]): TensorSpec {
  return new TensorSpec(dtype, shape);
}

/** Anything with a dtype and shape can stand for an argument: specs, tensors, device arrays. */
export interface HasType {
  readonly dtype: DType;
  readonly shape: Shape;
}

function isHasType(x: unknown): x is HasType {
  return (
    typeof x === "object" &&
    x !== null &&
    typeof (x as HasType).dtype === "string" &&
    Array.isArray((x as HasType).shape)
  );
}

/**
 * The tensor type of an argument leaf, or a TraceError naming its path. A JS number is an f32 scalar and a boolean
 * a bool scalar, as a jitted call uploads them, so an entry or `lower` may name them where the call passes them.
 */
export function leafType(op: string, leaf: unknown, path: string): TensorType {
  if (isHasType(leaf)) return tensorType(leaf.dtype, leaf.shape);
  if (typeof leaf === "number") return tensorType("f32", []);
  if (typeof leaf === "boolean") return tensorType("bool", []);
  throw new TraceError(
    op,
    `argument ${path || "(root)"} is ${describe(leaf)}, not a tensor spec (use spec(dtype, shape)), number or boolean`,
  );
}

/**
 * The parameter names of `fn` as written (`(params, batch) => ...` gives ["params", "batch"]), used to name graph
 * inputs `params.layers[0].wq`. Destructured or rest parameters fall back to `arg<i>`.
 */
export function paramNames(fn: (...args: never[]) => unknown, count: number): string[] {
  const names = Array.from({ length: count }, (_, i) => `arg${i}`);
  const src = Function.prototype.toString.call(fn);
  let list: string | undefined;
  const arrowSingle = /^(?:async\s*)?([A-Za-z_$][\w$]*)\s*=>/.exec(src);
  if (arrowSingle) list = arrowSingle[1];
  else {
    const open = src.indexOf("(");
    if (open >= 0) {
      let depth = 0;
      for (let i = open; i < src.length; i++) {
        const c = src[i];
        if (c === "(" || c === "[" || c === "{") depth++;
        else if (c === ")" || c === "]" || c === "}") depth--;
        if (depth === 0) {
          list = src.slice(open + 1, i);
          break;
        }
      }
    }
  }
  if (list === undefined) return names;
  const parts: string[] = [];
  let depth = 0,
    cur = "";
  for (const c of list) {
    if (c === "(" || c === "[" || c === "{") depth++;
    else if (c === ")" || c === "]" || c === "}") depth--;
    if (c === "," && depth === 0) {
      parts.push(cur);
      cur = "";
    } else cur += c;
  }
  parts.push(cur);
  parts.forEach((p, i) => {
    const m = /^\s*([A-Za-z_$][\w$]*)\s*(?:=.*)?$/s.exec(p);
    if (m && i < count) names[i] = m[1]!;
  });
  return names;
}

/** `name` + tree path: `params` + `.layers[0].wq`, or just `x` for a bare tensor argument. */
export function joinName(name: string, path: string): string {
  if (!path) return name;
  return path.startsWith("[") ? `${name}${path}` : `${name}.${path}`;
}

export interface Traced {
  /** The function's outputs, then the values its debug.print calls show (see `prints`). */
  readonly graph: Graph;
  /** Structure of the argument list (an array with one subtree per positional argument). */
  readonly inTree: TreeDef;
  /** Structure of the return value: the first numLeaves(outTree) outputs. */
  readonly outTree: TreeDef;
  /** The debug.print calls traced, each value the index of the graph output that carries it. */
  readonly prints?: readonly PrintNode<number>[];
}

/** Flattened outputs of a traced function: each leaf a Tensor (numbers become f32 constants in `trace`). */
export function outputLeaves(
  op: string,
  out: unknown,
  trace: Trace,
): { tensors: Tensor[]; paths: string[]; def: TreeDef } {
  const { leaves, paths, def } = flatten<unknown>(out as Tree<unknown>);
  const tensors = leaves.map((l, i) => {
    if (l instanceof Tensor) return l;
    if (typeof l === "number")
      return withTrace(
        trace,
        () => new Tensor(trace, trace.builder.add1("constant", [], { dtype: "f32", shape: [], value: [l] }, opLoc())),
      );
    throw new TraceError(
      op,
      `the function returned ${describe(l)} at ${paths[i] || "(root)"}; return Tensors (in arrays and plain objects)`,
    );
  });
  return { tensors, paths, def };
}

/**
 * Traces `fn` on abstract arguments: `trace(step, [paramSpecs, spec("s32", [8, 128])])`. Each leaf of `args`
 * becomes a graph input named by the parameter name and tree path; the result leaves are the graph outputs.
 */
export function trace(
  // biome-ignore lint/suspicious/noExplicitAny: fn is any user function, called with the tensors traced from `args` (checked at run time); unknown[] would reject typed parameters, never[] would not let it be called
  fn: (...args: any[]) => unknown,
  args: readonly unknown[],
  /** Parameter names for the inputs (default: read from `fn`'s source), for wrappers such as jit's static args. */
  names: readonly string[] = paramNames(fn, args.length),
): Traced {
  const { leaves, paths, def: inTree } = flatten<unknown>(args as Tree<unknown>, isHasType);
  const t = new Trace(undefined, "trace");
  const inputs = leaves.map((leaf, i) => {
    const p = paths[i]!;
    const argIdx = Number(/^\[(\d+)\]/.exec(p)![1]);
    const name = joinName(names[argIdx]!, p.slice(`[${argIdx}]`.length).replace(/^\./, ""));
    return t.input(leafType("trace", leaf, name), name);
  });
  const argTrees = unflattenArgs(inTree, inputs);
  const out = withTrace(t, () => fn(...argTrees));
  if (out instanceof Promise)
    throw new TraceError("trace", "the traced function returned a Promise; traced functions must be synchronous");
  const { tensors, paths: outPaths, def: outTree } = outputLeaves("trace", out, t);
  const outNames = outPaths.map((p) => (p === "" || p.startsWith("[") ? `out${p}` : p));
  // Printed values are outputs after the function's own, so the program hands them back when it runs.
  const prints = t.takePrints();
  const shown = printLeaves(prints);
  const graph = t.build([...tensors, ...shown], [...outNames, ...shown.map((_, i) => `debug.print#${i}`)], "trace");
  if (!prints.length) return { graph, inTree, outTree };
  return { graph, inTree, outTree, prints: mapPrints(prints, (_, i) => tensors.length + i) };
}

/**
 * The output of `fn` on abstract arguments as a tree of specs, by tracing alone (nothing is compiled or run), as
 * jax.eval_shape: `evalShape(step, paramSpecs, spec("s32", [8, 128]))`.
 */
// biome-ignore lint/suspicious/noExplicitAny: as trace: fn is any user function over the traced arguments
export function evalShape(fn: (...args: any[]) => unknown, ...args: unknown[]): Tree<TensorSpec> {
  const { graph, outTree } = trace(fn, args);
  return unflatten(
    outTree,
    graph.outputs.slice(0, numLeaves(outTree)).map((v) => new TensorSpec(v.type.dtype, v.type.shape)),
  );
}

/** The positional argument values of an args-array tree. */
export function unflattenArgs<L>(def: TreeDef, leaves: readonly L[]): unknown[] {
  if (def.kind !== "array") throw new Error("internal: argument tree is not an array");
  return unflatten(def, leaves) as unknown[];
}

/**
 * Copies `g`'s ops into `trace`, with `inputs` (values of `trace`) standing for g's inputs; returns the values of
 * g's outputs. Ops are re-added through the builder, so each gets fresh values and is type-checked again.
 */
export function inlineGraph(trace: Trace, g: Graph, inputs: readonly Value[]): Value[] {
  if (inputs.length !== g.inputs.length)
    throw new Error(`internal: inlining a graph of ${g.inputs.length} inputs with ${inputs.length} values`);
  const env = new Map<Value, Value>();
  g.inputs.forEach((v, i) => {
    env.set(v, inputs[i]!);
    copyAnnotation(v, inputs[i]!);
  });
  const get = (v: Value): Value => {
    const r = env.get(v);
    if (!r) throw new Error("internal: inlined graph uses a value it does not define");
    return r;
  };
  for (const op of g.ops) {
    const outs = trace.builder.add(op.name, op.inputs.map(get), op.params as never, op.loc);
    // shard() annotations follow the values into the enclosing graph.
    op.outputs.forEach((v, i) => {
      env.set(v, outs[i]!);
      copyAnnotation(v, outs[i]!);
    });
  }
  return g.outputs.map(get);
}

/** What `entry` returns: a function and its abstract arguments, found by `tessera compile --entry <name>`. */
export interface Entry<F extends (...args: never[]) => unknown = (...args: never[]) => unknown> {
  readonly kind: "tessera.entry";
  readonly fn: F;
  readonly args: readonly unknown[];
  /** Argument positions whose buffers the compiled function may reuse for its outputs. */
  readonly donate?: readonly number[];
  /** The mesh `tessera inspect --shardings` lays the entry out on when no `--mesh` is given. */
  readonly mesh?: DeviceMesh;
  /** Partition specs of the arguments and results (as jit's `in` and `out`), or a function of the mesh giving them. */
  readonly shardings?: EntryShardings | ((mesh: DeviceMesh) => EntryShardings);
}

/** jit's `in` and `out` spec trees for an entry. */
export interface EntryShardings {
  readonly in?: unknown;
  readonly out?: unknown;
}

/**
 * Marks a function of a model file for the CLI: `export const trainStep = entry(step, [paramSpecs, batchSpec],
 * { donate: [0] })`; `tessera compile model.ts --entry trainStep` traces it with `trace(e.fn, e.args)`. `mesh` and
 * `shardings` say how `tessera inspect --shardings` lays it out over devices.
 */
export function entry<F extends (...args: never[]) => unknown>(
  fn: F,
  args: readonly unknown[],
  opts: { donate?: number | readonly number[]; mesh?: DeviceMesh; shardings?: Entry["shardings"] } = {},
): Entry<F> {
  if (typeof fn !== "function") throw new TraceError("entry", `first argument must be a function, got ${describe(fn)}`);
  if (!Array.isArray(args))
    throw new TraceError("entry", "argument specs must be an array with one spec tree per parameter");
  const donate =
    opts.donate === undefined ? undefined : typeof opts.donate === "number" ? [opts.donate] : [...opts.donate];
  return Object.freeze({
    kind: "tessera.entry" as const,
    fn,
    args,
    ...(donate ? { donate } : {}),
    ...(opts.mesh ? { mesh: opts.mesh } : {}),
    ...(opts.shardings ? { shardings: opts.shardings } : {}),
  });
}
