// On-disk cache of compiled executables: keyed by plugin build, platform, program text and compile options.
import { createHash } from "node:crypto";
import { mkdirSync, readdirSync, readFileSync, renameSync, rmSync, statSync, utimesSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import type { Client } from "./client.ts";
import { encodeCompileOptions, resolveCompileOptions, type CompileOptions } from "./compile_options.ts";
import type { Executable } from "./executable.ts";
import { cacheRoot } from "./plugins.ts";

export interface CachedCompile {
  executable: Executable;
  /** "hit": loaded from disk; "miss": compiled and stored; "stale": the stored bytes did not load, recompiled */
  source: "hit" | "miss" | "stale";
  key: string;
}

/** ~/.cache/tessera/executables (or under $TESSERA_CACHE_DIR). */
export function executableCacheDir(): string {
  return join(cacheRoot(), "executables");
}

/**
 * The cache key: everything that changes what XLA would build. A serialized executable only loads
 * into the same plugin build, so the plugin file's identity (path, size, mtime) and reported
 * versions are part of it, with the platform, the devices, the program and the encoded options.
 */
export function executableCacheKey(client: Client, program: string, opts: CompileOptions = {}): string {
  const resolved = resolveCompileOptions(program, opts, {
    deviceIds: client.devices.map((d) => d.id),
    defaultDeviceAssignment: (r, p) => client.defaultDeviceAssignment(r, p),
  });
  const st = statSync(client.plugin.path);
  const h = createHash("sha256");
  for (const part of [
    client.plugin.path,
    String(st.size),
    String(st.mtimeMs),
    client.plugin.apiVersion,
    JSON.stringify(client.pluginAttributes.raw),
    client.platformName,
    client.platformVersion,
    client.devices.map((d) => `${d.id}:${d.kind}`).join(","),
    process.env.XLA_FLAGS ?? "",
    program,
  ]) {
    h.update(part).update("\0");
  }
  h.update(encodeCompileOptions(resolved));
  return h.digest("hex");
}

let warnedUnwritable = false;

/** The on-disk cache's size bound: TESSERA_JIT_CACHE_MAX_MB (default 2048, as JAX bounds its persistent cache). */
export function executableCacheMaxBytes(): number {
  const mb = Number(process.env.TESSERA_JIT_CACHE_MAX_MB ?? 2048);
  return Number.isFinite(mb) && mb >= 0 ? mb * 2 ** 20 : 2048 * 2 ** 20;
}

/**
 * Deletes the least recently used entries (a hit refreshes its file's mtime) until the cache holds at most
 * `maxBytes`; `keep` (the entry just written) stays. Entries another process deletes meanwhile are skipped.
 */
export function pruneExecutableCache(dir: string, maxBytes: number, keep?: string): number {
  let names: string[];
  try {
    names = readdirSync(dir).filter((n) => n.endsWith(".pjrt"));
  } catch {
    return 0;
  }
  const entries: { file: string; size: number; used: number }[] = [];
  for (const n of names) {
    const file = join(dir, n);
    try {
      const st = statSync(file);
      entries.push({ file, size: st.size, used: st.mtimeMs });
    } catch {}
  }
  let total = entries.reduce((a, e) => a + e.size, 0);
  let removed = 0;
  for (const e of entries.sort((a, b) => a.used - b.used)) {
    if (total <= maxBytes) break;
    if (e.file === keep) continue;
    rmSync(e.file, { force: true });
    total -= e.size;
    removed++;
  }
  return removed;
}

/** Compiles `program`, or loads it from the on-disk cache when the same build compiled it before. */
export async function compileCached(
  client: Client,
  program: string,
  opts: CompileOptions = {},
  dir: string = executableCacheDir(),
): Promise<CachedCompile> {
  const key = executableCacheKey(client, program, opts);
  const file = join(dir, `${key}.pjrt`);
  let stale = false;
  let bytes: Uint8Array | undefined;
  try {
    bytes = new Uint8Array(readFileSync(file));
  } catch {
    bytes = undefined;
  }
  if (bytes && bytes.length > 0) {
    try {
      const executable = await client.deserialize(bytes);
      try {
        const now = new Date();
        utimesSync(file, now, now); // least recently used goes first when the cache is pruned
      } catch {}
      return { executable, source: "hit", key };
    } catch {
      stale = true; // e.g. written by another plugin build: recompile and replace it
    }
  }
  const executable = await client.compile(program, opts);
  if (client.plugin.slots.PJRT_Executable_Serialize) {
    // A cache that cannot be written (read-only home, full disk) costs the next process a compile, nothing more.
    const tmp = `${file}.tmp-${process.pid}`;
    try {
      mkdirSync(dir, { recursive: true });
      writeFileSync(tmp, executable.serialize());
      renameSync(tmp, file);
      pruneExecutableCache(dir, executableCacheMaxBytes(), file);
    } catch (e) {
      rmSync(tmp, { force: true });
      if (!warnedUnwritable) {
        warnedUnwritable = true;
        process.stderr.write(`tessera: warning: executable cache ${dir} is not writable (${(e as Error).message})\n`);
      }
    }
  }
  return { executable, source: stale ? "stale" : "miss", key };
}

/** How programs were obtained in this process (jit, eager ops and `train` all compile through `compileShared`). */
export interface CompileCounters {
  /** Programs XLA compiled (misses of both caches, and stale disk entries). */
  compiled: number;
  /** Requests answered by an executable this process already had (same program, plugin and options). */
  memoryHits: number;
  /** Executables loaded from the on-disk cache instead of compiling. */
  diskHits: number;
  /** Milliseconds spent in XLA compiles, and in loading executables from disk. */
  compileMs: number;
  diskLoadMs: number;
}

export const compileCounters: CompileCounters = {
  compiled: 0,
  memoryHits: 0,
  diskHits: 0,
  compileMs: 0,
  diskLoadMs: 0,
};

/** One compile request's outcome, for `onCompile` listeners and TESSERA_LOG_COMPILES=1. */
export interface CompileEvent {
  /** "memory": this process had it; "hit": loaded from disk; "miss"/"stale": compiled (and stored); "nocache": compiled, disk cache off. */
  readonly source: "memory" | "hit" | "miss" | "stale" | "nocache";
  readonly name: string;
  readonly ms: number;
  readonly key: string;
}

const listeners = new Set<(e: CompileEvent) => void>();

/** Calls `fn` for every compile request (a debug hook, like jax_log_compiles); returns the unsubscribe function. */
export function onCompile(fn: (e: CompileEvent) => void): () => void {
  listeners.add(fn);
  return () => listeners.delete(fn);
}

function emit(e: CompileEvent): void {
  if (process.env.TESSERA_LOG_COMPILES === "1")
    process.stderr.write(`tessera: compile ${e.name}: ${e.source} in ${e.ms.toFixed(1)} ms (${e.key.slice(0, 12)})\n`);
  for (const l of listeners) l(e);
}

/** False when TESSERA_JIT_CACHE=0: executables are then neither read from nor written to disk. */
export function persistentCacheEnabled(): boolean {
  return process.env.TESSERA_JIT_CACHE !== "0";
}

// Per client: key -> executable. Programs are small next to their executables, and a process compiles a bounded set.
const inProcess = new WeakMap<Client, Map<string, Promise<Executable>>>();

function moduleNameOf(program: string): string {
  return /module\s+@([\w.$-]+)/.exec(program)?.[1] ?? "main";
}

/**
 * The executable for `program`, shared by everything that compiles in this process and across processes, as
 * JAX's persistent compilation cache: a program whose text (constants and locations included), plugin build and
 * compile options hash the same as one compiled before is reused from memory, else loaded from the on-disk
 * cache (unless TESSERA_JIT_CACHE=0), else compiled and stored. A failed compile is not remembered.
 */
export function compileShared(client: Client, program: string, opts: CompileOptions = {}): Promise<Executable> {
  const key = executableCacheKey(client, program, opts);
  let perClient = inProcess.get(client);
  if (!perClient) {
    perClient = new Map();
    inProcess.set(client, perClient);
  }
  const name = moduleNameOf(program);
  const have = perClient.get(key);
  if (have) {
    compileCounters.memoryHits++;
    emit({ source: "memory", name, ms: 0, key });
    return have;
  }
  const started = performance.now();
  const p = (async () => {
    if (!persistentCacheEnabled()) {
      const exe = await client.compile(program, opts);
      const ms = performance.now() - started;
      compileCounters.compiled++;
      compileCounters.compileMs += ms;
      emit({ source: "nocache", name, ms, key });
      return exe;
    }
    const r = await compileCached(client, program, opts);
    const ms = performance.now() - started;
    if (r.source === "hit") {
      compileCounters.diskHits++;
      compileCounters.diskLoadMs += ms;
    } else {
      compileCounters.compiled++;
      compileCounters.compileMs += ms;
    }
    emit({ source: r.source, name, ms, key });
    return r.executable;
  })();
  perClient.set(key, p);
  p.catch(() => perClient.delete(key));
  return p;
}
