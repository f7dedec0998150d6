// Reverse-mode autodiff as an IR-to-IR transform: vjp, valueAndGrad and the "autodiff" pass.
import { TesseraError } from "../errors.ts";
import { GraphBuilder, Value, makeOp, mapSubgraphs, subgraphs, type AnyOp, type Graph, type Op } from "../ir/graph.ts";
import type { OpName } from "../ir/ops.ts";
import { formatLoc, formatType, isFloat, range, sameType, type SourceLoc } from "../ir/types.ts";
import { Emitter } from "./emitter.ts";
import type { Pass } from "./pass.ts";
import { savedOps } from "./remat.ts";
import { cloneGraph, makeGraph } from "./rewrite.ts";
import { VJP_RULES, carriesNoGradient, stackedType, type Ct, type VjpCtx, type VjpRule } from "./vjp_rules.ts";

/**
 * The gradient graph of `g`: inputs `[...g.inputs, one cotangent per g output]`, outputs `[...g.outputs, the
 * gradient of each wrt input, in wrt order]`. Only values on a path from a wrt input to an output get
 * cotangents, so inputs not in `wrt` (frozen weights) never get gradient computations.
 */
export function vjp(g: Graph, wrt: readonly number[]): Graph {
  checkWrt(g, wrt, "vjp");
  const cts = g.outputs.map((o) => new Value(o.type));
  const seeds = new Map<Value, Value[]>();
  g.outputs.forEach((o, i) => {
    addSeed(seeds, o, cts[i]!);
  });
  const b = new GraphBuilder();
  const grads = backprop(
    b,
    g,
    new Set(wrt.map((i) => g.inputs[i]!)),
    seeds,
    wrt.map((i) => g.inputs[i]!),
  );
  const outNames = g.outputs.map((_, i) => g.outputNames?.[i] ?? "");
  return makeGraph(
    [...g.inputs, ...cts],
    b.build([]).ops,
    [...g.outputs, ...grads],
    [...g.inputs.map((_, i) => g.inputNames?.[i] ?? ""), ...outNames.map((n, i) => `ct.${n || `out${i}`}`)],
    [...outNames, ...wrt.map((i) => gradName(g, i))],
  );
}

/**
 * `g`'s outputs followed by the gradient of output 0 (a rank-0 float: the loss) with respect to each wrt
 * input. Further outputs are auxiliary: returned, not differentiated.
 */
export function valueAndGrad(g: Graph, wrt: readonly number[]): Graph {
  checkWrt(g, wrt, "valueAndGrad");
  const loss = g.outputs[0];
  if (loss?.type.shape.length !== 0 || !isFloat(loss.type.dtype)) {
    const got = loss ? formatType(loss.type) : "no outputs";
    throw new Error(`valueAndGrad: output 0 must be a rank-0 float (the loss), got ${got}`);
  }
  const b = new GraphBuilder();
  const one = new Emitter(b).full(loss.type, 1);
  const seeds = new Map<Value, Value[]>([[loss, [one]]]);
  const grads = backprop(
    b,
    g,
    new Set(wrt.map((i) => g.inputs[i]!)),
    seeds,
    wrt.map((i) => g.inputs[i]!),
  );
  const outNames = g.outputs.map((_, i) => g.outputNames?.[i] ?? "");
  return makeGraph(g.inputs, b.build([]).ops, [...g.outputs, ...grads], g.inputNames, [
    ...outNames,
    ...wrt.map((i) => gradName(g, i)),
  ]);
}

/** The autodiff pass: `valueAndGrad(g, wrt)`. */
export function autodiffPass(wrt: readonly number[]): Pass {
  return {
    name: "autodiff",
    description: "Appends the gradient of output 0 (the loss) with respect to the chosen inputs (reverse mode).",
    run: (g) => valueAndGrad(g, wrt),
  };
}

function gradName(g: Graph, i: number): string {
  return `grad.${g.inputNames?.[i] || `in${i}`}`;
}

function checkWrt(g: Graph, wrt: readonly number[], fn: string): void {
  for (const i of wrt) {
    const v = g.inputs[i];
    if (!Number.isInteger(i) || !v)
      throw new Error(`${fn}: wrt index ${i} is out of range for ${g.inputs.length} inputs`);
    if (!isFloat(v.type.dtype)) {
      const name = g.inputNames?.[i] ? ` (${g.inputNames[i]})` : "";
      throw new Error(`${fn}: wrt input ${i}${name} is ${formatType(v.type)}; only float inputs have gradients`);
    }
  }
}

