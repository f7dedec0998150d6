// `tessera generate`: a model (and a LoRA adapter) answering prompts, chats or a JSONL file of them, through the KV-cache decoder.
import { readFile } from "node:fs/promises";
import { join } from "node:path";
import { jit, type DeviceArray } from "tessera";
import { UsageError, type ParsedArgs } from "./args.ts";
import { EXIT, TesseraError } from "../errors.ts";
import { DataError } from "../data/records.ts";
import { DEFAULT_RAG_TEMPLATE, PLAIN_RAG_ANSWER_CUE, renderRag } from "../data/text_records.ts";
import { readRagTemplate } from "../train/plan.ts";
import { resolveModel, type ModelSource } from "../formats/model_fetch.ts";
import { loadAdapter } from "../formats/peft.ts";
import type { LlamaConfig } from "../formats/hf_config.ts";
import { treeToDevice } from "../host/transfer.ts";
import { Tokenizer } from "../text/tokenizer.ts";
import { applyChatTemplate, type ChatMessage } from "../text/chat_template.ts";
import { GgufFile } from "../formats/gguf.ts";
import type { LlamaWeights } from "../../models/llama.ts";
import {
  decodeWeights,
  LlamaDecoder,
  type DecodeWeights,
  type GeneratedRow,
  type SamplingOptions,
} from "../../models/llama_decode.ts";
import { loraFromAdapter, mergeLora, type LoraLayout, type LoraWeights } from "../../models/lora.ts";
import { ropeContext } from "../../models/rope.ts";
import { loadGgufLlamaWeights, loadLlamaWeights } from "../../models/weights.ts";

/** A model ready to generate: config, weights on the device (an adapter merged in), tokenizer, stop ids, defaults. */
export interface Generator {
  config: LlamaConfig;
  /** Per layer, as the decoder reads them (the stacked layers are freed once unstacked). */
  weights: DecodeWeights<DeviceArray>;
  tokenizer: Tokenizer;
  /** Every id that ends a generation: the config's, the tokenizer's and generation_config.json's EOS ids. */
  eosIds: number[];
  /** generation_config.json's sampling settings (an HF folder's), the defaults when a flag is left out. */
  defaults: Partial<SamplingOptions>;
  /** The longest sequence (prompt + new tokens) the model takes. */
  context: number;
}

/**
 * Loads `model` (a catalogue name, a GGUF, an HF folder) in `precision`, with a PEFT adapter merged into the base
 * weights once on the device (W + scale * A @ B in f32, rounded once to the weights' dtype, as PEFT's merge).
 */
export async function loadGenerator(
  source: ModelSource,
  opts: { adapter?: string; precision?: "f32" | "bf16" } = {},
): Promise<Generator> {
  const dtype = opts.precision === "bf16" ? "BF16" : "F32";
  const tokenizer = await Tokenizer.fromModel(source);
  const { config, weights: host } =
    source.kind === "gguf"
      ? await loadGgufLlamaWeights(source.path, { dtype })
      : await loadLlamaWeights(source.path, { dtype });
  let weights = treeToDevice<LlamaWeights<DeviceArray>>(host as never);
  if (opts.adapter !== undefined) {
    const { layout, weights: lora } = loraFromAdapter(
      await loadAdapter(opts.adapter, config),
      config,
      join(opts.adapter, "adapter_config.json"),
    );
    const merge = jit((w: LlamaWeights, l: LoraWeights) => mergeLora(w, l, layout as LoraLayout, 1));
    weights = (await (merge as unknown as (w: unknown, l: unknown) => Promise<LlamaWeights<DeviceArray>>)(
      weights,
      treeToDevice(lora as never),
    )) as LlamaWeights<DeviceArray>;
  }
  const layers = await decodeWeights(weights);
  // The decoder holds its own per-layer and transposed copies.
  for (const t of Object.values(weights.layers)) (t as DeviceArray).dispose();
  weights.head.dispose();
  const gen = source.kind === "hf" ? await readGenerationConfig(source.path) : {};
  const eos = new Set<number>();
  const add = (v: unknown) => {
    for (const x of Array.isArray(v) ? v : [v]) if (typeof x === "number" && Number.isInteger(x) && x >= 0) eos.add(x);
  };
  add(config.eosTokenId);
  add(tokenizer.eosId);
  add(gen.eos_token_id);
  if (source.kind === "gguf") add(await ggufEndOfTurn(source.path));
  const defaults: Partial<SamplingOptions> = {};
  if (gen.do_sample === true) {
    defaults.temperature = typeof gen.temperature === "number" ? gen.temperature : 1;
    if (typeof gen.top_k === "number") defaults.topK = gen.top_k;
    if (typeof gen.top_p === "number") defaults.topP = gen.top_p;
  } else if (gen.do_sample === false) defaults.temperature = 0;
  return {
    config,
    weights: layers,
    tokenizer,
    eosIds: [...eos].sort((a, b) => a - b),
    defaults,
    context: ropeContext(config),
  };
}

