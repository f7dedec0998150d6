// Control flow and gradient transforms as in JAX's lax: cond, switchCase, whileLoop, foriLoop, stopGradient, customVjp.
import { GraphBuilder, Value, type Graph } from "../ir/graph.ts";
import { formatType, isInteger, sameType, type TensorType } from "../ir/types.ts";
import { makeGraph } from "../passes/rewrite.ts";
import { describe } from "../errors.ts";
import { bind, requireTrace, Tensor, Trace, withTrace } from "./core.ts";
import { scan } from "./control.ts";
import { TraceError } from "./errors.ts";
import { opLoc } from "./loc.ts";
import { constant } from "./ops/creation.ts";
import { flatten, treeDefKey, unflatten, type Tree, type TreeDef } from "./tree.ts";
import { joinName, outputLeaves } from "./trace.ts";
import { printLeaves, rebind, type PrintNode } from "./debug.ts";

interface Leaves {
  readonly tensors: Tensor[];
  readonly paths: string[];
  readonly def: TreeDef;
}

/** The tensor leaves of an operand tree; anything else is an error naming its path. */
function tensorLeaves(op: string, tree: unknown, what: string): Leaves {
  const { leaves, paths, def } = flatten<unknown>(tree as Tree<unknown>);
  leaves.forEach((l, i) => {
    if (!(l instanceof Tensor))
      throw new TraceError(op, `${joinName(what, paths[i]!)} is ${describe(l)}, not a Tensor`);
  });
  return { tensors: leaves as Tensor[], paths, def };
}

/** A function traced into a nested graph of `parent`: its explicit inputs first, then the values it closed over. */
interface Traced {
  readonly graph: Graph;
  readonly out: Leaves;
  readonly trace: Trace;
  /** Outputs of fn beyond the graph's (customVjp's fwd returns [out, residuals]). */
  readonly raw: unknown;
  /** With `routePrints`: the body's debug.print calls, whose values are the graph's last outputs. */
  readonly prints: readonly PrintNode<Tensor>[];
}

/**
 * Traces `call` into a nested graph of `parent`. With `routePrints` the body's debug.print values are appended to
 * the graph's outputs (the owner prints them from its op's results); without, a print in the body is an error.
 */
export function traceBody(
  parent: Trace,
  op: string,
  inputTypes: readonly TensorType[],
  call: (inputs: Tensor[]) => unknown,
  outputsOf: (result: unknown, t: Trace) => Leaves = (r, t) => outputLeaves(op, r, t),
  routePrints = false,
): Traced {
  const t = new Trace(parent, op);
  const inputs = inputTypes.map((ty) => t.input(ty));
  const raw = withTrace(t, () => call(inputs));
  const out = withTrace(t, () => outputsOf(raw, t));
  const prints = routePrints ? t.takePrints() : [];
  const graph = t.build([...out.tensors, ...printLeaves(prints)], undefined, op);
  return { graph, out, trace: t, raw, prints };
}

/**
 * Gives every branch the printed values of all branches as extra results, in branch order: its own, and zeros in
 * the places of the others' (only the taken branch's are printed, so the zeros are never shown).
 */
function sharePrintOutputs(bodies: readonly Traced[]): Traced[] {
  const shown = bodies.map((b) => b.graph.outputs.slice(b.out.tensors.length));
  if (shown.every((s) => s.length === 0)) return [...bodies];
  return bodies.map((b, k) => {
    const zb = new GraphBuilder();
    const extra = shown.flatMap((vals, j) =>
      j === k
        ? vals
        : vals.map((v) => zb.add1("constant", [], { dtype: v.type.dtype, shape: v.type.shape, value: [0] })),
    );
    const zeros = zb.build([]).ops;
    const g = b.graph;
    return {
      ...b,
      graph: makeGraph(g.inputs, [...g.ops, ...zeros], [...g.outputs.slice(0, b.out.tensors.length), ...extra]),
    };
  });
}

/**
 * Gives every traced body the same trailing inputs: the union of the values any of them closed over (outer values,
 * in first-capture order). A body that did not use one gets an unused input for it. `lead` is how many of each
 * graph's inputs come before the captures; captures are moved to `at` (0: first, as consts; lead: last).
 */
