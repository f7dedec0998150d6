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
import { parseMeshText } from "./sharding_report.ts";
import { DeviceMesh } from "../frontend/mesh.ts";
import { defaultClient } from "../frontend/array.ts";
import { exportedFromProgram } from "../frontend/exported.ts";
import { moduleName } from "../frontend/jit.ts";
import { paramNames } from "../frontend/trace.ts";

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

/**
 * The mesh and specs to lay an entry out with (`inspect --shardings`, `compile --emit exported`): `--mesh`, else the
 * entry's own mesh; its `shardings` give the specs.
 */
export function shardingFor(loaded: LoadedEntry, meshText: string | undefined, command: string): ShardingOpts {
  let mesh = loaded.entry.mesh;
  if (meshText !== undefined) {
    try {
      mesh = new DeviceMesh(parseMeshText(meshText), {}, null);
    } catch (e) {
      throw new UsageError(`--mesh: ${e instanceof Error ? e.message.replace(/^sharding: /, "") : String(e)}`, command);
    }
  }
  if (!mesh)
    throw new UsageError(
      `--shardings needs a mesh: --mesh data=2,model=4, or entry(..., { mesh }) in the model file`,
      command,
    );
  const shardings = loaded.entry.shardings;
  try {
    // A function of the mesh is the user's code: whatever it throws is reported at their line.
    const specs = typeof shardings === "function" ? shardings(mesh) : (shardings ?? {});
    return { mesh, in: specs.in, out: specs.out };
  } catch (e) {
    throw new CliError(formatUserError(e, isUserFile), e);
  }
}

export async function compileCommand(args: ParsedArgs): Promise<number> {
  const emit = args.options.get("emit") ?? "ir";
  const locs = args.options.has("locs");
  const dumpAfter = checkDumpAfter(args.options.get("dump-after"), "compile");
  const dumpTo = args.options.get("dump-to");
  if (dumpTo && !dumpAfter) throw new UsageError("--dump-to needs --dump-after", "compile");
  const to = dumpWriter(dumpTo);
  const out = args.options.get("out");
  const loaded = await loadEntry(args.positionals[0]!, args.options.get("entry"));
  const dumps = { ...(dumpAfter ? { dumpAfter } : {}), ...(to ? { dump: to } : {}) };
  if (emit === "exported") return exportEntry(loaded, dumps, out);
  const c = lowerEntry(loaded, dumps);
  let text = emit === "stablehlo" ? emitProgram(c, c.entryName) : print(c.graph, { locs });
  if (!text.endsWith("\n")) text += "\n";
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

/**
 * `--emit exported`: the file `exportJitted(jit(fn, { donate }), ...args)` writes for the entry (the same module
 * name and text), laid out over the entry's mesh when it has one, for the default PJRT plugin's platform.
 */
async function exportEntry(
  loaded: LoadedEntry,
  dumps: Pick<LowerOptions, "dumpAfter" | "dump">,
  out: string | undefined,
): Promise<number> {
  const e = loaded.entry;
  const c = lowerEntry(loaded, {
    ...dumps,
    ...(e.mesh ? { sharding: shardingFor(loaded, undefined, "compile") } : {}),
  });
  const name = moduleName(e.fn, {});
  const exported = exportedFromProgram(
    c,
    emitProgram(c, name),
    { name, argNames: paramNames(e.fn, e.args.length), donate: e.donate ?? [], statics: [] },
    await defaultClient(),
  );
  if (!out) {
    process.stdout.write(exported.serialize());
    return EXIT.ok;
  }
  await exported.save(out);
  return EXIT.ok;
}
