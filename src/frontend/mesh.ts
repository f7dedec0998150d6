// Device meshes and partition specs as users write them: mesh({ data: 2, model: 4 }) and P("data", null, "model").
import { makeMesh, ShardingError, type Mesh, type MeshAxis, type Sharding } from "../ir/sharding.ts";
import type { SourceLoc } from "../ir/types.ts";
import { userLoc } from "./loc.ts";

/**
 * A mesh of named axes over the client's devices: `mesh({ data: 2, model: 4 })` spans 8 devices, partition p at
 * coordinates (p / 4, p % 4). `devices` picks the device ids (row-major over the axes); by default a sharded jit
 * runs on all of the client's devices, whose count must then equal the mesh's size.
 */
export class DeviceMesh implements Mesh {
  readonly axes: readonly MeshAxis[];
  readonly devices: readonly number[] | undefined;
  /** Where the user created the mesh, for errors about it. */
  readonly loc: SourceLoc | undefined;

  /** `loc`: where the mesh was written (default: the caller's line); null when it comes from no source line. */
  constructor(
    axes: Readonly<Record<string, number>> | readonly MeshAxis[],
    opts: { devices?: readonly number[] } = {},
    where: SourceLoc | null | undefined = userLoc(),
  ) {
    const loc = where ?? undefined;
    this.loc = loc;
    this.axes = makeMesh(axes, loc).axes;
    const size = this.size;
    if (opts.devices !== undefined) {
      if (opts.devices.length !== size)
        throw new ShardingError(
          "mesh",
          `has ${size} devices (${this.toString()}) but ${opts.devices.length} device ids were given`,
          loc,
        );
      if (new Set(opts.devices).size !== opts.devices.length)
        throw new ShardingError("mesh", `device ids repeat: [${opts.devices.join(", ")}]`, loc);
    }
    this.devices = opts.devices ? Object.freeze([...opts.devices]) : undefined;
  }

  get size(): number {
    return this.axes.reduce((n, a) => n * a.size, 1);
  }

  get axisNames(): string[] {
    return this.axes.map((a) => a.name);
  }

  /** Size of one axis (1 for an axis the mesh lacks, so presets can ask about `model` on a data-only mesh). */
  axis(name: string): number {
    return this.axes.find((a) => a.name === name)?.size ?? 1;
  }

  has(name: string): boolean {
    return this.axes.some((a) => a.name === name);
  }

  toString(): string {
    return `mesh{${this.axes.map((a) => `${a.name}: ${a.size}`).join(", ")}}`;
  }
}

/** `mesh({ data: 2, model: 4 })`: a device mesh (see DeviceMesh). */
export function mesh(axes: Readonly<Record<string, number>>, opts: { devices?: readonly number[] } = {}): DeviceMesh {
  return new DeviceMesh(axes, opts, userLoc());
}

/**
 * One dimension of a partition spec: `null` (not split), an axis name, axis names major to minor, or those with a
 * user priority (`{ axes: "data", priority: 1 }`: spreads only after every priority-0 sharding has).
 */
export type DimSpec =
  | null
  | undefined
  | string
  | readonly string[]
  | { readonly axes: string | readonly string[]; readonly priority?: number };

/**
 * How a value's dimensions split over mesh axes, one entry per dimension: `P("data", null)` splits dimension 0 over
 * `data` and keeps dimension 1 whole; `P()` on any value means replicated (no entries: whole everywhere).
 */
export class PartitionSpec {
  readonly dims: readonly DimSpec[];
  /** Where the spec was written. */
  readonly loc: SourceLoc | undefined;
  constructor(dims: readonly DimSpec[], loc: SourceLoc | undefined = userLoc()) {
    this.dims = Object.freeze([...dims]);
    this.loc = loc;
  }

  /** True for `P()`: whole on every device, whatever the rank. */
  get isReplicated(): boolean {
    return this.dims.length === 0;
  }

  toString(): string {
    const one = (d: DimSpec): string => {
      if (d === null || d === undefined) return "null";
      if (typeof d === "string") return JSON.stringify(d);
      if (Array.isArray(d)) return `[${d.map((x) => JSON.stringify(x)).join(", ")}]`;
      const o = d as { axes: string | readonly string[]; priority?: number };
      return `{ axes: ${one(o.axes as DimSpec)}${o.priority !== undefined ? `, priority: ${o.priority}` : ""} }`;
    };
    return `P(${this.dims.map(one).join(", ")})`;
  }
}

/** `P("data", null, "model")`: a partition spec (see PartitionSpec). */
export function P(...dims: DimSpec[]): PartitionSpec {
  return new PartitionSpec(dims, userLoc());
}

function dimAxes(d: DimSpec): { axes: string[]; priority: number } {
  if (d === null || d === undefined) return { axes: [], priority: 0 };
  if (typeof d === "string") return { axes: [d], priority: 0 };
  if (Array.isArray(d)) return { axes: [...(d as readonly string[])], priority: 0 };
  const o = d as { axes: string | readonly string[]; priority?: number };
  return { axes: typeof o.axes === "string" ? [o.axes] : [...o.axes], priority: o.priority ?? 0 };
}

/** The IR sharding (and per-dimension priorities) of a spec for a value of rank `rank`; `P()` fits every rank. */
export function specSharding(spec: PartitionSpec, rank: number): { sharding: Sharding; priorities: number[] } {
  if (spec.isReplicated)
    return { sharding: { dims: Array.from({ length: rank }, () => []) }, priorities: Array(rank).fill(0) };
  const dims = spec.dims.map(dimAxes);
  for (const d of dims) {
    if (!Number.isInteger(d.priority) || d.priority < 0)
      throw new ShardingError("spec", `${spec} has priority ${d.priority}; priorities are integers >= 0`, spec.loc);
  }
  return { sharding: { dims: dims.map((d) => d.axes) }, priorities: dims.map((d) => d.priority) };
}

export function isPartitionSpec(x: unknown): x is PartitionSpec {
  return x instanceof PartitionSpec;
}
