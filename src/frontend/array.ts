// Concrete arrays: a device buffer with its dtype and shape, created from JS data and read back asynchronously.
import type { Client, Device, DeviceBuffer, HostArray as RuntimeHostArray } from "../backend/runtime/index.ts";
import { getClient, ShardedBuffer } from "../backend/runtime/index.ts";
import { checkSharding, sameSharding, ShardingError, type Mesh, type Sharding } from "../ir/sharding.ts";
import { Value } from "../ir/graph.ts";
import { tensorType } from "../ir/types.ts";
import { PartitionSpec, specSharding, type DeviceMesh } from "./mesh.ts";
import { bf16FromBits, bf16ToBits, f16FromBits, f16ToBits, roundBf16, roundF16 } from "../ir/float_bits.ts";
import { formatType, isDType, numel, type DType } from "../ir/types.ts";
import { concreteTrace, Tensor, type Trace } from "./core.ts";
import { TraceError } from "./errors.ts";
import type { TensorMethods } from "./methods.ts";
import { flattenNested, typedArrayDType, type HostData } from "./ops/creation.ts";

let clientNow: Client | undefined;
let clientNowPlugin: string | undefined;

/** The PJRT client that `array` and `jit` use (the default plugin; $TESSERA_PJRT_PLUGIN chooses another). */
export function defaultClient(): Promise<Client> {
  const c = getClient();
  const plugin = process.env.TESSERA_PJRT_PLUGIN;
  if (!clientNow || clientNowPlugin !== plugin)
    c.then(
      (x) => {
        clientNow = x;
        clientNowPlugin = plugin;
      },
      () => {},
    );
  return c;
}

/** @internal The default client if it is already up, so uploads and eager ops need not wait a turn. */
export function defaultClientNow(): Client | undefined {
  // $TESSERA_PJRT_PLUGIN may change between calls (tests do): only the plugin's own client counts.
  return clientNowPlugin === process.env.TESSERA_PJRT_PLUGIN ? clientNow : undefined;
}

/** The element type names that read back as plain JS numbers. */
export type ReadArray = Float32Array | Int32Array | Uint32Array | Uint8Array;

/** Tensor methods with DeviceArray results: what an op on device arrays returns outside a trace (eager.ts). */
type EagerMethods = {
  [K in Exclude<keyof TensorMethods, "T" | "mT" | typeof Symbol.iterator>]: TensorMethods[K] extends (
    ...a: infer A
  ) => Tensor
    ? (...a: A) => DeviceArray
    : TensorMethods[K];
};

/** A Tensor whose methods return device arrays: the instance type DeviceArray extends. */
interface EagerTensor
  extends Omit<
      Tensor,
      keyof TensorMethods | "toString" | "valueOf" | "toArray" | "item" | "data" | typeof Symbol.toPrimitive
    >,
    EagerMethods {
  toArray(): Promise<ReadArray>;
  item(): Promise<number>;
  data(): Promise<ReadArray>;
  toString(): string;
  valueOf(): never;
  [Symbol.toPrimitive](hint: string): never;
  [Symbol.iterator](): Iterator<DeviceArray>;
  readonly T: DeviceArray;
  readonly mT: DeviceArray;
}

// The class is Tensor at run time (instanceof Tensor, every method installed by methods.ts); only the static
// result types of the methods differ, since outside a trace they return device arrays.
const EagerTensorBase = Tensor as unknown as new (trace: Trace, value: Value) => EagerTensor;

/**
 * An array on a device: the inputs and outputs of `jit` functions. Outputs of one call feed the next without a
 * trip to the host; `await a.toArray()` reads the values back. A donated array (see `jit`'s `donate`) or a
 * disposed one can no longer be used. It is a concrete Tensor: outside a trace every op and method runs on it
 * at once (eager execution, see eager.ts) and returns DeviceArrays, whose buffers fill in the background.
 */
