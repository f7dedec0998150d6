// The one error type the file-format readers and writers throw, so callers can tell a bad file from a bug.

import { TesseraError } from "../errors.ts";

/**
 * A file on disk (or data about to be written) is not what the format requires. The message always names the
 * file and, where there is one, the tensor or field; `file`/`tensor` carry the same for programmatic use.
 */
export class FormatError extends TesseraError {
  override readonly name = "FormatError";
  readonly file: string | undefined;
  readonly tensor: string | undefined;

  constructor(message: string, opts: { file?: string; tensor?: string; cause?: unknown } = {}) {
    super(message, { code: "ERR_FORMAT", ...(opts.cause === undefined ? {} : { cause: opts.cause }) });
    this.file = opts.file;
    this.tensor = opts.tensor;
  }
}

/** `[2,3]` the way shapes are printed in every message of this folder. */
export function fmtShape(shape: readonly number[]): string {
  return `[${shape.join(", ")}]`;
}

/** The value at `path` inside parsed JSON, for quoting what a file actually said. */
function valueAt(json: unknown, path: readonly PropertyKey[]): unknown {
  let v = json;
  for (const k of path) {
    if (typeof v !== "object" || v === null) return undefined;
    v = (v as Record<PropertyKey, unknown>)[k];
  }
  return v;
}

/**
 * One FormatError for a failed zod parse of a JSON file: the first issue, as `file: field "a.b": what was
 * expected (got X)`. One issue at a time keeps the message short; fixing it reveals the next.
 */
export function zodFormatError(
  file: string,
  issues: readonly { path: PropertyKey[]; message: string; code?: string }[],
  json: unknown,
): FormatError {
  const issue = issues[0]!;
  const field = issue.path.map(String).join(".");
  const got = valueAt(json, issue.path);
  const detail =
    got === undefined && issue.code === "invalid_type"
      ? `required field is missing (${issue.message.replace(/^Invalid input: /, "").replace(/, received undefined$/, "")})`
      : `${issue.message.replace(/^Invalid input: /, "")} (got ${JSON.stringify(got)})`;
  return new FormatError(field === "" ? `${file}: ${detail}` : `${file}: field "${field}": ${detail}`, { file });
}
