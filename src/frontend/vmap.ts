// vmap as jax.vmap: trace the per-example function, then re-emit its graph batched through the batching rules.
import type { Value } from "../ir/graph.ts";
import { formatType, tensorType } from "../ir/types.ts";
import { batchInto, moveAxis, toBatched, type BVal } from "../passes/batching.ts";
import { Emitter } from "../passes/emitter.ts";
import { describe } from "../errors.ts";
import { currentTrace, requireTrace, Tensor, Trace, withTrace } from "./core.ts";
import { TraceError } from "./errors.ts";
import { jit } from "./jit.ts";
import { opLoc } from "./loc.ts";
import { flatten, isPlainObject, unflatten, type Tree } from "./tree.ts";
import { joinName, outputLeaves, paramNames } from "./trace.ts";
import { perExample, printLeaves } from "./debug.ts";

/** An axis per leaf: a number (negative counts from the end), `null` for not mapped, or a tree prefix of them. */
export type AxisSpec = number | null | undefined | readonly AxisSpec[] | { readonly [key: string]: AxisSpec };

export interface VmapOpts {
  /** The mapped axis of each argument: one number/null for all, or an array with one tree prefix per argument. Default 0. */
  inAxes?: AxisSpec;
  /** Where the batch axis goes in each output (a tree prefix of the output); `null` for an output that is not batched. Default 0. */
  outAxes?: AxisSpec;
  /** The batch size, needed only when no argument is mapped. */
  axisSize?: number;
}

/**
 * Expands a tree prefix of axes over a value tree: one axis per leaf of `value`, in flatten order. `where` names
 * the place in messages (`inAxes[1]`, `outAxes`).
 */
function expandAxes(prefix: AxisSpec, value: unknown, where: string, what: string): (number | null)[] {
  if (prefix === null || prefix === undefined) return flatten(value as Tree<unknown>).leaves.map(() => null);
  if (typeof prefix === "number") {
    if (!Number.isInteger(prefix)) throw new TraceError("vmap", `${where} must be an integer or null, got ${prefix}`);
    return flatten(value as Tree<unknown>).leaves.map(() => prefix);
  }
  if (Array.isArray(prefix)) {
    if (!Array.isArray(value) || value.length !== prefix.length) {
      throw new TraceError(
        "vmap",
        `${where} is an array of ${prefix.length}, but ${what} is ${Array.isArray(value) ? `an array of ${value.length}` : describe(value)}; give one axis per element or a single axis`,
      );
    }
    return prefix.flatMap((p, i) => expandAxes(p as AxisSpec, value[i], `${where}[${i}]`, `${what}[${i}]`));
  }
  if (isPlainObject(prefix)) {
    const obj = prefix as { readonly [key: string]: AxisSpec };
    if (!isPlainObject(value)) throw new TraceError("vmap", `${where} is an object, but ${what} is ${describe(value)}`);
    const keys = Object.keys(value).sort();
    const extra = Object.keys(obj).filter((k) => !keys.includes(k));
    if (extra.length) throw new TraceError("vmap", `${where} names ${extra.join(", ")}, which ${what} does not have`);
    return keys.flatMap((k) => expandAxes(obj[k], value[k], `${where}.${k}`, `${what}.${k}`));
  }
  throw new TraceError("vmap", `${where} must be a number, null, or an array/object of them, got ${describe(prefix)}`);
}

/**
 * `vmap(fn, { inAxes, outAxes })`: `fn` mapped over an axis of its arguments (jax.vmap). `fn` is written for one
 * example; the result takes arguments with an extra axis (at `inAxes`, default 0; `null` for an argument shared by
 * all examples) and returns outputs with the batch axis at `outAxes` (default 0). It is a trace-time transform:
 * `fn` is traced once, and its graph re-emitted batched (a batched `cond` predicate runs both branches and selects;
 * a batched `whileLoop` predicate runs while any example's holds). Composes with grad, jit and itself. Called
 * outside any trace with device arrays, it is jit-compiled and returns a Promise.
 */
