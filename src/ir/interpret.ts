// Reference interpreter: runs a Graph on host arrays in float64 with one plain kernel per op; the numerical oracle.
//
// Numbers: every dtype is stored in a Float64Array; s32 as signed integers, u32 as 0..2^32-1, bool as 0/1, and
// floats already rounded to their dtype. Each kernel computes in float64 and rounds its results to the result dtype
// (f32 via Math.fround, bf16/f16 to nearest even). Ops that sum many terms (reduce_sum, dot_general, scatter_add)
// accumulate in float64 and round once at the end, so they are the exactly-rounded answer XLA approximates.
// Arrays are never mutated after a kernel returns them, so kernels may share storage (reshape, optimization_barrier).
import { EXIT, TesseraError } from "../errors.ts";
import type { Graph, Op, Value } from "./graph.ts";
import type { CompareDir, OpName } from "./ops.ts";
import { describeElementwise, forEachElementwise, maxOf, minOf, type ElementwiseOp } from "./elementwise.ts";
import { fmhaBackward, fmhaDims, fmhaForward } from "./cudnn_fmha.ts";
import { formatType, isFloat, numel, sameType, tensorType, type DType, type Shape, type TensorType } from "./types.ts";
import {
  bf16FromBits,
  bf16ToBits,
  f16FromBits,
  f16ToBits,
  f32FromBits,
  f32ToBits,
  roundBf16,
  roundF16,
} from "./float_bits.ts";

export interface HostArray {
  readonly type: TensorType;
  readonly data: Float64Array;
}

/** Thrown when the interpreter is given arguments that do not match the graph, or a graph it cannot run. */
export class InterpretError extends TesseraError {
  override name = "InterpretError";
  constructor(message: string) {
    // The interpreter is the numerical oracle, fed by our own tests and tools: a mismatch there is a bug.
    super(message, { code: "ERR_INTERPRET", exitCode: EXIT.internal });
  }
}

/** Rounds or wraps an exact result into `dtype`: float rounding, two's-complement wrap for s32, mod 2^32 for u32. */
export function fitToDType(dtype: DType): (x: number) => number {
  switch (dtype) {
    case "f32":
      return Math.fround;
    case "bf16":
      return roundBf16;
    case "f16":
      return roundF16;
    case "s32":
      return (x) => x | 0;
    case "u32":
      return (x) => x >>> 0;
    case "bool":
      return (x) => (x !== 0 ? 1 : 0);
  }
}

/** A host array of `dtype`/`shape` holding `values` (row-major) rounded or wrapped into the dtype. */
export function hostArray(dtype: DType, shape: Shape, values: ArrayLike<number>): HostArray {
  const n = numel(shape);
  if (values.length !== n)
    throw new InterpretError(`hostArray: ${values.length} values for ${dtype}[${shape.join(",")}] (${n} elements)`);
  const toDType = fitToDType(dtype);
  const data = new Float64Array(n);
  for (let i = 0; i < n; i++) data[i] = toDType(values[i]!);
  return { type: tensorType(dtype, shape), data };
}

// ---------------------------------------------------------------------------------------------------------------
// Index helpers: row-major strides and an odometer walk, so data movement ops are index arithmetic, not allocation.

function stridesOf(shape: Shape): number[] {
  const s = new Array<number>(shape.length);
  let acc = 1;
  for (let i = shape.length - 1; i >= 0; i--) {
    s[i] = acc;
    acc *= shape[i]!;
  }
  return s;
}

/** Calls fn(i, p) for every flat output index i of `shape`, p being `offset + sum(index[d] * strides[d])`. */
function walk(shape: Shape, offset: number, strides: readonly number[], fn: (i: number, p: number) => void): void {
  const n = numel(shape);
  const r = shape.length;
  const idx = new Array<number>(r).fill(0);
  let p = offset;
  for (let i = 0; i < n; i++) {
    fn(i, p);
    for (let d = r - 1; d >= 0; d--) {
      idx[d]!++;
      p += strides[d]!;
      if (idx[d]! < shape[d]!) break;
      p -= strides[d]! * shape[d]!;
      idx[d] = 0;
    }
  }
}

function stridedCopy(shape: Shape, src: Float64Array, offset: number, strides: readonly number[]): Float64Array {
  const out = new Float64Array(numel(shape));
  walk(shape, offset, strides, (i, p) => {
    out[i] = src[p]!;
  });
  return out;
}

