// Error reports that point at the user's source: `file:line:col - error: message`, the line itself and a caret.
import { readFileSync } from "node:fs";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { TesseraError } from "../errors.ts";

/** A place in a source file: absolute path, 1-based line and column, and how many characters to underline. */
export interface Place {
  readonly file: string;
  readonly line: number;
  readonly col: number;
  readonly length?: number;
}

/** An error the CLI reports to the user and exits 1 on: no stack, already formatted (source excerpts, type errors). */
export class CliError extends TesseraError {
  /** `cause`: the error in the user's model this reports, whose stack TESSERA_DEBUG=1 shows. */
  constructor(message: string, cause?: unknown) {
    super(message, { code: "ERR_CLI", ...(cause === undefined ? {} : { cause }) });
    this.name = "CliError";
  }

  override report(): string {
    return this.message;
  }
}

/** Absolute path from what a loc or stack frame holds: a file URL, an absolute path, or one relative to cwd. */
export function toPath(file: string): string {
  if (file.startsWith("file://")) return fileURLToPath(file);
  return path.resolve(file);
}

/** Paths are shown relative to the working directory when they are under it, as compilers do. */
export function displayPath(file: string): string {
  const rel = path.relative(process.cwd(), file);
  return rel && !rel.startsWith("..") && !path.isAbsolute(rel) ? rel : file;
}

export function formatPlace(p: Place): string {
  return `${displayPath(p.file)}:${p.line}:${p.col}`;
}

/** The source line with a gutter, and a caret under the column (`^~~~` when a length is known). */
export function excerpt(p: Place, text?: string): string {
  let source = text;
  if (source === undefined) {
    try {
      source = readFileSync(p.file, "utf8");
    } catch {
      return "";
    }
  }
  const lineText = source.split(/\r?\n/)[p.line - 1];
  if (lineText === undefined) return "";
  const gutter = String(p.line);
  const pad = " ".repeat(gutter.length);
  // Keep tabs under tabs so the caret lines up however the terminal expands them.
  const lead = lineText.slice(0, Math.max(0, p.col - 1)).replace(/[^\t]/g, " ");
  const span = Math.max(1, Math.min(p.length ?? 1, lineText.length - p.col + 1));
  return `${gutter} | ${lineText}\n${pad} | ${lead}^${"~".repeat(span - 1)}\n`;
}

/** One report: header line, blank line, excerpt. `code` is e.g. `TS2322`. */
export function formatDiagnostic(p: Place, message: string, code?: string, text?: string): string {
  const header = `${formatPlace(p)} - error${code ? ` ${code}` : ""}: ${message}`;
  const ex = excerpt(p, text);
  return ex ? `${header}\n\n${ex}` : `${header}\n`;
}

interface LocLike {
  readonly file: string;
  readonly line: number;
  readonly col: number;
}

function isLocLike(x: unknown): x is LocLike {
  if (typeof x !== "object" || x === null) return false;
  const o = x as Record<string, unknown>;
  return typeof o.file === "string" && typeof o.line === "number" && typeof o.col === "number";
}

const FRAME = /(?:\(|at )((?:file:\/\/)?\/[^\s()]*?):(\d+):(\d+)\)?\s*$/;

/**
 * Where in the user's code an error comes from: the `loc` the frontend attached (op type errors carry one),
 * else the innermost stack frame in a user file (source maps are on under tsx, so lines are the .ts lines).
 */
export function userPlace(err: unknown, isUserFile: (absPath: string) => boolean): Place | undefined {
  if (typeof err !== "object" || err === null) return undefined;
  const loc = (err as { loc?: unknown }).loc;
  if (isLocLike(loc)) return { file: toPath(loc.file), line: loc.line, col: loc.col };
  const stack = (err as { stack?: unknown }).stack;
  if (typeof stack !== "string") return undefined;
  for (const line of stack.split("\n").slice(1)) {
    const m = FRAME.exec(line);
    if (!m) continue;
    const file = toPath(m[1]!);
    if (isUserFile(file)) return { file, line: Number(m[2]), col: Number(m[3]) };
  }
  return undefined;
}

/** The error's message without a trailing ` at file:line:col`, which the report header already shows. */
export function messageWithoutLoc(err: Error): string {
  return err.message.replace(/ at (?:file:\/\/)?[^\s]+:\d+:\d+$/, "");
}

const JS_ERRORS = new Set(["TypeError", "RangeError", "ReferenceError", "SyntaxError"]);

/** A report for an error raised while importing or tracing the user's model (main adds the stack under TESSERA_DEBUG). */
export function formatUserError(err: unknown, isUserFile: (absPath: string) => boolean): string {
  const e = err instanceof Error ? err : new Error(String(err));
  // Our own error classes speak for themselves; a JavaScript TypeError and the like keep their name.
  const kind = JS_ERRORS.has(e.name) ? `${e.name}: ` : "";
  const place = userPlace(e, isUserFile);
  return place ? formatDiagnostic(place, kind + messageWithoutLoc(e)) : `error: ${kind}${e.message}\n`;
}
