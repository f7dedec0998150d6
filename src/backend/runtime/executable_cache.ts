// On-disk cache of compiled executables: keyed by plugin build, platform, program text and compile options.
import { createHash } from "node:crypto";
import { mkdirSync, readFileSync, renameSync, statSync, writeFileSync } from "node:fs";
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
      return { executable: await client.deserialize(bytes), source: "hit", key };
    } catch {
      stale = true; // e.g. written by another plugin build: recompile and replace it
    }
  }
  const executable = await client.compile(program, opts);
  if (client.plugin.slots.PJRT_Executable_Serialize) {
    mkdirSync(dir, { recursive: true });
    const tmp = `${file}.tmp-${process.pid}`;
    writeFileSync(tmp, executable.serialize());
    renameSync(tmp, file);
  }
  return { executable, source: stale ? "stale" : "miss", key };
}
