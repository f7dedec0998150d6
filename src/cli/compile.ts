// `tessera compile`: load and type-check a model file, trace one entry, run the cleanup passes, print IR or StableHLO.
import { writeFileSync } from "node:fs";
import { EXIT, TesseraError } from "../errors.ts";
import { annotationMark, annotationsSince, type ShardAnnotation } from "../frontend/annotations.ts";
import { emitProgram, lowerProgram, type LowerOptions, type Program } from "../frontend/lowering.ts";
import type { ShardingOpts } from "../frontend/spmd.ts";
import { trace, type Traced } from "../frontend/trace.ts";
import { fsError } from "../host/fs_errors.ts";
import { print } from "../ir/print.ts";
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
      throw new UsageError(
        `--dump-after: '${n}' is not a pass of the pipeline${why}; choose one of ${names.join(", ")} or all`,
        command,
      );
    }
  }
  return asked;
}

/** A model file loaded and its entry found: what every command starts from. */
export interface LoadedEntry {
  readonly file: string;
  readonly entryName: string;
  readonly entry: EntryLike;
}

/** An entry traced and lowered (lowering.ts: the passes, donation, a sharding plan on a mesh). */
export interface Compiled extends LoadedEntry, Program {}

/** Type-checks and imports the model file and finds the entry; user mistakes become CliErrors at the user's source. */
export async function loadEntry(fileArg: string, entryName: string | undefined): Promise<LoadedEntry> {
  const { file, exports } = await loadModel(fileArg);
  const { name, entry } = findEntry(exports, entryName, file);
  return { file, entryName: name, entry };
}

/**
 * Traces the entry and lowers it as jit would, donating what `entry(..., { donate })` says. Errors in the user's
 * model (while tracing, or a sharding or shape mistake while lowering) become CliErrors pointing at their source.
 */
export function lowerEntry(
  loaded: LoadedEntry,
  opts: Pick<LowerOptions, "dumpAfter" | "dump"> & { sharding?: ShardingOpts } = {},
): Compiled {
  let traced: Traced;
  let made: ShardAnnotation[];
  const mark = annotationMark();
  try {
    traced = trace(loaded.entry.fn, loaded.entry.args);
  } catch (e) {
    throw new CliError(formatUserError(e, isUserFile), e);
  } finally {
    made = annotationsSince(mark);
  }
  const donate = loaded.entry.donate ?? [];
  const lowerOpts: LowerOptions = {
    donate,
    ...(opts.sharding ? { sharding: { ...opts.sharding, made } } : {}),
    ...(opts.dumpAfter ? { dumpAfter: opts.dumpAfter } : {}),
    ...(opts.dump ? { dump: opts.dump } : {}),
  };
  try {
    return { ...loaded, ...lowerProgram(traced, lowerOpts) };
  } catch (e) {
    // A bug of ours (a pass or the verifier failing) keeps its stack; the user's mistakes get their source line.
    if (e instanceof TesseraError && e.exitCode === EXIT.userError)
      throw new CliError(formatUserError(e, isUserFile), e);
    throw e;
  }
}

function dumpWriter(to: string | undefined): ((pass: string, text: string) => void) | undefined {
  if (!to) return undefined;
  const write = (text: string, flag: "w" | "a") => {
    try {
      writeFileSync(to, text, { flag });
    } catch (e) {
      throw fsError(e, to, "write --dump-to file");
    }
  };
  write("", "w");
  return (pass, text) => write(`// -----// IR Dump After ${pass} //----- //\n${text}\n`, "a");
}

export async function compileCommand(args: ParsedArgs): Promise<number> {
  const emit = args.options.get("emit") ?? "ir";
  const locs = args.options.has("locs");
  const dumpAfter = checkDumpAfter(args.options.get("dump-after"), "compile");
  const dumpTo = args.options.get("dump-to");
  if (dumpTo && !dumpAfter) throw new UsageError("--dump-to needs --dump-after", "compile");
  const to = dumpWriter(dumpTo);
  const loaded = await loadEntry(args.positionals[0]!, args.options.get("entry"));
  const c = lowerEntry(loaded, { ...(dumpAfter ? { dumpAfter } : {}), ...(to ? { dump: to } : {}) });
  let text = emit === "stablehlo" ? emitProgram(c, c.entryName) : print(c.graph, { locs });
  if (!text.endsWith("\n")) text += "\n";
  const out = args.options.get("out");
  if (!out) {
    process.stdout.write(text);
    return EXIT.ok;
  }
  try {
    writeFileSync(out, text);
  } catch (e) {
    throw fsError(e, out, "write --out file");
  }
  return EXIT.ok;
}
