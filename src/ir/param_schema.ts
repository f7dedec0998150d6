// The expected shape of every op's params (key -> kind), shared by the text parser and the verifier.
import { isDType } from "./types.ts";
import { OP_SCHEMA, type OpName, type ParamKind } from "./ops.ts";

export type { ParamKind };

/** Each op's param names and kinds (OP_SCHEMA, where OpParams is derived from). */
export const PARAM_SCHEMA: { readonly [N in OpName]: Readonly<Record<string, ParamKind>> } = OP_SCHEMA;

export function paramKinds(name: OpName): Readonly<Record<string, ParamKind>> {
  return PARAM_SCHEMA[name] as Readonly<Record<string, ParamKind>>;
}

const DIRS = ["eq", "ne", "lt", "le", "gt", "ge"];

function isGraphLike(v: unknown): boolean {
  if (typeof v !== "object" || v === null) return false;
  const g = v as Record<string, unknown>;
  return Array.isArray(g.inputs) && Array.isArray(g.ops) && Array.isArray(g.outputs);
}

export function valueHasKind(v: unknown, kind: ParamKind): boolean {
  switch (kind) {
    case "int":
      return Number.isInteger(v);
    case "ints":
      return Array.isArray(v) && v.every((x) => Number.isInteger(x));
    case "numbers":
      return Array.isArray(v) && v.every((x) => typeof x === "number");
    case "dtype":
      return typeof v === "string" && isDType(v);
    case "dir":
      return typeof v === "string" && DIRS.includes(v);
    case "bool":
      return typeof v === "boolean";
    case "string":
      return typeof v === "string";
    case "strings":
      return Array.isArray(v) && v.every((x) => typeof x === "string");
    case "graph":
      return isGraphLike(v);
    case "graphs":
      return Array.isArray(v) && v.length > 0 && v.every(isGraphLike);
  }
}

/** Problems with `params` for op `name`: missing or unknown keys and values of the wrong kind (empty if fine). */
export function checkParams(name: OpName, params: unknown): string[] {
  if (typeof params !== "object" || params === null) return [`params must be an object`];
  const kinds = paramKinds(name);
  const p = params as Record<string, unknown>;
  const problems: string[] = [];
  // for-in rather than Object.entries: the verifier calls this for every op after every pass.
  for (const key in kinds) {
    const kind = kinds[key]!;
    if (!(key in p)) problems.push(`missing param '${key}'`);
    else if (!valueHasKind(p[key], kind))
      problems.push(`param '${key}' must be ${KIND_WORDS[kind]}, got ${paramText(p[key])}`);
  }
  for (const key in p) if (!(key in kinds)) problems.push(`unknown param '${key}'`);
  return problems;
}

const KIND_WORDS: Record<ParamKind, string> = {
  int: "an integer",
  ints: "an array of integers",
  numbers: "an array of numbers",
  dtype: "a dtype",
  dir: "one of eq, ne, lt, le, gt, ge",
  bool: "true or false",
  string: "a string",
  strings: "an array of strings",
  graph: "a graph",
  graphs: "a non-empty list of graphs",
};

/** A param value as written in IR text (JSON), which is what its error messages quote. */
function paramText(v: unknown): string {
  if (isGraphLike(v)) return "a graph";
  if (Array.isArray(v) && v.some(isGraphLike)) return "a list of graphs";
  try {
    return JSON.stringify(v) ?? String(v);
  } catch {
    return String(v);
  }
}
