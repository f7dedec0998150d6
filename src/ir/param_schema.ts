// The expected shape of every op's params (key -> kind), shared by the text parser and the verifier.
import { isDType } from "./types.ts";
import type { OpName, OpParams } from "./ops.ts";

/** int: integer; ints: integer array; numbers: any float64 array (constant values); graph: a nested Graph. */
export type ParamKind = "int" | "ints" | "numbers" | "dtype" | "dir" | "bool" | "graph";

type Schema<N extends OpName> = { readonly [K in keyof OpParams[N]]-?: ParamKind };

const NONE = {} as const;

/** One entry per op, keyed by exactly the op's param names, so a new op or param fails to compile until listed. */
export const PARAM_SCHEMA: { readonly [N in OpName]: Schema<N> } = {
  neg: NONE,
  abs: NONE,
  exp: NONE,
  log: NONE,
  sqrt: NONE,
  rsqrt: NONE,
  tanh: NONE,
  logistic: NONE,
  sin: NONE,
  cos: NONE,
  not: NONE,
  add: NONE,
  sub: NONE,
  mul: NONE,
  div: NONE,
  pow: NONE,
  max: NONE,
  min: NONE,
  and: NONE,
  or: NONE,
  xor: NONE,
  shift_left: NONE,
  shift_right_logical: NONE,
  compare: { dir: "dir" },
  select: NONE,
  convert: { dtype: "dtype" },
  bitcast_convert: { dtype: "dtype" },
  constant: { dtype: "dtype", shape: "ints", value: "numbers" },
  iota: { dtype: "dtype", shape: "ints", dim: "int" },
  broadcast_in_dim: { shape: "ints", dims: "ints" },
  reshape: { shape: "ints" },
  transpose: { perm: "ints" },
  slice: { start: "ints", limit: "ints", stride: "ints" },
  concatenate: { axis: "int" },
  pad: { low: "ints", high: "ints", interior: "ints" },
  reduce_sum: { axes: "ints" },
  reduce_max: { axes: "ints" },
  reduce_min: { axes: "ints" },
  dot_general: { lhsBatch: "ints", rhsBatch: "ints", lhsContract: "ints", rhsContract: "ints", outDtype: "dtype" },
  gather: NONE,
  scatter_add: NONE,
  take_along_axis: { axis: "int" },
  dynamic_slice: { sizes: "ints" },
  dynamic_update_slice: NONE,
  scan: { body: "graph", length: "int", numConsts: "int", numCarry: "int", reverse: "bool" },
  optimization_barrier: NONE,
};

export function paramKinds(name: OpName): Readonly<Record<string, ParamKind>> {
  return PARAM_SCHEMA[name] as Readonly<Record<string, ParamKind>>;
}

const DIRS = ["eq", "ne", "lt", "le", "gt", "ge"];

function isGraphLike(v: unknown): boolean {
  if (typeof v !== "object" || v === null) return false;
  const g = v as Record<string, unknown>;
  return Array.isArray(g["inputs"]) && Array.isArray(g["ops"]) && Array.isArray(g["outputs"]);
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
    case "graph":
      return isGraphLike(v);
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
    else if (!valueHasKind(p[key], kind)) problems.push(`param '${key}' must be ${KIND_WORDS[kind]}, got ${paramText(p[key])}`);
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
  graph: "a graph",
};

/** A param value as written in IR text (JSON), which is what its error messages quote. */
function paramText(v: unknown): string {
  if (isGraphLike(v)) return "a graph";
  try {
    return JSON.stringify(v) ?? String(v);
  } catch {
    return String(v);
  }
}
