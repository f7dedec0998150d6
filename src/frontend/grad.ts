// valueAndGrad and grad as traceable transforms: trace the function into a subgraph, differentiate, inline.
import { isFloat } from "../ir/types.ts";
import { valueAndGrad as graphValueAndGrad } from "../passes/autodiff.ts";
import { currentTrace, requireTrace, Tensor, Trace, withTrace } from "./core.ts";
import { jit, type Concrete, type ConcreteArg } from "./jit.ts";
import { TraceError } from "./errors.ts";
import { flatten, unflatten, type Tree } from "./tree.ts";
import { describe } from "../errors.ts";
import { inlineGraph, joinName, outputLeaves, paramNames } from "./trace.ts";
import { printLeaves, rebind } from "./debug.ts";

export interface GradOpts {
  /** Which positional arguments to differentiate with respect to (default 0). A number gives one gradient tree,
   * an array gives an array of trees in the same order. */
  wrt?: number | readonly number[];
  /** The function returns `[loss, aux]`; aux is passed through undifferentiated. */
  hasAux?: boolean;
}

/** The `wrt` option as a type: 0 when it is left out. */
type WrtOf<O> = O extends { readonly wrt: infer W } ? W : 0;

/** The gradients' structure: argument `wrt`'s tree, or an array of trees for an array of positions. */
export type GradsOf<A extends unknown[], W> = W extends number
  ? A[W]
  : W extends readonly number[]
    ? { -readonly [K in keyof W]: W[K] extends number ? A[W[K]] : never }
    : A[0];

/** What the function's value part is: the loss, or with `hasAux` the function's own `[loss, aux]`. */
export type ValueOf<R, O> = O extends { readonly hasAux: true } ? R : Tensor;

/**
 * A function made by valueAndGrad. Called on device arrays (or numbers and booleans, as jit takes them) outside a
 * trace, it jit-compiles itself, so it returns a Promise of device arrays; called on traced Tensors it returns them.
 */
export interface ValueAndGradFn<A extends unknown[], V, G> {
  (...args: ConcreteArg<A>): Promise<[Concrete<V>, Concrete<G>]>;
  // biome-ignore lint/suspicious/noExplicitAny: inside a trace the result's structure is kept loose, as it always was, so that model code needs no casts
  (...args: A): [any, any];
}

/** A function made by grad: as ValueAndGradFn, for the gradients alone (`[grads, aux]` with `hasAux`). */
export interface GradFn<A extends unknown[], G> {
  (...args: ConcreteArg<A>): Promise<Concrete<G>>;
  // biome-ignore lint/suspicious/noExplicitAny: as ValueAndGradFn's traced signature
  (...args: A): any;
}

/**
 * `valueAndGrad(f, { wrt })(...args)` returns `[loss, grads]` (with `hasAux`: `[[loss, aux], grads]`), where `f`
 * returns a rank-0 float loss and `grads` has the structure of the `wrt` argument(s). It works inside `jit` and
 * nests; tensors `f` closes over are constants to the derivative. Only the `wrt` arguments' leaves get gradient
 * computations (frozen weights passed as another argument cost nothing extra). Called outside any trace with
 * device arrays, it is jit-compiled and returns a Promise of the same structure.
 */