export function unifyCaptures(bodies: readonly Traced[], lead: readonly number[], at: "first" | "last") {
  const outer: Value[] = [];
  for (const b of bodies) for (const v of b.trace.capturedOuter) if (!outer.includes(v)) outer.push(v);
  const graphs = bodies.map((b, k) => {
    const own = b.graph.inputs.slice(0, lead[k]);
    const capValues = outer.map((v) => {
      const i = b.trace.capturedOuter.indexOf(v);
      return i >= 0 ? b.trace.capturedInner[i]! : new Value(v.type);
    });
    const inputs = at === "first" ? [...capValues, ...own] : [...own, ...capValues];
    return makeGraph(inputs, b.graph.ops, b.graph.outputs);
  });
  return { outer, graphs };
}

/** Checks that `got` has the structure and leaf types of `want`, naming both sides in the error. */
function sameStructure(op: string, want: Leaves, wantName: string, got: Leaves, gotName: string, what: string): void {
  if (treeDefKey(got.def) !== treeDefKey(want.def)) {
    throw new TraceError(
      op,
      `${gotName} returns ${what} of structure ${treeDefKey(got.def)}, but ${wantName} returns ${treeDefKey(want.def)}`,
    );
  }
  got.tensors.forEach((t, i) => {
    const w = want.tensors[i]!;
    if (!sameType(t.type, w.type)) {
      throw new TraceError(
        op,
        `${gotName} returns ${joinName(what, got.paths[i]!)} as ${formatType(t.type)}, but ${wantName} returns it as ${formatType(w.type)}`,
      );
    }
  });
}

/** A rank-0 index operand: a Tensor of the allowed kinds, or a JS number/boolean made a constant. */
function scalarOperand(op: string, x: unknown, what: string): Tensor {
  if (typeof x === "boolean") return constant(x ? 1 : 0, { dtype: "bool" });
  if (typeof x === "number") {
    if (!Number.isInteger(x)) throw new TraceError(op, `${what} must be an integer, got ${x}`);
    return constant(x, { dtype: "s32" });
  }
  if (!(x instanceof Tensor)) throw new TraceError(op, `${what} must be a Tensor, got ${describe(x)}`);
  if (x.ndim !== 0) throw new TraceError(op, `${what} must be a scalar (rank 0), got ${formatType(x.type)}`, [x.type]);
  return x;
}

/**
 * Branches over trees of operands: traced once each into the branches of one IR `cond` op, so that only the taken
 * branch runs (JAX's lax.switch). Every branch must return the same structure, dtypes and shapes.
 */
function branchOp(
  op: string,
  index: Tensor,
  fns: readonly ((...args: never[]) => unknown)[],
  names: readonly string[],
  operands: readonly unknown[],
): unknown {
  const parent = requireTrace(op);
  const args = tensorLeaves(op, operands, "operands");
  const types = args.tensors.map((t) => t.type);
  const traced = fns.map((fn, k) => {
    if (typeof fn !== "function") throw new TraceError(op, `${names[k]} must be a function, got ${describe(fn)}`);
    return traceBody(parent, op, types, (inputs) => fn(...(unflatten(args.def, inputs) as never[])), undefined, true);
  });
  traced.forEach((b, k) => {
    if (k > 0) sameStructure(op, traced[0]!.out, names[0]!, b.out, names[k]!, "out");
  });
  const bodies = sharePrintOutputs(traced);
  const { outer, graphs } = unifyCaptures(
    bodies,
    bodies.map(() => types.length),
    "last",
  );
  const outs = parent.builder
    .add(
      "cond",
      [parent.lift(index, op), ...args.tensors.map((t) => parent.lift(t, op)), ...outer],
      { branches: Object.freeze(graphs) },
      opLoc(),
    )
    .map((v) => new Tensor(parent, v));
  const own = bodies[0]!.out.tensors.length;
  if (bodies.some((b) => b.prints.length)) {
    // The index the op branches on picks whose printed values are shown (cond's branches are [false, true]).
    let from = own;
    const branches = bodies.map((b) => {
      const nodes = rebind(b.prints, outs, from);
      from += printLeaves(b.prints).length;
      return nodes;
    });
    parent.prints.push({ kind: "branch", index: new Tensor(parent, parent.lift(index, op)), branches });
  }
  return unflatten(bodies[0]!.out.def, outs.slice(0, own));
}

