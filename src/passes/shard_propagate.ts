// Sharding propagation: from annotated values to every value through the ops' factor rules, then the collectives the partitioner will need.
import type { AnyOp, Graph, Value } from "../ir/graph.ts";
import { typeBytes } from "../ir/cost.ts";
import { formatType, tensorType, type SourceLoc, type TensorType } from "../ir/types.ts";
import { opFactors, type Factor, type OpFactors } from "../ir/sharding_rules.ts";
import { axisSize, checkSharding, localShape, sameSharding, type Mesh, type Sharding } from "../ir/sharding.ts";

/** Where an annotation came from: an argument or result spec of `jit`, or a `shard(x, spec)` call. */
export interface AnnotationSource {
  readonly kind: "in" | "out" | "shard";
  /** `base.layers.q`, `out[1]`, or the annotated value's type for `shard`. */
  readonly name: string;
  readonly loc?: SourceLoc;
}

/** A value whose sharding the user fixed. */
export interface Seed {
  readonly sharding: Sharding;
  /**
   * Per dimension, the user priority of its axes (0 first, default 0): priority-0 shardings spread through the whole
   * program before priority-1 ones start, so a weight sharded for memory (FSDP, priority 1) does not push its axis
   * onto activations that a priority-0 batch sharding already claimed.
   */
  readonly priorities?: readonly number[];
  readonly source: AnnotationSource;
}

/** Why a dimension holds its axes: the annotation, or the op and factor that carried them from another value. */
export interface DimOrigin {
  readonly annotation?: AnnotationSource;
  readonly op?: AnyOp;
  /** The factor rule: `dot_general contracting 0`, `scan carry`. */
  readonly rule?: string;
  readonly from?: Value;
  /** The annotation the axes first came from, however many ops they went through. */
  readonly root?: AnnotationSource;
  /** The user-priority round that set it. */
  readonly level: number;
}

export interface ValueSharding {
  readonly sharding: Sharding;
  /** Per dimension; undefined where no axis reached the dimension. */
  readonly why: readonly (DimOrigin | undefined)[];
  /** Set when an annotation fixed the whole value. */
  readonly annotation?: AnnotationSource;
}

export type CollectiveKind = "all-reduce" | "all-gather" | "reduce-scatter" | "all-to-all";

/** One collective the SPMD partitioner will insert. */
export interface Collective {
  readonly kind: CollectiveKind;
  /** Mesh axes whose devices take part (the replica groups). */
  readonly axes: readonly string[];
  readonly reduce?: "sum" | "max" | "min";
  /** The per-device buffer it produces (as XLA's instruction shape). */
  readonly type: TensorType;
  readonly bytes: number;
  /** The op that needs it, the value being moved, and whether it feeds the op (operand i) or leaves it. */
  readonly op: AnyOp;
  readonly value: Value;
  readonly role: string;
  readonly from: Sharding;
  readonly to: Sharding;
  /** Executions per step: the product of the trip counts of the scans around it. */
  readonly times: number;
  /** Whether it lies inside a scan body (XLA's HLO then holds it once, in the loop body). */
  readonly inLoop: boolean;
}

export interface ShardingPlan {
  readonly mesh: Mesh;
  readonly graph: Graph;
  /** Every value of the graph and of its scan bodies. */
  readonly values: ReadonlyMap<Value, ValueSharding>;
  readonly collectives: readonly Collective[];
  /** Per op whose operands must be moved first: the layout each such operand needs (undefined: as it is). */
  readonly operandShardings: ReadonlyMap<AnyOp, readonly (Sharding | undefined)[]>;
  /**
   * Op results computed in another layout than their own (summed over an axis the value is then split over): that
   * layout, which the emitter pins first, so the partitioner all-reduces there and then slices.
   */
  readonly computedShardings: ReadonlyMap<Value, Sharding>;
}

export interface PlanOptions {
  /**
   * Whether the backend has a native reduce-scatter. XLA's CPU pipeline keeps what the partitioner emits, an
   * all-reduce followed by a local slice (default false); XLA's GPU pipeline turns that into a reduce-scatter.
   */
  readonly reduceScatter?: boolean;
}

// ---- internal state -------------------------------------------------------------------------------------------

