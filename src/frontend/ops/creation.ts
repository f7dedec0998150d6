// Tensors from nothing: constants from JS numbers, nested arrays and typed arrays; full/zeros/ones; iota/arange.
import { numel, type DType } from "../../ir/types.ts";
import { bind1, type Tensor } from "../core.ts";
import { TraceError } from "../errors.ts";
import { add, full, mul } from "./elementwise.ts";
import { atUserLoc } from "../loc.ts";

export { full };

/** Nested JS arrays of numbers (or booleans), e.g. `[[1, 2], [3, 4]]`. */
export type NestedNumbers = number | boolean | readonly NestedNumbers[];

export type HostData =
  | NestedNumbers
  | Float32Array
  | Float64Array
  | Int32Array
  | Uint32Array
  | Uint8Array
  | Int8Array
  | Int16Array
  | Uint16Array;

export interface ConstantOpts {
  dtype?: DType;
  shape?: readonly number[];
}

/** The dtype a typed array implies, or undefined when the caller must say. */
export function typedArrayDType(a: ArrayBufferView): DType | undefined {
  if (a instanceof Float32Array || a instanceof Float64Array) return "f32";
  if (a instanceof Int32Array || a instanceof Int16Array || a instanceof Int8Array) return "s32";
  if (a instanceof Uint32Array) return "u32";
  return undefined;
}

/** Flattens nested arrays row-major, checking they are rectangular; returns values and inferred shape. */
export function flattenNested(op: string, data: NestedNumbers): { values: number[]; shape: number[] } {
  const shape: number[] = [];
  for (let d: NestedNumbers = data; Array.isArray(d); d = (d as readonly NestedNumbers[])[0]!) {
    shape.push((d as readonly NestedNumbers[]).length);
    if ((d as readonly NestedNumbers[]).length === 0) break;
  }
  const values: number[] = [];
  const walk = (d: NestedNumbers, depth: number): void => {
    if (depth === shape.length) {
      if (Array.isArray(d)) throw new TraceError(op, `nested arrays are not rectangular (too deep at depth ${depth})`);
      values.push(Number(d));
      return;
    }
    if (!Array.isArray(d) || d.length !== shape[depth]) {
      throw new TraceError(op, `nested arrays are not rectangular: expected length ${shape[depth]} at depth ${depth}`);
    }
    for (const e of d as readonly NestedNumbers[]) walk(e, depth + 1);
  };
  walk(data, 0);
  return { values, shape };
}

/**
 * A constant tensor from a number, nested arrays or a typed array. The dtype defaults to f32, or follows the
 * typed array (Int32Array -> s32, Uint32Array -> u32) or booleans (bool); `shape` reshapes flat data and must
 * match its length (a single value is splatted).
 */
export function constant(data: HostData, opts: ConstantOpts = {}): Tensor {
  let values: number[];
  let shape: number[];
  let dtype = opts.dtype;
  if (ArrayBuffer.isView(data)) {
    values = Array.from(data as ArrayLike<number>);
    shape = [values.length];
    dtype ??= typedArrayDType(data);
    if (!dtype) throw new TraceError("constant", `give a dtype for a ${data.constructor.name}`);
  } else {
    ({ values, shape } = flattenNested("constant", data));
    if (typeof data === "boolean" || (Array.isArray(data) && shape.length && typeof firstLeaf(data) === "boolean"))
      dtype ??= "bool";
  }
  dtype ??= "f32";
  if (opts.shape) {
    if (values.length !== 1 && values.length !== numel(opts.shape)) {
      throw new TraceError("constant", `${values.length} values do not fill shape [${opts.shape.join(",")}]`);
    }
    shape = [...opts.shape];
  }
  return bind1("constant", [], { dtype, shape, value: values });
}

function firstLeaf(d: NestedNumbers): NestedNumbers {
  while (Array.isArray(d) && d.length) d = d[0];
  return d;
}

export function zeros(shape: readonly number[], dtype: DType = "f32"): Tensor {
  return full(shape, 0, dtype);
}

export function ones(shape: readonly number[], dtype: DType = "f32"): Tensor {
  return full(shape, 1, dtype);
}

export function zerosLike(x: Tensor): Tensor {
  return full(x.shape, 0, x.dtype);
}

export function onesLike(x: Tensor): Tensor {
  return full(x.shape, 1, x.dtype);
}

export function fullLike(x: Tensor, value: number): Tensor {
  return full(x.shape, value, x.dtype);
}

/** Counts 0, 1, 2... along `dim` of `shape`, constant along the other dims. */
export function iota(shape: readonly number[], dim = 0, dtype: DType = "s32"): Tensor {
  if (!Number.isInteger(dim) || dim < 0 || dim >= shape.length) {
    throw new TraceError("iota", `dim ${dim} is out of range for shape [${shape.join(",")}]`);
  }
  return bind1("iota", [], { dtype, shape: [...shape], dim });
}

/**
 * numpy arange: `arange(stop)` or `arange(start, stop, step)`. s32 when start and step are integers, else f32,
 * unless `dtype` says otherwise.
 */
export function arange(start: number, stop?: number, step = 1, dtype?: DType): Tensor {
  return atUserLoc(() => {
    if (stop === undefined) [start, stop] = [0, start];
    if (step === 0) throw new TraceError("arange", "step must not be 0");
    const n = Math.max(0, Math.ceil((stop - start) / step));
    const dt = dtype ?? (Number.isInteger(start) && Number.isInteger(step) ? "s32" : "f32");
    let r = iota([n], 0, dt);
    if (step !== 1) r = mul(r, step);
    if (start !== 0) r = add(r, start);
    return r;
  });
}