function addSeed(seeds: Map<Value, Value[]>, v: Value, ct: Value): void {
  const list = seeds.get(v);
  if (list) list.push(ct);
  else seeds.set(v, [ct]);
}

// ---------------------------------------------------------------------------------------------------------------
// Activity: which values depend on a wrt input (forward) and which feed a seeded output (backward).

/** Float values of `g` that depend on `activeInputs`. */
function forwardActivity(g: Graph, activeInputs: ReadonlySet<Value>): Set<Value> {
  const active = new Set<Value>();
  for (const v of g.inputs) if (activeInputs.has(v) && isFloat(v.type.dtype)) active.add(v);
  for (const op of g.ops) {
    const flags = outputActivity(
      op,
      op.inputs.map((v) => active.has(v)),
    );
    op.outputs.forEach((o, i) => {
      if (flags[i] && isFloat(o.type.dtype)) active.add(o);
    });
  }
  return active;
}

function outputActivity(op: AnyOp, inActive: readonly boolean[]): readonly boolean[] {
  switch (op.name) {
    case "optimization_barrier":
    case "sort":
      return inActive;
    case "scan":
      return scanActivity(op, inActive).outputs;
    case "cond":
      return condActivity(op, inActive);
    case "while":
      return whileActivity(op, inActive);
    case "custom_vjp":
      return op.outputs.map(() => inActive.some((a) => a));
    case "checkpoint": {
      const { body } = op.params;
      const active = forwardActivity(body, new Set(body.inputs.filter((_, i) => inActive[i])));
      return body.outputs.map((v) => active.has(v));
    }
    default: {
      // Bit reinterpretation, and ops with integer or bool results: no gradient flows through them.
      if (carriesNoGradient(op.name)) return op.outputs.map(() => false);
      const any = inActive.some((a) => a);
      return op.outputs.map(() => any);
    }
  }
}

interface ScanActivity {
  /** Carries that depend on an active operand at some iteration (a fixpoint over the loop). */
  readonly carries: readonly boolean[];
  readonly outputs: readonly boolean[];
}

function scanActivity(op: Op<"scan">, inActive: readonly boolean[]): ScanActivity {
  const { body, numConsts: nc, numCarry: nh } = op.params;
  let carries = inActive.slice(nc, nc + nh);
  for (;;) {
    // body.inputs and op.inputs share the layout consts, carries, xs.
    const flags = body.inputs.map((_, i) => (i >= nc && i < nc + nh ? carries[i - nc]! : inActive[i]!));
    const active = forwardActivity(body, new Set(body.inputs.filter((_, i) => flags[i])));
    const next = carries.map((c, i) => c || active.has(body.outputs[i]!));
    if (next.every((c, i) => c === carries[i])) {
      return { carries, outputs: [...carries, ...body.outputs.slice(nh).map((y) => active.has(y))] };
    }
    carries = next;
  }
}

/** A cond result is active when it depends on an active operand in any branch. */
function condActivity(op: Op<"cond">, inActive: readonly boolean[]): boolean[] {
  const out = op.outputs.map(() => false);
  for (const b of op.params.branches) {
    const active = forwardActivity(b, new Set(b.inputs.filter((_, i) => inActive[1 + i])));
    b.outputs.forEach((v, j) => {
      if (active.has(v)) out[j] = true;
    });
  }
  return out;
}

/** As scanActivity: a carry is active if its initial value is, or if the body makes it depend on one that is. */
function whileActivity(op: Op<"while">, inActive: readonly boolean[]): boolean[] {
  const { body, numConsts: nc } = op.params;
  let carries = inActive.slice(nc);
  for (;;) {
    const flags = body.inputs.map((_, i) => (i < nc ? inActive[i]! : carries[i - nc]!));
    const active = forwardActivity(body, new Set(body.inputs.filter((_, i) => flags[i])));
    const next = carries.map((c, i) => c || active.has(body.outputs[i]!));
    if (next.every((c, i) => c === carries[i])) return carries;
    carries = next;
  }
}

// ---------------------------------------------------------------------------------------------------------------
// The transform.

/** A program that reverse mode cannot differentiate (a while loop, a custom_vjp closing over a differentiated value). */
export class AutodiffError extends TesseraError {
  constructor(op: string, detail: string, loc: SourceLoc | undefined) {
    super(`${op}: ${detail}${loc ? ` at ${formatLoc(loc)}` : ""}`, { code: "ERR_AUTODIFF" });
    this.name = "AutodiffError";
  }
}