interface VState {
  readonly value: Value;
  axes: string[][];
  /** Per dim: the priority of its axes (Infinity while unset). */
  prio: number[];
  why: (DimOrigin | undefined)[];
  /** Per dim: set by an op that uses the value (backward) rather than by its producer or an annotation. */
  fromUser: boolean[];
  fixed: boolean;
  annotation?: AnnotationSource;
}

/**
 * What propagation walks: a real op with its factor rule, or a tie that makes values equal (a scan's operands with
 * its body's inputs, body outputs with results). `dims[t][d]` lists the factors of dimension d of tensor t.
 */
interface Node {
  readonly op: AnyOp;
  readonly tie?: "const" | "carry" | "xs" | "ys";
  /** For a tie: the scan operand it starts from (const, carry, xs), to reshard before the loop. */
  readonly operandIndex?: number;
  readonly tensors: readonly Value[];
  readonly numOperands: number;
  readonly factors: readonly Factor[];
  readonly dims: readonly (readonly (readonly number[])[])[];
  /** Trip count product of the scans around the node. */
  readonly times: number;
  readonly inLoop: boolean;
}

const prod = (xs: readonly number[]) => xs.reduce((a, b) => a * b, 1);

function buildNodes(g: Graph, times: number, inLoop: boolean, out: Node[]): void {
  for (const op of g.ops) {
    if (op.name !== "scan") {
      const f: OpFactors = opFactors(op);
      out.push({
        op,
        tensors: [...op.inputs, ...op.outputs],
        numOperands: op.inputs.length,
        factors: f.factors,
        dims: [...f.operands, ...f.results],
        times,
        inLoop,
      });
      continue;
    }
    const { body, numConsts, numCarry, length } = op.params;
    const tie = (
      kind: NonNullable<Node["tie"]>,
      tensors: Value[],
      stacked: boolean[],
      operandIndex: number | undefined,
      t: number,
      loop: boolean,
    ): Node => {
      // Aligned factors over the unstacked dims; a stacked tensor's axis 0 is its own replicated factor.
      const base = tensors.find((_, i) => !stacked[i])!.type.shape;
      const factors: Factor[] = base.map((n, d) => ({
        size: n,
        kind: "pass" as const,
        label: `scan ${kind} dim ${d}`,
      }));
      const dims = tensors.map((v, i) => {
        const own = base.map((n, d) => (n > 1 ? [d] : []));
        if (!stacked[i]) return own;
        factors.push({ size: v.type.shape[0]!, kind: "replicate", label: `scan ${kind} stacked axis` });
        return [v.type.shape[0]! > 1 ? [factors.length - 1] : [], ...own];
      });
      return {
        op,
        tie: kind,
        tensors,
        numOperands: 1,
        factors,
        dims,
        times: t,
        inLoop: loop,
        ...(operandIndex !== undefined ? { operandIndex } : {}),
      };
    };
    const bodyIn = body.inputs,
      bodyOut = body.outputs;
    for (let k = 0; k < numConsts; k++)
      out.push(tie("const", [op.inputs[k]!, bodyIn[k]!], [false, false], k, times, inLoop));
    for (let k = 0; k < numCarry; k++) {
      const i = numConsts + k;
      out.push(
        tie(
          "carry",
          [op.inputs[i]!, bodyIn[i]!, bodyOut[k]!, op.outputs[k]!],
          [false, false, false, false],
          i,
          times,
          inLoop,
        ),
      );
    }
    op.inputs.slice(numConsts + numCarry).forEach((x, k) => {
      const i = numConsts + numCarry + k;
      out.push(tie("xs", [x, bodyIn[i]!], [true, false], i, times, inLoop));
    });
    buildNodes(body, times * length, true, out);
    op.outputs.slice(numCarry).forEach((y, k) => {
      out.push(tie("ys", [bodyOut[numCarry + k]!, y], [false, true], undefined, times, inLoop));
    });
  }
}

