// `tessera parity <dir>`: runs runParity on a reference folder, prints the worst error per quantity, exits 1 past tolerance.
import { FormatError } from "../formats/errors.ts";
import { formatParityReport, runParity } from "./parity.ts";
import { interpretOnHost, pjrtOnHost } from "./execute.ts";

export { PARITY_COMMAND_SPEC } from "./spec.ts";

/** What `tessera parity` needs from the command line (src/cli's ParsedArgs has this shape). */
export interface ParityArgs {
  readonly positionals: readonly string[];
  readonly options: ReadonlyMap<string, string>;
}

/** Runs the command; returns the exit code. Bad files are reported (file, tensor, what was expected) with exit 1. */
export async function parityCommand(
  args: ParityArgs,
  out: (s: string) => void = (s) => process.stdout.write(s),
  err: (s: string) => void = (s) => process.stderr.write(s),
): Promise<number> {
  const dir = args.positionals[0];
  if (dir === undefined) {
    err("error: tessera parity needs a folder\n");
    return 2;
  }
  const backend = args.options.get("backend") ?? "pjrt";
  if (backend !== "pjrt" && backend !== "interpreter") {
    err(`error: --backend must be pjrt or interpreter, got '${backend}'\n`);
    return 2;
  }
  try {
    const report = await runParity(
      dir,
      backend === "pjrt"
        ? { executor: pjrtOnHost, backend: "pjrt-cpu" }
        : { executor: interpretOnHost, backend: "interpreter" },
    );
    out(`${formatParityReport(report, { verbose: args.options.has("verbose") })}\n`);
    return report.ok ? 0 : 1;
  } catch (e) {
    if (e instanceof FormatError) {
      err(`error: ${e.message}\n`);
      return 1;
    }
    throw e;
  }
}
