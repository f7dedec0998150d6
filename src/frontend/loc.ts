// Finds the user's source line for each recorded op: the innermost stack frame outside Tessera's own code.
import { findSourceMap, type SourceMap } from "node:module";
import { fileURLToPath } from "node:url";
import path from "node:path";
import type { SourceLoc } from "../ir/types.ts";
import { describe, TesseraError } from "../errors.ts";

// Tessera's own folders; frames in them are never "the user's line".
const SRC_ROOT = path.dirname(path.dirname(fileURLToPath(import.meta.url)));
const OWN_DIRS = ["frontend", "ir", "passes", "backend"].map((d) => path.join(SRC_ROOT, d) + path.sep);

// Most ops are a few frames below the user's line (composite ops walk from their `atUserLoc` frame, which is
// right below it); capturing few frames is what keeps tracing fast, as each captured frame costs a few
// microseconds. Deeper internal nesting retries with the long limit.
const SHORT_LIMIT = 8;
const STACK_LIMIT = 48;

let enabled = true;

/** Turns location capture off (or back on); ops then carry no `loc`. Tracing gets a little faster. */
export function setLocationCapture(on: boolean): void {
  enabled = on;
}

const FRAME = /\(?((?:file:\/\/)?[^\s()]+?):(\d+):(\d+)\)?$/;

function ownOrInternal(file: string): boolean {
  if (file.startsWith("node:") || file.startsWith("internal/")) return true;
  return OWN_DIRS.some((d) => file.startsWith(d));
}

/** Parses one `    at fn (file:line:col)` line into a location, or undefined for native/eval frames. */
export function parseFrame(line: string): SourceLoc | undefined {
  const m = FRAME.exec(line.trim());
  if (!m) return undefined;
  let file = m[1]!;
  if (file.startsWith("file://")) {
    try {
      file = fileURLToPath(file);
    } catch {
      return undefined;
    }
  }
  return { file, line: Number(m[2]), col: Number(m[3]) };
}

function relativize(file: string): string {
  const cwd = process.cwd() + path.sep;
  return file.startsWith(cwd) ? file.slice(cwd.length) : file;
}

// Raw (unmapped) frame position -> mapped user location. Source-mapped stack strings cost ~100us each, raw
// call sites a few us; a traced model repeats the same lines (one per layer), so the cache almost always hits.
const cache = new Map<string, SourceLoc | null>();

/** The call sites below the innermost call of `below` (which is left out with everything above it). */
function rawCallSites(limit: number, below: (...args: never[]) => unknown): NodeJS.CallSite[] {
  const prevLimit = Error.stackTraceLimit;
  const prevPrepare = Error.prepareStackTrace;
  Error.stackTraceLimit = limit;
  Error.prepareStackTrace = (_e, sites) => sites;
  try {
    const holder: { stack?: unknown } = {};
    Error.captureStackTrace(holder, below);
    return holder.stack as NodeJS.CallSite[];
  } finally {
    Error.prepareStackTrace = prevPrepare;
    Error.stackTraceLimit = prevLimit;
  }
}

/** The first user frame of a formatted (source-mapped, as the host prints it) stack. */
function mappedUserLoc(below: (...args: never[]) => unknown): SourceLoc | null {
  const prev = Error.stackTraceLimit;
  Error.stackTraceLimit = STACK_LIMIT;
  const holder: { stack?: string } = {};
  Error.captureStackTrace(holder, below);
  Error.stackTraceLimit = prev;
  const lines = (holder.stack ?? "").split("\n");
  for (let i = 1; i < lines.length; i++) {
    const loc = parseFrame(lines[i]!);
    if (loc && !ownOrInternal(loc.file)) return { ...loc, file: relativize(loc.file) };
  }
  return null;
}

// Source maps Node holds for a raw file name (tsx registers its transforms' maps there); null when it has none.
const sourceMaps = new Map<string, SourceMap | null>();

/**
 * One call site mapped through Node's source map for its file, exactly as Node's own stack formatter maps it
 * (0-based entry, printed 1-based); undefined when Node has no map for the file (another host, such as vitest,
 * maps stacks itself: the caller then formats the stack through the host).
 */
function nodeMappedLoc(rawFile: string, line: number, col: number): SourceLoc | null | undefined {
  let sm = sourceMaps.get(rawFile);
  if (sm === undefined) {
    try {
      sm = findSourceMap(rawFile) ?? null;
    } catch {
      sm = null;
    }
    sourceMaps.set(rawFile, sm);
  }
  if (!sm) return undefined;
  const e = sm.findEntry(line - 1, col - 1) as {
    originalSource?: string;
    originalLine?: number;
    originalColumn?: number;
  };
  if (e.originalSource === undefined || e.originalLine === undefined || e.originalColumn === undefined)
    return undefined;
  const file = normalizeFile(e.originalSource);
  if (ownOrInternal(file)) return undefined; // a generated frame mapped into Tessera's code: let the host decide
  return { file: relativize(file), line: e.originalLine + 1, col: e.originalColumn + 1 };
}

function normalizeFile(f: string): string {
  if (!f.startsWith("file://")) return f;
  try {
    return fileURLToPath(f);
  } catch {
    return f;
  }
}

// Raw file name of a frame -> whether it is Tessera's own or Node's (walks revisit the same few files).
const ownFile = new Map<string, boolean>();

