// `tessera tokenize --model M (--text T | --chat messages.json) [--json]`: the ids a model's tokenizer gives.
import { readFile } from "node:fs/promises";
import { UsageError, type ParsedArgs } from "./args.ts";
import { EXIT, TesseraError } from "../errors.ts";
import { resolveModel } from "../formats/model_fetch.ts";
import { Tokenizer } from "../text/tokenizer.ts";
import { applyChatTemplate, type ChatMessage } from "../text/chat_template.ts";

export async function tokenizeCommand(args: ParsedArgs): Promise<number> {
  const model = args.options.get("model");
  const text = args.options.get("text");
  const chat = args.options.get("chat");
  if (model === undefined) throw new UsageError("--model is required", "tokenize");
  if ((text === undefined) === (chat === undefined))
    throw new UsageError("give exactly one of --text and --chat", "tokenize");
  const tokenizer = await Tokenizer.fromModel(
    await resolveModel(model, (line) => process.stderr.write(`tessera tokenize: ${line}\n`)),
  );
  let ids: number[];
  let prompt: string | undefined;
  if (text !== undefined) {
    // As `tokenizer(text)` in transformers: whatever the model adds around a text (BOS when add_bos_token).
    ids = tokenizer.encode(text);
  } else {
    prompt = applyChatTemplate(tokenizer, await readMessages(chat ?? ""), { addGenerationPrompt: true });
    // The template already wrote the special tokens, so nothing is added (as apply_chat_template tokenizes).
    ids = tokenizer.encode(prompt, { addSpecialTokens: false });
  }
  if (args.options.has("json"))
    process.stdout.write(`${JSON.stringify(prompt === undefined ? { ids } : { ids, prompt })}\n`);
  else process.stdout.write(`${ids.join(" ")}\n`);
  return EXIT.ok;
}

/** A JSON file holding an array of {role, content} messages. */
async function readMessages(path: string): Promise<ChatMessage[]> {
  const bad = (msg: string, cause?: unknown) =>
    new TesseraError(`--chat ${path}: ${msg} (expected a JSON array of {"role": string, "content": string})`, {
      code: "ERR_CHAT_FILE",
      cause,
    });
  let raw: unknown;
  try {
    raw = JSON.parse(await readFile(path, "utf8"));
  } catch (e) {
    throw bad(e instanceof Error ? e.message : String(e), e);
  }
  if (!Array.isArray(raw)) throw bad("not an array");
  raw.forEach((m: unknown, i) => {
    const ok =
      typeof m === "object" &&
      m !== null &&
      typeof (m as ChatMessage).role === "string" &&
      typeof (m as ChatMessage).content === "string";
    if (!ok) throw bad(`message ${i} is not {role, content} with string values`);
  });
  return raw as ChatMessage[];
}