/** Splits a dimension's axes among its factors (major to minor), as far as they divide the factor sizes. */
function project(
  axes: readonly string[],
  factorIds: readonly number[],
  factors: readonly Factor[],
  mesh: Mesh,
): Map<number, string[]> {
  const out = new Map<number, string[]>();
  let k = 0;
  for (const f of factorIds) {
    const size = factors[f]!.size;
    const mine: string[] = [];
    let n = 1;
    while (k < axes.length && size % (n * axisSize(mesh, axes[k]!)) === 0) {
      n *= axisSize(mesh, axes[k]!);
      mine.push(axes[k]!);
      k++;
    }
    out.set(f, mine);
    if (n < size) break; // a factor not cut all the way: the next factor's piece is not a block of this dim
  }
  return out;
}

/** A dimension's axes from its factors' axes: concatenated while each factor is cut all the way. */
function compose(
  factorIds: readonly number[],
  chosen: ReadonlyMap<number, readonly string[]>,
  factors: readonly Factor[],
  mesh: Mesh,
): string[] {
  const axes: string[] = [];
  for (const f of factorIds) {
    const a = chosen.get(f) ?? [];
    axes.push(...a);
    if (prod(a.map((x) => axisSize(mesh, x))) < factors[f]!.size) break;
  }
  return axes;
}

interface Candidate {
  axes: string[];
  prio: number;
  bytes: number;
  order: number;
  from: Value;
  /** The dimension of `from` the axes were read from. */
  dim: number;
}

/** The stated conflict rule: lowest priority number, then the largest tensor, then the first; compatible longer candidates extend it. */
function choose(cands: Candidate[]): Candidate | undefined {
  if (cands.length === 0) return undefined;
  const sorted = [...cands].sort((a, b) => a.prio - b.prio || b.bytes - a.bytes || a.order - b.order);
  let best = sorted[0]!;
  for (const c of sorted.slice(1)) {
    if (c.prio <= best.prio && c.axes.length > best.axes.length && best.axes.every((a, i) => c.axes[i] === a))
      best = { ...c, prio: best.prio };
  }
  return best;
}

class Propagator {
  readonly states = new Map<Value, VState>();
  readonly nodes: Node[] = [];

  constructor(
    readonly g: Graph,
    readonly mesh: Mesh,
    seeds: ReadonlyMap<Value, Seed>,
  ) {
    buildNodes(g, 1, false, this.nodes);
    for (const [v, seed] of seeds) {
      checkSharding(v.type, seed.sharding, mesh, describeSource(seed.source), seed.source.loc);
      const st = this.state(v);
      // An axis of size 1 splits nothing: dropped, so that it never shows up as a collective.
      st.axes = seed.sharding.dims.map((d) => d.filter((a) => axisSize(mesh, a) > 1));
      st.prio = seed.sharding.dims.map((_, d) => seed.priorities?.[d] ?? 0);
      st.why = seed.sharding.dims.map((d, i) =>
        d.length ? { annotation: seed.source, level: seed.priorities?.[i] ?? 0 } : undefined,
      );
      st.fixed = true;
      st.annotation = seed.source;
    }
    // Arguments nobody annotated are whole on every device, as in JAX.
    for (const v of g.inputs) {
      const st = this.state(v);
      if (!st.annotation) st.fixed = true;
    }
  }

  state(v: Value): VState {
    let st = this.states.get(v);
    if (!st) {
      const rank = v.type.shape.length;
      st = {
        value: v,
        axes: Array.from({ length: rank }, () => []),
        prio: Array(rank).fill(Infinity),
        why: Array(rank).fill(undefined),
        fromUser: Array(rank).fill(false),
        fixed: false,
      };
      this.states.set(v, st);
    }
    return st;
  }

  run(): void {
    const levels = new Set<number>([0]);
    for (const st of this.states.values()) for (const p of st.prio) if (Number.isFinite(p)) levels.add(p);
    for (const level of [...levels].sort((a, b) => a - b)) {
      for (let changed = true; changed; ) {
        changed = false;
        for (const n of this.nodes) changed = this.step(n, level) || changed;
        for (let i = this.nodes.length - 1; i >= 0; i--) changed = this.step(this.nodes[i]!, level) || changed;
      }
    }
  }

