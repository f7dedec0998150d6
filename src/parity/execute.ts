// Runs a traced function on host tensor trees (safetensors-style HostTensor leaves) with the reference interpreter.
import { trace, type Tree } from "../index.ts";
import { flatten, unflatten } from "../frontend/tree.ts";
import { hostArray, interpret, type HostArray } from "../ir/interpret.ts";
import type { DType } from "../ir/types.ts";
import { fromFloat32, toFloat32, typedView, type HostDType, type HostTensor } from "../formats/dtypes.ts";

const TO_IR: Partial<Record<HostDType, DType>> = { F32: "f32", BF16: "bf16", F16: "f16", I32: "s32", U32: "u32", BOOL: "bool" };
const TO_HOST: Record<DType, HostDType> = { f32: "F32", bf16: "BF16", f16: "F16", s32: "I32", u32: "U32", bool: "BOOL" };

export function irDType(d: HostDType): DType {
  const r = TO_IR[d];
  if (!r) throw new Error(`host dtype ${d} has no IR counterpart (F32, BF16, F16, I32, U32, BOOL)`);
  return r;
}

export function hostDType(d: DType): HostDType {
  return TO_HOST[d];
}

export function isHostTensor(x: unknown): x is HostTensor {
  return typeof x === "object" && x !== null && (x as HostTensor).data instanceof Uint8Array && Array.isArray((x as HostTensor).shape);
}

/** A HostTensor as the interpreter's float64 array. */
export function toInterp(t: HostTensor): HostArray {
  const dt = irDType(t.dtype);
  const values = dt === "f32" || dt === "bf16" || dt === "f16" ? toFloat32(t) : (typedView(t) as ArrayLike<number>);
  return hostArray(dt, t.shape, values);
}

/** An interpreter result as a HostTensor in its dtype. */
export function fromInterp(a: HostArray): HostTensor {
  const dt = hostDType(a.type.dtype);
  if (dt === "F32" || dt === "BF16" || dt === "F16") return fromFloat32(Float32Array.from(a.data), a.type.shape, dt);
  return fromFloat32(a.data, a.type.shape, dt);
}

/** The abstract type of a host tensor leaf, for tracing. */
export function specOf(t: HostTensor): { dtype: DType; shape: number[] } {
  return { dtype: irDType(t.dtype), shape: [...t.shape] };
}

/**
 * `fn(...args)` traced on the types of `args` (trees of HostTensor) and run by the reference interpreter; the
 * result has the structure `fn` returns, with HostTensor leaves.
 */
export function interpretOnHost(fn: (...args: any[]) => unknown, args: readonly Tree<HostTensor>[]): Tree<HostTensor> {
  const specArgs = args.map((a) => unflatten(flatten(a, isHostTensor).def, flatten(a, isHostTensor).leaves.map(specOf)));
  const traced = trace(fn, specArgs);
  const leaves = flatten(args as Tree<HostTensor>, isHostTensor).leaves;
  const outs = interpret(traced.graph, leaves.map(toInterp));
  return unflatten(traced.outTree, outs.map(fromInterp));
}

/** A HostTensor as the TypedArray the runtime uploads (bf16/f16 as raw bits, bool as bytes). */
function toRuntime(t: HostTensor): ArrayBufferView {
  const v = typedView(t);
  return t.dtype === "BOOL" ? new Uint8Array(t.data) : v instanceof Uint8Array ? v : (v as Float32Array).slice();
}

/**
 * Like interpretOnHost, but compiled: traced, cleaned up by the standard pass pipeline, emitted as StableHLO and
 * run on the PJRT CPU plugin (the runtime loads it on first use).
 */
export async function pjrtOnHost(fn: (...args: any[]) => unknown, args: readonly Tree<HostTensor>[]): Promise<Tree<HostTensor>> {
  const [{ getClient }, { emitStableHLO }, { runPasses }, { defaultPipeline }] = await Promise.all([
    import("../backend/runtime/index.ts"),
    import("../backend/stablehlo/index.ts"),
    import("../passes/manager.ts"),
    import("../passes/pipeline.ts"),
  ]);
  const specArgs = args.map((a) => unflatten(flatten(a, isHostTensor).def, flatten(a, isHostTensor).leaves.map(specOf)));
  const traced = trace(fn, specArgs);
  const graph = runPasses(traced.graph, defaultPipeline());
  const client = await getClient();
  const exe = await client.compile(emitStableHLO(graph));
  const leaves = flatten(args as Tree<HostTensor>, isHostTensor).leaves;
  const bufs = leaves.map((t) => client.bufferFromHost(toRuntime(t) as never, irDType(t.dtype), t.shape));
  const outs = await exe.run(bufs);
  const host = await Promise.all(
    outs.map(async (b, i) => {
      const ty = graph.outputs[i]!.type;
      const data = (await b.toHost()) as ArrayBufferView;
      b.dispose();
      const bytes = new Uint8Array(data.buffer, data.byteOffset, data.byteLength).slice();
      return { dtype: hostDType(ty.dtype), shape: [...ty.shape], data: bytes } as HostTensor;
    }),
  );
  for (const b of bufs) b.dispose();
  return unflatten(traced.outTree, host);
}
