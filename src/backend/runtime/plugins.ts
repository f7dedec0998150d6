// PJRT plugins Tessera knows (pinned PyPI wheels), where they are cached, and which plugin a client loads.
import { existsSync, statSync } from "node:fs";
import { homedir } from "node:os";
import { isAbsolute, join, resolve } from "node:path";
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
    about: "XLA CPU plugin built from jaxlib 0.11.2's XLA, the XLA of the H200 machine's CUDA plugin (third-party wheel)",
  },
} as const satisfies Record<string, PluginSpec>;

export type PluginName = keyof typeof PLUGINS;

/** The plugin a client loads unless told otherwise (docs/runtime.md says why). */
export const DEFAULT_PLUGIN: PluginName = "xla-cpu-pjrt";

/** Environment variable naming the plugin: a path to a .so, or a name from PLUGINS. */
export const PLUGIN_ENV = "TESSERA_PJRT_PLUGIN";

export function isPluginName(x: string): x is PluginName {
  return Object.prototype.hasOwnProperty.call(PLUGINS, x);
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

export interface ResolvedPlugin {
  path: string;
  /** a catalogued name, when the plugin was named rather than given by path */
  name?: PluginName;
  source: "option" | "env" | "default";
}

/**
 * Which plugin to load: the option if given, else $TESSERA_PJRT_PLUGIN, else the default. Each may be
 * a catalogued name ("xla-cpu-pjrt", "lammps-jax-pjrt-cpu") or a path to a plugin .so.
 */
export function resolvePlugin(option?: string): ResolvedPlugin {
  const env = process.env[PLUGIN_ENV];
  const [value, source]: [string, ResolvedPlugin["source"]] =
    option !== undefined && option !== "" ? [option, "option"] : env ? [env, "env"] : [DEFAULT_PLUGIN, "default"];
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