  /** One node at one priority level: choose each factor's axes from its tensors, write them into unset dims. */
  step(n: Node, level: number): boolean {
    const chosen = new Map<number, Candidate>();
    n.factors.forEach((f, fi) => {
      if (f.kind === "replicate") return;
      // A pinned result (an out spec, a shard() call) decides its factors for the op: the op computes it in place.
      if (!n.tie) {
        for (let t = n.numOperands; t < n.tensors.length; t++) {
          const st = this.state(n.tensors[t]!);
          if (!st.fixed) continue;
          const d = n.dims[t]!.findIndex((fs) => fs.includes(fi));
          if (d < 0) continue;
          const axes = project(st.axes[d]!, n.dims[t]![d]!, n.factors, this.mesh).get(fi) ?? [];
          if (axes.length && st.prio[d]! <= level)
            chosen.set(fi, {
              axes,
              prio: st.prio[d]!,
              bytes: typeBytes(st.value.type),
              order: t,
              from: st.value,
              dim: d,
            });
          return;
        }
      }
      const cands: Candidate[] = [];
      n.tensors.forEach((v, t) => {
        const st = this.state(v);
        n.dims[t]!.forEach((fs, d) => {
          if (!fs.includes(fi) || st.axes[d]!.length === 0 || st.prio[d]! > level) return;
          // A layout one user gave an operand does not spread to the operand's other users (only back to its producer).
          if (!n.tie && t < n.numOperands && st.fromUser[d]) return;
          const axes = project(st.axes[d]!, fs, n.factors, this.mesh).get(fi);
          if (axes?.length)
            cands.push({ axes, prio: st.prio[d]!, bytes: typeBytes(v.type), order: t, from: v, dim: d });
        });
      });
      const c = choose(cands);
      if (c) chosen.set(fi, c);
    });
    if (chosen.size === 0) return false;
    // One mesh axis splits at most one factor of an op: higher-priority, bigger-tensor factors keep it.
    const used = new Set<string>();
    const ordered = [...chosen].sort(([fa, a], [fb, b]) => a.prio - b.prio || b.bytes - a.bytes || fa - fb);
    const axesOf = new Map<number, string[]>();
    for (const [fi, c] of ordered) {
      const k = c.axes.findIndex((a) => used.has(a));
      const axes = k < 0 ? c.axes : c.axes.slice(0, k);
      axes.forEach((a) => {
        used.add(a);
      });
      if (axes.length) axesOf.set(fi, axes);
    }
    let changed = false;
    n.tensors.forEach((v, t) => {
      const st = this.state(v);
      if (st.fixed) return;
      n.dims[t]!.forEach((fs, d) => {
        if (st.axes[d]!.length || fs.length === 0) return;
        let axes = compose(fs, axesOf, n.factors, this.mesh);
        const taken = new Set(st.axes.flat());
        const k = axes.findIndex((a) => taken.has(a));
        if (k >= 0) axes = axes.slice(0, k);
        if (!axes.length) return;
        const src = chosen.get(fs.find((f) => axesOf.has(f))!)!;
        if (src.from === v) return;
        st.axes[d] = axes;
        st.prio[d] = src.prio;
        const label = n.tie ? `scan ${n.tie}` : `${n.op.name} ${n.factors[fs.find((f) => axesOf.has(f))!]!.label}`;
        const srcWhy = this.state(src.from).why[src.dim];
        const root = srcWhy?.annotation ?? srcWhy?.root;
        st.why[d] = { op: n.op, rule: label, from: src.from, level, ...(root ? { root } : {}) };
        st.fromUser[d] = !n.tie && t < n.numOperands;
        changed = true;
      });
    });
    return changed;
  }
}

export function describeSource(s: AnnotationSource): string {
  switch (s.kind) {
    case "in":
      return `argument ${s.name}`;
    case "out":
      return `result ${s.name}`;
    case "shard":
      return `shard() of ${s.name}`;
  }
}

// ---- collectives ----------------------------------------------------------------------------------------------

interface Move {
  kind: CollectiveKind;
  axes: string[];
  reduce?: "sum" | "max" | "min";
  type: TensorType;
}

/**
 * The collectives that turn a value laid out as `from` (possibly partial) into `to`: partial axes are all-reduced
 * (reduce-scattered where `to` splits a dimension over them); per dimension, axes beyond the common prefix are
 * all-gathered, or exchanged by an all-to-all when `to` splits another dimension over them; axes only `to` has are
 * a local slice, free.
 */