/**
 * `cond(pred, trueFn, falseFn, ...operands)`: `trueFn(...operands)` if the scalar `pred` holds, else
 * `falseFn(...operands)` (JAX's lax.cond). Both are traced; only the taken one runs (`stablehlo.if`), and it is
 * differentiable. Operands are trees of tensors; the branches may also close over tensors. A numeric `pred` is
 * true when non-zero. Both branches must return the same structure, dtypes and shapes.
 */
export function cond<A extends unknown[], R>(
  pred: Tensor | boolean,
  trueFn: (...operands: A) => R,
  falseFn: (...operands: A) => R,
  ...operands: A
): R {
  requireTrace("cond");
  let p = scalarOperand("cond", pred, "pred");
  if (p.dtype !== "bool") p = p.ne(0);
  return branchOp("cond", p, [falseFn, trueFn] as never, ["falseFn", "trueFn"], operands) as R;
}

/**
 * `switchCase(index, branches, ...operands)`: `branches[index](...operands)`, the index clamped into range
 * (JAX's lax.switch; `tx.switch` is the same function). Lowered to `stablehlo.case`; differentiable.
 */
export function switchCase<A extends unknown[], R>(
  index: Tensor | number,
  branches: readonly ((...operands: A) => R)[],
  ...operands: A
): R {
  requireTrace("switch");
  if (!Array.isArray(branches) || branches.length === 0)
    throw new TraceError("switch", `branches must be a non-empty array of functions, got ${describe(branches)}`);
  let i = scalarOperand("switch", index, "index");
  if (!isInteger(i.dtype))
    throw new TraceError("switch", `index must be an integer, got ${formatType(i.type)}`, [i.type]);
  if (i.dtype !== "s32") i = i.astype("s32");
  // Clamped as JAX does (stablehlo.case alone would run the last branch for any out-of-range index, even -1).
  i = i.maximum(0).minimum(branches.length - 1);
  const names = branches.map((_, k) => `branches[${k}]`);
  return branchOp("switch", i, branches as never, names, operands) as R;
}

/**
 * `whileLoop(condFn, bodyFn, init)`: `let c = init; while (condFn(c)) c = bodyFn(c); return c` (JAX's
 * lax.while_loop), one `stablehlo.while`. `condFn` returns a scalar bool tensor; the carry is a tree of tensors
 * that must keep its structure, dtypes and shapes. Not reverse-differentiable (as in JAX): use foriLoop with
 * static bounds, or scan.
 */
export function whileLoop<C>(condFn: (carry: C) => Tensor, bodyFn: (carry: C) => C, init: C): C {
  const op = "whileLoop";
  const parent = requireTrace(op);
  const carry = tensorLeaves(op, init, "init");
  if (carry.tensors.length === 0) throw new TraceError(op, "init must hold at least one Tensor");
  const types = carry.tensors.map((t) => t.type);
  const condBody = traceBody(
    parent,
    op,
    types,
    (inputs) => condFn(unflatten(carry.def, inputs) as C),
    (r, t) => {
      if (!(r instanceof Tensor) || r.dtype !== "bool" || r.ndim !== 0) {
        const got = r instanceof Tensor ? `a ${formatType(r.type)} tensor` : describe(r);
        throw new TraceError(op, `condFn must return a scalar bool tensor, got ${got}`);
      }
      return outputLeaves(op, r, t);
    },
  );
  const body = traceBody(parent, op, types, (inputs) => bodyFn(unflatten(carry.def, inputs) as C));
  checkCarry(op, carry, body.out, "bodyFn");
  const { outer, graphs } = unifyCaptures([condBody, body], [types.length, types.length], "first");
  const outs = parent.builder
    .add(
      "while",
      [...outer, ...carry.tensors.map((t) => parent.lift(t, op))],
      { cond: graphs[0]!, body: graphs[1]!, numConsts: outer.length },
      opLoc(),
    )
    .map((v) => new Tensor(parent, v));
  return unflatten(carry.def, outs) as C;
}

