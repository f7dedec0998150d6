// A model's Jinja chat template rendered with @huggingface/jinja, as transformers' apply_chat_template renders it.
import { Template } from "@huggingface/jinja";
import { TesseraError } from "../errors.ts";
import type { Tokenizer } from "./tokenizer.ts";

/** A template that is missing, does not parse, or raises while rendering (its own raise_exception included). */
export class ChatTemplateError extends TesseraError {
  constructor(message: string, cause?: unknown) {
    super(message, { code: "ERR_CHAT_TEMPLATE", cause });
  }
}

export interface ChatMessage {
  role: string;
  content: string;
}

export interface ChatTemplateOptions {
  /** End with the header that opens the assistant's turn, for generation (default true). */
  addGenerationPrompt?: boolean;
}

/** Parsed templates by source: a data file renders the same template for every record (several times per chat). */
const parsed = new Map<string, Template>();

/**
 * Renders `messages` with the tokenizer's chat template. The variables are those transformers passes: messages,
 * add_generation_prompt and the special token strings (bos_token, eos_token, pad_token, unk_token); raise_exception
 * is @huggingface/jinja's own, and what it raises comes back as a ChatTemplateError.
 * The result holds the special tokens as text; encode it with addSpecialTokens false, as transformers does.
 */
export function applyChatTemplate(
  tokenizer: Tokenizer,
  messages: readonly ChatMessage[],
  opts: ChatTemplateOptions = {},
): string {
  const source = tokenizer.chatTemplate;
  if (source === undefined)
    throw new ChatTemplateError(
      `${tokenizer.source}: the model has no chat template (expected tokenizer.chat_template in a GGUF, or chat_template in tokenizer_config.json / chat_template.jinja)`,
    );
  let template = parsed.get(source);
  if (template === undefined) {
    try {
      template = new Template(source);
    } catch (e) {
      throw new ChatTemplateError(`${tokenizer.source}: the chat template does not parse: ${message(e)}`, e);
    }
    parsed.set(source, template);
  }
  const vars: Record<string, unknown> = {
    messages: messages.map((m) => ({ ...m })),
    add_generation_prompt: opts.addGenerationPrompt ?? true,
    bos_token: tokenizer.bosToken ?? "",
    eos_token: tokenizer.eosToken ?? "",
    pad_token: tokenizer.padToken ?? "",
    unk_token: tokenizer.unkToken ?? "",
  };
  try {
    return template.render(vars);
  } catch (e) {
    throw new ChatTemplateError(`${tokenizer.source}: rendering the chat template failed: ${message(e)}`, e);
  }
}

function message(e: unknown): string {
  return e instanceof Error ? e.message : String(e);
}
