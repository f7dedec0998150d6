// How the train CLI tests run `tessera train`: in this process (trainHere) or as a child process (trainProcess).
import { spawn } from "node:child_process";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { trainCommand } from "../../src/cli/train.ts";

export const ROOT = fileURLToPath(new URL("../../", import.meta.url));
export const BIN = join(ROOT, "bin", "tessera.mjs");

/** trainCommand in this process, for failures that happen before any device work; options by long name. */
export async function trainHere(opts: Record<string, string>): Promise<{ code: number; out: string; err: string }> {
  let out = "",
    err = "";
  const code = await trainCommand(
    { positionals: [], options: new Map(Object.entries(opts)), help: false },
    { out: (s) => (out += s), err: (s) => (err += s), tty: false },
  );
  return { code, out, err };
}

export interface TrainProcess {
  code: number | null;
  signal: NodeJS.Signals | null;
  stdout: string;
  stderr: string;
}

/** Runs `tessera train ...` as a child process; `onOut` sees stdout so far as it arrives (and may signal the child). */
export function trainProcess(
  args: string[],
  onOut?: (text: string, child: ReturnType<typeof spawn>) => void,
): Promise<TrainProcess> {
  return new Promise((resolve) => {
    const child = spawn(process.execPath, [BIN, "train", ...args], {
      cwd: ROOT,
      env: { ...process.env, TESSERA_DEBUG: "" },
    });
    let stdout = "",
      stderr = "";
    child.stdout.on("data", (d) => {
      stdout += d;
      onOut?.(stdout, child);
    });
    child.stderr.on("data", (d) => {
      stderr += d;
    });
    child.on("close", (code, signal) => resolve({ code, signal, stdout, stderr }));
  });
}
