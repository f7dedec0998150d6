// Device buffers: an array on one device, read back with toHost(), freed by dispose() (or, as a safety net, by GC).
import { byteWidth, ELEMENT_TYPES, formatType, numel } from "../../ir/types.ts";
import { allocHost, HOST_ARRAY, type RuntimeDType, type HostArray } from "./host_array.ts";
import { RuntimeError, fromNative } from "./errors.ts";
import { nativeAddon, type BufferHandle } from "./native.ts";
import type { Client, Device } from "./client.ts";

type State = "live" | "disposed" | "donated" | "donating";

/** Downloads of 4 MiB and more land in huge-page-backed memory: a fresh array then faults in 2 MiB at a time. */
const HUGE_DOWNLOAD_BYTES = 4 << 20;

function downloadTarget<D extends RuntimeDType>(dtype: D, count: number): HostArray<D> {
  const bytes = count * ELEMENT_TYPES[dtype].bytes;
  if (bytes >= HUGE_DOWNLOAD_BYTES) {
    const block = nativeAddon().allocHostBlock(bytes);
    if (block) return new (HOST_ARRAY[dtype] as unknown as new (b: ArrayBuffer) => HostArray<D>)(block);
  }
  return allocHost(dtype, count);
}

/**
 * An array on a device. Outputs of one execution feed the next without a trip to the host; data
 * reaches the host only through toHost(). dispose() frees the device memory at once; a buffer
 * that is dropped without dispose() is freed when the garbage collector finalizes it.
 */
export class DeviceBuffer<D extends RuntimeDType = RuntimeDType> {
  #handle: BufferHandle | null;
  #state: State = "live";
  #donatedTo = "";
  /** executions queued on the dispatcher thread that still read this buffer's handle */
  #inUse = 0;

  /** @internal Use Client.bufferFromHost, or the outputs of Executable.execute. */
  constructor(
    readonly client: Client,
    handle: BufferHandle,
    readonly dtype: D,
    readonly shape: readonly number[],
    readonly device: Device,
  ) {
    this.#handle = handle;
  }

  /** "f32[4,8]" */
  get type(): string {
    return formatType(this);
  }

  get byteLength(): number {
    return byteWidth(this.dtype) * numel(this.shape);
  }

  get size(): number {
    return this.shape.reduce((a, b) => a * b, 1);
  }

  /** True once disposed or donated: the buffer holds no data any more. */
  get disposed(): boolean {
    return this.#state !== "live";
  }

  /** True once an execution took this buffer's memory for its outputs (or is about to). */
  get donated(): boolean {
    return this.#state === "donated" || this.#state === "donating";
  }

  /** Copies the array to the host. Resolves when the data is there; rejects if its computation failed. */
  async toHost(): Promise<HostArray<D>> {
    const handle = this.handle("toHost");
    const out = downloadTarget(this.dtype, this.size);
    try {
      await nativeAddon().bufferToHost(handle, out);
    } catch (e) {
      throw fromNative(e, `toHost of ${this.describe()}`);
    }
    return out;
  }

  /** toHost() with the dtype checked, typed for the caller: `await out.toHostAs("f32")` is a Float32Array. */
  async toHostAs<E extends RuntimeDType>(dtype: E): Promise<HostArray<E>> {
    if ((this.dtype as RuntimeDType) !== dtype)
      throw new RuntimeError("ERR_DTYPE", `toHostAs(${dtype}) of ${this.describe()}`);
    return (await this.toHost()) as unknown as HostArray<E>;
  }

  /**
   * Resolves when the buffer's data is computed (or transferred). After it, the TypedArray a buffer
   * was uploaded from may be written again.
   */
  async ready(): Promise<void> {
    const handle = this.handle("ready");
    try {
      await nativeAddon().bufferReady(handle);
    } catch (e) {
      throw fromNative(e, `${this.describe()} failed`);
    }
  }

  /** A copy of this buffer on another device of the same client. */
  copyTo(device: Device): DeviceBuffer<D> {
    const handle = this.handle("copyTo");
    if (device.client !== this.client)
      throw new RuntimeError("ERR_CLIENT_MISMATCH", `${device} belongs to another client`);
    try {
      return new DeviceBuffer(
        this.client,
        nativeAddon().bufferCopyToDevice(handle, this.client.handle, device.index),
        this.dtype,
        this.shape,
        device,
      );
    } catch (e) {
      throw fromNative(e, `copy of ${this.describe()} to ${device}`);
    }
  }

  /** Frees the device memory now (PJRT waits for work already enqueued on it). Idempotent. */
  dispose(): void {
    if (this.#state === "live") this.#state = "disposed";
    this.#destroyWhenIdle();
  }

  /** What the PJRT buffer says about itself (type number, dims, bytes on device). For tests and debugging. */
  nativeInfo(): { deleted: boolean; type?: number; dims?: number[]; onDeviceBytes?: number } {
    return nativeAddon().bufferInfo(this.handle("nativeInfo"));
  }

  toString(): string {
    return `DeviceBuffer(${this.describe()})`;
  }

  /** @internal The native handle, or a clear error if the buffer holds no data. */
  handle(op: string): BufferHandle {
    if (this.#state !== "live" || this.#handle === null) {
      const why =
        this.#state === "donated"
          ? `was donated to ${this.#donatedTo} and no longer holds data (pass donate: false to keep inputs)`
          : this.#state === "donating"
            ? `is being donated to a pending execution of ${this.#donatedTo}`
            : "has been disposed";
      throw new RuntimeError("ERR_DISPOSED", `${op}: buffer ${this.describe()} ${why}`);
    }
    return this.#handle;
  }

  /** @internal An execution on the dispatcher thread will read the handle: keep it until release(). */
  retain(): void {
    this.#inUse++;
  }

  /** @internal */
  release(): void {
    this.#inUse--;
    this.#destroyWhenIdle();
  }

  /** @internal The execution may take this buffer's memory: refuse other uses until it is known. */
  markDonating(executable: string): void {
    if (this.#state === "live") {
      this.#state = "donating";
      this.#donatedTo = executable;
    }
  }

  /** @internal After the execution: donated, or live again. */
  settleDonation(donated: boolean, executable: string): void {
    if (donated) {
      if (this.#state === "live" || this.#state === "donating") this.#state = "donated";
      this.#donatedTo = executable;
      this.#destroyWhenIdle(); // PJRT deleted the memory; the handle itself still needs destroying
    } else if (this.#state === "donating") {
      this.#state = "live";
    }
  }

  #destroyWhenIdle(): void {
    if (this.#state === "live" || this.#state === "donating" || this.#inUse > 0 || this.#handle === null) return;
    nativeAddon().bufferDestroy(this.#handle);
    this.#handle = null;
  }

  private describe(): string {
    return `${this.type} on ${this.device}`;
  }
}

export type { DeviceBuffer as Buffer };
