// Text training records (text, prompt/completion, chat messages, Alpaca, RAG) tokenized with the model's tokenizer and chat template, with their loss masks.
import { describe } from "../errors.ts";
import { applyChatTemplate, type ChatMessage } from "../text/chat_template.ts";
import type { Tokenizer } from "../text/tokenizer.ts";
import { parseRecord } from "./jsonl.ts";
import { DataError, IGNORE, locationSuffix, type TrainRecord } from "./records.ts";

/** Roles a `messages` record may use; anything else is refused before the template sees it. */
export const CHAT_ROLES = ["system", "user", "assistant", "tool"] as const;

/** The RAG prompt when no --rag-template is given: `{contexts}` becomes the contexts, one paragraph each. */
export const DEFAULT_RAG_TEMPLATE =
  "Answer the question using the context below.\n\nContext:\n{contexts}\n\nQuestion: {question}";

/** What follows a RAG prompt on a model without a chat template; the answer comes right after it. */
export const PLAIN_RAG_ANSWER_CUE = "\nAnswer: ";

/** The Alpaca prompts (Stanford Alpaca's own text), used for Alpaca records on a model without a chat template. */
export const ALPACA_PROMPT = {
  withInput:
    "Below is an instruction that describes a task, paired with an input that provides further context. Write a response that appropriately completes the request.\n\n### Instruction:\n{instruction}\n\n### Input:\n{input}\n\n### Response:\n",
  noInput:
    "Below is an instruction that describes a task. Write a response that appropriately completes the request.\n\n### Instruction:\n{instruction}\n\n### Response:\n",
} as const;

/** Every record form a data file may hold, for messages. */
export const RECORD_FORMS =
  '{"input_ids"[, "labels"]}, {"prompt_ids", "answer_ids"}, {"messages": [{"role", "content"}, ...]}, {"text"}, {"prompt", "completion"}, {"instruction"[, "input"], "output"} (Alpaca) or {"question", "contexts", "answer"} (RAG)';

/** The kinds of record, as counted in the data summary. */
export type RecordKind = "ids" | "messages" | "text" | "prompt/completion" | "alpaca" | "rag";

export interface RecordContext {
  /** Token ids must lie in [0, vocabSize). */
  vocabSize: number;
  /** The model's tokenizer, or why there is none: text records need it, token-id records do not. */
  tokenizer: Tokenizer | { missing: string };
  /** The RAG prompt, with {contexts} and {question}. */
  ragTemplate: string;
}

/** Where a record is: file, line (JSONL) or row (CSV, Parquet). */
export interface RecordPlace {
  file: string;
  n: number;
  unit: "line" | "row";
}

/** A record and which form it had. */
export interface ParsedRecord {
  record: TrainRecord;
  kind: RecordKind;
  /** The tokenizer was used (a text record), so the data's tokenization depends on it. */
  tokenized: boolean;
}

const present = (o: Record<string, unknown>, k: string) => o[k] !== undefined && o[k] !== null;

/**
 * One record of any form, told apart by its fields, in this order (a record may carry other fields, e.g. a
 * "prompt" beside "messages" as in UltraChat; the first form that matches wins): input_ids/labels,
 * prompt_ids/answer_ids, messages, prompt/completion, instruction/output, question/contexts/answer, text.
 */