/** A loop body's new carry must have init's structure, dtypes and shapes: the error names the leaf that changed. */
function checkCarry(op: string, init: Leaves, got: Leaves, fnName: string): void {
  if (treeDefKey(got.def) !== treeDefKey(init.def)) {
    throw new TraceError(
      op,
      `${fnName} returned a carry of structure ${treeDefKey(got.def)}, but init has structure ${treeDefKey(init.def)}`,
    );
  }
  got.tensors.forEach((t, i) => {
    const want = init.tensors[i]!.type;
    if (!sameType(t.type, want)) {
      throw new TraceError(
        op,
        `${fnName} returned ${joinName("carry", init.paths[i]!)} as ${formatType(t.type)}, but init has ${formatType(want)}; the carry must keep its dtype and shape`,
      );
    }
  });
}

/**
 * `foriLoop(lower, upper, body, init)`: `for (let i = lower; i < upper; i++) carry = body(i, carry)` with `i` an
 * s32 scalar tensor (JAX's lax.fori_loop). With JS-number bounds the trip count is static and the loop is a
 * `scan`, so it is differentiable; with tensor bounds it is a `whileLoop` (not reverse-differentiable).
 */
export function foriLoop<C>(
  lower: number | Tensor,
  upper: number | Tensor,
  body: (i: Tensor, carry: C) => C,
  init: C,
): C {
  const op = "foriLoop";
  requireTrace(op);
  const carry = tensorLeaves(op, init, "init");
  const step = (i: Tensor, c: C): C => {
    const next = body(i, c);
    checkCarry(op, carry, tensorLeaves(op, next, "carry"), "body");
    return next;
  };
  if (typeof lower === "number" && typeof upper === "number") {
    if (!Number.isInteger(lower) || !Number.isInteger(upper))
      throw new TraceError(op, `bounds must be integers, got ${lower} and ${upper}`);
    const length = Math.max(0, upper - lower);
    const [[, out]] = scan(
      ([i, c]: [Tensor, C]) => [[i.add(1), step(i, c)], null] as [[Tensor, C], null],
      [constant(lower, { dtype: "s32" }), init] as [Tensor, C],
      null,
      { length },
    );
    return out;
  }
  const bound = (x: number | Tensor, what: string): Tensor => {
    const t = scalarOperand(op, x, what);
    if (!isInteger(t.dtype))
      throw new TraceError(op, `${what} must be an integer, got ${formatType(t.type)}`, [t.type]);
    return t.dtype === "s32" ? t : t.astype("s32");
  };
  const lo = bound(lower, "lower");
  const hi = bound(upper, "upper");
  const [, out] = whileLoop(
    ([i]: [Tensor, C]) => i.lt(hi),
    ([i, c]: [Tensor, C]) => [i.add(1), step(i, c)] as [Tensor, C],
    [lo, init] as [Tensor, C],
  );
  return out;
}

/**
 * `stopGradient(x)`: `x`, through which no gradient flows (JAX's lax.stop_gradient); a tree of tensors gives a tree.
 * One IR op that the program computes as the identity.
 */
export function stopGradient<T>(x: T): T {
  const { tensors, def } = tensorLeaves("stopGradient", x, "x");
  return unflatten(
    def,
    tensors.map((t) => bind("stop_gradient", [t], {})[0]!),
  ) as T;
}

export interface CustomVjpRules<A extends unknown[], R, Res> {
  /** Returns `[fn(...args), residuals]`: the output (as `fn` gives it) and a tree of tensors bwd needs. */
  readonly fwd: (...args: A) => [R, Res];
  /** Returns one cotangent tree per argument of `fn` (shaped like it; `null` for zeros), from the residuals and the output's cotangent. */
  readonly bwd: (residuals: Res, cotangent: R) => unknown[];
}

/**
 * `customVjp(fn, { fwd, bwd })`: `fn` with the gradient `bwd` gives (JAX's jax.custom_vjp). Calling the result
 * traces `fn`, `fwd` and `bwd` into one IR op: the program runs `fn` unless the op is differentiated, and then `fwd`
 * forward and `bwd` backward. Works under jit, grad and nested grad (an outer grad differentiates `fwd` and `bwd`
 * as ordinary code). Arguments are trees of tensors; tensors the functions close over get no gradient (pass them
 * as arguments instead: differentiating one is an error).
 */
