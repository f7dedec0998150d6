// A run's output folder: an exclusive lock (one run per folder), the non-empty check, and cleanup of what a killed run left.
import { hostname } from "node:os";
import { link, mkdir, readdir, readFile, rename, rm, rmdir, stat, unlink, writeFile } from "node:fs/promises";
import { dirname, join } from "node:path";
import { TesseraError } from "../errors.ts";
import { fsError } from "../host/fs_errors.ts";
import { DATA_CACHE_DIR } from "../data/cache.ts";
import { CHECKPOINTS_DIR } from "./checkpoint.ts";

export const LOCK_FILE = ".tessera.lock";
/** The loss curve a run draws at its end (src/plot/svg.ts). */
export const LOSS_PLOT_FILE = "loss.svg";
/** What a run writes into --out: the only entries --overwrite deletes. */
export const RUN_ENTRIES = [CHECKPOINTS_DIR, "metrics.jsonl", "adapter", LOSS_PLOT_FILE] as const;

interface LockInfo {
  pid: number;
  host: string;
  started: string;
}

/** True unless `pid` is certainly gone (ESRCH); EPERM means it exists under another user. */
function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (e) {
    return (e as NodeJS.ErrnoException).code !== "ESRCH";
  }
}

export interface OutDir {
  dir: string;
  /** The lock was left by a process that no longer runs on this host and was taken over. */
  staleFrom: LockInfo | undefined;
  /** What the folder already held (besides the lock and temporaries): empty when it is new or empty. */
  existing: string[];
  /** Temporary files and folders a killed run left, now removed. */
  cleaned: string[];
  /** Deletes the lock and, when nothing else was written, the folders this run created. */
  release(opts?: { removeIfEmpty?: boolean }): Promise<void>;
}

/**
 * Takes `dir` for one run: creates it if needed (which is also the check that it is writable) and a lock file
 * with this process's pid and host, created exclusively (link(2), which fails if the name exists, like O_EXCL) so
 * that of two runs exactly one gets it. A lock whose
 * process is gone (same host, pid not running) is taken over; any other lock is an ERR_LOCKED error. Nothing in
 * `dir` is read before the lock is held.
 */
export async function lockOutDir(dir: string): Promise<OutDir> {
  const created = await createOutDir(dir);
  const file = join(dir, LOCK_FILE);
  const staleFrom = await acquireLock(dir, file);
  const { existing, cleaned } = await surveyOutDir(dir);
  return { dir, staleFrom, existing, cleaned, release: releaser(dir, file, created) };
}

/** Returns the first folder mkdir created (undefined when `dir` already existed). */
async function createOutDir(dir: string): Promise<string | undefined> {
  try {
    const st = await stat(dir).catch(() => undefined);
    if (st && !st.isDirectory())
      throw new TesseraError(`--out ${dir}: is a file, expected a folder for the run's output`, { code: "ERR_FS" });
    return await mkdir(dir, { recursive: true });
  } catch (e) {
    throw fsError(e, dir, "create the output folder");
  }
}

/** Takes the lock `file`, taking over a stale one; returns the stale lock's owner, if one was taken over. */
async function acquireLock(dir: string, file: string): Promise<LockInfo | undefined> {
  const me: LockInfo = { pid: process.pid, host: hostname(), started: new Date().toISOString() };
  let staleFrom: LockInfo | undefined;
  for (let attempt = 0; ; attempt++) {
    if (await createLock(file, me)) return staleFrom;
    const { held, gone } = await readLock(file);
    if (gone && attempt < 3) continue;
    const stale = held !== undefined && held.host === me.host && !alive(held.pid);
    if (!stale || attempt > 2) {
      const who = held ? `pid ${held.pid} on ${held.host}, since ${held.started}` : "a run that is starting";
      throw new TesseraError(
        `--out ${dir} is in use by another training run (${who}; lock file ${file}); wait for it to end or choose another --out`,
        { code: "ERR_LOCKED" },
      );
    }
    if (await removeStaleLock(file, held!)) staleFrom = held;
  }
}

