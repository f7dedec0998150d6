// Device meshes and shardings: named device axes, how each dimension of a value is split over them, local shapes.
import { TesseraError } from "../errors.ts";
import { formatLoc, formatType, type Shape, type SourceLoc, type TensorType } from "./types.ts";

/** One named axis of a device mesh. */
export interface MeshAxis {
  readonly name: string;
  readonly size: number;
}

/**
 * A logical grid of devices with named axes, major to minor: `{data: 2, model: 4}` is 8 devices, where device
 * (partition) p sits at coordinates (p / 4, p % 4). Devices are numbered row-major over the axes, as Shardy's
 * `sdy.mesh` without `device_ids` numbers them.
 */
export interface Mesh {
  readonly axes: readonly MeshAxis[];
}

/**
 * How one value is laid out over a mesh: per dimension, the mesh axes it is split over (major to minor; `[]` = not
 * split). Axes a value does not use are replicated over. `partial` lists axes over which the local pieces are
 * partial sums still to be reduced: it only ever describes an op's local result before its collective, never a
 * value's final sharding.
 */
export interface Sharding {
  readonly dims: readonly (readonly string[])[];
  readonly partial?: readonly string[];
}

/** A sharding mistake in the user's program or options: names the value and the user's line. */
export class ShardingError extends TesseraError {
  constructor(
    /** What was being sharded: `argument base.layers.q`, `shard() of f32[8,16]`, `mesh`. */
    readonly what: string,
    readonly detail: string,
    readonly loc?: SourceLoc,
  ) {
    super(`sharding: ${what}: ${detail}${loc ? ` at ${formatLoc(loc)}` : ""}`, { code: "ERR_SHARDING" });
    this.name = "ShardingError";
  }
}

const AXIS_NAME = /^[A-Za-z_][A-Za-z0-9_]*$/;

/** A validated mesh from `{data: 2, model: 4}` or an axis list; throws ShardingError on bad names or sizes. */
export function makeMesh(axes: Readonly<Record<string, number>> | readonly MeshAxis[], loc?: SourceLoc): Mesh {
  const list: MeshAxis[] = Array.isArray(axes)
    ? (axes as readonly MeshAxis[]).map((a) => ({ name: a.name, size: a.size }))
    : Object.entries(axes as Record<string, number>).map(([name, size]) => ({ name, size }));
  if (list.length === 0)
    throw new ShardingError("mesh", "needs at least one axis, e.g. mesh({ data: 2, model: 4 })", loc);
  const seen = new Set<string>();
  for (const a of list) {
    if (typeof a.name !== "string" || !AXIS_NAME.test(a.name))
      throw new ShardingError("mesh", `axis name ${JSON.stringify(a.name)} is not an identifier`, loc);
    if (seen.has(a.name)) throw new ShardingError("mesh", `axis '${a.name}' appears twice`, loc);
    seen.add(a.name);
    if (!Number.isSafeInteger(a.size) || a.size < 1)
      throw new ShardingError("mesh", `axis '${a.name}' has size ${String(a.size)}; sizes are positive integers`, loc);
  }
  return Object.freeze({ axes: Object.freeze(list.map((a) => Object.freeze(a))) });
}

export function meshSize(m: Mesh): number {
  return m.axes.reduce((n, a) => n * a.size, 1);
}

export function axisSize(m: Mesh, name: string): number {
  const a = m.axes.find((x) => x.name === name);
  if (!a) throw new Error(`internal: mesh has no axis '${name}'`);
  return a.size;
}

/** `{data: 2, model: 4}`, for messages. */
export function formatMesh(m: Mesh): string {
  return `{${m.axes.map((a) => `${a.name}: ${a.size}`).join(", ")}}`;
}

/** The sharding of a value of rank `rank` that is whole on every device. */
export function replicated(rank: number): Sharding {
  return { dims: Array.from({ length: rank }, () => []) };
}

export function isReplicated(s: Sharding): boolean {
  return s.dims.every((d) => d.length === 0) && !s.partial?.length;
}

/** The same layout without axes of size 1 (which split nothing), so that equal layouts compare equal. */
export function dropUnitAxes(s: Sharding, m: Mesh): Sharding {
  const keep = (a: string) => m.axes.some((x) => x.name === a && x.size > 1);
  const partial = s.partial?.filter(keep);
  return { dims: s.dims.map((d) => d.filter(keep)), ...(partial?.length ? { partial } : {}) };
}

/** Every axis the sharding splits a dimension over, in dimension order. */
export function usedAxes(s: Sharding): string[] {
  return s.dims.flat();
}

/** The mesh axes a value is whole (copied) over. */
export function replicatedAxes(s: Sharding, m: Mesh): string[] {
  const used = new Set([...usedAxes(s), ...(s.partial ?? [])]);
  return m.axes.map((a) => a.name).filter((n) => !used.has(n));
}

export function sameSharding(a: Sharding, b: Sharding): boolean {
  if (a.dims.length !== b.dims.length) return false;
  for (let i = 0; i < a.dims.length; i++) {
    const x = a.dims[i]!,
      y = b.dims[i]!;
    if (x.length !== y.length || x.some((n, k) => n !== y[k])) return false;
  }
  const pa = [...(a.partial ?? [])].sort().join(","),
    pb = [...(b.partial ?? [])].sort().join(",");
  return pa === pb;
}