export function reshard(
  type: TensorType,
  from: Sharding,
  to: Sharding,
  mesh: Mesh,
  reduce: "sum" | "max" | "min" = "sum",
  reduceScatter = false,
): Move[] {
  const moves: Move[] = [];
  const local = (s: Sharding) => tensorType(type.dtype, localShape(type.shape, s, mesh));
  const toAxes = new Set(to.dims.flat());
  const partial = from.partial ?? [];
  let cur: Sharding = { dims: from.dims.map((d) => [...d]) };
  // Without a native reduce-scatter, summing into a split dim is an all-reduce and then a local slice.
  const scatter = reduceScatter ? partial.filter((a) => toAxes.has(a) && !from.dims.flat().includes(a)) : [];
  const allReduce = partial.filter((a) => !scatter.includes(a));
  if (allReduce.length) moves.push({ kind: "all-reduce", axes: allReduce, reduce, type: local(cur) });
  if (scatter.length) {
    const dims = cur.dims.map((d, i) => [...d, ...to.dims[i]!.filter((a) => scatter.includes(a))]);
    cur = { dims };
    moves.push({ kind: "reduce-scatter", axes: scatter, reduce, type: local(cur) });
  }
  for (let d = 0; d < type.shape.length; d++) {
    const a = cur.dims[d]!,
      b = to.dims[d]!;
    let c = 0;
    while (c < a.length && c < b.length && a[c] === b[c]) c++;
    const extra = a.slice(c);
    if (!extra.length) continue;
    const moved = extra.filter((x) => to.dims.some((e, i) => i !== d && e.includes(x) && !cur.dims[i]!.includes(x)));
    const gathered = extra.filter((x) => !moved.includes(x));
    if (moved.length) {
      moves.push({ kind: "all-to-all", axes: moved, type: local(cur) });
      const dims = cur.dims.map((e, i) =>
        i === d
          ? e.filter((x) => !moved.includes(x))
          : [...e, ...to.dims[i]!.filter((x) => moved.includes(x) && !e.includes(x))],
      );
      cur = { dims };
    }
    if (gathered.length) {
      const dims = cur.dims.map((e, i) => (i === d ? e.slice(0, c) : e));
      cur = { dims };
      moves.push({ kind: "all-gather", axes: gathered, type: local(cur) });
    }
  }
  return moves;
}

class Planner {
  readonly collectives: Collective[] = [];
  readonly operandShardings = new Map<AnyOp, (Sharding | undefined)[]>();
  readonly computedShardings = new Map<Value, Sharding>();
  private readonly seen = new Set<string>();

  constructor(
    readonly mesh: Mesh,
    readonly sharding: (v: Value) => Sharding,
    readonly prioOf: (v: Value, d: number) => number,
    readonly reduceScatter: boolean,
  ) {}

  private want(op: AnyOp, i: number, s: Sharding): void {
    let list = this.operandShardings.get(op);
    if (!list) {
      list = op.inputs.map(() => undefined);
      this.operandShardings.set(op, list);
    }
    list[i] = s;
  }

  private emit(
    n: Node,
    value: Value,
    role: string,
    from: Sharding,
    to: Sharding,
    reduce?: "sum" | "max" | "min",
    times = n.times,
  ): void {
    const key = `${role === "result" ? "r" : "o"}|${formatType(value.type)}|${JSON.stringify(from)}|${JSON.stringify(to)}`;
    // The same value moved the same way twice is one collective: XLA's CSE merges them.
    const id = `${key}|${ids(value)}`;
    if (this.seen.has(id)) return;
    this.seen.add(id);
    for (const m of reshard(value.type, from, to, this.mesh, reduce, this.reduceScatter)) {
      this.collectives.push({
        ...m,
        bytes: typeBytes(m.type),
        op: n.op,
        value,
        role,
        from,
        to,
        times,
        inLoop: n.inLoop || times > 1,
      });
    }
  }

