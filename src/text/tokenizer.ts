// A model's tokenizer, from an HF tokenizer.json folder or from a GGUF's metadata, run by @huggingface/tokenizers.
import { createHash } from "node:crypto";
import { readFile } from "node:fs/promises";
import { join } from "node:path";
import * as hfTokenizers from "@huggingface/tokenizers";
import { Tokenizer as HfTokenizer } from "@huggingface/tokenizers";
import { TesseraError } from "../errors.ts";
import { GgufFile, type GgufValue } from "../formats/gguf.ts";
import type { ModelSource } from "../formats/model_fetch.ts";

/** A tokenizer that cannot be built: a missing or malformed file, a GGUF tokenizer kind Tessera does not know. */
export class TokenizerError extends TesseraError {
  constructor(message: string, cause?: unknown) {
    super(message, { code: "ERR_TOKENIZER", cause });
  }
}

/** The parts of tokenizer_config.json Tessera reads; special tokens may be strings or serialized AddedTokens. */
export interface TokenizerConfig {
  bos_token?: string | { content: string } | null;
  eos_token?: string | { content: string } | null;
  pad_token?: string | { content: string } | null;
  unk_token?: string | { content: string } | null;
  add_bos_token?: boolean;
  add_eos_token?: boolean;
  chat_template?: string | { name: string; template: string }[];
}

/** A tokenizer.json added_tokens entry. */
interface AddedTokenJson {
  id: number;
  content: string;
  single_word: boolean;
  lstrip: boolean;
  rstrip: boolean;
  normalized: boolean;
  special: boolean;
}

export interface EncodeOptions {
  /** Add what the model adds around a text (BOS when add_bos_token, ...), as transformers' default does (default true). */
  addSpecialTokens?: boolean;
}

export interface DecodeOptions {
  /** Leave out special tokens (`<|im_end|>`, BOS, ...) (default false). */
  skipSpecialTokens?: boolean;
}

// GPT-2's split, which llama.cpp's byte-level pre-types apply after their own (llama-vocab.cpp).
const GPT2_SPLIT = String.raw`'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)`;
const LLAMA3_SPLIT = String.raw`(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+`;

/**
 * `tokenizer.ggml.pre` -> the regexes llama.cpp splits with, in order (each applied to the pieces of the last).
 * `smollm` and its group split every digit on its own first, as SmolLM's own tokenizer.json does with
 * Digits(individual_digits); then GPT-2's split. Only the kinds Tessera has checked against a reference are here.
 */
const PRE_SPLITS: Readonly<Record<string, readonly string[]>> = {
  gpt2: [GPT2_SPLIT],
  default: [GPT2_SPLIT],
  smollm: [String.raw`\p{N}`, GPT2_SPLIT],
  starcoder: [String.raw`\p{N}`, GPT2_SPLIT],
  refact: [String.raw`\p{N}`, GPT2_SPLIT],
  "command-r": [String.raw`\p{N}`, GPT2_SPLIT],
  codeshell: [String.raw`\p{N}`, GPT2_SPLIT],
  exaone: [String.raw`\p{N}`, GPT2_SPLIT],
  "llama-bpe": [LLAMA3_SPLIT],
  llama3: [LLAMA3_SPLIT],
};

/** llama.cpp's token_type values (llama.h: LLAMA_TOKEN_TYPE_*). */
const TOKEN_TYPE_CONTROL = 3;
const TOKEN_TYPE_USER_DEFINED = 4;

/** GPT-2's byte -> printable character table, which byte-level vocabularies are spelled in. */
function bytesToUnicode(): string[] {
  const table: string[] = [];
  let extra = 0;
  for (let b = 0; b < 256; b++) {
    const printable = (b >= 0x21 && b <= 0x7e) || (b >= 0xa1 && b <= 0xac) || (b >= 0xae && b <= 0xff);
    table.push(String.fromCodePoint(printable ? b : 256 + extra++));
  }
  return table;
}