export function parseAnyRecord(json: unknown, at: RecordPlace, ctx: RecordContext): ParsedRecord {
  const fail = (msg: string): never => {
    throw new DataError(msg, at.file, at.n, at.unit);
  };
  if (typeof json !== "object" || json === null || Array.isArray(json))
    fail(`expected a record, one of ${RECORD_FORMS}; got ${describe(json)}`);
  const o = json as Record<string, unknown>;
  const has = (...keys: string[]) => keys.some((k) => present(o, k));
  if (has("input_ids", "labels", "prompt_ids", "answer_ids"))
    return {
      record: parseRecord(o, at.file, at.n, { vocabSize: ctx.vocabSize }, at.unit),
      kind: "ids",
      tokenized: false,
    };
  const kind: RecordKind | undefined = has("messages")
    ? "messages"
    : has("prompt", "completion")
      ? "prompt/completion"
      : has("instruction", "output")
        ? "alpaca"
        : has("question", "contexts", "answer")
          ? "rag"
          : has("text")
            ? "text"
            : undefined;
  if (kind === undefined) {
    const keys = Object.keys(o);
    fail(
      `no field of a known record form (fields: ${keys.length === 0 ? "none" : keys.map((k) => JSON.stringify(k)).join(", ")}); expected ${RECORD_FORMS}`,
    );
  }
  const tok = ctx.tokenizer;
  if (!("encode" in tok)) fail(`a ${kind} record needs the model's tokenizer: ${tok.missing}`);
  const t = new TextRecords(tok as Tokenizer, at, ctx);
  const record =
    kind === "messages"
      ? t.messages(o)
      : kind === "prompt/completion"
        ? t.promptCompletion(o)
        : kind === "alpaca"
          ? t.alpaca(o)
          : kind === "rag"
            ? t.rag(o)
            : t.text(o);
  return { record, kind: kind!, tokenized: true };
}

/** Builds one text record at `at`: the field checks, the rendering, the tokens and the loss mask. */
class TextRecords {
  private readonly source: string;

  constructor(
    private readonly tok: Tokenizer,
    private readonly at: RecordPlace,
    private readonly ctx: RecordContext,
  ) {
    this.source = `${at.file}${locationSuffix(at.n, at.unit)}`;
  }

  private fail(msg: string): never {
    throw new DataError(msg, this.at.file, this.at.n, this.at.unit);
  }

  private str(
    o: Record<string, unknown>,
    field: string,
    opts: { optional?: boolean; nonEmpty?: boolean } = {},
  ): string {
    const v = o[field];
    if ((v === undefined || v === null) && opts.optional) return "";
    if (v === undefined || v === null) this.fail(`missing field "${field}" (a string)`);
    if (typeof v !== "string") this.fail(`field "${field}" must be a string, got ${describe(v)}`);
    if (opts.nonEmpty && (v as string).trim() === "") this.fail(`field "${field}" is empty`);
    return v as string;
  }

  /** The EOS token's text, appended to what the model should learn to end (as TRL's SFTTrainer does). */
  private withEos(text: string): string {
    const eos = this.tok.eosToken;
    return eos === undefined || text.endsWith(eos) ? text : text + eos;
  }

  private encode(text: string, addSpecialTokens: boolean): Int32Array {
    const ids = Int32Array.from(this.tok.encode(text, { addSpecialTokens }));
    for (const id of ids)
      if (id >= this.ctx.vocabSize)
        this.fail(
          `the tokenizer gives token id ${id}, outside the model's vocabulary (0..${this.ctx.vocabSize - 1}); the tokenizer does not belong to this model`,
        );
    return ids;
  }

  /** {"text"}: the whole text (BOS when the tokenizer adds one, EOS appended) takes the loss. */
  text(o: Record<string, unknown>): TrainRecord {
    const ids = this.encode(this.withEos(this.str(o, "text", { nonEmpty: true })), true);
    return { ids, labels: ids, source: this.source };
  }

  /**
   * {"prompt", "completion"} with strings: the prompt as a text (BOS when the tokenizer adds one), then the
   * completion tokenized on its own with EOS appended; the loss falls on the completion and EOS. With lists of
   * messages (TRL's conversational prompt/completion), the chat template renders prompt + completion and the
   * loss falls on the completion's assistant messages.
   */
  promptCompletion(o: Record<string, unknown>): TrainRecord {
    if (Array.isArray(o.prompt) || Array.isArray(o.completion)) {
      const prompt = this.chatMessages(o.prompt, "prompt");
      const completion = this.chatMessages(o.completion, "completion");
      return this.chat([...prompt, ...completion], prompt.length, "completion");
    }
    const prompt = this.str(o, "prompt");
    const completion = this.str(o, "completion", { nonEmpty: true });
    return this.promptAnswer(prompt, completion);
  }

  private promptAnswer(prompt: string, answer: string): TrainRecord {
    const p = this.encode(prompt, true);
    const a = this.encode(this.withEos(answer), false);
    const ids = new Int32Array(p.length + a.length);
    ids.set(p);
    ids.set(a, p.length);
    const labels = new Int32Array(ids.length).fill(IGNORE);
    labels.set(a, p.length);
    return { ids, labels, answerStart: p.length, source: this.source };
  }