  node(n: Node): void {
    if (n.tie) {
      this.tie(n);
      return;
    }
    const ops = n.tensors.slice(0, n.numOperands),
      res = n.tensors.slice(n.numOperands);
    const F = n.factors;
    const working = new Map<number, string[]>();
    const fromResult = new Set<number>();
    // Factors a result has are laid out as that result is (its sharding is pinned in the emitted module).
    res.forEach((v, r) => {
      const s = this.sharding(v);
      n.dims[n.numOperands + r]!.forEach((fs, d) => {
        const split = project(s.dims[d]!, fs, F, this.mesh);
        for (const f of fs) {
          if (working.has(f)) continue;
          working.set(f, split.get(f) ?? []);
          fromResult.add(f);
        }
      });
    });
    // Axes the operands already spend on the result's factors: a reduction cannot have them too.
    const spent = new Set<string>();
    ops.forEach((v, t) => {
      const s = this.sharding(v);
      n.dims[t]!.forEach((fs, d) => {
        for (const [f, axes] of project(s.dims[d]!, fs, F, this.mesh))
          if (fromResult.has(f))
            axes.forEach((a) => {
              spent.add(a);
            });
      });
    });
    // The others (contracting, reduced, looked-up dims) as the operands have them, by the conflict rule.
    const rest: [number, Candidate][] = [];
    F.forEach((f, fi) => {
      if (working.has(fi) || f.kind === "replicate") return;
      const cands: Candidate[] = [];
      ops.forEach((v, t) => {
        const s = this.sharding(v);
        n.dims[t]!.forEach((fs, d) => {
          if (!fs.includes(fi)) return;
          const axes = project(s.dims[d]!, fs, F, this.mesh).get(fi);
          if (axes?.length)
            cands.push({ axes, prio: this.prioOf(v, d), bytes: typeBytes(v.type), order: t, from: v, dim: d });
        });
      });
      const c = choose(cands);
      if (c) rest.push([fi, c]);
    });
    const used = new Set([...fromResult].flatMap((f) => working.get(f) ?? []));
    const scattered = new Set<string>();
    rest.sort(([fa, a], [fb, b]) => a.prio - b.prio || b.bytes - a.bytes || fa - fb);
    const restUsed = new Set<string>();
    for (const [fi, c] of rest) {
      const isReduction = F[fi]!.kind === "reduction";
      // A reduction may sum over an axis the result splits another dim over (then reduce-scatter into it), unless
      // an operand already splits a result dim over that axis (then the other operand is gathered instead).
      const k = c.axes.findIndex((a) => restUsed.has(a) || (used.has(a) && (!isReduction || spent.has(a))));
      const axes = k < 0 ? c.axes : c.axes.slice(0, k);
      axes.forEach((a) => {
        restUsed.add(a);
        if (used.has(a)) scattered.add(a); // summed over here, then scattered into the result's dim
      });
      working.set(fi, axes);
    }
    const eff = new Map<number, string[]>();
    for (const [f, axes] of working) eff.set(f, fromResult.has(f) ? axes.filter((a) => !scattered.has(a)) : axes);
    ops.forEach((v, t) => {
      const want: Sharding = { dims: n.dims[t]!.map((fs) => compose(fs, eff, F, this.mesh)) };
      if (sameSharding(this.sharding(v), want)) return;
      this.want(n.op, t, want);
      this.emit(n, v, `operand ${t}`, this.sharding(v), want);
    });
    const partial = [...eff].filter(([f, a]) => F[f]!.kind === "reduction" && a.length).flatMap(([, a]) => a);
    const reduce = [...eff].find(([f, a]) => F[f]!.kind === "reduction" && a.length)?.[0];
    res.forEach((v, r) => {
      const local: Sharding = {
        dims: n.dims[n.numOperands + r]!.map((fs) => compose(fs, eff, F, this.mesh)),
        ...(partial.length ? { partial } : {}),
      };
      const target = this.sharding(v);
      if (sameSharding(local, target)) return;
      const reduced: Sharding = { dims: local.dims };
      if (!this.reduceScatter && !sameSharding(reduced, target)) this.computedShardings.set(v, reduced);
      this.emit(n, v, "result", local, target, reduce === undefined ? undefined : F[reduce]!.reduce);
    });
  }