interface GenerationConfigJson {
  eos_token_id?: unknown;
  do_sample?: unknown;
  temperature?: unknown;
  top_k?: unknown;
  top_p?: unknown;
}

async function readGenerationConfig(dir: string): Promise<GenerationConfigJson> {
  const file = join(dir, "generation_config.json");
  let text: string;
  try {
    text = await readFile(file, "utf8");
  } catch {
    return {};
  }
  try {
    const j = JSON.parse(text) as unknown;
    return typeof j === "object" && j !== null ? (j as GenerationConfigJson) : {};
  } catch (e) {
    throw new TesseraError(`${file}: not valid JSON: ${(e as Error).message}`, { code: "ERR_FORMAT", cause: e });
  }
}

/** llama.cpp's end-of-turn id (`tokenizer.ggml.eot_token_id`), which it stops at besides the EOS. */
async function ggufEndOfTurn(path: string): Promise<number | undefined> {
  const g = await GgufFile.open(path);
  try {
    const v = g.get("tokenizer.ggml.eot_token_id");
    return typeof v === "number" ? v : undefined;
  } finally {
    await g.close();
  }
}

/** One prompt to answer: its ids, and where it came from for messages. */
export interface PromptItem {
  ids: number[];
  where: string;
}

/** The ids of a chat rendered with the model's template and the generation prompt (the template writes the specials). */
export function chatIds(tokenizer: Tokenizer, messages: readonly ChatMessage[]): number[] {
  return tokenizer.encode(applyChatTemplate(tokenizer, messages, { addGenerationPrompt: true }), {
    addSpecialTokens: false,
  });
}

/**
 * The prompt of a RAG record {"question", "contexts"} exactly as `tessera train` renders it before the answer: the
 * RAG template as one user turn of the chat template (with the generation prompt), or without a chat template the
 * template's text and the plain answer cue. So a model trained on RAG records is asked the way it was taught.
 */
export function ragIds(
  tokenizer: Tokenizer,
  template: string,
  question: string,
  contexts: readonly string[],
): number[] {
  const user = renderRag(template, contexts, question);
  if (tokenizer.chatTemplate !== undefined) return chatIds(tokenizer, [{ role: "user", content: user }]);
  return tokenizer.encode(user + PLAIN_RAG_ANSWER_CUE);
}

/**
 * `--file`: one {"prompt": string}, {"messages": [{role, content}...]} or RAG {"question", "contexts"} per line
 * (an "answer" field, as in training data, is ignored); blank lines are skipped.
 */