function transposeData(x: HostArray, perm: readonly number[]): Float64Array {
  const st = stridesOf(x.type.shape);
  return stridedCopy(
    perm.map((p) => x.type.shape[p]!),
    x.data,
    0,
    perm.map((p) => st[p]!),
  );
}

function clamp(x: number, lo: number, hi: number): number {
  return x < lo ? lo : Math.min(x, hi);
}

// ---------------------------------------------------------------------------------------------------------------
// Kernels.

type Kernel<N extends OpName> = (op: Op<N>, args: readonly HostArray[]) => HostArray[];

function outType(op: Op, i = 0): TensorType {
  return op.outputs[i]!.type;
}

function result(type: TensorType, data: Float64Array): HostArray {
  const toDType = fitToDType(type.dtype);
  for (let i = 0; i < data.length; i++) data[i] = toDType(data[i]!);
  return { type, data };
}

function map1(op: Op, x: HostArray, f: (a: number) => number): HostArray[] {
  const out = new Float64Array(x.data.length);
  for (let i = 0; i < out.length; i++) out[i] = f(x.data[i]!);
  return [result(outType(op), out)];
}

function map2(op: Op, x: HostArray, y: HostArray, f: (a: number, b: number) => number): HostArray[] {
  const out = new Float64Array(x.data.length);
  for (let i = 0; i < out.length; i++) out[i] = f(x.data[i]!, y.data[i]!);
  return [result(outType(op), out)];
}

const isInt = (d: DType) => d === "s32" || d === "u32";

const COMPARE: Record<CompareDir, (a: number, b: number) => boolean> = {
  eq: (a, b) => a === b,
  ne: (a, b) => a !== b,
  lt: (a, b) => a < b,
  le: (a, b) => a <= b,
  gt: (a, b) => a > b,
  ge: (a, b) => a >= b,
};

const INT_RANGE: Record<"s32" | "u32", [number, number]> = {
  s32: [-(2 ** 31), 2 ** 31 - 1],
  u32: [0, 2 ** 32 - 1],
};

/** XLA's convert: float -> int truncates toward zero and saturates (NaN -> 0); anything -> bool is x != 0. */
function convertValue(from: DType, to: DType): (x: number) => number {
  if (to === "bool") return (x) => (x !== 0 ? 1 : 0);
  if ((to === "s32" || to === "u32") && !isInt(from) && from !== "bool") {
    const [lo, hi] = INT_RANGE[to];
    return (x) => (Number.isNaN(x) ? 0 : clamp(Math.trunc(x), lo, hi));
  }
  return (x) => x; // int->int wraps and anything->float rounds in `result`
}

function toBits(d: DType): (x: number) => number {
  switch (d) {
    case "f32":
      return f32ToBits;
    case "bf16":
      return bf16ToBits;
    case "f16":
      return f16ToBits;
    case "s32":
    case "u32":
      return (x) => x >>> 0;
    case "bool":
      return (x) => x;
  }
}

function fromBits(d: DType): (b: number) => number {
  switch (d) {
    case "f32":
      return f32FromBits;
    case "bf16":
      return bf16FromBits;
    case "f16":
      return f16FromBits;
    case "s32":
      return (b) => b | 0;
    case "u32":
      return (b) => b >>> 0;
    case "bool":
      return (b) => (b !== 0 ? 1 : 0);
  }
}

/** StableHLO's TOTALORDER for floats (-0 < +0, NaN after +inf; the interpreter's NaNs are positive). */
function totalOrder(d: DType): (a: number, b: number) => number {
  if (!isFloat(d)) return (a, b) => a - b;
  return (a, b) => {
    const an = Number.isNaN(a),
      bn = Number.isNaN(b);
    if (an || bn) return an === bn ? 0 : an ? 1 : -1;
    if (a === b) return a === 0 ? (Object.is(b, -0) ? 1 : 0) - (Object.is(a, -0) ? 1 : 0) : 0;
    return a < b ? -1 : 1;
  };
}

type ReduceOp = "reduce_sum" | "reduce_max" | "reduce_min";

