// `tessera eval`: a model's loss and perplexity on a data file, as a line or as JSON.
import { UsageError, type ParsedArgs } from "./args.ts";
import { evaluate } from "../train/eval_run.ts";

function positiveInt(name: string, text: string | undefined, min: number): number | undefined {
  if (text === undefined) return undefined;
  const v = Number(text);
  if (text.trim() === "" || !Number.isInteger(v) || v < min)
    throw new UsageError(`--${name} must be an integer >= ${min}; got '${text}'`, "eval");
  return v;
}

/** Prints `loss L  perplexity P  tokens N`, or `{"loss":L,"perplexity":P,"tokens":N}` with --json. */
export async function evalCommand(args: ParsedArgs): Promise<number> {
  const o = args.options;
  const seq = positiveInt("seq", o.get("seq"), 2);
  const batch = positiveInt("batch", o.get("batch"), 1);
  const r = await evaluate(
    {
      model: o.get("model") ?? null,
      adapter: o.get("adapter") ?? null,
      data: o.get("data")!,
      ...(seq !== undefined ? { seq } : {}),
      ...(batch !== undefined ? { batch } : {}),
      ...(o.get("precision") ? { precision: o.get("precision") as "f32" | "bf16" } : {}),
    },
    (message) => process.stderr.write(`${message}\n`),
  );
  if (o.has("json"))
    process.stdout.write(`${JSON.stringify({ loss: r.loss, perplexity: r.perplexity, tokens: r.tokens })}\n`);
  else
    process.stdout.write(
      `loss ${r.loss.toFixed(6)}  perplexity ${r.perplexity.toFixed(4)}  tokens ${r.tokens.toLocaleString("en-US")}\n`,
    );
  return 0;
}