  /**
   * Alpaca {"instruction", "input", "output"}: with a chat template, one user turn (the instruction, then the input
   * after a blank line when there is one) and the output as the assistant's reply; without one, Stanford
   * Alpaca's prompt text and the output with EOS.
   */
  alpaca(o: Record<string, unknown>): TrainRecord {
    const instruction = this.str(o, "instruction", { nonEmpty: true });
    const input = this.str(o, "input", { optional: true });
    const output = this.str(o, "output", { nonEmpty: true });
    if (this.tok.chatTemplate !== undefined) {
      const user = input.trim() === "" ? instruction : `${instruction}\n\n${input}`;
      return this.chat([
        { role: "user", content: user },
        { role: "assistant", content: output },
      ]);
    }
    const prompt = (input.trim() === "" ? ALPACA_PROMPT.noInput : ALPACA_PROMPT.withInput)
      .replace("{instruction}", () => instruction)
      .replace("{input}", () => input);
    return this.promptAnswer(prompt, output);
  }

  /**
   * RAG {"question", "contexts", "answer"}: the RAG template (contexts as paragraphs, the question) is one user
   * turn of the chat template with the answer as the reply; without a chat template, the template's text, then
   * "\nAnswer: ", then the answer and EOS.
   */
  rag(o: Record<string, unknown>): TrainRecord {
    const question = this.str(o, "question", { nonEmpty: true });
    const answer = this.str(o, "answer", { nonEmpty: true });
    let contexts = o.contexts;
    if (contexts === undefined || contexts === null) this.fail(`missing field "contexts" (an array of strings)`);
    if (typeof contexts === "string") contexts = [contexts];
    if (!Array.isArray(contexts)) this.fail(`field "contexts" must be an array of strings, got ${describe(contexts)}`);
    (contexts as unknown[]).forEach((c, i) => {
      if (typeof c !== "string") this.fail(`"contexts"[${i}] must be a string, got ${describe(c)}`);
    });
    const user = renderRag(this.ctx.ragTemplate, contexts as string[], question);
    if (this.tok.chatTemplate !== undefined)
      return this.chat([
        { role: "user", content: user },
        { role: "assistant", content: answer },
      ]);
    return this.promptAnswer(user + PLAIN_RAG_ANSWER_CUE, answer);
  }

  /** {"messages": [...]}: the chat template's rendering; the loss on each assistant message and its end-of-turn token. */
  messages(o: Record<string, unknown>): TrainRecord {
    const messages = this.chatMessages(o.messages, "messages");
    return this.chat(messages);
  }

  private chatMessages(v: unknown, field: string): ChatMessage[] {
    if (!Array.isArray(v))
      this.fail(`field "${field}" must be an array of {"role", "content"} messages, got ${describe(v)}`);
    return (v as unknown[]).map((m, i) => {
      const where = `"${field}"[${i}]`;
      if (typeof m !== "object" || m === null || Array.isArray(m))
        this.fail(`${where} must be an object {"role", "content"}, got ${describe(m)}`);
      const { role, content } = m as Record<string, unknown>;
      if (typeof role !== "string") this.fail(`${where}.role must be a string, got ${describe(role)}`);
      if (!(CHAT_ROLES as readonly string[]).includes(role as string))
        this.fail(`${where}.role is ${JSON.stringify(role)}, not a known role (${CHAT_ROLES.join(", ")})`);
      if (typeof content !== "string") this.fail(`${where}.content must be a string, got ${describe(content)}`);
      return { role: role as string, content: content as string };
    });
  }

  private render(messages: readonly ChatMessage[], addGenerationPrompt: boolean): string {
    try {
      return applyChatTemplate(this.tok, messages, { addGenerationPrompt });
    } catch (e) {
      this.fail(`chat template: ${e instanceof Error ? e.message : String(e)}`);
    }
  }

