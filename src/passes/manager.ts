// The pass manager: runs passes in order, verifying after each, dumping IR on request, reporting reproducers.
import { EXIT, TesseraError } from "../errors.ts";
import type { Graph } from "../ir/graph.ts";
import { print } from "../ir/print.ts";
import { verifyAfter } from "../ir/verify.ts";
import type { Pass } from "./pass.ts";

export interface RunPassesOptions {
  /** Run the verifier after every pass (default true: cheap next to compiling, and it names the culprit). */
  readonly verify?: boolean;
  /** Passes after which to dump the printed IR, or "all". Names must be passes of this pipeline. */
  readonly dumpAfter?: readonly string[] | "all";
  /** Receives each dump (default: written to stderr under an MLIR-style header). */
  readonly dump?: (passName: string, text: string) => void;
}

/** A pass that failed or produced invalid IR: `reproducer` is the IR before it, `pipeline` the passes run. */
export class PassError extends TesseraError {
  constructor(
    readonly passName: string,
    message: string,
    readonly reproducer: string,
    readonly pipeline: string,
    options?: { cause?: unknown },
  ) {
    // Passes are pure rewrites of verified graphs: one that throws or breaks the IR is a bug of ours.
    super(message, {
      code: "ERR_PASS",
      exitCode: EXIT.internal,
      ...(options?.cause === undefined ? {} : { cause: options.cause }),
    });
    this.name = "PassError";
  }
}

function defaultDump(passName: string, text: string): void {
  process.stderr.write(`// -----// IR Dump After ${passName} //----- //\n${text}\n`);
}

/**
 * Runs `passes` over `g` in order. A verifier failure after a pass throws a PassError whose message names the
 * pass and includes the IR before it, so the failure reproduces with that text and that one pass. An exception
 * thrown by a pass is wrapped in a PassError naming it (the IR before it is in `reproducer`; the original
 * error is the `cause`).
 */
export function runPasses(g: Graph, passes: readonly Pass[], opts: RunPassesOptions = {}): Graph {
  const verify = opts.verify ?? true;
  const names = passes.map((p) => p.name);
  const pipeline = names.join(",");
  const dumpAfter = opts.dumpAfter ?? [];
  if (dumpAfter !== "all") {
    for (const n of dumpAfter) {
      if (!names.includes(n))
        throw new Error(`cannot dump after '${n}': it is not in the pipeline (${names.join(", ")})`);
    }
  }
  const dump = opts.dump ?? defaultDump;
  let current = g;
  for (const pass of passes) {
    let next: Graph;
    try {
      next = pass.run(current);
    } catch (e) {
      const msg = e instanceof Error ? e.message : String(e);
      throw new PassError(pass.name, `pass '${pass.name}' failed: ${msg}`, print(current), pipeline, { cause: e });
    }
    if (verify) {
      try {
        verifyAfter(pass.name, next);
      } catch (e) {
        const before = print(current);
        const raw = e instanceof Error ? e.message : String(e);
        const msg = raw.includes(`'${pass.name}'`) ? raw : `after pass '${pass.name}': ${raw}`;
        throw new PassError(
          pass.name,
          `${msg}\nreproducer (pipeline "${pipeline}"): the IR before pass '${pass.name}':\n${before}`,
          before,
          pipeline,
          { cause: e },
        );
      }
    }
    if (dumpAfter === "all" || dumpAfter.includes(pass.name)) dump(pass.name, print(next));
    current = next;
  }
  return current;
}