export function valueAndGrad<A extends unknown[], R, const O extends GradOpts = GradOpts>(
  fn: (...args: A) => R,
  opts: O = {} as O,
): ValueAndGradFn<A, ValueOf<R, O>, GradsOf<A, WrtOf<O>>> {
  const wrt = opts.wrt ?? 0;
  const wrtList = typeof wrt === "number" ? [wrt] : [...wrt];
  // Called with device arrays outside any trace, it compiles itself (one jit per valueAndGrad function).
  let eager: ((...args: A) => unknown) | undefined;
  const traced = (...args: A): [unknown, unknown] => {
    if (!currentTrace()) {
      eager ??= jit(traced as (...a: unknown[]) => unknown, { name: fn.name || "valueAndGrad" }) as (
        ...args: A
      ) => unknown;
      return eager(...args) as [unknown, unknown];
    }
    const parent = requireTrace("valueAndGrad");
    const names = paramNames(fn, args.length);
    for (const w of wrtList) {
      if (!Number.isInteger(w) || w < 0 || w >= args.length)
        throw new TraceError("valueAndGrad", `wrt argument ${w} is out of range for ${args.length} arguments`);
    }
    const { leaves, paths, def } = flatten<unknown>(args as Tree<unknown>);
    const argOf = paths.map((p) => Number(/^\[(\d+)\]/.exec(p)![1]));
    const child = new Trace(parent, "valueAndGrad");
    const inner = leaves.map((leaf, i) => {
      const name = joinName(names[argOf[i]!] ?? `arg${argOf[i]}`, paths[i]!.replace(/^\[\d+\]\.?/, ""));
      if (!(leaf instanceof Tensor))
        throw new TraceError("valueAndGrad", `argument ${name} is ${describe(leaf)}, not a Tensor`);
      if (wrtList.includes(argOf[i]!) && !isFloat(leaf.dtype)) {
        throw new TraceError(
          "valueAndGrad",
          `cannot differentiate with respect to ${name}: it is ${leaf.dtype}, not a float`,
          [leaf.type],
        );
      }
      return child.input(leaf.type, name);
    });
    const out = withTrace(child, () => fn(...(unflatten(def, inner) as A)));
    let loss: unknown = out,
      aux: unknown;
    if (opts.hasAux) {
      if (!Array.isArray(out) || out.length !== 2)
        throw new TraceError("valueAndGrad", `with hasAux the function must return [loss, aux], got ${describe(out)}`);
      [loss, aux] = out;
    }
    if (!(loss instanceof Tensor) || loss.ndim !== 0 || !isFloat(loss.dtype)) {
      throw new TraceError(
        "valueAndGrad",
        `the function must return a rank-0 float loss${opts.hasAux ? " as the first element of [loss, aux]" : ""}, got ${loss instanceof Tensor ? `a ${loss.dtype}[${loss.shape.join(",")}] Tensor` : describe(loss)}`,
      );
    }
    const auxOut = outputLeaves("valueAndGrad", aux, child);
    // Printed values ride along as auxiliary outputs: no cotangent reaches them, and they are the primal's.
    const prints = child.takePrints();
    const shown = printLeaves(prints);
    const g = child.build([loss, ...auxOut.tensors, ...shown]);
    // Gradients come back in wrt order: all leaves of wrtList[0], then of wrtList[1]...
    const wrtIdx = wrtList.flatMap((w) => leaves.flatMap((_, i) => (argOf[i] === w ? [i] : [])));
    const dg = graphValueAndGrad(g, wrtIdx);

    const outerInputs = [...leaves.map((l) => parent.lift(l as Tensor, "valueAndGrad")), ...child.capturedOuter];
    const outs = inlineGraph(parent, dg, outerInputs).map((v) => new Tensor(parent, v));
    const value = outs[0]!;
    const auxTree = unflatten(auxOut.def, outs.slice(1, 1 + auxOut.tensors.length));
    parent.prints.push(...rebind(prints, outs, 1 + auxOut.tensors.length));
    const grads = outs.slice(1 + auxOut.tensors.length + shown.length);
    // Regroup the flat gradients into one tree per wrt argument, shaped like that argument.
    const argDefs = def.kind === "array" ? def.children : [];
    let k = 0;
    const gradTrees = wrtList.map((w) => {
      const sub = argDefs[w]!;
      const n = leaves.filter((_, i) => argOf[i] === w).length;
      const tree = unflatten(sub, grads.slice(k, k + n));
      k += n;
      return tree;
    });
    const gradResult = typeof wrt === "number" ? gradTrees[0] : gradTrees;
    return [opts.hasAux ? [value, auxTree] : value, gradResult];
  };
  return traced as ValueAndGradFn<A, ValueOf<R, O>, GradsOf<A, WrtOf<O>>>;
}

/**
 * The gradient alone: `grad(f)(...args)` is `valueAndGrad(f)(...args)[1]`; with `hasAux` it returns
 * `[grads, aux]` (as JAX does).
 */
export function grad<A extends unknown[], R, const O extends GradOpts = GradOpts>(
  fn: (...args: A) => R,
  opts: O = {} as O,
): GradFn<
  A,
  O extends { readonly hasAux: true }
    ? [GradsOf<A, WrtOf<O>>, R extends [unknown, infer X] ? X : unknown]
    : GradsOf<A, WrtOf<O>>
> {
  const vg = valueAndGrad(fn, opts as GradOpts);
  let eager: ((...args: unknown[]) => unknown) | undefined;
  const traced = (...args: A): unknown => {
    if (!currentTrace()) {
      eager ??= jit(traced as (...a: unknown[]) => unknown, { name: fn.name || "grad" }) as (
        ...args: unknown[]
      ) => unknown;
      return eager(...args);
    }
    const [value, grads] = vg(...args);
    return opts.hasAux ? [grads, (value as [Tensor, unknown])[1]] : grads;
  };
  // biome-ignore lint/suspicious/noExplicitAny: the declared type is GradFn's; the implementation is one function
  return traced as any;
}