  /**
   * The conversation through the chat template (no generation prompt), tokenized whole as transformers does, with
   * the loss on the assistant messages from `lossFrom` on. Each one's tokens are found by rendering prefixes of the
   * conversation (the idea of transformers' return_assistant_tokens_mask, without {% generation %} markers): the
   * messages before it with the generation prompt (where its content starts) and the messages through it (where its
   * turn ends). The loss covers its content and the turn's closing tokens up to and including the first special
   * token after the content (`<|im_end|>`, `<|eot_id|>`, `</s>`), not the role header before it nor what follows
   * that token (a newline). A template that closes turns with no special token: the loss ends with the content.
   */
  private chat(messages: readonly ChatMessage[], lossFrom = 0, field = "messages"): TrainRecord {
    if (this.tok.chatTemplate === undefined)
      this.fail(
        `a chat record needs the model's chat template, and ${this.tok.source} has none (expected tokenizer.chat_template in a GGUF, or chat_template in tokenizer_config.json)`,
      );
    const full = this.render(messages, false);
    const ids = this.encode(full, false);
    const labels = new Int32Array(ids.length).fill(IGNORE);
    let assistants = 0;
    let firstLoss = -1;
    for (let i = lossFrom; i < messages.length; i++) {
      if (messages[i]!.role !== "assistant") continue;
      assistants++;
      const before = this.render(messages.slice(0, i), true);
      const through = this.render(messages.slice(0, i + 1), false);
      if (!through.startsWith(before) || !full.startsWith(through))
        this.fail(
          `the chat template renders the conversation up to "${field}"[${i - lossFrom}] differently from the start of the whole conversation, so the assistant's tokens cannot be told apart`,
        );
      const end = before.length + this.turnLossEnd(through.slice(before.length), messages[i]!.content);
      const from = this.tokenBoundary(before, ids, i, field, lossFrom);
      const to = this.tokenBoundary(full.slice(0, end), ids, i, field, lossFrom);
      for (let k = from; k < to; k++) labels[k] = ids[k]!;
      if (firstLoss < 0) firstLoss = from;
    }
    if (assistants === 0)
      this.fail(`"${field}" has no "assistant" message: nothing to learn (the loss falls on assistant messages only)`);
    // Cut to --seq, a long record keeps its answers and the end of what precedes them (a RAG question stays; the
    // oldest context goes), as prompt/answer records do.
    return { ids, labels, answerStart: firstLoss, source: this.source };
  }

  /** Characters of an assistant turn (as rendered after its header) that take the loss. */
  private turnLossEnd(turn: string, content: string): number {
    let contentEnd: number;
    const at = content === "" ? 0 : turn.indexOf(content);
    if (at >= 0) contentEnd = at + content.length;
    else {
      // The template rewrote the content (stripped it, say): the content is what comes before the closing token.
      const trimmed = content.trim();
      const t = trimmed === "" ? -1 : turn.indexOf(trimmed);
      contentEnd = t >= 0 ? t + trimmed.length : 0;
    }
    let close = -1;
    let closeLen = 0;
    for (const special of this.tok.specialTokens.keys()) {
      const k = turn.indexOf(special, contentEnd);
      if (k >= 0 && (close < 0 || k < close || (k === close && special.length > closeLen))) {
        close = k;
        closeLen = special.length;
      }
    }
    if (close >= 0) return close + closeLen;
    return at >= 0 || contentEnd > 0 ? contentEnd : turn.trimEnd().length;
  }

  /** How many of `ids` the text `prefix` covers; it must tokenize to exactly that many leading ids. */
  private tokenBoundary(prefix: string, ids: Int32Array, i: number, field: string, lossFrom: number): number {
    const p = this.tok.encode(prefix, { addSpecialTokens: false });
    if (p.length > ids.length || p.some((id, k) => id !== ids[k]))
      this.fail(
        `"${field}"[${i - lossFrom}]: the assistant turn does not begin or end on a token boundary of the whole conversation, so its tokens cannot be told apart`,
      );
    return p.length;
  }
}

/** The RAG template with its placeholders filled: {contexts} (one paragraph per context) and {question}. */
export function renderRag(template: string, contexts: readonly string[], question: string): string {
  // One pass, so a context that happens to contain "{question}" stays as written.
  return template.replace(/\{(contexts|question)\}/g, (_, k: string) =>
    k === "question" ? question : contexts.join("\n\n"),
  );
}
