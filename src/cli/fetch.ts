// `tessera fetch <model>`: a catalogued model into the cache; progress on stderr, the GGUF's absolute path last on stdout.
import { UsageError, type ParsedArgs } from "./args.ts";
import { EXIT } from "../errors.ts";
import { MODELS, ensureModel, isModelName } from "../formats/model_fetch.ts";

export async function fetchCommand(args: ParsedArgs): Promise<number> {
  const name = args.positionals[0] ?? "";
  if (!isModelName(name))
    throw new UsageError(`unknown model ${JSON.stringify(name)}; known: ${Object.keys(MODELS).join(", ")}`, "fetch");
  const { path } = await ensureModel(name, (line) => process.stderr.write(`tessera fetch: ${line}\n`));
  // Last line of stdout, alone, so that `$(tessera fetch NAME)` is the path.
  process.stdout.write(`${path}\n`);
  return EXIT.ok;
}
