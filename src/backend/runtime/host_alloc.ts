// Whether a CPU plugin's large host buffers come from native/host_alloc.cc's pool ($TESSERA_CPU_ALLOC), and its counters.
import { envSwitch } from "./env.ts";
import { RuntimeError } from "./errors.ts";
import { type HostAllocStats, nativeAddon, type PluginHandle } from "./native.ts";

/** `$TESSERA_CPU_ALLOC`: "cache" (the default: blocks of 1 MiB and more are kept for reuse) or "system" (glibc's). */
export const CPU_ALLOC_ENV = "TESSERA_CPU_ALLOC";

function wanted(): boolean {
  return envSwitch(CPU_ALLOC_ENV, "cache", "system");
}

/**
 * Sends a CPU plugin's large allocations through the pool before its first client exists, unless
 * $TESSERA_CPU_ALLOC=system. Without it each execution maps its buffers afresh and page-faults them in (a SmolLM2
 * LoRA step: 1.6 GB, ~10% of its time). Once a plugin's allocations are rebound they stay so for the process.
 */
export function cacheHostAllocations(plugin: PluginHandle, path: string): boolean {
  if (!wanted()) return false;
  try {
    return nativeAddon().cacheHostAllocations(plugin);
  } catch (e) {
    throw new RuntimeError(
      "ERR_CLIENT_OPTIONS",
      `could not pool the host allocations of ${path}: ${(e as Error).message}`,
    );
  }
}

/** The pool's counters since the process started (all zero when no plugin uses it). */
export function hostAllocStats(): HostAllocStats {
  return nativeAddon().hostAllocStats();
}