function tokenText(t: TokenizerConfig["bos_token"]): string | undefined {
  if (t === null || t === undefined) return undefined;
  return typeof t === "string" ? t : t.content;
}

/**
 * A model's tokenizer. `encode`/`decode` are those of @huggingface/tokenizers on the model's tokenizer.json (built
 * in memory for a GGUF); the special token strings and the chat template come from its config.
 */
export class Tokenizer {
  readonly bosToken: string | undefined;
  readonly eosToken: string | undefined;
  readonly padToken: string | undefined;
  readonly unkToken: string | undefined;
  /** The Jinja chat template the model ships, if any. */
  readonly chatTemplate: string | undefined;
  /**
   * sha256 of everything that decides what encode and the chat template produce (tokenizer.json as loaded, the
   * config, the template): two tokenizers with the same identity tokenize alike, so cached tokenizations key on it.
   */
  readonly identity: string;
  private readonly hf: HfTokenizer;
  private readonly specials: ReadonlyMap<string, number>;

  private constructor(
    /** Where it came from, for messages. */
    readonly source: string,
    tokenizerJson: Record<string, unknown>,
    config: TokenizerConfig,
    chatTemplate: string | undefined,
  ) {
    const json = withAddedSpecials(tokenizerJson, config);
    try {
      this.hf = new HfTokenizer(json, config);
    } catch (e) {
      throw new TokenizerError(`${source}: @huggingface/tokenizers cannot load this tokenizer: ${String(e)}`, e);
    }
    rustByteFallback(this.hf.decoder);
    this.bosToken = tokenText(config.bos_token);
    this.eosToken = tokenText(config.eos_token);
    this.padToken = tokenText(config.pad_token);
    this.unkToken = tokenText(config.unk_token);
    this.chatTemplate = chatTemplate;
    this.identity = createHash("sha256")
      .update(JSON.stringify([json, config, chatTemplate ?? null]))
      .digest("hex");
    const added = (json.added_tokens ?? []) as AddedTokenJson[];
    this.specials = new Map(added.filter((t) => t.special).map((t) => [t.content, t.id]));
  }

  /** From a Hugging Face folder: tokenizer.json, plus tokenizer_config.json and chat_template.jinja when present. */
  static async fromHfFolder(dir: string): Promise<Tokenizer> {
    const jsonPath = join(dir, "tokenizer.json");
    const tokenizerJson = await readJson(jsonPath, true);
    const config = ((await readJson(join(dir, "tokenizer_config.json"), false)) ?? {}) as TokenizerConfig;
    // transformers prefers a chat_template.jinja file to the config's chat_template, so do we.
    const jinja = await readFile(join(dir, "chat_template.jinja"), "utf8").catch(() => undefined);
    let template = jinja;
    if (template === undefined && typeof config.chat_template === "string") template = config.chat_template;
    if (template === undefined && Array.isArray(config.chat_template))
      template = config.chat_template.find((t) => t.name === "default")?.template;
    return new Tokenizer(dir, tokenizerJson as Record<string, unknown>, config, template);
  }

  /**
   * From a GGUF's tokenizer metadata: the tokenizer.json transformers' GGUF converter would build, made in memory
   * (byte-level BPE over tokens + merges, the pre-type's split, control tokens special, ByteLevel decoding).
   */
  static async fromGguf(path: string): Promise<Tokenizer> {
    const g = await GgufFile.open(path);
    try {
      return Tokenizer.fromGgufMetadata(path, (k) => g.get(k));
    } finally {
      await g.close();
    }
  }

  /** From GGUF metadata already read (`get` answers a key); `path` names it in messages. */
  static fromGgufMetadata(path: string, get: (key: string) => GgufValue | undefined): Tokenizer {
    const { json, config, template } = ggufTokenizerJson(path, get);
    return new Tokenizer(path, json, config, template);
  }

