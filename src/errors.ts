// The one error base: every error Tessera raises on purpose carries a stable code and the exit code the CLI uses.

/** Exit codes, stated once: scripts and tests rely on them. */
export const EXIT = {
  ok: 0,
  /** The user's input has a problem: a type or shape error in the model, a bad file, an unwritable folder. */
  userError: 1,
  /** The command line is wrong: unknown command or option, missing argument. */
  usage: 2,
  /** A bug in Tessera itself: the stack is printed. */
  internal: 3,
  /** Stopped by Ctrl-C or SIGTERM after a checkpoint was saved (128 + SIGINT, as shells report it). */
  interrupted: 130,
} as const;
export type ExitCode = (typeof EXIT)[keyof typeof EXIT];

/** A value as messages name what the user passed: `a Float32Array`, `an array of 3`, `number 2`, `undefined undefined`. */
export function describe(x: unknown): string {
  if (x === null) return "null";
  if (Array.isArray(x)) return `an array of ${x.length}`;
  if (typeof x === "string") return `the string ${JSON.stringify(x.length > 40 ? `${x.slice(0, 40)}...` : x)}`;
  if (typeof x === "object") {
    const name = x.constructor?.name;
    return name && name !== "Object" ? `a ${name}` : "an object";
  }
  return `${typeof x} ${String(x)}`;
}

export interface TesseraErrorOptions {
  /** What went wrong, as a stable upper-case identifier a script can branch on (e.g. "ERR_FORMAT"). */
  readonly code: string;
  /** The process exit code when this error reaches the CLI (default EXIT.userError). */
  readonly exitCode?: ExitCode;
  readonly cause?: unknown;
}

/**
 * Base of every error Tessera throws on purpose. The CLI prints `message` without a stack and exits with
 * `exitCode`; anything that is not a TesseraError is a bug and exits EXIT.internal with its stack.
 */
export class TesseraError extends Error {
  readonly code: string;
  readonly exitCode: ExitCode;

  constructor(message: string, opts: TesseraErrorOptions) {
    super(message, opts.cause === undefined ? undefined : { cause: opts.cause });
    this.name = new.target.name;
    this.code = opts.code;
    this.exitCode = opts.exitCode ?? EXIT.userError;
  }

  /** What the CLI prints for this error; errors that arrive already formatted (source excerpts) override it. */
  report(): string {
    return `error: ${this.message}\n`;
  }
}