export async function readPromptFile(
  file: string,
  tokenizer: Tokenizer,
  ragTemplate: string = DEFAULT_RAG_TEMPLATE,
): Promise<PromptItem[]> {
  let text: string;
  try {
    text = await readFile(file, "utf8");
  } catch (e) {
    throw new TesseraError(`--file ${file}: ${(e as Error).message}`, { code: "ERR_DATA", cause: e });
  }
  const items: PromptItem[] = [];
  const lines = text.split("\n");
  for (const [i, raw] of lines.entries()) {
    const line = i + 1;
    if (raw.trim() === "") continue;
    let rec: unknown;
    try {
      rec = JSON.parse(raw);
    } catch (e) {
      throw new DataError(`not valid JSON: ${(e as Error).message}`, file, line);
    }
    if (typeof rec !== "object" || rec === null || Array.isArray(rec))
      throw new DataError(
        'expected an object with "prompt" (a string), "messages" (an array) or "question" and "contexts" (RAG)',
        file,
        line,
      );
    const r = rec as Record<string, unknown>;
    if ("prompt" in r) {
      if (typeof r.prompt !== "string") throw new DataError('field "prompt": expected a string', file, line);
      items.push({ ids: tokenizer.encode(r.prompt), where: `${file}:${line}` });
    } else if ("messages" in r) {
      if (!Array.isArray(r.messages) || r.messages.length === 0)
        throw new DataError('field "messages": expected a non-empty array of {"role", "content"}', file, line);
      r.messages.forEach((m: unknown, k) => {
        const ok =
          typeof m === "object" &&
          m !== null &&
          typeof (m as ChatMessage).role === "string" &&
          typeof (m as ChatMessage).content === "string";
        if (!ok)
          throw new DataError(`field "messages[${k}]": expected {"role": string, "content": string}`, file, line);
      });
      items.push({ ids: chatIds(tokenizer, r.messages as ChatMessage[]), where: `${file}:${line}` });
    } else if ("question" in r) {
      if (typeof r.question !== "string") throw new DataError('field "question": expected a string', file, line);
      const contexts = typeof r.contexts === "string" ? [r.contexts] : r.contexts;
      if (!Array.isArray(contexts) || !contexts.every((c) => typeof c === "string"))
        throw new DataError('field "contexts": expected an array of strings', file, line);
      items.push({ ids: ragIds(tokenizer, ragTemplate, r.question, contexts), where: `${file}:${line}` });
    } else throw new DataError('expected a "prompt", "messages" or "question" (with "contexts") field', file, line);
  }
  if (items.length === 0) throw new DataError("no prompts (the file is empty)", file);
  return items;
}

/** The prompt bucket: the longest prompt rounded up to a multiple of 16 (at most the context less one). */
export function promptBucket(longest: number, context: number): number {
  return Math.min(Math.ceil(longest / 16) * 16, context - 1);
}

export interface GenerateRunOptions {
  maxNewTokens: number;
  sampling: SamplingOptions;
  /** Prompts per batch. */
  batch: number;
  /** Called with each row's new token ids as they come (batch index, row within the batch). */
  onTokens?: (batchStart: number, tokens: (number | undefined)[]) => void;
}

