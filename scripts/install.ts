// npm install hook: fetches the PJRT CPU plugins and OpenBLAS into the cache and builds the native addon with the plugin's header.
//   npx tsx scripts/install.ts                      (what `npm install` / `npm ci` run)
//   npx tsx scripts/install.ts --plugin <name>      fetch one catalogued plugin only
//   env: TESSERA_SKIP_LAMMPS=1 (skip the cross-check plugin), TESSERA_CACHE_DIR, CXX, TESSERA_PYTHON
import { createHash } from "node:crypto";
import { existsSync, mkdirSync, readFileSync, readdirSync, renameSync, rmSync, writeFileSync } from "node:fs";
import { createRequire } from "node:module";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import { execa } from "execa";
import { ensurePlugin } from "../src/backend/runtime/plugin_fetch.ts";
import { ensureOpenblas } from "../src/backend/runtime/cpu_gemm.ts";
import { DEFAULT_PLUGIN, PLUGINS, isPluginName, type PluginName } from "../src/backend/runtime/plugins.ts";
import { ADDON_PATH } from "../src/backend/runtime/native.ts";

const root = dirname(dirname(fileURLToPath(import.meta.url)));
const log = (line: string) => console.log(`tessera install: ${line}`);

class InstallError extends Error {}

/** Builds native/build/tessera_pjrt.node with g++ unless the stamp says sources, header and flags are unchanged. */
async function buildAddon(headerPath: string): Promise<void> {
  const nativeDir = join(root, "native");
  const sources = readdirSync(nativeDir)
    .filter((f) => f.endsWith(".cc"))
    .sort();
  const headers = readdirSync(nativeDir)
    .filter((f) => f.endsWith(".h"))
    .sort();
  const require = createRequire(import.meta.url);
  const napiInclude = join(dirname(require.resolve("node-api-headers/package.json")), "include");
  const cxx = process.env.CXX || "g++";
  const flags = [
    "-std=c++17",
    "-O2",
    "-fPIC",
    "-fvisibility=hidden",
    "-DNAPI_VERSION=8",
    "-Wall",
    "-Wextra",
    "-Wno-unused-parameter",
    "-Wno-missing-field-initializers",
    `-I${napiInclude}`,
    `-I${dirname(headerPath)}`,
  ];
  const version = await execa(cxx, ["--version"], { reject: false });
  if (version.failed) {
    throw new InstallError(
      `no C++ compiler: \`${cxx} --version\` failed; install g++ (e.g. \`apt-get install g++\`) or set CXX`,
    );
  }
  const hash = createHash("sha256");
  hash.update(version.stdout).update(flags.join(" ")).update(readFileSync(headerPath));
  hash.update(readFileSync(join(napiInclude, "node_api.h")));
  for (const f of [...sources, ...headers]) hash.update(f).update(readFileSync(join(nativeDir, f)));
  const stamp = hash.digest("hex");
  const stampPath = join(nativeDir, "build", "stamp");
  if (existsSync(ADDON_PATH) && existsSync(stampPath) && readFileSync(stampPath, "utf8").trim() === stamp) {
    log(`addon up to date (${ADDON_PATH})`);
    return;
  }
  mkdirSync(dirname(ADDON_PATH), { recursive: true });
  const tmp = `${ADDON_PATH}.tmp-${process.pid}`;
  log(`building addon: ${cxx} ${sources.join(" ")} (PJRT header ${headerPath})`);
  const t0 = Date.now();
  const fail = (what: string, r: { all?: unknown; message?: unknown }) => {
    throw new InstallError(`building the addon failed (${what}):\n${String(r.all ?? r.message)}`);
  };
  // One compiler per source, in parallel, then one link.
  const objects = sources.map((s) => join(dirname(ADDON_PATH), s.replace(/\.cc$/, ".o")));
  const compiled = await Promise.all(
    sources.map((s, i) =>
      execa(cxx, [...flags, "-c", join(nativeDir, s), "-o", objects[i]!], { reject: false, all: true }),
    ),
  );
  compiled.forEach((r, i) => {
    r.failed && fail(sources[i]!, r);
  });
  const linked = await execa(cxx, ["-shared", "-o", tmp, ...objects, "-ldl", "-pthread"], { reject: false, all: true });
  for (const o of objects) rmSync(o, { force: true });
  if (linked.failed) {
    rmSync(tmp, { force: true });
    fail("link", linked);
  }
  renameSync(tmp, ADDON_PATH);
  writeFileSync(stampPath, `${stamp}\n`);
  log(`built ${ADDON_PATH} in ${((Date.now() - t0) / 1000).toFixed(1)} s`);
}

async function main(): Promise<void> {
  const args = process.argv.slice(2);
  const pluginArg = args.indexOf("--plugin");
  if (pluginArg >= 0) {
    const name = args[pluginArg + 1] ?? "";
    if (!isPluginName(name))
      throw new InstallError(`unknown plugin ${JSON.stringify(name)}; known: ${Object.keys(PLUGINS).join(", ")}`);
    await ensurePlugin(name, log);
    return;
  }
  // The default plugin's wheel also carries the pjrt_c_api.h the addon is compiled against.
  const main = await ensurePlugin(DEFAULT_PLUGIN, log);
  if (process.env.TESSERA_SKIP_LAMMPS) {
    log("TESSERA_SKIP_LAMMPS set: not fetching the cross-check plugin");
  } else {
    const other: PluginName = "lammps-jax-pjrt-cpu";
    try {
      await ensurePlugin(other, log);
    } catch (e) {
      // A cross-check only: its tests skip without it.
      log(`warning: could not fetch ${other} (${(e as Error).message}); its cross-check tests will be skipped`);
    }
  }
  try {
    await ensureOpenblas(log);
  } catch (e) {
    // A speed-up only: programs use XLA's dots without it (and say so).
    log(`warning: could not fetch OpenBLAS (${(e as Error).message}); f32 matmuls will use XLA's dots`);
  }
  await buildAddon(main.header!);
  log("done");
}

main().catch((e: unknown) => {
  console.error(`tessera install: FAILED: ${(e as Error).message}`);
  process.exit(1);
});