  /** The tokenizer of what `--model` resolved to. */
  static fromModel(model: ModelSource): Promise<Tokenizer> {
    return model.kind === "gguf" ? Tokenizer.fromGguf(model.path) : Tokenizer.fromHfFolder(model.path);
  }

  get bosId(): number | undefined {
    return this.bosToken === undefined ? undefined : this.hf.token_to_id(this.bosToken);
  }

  get eosId(): number | undefined {
    return this.eosToken === undefined ? undefined : this.hf.token_to_id(this.eosToken);
  }

  get padId(): number | undefined {
    return this.padToken === undefined ? undefined : this.hf.token_to_id(this.padToken);
  }

  /** Special tokens (content -> id): matched whole in text, dropped by decode with skipSpecialTokens. */
  get specialTokens(): ReadonlyMap<string, number> {
    return this.specials;
  }

  tokenToId(token: string): number | undefined {
    return this.hf.token_to_id(token);
  }

  encode(text: string, opts: EncodeOptions = {}): number[] {
    return this.hf.encode(text, { add_special_tokens: opts.addSpecialTokens ?? true }).ids;
  }

  decode(ids: readonly number[], opts: DecodeOptions = {}): string {
    // @huggingface/tokenizers throws on an empty list; transformers decodes it to "".
    if (ids.length === 0) return "";
    for (const id of ids)
      if (!Number.isInteger(id) || this.hf.id_to_token(id) === undefined)
        throw new TokenizerError(`${this.source}: cannot decode token id ${id}: not in the vocabulary`);
    // transformers leaves clean_up_tokenization_spaces off for byte-level tokenizers; decoding is exact bytes.
    return this.hf.decode([...ids], {
      skip_special_tokens: opts.skipSpecialTokens ?? false,
      clean_up_tokenization_spaces: false,
    });
  }
}

/** The decoder classes @huggingface/tokenizers exports at run time (its .d.ts re-exports do not resolve under NodeNext). */
const { ByteFallbackDecoder, SequenceDecoder } = hfTokenizers as unknown as {
  ByteFallbackDecoder: new (...a: never[]) => { decode_chain(tokens: string[]): string[] };
  SequenceDecoder: new (...a: never[]) => { decoders: unknown[] };
};

/**
 * Makes the ByteFallback decoders in `decoder` decode as the Rust tokenizers (and so transformers) do: a run of
 * byte tokens that is not valid UTF-8 becomes one U+FFFD per token. @huggingface/tokenizers 0.2 decodes such a run
 * with a lossy TextDecoder instead, which keeps its valid bytes (`<0x5E><0xC2>` gives "^\uFFFD", not "\uFFFD\uFFFD").
 */
function rustByteFallback(decoder: unknown): void {
  if (decoder instanceof SequenceDecoder) for (const d of decoder.decoders) rustByteFallback(d);
  if (!(decoder instanceof ByteFallbackDecoder)) return;
  const utf8 = new TextDecoder("utf-8", { fatal: true });
  decoder.decode_chain = (tokens: string[]): string[] => {
    const out: string[] = [];
    let bytes: number[] = [];
    const flush = () => {
      if (bytes.length === 0) return;
      try {
        out.push(utf8.decode(Uint8Array.from(bytes)));
      } catch {
        for (const _ of bytes) out.push("\uFFFD");
      }
      bytes = [];
    };
    for (const token of tokens) {
      const byte = /^<0x[0-9A-Fa-f]{2}>$/.test(token) ? Number.parseInt(token.slice(3, 5), 16) : undefined;
      if (byte === undefined) {
        flush();
        out.push(token);
      } else bytes.push(byte);
    }
    flush();
    return out;
  };
}

async function readJson(path: string, required: boolean): Promise<unknown> {
  let text: string;
  try {
    text = await readFile(path, "utf8");
  } catch (e) {
    if (!required) return undefined;
    throw new TokenizerError(`${path}: cannot read the tokenizer file (expected a Hugging Face tokenizer.json)`, e);
  }
  try {
    return JSON.parse(text);
  } catch (e) {
    throw new TokenizerError(`${path}: not valid JSON: ${e instanceof Error ? e.message : String(e)}`, e);
  }
}

