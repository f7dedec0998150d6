// Concrete arrays: a device buffer with its dtype and shape, created from JS data and read back asynchronously.
import type { Client, DeviceBuffer, HostArray as RuntimeHostArray } from "../backend/runtime/index.ts";
import { getClient } from "../backend/runtime/index.ts";
import { bf16FromBits, bf16ToBits, f16FromBits, f16ToBits } from "../ir/float_bits.ts";
import { formatType, isDType, numel, type DType, type Shape } from "../ir/types.ts";
import { TraceError } from "./errors.ts";
import { flattenNested, typedArrayDType, type HostData } from "./ops/creation.ts";

/** The PJRT client that `array` and `jit` use (the default plugin; $TESSERA_PJRT_PLUGIN chooses another). */
export function defaultClient(): Promise<Client> {
  return getClient();
}

/** The element type names that read back as plain JS numbers. */
export type ReadArray = Float32Array | Int32Array | Uint32Array | Uint8Array;

/**
 * An array on a device: the inputs and outputs of `jit` functions. Outputs of one call feed the next without a
 * trip to the host; `await a.toArray()` reads the values back. A donated array (see `jit`'s `donate`) or a
 * disposed one can no longer be used.
 */
export class DeviceArray {
  readonly shape: Shape;
  readonly #buffer: Promise<DeviceBuffer>;
  #resolved: DeviceBuffer | undefined;
  #disposed = false;

  /** @internal Use `array(...)` or the results of a jit function. */
  constructor(
    readonly dtype: DType,
    shape: readonly number[],
    buffer: Promise<DeviceBuffer> | DeviceBuffer,
  ) {
    this.shape = Object.freeze([...shape]);
    if (buffer instanceof Promise) {
      this.#buffer = buffer.then((b) => (this.#resolved = b));
      // Failures surface when the array is used; never as an unhandled rejection.
      this.#buffer.catch(() => {});
    } else {
      this.#resolved = buffer;
      this.#buffer = Promise.resolve(buffer);
    }
  }

  get ndim(): number {
    return this.shape.length;
  }
  get size(): number {
    return numel(this.shape);
  }
  /** True once disposed, or donated to a jit call that reused its memory. */
  get disposed(): boolean {
    return this.#disposed || (this.#resolved?.disposed ?? false);
  }
  get donated(): boolean {
    return this.#resolved?.donated ?? false;
  }
  toString(): string {
    return `DeviceArray<${formatType(this)}>`;
  }

  /** @internal The device buffer, once the upload is done; throws if the array was disposed or donated. */
  async buffer(op = "use"): Promise<DeviceBuffer> {
    const b = await this.#buffer;
    if (this.#disposed || b.disposed) {
      const why = b.donated ? "was donated to a jit call (its memory now holds an output)" : "was disposed";
      throw new TraceError(op, `${this} ${why}; use the jit call's outputs instead`);
    }
    return b;
  }

  /**
   * The values, row-major: Float32Array for f32/bf16/f16 (16-bit floats widened exactly), Int32Array for s32,
   * Uint32Array for u32, Uint8Array (0/1) for bool.
   */
  async toArray(): Promise<ReadArray> {
    const host = await (await this.buffer("toArray")).toHost();
    return fromHost(this.dtype, host);
  }

  /** Same as `toArray()`. */
  data(): Promise<ReadArray> {
    return this.toArray();
  }

  /** The single value of a one-element array (a loss). */
  async item(): Promise<number> {
    if (this.size !== 1) throw new TraceError("item", `${this} has ${this.size} elements, not 1`);
    return (await this.toArray())[0]!;
  }

  /** Frees the device memory now (otherwise the garbage collector does, eventually). */
  dispose(): void {
    this.#disposed = true;
    this.#buffer.then((b) => b.dispose(), () => {});
  }
}

function fromHost(dtype: DType, host: RuntimeHostArray): ReadArray {
  switch (dtype) {
    case "bf16":
      return Float32Array.from(host as Uint16Array, bf16FromBits);
    case "f16":
      return Float32Array.from(host as Uint16Array, f16FromBits);
    default:
      return host as ReadArray;
  }
}

/** Host data as the typed array the runtime moves for `dtype`; `copied` says whether it is a fresh array. */
function toHost(dtype: DType, values: ArrayLike<number>, raw16: boolean): { data: RuntimeHostArray; copied: boolean } {
  const n = values.length;
  switch (dtype) {
    case "f32":
      return values instanceof Float32Array ? { data: values, copied: false } : { data: Float32Array.from(values), copied: true };
    case "bf16":
    case "f16": {
      if (raw16 && values instanceof Uint16Array) return { data: values, copied: false };
      const toBits = dtype === "bf16" ? bf16ToBits : f16ToBits;
      const out = new Uint16Array(n);
      for (let i = 0; i < n; i++) out[i] = toBits(values[i]!);
      return { data: out, copied: true };
    }
    case "s32":
      return values instanceof Int32Array ? { data: values, copied: false } : { data: Int32Array.from(values, (v) => v | 0), copied: true };
    case "u32":
      return values instanceof Uint32Array ? { data: values, copied: false } : { data: Uint32Array.from(values, (v) => v >>> 0), copied: true };
    case "bool":
      return { data: Uint8Array.from(values, (v) => (v ? 1 : 0)), copied: true };
  }
}

export interface ArrayOpts {
  /** Default: f32, or the typed array's own type (Int32Array -> s32, Uint32Array -> u32). A Uint16Array with
   * dtype bf16 or f16 is taken as raw 16-bit patterns; other data is converted (rounded to nearest even). */
  dtype?: DType;
  /** Default: the nested arrays' shape, or [length] for a typed array. */
  shape?: readonly number[];
}

/**
 * A device array from JS data: `array([[1, 2], [3, 4]])`, `array(new Float32Array(n), { shape: [a, b] })`,
 * `array(ids, { dtype: "s32" })`. Returns at once; the upload completes in the background.
 */
export function array(data: HostData, opts: ArrayOpts = {}): DeviceArray {
  let values: ArrayLike<number>;
  let shape: number[];
  let dtype = opts.dtype;
  if (dtype !== undefined && !isDType(dtype)) throw new TraceError("array", `unknown dtype '${String(dtype)}'`);
  if (ArrayBuffer.isView(data)) {
    values = data as unknown as ArrayLike<number>;
    shape = [values.length];
    dtype ??= typedArrayDType(data) ?? (data instanceof Uint8Array ? "bool" : undefined);
    if (!dtype) throw new TraceError("array", `give a dtype for a ${data.constructor.name}`);
  } else {
    const flat = flattenNested("array", data);
    values = flat.values;
    shape = flat.shape;
  }
  dtype ??= "f32";
  if (opts.shape) {
    if (numel(opts.shape) !== values.length) throw new TraceError("array", `${values.length} values do not fill shape [${opts.shape.join(",")}]`);
    shape = [...opts.shape];
  }
  const { data: host, copied } = toHost(dtype, values, true);
  const d = dtype;
  const buffer = defaultClient().then((c) => c.bufferFromHost(host as never, d, shape, undefined, { copy: !copied }));
  return new DeviceArray(dtype, shape, buffer);
}
