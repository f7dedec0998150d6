// Control and scheduling: scan over a stacked leading axis (body traced once into a nested graph), optimizationBarrier.
import { formatType, sameType } from "../ir/types.ts";
import { bind, requireTrace, Tensor, Trace, withTrace } from "./core.ts";
import { TraceError } from "./errors.ts";
import { opLoc } from "./loc.ts";
import { flatten, treeDefKey, unflatten, type Tree } from "./tree.ts";
import { describe } from "../errors.ts";
import { joinName, outputLeaves } from "./trace.ts";
import { printLeaves, rebind } from "./debug.ts";

export interface ScanOpts {
  /** Number of steps; required when `xs` has no leaves, else it must equal their leading dim. */
  length?: number;
  /** Walk from the last slice to the first (ys are still stacked in input order). */
  reverse?: boolean;
}

function tensorLeaves(
  op: string,
  tree: unknown,
  what: string,
): { leaves: Tensor[]; paths: string[]; def: ReturnType<typeof flatten>["def"] } {
  const { leaves, paths, def } = flatten<unknown>(tree as Tree<unknown>);
  leaves.forEach((l, i) => {
    if (!(l instanceof Tensor))
      throw new TraceError(op, `${joinName(what, paths[i]!)} is ${describe(l)}, not a Tensor`);
  });
  return { leaves: leaves as Tensor[], paths, def };
}

/**
 * `scan(f, init, xs)` runs `[carry, y] = f(carry, x)` for each slice `x` of `xs` along axis 0 and returns
 * `[finalCarry, ys]` with the ys stacked on axis 0 (JAX's lax.scan). Carries, xs and ys are trees of tensors.
 * `f` is traced once into the body of one IR `scan` op; tensors it closes over are passed in as loop constants.
 * The carry must keep its exact structure, dtypes and shapes from step to step.
 */
export function scan<C, X, Y>(f: (carry: C, x: X) => [C, Y], init: C, xs: X, opts: ScanOpts = {}): [C, Y] {
  const parent = requireTrace("scan");
  const carry = tensorLeaves("scan", init, "init");
  const xsFlat = tensorLeaves("scan", xs, "xs");
  let length = opts.length;
  for (const [i, x] of xsFlat.leaves.entries()) {
    if (x.ndim === 0)
      throw new TraceError(
        "scan",
        `${joinName("xs", xsFlat.paths[i]!)} is a scalar; xs are sliced along their leading axis`,
        [x.type],
      );
    if (length === undefined) length = x.shape[0]!;
    else if (x.shape[0] !== length) {
      throw new TraceError(
        "scan",
        `${joinName("xs", xsFlat.paths[i]!)} has leading dim ${x.shape[0]}, expected ${length}${opts.length !== undefined ? " (opts.length)" : " (from the other xs)"}`,
        xsFlat.leaves.map((t) => t.type),
      );
    }
  }
  if (length === undefined) throw new TraceError("scan", "give opts.length when xs has no tensors");

  const body = new Trace(parent, "scan");
  const carryIn = carry.leaves.map((c) => body.input(c.type));
  const xIn = xsFlat.leaves.map((x) => body.input({ dtype: x.dtype, shape: x.shape.slice(1) }));
  const result = withTrace(body, () => f(unflatten(carry.def, carryIn) as C, unflatten(xsFlat.def, xIn) as X));
  if (!Array.isArray(result) || result.length !== 2)
    throw new TraceError("scan", `the body must return [carry, y], got ${describe(result)}`);
  const newCarry = outputLeaves("scan", result[0], body);
  const ys = outputLeaves("scan", result[1], body);
  if (treeDefKey(newCarry.def) !== treeDefKey(carry.def)) {
    throw new TraceError(
      "scan",
      `the body returned a carry of structure ${treeDefKey(newCarry.def)}, but init has structure ${treeDefKey(carry.def)}`,
    );
  }
  newCarry.tensors.forEach((t, i) => {
    const want = carry.leaves[i]!.type;
    if (!sameType(t.type, want)) {
      throw new TraceError(
        "scan",
        `the body returned ${joinName("carry", carry.paths[i]!)} as ${formatType(t.type)}, but init has ${formatType(want)}; the carry must keep its dtype and shape`,
        [want, t.type],
      );
    }
  });
  // Printed values leave the body as extra ys, stacked per iteration, and print once per iteration.
  const prints = body.takePrints();
  const shown = printLeaves(prints);
  const built = body.build([...newCarry.tensors, ...ys.tensors, ...shown]);
  // The IR wants body inputs ordered (consts, carries, x slices); captured constants were appended last.
  const bodyGraph = Object.freeze({
    inputs: Object.freeze([...body.capturedInner, ...built.inputs.slice(0, carryIn.length + xIn.length)]),
    ops: built.ops,
    outputs: built.outputs,
  });
  const operands = [
    ...body.capturedOuter,
    ...carry.leaves.map((c) => parent.lift(c, "scan")),
    ...xsFlat.leaves.map((x) => parent.lift(x, "scan")),
  ];
  const outs = parent.builder
    .add(
      "scan",
      operands,
      {
        body: bodyGraph,
        length,
        numConsts: body.capturedOuter.length,
        numCarry: carry.leaves.length,
        reverse: opts.reverse ?? false,
      },
      opLoc(),
    )
    .map((v) => new Tensor(parent, v));
  const ownOuts = carry.leaves.length + ys.tensors.length;
  if (prints.length)
    parent.prints.push({
      kind: "loop",
      length,
      reverse: opts.reverse ?? false,
      children: rebind(prints, outs, ownOuts),
    });
  return [
    unflatten(carry.def, outs.slice(0, carry.leaves.length)) as C,
    unflatten(ys.def, outs.slice(carry.leaves.length, ownOuts)) as Y,
  ];
}

/**
 * Returns its inputs unchanged, but XLA may not move computation across it: used to stop rematerialized
 * activations from being recomputed early, or CSE'd with the forward pass.
 */
export function optimizationBarrier<T>(tree: T): T {
  const { leaves, def } = tensorLeaves("optimizationBarrier", tree, "value");
  if (leaves.length === 0) return tree;
  return unflatten(def, bind("optimization_barrier", leaves, {})) as T;
}