/**
 * When tokenizer_config.json states add_bos_token/add_eos_token, they decide what encode adds (as transformers'
 * update_post_processor does); otherwise the tokenizer.json's own post-processor stands.
 */
export function withAddedSpecials(json: Record<string, unknown>, config: TokenizerConfig): Record<string, unknown> {
  if (typeof config.add_bos_token !== "boolean" && typeof config.add_eos_token !== "boolean") return json;
  const bos = config.add_bos_token ? tokenText(config.bos_token) : undefined;
  const eos = config.add_eos_token ? tokenText(config.eos_token) : undefined;
  const vocab = ((json.model as { vocab?: Record<string, number> } | undefined)?.vocab ?? {}) as Record<string, number>;
  const added = (json.added_tokens ?? []) as AddedTokenJson[];
  const idOf = (t: string): number => {
    const id = added.find((a) => a.content === t)?.id ?? vocab[t];
    if (id === undefined)
      throw new TokenizerError(`tokenizer_config.json names special token ${JSON.stringify(t)}, not in the vocabulary`);
    return id;
  };
  const special = (t: string, typeId: number) => ({ SpecialToken: { id: t, type_id: typeId } });
  const seq = (s: "A" | "B", typeId: number) => ({ Sequence: { id: s, type_id: typeId } });
  const single = [...(bos ? [special(bos, 0)] : []), seq("A", 0), ...(eos ? [special(eos, 0)] : [])];
  const pair = [...single, ...(bos ? [special(bos, 1)] : []), seq("B", 1), ...(eos ? [special(eos, 1)] : [])];
  const specialTokens: Record<string, unknown> = {};
  for (const t of [bos, eos]) if (t) specialTokens[t] = { id: t, ids: [idOf(t)], tokens: [t] };
  return { ...json, post_processor: { type: "TemplateProcessing", single, pair, special_tokens: specialTokens } };
}

type GgufGet = (key: string) => GgufValue | undefined;

/** The pre-tokenizer splits for a byte-level GGUF tokenizer, which must have a known `pre`. */
function ggufSplits(path: string, get: GgufGet): readonly string[] {
  const pre = get("tokenizer.ggml.pre") ?? "default";
  const splits = typeof pre === "string" ? PRE_SPLITS[pre] : undefined;
  if (!splits)
    throw new TokenizerError(
      `${path}: tokenizer.ggml.pre is ${JSON.stringify(pre)}, whose split Tessera does not know (known: ${Object.keys(PRE_SPLITS).join(", ")})`,
    );
  return splits;
}

function ggufVocabulary(
  path: string,
  get: GgufGet,
): { tokens: string[]; merges: string[] | undefined; tokenType: number[] } {
  const tokens = get("tokenizer.ggml.tokens");
  if (!isStrings(tokens)) throw new TokenizerError(`${path}: tokenizer.ggml.tokens must be an array of strings`);
  const merges = get("tokenizer.ggml.merges");
  if (merges !== undefined && !isStrings(merges))
    throw new TokenizerError(`${path}: tokenizer.ggml.merges must be an array of strings`);
  const types = get("tokenizer.ggml.token_type");
  const tokenType = Array.isArray(types) ? types.map(Number) : [];
  return { tokens, merges, tokenType };
}

/**
 * llama.cpp writes a token whose bytes are not valid UTF-8 raw rather than in byte-level spelling; respell it so
 * that the merges, which always use the spelling, find it (as transformers' converter does).
 */