const RULES: { [N in OpName]: VjpRule<N> } = {
  ...VJP_RULES,
  scan: scanVjp,
  cond: condVjp,
  while: (_ctx, op) => {
    throw new AutodiffError(
      "whileLoop",
      "reverse-mode differentiation does not work for a while loop (its trip count is only known at run time, so " +
        "nothing bounds what the backward pass must save, as in JAX); use foriLoop with static bounds or scan",
      op.loc,
    );
  },
  custom_vjp: customVjpRule,
  checkpoint: checkpointVjp,
};

/**
 * Emits into `b` the ops of `g` (scans that are differentiated are extended to save their per-iteration
 * carries) and then the backward ops; returns the cotangent of each `want` value (zeros where none flows).
 * `seeds` gives the cotangents flowing into values of `g` (summed when a value has several); its values
 * must be available in `b`'s scope. Gradients flow only through float values that depend on `activeInputs`.
 * `given` ops of `g` are not emitted: their results are already in scope (a checkpoint's saved values).
 * `presaved` checkpoint ops of `g` take their policy's residuals from there (a scan's forward pass stacked them).
 */
function backprop(
  b: GraphBuilder,
  traced: Graph,
  activeInputs: ReadonlySet<Value>,
  seeds: ReadonlyMap<Value, readonly Value[]>,
  want: readonly Value[],
  given: ReadonlySet<AnyOp> = new Set(),
  presaved: ReadonlyMap<AnyOp, readonly Value[]> = new Map(),
): Value[] {
  const g = inlineEverythingSaveable(traced);
  const active = forwardActivity(g, activeInputs);
  // Backward reachability: a value needs a cotangent if it is active and feeds a seeded value.
  const useful = new Set([...seeds.keys()].filter((v) => active.has(v)));
  const differentiated = new Set<AnyOp>();
  for (let k = g.ops.length - 1; k >= 0; k--) {
    const op = g.ops[k]!;
    if (!op.outputs.some((o) => useful.has(o))) continue;
    const inputs = op.inputs.filter((v) => active.has(v));
    if (inputs.length === 0) continue;
    differentiated.add(op);
    inputs.forEach((v) => {
      useful.add(v);
    });
  }

  const residuals = new Map<AnyOp, Value[]>();
  for (const op of g.ops) {
    if (given.has(op)) continue;
    const pre = presaved.get(op);
    if (pre) {
      b.push(op);
      residuals.set(op, [...pre]);
    } else if (op.name === "checkpoint" && differentiated.has(op)) {
      const saved = forwardSaving(op);
      b.push(saved.op);
      residuals.set(op, saved.residuals);
    } else if (op.name === "scan" && differentiated.has(op)) {
      const saved = saveCarries(
        op,
        op.inputs.map((v) => active.has(v)),
        op.outputs.map((o) => useful.has(o)),
      );
      b.push(saved.op);
      residuals.set(op, saved.stacked);
    } else if (op.name === "custom_vjp" && differentiated.has(op)) {
      // The user's fwd runs instead of the primal body, defining the op's results and the residuals for bwd.
      const outs = inlineInto(b, op.params.fwd, op.inputs, op.outputs, op.loc);
      residuals.set(op, outs.slice(op.outputs.length));
    } else {
      b.push(op);
    }
  }

  const e = new Emitter(b);
  const cts = new Map<Value, Value>();
  for (const [v, list] of seeds) {
    if (active.has(v)) for (const ct of list) accumulate(e, cts, v, ct);
  }
  for (let k = g.ops.length - 1; k >= 0; k--) {
    const op = g.ops[k]!;
    if (!differentiated.has(op)) continue;
    const outCts = op.outputs.map((o) => cts.get(o));
    if (outCts.every((c) => c === undefined)) continue;
    e.loc = op.loc;
    const needs = op.inputs.map((v) => active.has(v));
    const ctx: VjpCtx = { e, residuals: residuals.get(op) };
    const inCts = (RULES[op.name] as VjpRule<OpName>)(ctx, op, outCts, needs);
    op.inputs.forEach((v, i) => {
      const ct = inCts[i];
      if (!needs[i]) return;
      if (!ct) throw new Error(`internal: the vjp of ${op.name} gave no cotangent for its operand ${i}`);
      if (!sameType(ct.type, v.type)) {
        throw new Error(
          `internal: the vjp of ${op.name} gave ${formatType(ct.type)} for operand ${i} of type ${formatType(v.type)}`,
        );
      }
      accumulate(e, cts, v, ct);
    });
  }
  e.loc = undefined;
  return want.map((v) => cts.get(v) ?? e.zeros(v.type));
}

