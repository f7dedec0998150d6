// The one error type the file-format readers and writers throw, so callers can tell a bad file from a bug.

/**
 * A file on disk (or data about to be written) is not what the format requires. The message always names the
 * file and, where there is one, the tensor or field; `file`/`tensor` carry the same for programmatic use.
 */
export class FormatError extends Error {
  override readonly name = "FormatError";
  readonly file: string | undefined;
  readonly tensor: string | undefined;

  constructor(message: string, opts: { file?: string; tensor?: string; cause?: unknown } = {}) {
    super(message, opts.cause === undefined ? undefined : { cause: opts.cause });
    this.file = opts.file;
    this.tensor = opts.tensor;
  }
}

/** `[2,3]` the way shapes are printed in every message of this folder. */
export function fmtShape(shape: readonly number[]): string {
  return `[${shape.join(", ")}]`;
}