function byteLevelVocab(tokens: readonly string[]): {
  vocab: Record<string, number>;
  isSpelled: (t: string) => boolean;
} {
  const spelling = bytesToUnicode();
  const alphabet = new Set(spelling);
  const isSpelled = (t: string) => [...t].every((c) => alphabet.has(c));
  const spelled = (t: string) => (isSpelled(t) ? t : [...new TextEncoder().encode(t)].map((b) => spelling[b]).join(""));
  const vocab: Record<string, number> = {};
  tokens.forEach((t, i) => {
    vocab[spelled(t)] = i;
  });
  return { vocab, isSpelled };
}

/**
 * Control tokens are special (matched whole, skipped on decode); user-defined ones are matched whole too, as
 * llama.cpp does. A respelled token is a mislabelled byte sequence, left to the merges.
 */
function ggufAddedTokens(
  tokens: readonly string[],
  tokenType: readonly number[],
  isSpelled: (t: string) => boolean,
): AddedTokenJson[] {
  const added: AddedTokenJson[] = [];
  tokens.forEach((t, i) => {
    const type = tokenType[i];
    if ((type === TOKEN_TYPE_CONTROL || type === TOKEN_TYPE_USER_DEFINED) && isSpelled(t))
      added.push({
        id: i,
        content: t,
        single_word: false,
        lstrip: false,
        rstrip: false,
        normalized: false,
        special: type === TOKEN_TYPE_CONTROL,
      });
  });
  return added;
}

function byteLevel(useRegex: boolean) {
  return { type: "ByteLevel", add_prefix_space: false, trim_offsets: false, use_regex: useRegex };
}

/** The last split is GPT-2's own, which ByteLevel applies itself; earlier ones are isolated splits in front. */
function splitPreTokenizer(splits: readonly string[]): Record<string, unknown> {
  if (splits.length === 1 && splits[0] === GPT2_SPLIT) return byteLevel(true);
  return {
    type: "Sequence",
    pretokenizers: [
      ...splits
        .filter((s) => s !== GPT2_SPLIT)
        .map((s) => ({ type: "Split", pattern: { Regex: s }, behavior: "Isolated", invert: false })),
      byteLevel(splits.includes(GPT2_SPLIT)),
    ],
  };
}

function byteLevelBpeJson(
  added: AddedTokenJson[],
  preTokenizer: Record<string, unknown>,
  vocab: Record<string, number>,
  merges: string[],
): Record<string, unknown> {
  return {
    version: "1.0",
    truncation: null,
    padding: null,
    added_tokens: added,
    normalizer: null,
    pre_tokenizer: preTokenizer,
    post_processor: byteLevel(true),
    decoder: byteLevel(true),
    model: {
      type: "BPE",
      dropout: null,
      unk_token: null,
      continuing_subword_prefix: "",
      end_of_word_suffix: "",
      fuse_unk: false,
      byte_fallback: false,
      ignore_merges: false,
      vocab,
      merges,
    },
  };
}

function ggufTokenizerConfig(
  path: string,
  get: GgufGet,
  tokens: readonly string[],
  addBosDefault: boolean,
): TokenizerConfig {
  const idToken = (key: string): string | undefined => {
    const id = get(`tokenizer.ggml.${key}`);
    if (id === undefined) return undefined;
    const t = tokens[Number(id)];
    if (t === undefined) throw new TokenizerError(`${path}: tokenizer.ggml.${key} = ${id} is past the vocabulary`);
    return t;
  };
  const flag = (key: string) => {
    const v = get(`tokenizer.ggml.${key}`);
    return typeof v === "boolean" ? v : undefined;
  };
  return {
    bos_token: idToken("bos_token_id"),
    eos_token: idToken("eos_token_id"),
    pad_token: idToken("padding_token_id"),
    unk_token: idToken("unknown_token_id"),
    // Absent, the vocabulary kind decides, as in llama.cpp and transformers: on for SentencePiece, off for byte-level.
    add_bos_token: flag("add_bos_token") ?? addBosDefault,
    add_eos_token: flag("add_eos_token") ?? false,
  };
}

