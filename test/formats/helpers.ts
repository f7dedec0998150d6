// Shared builders for the format tests: temp dirs, hand-made (possibly corrupt) safetensors, synthetic Llama weights.

import { mkdtemp, rm, writeFile, readdir } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fromFloat32, type HostTensor } from "../../src/formats/host_tensor.ts";
import type { HostDType } from "../../src/ir/types.ts";
import { llamaWeightSpecs } from "../../src/formats/hf_checkpoint.ts";
import type { LlamaConfig } from "../../src/formats/hf_config.ts";

export const FIXTURE = new URL("../../../shared/fixtures/llama-tiny-a/", import.meta.url).pathname;

const made: string[] = [];

export async function tempDir(): Promise<string> {
  const d = await mkdtemp(join(tmpdir(), "tessera-formats-"));
  made.push(d);
  return d;
}

export async function removeTempDirs(): Promise<void> {
  await Promise.all(made.splice(0).map((d) => rm(d, { recursive: true, force: true })));
}

export async function listDir(dir: string): Promise<string[]> {
  return (await readdir(dir)).sort();
}

/**
 * A safetensors file from an explicit header (object or raw text) and data bytes, with no validation, so tests
 * can build every kind of broken file. `headerLength` overrides the 8-byte prefix.
 */
export function rawSafetensors(
  header: unknown,
  data: Uint8Array | number,
  opts: { headerLength?: bigint } = {},
): Uint8Array {
  const text = typeof header === "string" ? header : JSON.stringify(header);
  const h = new TextEncoder().encode(text);
  const body = typeof data === "number" ? new Uint8Array(data) : data;
  const out = new Uint8Array(8 + h.byteLength + body.byteLength);
  new DataView(out.buffer).setBigUint64(0, opts.headerLength ?? BigInt(h.byteLength), true);
  out.set(h, 8);
  out.set(body, 8 + h.byteLength);
  return out;
}

export async function writeRaw(dir: string, name: string, bytes: Uint8Array): Promise<string> {
  const p = join(dir, name);
  await writeFile(p, bytes);
  return p;
}

/** Deterministic pseudo-random floats in [-scale, scale). */
export function randomFloats(n: number, seed: number, scale = 1): Float32Array {
  let s = seed >>> 0 || 1;
  const out = new Float32Array(n);
  for (let i = 0; i < n; i++) {
    s ^= s << 13;
    s >>>= 0;
    s ^= s >>> 17;
    s ^= s << 5;
    s >>>= 0;
    out[i] = ((s / 2 ** 32) * 2 - 1) * scale;
  }
  return out;
}

/** A full set of random Llama weights for `cfg`, in `dtype`. */
export function llamaTensors(cfg: LlamaConfig, dtype: HostDType = "F32", seed = 1): Map<string, HostTensor> {
  const out = new Map<string, HostTensor>();
  llamaWeightSpecs(cfg).forEach((s, i) => {
    const n = s.shape.reduce((a, b) => a * b, 1);
    out.set(s.name, fromFloat32(randomFloats(n, seed * 1000 + i, 0.1), s.shape, dtype));
  });
  return out;
}