/** Generates for every prompt, `batch` at a time through one decoder (two compiled programs in all); input order kept. */
export async function generateAll(
  g: Generator,
  prompts: readonly PromptItem[],
  opts: GenerateRunOptions,
): Promise<{
  rows: GeneratedRow[];
  decoder: LlamaDecoder;
  compileSeconds: number;
  prefillSeconds: number;
  decodeSeconds: number;
  steps: number;
}> {
  for (const p of prompts)
    if (p.ids.length + 1 > g.context)
      throw new TesseraError(
        `${p.where}: the prompt has ${p.ids.length} tokens, but the model's context is ${g.context} tokens (the prompt and at least one new token must fit)`,
        { code: "ERR_CONTEXT" },
      );
  const longest = Math.max(...prompts.map((p) => p.ids.length));
  const P = promptBucket(longest, g.context);
  const T = Math.min(g.context, Math.max(P + 1, P + opts.maxNewTokens - 1));
  const B = Math.min(opts.batch, prompts.length);
  const decoder = new LlamaDecoder(g.config, g.weights, { batch: B, promptLen: P, maxLen: T }, opts.sampling);
  const c0 = performance.now();
  await decoder.compile();
  const compileSeconds = (performance.now() - c0) / 1000;
  const rows: GeneratedRow[] = [];
  let prefillSeconds = 0,
    decodeSeconds = 0,
    steps = 0;
  for (let start = 0; start < prompts.length; start += B) {
    const chunk = prompts.slice(start, start + B).map((p) => p.ids);
    const r = await decoder.generate(chunk, {
      maxNewTokens: opts.maxNewTokens,
      eosIds: g.eosIds,
      stream: start / B,
      ...(opts.onTokens ? { onTokens: (t: (number | undefined)[]) => opts.onTokens!(start, t) } : {}),
    });
    rows.push(...r.rows);
    prefillSeconds += r.stats.prefillSeconds;
    decodeSeconds += r.stats.decodeSeconds;
    steps += r.stats.decodeSteps;
  }
  return { rows, decoder, compileSeconds, prefillSeconds, decodeSeconds, steps };
}

/**
 * Text as it grows, for streaming: the decoding of all ids so far, emitted as the part not yet written, held back
 * while it ends in an incomplete UTF-8 sequence (U+FFFD) or before the token that might still change it.
 */
export class TextStream {
  private ids: number[] = [];
  private written = "";
  constructor(
    private readonly tokenizer: Tokenizer,
    private readonly write: (s: string) => void,
  ) {}

  push(id: number): void {
    this.ids.push(id);
    const text = this.tokenizer.decode(this.ids, { skipSpecialTokens: true });
    if (text.endsWith("\uFFFD")) return;
    this.flushTo(text);
  }

  end(): void {
    this.flushTo(this.tokenizer.decode(this.ids, { skipSpecialTokens: true }));
  }

  private flushTo(text: string): void {
    if (text.startsWith(this.written)) {
      this.write(text.slice(this.written.length));
      this.written = text;
    }
  }
}

function numberOption(args: ParsedArgs, name: string, check: (v: number) => boolean, what: string): number | undefined {
  const raw = args.options.get(name);
  if (raw === undefined) return undefined;
  const v = Number(raw);
  if (raw.trim() === "" || !Number.isFinite(v) || !check(v))
    throw new UsageError(`--${name} ${raw}: expected ${what}`, "generate");
  return v;
}

/** The sampling settings from the flags, falling back on the model's generation_config.json, else greedy. */
export function samplingFromArgs(args: ParsedArgs, defaults: Partial<SamplingOptions>): SamplingOptions {
  const temperature = numberOption(args, "temperature", (v) => v >= 0, "a number >= 0 (0: greedy)");
  const topK = numberOption(args, "top-k", (v) => Number.isInteger(v) && v >= 0, "an integer >= 0 (0: off)");
  const topP = numberOption(args, "top-p", (v) => v > 0 && v <= 1, "a number in (0, 1] (1: off)");
  const seed = numberOption(args, "seed", (v) => Number.isSafeInteger(v), "an integer");
  // A top-k or top-p flag alone asks for sampling, at temperature 1 (as transformers with do_sample=True).
  const sampleAsked = topK !== undefined || topP !== undefined;
  return {
    temperature: temperature ?? defaults.temperature ?? (sampleAsked ? 1 : 0),
    topK: topK ?? defaults.topK ?? 0,
    topP: topP ?? defaults.topP ?? 1,
    seed: seed ?? 0,
  };
}