/** The tokenizer.json (and config) equivalent to a GGUF's `tokenizer.*` metadata. Exported for tests. */
export function ggufTokenizerJson(
  path: string,
  get: GgufGet,
): { json: Record<string, unknown>; config: TokenizerConfig; template: string | undefined } {
  const kind = get("tokenizer.ggml.model");
  const template = get("tokenizer.chat_template");
  const { tokens, merges, tokenType } = ggufVocabulary(path, get);
  let json: Record<string, unknown>;
  let config: TokenizerConfig;
  if (kind === "gpt2") {
    const splits = ggufSplits(path, get);
    if (merges === undefined)
      throw new TokenizerError(`${path}: a byte-level ("gpt2") vocabulary needs tokenizer.ggml.merges`);
    const { vocab, isSpelled } = byteLevelVocab(tokens);
    const added = ggufAddedTokens(tokens, tokenType, isSpelled);
    json = byteLevelBpeJson(added, splitPreTokenizer(splits), vocab, merges);
    config = ggufTokenizerConfig(path, get, tokens, false);
  } else if (kind === "llama") {
    const arch = get("general.architecture");
    if (typeof arch === "string" && SPM_OTHER_BUILDERS.has(arch))
      throw new TokenizerError(
        `${path}: a SentencePiece vocabulary of architecture ${JSON.stringify(arch)} is spelled and split differently from Llama's; Tessera builds only the Llama kind`,
      );
    config = ggufTokenizerConfig(path, get, tokens, true);
    const scores = get("tokenizer.ggml.scores");
    const spmMerges =
      merges ?? (Array.isArray(scores) ? mergesFromScores(path, tokens, scores.map(Number)) : undefined);
    if (spmMerges === undefined)
      throw new TokenizerError(
        `${path}: a SentencePiece ("llama") vocabulary needs tokenizer.ggml.merges or tokenizer.ggml.scores`,
      );
    json = sentencePieceBpeJson(spmAddedTokens(tokens, tokenType, config), tokens, spmMerges);
  } else {
    throw new TokenizerError(
      `${path}: tokenizer.ggml.model is ${JSON.stringify(kind)}; Tessera builds byte-level BPE ("gpt2") and SentencePiece BPE ("llama") tokenizers from a GGUF`,
    );
  }
  return { json, config, template: typeof template === "string" ? template : undefined };
}

/**
 * Architectures whose SentencePiece vocabulary transformers builds with its own rules (Gemma respells whitespace
 * tokens and orders merges by position; Phi-3 prepends the space in a normalizer): refused rather than misbuilt.
 */
const SPM_OTHER_BUILDERS: ReadonlySet<string> = new Set(["gemma", "gemma2", "gemma3", "phi3"]);

/**
 * The merges a SentencePiece vocabulary implies, as transformers' `generate_merges(vocab, scores)` derives them
 * for a GGUF that lists none (llama.cpp writes scores only): every split of a token into two vocabulary pieces,
 * best score first, then the longer left piece, then the longer right; ties keep token order, and within a token
 * the splits go by the pieces' ids. A merge's rank is what BPE applies, so any other order tokenizes differently.
 */
export function mergesFromScores(
  path: string,
  tokens: readonly string[],
  scores: readonly number[],
): [string, string][] {
  if (scores.length !== tokens.length)
    throw new TokenizerError(`${path}: tokenizer.ggml.scores has ${scores.length} entries for ${tokens.length} tokens`);
  // Python dict semantics: a repeated token keeps its first position, its last id and its last score.
  const vocab = new Map<string, number>();
  const score = new Map<string, number>();
  tokens.forEach((t, i) => {
    vocab.set(t, i);
    score.set(t, scores[i] ?? 0);
  });
  const merges: { left: string; right: string; score: number; leftLen: number; rightLen: number }[] = [];
  for (const [token, s] of score) {
    const chars = Array.from(token);
    const local: { left: string; right: string; leftId: number; rightId: number }[] = [];
    for (let i = 1; i < chars.length; i++) {
      const left = chars.slice(0, i).join("");
      const right = chars.slice(i).join("");
      const leftId = vocab.get(left);
      const rightId = vocab.get(right);
      if (leftId !== undefined && rightId !== undefined) local.push({ left, right, leftId, rightId });
    }
    local.sort((a, b) => a.leftId - b.leftId || a.rightId - b.rightId);
    for (const m of local)
      merges.push({
        left: m.left,
        right: m.right,
        score: s,
        leftLen: codePoints(m.left),
        rightLen: codePoints(m.right),
      });
  }
  // Array.prototype.sort is stable, as Python's sorted(reverse=True) is for equal keys.
  merges.sort((a, b) => b.score - a.score || b.leftLen - a.leftLen || b.rightLen - a.rightLen);
  return merges.map((m) => [m.left, m.right]);
}