/**
 * The forward pass of a differentiated checkpoint: the same op, its body also returning the results its policy
 * saves (the residuals, in savedOps order). Everything else the body computes dies inside it. It stays a
 * checkpoint op so that an outer grad (nested differentiation) rematerializes it in turn.
 */
function forwardSaving(op: Op<"checkpoint">): { op: AnyOp; residuals: Value[] } {
  const kept = savedOps(op).flatMap((o) => o.outputs);
  if (kept.length === 0) return { op, residuals: [] };
  const { body } = op.params;
  const outNames = body.outputNames ? [...body.outputNames, ...kept.map(() => "")] : undefined;
  const saving = makeGraph(body.inputs, body.ops, [...body.outputs, ...kept], body.inputNames, outNames);
  const residuals = kept.map((v) => new Value(v.type));
  return {
    op: makeOp("checkpoint", op.inputs, { ...op.params, body: saving }, [...op.outputs, ...residuals], op.loc),
    residuals,
  };
}

/**
 * checkpoint (JAX's remat): the backward pass reads from the forward only the op's operands and the residuals its
 * policy saved, through one optimization_barrier, recomputes the body's other ops from them and differentiates
 * that copy. The recomputed ops have other operands than the forward's (the barrier's results), so neither our
 * CSE nor XLA's can merge them back into the forward ops (which would keep every activation alive, as JAX notes
 * for jax.checkpoint). Saved ops are not recomputed: their copies stand for the barrier's results.
 */
function checkpointVjp(
  ctx: VjpCtx,
  op: Op<"checkpoint">,
  cts: readonly Ct[],
  needs: readonly boolean[],
): readonly Ct[] {
  const { e } = ctx;
  const { body } = op.params;
  const keep = savedOps(op);
  const kept = keep.flatMap((o) => o.outputs);
  const residuals = ctx.residuals ?? [];
  if (residuals.length !== kept.length) throw new Error("internal: checkpoint vjp without its saved values");
  const fromForward = [...op.inputs, ...residuals];
  const through = fromForward.length > 0 ? e.ops("optimization_barrier", fromForward, {}) : [];
  const env = new Map<Value, Value>();
  body.inputs.forEach((v, i) => {
    env.set(v, through[i]!);
  });
  kept.forEach((v, k) => {
    env.set(v, through[op.inputs.length + k]!);
  });
  const keepSet = new Set(keep);
  const given = new Set<AnyOp>();
  const ops = body.ops.map((o) => {
    const inputs = o.inputs.map((v) => env.get(v) ?? v);
    const params = mapSubgraphs(o, cloneGraph).params as never;
    if (keepSet.has(o)) {
      const copy = makeOp(
        o.name,
        inputs,
        params,
        o.outputs.map((v) => env.get(v)!),
        o.loc,
      );
      given.add(copy);
      return copy;
    }
    const outputs = o.outputs.map((v) => {
      const fresh = new Value(v.type);
      env.set(v, fresh);
      return fresh;
    });
    return makeOp(o.name, inputs, params, outputs, o.loc);
  });
  const ins = through.slice(0, op.inputs.length);
  const copy = makeGraph(
    ins,
    ops,
    body.outputs.map((v) => env.get(v) ?? v),
  );
  const seeds = new Map<Value, Value[]>();
  copy.outputs.forEach((v, j) => {
    const ct = cts[j];
    if (ct) addSeed(seeds, v, ct);
  });
  const grads = backprop(e.b, copy, new Set(ins.filter((_, i) => needs[i])), seeds, ins, given);
  return grads.map((g, i) => (needs[i] ? g : undefined));
}

/**
 * `g` with its top-level everythingSaveable checkpoints (or those `inline` picks) inlined: saving everything is
 * differentiating the body as if there were no checkpoint. The inlined ops define the checkpoint's own result values, so seeds and later ops
 * still find them.
 */
