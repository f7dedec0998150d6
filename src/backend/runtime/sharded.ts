// Sharded buffers: one global array held as per-device blocks laid out by a mesh sharding; placed from the host and gathered back.
import type { Mesh, Sharding } from "../../ir/sharding.ts";
import { meshSize, shardBox, localShape } from "../../ir/sharding.ts";
import type { DeviceBuffer } from "./buffer.ts";
import type { Client, Device } from "./client.ts";
import { HOST_ARRAY, type RuntimeDType, type HostArray } from "./host_array.ts";
import { RuntimeError } from "./errors.ts";
import { COLLECTIVE_OPCODES, type HloModule } from "./hlo_module.ts";

/** Row-major strides of a shape, in elements. */
function strides(shape: readonly number[]): number[] {
  const s = shape.map(() => 1);
  for (let d = shape.length - 2; d >= 0; d--) s[d] = s[d + 1]! * shape[d + 1]!;
  return s;
}

/**
 * Copies the box `start`/`size` between a global row-major array and a compact block: `toBlock` reads the box out
 * of `global` into `block`, otherwise writes `block` into the box. Runs of the innermost dimension move at once.
 */
function copyBox(
  global: HostArray,
  shape: readonly number[],
  block: HostArray,
  start: readonly number[],
  size: readonly number[],
  toBlock: boolean,
): void {
  const rank = shape.length;
  if (rank === 0) {
    if (toBlock) (block as Float32Array)[0] = (global as Float32Array)[0]!;
    else (global as Float32Array)[0] = (block as Float32Array)[0]!;
    return;
  }
  const gs = strides(shape);
  const run = size[rank - 1]!;
  const outer = size.slice(0, -1);
  const count = outer.reduce((a, b) => a * b, 1);
  const idx = outer.map(() => 0);
  const g = global as unknown as {
    subarray(a: number, b: number): ArrayLike<number>;
    set(x: ArrayLike<number>, at: number): void;
  };
  const b = block as unknown as typeof g;
  for (let k = 0; k < count; k++) {
    let off = start[rank - 1]!;
    for (let d = 0; d < rank - 1; d++) off += (start[d]! + idx[d]!) * gs[d]!;
    if (toBlock) b.set(g.subarray(off, off + run), k * run);
    else g.set(b.subarray(k * run, (k + 1) * run), off);
    for (let d = rank - 2; d >= 0; d--) {
      if (++idx[d]! < outer[d]!) break;
      idx[d] = 0;
    }
  }
}

function boxKey(start: readonly number[]): string {
  return start.join(",");
}

/**
 * A global `dtype[shape]` array split over the devices of a mesh: `shards[p]` is partition p's block (on
 * `devices[p]`), as `shardBox` lays it out. Devices that a replicated axis makes hold the same block each have
 * their own copy.
 */
export class ShardedBuffer {
  constructor(
    readonly dtype: RuntimeDType,
    readonly shape: readonly number[],
    readonly mesh: Mesh,
    readonly sharding: Sharding,
    readonly shards: readonly DeviceBuffer[],
  ) {
    if (shards.length !== meshSize(mesh))
      throw new RuntimeError(
        "ERR_ARG_COUNT",
        `a sharded buffer over ${meshSize(mesh)} devices got ${shards.length} shards`,
      );
  }

  get devices(): Device[] {
    return this.shards.map((s) => s.device);
  }
  get disposed(): boolean {
    return this.shards.some((s) => s.disposed);
  }
  get donated(): boolean {
    return this.shards.some((s) => s.donated);
  }

  /** Partition p's block: its start and size per dimension. */
  box(p: number): { start: number[]; size: number[] } {
    return shardBox(this.shape, this.sharding, this.mesh, p);
  }

  /**
   * Places a global host array on `devices` (one per partition, in mesh order): each device gets its block, cut
   * out on the host once per distinct block.
   */
  static fromHost<D extends RuntimeDType>(
    client: Client,
    data: HostArray<D>,
    dtype: D,
    shape: readonly number[],
    mesh: Mesh,
    sharding: Sharding,
    devices: readonly Device[],
  ): ShardedBuffer {
    const n = meshSize(mesh);
    if (devices.length !== n)
      throw new RuntimeError("ERR_ARG_COUNT", `the mesh has ${n} devices; got ${devices.length} to place shards on`);
    const total = shape.reduce((a, b) => a * b, 1);
    if (data.length !== total)
      throw new RuntimeError("ERR_ARG_TYPE", `${data.length} elements do not fill ${dtype}[${shape.join(",")}]`);
    const local = localShape(shape, sharding, mesh);
    const blocks = new Map<string, HostArray>();
    const shards = devices.map((device, p) => {
      const { start, size } = shardBox(shape, sharding, mesh, p);
      let block = blocks.get(boxKey(start));
      if (!block) {
        if (local.every((d, i) => d === shape[i])) block = data;
        else {
          block = new HOST_ARRAY[dtype](size.reduce((a, b) => a * b, 1));
          copyBox(data, shape, block, start, size, true);
        }
        blocks.set(boxKey(start), block);
      }
      // Copied during the call: the same block feeds several devices and the caller may reuse `data`.
      return client.bufferFromHost(block as HostArray<D>, dtype, local, device, { copy: true });
    });
    return new ShardedBuffer(dtype, shape, mesh, sharding, shards);
  }

  /** The global array, assembled from one copy of each distinct block. */
  async toHost(): Promise<HostArray> {
    const total = this.shape.reduce((a, b) => a * b, 1);
    const out = new HOST_ARRAY[this.dtype](total);
    const seen = new Set<string>();
    const reads: Promise<void>[] = [];
    this.shards.forEach((s, p) => {
      const { start, size } = this.box(p);
      if (seen.has(boxKey(start))) return;
      seen.add(boxKey(start));
      reads.push(s.toHost().then((block) => copyBox(out, this.shape, block, start, size, false)));
    });
    await Promise.all(reads);
    return out;
  }

  dispose(): void {
    for (const s of this.shards) s.dispose();
  }

  toString(): string {
    return `ShardedBuffer(${this.dtype}[${this.shape.join(",")}] over ${this.shards.length} devices)`;
  }
}

/** One tensor a collective moves, as the optimized HLO states it (a tuple collective moves several). */
export interface CollectiveTensor {
  /** XLA's opcode without an async `-start` suffix: "all-reduce", "all-gather", ... */
  readonly kind: string;
  readonly dtype: string;
  readonly shape: readonly number[];
  readonly computation: string;
}

/**
 * Every tensor moved by a collective in the optimized (partitioned) module, one entry per tuple element: XLA's
 * combiner packs independent collectives into tuples, so counting tensors rather than instructions gives what the
 * partitioner needed, whatever the combiner did. Loop bodies count once.
 */
export function collectiveTensors(m: HloModule): CollectiveTensor[] {
  const out: CollectiveTensor[] = [];
  for (const c of m.computations) {
    for (const i of c.instructions) {
      const kind = i.opcode.endsWith("-start") ? i.opcode.slice(0, -"-start".length) : i.opcode;
      if (!(COLLECTIVE_OPCODES as readonly string[]).includes(kind)) continue;
      // An async start's shape is a tuple of (operands..., results...): its results are the second half.
      let parts = i.shape.tuple ?? [i.shape];
      if (i.opcode.endsWith("-start") && i.shape.tuple) parts = parts.slice(parts.length / 2);
      for (const p of parts) out.push({ kind, dtype: String(p.dtype), shape: p.shape, computation: c.name });
    }
  }
  return out;
}