export function customVjp<A extends unknown[], R, Res>(
  fn: (...args: A) => R,
  rules: CustomVjpRules<A, R, Res>,
): (...args: A) => R {
  const op = "customVjp";
  if (typeof fn !== "function") throw new TraceError(op, `fn must be a function, got ${describe(fn)}`);
  if (typeof rules?.fwd !== "function" || typeof rules.bwd !== "function")
    throw new TraceError(op, "needs { fwd, bwd }, both functions");
  return (...args: A): R => {
    const parent = requireTrace(op);
    const argLeaves = tensorLeaves(op, args, "args");
    const argDefs = argLeaves.def.kind === "array" ? argLeaves.def.children : [];
    const types = argLeaves.tensors.map((t) => t.type);
    const call = (f: (...a: A) => unknown) => (inputs: Tensor[]) => f(...(unflatten(argLeaves.def, inputs) as A));

    const body = traceBody(parent, op, types, call(fn));
    let residualDef: TreeDef | undefined;
    const fwd = traceBody(parent, op, types, call(rules.fwd), (r, t) => {
      if (!Array.isArray(r) || r.length !== 2)
        throw new TraceError(op, `fwd must return [output, residuals], got ${describe(r)}`);
      const out = outputLeaves(op, r[0], t);
      sameStructure(op, body.out, "fn", out, "fwd", "out");
      const res = tensorLeaves(op, r[1], "residuals");
      residualDef = res.def;
      return { tensors: [...out.tensors, ...res.tensors], paths: [...out.paths, ...res.paths], def: out.def };
    });
    const resTypes = fwd.graph.outputs.slice(body.out.tensors.length).map((v) => v.type);
    const outTypes = body.out.tensors.map((t) => t.type);
    const bwd = traceBody(
      parent,
      op,
      [...resTypes, ...outTypes],
      (inputs) =>
        rules.bwd(
          unflatten(residualDef!, inputs.slice(0, resTypes.length)) as Res,
          unflatten(body.out.def, inputs.slice(resTypes.length)) as R,
        ),
      (r, t) => bwdOutputs(op, r, t, args, argDefs, argLeaves),
    );
    const { outer, graphs } = unifyCaptures(
      [body, fwd, bwd],
      [types.length, types.length, resTypes.length + outTypes.length],
      "first",
    );
    const outs = parent.builder
      .add(
        "custom_vjp",
        [...outer, ...argLeaves.tensors.map((t) => parent.lift(t, op))],
        { body: graphs[0]!, fwd: graphs[1]!, bwd: graphs[2]!, numConsts: outer.length },
        opLoc(),
      )
      .map((v) => new Tensor(parent, v));
    return unflatten(body.out.def, outs) as R;
  };
}

/** bwd's result: one cotangent tree per argument, each shaped like its argument; `null` stands for zeros. */
function bwdOutputs(
  op: string,
  r: unknown,
  t: Trace,
  args: readonly unknown[],
  argDefs: readonly TreeDef[],
  argLeaves: Leaves,
): Leaves {
  if (!Array.isArray(r) || r.length !== args.length) {
    throw new TraceError(
      op,
      `bwd must return an array with one cotangent per argument (${args.length}), got ${Array.isArray(r) ? `an array of ${r.length}` : describe(r)}`,
    );
  }
  const tensors: Tensor[] = [];
  let k = 0;
  r.forEach((ct, a) => {
    const want = tensorLeaves(op, args[a], `args[${a}]`);
    k += want.tensors.length;
    if (ct === null || ct === undefined) {
      for (const w of want.tensors) tensors.push(withTrace(t, () => constant(0, { dtype: w.dtype, shape: w.shape })));
      return;
    }
    const got = withTrace(t, () => outputLeaves(op, ct, t));
    if (treeDefKey(got.def) !== treeDefKey(argDefs[a]!)) {
      throw new TraceError(
        op,
        `bwd returned a cotangent of structure ${treeDefKey(got.def)} for argument ${a}, whose structure is ${treeDefKey(argDefs[a]!)}`,
      );
    }
    got.tensors.forEach((g, i) => {
      const w = want.tensors[i]!;
      if (!sameType(g.type, w.type)) {
        throw new TraceError(
          op,
          `bwd returned the cotangent of ${joinName(`args[${a}]`, want.paths[i]!)} as ${formatType(g.type)}, but the argument is ${formatType(w.type)}`,
        );
      }
      tensors.push(g);
    });
  });
  if (k !== argLeaves.tensors.length) throw new Error("internal: customVjp argument count");
  return { tensors, paths: tensors.map(() => ""), def: argLeaves.def };
}
