// Shared pieces of the runtime tests: the client under test, small StableHLO modules, fake plugins, float helpers.
import { execFileSync } from "node:child_process";
import v8 from "node:v8";
import vm from "node:vm";
import { existsSync, mkdtempSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { dirname, join } from "node:path";
import { getClient, type Client, type ClientOptions } from "../../src/backend/runtime/index.ts";
import { cachedPluginFiles } from "../../src/backend/runtime/plugins.ts";

/** A full garbage collection (finalizers of dropped native handles run in it). */
export const gc: () => void = (() => {
  v8.setFlagsFromString("--expose-gc");
  return vm.runInNewContext("gc") as () => void;
})();

export const settle = (): Promise<void> => new Promise((r) => setImmediate(r));

/** Collects earlier garbage, so that counts of live native objects change only by what a test does. */
export async function quiesce(): Promise<void> {
  gc();
  await settle();
  gc();
}

/** CPU devices of the test client: 8, or $TESSERA_TEST_CPU_DEVICES (1 mimics the one-GPU machine on CPU). */
export const TEST_CPU_DEVICES = Number(process.env.TESSERA_TEST_CPU_DEVICES ?? 8);

/**
 * The client the suite runs on: $TESSERA_PJRT_PLUGIN if set (how scripts/gpu-check.sh points the
 * same tests at the CUDA plugin), else the default CPU plugin with 8 devices.
 */
export function testClient(opts: ClientOptions = {}): Promise<Client> {
  return getClient({ ...(TEST_CPU_DEVICES !== 8 ? { cpuDeviceCount: TEST_CPU_DEVICES } : {}), ...opts });
}

/** Whether the default CPU plugin is in the cache (it is not carried to the GPU machine). */
export function cpuPluginCached(): boolean {
  return existsSync(cachedPluginFiles("xla-cpu-pjrt").plugin);
}

/** Whether the fake plugins can be built: pjrt_c_api.h in the cache and a C compiler on PATH. */
export function headerCached(): boolean {
  const h = cachedPluginFiles("xla-cpu-pjrt").header;
  if (h === undefined || !existsSync(h)) return false;
  try {
    execFileSync(process.env.CC || "gcc", ["--version"], { stdio: "ignore" });
    return true;
  } catch {
    return false;
  }
}

/** Whether the cross-check plugin (PJRT 0.115, the CUDA plugin's XLA) is in the cache. */
export function lammpsAvailable(): boolean {
  return existsSync(cachedPluginFiles("lammps-jax-pjrt-cpu").plugin);
}

export const ADD_F32 = `module {
  func.func @main(%arg0: tensor<4xf32>, %arg1: tensor<4xf32>) -> tensor<4xf32> {
    %0 = stablehlo.add %arg0, %arg1 : tensor<4xf32>
    return %0 : tensor<4xf32>
  }
}`;

export function matmulModule(m: number, k: number, n: number, dtype = "f32"): string {
  return `module {
  func.func @main(%a: tensor<${m}x${k}x${dtype}>, %b: tensor<${k}x${n}x${dtype}>) -> tensor<${m}x${n}x${dtype}> {
    %0 = stablehlo.dot_general %a, %b, contracting_dims = [1] x [0] : (tensor<${m}x${k}x${dtype}>, tensor<${k}x${n}x${dtype}>) -> tensor<${m}x${n}x${dtype}>
    return %0 : tensor<${m}x${n}x${dtype}>
  }
}`;
}

export const REDUCE_SUM_ROWS = `module {
  func.func @main(%arg0: tensor<4x8xf32>) -> tensor<4xf32> {
    %init = stablehlo.constant dense<0.000000e+00> : tensor<f32>
    %0 = stablehlo.reduce(%arg0 init: %init) applies stablehlo.add across dimensions = [1] : (tensor<4x8xf32>, tensor<f32>) -> tensor<4xf32>
    return %0 : tensor<4xf32>
  }
}`;

/** Deterministic pseudo-random floats in [-1, 1). */
export function randomF32(n: number, seed = 1): Float32Array {
  const out = new Float32Array(n);
  let s = seed >>> 0 || 1;
  for (let i = 0; i < n; i++) {
    s ^= s << 13;
    s ^= s >>> 17;
    s ^= s << 5;
    out[i] = ((s >>> 0) / 2 ** 32) * 2 - 1;
  }
  return out;
}

/** Row-major m x k times k x n, accumulated in f64. */
export function matmulRef(a: Float32Array, b: Float32Array, m: number, k: number, n: number): Float32Array {
  const out = new Float32Array(m * n);
  for (let i = 0; i < m; i++) {
    for (let j = 0; j < n; j++) {
      let acc = 0;
      for (let p = 0; p < k; p++) acc += a[i * k + p]! * b[p * n + j]!;
      out[i * n + j] = acc;
    }
  }
  return out;
}

export function maxAbsDiff(a: ArrayLike<number>, b: ArrayLike<number>): number {
  if (a.length !== b.length) return Infinity;
  let m = 0;
  for (let i = 0; i < a.length; i++) m = Math.max(m, Math.abs(a[i]! - b[i]!));
  return m;
}

/** f32 -> bf16 bits (round to nearest even) and back. */
export function toBf16Bits(x: number): number {
  const f = new Float32Array([x]);
  const u = new Uint32Array(f.buffer)[0]!;
  return ((u + 0x7fff + ((u >>> 16) & 1)) >>> 16) & 0xffff;
}

/**
 * Builds a fake PJRT plugin .so (test/runtime/fixtures/fake_plugin.c) against the cached header:
 * every function slot points at a stub, PJRT_Api.struct_size and the major version are as given.
 */
export function buildFakePlugin(opts: { cutAt?: string; major?: number }): string {
  const header = cachedPluginFiles("xla-cpu-pjrt").header!;
  const dir = mkdtempSync(join(tmpdir(), "tessera-fake-plugin-"));
  const out = join(dir, "fake_pjrt.so");
  const src = join(dirname(new URL(import.meta.url).pathname), "fixtures", "fake_plugin.c");
  const defs = [`-DFAKE_MAJOR=${opts.major ?? 0}`, ...(opts.cutAt ? [`-DFAKE_CUT_AT=${opts.cutAt}`] : [])];
  execFileSync(process.env.CC || "gcc", ["-shared", "-fPIC", "-O1", `-I${dirname(header)}`, ...defs, src, "-o", out]);
  return out;
}

/** Writes a file that is a shared object but not a PJRT plugin. */
export function buildNotAPlugin(): string {
  const dir = mkdtempSync(join(tmpdir(), "tessera-not-plugin-"));
  const src = join(dir, "x.c");
  writeFileSync(src, "int tessera_not_a_plugin(void) { return 42; }\n");
  const out = join(dir, "not_a_plugin.so");
  execFileSync(process.env.CC || "gcc", ["-shared", "-fPIC", src, "-o", out]);
  return out;
}