function inlineEverythingSaveable(
  g: Graph,
  inline = (o: Op<"checkpoint">): boolean => o.params.policy === "everythingSaveable",
): Graph {
  if (!g.ops.some((o) => o.name === "checkpoint" && inline(o))) return g;
  const b = new GraphBuilder();
  for (const op of g.ops) {
    if (op.name === "checkpoint" && inline(op))
      inlineInto(b, cloneGraph(op.params.body), op.inputs, op.outputs, op.loc);
    else b.push(op);
  }
  return makeGraph(g.inputs, b.build([]).ops, g.outputs, g.inputNames, g.outputNames);
}

/** Fan-out: a value used several times gets the sum of its uses' cotangents. */
function accumulate(e: Emitter, cts: Map<Value, Value>, v: Value, ct: Value): void {
  const prev = cts.get(v);
  cts.set(v, prev ? e.add(prev, ct) : ct);
}

/**
 * Copies `g`'s ops into `b` with `inputs` standing for g's inputs and fresh values elsewhere (nested graphs cloned),
 * and returns the values of g's outputs. `as` names values that must stand for the first outputs (a custom_vjp's
 * results, which later ops of the enclosing graph read): the op defining such an output defines that value
 * instead, or an identity convert copies it where the output is an input or repeats an earlier one.
 */
function inlineInto(
  b: GraphBuilder,
  g: Graph,
  inputs: readonly Value[],
  as: readonly Value[] = [],
  loc: SourceLoc | undefined = undefined,
): Value[] {
  const env = new Map<Value, Value>(g.inputs.map((v, i) => [v, inputs[i]!]));
  const claim = new Map<Value, Value>();
  as.forEach((target, i) => {
    const v = g.outputs[i]!;
    if (!env.has(v) && !claim.has(v)) claim.set(v, target);
  });
  for (const op of g.ops) {
    const outputs = op.outputs.map((v) => claim.get(v) ?? new Value(v.type));
    for (const [i, v] of op.outputs.entries()) env.set(v, outputs[i]!);
    b.push(
      makeOp(
        op.name,
        op.inputs.map((v) => env.get(v) ?? v),
        mapSubgraphs(op, cloneGraph).params as never,
        outputs,
        op.loc,
      ),
    );
  }
  return g.outputs.map((v, i) => {
    const target = as[i];
    const got = env.get(v)!;
    if (!target || got === target) return got;
    b.push(makeOp("convert", [got], { dtype: got.type.dtype }, [target], loc));
    return target;
  });
}

/**
 * custom_vjp: the user's bwd on (consts, the residuals fwd saved, the results' cotangents), inlined, so an outer
 * grad differentiates it like any code (JAX's higher-order rule for custom_vjp). The consts are values the
 * functions closed over; their cotangents are not computed, so a differentiated one is an error.
 */
function customVjpRule(
  ctx: VjpCtx,
  op: Op<"custom_vjp">,
  cts: readonly Ct[],
  needs: readonly boolean[],
): readonly Ct[] {
  const { bwd, numConsts: nc } = op.params;
  const closed = range(nc).find((k) => needs[k]);
  if (closed !== undefined) {
    throw new AutodiffError(
      "customVjp",
      `the function closes over a ${formatType(op.inputs[closed]!.type)} value that is being differentiated; pass it ` +
        "as an operand (customVjp(fn, ...)(x, it)) so that bwd returns its cotangent",
      op.loc,
    );
  }
  const residuals = ctx.residuals;
  if (!residuals) throw new Error("internal: custom_vjp vjp without residuals");
  const ctIn = op.outputs.map((o, i) => cts[i] ?? ctx.e.zeros(o.type));
  const outs = inlineInto(ctx.e.b, bwd, [...op.inputs.slice(0, nc), ...residuals, ...ctIn]);
  return [...range(nc).map(() => undefined), ...outs];
}

/**
 * cond: a cond over the branches' VJPs, on the same index (JAX's rule). Each backward branch recomputes its
 * forward branch from the operands and differentiates it, as the scan's backward body does, so the forward cond
 * saves nothing. Operands a branch does not use get zeros from it.
 */
