// Shared by the data tests: the SmolLM2 tokenizer (fetched once per machine), temp folders, and HF-folder tokenizers with a chosen template.
import { mkdir, mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { GgufFile } from "../../src/formats/gguf.ts";
import { ensureModel } from "../../src/formats/model_fetch.ts";
import { Tokenizer, ggufTokenizerJson } from "../../src/text/tokenizer.ts";

export const SMOLLM = "smollm2-135m-instruct";

/** The cached SmolLM2 GGUF; fetched on first use (never skipped: a machine that cannot fetch it fails). */
export async function smollmPath(): Promise<string> {
  return (await ensureModel(SMOLLM, (line) => console.log(`fetch: ${line}`))).path;
}

export async function smollmTokenizer(): Promise<Tokenizer> {
  return Tokenizer.fromGguf(await smollmPath());
}

export async function tempDir(tag: string): Promise<{ dir: string; cleanup: () => Promise<void> }> {
  const dir = await mkdtemp(join(tmpdir(), `tessera-${tag}-`));
  return { dir, cleanup: () => rm(dir, { recursive: true, force: true }) };
}

/**
 * An HF tokenizer folder with SmolLM2's vocabulary and `chatTemplate` (none when undefined): a model whose
 * template is missing or raises, without needing such a model on disk.
 */
export async function smollmFolderWithTemplate(dir: string, chatTemplate: string | undefined): Promise<Tokenizer> {
  const path = await smollmPath();
  const g = await GgufFile.open(path);
  try {
    const { json, config } = ggufTokenizerJson(path, (k) => g.get(k));
    await mkdir(dir, { recursive: true });
    await writeFile(join(dir, "tokenizer.json"), JSON.stringify(json));
    const cfg = chatTemplate === undefined ? config : { ...config, chat_template: chatTemplate };
    await writeFile(join(dir, "tokenizer_config.json"), JSON.stringify(cfg));
  } finally {
    await g.close();
  }
  return Tokenizer.fromHfFolder(dir);
}

/** Writes `records` as JSON lines into dir/name and returns the path. */
export async function writeJsonl(dir: string, name: string, records: unknown[]): Promise<string> {
  const file = join(dir, name);
  await writeFile(file, records.map((r) => `${JSON.stringify(r)}\n`).join(""));
  return file;
}
