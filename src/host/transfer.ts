// HostTensors (file-side bytes) to and from device arrays and the reference interpreter's arrays, leaf by leaf or as trees.
import { TesseraError } from "../errors.ts";
import { array, DeviceArray } from "../frontend/array.ts";
import { flatten, unflatten, type Tree } from "../frontend/tree.ts";
import { hostArray, type HostArray } from "../ir/interpret.ts";
import { DTYPES, fromHostDType, toHostDType, type DType, type HostDType } from "../ir/types.ts";
import { fromFloat32, toFloat32, typedView, type HostTensor } from "../formats/host_tensor.ts";

/** A host tensor whose file dtype no traced program computes on (F64, I64, I16...). */
export class HostDTypeError extends TesseraError {
  constructor(message: string) {
    super(message, { code: "ERR_DTYPE" });
  }
}

/** The IR dtype of a file dtype (`"BF16"` gives `"bf16"`), or a HostDTypeError naming the ones that have one. */
export function irDType(d: HostDType, what = "a host tensor"): DType {
  const t = fromHostDType(d);
  if (!(DTYPES as readonly string[]).includes(t)) {
    throw new HostDTypeError(
      `${what} has dtype ${d}, which no program computes on; expected one of ${DTYPES.map(toHostDType).join(", ")}`,
    );
  }
  return t as DType;
}

export function isHostTensor(x: unknown): x is HostTensor {
  return (
    typeof x === "object" &&
    x !== null &&
    (x as HostTensor).data instanceof Uint8Array &&
    Array.isArray((x as HostTensor).shape)
  );
}

/** The abstract type of a host tensor leaf, for tracing. */
export function specOf(t: HostTensor): { dtype: DType; shape: number[] } {
  return { dtype: irDType(t.dtype), shape: [...t.shape] };
}

/** A HostTensor as the interpreter's float64 array. */
export function toInterp(t: HostTensor): HostArray {
  const dt = irDType(t.dtype);
  const values = dt === "f32" || dt === "bf16" || dt === "f16" ? toFloat32(t) : (typedView(t) as ArrayLike<number>);
  return hostArray(dt, t.shape, values);
}

/** An interpreter result as a HostTensor in its dtype (floats round through float32, exact for values of that dtype). */
export function fromInterp(a: HostArray): HostTensor {
  const dt = toHostDType(a.type.dtype);
  if (dt === "F32" || dt === "BF16" || dt === "F16") return fromFloat32(Float32Array.from(a.data), a.type.shape, dt);
  return fromFloat32(a.data, a.type.shape, dt);
}

/** A HostTensor on the device; 16-bit floats travel as their raw bits, so nothing is rounded. */
export function toDevice(t: HostTensor): DeviceArray {
  const dt = irDType(t.dtype);
  return array(typedView(t) as Float32Array | Uint16Array | Int32Array | Uint32Array | Uint8Array, {
    dtype: dt,
    shape: t.shape,
  });
}

/** A device array read back as a HostTensor of its dtype. */
export async function fromDevice(a: DeviceArray): Promise<HostTensor> {
  const v = await a.toArray();
  return fromFloat32(v, a.shape, toHostDType(a.dtype));
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