function condVjp(ctx: VjpCtx, op: Op<"cond">, cts: readonly Ct[], needs: readonly boolean[]): readonly Ct[] {
  const operands = op.inputs.slice(1);
  const wantIdx = range(operands.length).filter((i) => needs[1 + i]);
  const ctIdx = range(op.outputs.length).filter((j) => cts[j] !== undefined);
  const branches = op.params.branches.map((original) => {
    const g = cloneGraph(original);
    const ctIn = ctIdx.map((j) => new Value(g.outputs[j]!.type));
    const seeds = new Map<Value, Value[]>();
    ctIdx.forEach((j, n) => {
      addSeed(seeds, g.outputs[j]!, ctIn[n]!);
    });
    const bb = new GraphBuilder();
    const wrt = wantIdx.map((i) => g.inputs[i]!);
    const grads = backprop(bb, g, new Set(wrt), seeds, wrt);
    return makeGraph([...g.inputs, ...ctIn], bb.build([]).ops, grads);
  });
  const outs = ctx.e.ops("cond", [op.inputs[0]!, ...operands, ...ctIdx.map((j) => cts[j]!)], {
    branches: Object.freeze(branches),
  });
  const result: Ct[] = op.inputs.map(() => undefined);
  wantIdx.forEach((i, n) => {
    result[1 + i] = outs[n];
  });
  return result;
}

/** The top-level checkpoint ops of a scan body whose policy saves something: the scan stacks those residuals. */
function savingCheckpoints(body: Graph): number[] {
  return range(body.ops.length).filter((k) => {
    const o = body.ops[k]!;
    return o.name === "checkpoint" && o.params.policy !== "everythingSaveable" && savedOps(o).length > 0;
  });
}

/**
 * The same scan with the carries entering each iteration appended to its ys, then the residuals the body's
 * checkpoint ops save (their policies', stacked per iteration, as JAX's scan saves a remat body's residuals), then
 * the body's own residuals (scanResiduals): the backward scan's inputs. The rest of what the body computes, and
 * what its checkpoint ops do not save, is recomputed by the backward scan.
 */
function saveCarries(
  op: Op<"scan">,
  needs: readonly boolean[],
  ctsPresent: readonly boolean[],
): { op: AnyOp; stacked: Value[] } {
  const { body: original, numConsts: nc, numCarry: nh, length } = op.params;
  const ops = [...original.ops];
  const kept: Value[] = [];
  for (const k of savingCheckpoints(original)) {
    const saving = forwardSaving(original.ops[k] as Op<"checkpoint">);
    ops[k] = saving.op;
    kept.push(...saving.residuals);
  }
  const own = scanResiduals(op, needs, ctsPresent);
  PLANS.set(op, own);
  const body = makeGraph(original.inputs, ops, original.outputs, original.inputNames, original.outputNames);
  const carriesIn = body.inputs.slice(nc, nc + nh);
  const extra = [...carriesIn, ...kept, ...own.map(([k, i]) => original.ops[k]!.outputs[i]!)];
  const outNames = body.outputNames ? [...body.outputNames, ...extra.map(() => "")] : undefined;
  const saving = makeGraph(body.inputs, body.ops, [...body.outputs, ...extra], body.inputNames, outNames);
  const stacked = extra.map((v) => new Value(stackedType(v.type, length)));
  return {
    op: makeOp("scan", op.inputs, { ...op.params, body: saving }, [...op.outputs, ...stacked], op.loc),
    stacked,
  };
}

/** A residual of a scan body: (index of the op in the body, index of its result). */
type ResidualRef = readonly [number, number];

/** The residuals saveCarries stacked for each differentiated scan op, read back by scanVjp. */
const PLANS = new WeakMap<AnyOp, readonly ResidualRef[]>();

/** Ops whose result is a view of their one operand: never saved for a scan's backward pass, the operand is. */
const VIEWS: ReadonlySet<string> = new Set(["checkpoint_name", "reshape", "broadcast_in_dim"]);

/** Every value an op reads, those its nested graphs' ops read included. */
function reads(op: AnyOp, into: Set<Value>): void {
  for (const v of op.inputs) into.add(v);
  for (const g of subgraphs(op)) {
    for (const o of g.ops) reads(o, into);
    for (const v of g.outputs) into.add(v);
  }
}

/**
 * The body values the forward scan saves for its backward scan, as JAX's scan does for a body without
 * jax.checkpoint: each result of a top-level op without nested graphs that depends on the carry (so differs per
 * iteration; what depends only on consts and xs is cheap to recompute, a weight's slice or cast) and that the
 * backward body reads outside the forward ops it could recompute (the VJPs' operands, a nested scan's or
 * checkpoint's inputs). Found by building the backward body once over the original body and reading it. The
 * forward ops that only fed saved values then die in the backward body: nothing is recomputed twice.
 */
