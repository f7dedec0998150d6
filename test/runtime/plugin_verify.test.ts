// Runtime: a cached plugin is checked against its cache entry's manifest (size, sha256) before dlopen can crash on it.
import { execFile } from "node:child_process";
import {
  cpSync,
  mkdirSync,
  mkdtempSync,
  openSync,
  readSync,
  closeSync,
  rmSync,
  writeFileSync,
  existsSync,
  readFileSync,
} from "node:fs";
import { createHash } from "node:crypto";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { afterAll, afterEach, describe, expect, it } from "vitest";
import { cachedPluginFiles, pluginDir, verifyCachedPlugin } from "../../src/backend/runtime/plugins.ts";
import { loadPlugin } from "../../src/backend/runtime/client.ts";

const ROOT = fileURLToPath(new URL("../../", import.meta.url));
const made: string[] = [];
afterAll(() =>
  made.forEach((d) => {
    rmSync(d, { recursive: true, force: true });
  }),
);

function tempCache(): string {
  const d = mkdtempSync(join(tmpdir(), "tessera-cache-"));
  made.push(d);
  return d;
}

/** A cache entry for xla-cpu-pjrt under `cache` holding `plugin` as its .so, with a manifest of `recorded`'s size and hash. */
function fakeEntry(cache: string, plugin: Buffer, recorded: Buffer = plugin): string {
  const dir = join(cache, "pjrt", "xla-cpu-pjrt-0.0.1");
  mkdirSync(dir, { recursive: true });
  const so = join(dir, "xla_cpu_pjrt.so");
  writeFileSync(so, plugin);
  const sha256 = createHash("sha256").update(recorded).digest("hex");
  const manifest = {
    name: "xla-cpu-pjrt",
    version: "0.0.1",
    wheelSha256: "x",
    files: { plugin: { path: so, size: recorded.length, sha256 } },
  };
  writeFileSync(join(dir, "manifest.json"), JSON.stringify(manifest));
  return so;
}

describe("cached plugin verification", () => {
  const saved = process.env.TESSERA_CACHE_DIR;
  afterEach(() => {
    if (saved === undefined) delete process.env.TESSERA_CACHE_DIR;
    else process.env.TESSERA_CACHE_DIR = saved;
  });

  it("refuses a truncated cached plugin with ERR_PLUGIN_CORRUPT and the command that fetches it again, not SIGBUS", async () => {
    const real = cachedPluginFiles("xla-cpu-pjrt");
    if (!existsSync(real.manifest)) return; // no plugin fetched on this machine: nothing real to truncate
    const cache = tempCache();
    const dir = join(cache, "pjrt", "xla-cpu-pjrt-0.0.1");
    mkdirSync(dir, { recursive: true });
    cpSync(real.manifest, join(dir, "manifest.json"));
    // The first 64 MiB of the real .so: what an interrupted copy leaves; dlopen maps it and dies with SIGBUS (exit 135).
    const head = Buffer.alloc(64 << 20);
    const fd = openSync(real.plugin, "r");
    const n = readSync(fd, head, 0, head.length, 0);
    closeSync(fd);
    writeFileSync(join(dir, "xla_cpu_pjrt.so"), head.subarray(0, n));
    // In a child process, so that a crash fails this test instead of killing vitest.
    const script = join(cache, "load.mts");
    writeFileSync(
      script,
      `import { getClient } from ${JSON.stringify(join(ROOT, "src/backend/runtime/index.ts"))};
try { await getClient({ plugin: "xla-cpu-pjrt" }); console.log("loaded"); } catch (e) { console.log(e.code); console.log(e.message); process.exit(1); }
`,
    );
    const r = await new Promise<{ code: number | null; signal: string | null; stdout: string }>((resolve) => {
      const child = execFile(
        process.execPath,
        ["--import", "tsx", script],
        { cwd: ROOT, env: { ...process.env, TESSERA_CACHE_DIR: cache } },
        (_e, stdout) => resolve({ code: child.exitCode, signal: child.signalCode, stdout }),
      );
    });
    expect(r).toMatchObject({ code: 1, signal: null });
    const [code, message] = r.stdout.split("\n");
    expect(code).toBe("ERR_PLUGIN_CORRUPT");
    expect(message).toBe(
      `PJRT plugin xla-cpu-pjrt: the cache entry ${dir} is damaged: ${dir}/xla_cpu_pjrt.so has ${n} bytes, the manifest records ` +
        `${JSON.parse(readFileSync(real.manifest, "utf8")).files.plugin.size} (a truncated download or copy?); loading it could crash the process. ` +
        `Fetch it again with: rm -rf '${dir}' && (cd '${ROOT.replace(/\/$/, "")}' && npx tsx scripts/install.ts --plugin xla-cpu-pjrt)`,
    );
  }, 120_000);

  it("refuses a plugin of the right size with the wrong sha256, before dlopen", () => {
    process.env.TESSERA_CACHE_DIR = tempCache();
    const so = fakeEntry(process.env.TESSERA_CACHE_DIR, Buffer.from("not the plugin"), Buffer.from("the plugin!!!!"));
    expect(() => loadPlugin(so)).toThrow(
      expect.objectContaining({
        code: "ERR_PLUGIN_CORRUPT",
        message: expect.stringContaining(
          `${so} has sha256 ${createHash("sha256").update("not the plugin").digest("hex")}, the manifest records`,
        ),
      }),
    );
    rmSync(join(pluginDir("xla-cpu-pjrt"), "manifest.json"));
    expect(() => verifyCachedPlugin("xla-cpu-pjrt")).toThrow(/its manifest .*manifest\.json cannot be read/);
  });

  it("records a verified hash, and still catches a file rewritten at the same size afterwards", () => {
    process.env.TESSERA_CACHE_DIR = tempCache();
    const so = fakeEntry(process.env.TESSERA_CACHE_DIR, Buffer.from("plugin bytes"));
    verifyCachedPlugin("xla-cpu-pjrt");
    const stamp = JSON.parse(readFileSync(join(pluginDir("xla-cpu-pjrt"), "verified.json"), "utf8"));
    expect(stamp).toMatchObject({ sha256: createHash("sha256").update("plugin bytes").digest("hex"), size: 12 });
    verifyCachedPlugin("xla-cpu-pjrt"); // from the record
    writeFileSync(so, "PLUGIN BYTES");
    expect(() => verifyCachedPlugin("xla-cpu-pjrt")).toThrow(/has sha256 .*, the manifest records/);
  });
});