function reduceKernel<N extends ReduceOp>(
  init: (d: DType) => number,
  step: (acc: number, x: number) => number,
): Kernel<N> {
  return (op, [x]) => {
    const shape = x!.type.shape;
    const axes = op.params.axes;
    const kept = shape.map((_, i) => i).filter((i) => !axes.includes(i));
    const data = transposeData(x!, [...kept, ...axes]);
    const groupSize = numel(axes.map((a) => shape[a]!));
    const out = new Float64Array(numel(kept.map((k) => shape[k]!)));
    const start = init(x!.type.dtype);
    for (let o = 0; o < out.length; o++) {
      let acc = start;
      for (let j = o * groupSize, end = j + groupSize; j < end; j++) acc = step(acc, data[j]!);
      out[o] = acc;
    }
    return [result(outType(op), out)];
  };
}

/** An element-wise op's kernel from its descriptor, the int or bool variant chosen by the operand dtype. */
function elementwise(name: ElementwiseOp): Kernel<ElementwiseOp> {
  const d = describeElementwise(name);
  const pick = (dt: DType) => (isInt(dt) ? d.int : dt === "bool" ? d.bool : undefined) ?? d.kernel;
  if (d.arity === 1) return (op, [x]) => map1(op, x!, pick(x!.type.dtype) as (a: number) => number);
  return (op, [x, y]) => map2(op, x!, y!, pick(x!.type.dtype));
}

/** dims of a cuDNN attention op's q, k, v (checked by its type rule). */
function fmhaOf(op: Op): Exclude<ReturnType<typeof fmhaDims>, string> {
  const d = fmhaDims(op.inputs[0]!.type, op.inputs[1]!.type, op.inputs[2]!.type);
  if (typeof d === "string") throw new InterpretError(`${op.name}: ${d}`);
  return d;
}

/** A result array rounded into the op's i-th result type. */
function rounded(op: Op, i: number, values: Float64Array): HostArray {
  return hostArray(outType(op, i).dtype, outType(op, i).shape, values);
}