export function vmap<A extends unknown[], R>(fn: (...args: A) => R, opts: VmapOpts = {}): (...args: A) => R {
  if (typeof fn !== "function") throw new TraceError("vmap", `first argument must be a function, got ${describe(fn)}`);
  let eager: ((...args: A) => unknown) | undefined;
  const mapped = (...args: A): R => {
    if (!currentTrace()) {
      eager ??= jit(mapped as (...a: unknown[]) => unknown, { name: fn.name || "vmap" }) as (...args: A) => unknown;
      return eager(...args) as R;
    }
    const parent = requireTrace("vmap");
    const names = paramNames(fn, args.length);
    const { leaves, paths, def } = flatten<unknown>(args as Tree<unknown>);
    const argOf = paths.map((p) => Number(/^\[(\d+)\]/.exec(p)![1]));
    const leafName = (i: number) =>
      joinName(names[argOf[i]!] ?? `arg${argOf[i]}`, paths[i]!.replace(/^\[\d+\]\.?/, ""));
    leaves.forEach((l, i) => {
      if (!(l instanceof Tensor))
        throw new TraceError("vmap", `argument ${leafName(i)} is ${describe(l)}, not a Tensor`);
    });
    const tensors = leaves as Tensor[];

    const inAxes = opts.inAxes === undefined ? 0 : opts.inAxes;
    let axes: (number | null)[];
    if (Array.isArray(inAxes)) {
      if (inAxes.length !== args.length)
        throw new TraceError(
          "vmap",
          `inAxes has ${inAxes.length} entries, but the function got ${args.length} arguments; give one per argument`,
        );
      axes = inAxes.flatMap((p, a) => expandAxes(p as AxisSpec, args[a], `inAxes[${a}]`, names[a] ?? `arg${a}`));
    } else axes = expandAxes(inAxes, args, "inAxes", "the arguments");

    // Resolve each axis against its leaf's rank and find the one batch size.
    let size: number | undefined = opts.axisSize;
    let sizeFrom: string | undefined = opts.axisSize === undefined ? undefined : `axisSize is ${opts.axisSize}`;
    const resolved = axes.map((ax, i) => {
      if (ax === null) return null;
      const t = tensors[i]!;
      const a = ax < 0 ? ax + t.ndim : ax;
      if (a < 0 || a >= t.ndim)
        throw new TraceError(
          "vmap",
          `inAxes gives axis ${ax} for argument ${leafName(i)}, out of range for its ${formatType(t.type)} (rank ${t.ndim})`,
          [t.type],
        );
      const n = t.shape[a]!;
      const here = `argument ${leafName(i)} has size ${n} on axis ${ax}`;
      if (size === undefined) {
        size = n;
        sizeFrom = here;
      } else if (n !== size) {
        throw new TraceError("vmap", `mapped axes differ in size: ${sizeFrom ?? `size ${size}`}, but ${here}`);
      }
      return a;
    });
    if (size === undefined)
      throw new TraceError(
        "vmap",
        "no argument is mapped (every inAxes entry is null); give axisSize for the batch size",
      );

    // Trace fn on one example.
    const child = new Trace(parent, "vmap");
    const inner = tensors.map((t, i) => {
      const a = resolved[i];
      const shape = a === null || a === undefined ? t.shape : t.shape.filter((_, d) => d !== a);
      return child.input(tensorType(t.dtype, shape), leafName(i));
    });
    const out = withTrace(child, () => fn(...(unflatten(def, inner) as A)));
    const { tensors: outT, paths: outPaths, def: outDef } = outputLeaves("vmap", out, child);
    // Printed values become outputs too, batched below, and print once per example (as JAX's vmap of a print).
    const prints = child.takePrints();
    const shown = printLeaves(prints);
    const g = child.build([...outT, ...shown]);

    // Re-emit it batched into the enclosing trace, every batched value with its batch axis first.
    const e = new Emitter(parent.builder, opLoc());
    const ctx = { e, size };
    const ins: BVal[] = [
      ...tensors.map((t, i): BVal => {
        const v = parent.lift(t, "vmap");
        const a = resolved[i];
        return a === null || a === undefined ? { v, b: false } : { v: moveAxis(e, v, a, 0), b: true };
      }),
      ...child.capturedOuter.map((v): BVal => ({ v, b: false })),
    ];
    const all = batchInto(ctx, g, ins);
    const outs = all.slice(0, outT.length);
    if (prints.length) {
      e.loc = opLoc();
      const batched = all.slice(outT.length).map((o) => toBatched(ctx, o));
      const n = size;
      parent.prints.push(
        ...perExample(prints, n, (i, depth) => new Tensor(parent, moveAxis(e, batched[i]!, 0, depth))),
      );
    }

    const outAxes = expandAxes(opts.outAxes === undefined ? 0 : opts.outAxes, out, "outAxes", "the output");
    const results = outs.map((o, j): Value => {
      const ax = outAxes[j];
      const name = outPaths[j] ? `output ${outPaths[j]}` : "the output";
      if (ax === null || ax === undefined) {
        if (o.b)
          throw new TraceError(
            "vmap",
            `outAxes is null for ${name}, but it depends on a mapped argument (it is batched); give it an axis`,
          );
        return o.v;
      }
      const rank = o.v.type.shape.length + (o.b ? 0 : 1);
      const a = ax < 0 ? ax + rank : ax;
      if (a < 0 || a >= rank)
        throw new TraceError(
          "vmap",
          `outAxes gives axis ${ax} for ${name}, out of range for its batched rank ${rank}`,
          [o.v.type],
        );
      e.loc = opLoc();
      return moveAxis(e, toBatched(ctx, o), 0, a);
    });
    return unflatten(
      outDef,
      results.map((v) => new Tensor(parent, v)),
    ) as R;
  };
  return mapped;
}