export async function generateCommand(args: ParsedArgs): Promise<number> {
  const o = args.options;
  const model = o.get("model");
  if (model === undefined) throw new UsageError("--model is required", "generate");
  const given = ["prompt", "chat", "file"].filter((k) => o.has(k));
  if (given.length !== 1) throw new UsageError("give exactly one of --prompt, --chat and --file", "generate");
  if (o.has("system") && !o.has("chat")) throw new UsageError("--system goes with --chat", "generate");
  if (o.has("rag-template") && !o.has("file")) throw new UsageError("--rag-template goes with --file", "generate");
  const maxNewTokens =
    numberOption(args, "max-new-tokens", (v) => Number.isInteger(v) && v >= 1, "an integer >= 1") ?? 256;
  const batch = numberOption(args, "batch-size", (v) => Number.isInteger(v) && v >= 1, "an integer >= 1") ?? 8;
  const precision = (o.get("precision") ?? "f32") as "f32" | "bf16";
  const json = o.has("json");
  const log = (line: string) => process.stderr.write(`tessera generate: ${line}\n`);
  // Flags are checked before the model loads, so that a typo costs nothing.
  samplingFromArgs(args, {});

  const source = await resolveModel(model, log);
  const adapter = o.get("adapter");
  const g = await loadGenerator(source, { ...(adapter !== undefined ? { adapter } : {}), precision });
  const sampling = samplingFromArgs(args, g.defaults);

  let prompts: PromptItem[];
  if (o.has("file")) {
    const template = await readRagTemplate(o.get("rag-template") ?? null);
    prompts = await readPromptFile(o.get("file")!, g.tokenizer, template);
  } else if (o.has("chat")) {
    const messages: ChatMessage[] = [];
    if (o.has("system")) messages.push({ role: "system", content: o.get("system")! });
    messages.push({ role: "user", content: o.get("chat")! });
    prompts = [{ ids: chatIds(g.tokenizer, messages), where: "--chat" }];
  } else prompts = [{ ids: g.tokenizer.encode(o.get("prompt")!), where: "--prompt" }];

  // One prompt streams its text as it comes; several print each answer when its batch is done.
  const stream =
    !json && prompts.length === 1 ? new TextStream(g.tokenizer, (s) => process.stdout.write(s)) : undefined;
  const r = await generateAll(g, prompts, {
    maxNewTokens,
    sampling,
    batch,
    ...(stream ? { onTokens: (_: number, t: (number | undefined)[]) => t[0] !== undefined && stream.push(t[0]) } : {}),
  });
  if (stream) {
    stream.end();
    process.stdout.write("\n");
  }
  for (const [i, row] of r.rows.entries()) {
    if (json) {
      const text = g.tokenizer.decode(row.outputIds, { skipSpecialTokens: false });
      process.stdout.write(`${JSON.stringify({ prompt_ids: prompts[i]!.ids, output_ids: row.outputIds, text })}\n`);
    } else if (!stream) {
      process.stdout.write(`${g.tokenizer.decode(row.outputIds, { skipSpecialTokens: true })}\n\n`);
    }
  }
  const newTokens = r.rows.reduce((n, row) => n + row.outputIds.length, 0);
  const promptTokens = prompts.reduce((n, p) => n + p.ids.length, 0);
  log(
    `${prompts.length} prompt${prompts.length === 1 ? "" : "s"} (${promptTokens} tokens), ${newTokens} new tokens; compile ${r.compileSeconds.toFixed(1)}s, prefill ${r.prefillSeconds.toFixed(2)}s, decode ${r.steps} steps in ${r.decodeSeconds.toFixed(2)}s (${r.steps > 0 ? (r.steps / r.decodeSeconds).toFixed(1) : "-"} steps/s); ${samplingText(sampling)}`,
  );
  return EXIT.ok;
}

function samplingText(s: SamplingOptions): string {
  if (s.temperature === 0) return "greedy";
  const parts = [`temperature ${s.temperature}`];
  if (s.topK > 0) parts.push(`top-k ${s.topK}`);
  if (s.topP < 1) parts.push(`top-p ${s.topP}`);
  return `sampled (${parts.join(", ")}, seed ${s.seed})`;
}