const KERNELS: { [N in OpName]: Kernel<N> } = {
  ...forEachElementwise(elementwise),

  compare: (op, [x, y]) => {
    const f = COMPARE[op.params.dir];
    return map2(op, x!, y!, (a, b) => (f(a, b) ? 1 : 0));
  },
  select: (op, [p, x, y]) => {
    const out = new Float64Array(x!.data.length);
    for (let i = 0; i < out.length; i++) out[i] = p!.data[i] ? x!.data[i]! : y!.data[i]!;
    return [{ type: outType(op), data: out }];
  },
  convert: (op, [x]) => map1(op, x!, convertValue(x!.type.dtype, op.params.dtype)),
  bitcast_convert: (op, [x]) => {
    const to = toBits(x!.type.dtype);
    const from = fromBits(op.params.dtype);
    return map1(op, x!, (a) => from(to(a)));
  },

  constant: (op) => {
    const t = outType(op);
    const v = op.params.value;
    const out = new Float64Array(numel(t.shape));
    if (v.length === 1) out.fill(v[0]!);
    else out.set(v);
    return [result(t, out)];
  },
  iota: (op) => {
    const t = outType(op);
    const dim = op.params.dim;
    const out = new Float64Array(numel(t.shape));
    const st = stridesOf(t.shape);
    for (let i = 0; i < out.length; i++) out[i] = Math.floor(i / st[dim]!) % t.shape[dim]!;
    return [result(t, out)];
  },

  broadcast_in_dim: (op, [x]) => {
    const t = outType(op);
    const xs = x!.type.shape;
    const xst = stridesOf(xs);
    const strides = t.shape.map(() => 0);
    op.params.dims.forEach((d, i) => {
      if (xs[i] !== 1) strides[d] = xst[i]!;
    });
    return [{ type: t, data: stridedCopy(t.shape, x!.data, 0, strides) }];
  },
  reshape: (op, [x]) => [{ type: outType(op), data: x!.data }],
  transpose: (op, [x]) => [{ type: outType(op), data: transposeData(x!, op.params.perm) }],
  slice: (op, [x]) => {
    const { start, stride } = op.params;
    const st = stridesOf(x!.type.shape);
    const offset = start.reduce((acc, s, i) => acc + s * st[i]!, 0);
    const t = outType(op);
    return [
      {
        type: t,
        data: stridedCopy(
          t.shape,
          x!.data,
          offset,
          st.map((s, i) => s * stride[i]!),
        ),
      },
    ];
  },
  concatenate: (op, args) => {
    const t = outType(op);
    const axis = op.params.axis;
    const outer = numel(t.shape.slice(0, axis));
    const inner = numel(t.shape.slice(axis + 1));
    const out = new Float64Array(numel(t.shape));
    let pos = 0;
    for (let o = 0; o < outer; o++) {
      for (const a of args) {
        const chunk = a.type.shape[axis]! * inner;
        out.set(a.data.subarray(o * chunk, (o + 1) * chunk), pos);
        pos += chunk;
      }
    }
    return [{ type: t, data: out }];
  },
  pad: (op, [x, v]) => {
    const t = outType(op);
    const { low, interior } = op.params;
    const xs = x!.type.shape;
    const r = xs.length;
    const ost = stridesOf(t.shape);
    const out = new Float64Array(numel(t.shape)).fill(v!.data[0]!);
    // Walk the operand and place each element; negative low/high crop, so positions outside the result are dropped.
    const idx = new Array<number>(r).fill(0);
    for (let i = 0; i < x!.data.length; i++) {
      let p = 0;
      let inside = true;
      for (let d = 0; d < r; d++) {
        const q = low[d]! + idx[d]! * (interior[d]! + 1);
        if (q < 0 || q >= t.shape[d]!) {
          inside = false;
          break;
        }
        p += q * ost[d]!;
      }
      if (inside) out[p] = x!.data[i]!;
      for (let d = r - 1; d >= 0; d--) {
        if (++idx[d]! < xs[d]!) break;
        idx[d] = 0;
      }
    }
    return [{ type: t, data: out }];
  },

  reduce_sum: reduceKernel(
    () => 0,
    (acc, x) => acc + x,
  ),
  reduce_max: reduceKernel((d) => (d === "s32" ? -(2 ** 31) : d === "u32" ? 0 : -Infinity), maxOf),
  reduce_min: reduceKernel((d) => (d === "s32" ? 2 ** 31 - 1 : d === "u32" ? 2 ** 32 - 1 : Infinity), minOf),

  dot_general: (op, [x, y]) => {
    const { lhsBatch, rhsBatch, lhsContract, rhsContract } = op.params;
    const xs = x!.type.shape;
    const ys = y!.type.shape;
    const lhsFree = xs.map((_, i) => i).filter((i) => !lhsBatch.includes(i) && !lhsContract.includes(i));
    const rhsFree = ys.map((_, i) => i).filter((i) => !rhsBatch.includes(i) && !rhsContract.includes(i));
    const size = (s: Shape, dims: readonly number[]) => numel(dims.map((d) => s[d]!));
    const B = size(xs, lhsBatch);
    const M = size(xs, lhsFree);
    const K = size(xs, lhsContract);
    const N = size(ys, rhsFree);
    // lhs as [B, M, K] and rhs as [B, K, N], row-major.
    const a = transposeData(x!, [...lhsBatch, ...lhsFree, ...lhsContract]);
    const b = transposeData(y!, [...rhsBatch, ...rhsContract, ...rhsFree]);
    const out = new Float64Array(B * M * N);
    const intMode = isInt(x!.type.dtype);
    const row = new Float64Array(N);
    for (let bi = 0; bi < B; bi++) {
      for (let m = 0; m < M; m++) {
        row.fill(0);
        const aBase = (bi * M + m) * K;
        for (let k = 0; k < K; k++) {
          const av = a[aBase + k]!;
          const bBase = (bi * K + k) * N;
          // Integers accumulate with 32-bit wraparound, as the hardware does; floats exactly in float64.
          if (intMode) for (let n = 0; n < N; n++) row[n] = (row[n]! + Math.imul(av, b[bBase + n]!)) | 0;
          else for (let n = 0; n < N; n++) row[n] = row[n]! + av * b[bBase + n]!;
        }
        if (intMode && x!.type.dtype === "u32") for (let n = 0; n < N; n++) row[n] = row[n]! >>> 0;
        out.set(row, (bi * M + m) * N);
      }
    }
    return [result(outType(op), out)];
  },

  gather: (op, [x, idx]) => {
    const n = x!.type.shape[0]!;
    const rowSize = numel(x!.type.shape.slice(1));
    const out = new Float64Array(idx!.data.length * rowSize);
    for (let i = 0; i < idx!.data.length; i++) {
      const r = clamp(idx!.data[i]!, 0, n - 1); // XLA's gather clamps out-of-range rows
      out.set(x!.data.subarray(r * rowSize, (r + 1) * rowSize), i * rowSize);
    }
    return [{ type: outType(op), data: out }];
  },
  scatter_add: (op, [x, idx, upd]) => {
    const n = x!.type.shape[0]!;
    const rowSize = numel(x!.type.shape.slice(1));
    const out = Float64Array.from(x!.data);
    for (let i = 0; i < idx!.data.length; i++) {
      const r = idx!.data[i]!;
      if (r < 0 || r >= n) continue; // XLA's scatter drops out-of-range updates (it does not clamp)
      for (let j = 0; j < rowSize; j++) out[r * rowSize + j] = out[r * rowSize + j]! + upd!.data[i * rowSize + j]!;
    }
    return [result(outType(op), out)];
  },
  take_along_axis: (op, [x, idx]) => {
    const axis = op.params.axis;
    const dim = x!.type.shape[axis]!;
    const st = stridesOf(x!.type.shape);
    const axisStride = st[axis]!;
    const out = new Float64Array(idx!.data.length);
    // Walk the index array with the operand's strides, the indexed axis contributing through the index value.
    walk(
      idx!.type.shape,
      0,
      st.map((s, i) => (i === axis ? 0 : s)),
      (i, p) => {
        out[i] = x!.data[p + clamp(idx!.data[i]!, 0, dim - 1) * axisStride]!;
      },
    );
    return [{ type: outType(op), data: out }];
  },
  dynamic_slice: (op, [x, ...starts]) => {
    const xs = x!.type.shape;
    const sizes = op.params.sizes;
    const st = stridesOf(xs);
    let offset = 0;
    starts.forEach((s, i) => {
      offset += clamp(s.data[0]!, 0, xs[i]! - sizes[i]!) * st[i]!;
    });
    return [{ type: outType(op), data: stridedCopy(sizes, x!.data, offset, st) }];
  },
  dynamic_update_slice: (op, [x, u, ...starts]) => {
    const xs = x!.type.shape;
    const us = u!.type.shape;
    const st = stridesOf(xs);
    let offset = 0;
    starts.forEach((s, i) => {
      offset += clamp(s.data[0]!, 0, xs[i]! - us[i]!) * st[i]!;
    });
    const out = Float64Array.from(x!.data);
    walk(us, offset, st, (i, p) => {
      out[p] = u!.data[i]!;
    });
    return [{ type: outType(op), data: out }];
  },

  scan: (op, args) => {
    const { body, length, numConsts, numCarry, reverse } = op.params;
    const consts = args.slice(0, numConsts);
    let carries = args.slice(numConsts, numConsts + numCarry);
    const xs = args.slice(numConsts + numCarry);
    const xSliceTypes = xs.map((x) => tensorType(x.type.dtype, x.type.shape.slice(1)));
    const yTypes = op.outputs.slice(numCarry).map((v) => v.type);
    const ys = yTypes.map((t) => new Float64Array(numel(t.shape)));
    for (let t = 0; t < length; t++) {
      const i = reverse ? length - 1 - t : t;
      const xSlices = xs.map((x, j) => {
        const n = numel(xSliceTypes[j]!.shape);
        return { type: xSliceTypes[j]!, data: x.data.subarray(i * n, (i + 1) * n) };
      });
      const outs = run(body, [...consts, ...carries, ...xSlices]);
      carries = outs.slice(0, numCarry);
      outs.slice(numCarry).forEach((y, j) => {
        ys[j]!.set(y.data, i * y.data.length);
      });
    }
    return [
      ...carries.map((c, j) => ({ type: outType(op, j), data: c.data })),
      ...yTypes.map((t, j) => ({ type: t, data: ys[j]! })),
    ];
  },
  sort: (op, args) => {
    const { dimension, descending } = op.params;
    const key = args[0]!;
    const shape = key.type.shape;
    const n = shape[dimension]!;
    const st = stridesOf(shape)[dimension]!;
    const outs = args.map((a) => new Float64Array(a.data.length));
    const order = totalOrder(key.type.dtype);
    // Every line along `dimension` starts at an offset whose index there is 0; sort each line's positions by key.
    walk(
      shape.map((d, i) => (i === dimension ? 1 : d)),
      0,
      stridesOf(shape),
      (_i, p) => {
        const pos = Array.from({ length: n }, (_, j) => p + j * st);
        // Array.prototype.sort is stable, so equal keys keep their order (stable or not, this is a valid result).
        pos.sort((a, b) => (descending ? -1 : 1) * order(key.data[a]!, key.data[b]!));
        pos.forEach((q, j) => {
          args.forEach((a, k) => {
            outs[k]![p + j * st] = a.data[q]!;
          });
        });
      },
    );
    return outs.map((data, k) => ({ type: outType(op, k), data }));
  },
  optimization_barrier: (_op, args) => [...args],
  stop_gradient: (_op, args) => [args[0]!],
  cond: (op, [index, ...operands]) => {
    const { branches } = op.params;
    const i = index!.data[0]!;
    // A bool picks [false, true]; an s32 out of range runs the last branch (stablehlo.case).
    const k = i >= 0 && i < branches.length ? i : branches.length - 1;
    return run(branches[k]!, operands);
  },
  while: (op, args) => {
    const { cond, body, numConsts } = op.params;
    const consts = args.slice(0, numConsts);
    let carries = args.slice(numConsts);
    for (let n = 0; run(cond, [...consts, ...carries])[0]!.data[0] !== 0; n++) {
      if (n >= MAX_WHILE_ITERATIONS)
        throw new InterpretError(`while: still looping after ${MAX_WHILE_ITERATIONS} iterations`);
      carries = run(body, [...consts, ...carries]);
    }
    return carries;
  },
  custom_vjp: (op, args) => run(op.params.body, args),
  checkpoint: (op, args) => run(op.params.body, args),
  checkpoint_name: (_op, args) => [args[0]!],
  cudnn_fmha: (op, [q, k, v]) => {
    const { out, stats } = fmhaForward(q!.data, k!.data, v!.data, fmhaOf(op), op.params);
    return op.params.stats ? [rounded(op, 0, out), rounded(op, 1, stats)] : [rounded(op, 0, out)];
  },
  cudnn_fmha_bwd: (op, [q, k, v, stats, dO, o]) => {
    const g = fmhaBackward(q!.data, k!.data, v!.data, stats!.data, dO!.data, o!.data, fmhaOf(op), op.params);
    return [rounded(op, 0, g.dq), rounded(op, 1, g.dk), rounded(op, 2, g.dv)];
  },
};

