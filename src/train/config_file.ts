// Run config files (--config run.yaml|run.json): the train flags as keys, camelCase or kebab-case, checked field by field against TrainConfigSchema.
import { readFile } from "node:fs/promises";
import { extname } from "node:path";
import { parse as parseYaml, YAMLParseError } from "yaml";
import { describe, EXIT, TesseraError } from "../errors.ts";
import { fsError } from "../host/fs_errors.ts";
import { displayPath } from "../cli/diagnostics.ts";
import { flagName, TrainConfigSchema, type TrainConfigInput } from "./config.ts";

const bad = (file: string, message: string, line?: number) =>
  new TesseraError(`${displayPath(file)}${line === undefined ? "" : `:${line}`}: ${message}`, {
    code: "ERR_CONFIG",
    exitCode: EXIT.usage,
  });

/** `learning-rate` -> `learningRate`; camelCase keys stay as they are. */
const camel = (key: string) => key.replace(/-([a-z0-9])/g, (_, c: string) => c.toUpperCase());

/** The closest known key within two edits, for "did you mean". */
function suggest(key: string, known: readonly string[]): string | undefined {
  const dist = (a: string, b: string) => {
    const d = Array.from({ length: a.length + 1 }, (_, i) => [i, ...Array<number>(b.length).fill(0)]);
    for (let j = 1; j <= b.length; j++) d[0]![j] = j;
    for (let i = 1; i <= a.length; i++)
      for (let j = 1; j <= b.length; j++)
        d[i]![j] = Math.min(d[i - 1]![j]! + 1, d[i]![j - 1]! + 1, d[i - 1]![j - 1]! + (a[i - 1] === b[j - 1] ? 0 : 1));
    return d[a.length]![b.length]!;
  };
  let best: [string, number] | undefined;
  for (const k of known) {
    const n = dist(key.toLowerCase(), k.toLowerCase());
    if (n <= 2 && (!best || n < best[1])) best = [k, n];
  }
  return best?.[0];
}

/**
 * A run config file as a train() config: JSON (.json) or YAML (anything else; YAML reads JSON too), one mapping
 * whose keys are the train flags without their dashes (`grad-accum` or `gradAccum`). `targets` may be a list or
 * "q,v". Paths are relative to the working directory, as on the command line. An unknown key, a key given twice
 * (in both spellings) or a bad value is an ERR_CONFIG error (exit 2) naming the file and the key.
 */
export async function loadRunConfigFile(file: string): Promise<TrainConfigInput> {
  const text = await readFile(file, "utf8").catch((e) => {
    throw fsError(e, file, "read the config file");
  });
  let doc: unknown;
  try {
    doc = extname(file).toLowerCase() === ".json" ? JSON.parse(text) : parseYaml(text);
  } catch (e) {
    if (e instanceof YAMLParseError) throw bad(file, e.message.split("\n")[0]!, e.linePos?.[0].line);
    throw bad(file, `not valid JSON: ${(e as Error).message}`);
  }
  if (doc === null || doc === undefined) return {};
  if (typeof doc !== "object" || Array.isArray(doc))
    throw bad(file, `expected a mapping of train options (e.g. "steps: 200"), got ${describe(doc)}`);
  const shape = TrainConfigSchema.shape as Record<string, { safeParse: (v: unknown) => ZodResult }>;
  const known = Object.keys(shape);
  const out: Record<string, unknown> = {};
  for (const [rawKey, rawValue] of Object.entries(doc as Record<string, unknown>)) {
    const key = camel(rawKey);
    if (!(key in shape)) {
      const hint = suggest(key, known);
      throw bad(
        file,
        `unknown key "${rawKey}"${hint ? ` (did you mean "${flagName(hint).slice(2)}"?)` : ""}; the keys are the train flags: ${known.map((k) => flagName(k).slice(2)).join(", ")}`,
      );
    }
    if (key in out) throw bad(file, `"${rawKey}" is given twice (as ${flagName(key).slice(2)} and ${key})`);
    let value = rawValue;
    if (key === "targets" && typeof value === "string") value = value.split(",").map((t) => t.trim());
    if (key === "targets" && Array.isArray(value))
      value = value.map((t) => (typeof t === "string" ? t.replace(/_proj$/, "") : t));
    const r = shape[key]!.safeParse(value);
    if (!r.success)
      throw bad(file, `${rawKey}: ${r.error?.issues[0]?.message ?? "invalid value"} (got ${describe(value)})`);
    out[key] = value;
  }
  return out as TrainConfigInput;
}

interface ZodResult {
  success: boolean;
  error?: { issues: { message: string }[] } | undefined;
}