/** False when the lock already exists. */
async function createLock(file: string, me: LockInfo): Promise<boolean> {
  // Written whole under a temporary name, then linked to the lock's name (link fails with EEXIST as O_EXCL does):
  // a run killed at any point never leaves an empty lock that nobody could tell is stale.
  const tmp = `${file}.tmp-${process.pid}`;
  try {
    await writeFile(tmp, `${JSON.stringify(me)}\n`);
    await link(tmp, file);
    return true;
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code !== "EEXIST") throw fsError(e, file, "create the lock file");
  } finally {
    await unlink(tmp).catch(() => {});
  }
  return false;
}

async function readLock(file: string): Promise<{ held: LockInfo | undefined; gone: boolean }> {
  try {
    return { held: JSON.parse(await readFile(file, "utf8")) as LockInfo, gone: false };
  } catch (e) {
    // Gone again (its run just ended): try once more. Unreadable: report it as held rather than guess.
    return { held: undefined, gone: (e as NodeJS.ErrnoException).code === "ENOENT" };
  }
}

/** Removes the lock `held` if it is still the one at `file`; true when it did. */
async function removeStaleLock(file: string, held: LockInfo): Promise<boolean> {
  // Move the stale lock aside under a unique name, then look at what was moved: if another run had taken the
  // lock over in between, that is its live lock, which goes back (link fails only if yet another run holds it).
  const aside = `${file}.stale-${process.pid}`;
  const moved = await rename(file, aside).then(
    () => true,
    () => false,
  );
  if (!moved) return false;
  const was = await readFile(aside, "utf8").then(
    (t) => JSON.parse(t) as LockInfo,
    () => undefined,
  );
  const same = was?.pid === held.pid && was.host === held.host && was.started === held.started;
  if (!same) await link(aside, file).catch(() => {});
  await unlink(aside).catch(() => {});
  return same;
}

/** What `dir` already held, and the temporaries of a killed run, removed (the lock must be held). */
async function surveyOutDir(dir: string): Promise<{ existing: string[]; cleaned: string[] }> {
  const existing: string[] = [];
  const cleaned: string[] = [];
  try {
    const names = await readdir(dir);
    // The tokenized-data cache is neither a run's output nor a leftover: a new run may use it, --overwrite keeps it.
    for (const name of names)
      if (name !== LOCK_FILE && name !== DATA_CACHE_DIR && !TEMP.test(name)) existing.push(name);
    cleaned.push(...(await removeTemporaries(dir)));
  } catch (e) {
    throw fsError(e, dir, "read the output folder");
  }
  return { existing, cleaned };
}

function releaser(dir: string, file: string, created: string | undefined): OutDir["release"] {
  return async (opts = {}) => {
    await unlink(file).catch(() => {});
    if (opts.removeIfEmpty && created !== undefined) {
      // Only folders this run created, and only while empty: rmdir refuses anything else.
      for (let d = dir; ; d = dirname(d)) {
        if (
          (await rmdir(d).then(
            () => true,
            () => false,
          )) === false ||
          d === created
        )
          break;
      }
    }
  };
}

/** Temporaries of an interrupted write: `.name.tmp-*`, `.name.bak-*` (atomic.ts) and `.step-N.tmp-*` / `.step-N.old-*` (checkpoint.ts). */
const TEMP = /^\..+\.(tmp|bak|old|stale)-/;

/**
 * Removes what a run killed mid-write left in --out, checkpoints/ and adapter/ (safe: the lock is held, so no
 * run is writing them). A checkpoint that was being replaced and is missing gets its old copy back.
 */
async function removeTemporaries(dir: string): Promise<string[]> {
  const removed: string[] = [];
  for (const sub of [dir, join(dir, CHECKPOINTS_DIR), join(dir, "adapter")]) {
    const names = await readdir(sub).catch(() => [] as string[]);
    for (const name of names) {
      if (!TEMP.test(name)) continue;
      const old = /^\.(step-\d+)\.old-/.exec(name);
      if (old && !names.includes(old[1]!)) {
        await rename(join(sub, name), join(sub, old[1]!));
        continue;
      }
      await rm(join(sub, name), { recursive: true, force: true });
      removed.push(join(sub, name));
    }
  }
  return removed;
}

/** --overwrite, once the first step has run: deletes what the earlier run wrote (checkpoints, metrics, adapter, plot). */
export async function clearRun(dir: string): Promise<void> {
  for (const name of RUN_ENTRIES) {
    const p = join(dir, name);
    await rm(p, { recursive: true, force: true }).catch((e) => {
      throw fsError(e, p, "remove");
    });
  }
}
