// `tessera compile`: load and type-check a model file, trace one entry, run the cleanup passes, print IR or StableHLO.
import { writeFileSync } from "node:fs";
import { emitStableHLO } from "../backend/stablehlo/index.ts";
import { donationMap } from "../frontend/jit.ts";
import { trace, type Traced } from "../frontend/trace.ts";
import { numLeaves, type TreeDef } from "../frontend/tree.ts";
import type { Graph } from "../ir/graph.ts";
import { print } from "../ir/print.ts";
import { runPasses } from "../passes/manager.ts";
import { CLEANUP_PIPELINE } from "../passes/pipeline.ts";
import { UsageError, type ParsedArgs } from "./args.ts";
import { CliError, formatUserError } from "./diagnostics.ts";
import { findEntry, isUserFile, loadModel, type EntryLike } from "./load.ts";

/** The passes `compile` and `inspect` run; autodiff has already happened inside `valueAndGrad` at trace time. */
export const COMPILE_PIPELINE = CLEANUP_PIPELINE;

/** `--dump-after` values: a pass of the pipeline or `all`. Checked before the slow part starts. */
export function checkDumpAfter(value: string | undefined, command: string): string[] | "all" | undefined {
  if (value === undefined) return undefined;
  if (value === "all") return "all";
  const names = COMPILE_PIPELINE.map((p) => p.name);
  const asked = value.split(",").map((s) => s.trim());
  for (const n of asked) {
    if (!names.includes(n)) {
      const why = n === "autodiff" ? " (autodiff runs while tracing, inside valueAndGrad)" : "";
      throw new UsageError(`--dump-after: '${n}' is not a pass of the pipeline${why}; choose one of ${names.join(", ")} or all`, command);
    }
  }
  return asked;
}

export interface Compiled {
  readonly file: string;
  readonly entryName: string;
  readonly entry: EntryLike;
  /** The graph as traced, before any pass. */
  readonly traced: Graph;
  /** The structure of the entry's argument list (one child per positional argument). */
  readonly inTree: TreeDef;
  /** The structure of the entry's result. */
  readonly outTree: TreeDef;
  /** After the cleanup pipeline. */
  readonly graph: Graph;
}

/**
 * Everything up to a cleaned-up graph: type-check, import, find the entry, trace, run passes. User mistakes
 * (type errors, shape errors, a missing entry) become CliErrors pointing at the user's source.
 */
export async function compileEntry(
  fileArg: string,
  entryName: string | undefined,
  dump: { after?: string[] | "all"; to?: (pass: string, text: string) => void; locs?: boolean } = {},
): Promise<Compiled> {
  const { file, exports } = await loadModel(fileArg);
  const { name, entry } = findEntry(exports, entryName, file);
  let traced: Traced;
  try {
    traced = trace(entry.fn, entry.args);
  } catch (e) {
    throw new CliError(formatUserError(e, isUserFile));
  }
  const graph = runPasses(traced.graph, COMPILE_PIPELINE, {
    ...(dump.after ? { dumpAfter: dump.after } : {}),
    ...(dump.to ? { dump: dump.to } : {}),
  });
  return { file, entryName: name, entry, traced: traced.graph, inTree: traced.inTree, outTree: traced.outTree, graph };
}

/**
 * Donation as `jit` does it: each leaf of a donated argument aliases the output of its own name and type (else the
 * first free one of that type); a leaf with no such output is still offered to XLA as a buffer donor.
 */
function donation(entry: EntryLike, g: Graph, inTree: TreeDef): { donate: (number | undefined)[]; donors: boolean[] } | undefined {
  const donate = entry.donate ?? [];
  if (!donate.length || inTree.kind !== "array") return undefined;
  const argOfLeaf = inTree.children.flatMap((child, arg) => Array<number>(numLeaves(child)).fill(arg));
  const donated = new Set(g.inputs.flatMap((_, i) => (donate.includes(argOfLeaf[i]!) ? [i] : [])));
  const map = donationMap(g, donated);
  return { donate: map, donors: g.inputs.map((_, i) => donated.has(i) && map[i] === undefined) };
}

function dumpWriter(to: string | undefined): ((pass: string, text: string) => void) | undefined {
  if (!to) return undefined;
  writeFileSync(to, "");
  return (pass, text) => writeFileSync(to, `// -----// IR Dump After ${pass} //----- //\n${text}\n`, { flag: "a" });
}

export async function compileCommand(args: ParsedArgs): Promise<number> {
  const emit = args.options.get("emit") ?? "ir";
  const locs = args.options.has("locs");
  const dumpAfter = checkDumpAfter(args.options.get("dump-after"), "compile");
  const dumpTo = args.options.get("dump-to");
  if (dumpTo && !dumpAfter) throw new UsageError("--dump-to needs --dump-after", "compile");
  const to = dumpWriter(dumpTo);
  const c = await compileEntry(args.positionals[0]!, args.options.get("entry"), {
    ...(dumpAfter ? { after: dumpAfter } : {}),
    ...(to ? { to } : {}),
  });
  let text: string;
  if (emit === "stablehlo") {
    text = emitStableHLO(c.graph, { moduleName: c.entryName, ...donation(c.entry, c.graph, c.inTree) });
  } else {
    text = print(c.graph, { locs });
  }
  if (!text.endsWith("\n")) text += "\n";
  const out = args.options.get("out");
  if (out) writeFileSync(out, text);
  else process.stdout.write(text);
  return 0;
}
