// The SmolLM2 tokenizer and chat template, from its GGUF and as an HF folder, against what transformers says (fixture).
//
// The model is fetched into the cache on first use, as the GGUF model tests do: a machine that cannot fetch it fails
// here, it is never skipped.
import { beforeAll, describe, expect, it } from "vitest";
import { readFileSync } from "node:fs";
import { mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import { execa } from "execa";
import { GgufFile } from "../../src/formats/gguf.ts";
import { ensureModel } from "../../src/formats/model_fetch.ts";
import { Tokenizer, TokenizerError, ggufTokenizerJson } from "../../src/text/tokenizer.ts";
import { applyChatTemplate, ChatTemplateError, type ChatMessage } from "../../src/text/chat_template.ts";

const ROOT = resolve(fileURLToPath(new URL("../..", import.meta.url)));
const FIXTURE = resolve(ROOT, "../shared/fixtures/smollm2-135m");
const NAME = "smollm2-135m-instruct";

interface Expected {
  tokenize: { text: string; ids: number[] }[];
  chats: { messages: ChatMessage[]; prompt_text: string; prompt_ids: number[] }[];
}
const expected = JSON.parse(readFileSync(join(FIXTURE, "expected.json"), "utf8")) as Expected;

let path: string;
let tok: Tokenizer;
beforeAll(async () => {
  path = (await ensureModel(NAME, (line) => console.log(`fetch: ${line}`))).path;
  tok = await Tokenizer.fromGguf(path);
}, 600_000);

describe("the tokenizer built from the SmolLM2 GGUF", () => {
  it("has fixture entries to check (so that the loops below cannot pass empty)", () => {
    expect(expected.tokenize.length).toBeGreaterThanOrEqual(4);
    expect(expected.chats.length).toBeGreaterThanOrEqual(2);
  });

  it("gives transformers' ids for every fixture text, with and without special tokens (add_bos_token is false)", () => {
    for (const { text, ids } of expected.tokenize) {
      expect(tok.encode(text, { addSpecialTokens: false }), text).toEqual(ids);
      expect(tok.encode(text), text).toEqual(ids);
    }
  });

  it("knows the special tokens: bos <|im_start|> 1, eos/pad <|im_end|> 2, the 17 control tokens", () => {
    expect([tok.bosToken, tok.bosId, tok.eosToken, tok.eosId, tok.padId]).toEqual([
      "<|im_start|>",
      1,
      "<|im_end|>",
      2,
      2,
    ]);
    expect(tok.specialTokens.size).toBe(17);
    expect(tok.specialTokens.get("<|endoftext|>")).toBe(0);
    expect(tok.specialTokens.get("<empty_output>")).toBe(16);
  });

  it("decodes what it encodes back to the same text, byte for byte", () => {
    const texts = [
      ...expected.tokenize.map((t) => t.text),
      "emoji 🦙🔥, CJK 日本語のテキスト, Arabic مرحبا, combining e\u0301",
      "code: def f(x):\n\treturn x ** 2  # 1e-5\r\n",
      "<|im_start|>user\nhi<|im_end|>",
      "",
    ];
    for (const text of texts) expect(tok.decode(tok.encode(text, { addSpecialTokens: false })), text).toBe(text);
  });

  it("decodes no ids to the empty text, and refuses an id past the vocabulary by number", () => {
    expect(tok.decode([])).toBe("");
    expect(() => tok.decode([19556, 49152])).toThrow(TokenizerError);
    expect(() => tok.decode([19556, 49152])).toThrow(/token id 49152/);
  });

  it("matches special tokens whole in text, and skips them on decode when asked", () => {
    expect(tok.encode("<|im_start|>user<|im_end|>", { addSpecialTokens: false })).toEqual([1, 4093, 2]);
    const chat = expected.chats[0];
    if (!chat) throw new Error("fixture has no chats");
    expect(tok.decode(chat.prompt_ids, { skipSpecialTokens: true })).toBe(
      chat.prompt_text.replace(/<\|im_(start|end)\|>/g, ""),
    );
  });

  it("renders every fixture chat byte for byte as transformers does, and tokenizes it to the fixture's prompt_ids", () => {
    for (const { messages, prompt_text, prompt_ids } of expected.chats) {
      const prompt = applyChatTemplate(tok, messages, { addGenerationPrompt: true });
      expect(prompt).toBe(prompt_text);
      expect(tok.encode(prompt, { addSpecialTokens: false })).toEqual(prompt_ids);
    }
  });

  it("leaves the assistant header out without the generation prompt", () => {
    const chat = expected.chats[0];
    if (!chat) throw new Error("fixture has no chats");
    const prompt = applyChatTemplate(tok, chat.messages, { addGenerationPrompt: false });
    expect(`${prompt}<|im_start|>assistant\n`).toBe(chat.prompt_text);
  });
});

describe("the same tokenizer as a Hugging Face folder (tokenizer.json + tokenizer_config.json)", () => {
  let dir: string;
  beforeAll(async () => {
    dir = await mkdtemp(join(tmpdir(), "tessera-tok-"));
  });

  async function folder(config: Record<string, unknown>): Promise<Tokenizer> {
    const g = await GgufFile.open(path);
    try {
      const { json, template } = ggufTokenizerJson(path, (k) => g.get(k));
      await writeFile(join(dir, "tokenizer.json"), JSON.stringify(json));
      await writeFile(join(dir, "tokenizer_config.json"), JSON.stringify({ chat_template: template, ...config }));
    } finally {
      await g.close();
    }
    return Tokenizer.fromHfFolder(dir);
  }

  it("encodes and renders as the GGUF does; add_bos_token true puts BOS in front only with special tokens", async () => {
    const t = await folder({ bos_token: { content: "<|im_start|>" }, eos_token: "<|im_end|>", add_bos_token: true });
    for (const { text, ids } of expected.tokenize) {
      expect(t.encode(text, { addSpecialTokens: false })).toEqual(ids);
      expect(t.encode(text)).toEqual([1, ...ids]);
    }
    for (const { messages, prompt_text } of expected.chats) expect(applyChatTemplate(t, messages)).toBe(prompt_text);
    expect([t.bosId, t.eosId]).toEqual([1, 2]);
  });

  it("a folder without tokenizer.json is a TokenizerError naming the file", async () => {
    const empty = await mkdtemp(join(tmpdir(), "tessera-tok-empty-"));
    try {
      await expect(Tokenizer.fromHfFolder(empty)).rejects.toThrow(TokenizerError);
      await expect(Tokenizer.fromHfFolder(empty)).rejects.toThrow(/tokenizer\.json/);
    } finally {
      await rm(empty, { recursive: true, force: true });
    }
  });

  it("a model without a chat template is a ChatTemplateError saying where one was expected", async () => {
    const t = await folder({ chat_template: undefined });
    expect(() => applyChatTemplate(t, [{ role: "user", content: "hi" }])).toThrow(ChatTemplateError);
    expect(() => applyChatTemplate(t, [{ role: "user", content: "hi" }])).toThrow(/no chat template/);
  });

  it("a template that raises is a ChatTemplateError carrying its message", async () => {
    const t = await folder({ chat_template: "{{ raise_exception('roles must alternate') }}" });
    expect(() => applyChatTemplate(t, [{ role: "user", content: "hi" }])).toThrow(/roles must alternate/);
  });

  it("cleans up", async () => {
    await rm(dir, { recursive: true, force: true });
  });
});

describe("GGUF tokenizer metadata Tessera cannot build", () => {
  const meta = (over: Record<string, unknown>) => (k: string) =>
    ({
      "tokenizer.ggml.model": "gpt2",
      "tokenizer.ggml.pre": "smollm",
      "tokenizer.ggml.tokens": ["a"],
      "tokenizer.ggml.merges": [],
      ...over,
    })[k] as never;

  it("a tokenizer kind other than gpt2 and llama (a unigram 't5' one) is refused by name", () => {
    expect(() => ggufTokenizerJson("m.gguf", meta({ "tokenizer.ggml.model": "t5" }))).toThrow(
      /m\.gguf: tokenizer\.ggml\.model is "t5"; Tessera builds byte-level BPE \("gpt2"\) and SentencePiece BPE \("llama"\)/,
    );
  });

  it("a byte-level vocabulary without merges is refused", () => {
    expect(() => ggufTokenizerJson("m.gguf", meta({ "tokenizer.ggml.merges": undefined }))).toThrow(
      /byte-level \("gpt2"\) vocabulary needs tokenizer\.ggml\.merges/,
    );
  });

  it("an unknown pre-tokenizer type is refused by name, listing the known ones", () => {
    expect(() => ggufTokenizerJson("m.gguf", meta({ "tokenizer.ggml.pre": "qwen2" }))).toThrow(
      /tokenizer\.ggml\.pre is "qwen2".*known: .*smollm/,
    );
  });
});

describe("tessera tokenize", () => {
  const BIN = join(ROOT, "bin", "tessera.mjs");

  it("--json prints the fixture's ids for each text", async () => {
    for (const { text, ids } of expected.tokenize) {
      const r = await execa("node", [BIN, "tokenize", "--model", NAME, "--text", text, "--json"]);
      expect(JSON.parse(r.stdout)).toEqual({ ids });
    }
  });

  it("without --json prints the ids separated by spaces; --chat renders and tokenizes the chat", async () => {
    const first = expected.tokenize[0];
    const chat = expected.chats[0];
    if (!first || !chat) throw new Error("fixture is empty");
    const plain = await execa("node", [BIN, "tokenize", "--model", path, "--text", first.text]);
    expect(plain.stdout).toBe(first.ids.join(" "));
    const dir = await mkdtemp(join(tmpdir(), "tessera-tok-cli-"));
    try {
      await writeFile(join(dir, "m.json"), JSON.stringify(chat.messages));
      const r = await execa("node", [BIN, "tokenize", "--model", path, "--chat", join(dir, "m.json"), "--json"]);
      expect(JSON.parse(r.stdout)).toEqual({ ids: chat.prompt_ids, prompt: chat.prompt_text });
      await writeFile(join(dir, "bad.json"), JSON.stringify({ role: "user" }));
      const bad = await execa("node", [BIN, "tokenize", "--model", path, "--chat", join(dir, "bad.json")], {
        reject: false,
      });
      expect(bad.exitCode).toBe(1);
      expect(bad.stderr).toMatch(/--chat .*bad\.json: not an array/);
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });

  it("neither --text nor --chat is a usage error (exit 2)", async () => {
    const r = await execa("node", [BIN, "tokenize", "--model", path], { reject: false });
    expect(r.exitCode).toBe(2);
    expect(r.stderr).toMatch(/exactly one of --text and --chat/);
  });
});

describe("the GGUF pre-tokenizer types", () => {
  // A vocabulary that can merge "1" "2" into "12": smollm splits every digit on its own first (llama.cpp's \p{N}
  // split), so it never sees the pair; plain gpt2 keeps " ?\p{N}+" runs whole and merges them.
  const tokens = ["<|endoftext|>", "1", "2", "12", "a"];
  const meta = (pre: string) => (k: string) =>
    ({
      "tokenizer.ggml.model": "gpt2",
      "tokenizer.ggml.pre": pre,
      "tokenizer.ggml.tokens": tokens,
      "tokenizer.ggml.token_type": [3, 1, 1, 1, 1],
      "tokenizer.ggml.merges": ["1 2"],
    })[k] as never;
  const ids = async (pre: string, text: string) => {
    const { Tokenizer: Hf } = await import("@huggingface/tokenizers");
    const { json, config } = ggufTokenizerJson("m.gguf", meta(pre));
    return new Hf(json, config).encode(text, { add_special_tokens: false }).ids;
  };

  it("smollm splits digits one by one; gpt2 merges a run of them", async () => {
    expect(await ids("smollm", "a12")).toEqual([4, 1, 2]);
    expect(await ids("gpt2", "a12")).toEqual([4, 3]);
  });
});
