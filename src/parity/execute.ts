// Runs a traced function on host tensor trees (safetensors-style HostTensor leaves) with the reference interpreter.
import { array, DeviceArray, jit, trace, type Tree } from "../index.ts";
import { flatten, unflatten } from "../frontend/tree.ts";
import { hostArray, interpret, type HostArray } from "../ir/interpret.ts";
import type { DType } from "../ir/types.ts";
import { fromFloat32, toFloat32, typedView, type HostTensor } from "../formats/host_tensor.ts";
import { type HostDType } from "../ir/types.ts";

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

/** A HostTensor on the device (16-bit floats travel as their raw bits). */
export function toDevice(t: HostTensor): DeviceArray {
  const dt = irDType(t.dtype);
  const bytes = t.data.byteOffset % 4 === 0 ? t.data : t.data.slice();
  const view =
    dt === "f32" ? new Float32Array(bytes.buffer, bytes.byteOffset, bytes.byteLength / 4)
    : dt === "bf16" || dt === "f16" ? new Uint16Array(bytes.buffer, bytes.byteOffset, bytes.byteLength / 2)
    : dt === "s32" ? new Int32Array(bytes.buffer, bytes.byteOffset, bytes.byteLength / 4)
    : dt === "u32" ? new Uint32Array(bytes.buffer, bytes.byteOffset, bytes.byteLength / 4)
    : Uint8Array.from(bytes);
  return array(view, { dtype: dt, shape: t.shape });
}

/** A device array read back as a HostTensor of its dtype. */
export async function fromDevice(a: DeviceArray): Promise<HostTensor> {
  const v = await a.toArray();
  const dt = hostDType(a.dtype);
  if (dt === "F32" || dt === "BF16" || dt === "F16") return fromFloat32(v as Float32Array, a.shape, dt);
  return fromFloat32(v, a.shape, dt);
}

/** Trees of HostTensor uploaded leaf by leaf. */
export function treeToDevice<T>(tree: Tree<HostTensor>): T {
  const { leaves, def } = flatten(tree, isHostTensor);
  return unflatten(def, leaves.map(toDevice)) as T;
}

/** Trees of device arrays read back. */
export async function treeFromDevice(tree: unknown): Promise<Tree<HostTensor>> {
  const { leaves, def } = flatten(tree as Tree<DeviceArray>, (x) => x instanceof DeviceArray);
  return unflatten(def, await Promise.all(leaves.map((l) => fromDevice(l as DeviceArray))));
}

/** Like interpretOnHost, but compiled with `jit` (cleanup passes, StableHLO, PJRT CPU) and run on the device. */
export async function pjrtOnHost(fn: (...args: any[]) => unknown, args: readonly Tree<HostTensor>[]): Promise<Tree<HostTensor>> {
  const out = await jit(fn)(...args.map((a) => treeToDevice(a)));
  return treeFromDevice(out);
}
