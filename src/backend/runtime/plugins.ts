// PJRT plugins Tessera knows (pinned PyPI wheels), where they are cached, and which plugin a client loads.
import { createHash } from "node:crypto";
import {
  closeSync,
  existsSync,
  openSync,
  readFileSync,
  readSync,
  renameSync,
  statSync,
  writeFileSync,
  type Stats,
} from "node:fs";
import { homedir } from "node:os";
import { basename, isAbsolute, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import { RuntimeError } from "./errors.ts";

export interface PluginSpec {
  readonly name: string;
  readonly version: string;
  /** pip requirement, pinned */
  readonly requirement: string;
  /** the linux x86-64 wheel, pinned by hash */
  readonly wheel: { readonly file: string; readonly sha256: string };
  /** member of the wheel that is the plugin .so */
  readonly pluginMember: string;
  /** member of the wheel that is pjrt_c_api.h, if the wheel ships one */
  readonly headerMember?: string;
  /** sha256 of the extracted .so where it is known independently of the wheel */
  readonly pluginSha256?: string;
  /** PJRT C API version the plugin reports */
  readonly pjrtApi: string;
  /**
   * Whether this plugin's XLA CPU backend computes bf16/f16 in f32 copies (an f32 copy of every 16-bit argument,
   * kept for the run): the older XLA does, jaxlib 0.11.2's does not. The CPU memory estimate models it
   * (estimateMemory's cpuUpcast16).
   */
  readonly cpuUpcasts16: boolean;
  readonly about: string;
}

export const PLUGINS = {
  "xla-cpu-pjrt": {
    name: "xla-cpu-pjrt",
    version: "0.0.1",
    requirement: "xla-cpu-pjrt==0.0.1",
    wheel: {
      file: "xla_cpu_pjrt-0.0.1-py3-none-manylinux_2_27_x86_64.whl",
      sha256: "55837b6b7b47daa717f2d9a5a03563ea0ceaa338d06a81a1e2d3f060d960decc",
    },
    pluginMember: "xla_plugins/xla_cpu_pjrt/xla_cpu_pjrt.so",
    headerMember: "xla_plugins/xla_cpu_pjrt/include/pjrt_c_api.h",
    pluginSha256: "88c3f28c5900f48ad4a82cab9e79bba9537809743395e341485f8794268820dc",
    pjrtApi: "0.81",
    cpuUpcasts16: true,
    about: "official OpenXLA CPU plugin (PyPI org google-ml); ships the pjrt_c_api.h the addon is built against",
  },
  "lammps-jax-pjrt-cpu": {
    name: "lammps-jax-pjrt-cpu",
    version: "0.11.2",
    requirement: "lammps-jax-pjrt-cpu==0.11.2",
    wheel: {
      file: "lammps_jax_pjrt_cpu-0.11.2-py3-none-manylinux_2_27_x86_64.whl",
      sha256: "1319390d948b39f69f7dade496b7c385149d9ca6097a6b62114da113216d9ad1",
    },
    pluginMember: "lammps_jax_pjrt_cpu/pjrt_c_api_cpu_plugin.so",
    pjrtApi: "0.115",
    cpuUpcasts16: false,
    about:
      "XLA CPU plugin built from jaxlib 0.11.2's XLA, the XLA of the H200 machine's CUDA plugin (third-party wheel)",
  },
} as const satisfies Record<string, PluginSpec>;

export type PluginName = keyof typeof PLUGINS;

/** The plugin a client loads unless told otherwise (docs/runtime.md says why). */
export const DEFAULT_PLUGIN: PluginName = "xla-cpu-pjrt";

/** Environment variable naming the plugin: a path to a .so, or a name from PLUGINS. */
export const PLUGIN_ENV = "TESSERA_PJRT_PLUGIN";

export function isPluginName(x: string): x is PluginName {
  return Object.hasOwn(PLUGINS, x);
}

/** ~/.cache/tessera, or $XDG_CACHE_HOME/tessera, or $TESSERA_CACHE_DIR. */
export function cacheRoot(): string {
  const explicit = process.env.TESSERA_CACHE_DIR;
  if (explicit) return resolve(explicit);
  const xdg = process.env.XDG_CACHE_HOME;
  return join(xdg && isAbsolute(xdg) ? xdg : join(homedir(), ".cache"), "tessera");
}

export function pluginDir(name: PluginName): string {
  const spec: PluginSpec = PLUGINS[name];
  return join(cacheRoot(), "pjrt", `${spec.name}-${spec.version}`);
}

/** Cached paths of a catalogued plugin; `header` only where its wheel ships one. */
export function cachedPluginFiles(name: PluginName): { plugin: string; header?: string; manifest: string } {
  const spec: PluginSpec = PLUGINS[name];
  const dir = pluginDir(name);
  return {
    plugin: join(dir, spec.pluginMember.split("/").pop()!),
    ...(spec.headerMember ? { header: join(dir, "include", "pjrt_c_api.h") } : {}),
    manifest: join(dir, "manifest.json"),
  };
}

/** manifest.json of a cache entry, written by plugin_fetch.ts once the wheel's hash is checked. */
export interface Manifest {
  name: string;
  version: string;
  wheelSha256: string;
  files: Record<string, { path: string; size: number; sha256: string }>;
}

/** The catalogued plugin whose cache entry holds the .so at `path`, if it is one. */
export function cachedPluginAt(path: string): PluginName | undefined {
  const abs = resolve(path);
  return (Object.keys(PLUGINS) as PluginName[]).find((n) => cachedPluginFiles(n).plugin === abs);
}

/** Where a cache entry records that its .so was hashed, and the file's identity at that time. */
const VERIFIED_FILE = "verified.json";

interface Verified {
  sha256: string;
  size: number;
  mtimeMs: number;
  ctimeMs: number;
  ino: number;
}

function identity(st: Stats): Omit<Verified, "sha256"> {
  return { size: st.size, mtimeMs: st.mtimeMs, ctimeMs: st.ctimeMs, ino: st.ino };
}

function sha256FileSync(path: string): string {
  const hash = createHash("sha256");
  const buf = Buffer.allocUnsafe(1 << 22);
  const fd = openSync(path, "r");
  try {
    for (let n = readSync(fd, buf); n > 0; n = readSync(fd, buf)) hash.update(buf.subarray(0, n));
  } finally {
    closeSync(fd);
  }
  return hash.digest("hex");
}

/**
 * Checks a cached plugin against its cache entry's manifest before it is loaded: a truncated .so is mapped by
 * dlopen and kills the process with SIGBUS, with no message. The size is checked on every load (one stat). The
 * sha256 (a second for a 250 MB .so) is checked once per version of the file: a match is recorded in
 * verified.json with the file's size, mtime, ctime and inode, and rehashed only when one of them changes.
 * Anything writing the file changes its ctime, which no one can set back, so a recorded match stays true.
 */
export function verifyCachedPlugin(name: PluginName): void {
  const files = cachedPluginFiles(name);
  const dir = pluginDir(name);
  const root = resolve(fileURLToPath(new URL("../../../", import.meta.url)));
  const corrupt = (what: string): RuntimeError =>
    new RuntimeError(
      "ERR_PLUGIN_CORRUPT",
      `PJRT plugin ${name}: the cache entry ${dir} is damaged: ${what}; loading it could crash the process. ` +
        `Fetch it again with: rm -rf '${dir}' && (cd '${root}' && npx tsx scripts/install.ts --plugin ${name})`,
    );
  let manifest: Manifest;
  try {
    manifest = JSON.parse(readFileSync(files.manifest, "utf8")) as Manifest;
  } catch (e) {
    throw corrupt(`its manifest ${files.manifest} cannot be read (${(e as Error).message})`);
  }
  const want = manifest.files?.plugin;
  if (typeof want?.size !== "number" || typeof want.sha256 !== "string")
    throw corrupt(`its manifest ${files.manifest} has no "plugin" entry with size and sha256`);
  const st = statSync(files.plugin);
  if (st.size !== want.size)
    throw corrupt(
      `${files.plugin} has ${st.size} bytes, the manifest records ${want.size} (a truncated download or copy?)`,
    );
  const stampPath = join(dir, VERIFIED_FILE);
  const now = identity(st);
  try {
    const stamp = JSON.parse(readFileSync(stampPath, "utf8")) as Verified;
    const same =
      stamp.sha256 === want.sha256 && (Object.keys(now) as (keyof typeof now)[]).every((k) => stamp[k] === now[k]);
    if (same) return;
  } catch {
    // no record yet (or an unreadable one): hash below
  }
  const got = sha256FileSync(files.plugin);
  if (got !== want.sha256) throw corrupt(`${files.plugin} has sha256 ${got}, the manifest records ${want.sha256}`);
  // Best effort: a read-only cache only means the next process hashes again.
  try {
    const tmp = `${stampPath}.tmp-${process.pid}`;
    writeFileSync(tmp, `${JSON.stringify({ sha256: got, ...now })}\n`);
    renameSync(tmp, stampPath);
  } catch {
    // ignored, as said above
  }
}

export interface ResolvedPlugin {
  path: string;
  /** a catalogued name, when the plugin was named rather than given by path */
  name?: PluginName;
  source: "option" | "env" | "default";
}

/** A plugin's platform from its file name, before it is loaded: CUDA when the name says cuda or gpu, else CPU. */
export function platformByName(path: string): "cpu" | "cuda" {
  return /cuda|gpu/i.test(basename(path)) ? "cuda" : "cpu";
}

/**
 * Which plugin to load: the option if given, else $TESSERA_PJRT_PLUGIN, else the default. Each may be
 * a catalogued name ("xla-cpu-pjrt", "lammps-jax-pjrt-cpu") or a path to a plugin .so.
 */
export function resolvePlugin(option?: string): ResolvedPlugin {
  const [value, source] = choosePlugin(option);
  const where = source === "option" ? "the `plugin` option" : source === "env" ? `$${PLUGIN_ENV}` : "the default";
  if (isPluginName(value)) {
    const path = cachedPluginFiles(value).plugin;
    if (!existsSync(path)) {
      throw new RuntimeError(
        "ERR_PLUGIN_NOT_FOUND",
        `PJRT plugin ${value} (from ${where}) is not in the cache at ${path}: run \`npm install\` (or \`npx tsx scripts/install.ts --plugin ${value}\`) to fetch it`,
      );
    }
    return { path, name: value, source };
  }
  const path = resolve(value);
  if (!existsSync(path) || !statSync(path).isFile()) {
    throw new RuntimeError(
      "ERR_PLUGIN_NOT_FOUND",
      `PJRT plugin not found: ${path} (from ${where}); give the path of a plugin .so, or one of ${Object.keys(PLUGINS).join(", ")}`,
    );
  }
  return { path, source };
}

/**
 * Whether the plugin a client would load now (option, $TESSERA_PJRT_PLUGIN, default) keeps f32 copies of 16-bit
 * operands on CPU (PluginSpec.cpuUpcasts16). A plugin given by path is taken for a current XLA, which does not.
 */
export function pluginUpcasts16(option?: string): boolean {
  const [value] = choosePlugin(option);
  return isPluginName(value) ? PLUGINS[value].cpuUpcasts16 : false;
}

/** The plugin named by the option if given, else $TESSERA_PJRT_PLUGIN, else the default, and which one named it. */
function choosePlugin(option?: string): [string, ResolvedPlugin["source"]] {
  const env = process.env[PLUGIN_ENV];
  return option !== undefined && option !== "" ? [option, "option"] : env ? [env, "env"] : [DEFAULT_PLUGIN, "default"];
}
