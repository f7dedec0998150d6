// Crash-safe file writes: temp files in the target's directory, fsync, then rename, with rollback for file sets.

import { randomBytes } from "node:crypto";
import { link, lstat, open, rename, unlink, type FileHandle } from "node:fs/promises";
import { basename, dirname, join } from "node:path";

/** A hidden sibling of `target`: same directory so the final rename cannot cross filesystems. */
export function siblingPath(target: string, tag: string): string {
  return join(dirname(target), `.${basename(target)}.${tag}-${process.pid}-${randomBytes(4).toString("hex")}`);
}

async function unlinkQuiet(path: string): Promise<void> {
  try {
    await unlink(path);
  } catch {
    // already gone, or never created: nothing to clean up
  }
}

/** fsync a directory so a completed rename survives power loss; not every platform allows it, hence best effort. */
async function syncDir(dir: string): Promise<void> {
  let fh: FileHandle | undefined;
  try {
    fh = await open(dir, "r");
    await fh.sync();
  } catch {
    // best effort
  } finally {
    await fh?.close().catch(() => {});
  }
}

/** Writes a temp file through `write`, fsyncs and closes it; on any error the temp file is removed. */
export async function writeTemp(target: string, write: (fh: FileHandle) => Promise<void>): Promise<string> {
  const tmp = siblingPath(target, "tmp");
  const fh = await open(tmp, "wx");
  try {
    await write(fh);
    await fh.sync();
  } catch (e) {
    await fh.close().catch(() => {});
    await unlinkQuiet(tmp);
    throw e;
  }
  await fh.close();
  return tmp;
}

/** Replaces `target` with what `write` produces, or leaves it untouched if `write` (or anything else) fails. */
export async function writeFileAtomic(target: string, write: (fh: FileHandle) => Promise<void>): Promise<void> {
  const tmp = await writeTemp(target, write);
  try {
    await rename(tmp, target);
  } catch (e) {
    await unlinkQuiet(tmp);
    throw e;
  }
  await syncDir(dirname(target));
}

/** Writes `buf` fully: FileHandle.write may write less than asked. */
export async function writeAll(fh: FileHandle, buf: Uint8Array): Promise<void> {
  let off = 0;
  while (off < buf.byteLength) {
    const { bytesWritten } = await fh.write(buf, off, Math.min(buf.byteLength - off, 1 << 30));
    if (bytesWritten <= 0) throw new Error("write made no progress");
    off += bytesWritten;
  }
}

export interface PendingFile {
  /** Where the file ends up. */
  target: string;
  /** Produces the file's content. */
  write: (fh: FileHandle) => Promise<void>;
}

/**
 * Writes several files as one unit: all are written to temp files first (a failure there leaves every target
 * as it was), then moved into place; if a rename fails, the targets already replaced get their old content back.
 * A crash during the short rename phase can leave a mix, with the old files still on disk under `.bak-` names.
 */
export async function writeFilesAtomic(
  files: readonly PendingFile[],
  opts: { remove?: readonly string[] } = {},
): Promise<void> {
  for (const f of files) {
    const st = await lstat(f.target).catch(() => undefined);
    if (st !== undefined && !st.isFile()) throw new Error(`${f.target} exists and is not a regular file`);
  }
  const temps: string[] = [];
  try {
    for (const f of files) temps.push(await writeTemp(f.target, f.write));
  } catch (e) {
    await Promise.all(temps.map(unlinkQuiet));
    throw e;
  }
  await commitRenames(
    files.map((f, i) => ({ tmp: temps[i]!, target: f.target })),
    opts.remove ?? [],
  );
}

/**
 * Moves each `tmp` onto its `target` and deletes the `remove` paths, keeping the old targets and removed files as
 * backups until all moves have succeeded; on failure, restores the backups and removes the temps, then rethrows.
 */
export async function commitRenames(
  pairs: readonly { tmp: string; target: string }[],
  remove: readonly string[] = [],
): Promise<void> {
  // `linked`: the backup is a second name for the file still at `target`, not the only one left.
  const backups: { target: string; backup: string; linked: boolean }[] = [];
  const placed = new Set<string>();
  try {
    for (const target of pairs.map((p) => p.target)) {
      if ((await lstat(target).catch(() => undefined)) === undefined) continue;
      const backup = siblingPath(target, "bak");
      // A hard link keeps the old file visible under its name until the rename below replaces it in one step.
      const linked = await link(target, backup).then(
        () => true,
        () => rename(target, backup).then(() => false),
      );
      backups.push({ target, backup, linked });
    }
    for (const target of remove) {
      if ((await lstat(target).catch(() => undefined)) === undefined) continue;
      const backup = siblingPath(target, "bak");
      await rename(target, backup);
      backups.push({ target, backup, linked: false });
    }
    for (const { tmp, target } of pairs) {
      await rename(tmp, target);
      placed.add(target);
    }
  } catch (e) {
    for (const { target, backup, linked } of backups) {
      if (linked && !placed.has(target)) await unlinkQuiet(backup);
      else await rename(backup, target).catch(() => {});
    }
    for (const target of placed) if (!backups.some((b) => b.target === target)) await unlinkQuiet(target);
    await Promise.all(pairs.map((p) => unlinkQuiet(p.tmp)));
    throw e;
  }
  await Promise.all(backups.map((b) => unlinkQuiet(b.backup)));
  for (const dir of new Set([...pairs.map((p) => p.target), ...remove].map((p) => dirname(p)))) await syncDir(dir);
}