function isOwnRaw(rawFile: string): boolean {
  let own = ownFile.get(rawFile);
  if (own === undefined) {
    own = ownOrInternal(normalizeFile(rawFile));
    ownFile.set(rawFile, own);
  }
  return own;
}

/** Stack walks so far (tests check that composite ops share one). */
export const locStats = { lookups: 0 };

/** The innermost frame of the current stack that is outside Tessera's src/ and node internals. */
export function userLoc(): SourceLoc | undefined {
  if (!enabled) return undefined;
  return lookup(userLoc);
}

/** The first user frame below the innermost call of `below` (userLoc, or atUserLoc: all frames above it are ours). */
function lookup(below: (...args: never[]) => unknown): SourceLoc | undefined {
  locStats.lookups++;
  for (const limit of [SHORT_LIMIT, STACK_LIMIT]) {
    const sites = rawCallSites(limit, below);
    for (const site of sites) {
      const f = site.getFileName();
      if (!f || isOwnRaw(f)) continue;
      const line = site.getLineNumber() ?? 0,
        col = site.getColumnNumber() ?? 0;
      const key = `${f}:${line}:${col}`;
      let loc = cache.get(key);
      if (loc === undefined) {
        // Mapping this one frame is far cheaper than formatting the whole stack through the host.
        loc = nodeMappedLoc(f, line, col);
        if (loc === undefined) loc = mappedUserLoc(below);
        cache.set(key, loc);
      }
      return loc ?? undefined;
    }
    if (sites.length < limit) break;
  }
  return undefined;
}

// One location for all the IR ops of one frontend call: `softmax` records nine ops but the stack is walked once.
let pinDepth = 0;
let pinned: SourceLoc | undefined | null = null; // null: not looked up yet in this call

/** Runs `f` so that every op it records shares one location, looked up (lazily) once. Nests: the outermost wins. */
export function atUserLoc<T>(f: () => T): T {
  if (pinDepth > 0) return f();
  pinDepth++;
  pinned = null;
  try {
    return f();
  } finally {
    pinDepth--;
    pinned = null;
  }
}

/** `f` wrapped with `atUserLoc`, for op functions built from other ops. */
export function located<A extends unknown[], R>(f: (...args: A) => R): (...args: A) => R {
  return (...args: A) => atUserLoc(() => f(...args));
}

/** The location to record on an op now: the pinned one inside `atUserLoc`, else a fresh lookup; scoped inside `namedScope`. */
export function opLoc(): SourceLoc | undefined {
  let loc: SourceLoc | undefined;
  if (pinDepth === 0) loc = userLoc();
  else {
    // Walking from atUserLoc's frame skips the composite op's own frames without capturing them.
    if (pinned === null) pinned = enabled ? lookup(atUserLoc) : undefined;
    loc = pinned;
  }
  return scope === undefined ? loc : scoped(loc, scope);
}

// The current `namedScope` path (`layer0/attention`), undefined outside every scope.
let scope: string | undefined;

// A user line traced in a scope gets one SourceLoc per (line, scope), so the emitter's per-location text cache
// still hits once per layer.
const scopedLocs = new WeakMap<SourceLoc, Map<string, SourceLoc>>();
const scopeOnly = new Map<string, SourceLoc>();

function scoped(loc: SourceLoc | undefined, path: string): SourceLoc {
  // With location capture off the scope alone is kept: the names are what a profile or a dump is read by.
  if (loc === undefined) {
    let l = scopeOnly.get(path);
    if (!l) {
      l = Object.freeze({ file: "", line: 0, col: 0, scope: path });
      scopeOnly.set(path, l);
    }
    return l;
  }
  let byPath = scopedLocs.get(loc);
  if (!byPath) {
    byPath = new Map();
    scopedLocs.set(loc, byPath);
  }
  let l = byPath.get(path);
  if (!l) {
    l = Object.freeze({ ...loc, scope: path });
    byPath.set(path, l);
  }
  return l;
}

/** The current `namedScope` path, or undefined outside every scope. */
export function currentScope(): string | undefined {
  return scope;
}

/**
 * Runs `fn` with `name` pushed on the scope path (as jax.named_scope): every op it traces carries the path
 * (`layer0/attention`) in its location, which the IR dump, `tessera inspect` and the StableHLO `loc`s show, so the
 * ops of a helper called from two layers are told apart. Scopes nest, joined with '/'; `fn`'s value is returned.
 */
export function namedScope<T>(name: string, fn: () => T): T {
  if (typeof name !== "string" || name === "")
    throw new TesseraError(`namedScope: the name must be a non-empty string, got ${describe(name)}`, {
      code: "ERR_TRACE",
    });
  if (typeof fn !== "function")
    throw new TesseraError(`namedScope: the second argument must be a function, got ${describe(fn)}`, {
      code: "ERR_TRACE",
    });
  const outer = scope;
  scope = outer === undefined ? name : `${outer}/${name}`;
  try {
    const out = fn();
    if (out instanceof Promise)
      throw new TesseraError(
        `namedScope: '${scope}': the function returned a Promise; the scope ends when it returns, so pass a synchronous function`,
        { code: "ERR_TRACE" },
      );
    return out;
  } finally {
    scope = outer;
  }
}