/** The oracle runs small test programs: a while loop past this many iterations is taken for a runaway. */
const MAX_WHILE_ITERATIONS = 10_000_000;

/** Runs `g` on arguments already known to match its inputs. */
function run(g: Graph, args: readonly HostArray[]): HostArray[] {
  const env = new Map<Value, HostArray>();
  g.inputs.forEach((v, i) => {
    env.set(v, args[i]!);
  });
  const lookup = (v: Value, where: string): HostArray => {
    const a = env.get(v);
    if (!a) throw new InterpretError(`${where}: value ${formatType(v.type)} is used before it is defined`);
    return a;
  };
  g.ops.forEach((op, k) => {
    const where = `op #${k} '${op.name}'`;
    const ins = op.inputs.map((v) => lookup(v, where));
    const outs = (KERNELS[op.name] as Kernel<OpName>)(op, ins);
    if (outs.length !== op.outputs.length)
      throw new InterpretError(`${where}: kernel gave ${outs.length} results, op has ${op.outputs.length}`);
    op.outputs.forEach((v, i) => {
      env.set(v, outs[i]!);
    });
  });
  return g.outputs.map((v) => lookup(v, "graph output"));
}

/** Runs `g` on `args` (one per graph input, of exactly the input's type) and returns one array per graph output. */
export function interpret(g: Graph, args: readonly HostArray[]): HostArray[] {
  if (args.length !== g.inputs.length)
    throw new InterpretError(`interpret: graph takes ${g.inputs.length} inputs, got ${args.length} arguments`);
  g.inputs.forEach((v, i) => {
    const a = args[i]!;
    if (!sameType(v.type, a.type)) {
      const name = g.inputNames?.[i] ? ` "${g.inputNames[i]}"` : "";
      throw new InterpretError(`interpret: input ${i}${name} expects ${formatType(v.type)}, got ${formatType(a.type)}`);
    }
    if (a.data.length !== numel(a.type.shape)) {
      throw new InterpretError(`interpret: input ${i} has ${a.data.length} values for ${formatType(a.type)}`);
    }
  });
  return run(g, args);
}
