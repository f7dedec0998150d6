// Test helpers: random HF checkpoints and PEFT adapters on disk, their float64 twins for the reference model.
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import { fromFloat32, toFloat32, type HostTensor } from "../../src/formats/host_tensor.ts";
import { llamaWeightSpecs, saveHfCheckpoint } from "../../src/formats/hf_checkpoint.ts";
import type { LlamaConfig } from "../../src/formats/hf_config.ts";
import { loraTargets, saveAdapter, type LoraAdapter, type LoraConfig } from "../../src/formats/peft.ts";
import { mulberry32 } from "../../models/lora.ts";
import type { RefLora } from "./reference.ts";

export const REPO_ROOT = resolve(fileURLToPath(new URL("../..", import.meta.url)));
export const FIXTURE = resolve(REPO_ROOT, "../shared/fixtures/llama-tiny-a");

/** Uniform(-a, a) values from a seeded generator. */
export function uniform(n: number, a: number, rand: () => number): Float32Array {
  const v = new Float32Array(n);
  for (let i = 0; i < n; i++) v[i] = (2 * rand() - 1) * a;
  return v;
}

/** Every weight of `cfg` in HF layout, random (norm weights around 1 so they matter). */
export function randomHfTensors(cfg: LlamaConfig, seed = 1, scale = 0.15): Map<string, HostTensor> {
  const rand = mulberry32(seed);
  const out = new Map<string, HostTensor>();
  for (const s of llamaWeightSpecs(cfg)) {
    const n = s.shape.reduce((a, b) => a * b, 1);
    const v = s.name.endsWith("norm.weight")
      ? uniform(n, 0.3, rand).map((x) => 1 + x)
      : uniform(n, s.name.includes("embed") ? 1 : scale, rand);
    out.set(s.name, fromFloat32(v, s.shape));
  }
  return out;
}

export function f64(tensors: Map<string, HostTensor>): Map<string, Float64Array> {
  return new Map([...tensors].map(([k, t]) => [k, Float64Array.from(toFloat32(t))]));
}

/** A PEFT adapter for `cfg` with random non-zero A and B (so every path and gradient matters). */
export function randomAdapter(llama: LlamaConfig, config: LoraConfig, seed = 2): LoraAdapter {
  const rand = mulberry32(seed);
  const layers: LoraAdapter["layers"] = Array.from({ length: llama.numLayers }, () => ({}));
  for (const t of loraTargets(config, llama)) {
    layers[t.layer]![t.module] = {
      A: fromFloat32(uniform(t.r * t.inFeatures, 0.3, rand), [t.r, t.inFeatures]),
      B: fromFloat32(uniform(t.outFeatures * t.r, 0.3, rand), [t.outFeatures, t.r]),
    };
  }
  return { config, layers };
}

/** The adapter for the float64 reference. */
export function refLora(adapter: LoraAdapter, llama: LlamaConfig): RefLora {
  const targets = loraTargets(adapter.config, llama);
  const out: RefLora = Array.from({ length: llama.numLayers }, () => ({}));
  for (const t of targets) {
    const p = adapter.layers[t.layer]![t.module]!;
    out[t.layer]![t.module] = {
      A: Float64Array.from(toFloat32(p.A)),
      B: Float64Array.from(toFloat32(p.B)),
      r: t.r,
      scale: t.scale,
    };
  }
  return out;
}

/** A fresh temporary directory, removed by the returned cleanup. */
export async function tempDir(tag: string): Promise<{ dir: string; cleanup: () => Promise<void> }> {
  const dir = await mkdtemp(join(tmpdir(), `tessera-${tag}-`));
  return { dir, cleanup: () => rm(dir, { recursive: true, force: true }) };
}

/** Writes a checkpoint (and optionally an adapter) for `cfg` into `dir`; returns the tensors written. */
export async function writeModel(
  dir: string,
  cfg: LlamaConfig,
  opts: { seed?: number; adapter?: LoraAdapter } = {},
): Promise<Map<string, HostTensor>> {
  const tensors = randomHfTensors(cfg, opts.seed ?? 1);
  await saveHfCheckpoint(dir, cfg, tensors);
  if (opts.adapter) await saveAdapter(dir, opts.adapter, cfg);
  return tensors;
}

/** Maximum of |a - b| / max|b| (normwise relative error). */
export function relErr(a: ArrayLike<number>, b: ArrayLike<number>): number {
  let d = 0,
    m = 0;
  for (let i = 0; i < b.length; i++) {
    d = Math.max(d, Math.abs(a[i]! - b[i]!));
    m = Math.max(m, Math.abs(b[i]!));
  }
  return d / m;
}

/** Token ids [B][S] and labels with the first `masked` positions set to -100. */
export function batch(
  B: number,
  S: number,
  vocab: number,
  masked: number,
  seed = 3,
): { tokens: number[][]; labels: number[][] } {
  const rand = mulberry32(seed);
  const tokens = Array.from({ length: B }, () => Array.from({ length: S }, () => Math.floor(rand() * vocab)));
  const labels = tokens.map((row) => row.map((t, i) => (i < masked ? -100 : t)));
  return { tokens, labels };
}

export function i32(rows: number[][]): HostTensor {
  return fromFloat32(rows.flat(), [rows.length, rows[0]!.length], "I32");
}