/** Length in code points, as Python's len() counts a str. */
function codePoints(s: string): number {
  return Array.from(s).length;
}

/**
 * Added tokens of a SentencePiece vocabulary, as transformers' LlamaTokenizer ends up with them: its bos/eos/unk/pad
 * tokens and every control token special; user-defined ones matched whole but not special. Byte and unused
 * tokens stay in the model's vocabulary.
 */
function spmAddedTokens(
  tokens: readonly string[],
  tokenType: readonly number[],
  config: TokenizerConfig,
): AddedTokenJson[] {
  const specials = new Set(
    [config.bos_token, config.eos_token, config.unk_token, config.pad_token]
      .map(tokenText)
      .filter((t) => t !== undefined),
  );
  const added: AddedTokenJson[] = [];
  tokens.forEach((t, i) => {
    const type = tokenType[i];
    const special = specials.has(t) || type === TOKEN_TYPE_CONTROL;
    if (special || type === TOKEN_TYPE_USER_DEFINED)
      added.push({ id: i, content: t, single_word: false, lstrip: false, rstrip: false, normalized: false, special });
  });
  return added;
}

/**
 * The tokenizer.json of transformers' LlamaTokenizer over a GGUF vocabulary: BPE with byte fallback (`<0x0A>`..)
 * and fused unknowns over the tokens as spelled, no normalizer, a Metaspace pre-tokenizer (spaces become ▁, one ▁
 * put in front of the text's first piece only, as Llama-2's non-legacy tokenizer does), and the decoder that
 * undoes both and strips the one leading space.
 */
function sentencePieceBpeJson(
  added: AddedTokenJson[],
  tokens: readonly string[],
  merges: readonly (string | [string, string])[],
): Record<string, unknown> {
  const vocab: Record<string, number> = {};
  tokens.forEach((t, i) => {
    vocab[t] = i;
  });
  return {
    version: "1.0",
    truncation: null,
    padding: null,
    added_tokens: added,
    normalizer: null,
    pre_tokenizer: { type: "Metaspace", replacement: SPM_SPACE, prepend_scheme: "first", split: false },
    post_processor: null,
    decoder: {
      type: "Sequence",
      decoders: [
        { type: "Replace", pattern: { String: SPM_SPACE }, content: " " },
        { type: "ByteFallback" },
        { type: "Fuse" },
        { type: "Strip", content: " ", start: 1, stop: 0 },
      ],
    },
    model: {
      type: "BPE",
      dropout: null,
      unk_token: null,
      continuing_subword_prefix: null,
      end_of_word_suffix: null,
      fuse_unk: true,
      byte_fallback: true,
      ignore_merges: false,
      vocab,
      // The pair form: a SentencePiece piece may itself hold a space, which "a b" strings cannot carry.
      merges: merges.map((m) => (typeof m === "string" ? m.split(" ") : m)),
    },
  };
}

/** SentencePiece's visible space, U+2581. */
const SPM_SPACE = "\u2581";

function isStrings(v: GgufValue | undefined): v is string[] {
  return Array.isArray(v) && v.every((x) => typeof x === "string");
}