/** How many pieces dimension `d` is cut into. */
export function dimParts(s: Sharding, d: number, m: Mesh): number {
  return s.dims[d]!.reduce((n, a) => n * axisSize(m, a), 1);
}

/** The shape each device holds. */
export function localShape(shape: Shape, s: Sharding, m: Mesh): number[] {
  return shape.map((n, d) => n / dimParts(s, d, m));
}

/**
 * Checks a sharding against a value's type and the mesh: rank, known axes, no axis twice, every split dimension
 * divisible by its axes. Throws ShardingError naming `what` and `loc`.
 */
export function checkSharding(type: TensorType, s: Sharding, m: Mesh, what: string, loc?: SourceLoc): void {
  const rank = type.shape.length;
  if (s.dims.length !== rank) {
    throw new ShardingError(
      what,
      `the spec has ${s.dims.length} entr${s.dims.length === 1 ? "y" : "ies"} but the value is ${formatType(type)} (rank ${rank})`,
      loc,
    );
  }
  const names = m.axes.map((a) => a.name);
  const seen = new Set<string>();
  s.dims.forEach((axes, d) => {
    for (const a of axes) {
      if (!names.includes(a))
        throw new ShardingError(
          what,
          `unknown mesh axis '${a}' in dimension ${d}; the mesh ${formatMesh(m)} has axes ${names.map((n) => `'${n}'`).join(", ")}`,
          loc,
        );
      if (seen.has(a))
        throw new ShardingError(
          what,
          `mesh axis '${a}' is used twice (a value can be split over an axis only once)`,
          loc,
        );
      seen.add(a);
    }
    const parts = dimParts(s, d, m);
    if (type.shape[d]! % parts !== 0) {
      throw new ShardingError(
        what,
        `dimension ${d} of ${formatType(type)} has size ${type.shape[d]}, which ${axes.map((a) => `'${a}'`).join(" x ")} (${parts} devices) does not divide`,
        loc,
      );
    }
  });
}

/** Mesh coordinates of device (partition) `p`: row-major over the axes. */
export function meshCoords(m: Mesh, p: number): Record<string, number> {
  const out: Record<string, number> = {};
  let rest = p;
  for (let i = m.axes.length - 1; i >= 0; i--) {
    const a = m.axes[i]!;
    out[a.name] = rest % a.size;
    rest = Math.floor(rest / a.size);
  }
  return out;
}

/** The block of the global value device `p` holds: per dimension its start and size. */
export function shardBox(shape: Shape, s: Sharding, m: Mesh, p: number): { start: number[]; size: number[] } {
  const c = meshCoords(m, p);
  const size = localShape(shape, s, m);
  const start = s.dims.map((axes, d) => {
    let block = 0;
    for (const a of axes) block = block * axisSize(m, a) + c[a]!;
    return block * size[d]!;
  });
  return { start, size };
}

/** `[{data}, {}, {model}]`: the form `inspect` prints; partial axes follow as `partial={model}`. */
export function formatSharding(s: Sharding): string {
  const dims = `[${s.dims.map((d) => `{${d.join(",")}}`).join(", ")}]`;
  return s.partial?.length ? `${dims} partial={${s.partial.join(",")}}` : dims;
}

/** Shardy's dimension list: `[{"data"}, {}, {"model"}]` (every dimension closed). */
export function shardyDims(s: Sharding): string {
  return `[${s.dims.map((d) => `{${d.map((a) => JSON.stringify(a)).join(", ")}}`).join(", ")}]`;
}

/** The `sdy.sharding` attribute of an argument or result: `#sdy.sharding<@mesh, [{"data"}, {}]>`. */
export function shardyAttr(s: Sharding, meshName = "mesh"): string {
  return `#sdy.sharding<@${meshName}, ${shardyDims(s)}>`;
}

/**
 * The GSPMD `mhlo.sharding` string of a sharding (JAX's algorithm, notes/stablehlo.md §2): tile counts per dimension,
 * unused axes as a trailing replicated tile dimension, devices as a transposed iota. Canonical form: size-1 mesh
 * axes are dropped, identity permutations omitted.
 */
export function hloShardingText(s: Sharding, m: Mesh): string {
  const used = usedAxes(s);
  if (used.every((a) => axisSize(m, a) === 1)) return "{replicated}";
  const tiles = s.dims.map((_, d) => dimParts(s, d, m));
  const rest = m.axes.filter((a) => !used.includes(a.name) && a.size > 1);
  const repl = rest.reduce((n, a) => n * a.size, 1);
  const order = [...used, ...rest.map((a) => a.name)].filter((a) => axisSize(m, a) > 1);
  const big = m.axes.filter((a) => a.size > 1);
  const perm = order.map((a) => big.findIndex((x) => x.name === a));
  const identity = perm.every((p, i) => p === i);
  const total = big.reduce((n, a) => n * a.size, 1);
  const devices = identity ? `<=[${total}]` : `<=[${big.map((a) => a.size).join(",")}]T(${perm.join(",")})`;
  const tileList = repl > 1 ? [...tiles, repl] : tiles;
  return `{devices=[${tileList.join(",")}]${devices}${repl > 1 ? " last_tile_dim_replicate" : ""}}`;
}