export class DeviceArray extends EagerTensorBase {
  readonly #buffer: Promise<DeviceBuffer>;
  #resolved: DeviceBuffer | undefined;
  /** Set while a lazy array's upload has not started (see the `lazy` constructor form). */
  #materialize: (() => unknown) | undefined;
  #disposed = false;
  /** Set for an array split over a mesh's devices (a sharded jit's results, `array(data, { mesh, spec })`). */
  readonly #layout: { readonly mesh: Mesh; readonly sharding: Sharding } | undefined;
  readonly #sharded: Promise<ShardedBuffer> | undefined;
  #shardedNow: ShardedBuffer | undefined;

  /** @internal Use `array(...)` or the results of a jit function. */
  constructor(
    dtype: DType,
    shape: readonly number[],
    buffer:
      | Promise<DeviceBuffer>
      | DeviceBuffer
      | ShardedBuffer
      | { sharded: Promise<ShardedBuffer>; mesh: Mesh; sharding: Sharding }
      | { lazy: () => DeviceBuffer | Promise<DeviceBuffer> },
  ) {
    super(concreteTrace, new Value(tensorType(dtype, Object.freeze([...shape]))));
    if (typeof buffer === "object" && "lazy" in buffer) {
      // Made on first use: an eager splat constant that a one-op program takes in as a literal never goes up.
      const make = buffer.lazy;
      let started: Promise<DeviceBuffer> | undefined;
      const start = (): Promise<DeviceBuffer> => {
        if (started) return started;
        this.#materialize = undefined;
        const b = make();
        if (b instanceof Promise) {
          started = b.then((r) => {
            this.#resolved = r;
            return r;
          });
          started.catch(() => {});
        } else {
          this.#resolved = b;
          started = Promise.resolve(b);
        }
        return started;
      };
      this.#materialize = start;
      this.#buffer = {
        // biome-ignore lint/suspicious/noThenProperty: a lazy thenable on purpose: awaiting the buffer starts the upload
        then: (a: never, b: never) => start().then(a, b),
        catch: (b: never) => start().catch(b),
      } as unknown as Promise<DeviceBuffer>;
    } else if (buffer instanceof ShardedBuffer || (typeof buffer === "object" && "sharded" in buffer)) {
      const sb = buffer instanceof ShardedBuffer ? Promise.resolve(buffer) : buffer.sharded;
      this.#layout =
        buffer instanceof ShardedBuffer
          ? { mesh: buffer.mesh, sharding: buffer.sharding }
          : { mesh: buffer.mesh, sharding: buffer.sharding };
      this.#sharded = sb.then((b) => (this.#shardedNow = b));
      this.#sharded.catch(() => {});
      if (buffer instanceof ShardedBuffer) this.#shardedNow = buffer;
      // One device's copy of the whole array is made only when a single-device program asks for it.
      let single: Promise<DeviceBuffer> | undefined;
      const gathered = () => (single ??= this.#gatherToOne());
      this.#buffer = {
        // biome-ignore lint/suspicious/noThenProperty: a lazy thenable on purpose: awaiting the buffer starts the gather to one device, which most sharded arrays never need
        then: (a: never, b: never) => gathered().then(a, b),
        catch: (b: never) => gathered().catch(b),
      } as unknown as Promise<DeviceBuffer>;
    } else if (buffer instanceof Promise) {
      this.#buffer = buffer.then((b) => (this.#resolved = b));
      // Failures surface when the array is used; never as an unhandled rejection.
      this.#buffer.catch(() => {});
    } else {
      this.#resolved = buffer;
      this.#buffer = Promise.resolve(buffer);
    }
  }

  /** True once disposed, or donated to a jit call that reused its memory. */
  get disposed(): boolean {
    if (this.#layout) return this.#disposed || (this.#shardedNow?.disposed ?? false);
    return this.#disposed || (this.#resolved?.disposed ?? false);
  }
  get donated(): boolean {
    if (this.#layout) return this.#shardedNow?.donated ?? false;
    return this.#resolved?.donated ?? false;
  }

  /** How the array is split over a mesh, or undefined for an array on one device. */
  get sharding(): { readonly mesh: Mesh; readonly sharding: Sharding } | undefined {
    return this.#layout;
  }

  async #shardedBuffer(op: string): Promise<ShardedBuffer> {
    const sb = await this.#sharded!;
    if (this.#disposed || sb.disposed) {
      const why = sb.donated ? "was donated to a jit call (its memory now holds an output)" : "was disposed";
      throw new TraceError(op, `${this} ${why}; use the jit call's outputs instead`);
    }
    return sb;
  }

  async #gatherToOne(): Promise<DeviceBuffer> {
    const sb = await this.#shardedBuffer("use");
    const host = await sb.toHost();
    return sb.shards[0]!.client.bufferFromHost(host as never, this.dtype, this.shape, undefined, { copy: true });
  }

  /** The values as the runtime holds them (bf16/f16 as raw bits), wherever they live. */
  async #rawHost(op: string): Promise<RuntimeHostArray> {
    if (this.#layout) return (await this.#shardedBuffer(op)).toHost();
    return (await this.buffer(op)).toHost();
  }

  /**
   * @internal Per-partition buffers laid out as `sharding` over `mesh` on `devices`: the array's own shards when it
   * is already laid out so, else placed anew from the host (an array on one device, or split another way).
   */
  async shardsFor(
    client: Client,
    mesh: Mesh,
    sharding: Sharding,
    devices: readonly Device[],
    op: string,
  ): Promise<DeviceBuffer[]> {
    if (this.#layout && sameMesh(this.#layout.mesh, mesh) && sameSharding(this.#layout.sharding, sharding)) {
      const sb = await this.#shardedBuffer(op);
      if (sb.devices.every((d, i) => d === devices[i])) return [...sb.shards];
    }
    const host = await this.#rawHost(op);
    return [...ShardedBuffer.fromHost(client, host as never, this.dtype, this.shape, mesh, sharding, devices).shards];
  }

  override toString(): string {
    return `DeviceArray<${formatType(this)}>`;
  }

  /*
   * The values live on the device and arrive asynchronously, so `if (a.sum() > 0)` cannot be answered here: say
   * how to read them instead of comparing NaN. `${a}` prints the type.
   */
  override [Symbol.toPrimitive](hint: string): never {
    if (hint === "string") return this.toString() as never;
    throw new TraceError(
      "DeviceArray",
      `${this} was used as ${hint === "number" ? "a number" : "a primitive (== or +)"}; its values are on the device: ` +
        "read them with `await a.item()` (one element) or `await a.toArray()`",
    );
  }
  override valueOf(): never {
    return this[Symbol.toPrimitive]("number");
  }

  /** @internal The buffer if it is already there and usable (the eager fast path), else undefined. */
  bufferNow(): DeviceBuffer | undefined {
    this.#materialize?.();
    const b = this.#resolved;
    return b && !this.#disposed && !b.disposed ? b : undefined;
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
  override async toArray(): Promise<ReadArray> {
    return fromHost(this.dtype, await this.#rawHost("toArray"));
  }

  /** Same as `toArray()`. */
  override data(): Promise<ReadArray> {
    return this.toArray();
  }

  /** The single value of a one-element array (a loss). */
  override async item(): Promise<number> {
    if (this.size !== 1) throw new TraceError("item", `${this} has ${this.size} elements, not 1`);
    return (await this.toArray())[0]!;
  }

  /** Frees the device memory now (otherwise the garbage collector does, eventually). */
  dispose(): void {
    this.#disposed = true;
    if (this.#sharded)
      this.#sharded.then(
        (b) => b.dispose(),
        () => {},
      );
    else if (!this.#materialize)
      this.#buffer.then(
        (b) => b.dispose(),
        () => {},
      );
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
      return values instanceof Float32Array
        ? { data: values, copied: false }
        : { data: Float32Array.from(values), copied: true };
    case "bf16":
    case "f16": {
      if (raw16 && values instanceof Uint16Array) return { data: values, copied: false };
      // bf16ToBits/f16ToBits take representable values only; rounding first is what the ArrayOpts doc promises.
      const toBits = dtype === "bf16" ? (v: number) => bf16ToBits(roundBf16(v)) : (v: number) => f16ToBits(roundF16(v));
      const out = new Uint16Array(n);
      for (let i = 0; i < n; i++) out[i] = toBits(values[i]!);
      return { data: out, copied: true };
    }
    case "s32":
      return values instanceof Int32Array
        ? { data: values, copied: false }
        : { data: Int32Array.from(values, (v) => v | 0), copied: true };
    case "u32":
      return values instanceof Uint32Array
        ? { data: values, copied: false }
        : { data: Uint32Array.from(values, (v) => v >>> 0), copied: true };
    case "bool":
      return { data: Uint8Array.from(values, (v) => (v ? 1 : 0)), copied: true };
  }
}

function sameMesh(a: Mesh, b: Mesh): boolean {
  return (
    a.axes.length === b.axes.length && a.axes.every((x, i) => x.name === b.axes[i]!.name && x.size === b.axes[i]!.size)
  );
}

export interface ArrayOpts {
  /** Default: f32, or the typed array's own type (Int32Array -> s32, Uint32Array -> u32). A Uint16Array with
   * dtype bf16 or f16 is taken as raw 16-bit patterns; other data is converted (rounded to nearest even). */
  dtype?: DType;
  /** Default: the nested arrays' shape, or [length] for a typed array. */
  shape?: readonly number[];
  /** Split the array over this mesh's devices as `spec` says (default: on the client's first device). */
  mesh?: DeviceMesh;
  /** With `mesh`: one entry per dimension, `P("data", null)`; default P() (a whole copy on every device). */
  spec?: PartitionSpec;
}

/** The devices a mesh spans on `client`: its `devices` ids, else all of the client's (whose count must match). */
export function meshDevices(client: Client, mesh: DeviceMesh): Device[] {
  if (mesh.devices) return mesh.devices.map((id) => client.device(id));
  if (client.devices.length !== mesh.size) {
    throw new ShardingError(
      "mesh",
      `${mesh} spans ${mesh.size} devices but the client has ${client.devices.length}; make the axes multiply to ${client.devices.length} or pick devices with mesh(axes, { devices: [...] })`,
      mesh.loc,
    );
  }
  return [...client.devices];
}

/** A copy of `a` split over `mesh` as `spec` says (JAX's device_put with a NamedSharding). */
export async function put(
  a: DeviceArray,
  mesh: DeviceMesh,
  spec: PartitionSpec = new PartitionSpec([]),
): Promise<DeviceArray> {
  const client = await defaultClient();
  const { sharding } = specSharding(spec, a.ndim);
  checkSharding(tensorType(a.dtype, a.shape), sharding, mesh, `put() of ${a}`, spec.loc);
  const devices = meshDevices(client, mesh);
  const shards = await a.shardsFor(client, mesh, sharding, devices, "put");
  return new DeviceArray(a.dtype, a.shape, new ShardedBuffer(a.dtype as never, a.shape, mesh, sharding, shards));
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
    if (numel(opts.shape) !== values.length)
      throw new TraceError("array", `${values.length} values do not fill shape [${opts.shape.join(",")}]`);
    shape = [...opts.shape];
  }
  const { data: host, copied } = toHost(dtype, values, true);
  const d = dtype;
  if (opts.mesh) {
    const m = opts.mesh;
    const spec = opts.spec ?? new PartitionSpec([]);
    const { sharding } = specSharding(spec, shape.length);
    checkSharding(tensorType(d, shape), sharding, m, `array of ${d}[${shape.join(",")}]`, spec.loc ?? m.loc);
    const shapeNow = shape;
    const sb = defaultClient().then((c) =>
      ShardedBuffer.fromHost(c, host as never, d as never, shapeNow, m, sharding, meshDevices(c, m)),
    );
    return new DeviceArray(dtype, shape, { sharded: sb, mesh: m, sharding });
  }
  const now = defaultClientNow();
  if (now)
    return new DeviceArray(dtype, shape, now.bufferFromHost(host as never, d, shape, undefined, { copy: !copied }));
  const buffer = defaultClient().then((c) => c.bufferFromHost(host as never, d, shape, undefined, { copy: !copied }));
  return new DeviceArray(dtype, shape, buffer);
}