  /** Tied values should agree; where they do not, operands move to the body's layout and results away from it. */
  private tie(n: Node): void {
    const canonIdx = n.tie === "ys" ? 0 : 1;
    const canon = n.tensors[canonIdx]!;
    const cs = this.sharding(canon);
    const align = (stacked: boolean): Sharding => (stacked ? { dims: [[], ...cs.dims] } : cs);
    n.tensors.forEach((v, t) => {
      if (t === canonIdx) return;
      const stacked = (n.tie === "xs" && t === 0) || (n.tie === "ys" && t === 1);
      const want = align(stacked);
      const have = this.sharding(v);
      if (sameSharding(have, want)) return;
      const intoLoop = t === 0 || (n.tie === "carry" && t === 2);
      const times = n.tie === "carry" && t === 2 ? n.times * (n.op.params as { length: number }).length : n.times;
      if (t === 0 && n.operandIndex !== undefined) this.want(n.op, n.operandIndex, want);
      if (intoLoop)
        this.emit(n, v, n.tie === "carry" && t === 2 ? "scan carry out" : "scan operand", have, want, undefined, times);
      else this.emit(n, v, "scan result", want, have, undefined, times);
    });
  }
}

// Stable ids for dedupe keys (values are compared by identity).
const idMap = new WeakMap<Value, number>();
let nextId = 0;
function ids(v: Value): number {
  let i = idMap.get(v);
  if (i === undefined) {
    i = nextId++;
    idMap.set(v, i);
  }
  return i;
}

/**
 * Gives every value of `g` (scan bodies included) a sharding over `mesh`. Seeds (annotations) are fixed; unannotated
 * arguments are replicated; everything else gets its axes from its neighbours through the ops' factor rules
 * (sharding_rules.ts), in this fixed order: user priority levels 0, 1, ... each to a fixed point; within a level,
 * sweeps over the ops in program order, then in reverse, until nothing changes. A dimension, once given axes, keeps
 * them. Conflicts (two neighbours proposing different axes for one factor) go to the lower priority number, then the
 * larger tensor, then the earlier operand; a mesh axis splits at most one factor of an op. Then, for each op, the
 * collectives XLA's SPMD partitioner needs when every value is pinned to its sharding.
 */
export function propagateShardings(
  g: Graph,
  mesh: Mesh,
  seeds: ReadonlyMap<Value, Seed>,
  opts: PlanOptions = {},
): ShardingPlan {
  const p = new Propagator(g, mesh, seeds);
  p.run();
  const values = new Map<Value, ValueSharding>();
  const shardingOf = (v: Value): Sharding => ({ dims: p.state(v).axes.map((d) => [...d]) });
  const visit = (graph: Graph) => {
    const all = [...graph.inputs, ...graph.ops.flatMap((op) => op.outputs)];
    for (const v of all) {
      const st = p.state(v);
      values.set(
        v,
        Object.freeze({
          sharding: shardingOf(v),
          why: [...st.why],
          ...(st.annotation ? { annotation: st.annotation } : {}),
        }),
      );
    }
    for (const op of graph.ops) if (op.name === "scan") visit(op.params.body);
  };
  visit(g);
  const planner = new Planner(
    mesh,
    (v) => values.get(v)?.sharding ?? shardingOf(v),
    (v, d) => p.state(v).prio[d] ?? Infinity,
    opts.reduceScatter ?? false,
  );
  for (const n of p.nodes) planner.node(n);
  return Object.freeze({
    mesh,
    graph: g,
    values,
    collectives: planner.collectives,
    operandShardings: planner.operandShardings,
    computedShardings: planner.computedShardings,
  });
}

/** Totals per collective kind: instructions in the program (once per loop body), and bytes moved per step. */
export function collectiveSummary(
  plan: ShardingPlan,
): Map<CollectiveKind, { count: number; perStep: number; bytesPerStep: number }> {
  const out = new Map<CollectiveKind, { count: number; perStep: number; bytesPerStep: number }>();
  for (const c of plan.collectives) {
    const s = out.get(c.kind) ?? { count: 0, perStep: 0, bytesPerStep: 0 };
    s.count++;
    s.perStep += c.times;
    s.bytesPerStep += c.bytes * c.times;
    out.set(c.kind, s);
  }
  return out;
}
