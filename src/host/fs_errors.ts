// File-system failures a user can cause (missing folder, read-only disk, full disk) as TesseraErrors that name the path.
import { dirname } from "node:path";
import { TesseraError } from "../errors.ts";

/** Why a file-system call failed, in words, for the errno codes a user's setup produces. */
const CAUSES: Readonly<Record<string, (path: string) => string>> = {
  ENOENT: (p) => `no such file or directory (is '${dirname(p)}' there?)`,
  ENOTDIR: (p) => `a part of '${p}' is a file, not a directory`,
  EISDIR: () => "is a directory, expected a file",
  EEXIST: () => "already exists",
  EACCES: () => "permission denied",
  EPERM: () => "operation not permitted",
  EROFS: () => "read-only file system",
  ENOSPC: () => "no space left on device",
  EDQUOT: () => "disk quota exceeded",
  EMFILE: () => "too many open files",
  ENAMETOOLONG: () => "file name too long",
  ENOTEMPTY: () => "directory not empty",
  EBUSY: () => "resource busy",
};

/** True for an error a file-system call threw because of the user's environment, not a bug. */
export function isUserFsError(e: unknown): e is NodeJS.ErrnoException {
  const code = (e as NodeJS.ErrnoException | undefined)?.code;
  return typeof code === "string" && code in CAUSES;
}

/**
 * The TesseraError (code ERR_FS, exit 1) for a failed file-system call: `cannot <action> '<path>': <cause>`.
 * Anything that is not a user's file-system error is returned unchanged, so a bug still reports as a bug.
 */
export function fsError(e: unknown, path: string, action: string): unknown {
  if (!isUserFsError(e)) return e;
  const cause = CAUSES[e.code!]!(path);
  return new TesseraError(`cannot ${action} '${path}': ${cause} (${e.code})`, { code: "ERR_FS", cause: e });
}