function scanResiduals(op: Op<"scan">, needs: readonly boolean[], ctsPresent: readonly boolean[]): ResidualRef[] {
  const { body, numConsts: nc, numCarry: nh } = op.params;
  const dependent = new Set<Value>(body.inputs.slice(nc, nc + nh));
  const candidates = new Map<Value, number>();
  body.ops.forEach((o, k) => {
    if (!o.inputs.some((v) => dependent.has(v))) return;
    for (const v of o.outputs) dependent.add(v);
    if (subgraphs(o).length === 0) for (const v of o.outputs) candidates.set(v, k);
  });
  if (candidates.size === 0) return [];
  const built = scanBackwardBody(body, op, needs, ctsPresent, new Set());
  const plain = new Set(body.ops.filter((o) => subgraphs(o).length === 0));
  const live = new Set<Value>(built.outputs);
  const read = new Set<Value>();
  for (let k = built.ops.length - 1; k >= 0; k--) {
    const o = built.ops[k]!;
    if (!o.outputs.some((v) => live.has(v))) continue;
    const r = new Set<Value>();
    reads(o, r);
    for (const v of r) live.add(v);
    if (!plain.has(o)) for (const v of r) read.add(v);
  }
  const carryOut = new Set(body.outputs.slice(0, nh));
  const opsSaved = new Set<number>();
  const save = (v: Value): void => {
    const k = candidates.get(v);
    if (k === undefined || carryOut.has(v)) return;
    const o = body.ops[k]!;
    // A view of one value (a name, a reshape, a broadcast) is recomputed from it for free: saving both would
    // store the same numbers twice, a broadcast's many times.
    if (VIEWS.has(o.name)) save(o.inputs[0]!);
    else opsSaved.add(k);
  };
  for (const v of read) save(v);
  return [...opsSaved].sort((a, b) => a - b).flatMap((k) => body.ops[k]!.outputs.map((_, i) => [k, i] as const));
}

/** The backward scan's body (see scanVjp) with its ops and the values it returns, given ops left out. */
interface BackwardBody {
  ops: readonly AnyOp[];
  outputs: readonly Value[];
  /** Its inputs before the residuals: consts, carry cotangents, const accumulators, xs, saved carries, checkpoint residuals. */
  head: readonly Value[];
  /** Its last inputs, the ys' cotangents. */
  ctYIn: readonly Value[];
  hIdx: readonly number[];
  cIdx: readonly number[];
  xIdx: readonly number[];
  yIdx: readonly number[];
}

function scanBackwardBody(
  body: Graph,
  op: Op<"scan">,
  needs: readonly boolean[],
  ctsPresent: readonly boolean[],
  given: ReadonlySet<AnyOp>,
): BackwardBody {
  const { numConsts: nc, numCarry: nh } = op.params;
  const nx = op.inputs.length - nc - nh;
  const ny = body.outputs.length - nh;
  // The body's checkpoint ops read the residuals the forward scan stacked for them (sliced per iteration).
  const presaved = new Map<AnyOp, Value[]>();
  const ckptIn: Value[] = [];
  for (const k of savingCheckpoints(body)) {
    const o = body.ops[k]! as Op<"checkpoint">;
    const vals = savedOps(o)
      .flatMap((s) => s.outputs)
      .map((v) => new Value(v.type));
    presaved.set(o, vals);
    ckptIn.push(...vals);
  }
  const activeCarry = scanActivity(op, needs).carries;

  const hIdx = range(nh).filter((i) => activeCarry[i]);
  const cIdx = range(nc).filter((k) => needs[k]);
  const xIdx = range(nx).filter((j) => needs[nc + nh + j]);
  const yIdx = range(ny).filter((j) => ctsPresent[nh + j]);

  // Body of the backward scan: (consts; carry cotangents, const accumulators; xs, saved carries, residuals, y cotangents).
  const bodyConsts = body.inputs.slice(0, nc);
  const bodyCarries = body.inputs.slice(nc, nc + nh);
  const bodyXs = body.inputs.slice(nc + nh);
  const ctCarryIn = hIdx.map((i) => new Value(body.outputs[i]!.type));
  const accIn = cIdx.map((k) => new Value(body.inputs[k]!.type));
  const ctYIn = yIdx.map((j) => new Value(body.outputs[nh + j]!.type));

  const bb = new GraphBuilder();
  const seeds = new Map<Value, Value[]>();
  hIdx.forEach((i, n) => {
    addSeed(seeds, body.outputs[i]!, ctCarryIn[n]!);
  });
  yIdx.forEach((j, n) => {
    addSeed(seeds, body.outputs[nh + j]!, ctYIn[n]!);
  });
  const activeIn = new Set([
    ...hIdx.map((i) => bodyCarries[i]!),
    ...cIdx.map((k) => bodyConsts[k]!),
    ...xIdx.map((j) => bodyXs[j]!),
  ]);
  const want = [
    ...hIdx.map((i) => bodyCarries[i]!),
    ...cIdx.map((k) => bodyConsts[k]!),
    ...xIdx.map((j) => bodyXs[j]!),
  ];
  // A checkpoint that saves nothing is recomputed from its operands, which the backward body already is: its ops
  // run there as plain ones, without the barrier that keeps a recomputation apart from its forward copy (the
  // forward ran in the other loop).
  const plainBody = inlineEverythingSaveable(
    body,
    (o) => o.params.policy !== "everythingSaveable" && savedOps(o).length === 0,
  );
  const grads = backprop(bb, plainBody, activeIn, seeds, want, given, presaved);
  const be = new Emitter(bb, op.loc);
  const ctCarryOut = grads.slice(0, hIdx.length);
  const accOut = grads.slice(hIdx.length, hIdx.length + cIdx.length).map((g, n) => be.add(accIn[n]!, g));
  const ctXOut = grads.slice(hIdx.length + cIdx.length);
  return {
    ops: bb.build([]).ops,
    outputs: [...ctCarryOut, ...accOut, ...ctXOut],
    head: [...bodyConsts, ...ctCarryIn, ...accIn, ...bodyXs, ...bodyCarries, ...ckptIn],
    ctYIn,
    hIdx,
    cIdx,
    xIdx,
    yIdx,
  };
}

