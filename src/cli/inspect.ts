// `tessera inspect`: an entry's IR after cleanup (every value with its type), then its cost summary.
import { print } from "../ir/print.ts";
import { UsageError, type ParsedArgs } from "./args.ts";
import { compileEntry } from "./compile.ts";
import { displayPath } from "./diagnostics.ts";
import { summarize } from "./summary.ts";

export async function inspectCommand(args: ParsedArgs): Promise<number> {
  const topText = args.options.get("top") ?? "5";
  const top = Number(topText);
  if (!Number.isInteger(top) || top < 0) throw new UsageError(`--top must be a non-negative integer, got '${topText}'`, "inspect");
  const c = await compileEntry(args.positionals[0]!, args.options.get("entry"));
  const header = `// ${displayPath(c.file)} --entry ${c.entryName}: ${c.traced.ops.length} ops traced, ${c.graph.ops.length} after cleanup`;
  process.stdout.write(`${header}\n${print(c.graph, { locs: args.options.has("locs") }).trimEnd()}\n\n${summarize(c.graph, { top })}`);
  return 0;
}
