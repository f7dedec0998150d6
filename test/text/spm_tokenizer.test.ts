// A SentencePiece ("llama") vocabulary from a GGUF, against transformers' tokenizer for the same file (fixture).
//
// test/fixtures/spm_llama/ is made by scripts/fixtures/make_spm_gguf.py: a tiny Llama GGUF whose vocabulary is a
// SentencePiece BPE model with byte fallback, written as llama.cpp writes Llama-2's (scores, no merges), and the
// ids, tokens and decodings transformers gives for it.
import { describe, expect, it } from "vitest";
import { readFileSync } from "node:fs";
import { join, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import { execa } from "execa";
import { GgufFile } from "../../src/formats/gguf.ts";
import { Tokenizer, TokenizerError, ggufTokenizerJson, mergesFromScores } from "../../src/text/tokenizer.ts";

const ROOT = resolve(fileURLToPath(new URL("../..", import.meta.url)));
const DIR = join(ROOT, "test", "fixtures", "spm_llama");

interface Expected {
  gguf: string;
  vocab_size: number;
  bos_token_id: number;
  eos_token_id: number;
  unk_token_id: number;
  add_bos_token: boolean;
  encode: { text: string; ids: number[]; ids_no_special: number[]; tokens: string[] }[];
  decode: { ids: number[]; text: string; text_skip_special: string }[];
}
const expected = JSON.parse(readFileSync(join(DIR, "expected.json"), "utf8")) as Expected;
const GGUF = join(DIR, expected.gguf);
const tok = await Tokenizer.fromGguf(GGUF);

/** The GGUF's metadata with some keys replaced (undefined removes one). */
async function metadata(over: Record<string, unknown> = {}): Promise<(k: string) => never> {
  const g = await GgufFile.open(GGUF);
  const keys = [
    "general.architecture",
    "tokenizer.ggml.model",
    "tokenizer.ggml.tokens",
    "tokenizer.ggml.scores",
    "tokenizer.ggml.token_type",
    "tokenizer.ggml.bos_token_id",
    "tokenizer.ggml.eos_token_id",
    "tokenizer.ggml.unknown_token_id",
    "tokenizer.ggml.add_bos_token",
    "tokenizer.ggml.add_eos_token",
  ];
  const m = new Map<string, unknown>(keys.map((k) => [k, g.get(k)]));
  await g.close();
  for (const [k, v] of Object.entries(over)) m.set(k, v);
  return (k: string) => m.get(k) as never;
}

describe("the tokenizer built from a SentencePiece-vocabulary GGUF", () => {
  it("has fixture cases to check, among them byte fallback, leading spaces and special tokens in text", () => {
    expect(expected.encode.length).toBeGreaterThanOrEqual(15);
    const tokens = expected.encode.flatMap((e) => e.tokens);
    expect(tokens).toContain("<0xE6>");
    expect(tokens).toContain("<0x0A>");
    expect(tokens).toContain("<|im_end|>");
    expect(expected.encode.some((e) => e.text.startsWith("   "))).toBe(true);
  });

  it("gives transformers' ids for every fixture text, BOS in front by default (no add_bos_token key)", () => {
    expect(expected.add_bos_token).toBe(true);
    for (const { text, ids, ids_no_special } of expected.encode) {
      expect(tok.encode(text), JSON.stringify(text)).toEqual(ids);
      expect(tok.encode(text, { addSpecialTokens: false }), JSON.stringify(text)).toEqual(ids_no_special);
    }
  });

  it("knows bos <s> 1, eos </s> 2 and unk <unk> 0 from the metadata", () => {
    expect([tok.bosToken, tok.bosId, tok.eosToken, tok.eosId, tok.unkToken]).toEqual(["<s>", 1, "</s>", 2, "<unk>"]);
    expect([tok.bosId, tok.eosId, tok.tokenToId("<unk>")]).toEqual([
      expected.bos_token_id,
      expected.eos_token_id,
      expected.unk_token_id,
    ]);
    // Control tokens are special; the user-defined <|tool|> is matched whole but is not special.
    expect([...tok.specialTokens.keys()].sort()).toEqual(["</s>", "<s>", "<unk>", "<|im_end|>", "<|im_start|>"]);
  });

  it("decodes as transformers does, special tokens kept and skipped", () => {
    expect(expected.decode.length).toBeGreaterThan(expected.encode.length);
    for (const { ids, text, text_skip_special } of expected.decode) {
      expect(tok.decode(ids), JSON.stringify(ids)).toBe(text);
      expect(tok.decode(ids, { skipSpecialTokens: true }), JSON.stringify(ids)).toBe(text_skip_special);
    }
  });

  it("round-trips every fixture text, less the one leading space the Metaspace prefix stands for", () => {
    for (const { text, ids_no_special } of expected.encode)
      expect(tok.decode(ids_no_special), JSON.stringify(text)).toBe(text.startsWith(" ") ? text.slice(1) : text);
  });

  it("add_bos_token false in the metadata leaves BOS out; add_eos_token true puts EOS at the end", async () => {
    const noBos = Tokenizer.fromGgufMetadata(GGUF, await metadata({ "tokenizer.ggml.add_bos_token": false }));
    const eos = Tokenizer.fromGgufMetadata(GGUF, await metadata({ "tokenizer.ggml.add_eos_token": true }));
    for (const { text, ids, ids_no_special } of expected.encode) {
      expect(noBos.encode(text)).toEqual(ids_no_special);
      expect(eos.encode(text)).toEqual([...ids, expected.eos_token_id]);
    }
  });

  it("the merges derived from the scores are transformers' order: best score, then longer left, then longer right", () => {
    // "ab" scores best; "abc" splits two ways, its pieces' ids order them; equal scores keep token order.
    const tokens = ["a", "b", "c", "ab", "bc", "abc", "ca"];
    const scores = [0, 0, 0, -1, -2, -3, -2];
    expect(mergesFromScores("m.gguf", tokens, scores)).toEqual([
      ["a", "b"],
      ["b", "c"],
      ["c", "a"],
      ["ab", "c"],
      ["a", "bc"],
    ]);
    expect(() => mergesFromScores("m.gguf", tokens, [0])).toThrow(/1 entries for 7 tokens/);
  });

  it("refuses a vocabulary with neither merges nor scores, and Gemma/Phi-3 SentencePiece files, by name", async () => {
    expect(() => ggufTokenizerJson("m.gguf", () => undefined as never)).toThrow(TokenizerError);
    const noScores = await metadata({ "tokenizer.ggml.scores": undefined });
    expect(() => ggufTokenizerJson("m.gguf", noScores)).toThrow(
      /needs tokenizer\.ggml\.merges or tokenizer\.ggml\.scores/,
    );
    const gemma = await metadata({ "general.architecture": "gemma2" });
    expect(() => ggufTokenizerJson("m.gguf", gemma)).toThrow(/architecture "gemma2"/);
  });
});

describe("tessera tokenize on the SentencePiece GGUF", () => {
  it("--json prints transformers' ids, BOS included", async () => {
    const BIN = join(ROOT, "bin", "tessera.mjs");
    const cases = expected.encode.filter((e) => e.text.length > 0).slice(0, 3);
    for (const { text, ids } of cases) {
      const r = await execa("node", [BIN, "tokenize", "--model", GGUF, "--text", text, "--json"]);
      expect(JSON.parse(r.stdout)).toEqual({ ids });
    }
  });
});