/**
 * scan: a scan running the other way over (xs, saved carries, ys' cotangents). Its body recomputes the
 * original body from the saved carry and differentiates it; carries are the carries' cotangents plus one
 * accumulator per differentiated const. Its ys are the xs' cotangents.
 */
function scanVjp(ctx: VjpCtx, op: Op<"scan">, cts: readonly Ct[], needs: readonly boolean[]): readonly Ct[] {
  const { e } = ctx;
  const { numConsts: nc, numCarry: nh, length, reverse } = op.params;
  // The backward body recomputes the forward body: a copy, since the primal scan keeps the original's values.
  // cloneGraph copies op for op, so the saved residuals are found in the copy by their indices.
  const body = cloneGraph(op.params.body);
  const residuals = ctx.residuals;
  if (!residuals) throw new Error("internal: scan vjp without saved carries");
  const own = PLANS.get(op) ?? [];
  const ownVals = own.map(([k, i]) => body.ops[k]!.outputs[i]!);
  const given = new Set(own.map(([k]) => body.ops[k]!));
  const bw = scanBackwardBody(
    body,
    op,
    needs,
    cts.map((c) => c !== undefined),
    given,
  );
  const { hIdx, cIdx, xIdx, yIdx } = bw;
  const nCkpt = bw.head.length - (nc + hIdx.length + cIdx.length + (op.inputs.length - nc - nh) + nh);
  if (residuals.length !== nh + nCkpt + ownVals.length) throw new Error("internal: scan vjp residual count");
  const backBody = makeGraph([...bw.head, ...ownVals, ...bw.ctYIn], bw.ops, bw.outputs);

  const outs = e.ops(
    "scan",
    [
      ...op.inputs.slice(0, nc),
      ...hIdx.map((i) => cts[i] ?? e.zeros(op.outputs[i]!.type)),
      ...cIdx.map((k) => e.zeros(op.inputs[k]!.type)),
      ...op.inputs.slice(nc + nh),
      ...residuals,
      ...yIdx.map((j) => cts[nh + j]!),
    ],
    { body: backBody, length, numConsts: nc, numCarry: hIdx.length + cIdx.length, reverse: !reverse },
  );
  const result: Ct[] = op.inputs.map(() => undefined);
  hIdx.forEach((i, n) => {
    result[nc + i] = outs[n];
  });
  cIdx.forEach((k, n) => {
    result[k] = outs[hIdx.length + n];
  });
  xIdx.forEach((j, n) => {
    result[nc + nh + j] = outs[hIdx.length + cIdx.length + n];
  });
  // Carries whose initial value is not differentiated still flowed above; their cotangents are dropped here.
  return result.map((ct, i) => (needs[i] ? ct : undefined));
}
