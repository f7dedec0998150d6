// Loading a user's model file: type-check it with ts-morph, import it, and find the exported entry to compile.
import { existsSync, readFileSync } from "node:fs";
import path from "node:path";
import { fileURLToPath, pathToFileURL } from "node:url";
import { Project, ts } from "ts-morph";
import type { Entry } from "../frontend/trace.ts";
import { fsError } from "../host/fs_errors.ts";
import { CliError, formatDiagnostic, formatUserError } from "./diagnostics.ts";

/** This package's root: `tessera` in a model file resolves to `<root>/src/index.ts`. */
export const PACKAGE_ROOT = fileURLToPath(new URL("../../", import.meta.url));
const SOURCE_DIR = path.join(PACKAGE_ROOT, "src") + path.sep;

/**
 * Files whose errors are the user's: not tessera's own sources and not installed packages. Used to pick which
 * type errors to report and which stack frame a runtime error belongs to.
 */
export function isUserFile(absPath: string): boolean {
  return !absPath.startsWith(SOURCE_DIR) && !absPath.includes(`${path.sep}node_modules${path.sep}`);
}

/** The model's compiler configuration: strict, ESM, `.ts` imports allowed, `tessera` mapped onto this package. */
function compilerOptions(): ts.CompilerOptions {
  return {
    target: ts.ScriptTarget.ES2022,
    module: ts.ModuleKind.ESNext,
    moduleResolution: ts.ModuleResolutionKind.Bundler,
    lib: ["lib.es2023.d.ts"],
    types: ["node"],
    typeRoots: [path.join(PACKAGE_ROOT, "node_modules", "@types")],
    strict: true,
    noEmit: true,
    allowImportingTsExtensions: true,
    skipLibCheck: true,
    esModuleInterop: true,
    resolveJsonModule: true,
    isolatedModules: true,
    paths: { tessera: [path.join(PACKAGE_ROOT, "src", "index.ts")] },
  };
}

/**
 * Type-checks `file` and the user files it imports. Returns formatted reports (empty when clean). Only user files
 * are checked: tessera's own sources are checked by its test suite, and checking them here would cost seconds.
 * When the files do not parse, only the syntax errors are returned (kind "syntax"), as tsc does: type errors
 * found in a file that did not parse are mostly echoes of the syntax error.
 */
export function typeCheck(file: string): { kind: "syntax" | "type"; errors: string[] } {
  const project = new Project({ compilerOptions: compilerOptions(), skipAddingFilesFromTsConfig: true });
  project.addSourceFileAtPath(file);
  project.resolveSourceFileDependencies();
  const program = project.getProgram().compilerObject;
  const userFiles = program.getSourceFiles().filter((sf) => {
    const abs = path.resolve(sf.fileName);
    return !sf.isDeclarationFile && (abs === file || isUserFile(abs));
  });
  const errorsOf = (ds: readonly ts.Diagnostic[]) =>
    ds.filter((d) => d.category === ts.DiagnosticCategory.Error).map(formatTsDiagnostic);
  const syntax = errorsOf(userFiles.flatMap((sf) => program.getSyntacticDiagnostics(sf)));
  if (syntax.length > 0) return { kind: "syntax", errors: syntax };
  const diagnostics: ts.Diagnostic[] = [...program.getOptionsDiagnostics(), ...program.getGlobalDiagnostics()];
  for (const sf of userFiles) diagnostics.push(...program.getSemanticDiagnostics(sf));
  return { kind: "type", errors: errorsOf(diagnostics) };
}

function formatTsDiagnostic(d: ts.Diagnostic): string {
  const message = ts.flattenDiagnosticMessageText(d.messageText, "\n");
  const code = `TS${d.code}`;
  if (!d.file || d.start === undefined) return `error ${code}: ${message}\n`;
  const { line, character } = d.file.getLineAndCharacterOfPosition(d.start);
  const place = { file: path.resolve(d.file.fileName), line: line + 1, col: character + 1, length: d.length ?? 1 };
  return formatDiagnostic(place, message, code, d.file.text);
}

/** A model file's exports after importing it (under tsx, which bin/tessera.mjs registers). */
export async function importModel(file: string): Promise<Record<string, unknown>> {
  try {
    return (await import(pathToFileURL(file).href)) as Record<string, unknown>;
  } catch (e) {
    throw new CliError(formatUserError(e, isUserFile), e);
  }
}

/** What `entry(fn, argSpecs, opts?)` returns. */
export type EntryLike = Entry;

/** Checked by its tag rather than by class, so an entry made by another copy of tessera is still found. */
export function isEntry(x: unknown): x is EntryLike {
  return typeof x === "object" && x !== null && (x as { kind?: unknown }).kind === "tessera.entry";
}

/**
 * The entry named `name`; without a name, the file's only entry. Errors list what the file does export.
 */
export function findEntry(
  exports: Record<string, unknown>,
  name: string | undefined,
  file: string,
): { name: string; entry: EntryLike } {
  const shown = path.relative(process.cwd(), file) || file;
  const entries = Object.keys(exports)
    .filter((k) => isEntry(exports[k]))
    .sort();
  const available = entries.length
    ? `available entries: ${entries.join(", ")}`
    : 'it exports no entries (export const f = entry(fn, [spec("f32", [2, 3])]))';
  if (name === undefined) {
    if (entries.length === 1) return { name: entries[0]!, entry: exports[entries[0]!] as EntryLike };
    throw new CliError(`error: ${shown}: choose an entry with --entry <export>; ${available}\n`);
  }
  if (!(name in exports)) throw new CliError(`error: ${shown} has no export '${name}'; ${available}\n`);
  const value = exports[name];
  if (!isEntry(value)) {
    const what = typeof value === "function" ? "a plain function" : typeof value;
    throw new CliError(`error: export '${name}' of ${shown} is ${what}, not an entry(...); ${available}\n`);
  }
  return { name, entry: value };
}

/** Resolves and checks a model file argument, type-checks it, imports it: everything before tracing. */
export async function loadModel(fileArg: string): Promise<{ file: string; exports: Record<string, unknown> }> {
  const file = path.resolve(fileArg);
  if (!existsSync(file)) throw new CliError(`error: cannot find model file '${fileArg}'\n`);
  try {
    // Read once up front so that a folder or an unreadable file is reported as such, not as a type-checker crash.
    readFileSync(file);
  } catch (e) {
    throw fsError(e, fileArg, "read model file");
  }
  const { kind, errors } = typeCheck(file);
  if (errors.length) {
    const summary = `Found ${errors.length} ${kind} error${errors.length === 1 ? "" : "s"}; nothing was compiled.`;
    throw new CliError(`${errors.join("\n")}\n${summary}\n`);
  }
  return { file, exports: await importModel(file) };
}
