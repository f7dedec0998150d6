// The ordered pass pipeline, and passes looked up by name for `--passes a,b,c` and `--dump-after <pass>`.
import { TesseraError } from "../errors.ts";
import { autodiffPass } from "./autodiff.ts";
import { constantFoldPass } from "./constant_fold.ts";
import { csePass } from "./cse.ts";
import { dcePass } from "./dce.ts";
import type { Pass } from "./pass.ts";
import { inlineCheckpointsPass } from "./remat.ts";
import { simplifyPass } from "./simplify.ts";

/** The cleanup passes, in the order they run after autodiff (and on any traced graph). */
export const CLEANUP_PIPELINE: readonly Pass[] = Object.freeze([
  // Fold first: constants computed from constants (a broadcast 1, a converted 0) become literals that the
  // identity rules below recognise.
  constantFoldPass,
  // Identities (autodiff's `ct * 1`, `x + 0` from zero cotangents, reshape chains). Bypassed ops stay for DCE.
  simplifyPass,
  // Duplicates: autodiff and the frontend emit the same constants and broadcasts once per use.
  csePass,
  // Drop whatever the passes above bypassed or merged away.
  dcePass,
  // Autodiff is done: a checkpoint op is its body from here on (its recomputation already reads barriers).
  inlineCheckpointsPass,
]);

/** Every pass name the pipeline knows, in pipeline order (autodiff runs first when gradients are asked for). */
export const PASS_NAMES: readonly string[] = Object.freeze(["autodiff", ...CLEANUP_PIPELINE.map((p) => p.name)]);

export interface PipelineOptions {
  /** Inputs to differentiate: adds the autodiff pass (valueAndGrad) in front of the cleanup. */
  readonly wrt?: readonly number[];
}

/** The standard pipeline: autodiff when `wrt` is given, then the cleanup passes. */
export function defaultPipeline(opts: PipelineOptions = {}): Pass[] {
  return [...(opts.wrt ? [autodiffPass(opts.wrt)] : []), ...CLEANUP_PIPELINE];
}

/** Thrown for a pass name that does not exist; the message lists the valid ones. */
export class UnknownPassError extends TesseraError {
  constructor(readonly passName: string) {
    super(`unknown pass '${passName}'; valid passes are: ${PASS_NAMES.join(", ")}`, { code: "ERR_UNKNOWN_PASS" });
    this.name = "UnknownPassError";
  }
}

/** Throws UnknownPassError unless `name` is a pass name (for validating `--dump-after` early). */
export function checkPassName(name: string): void {
  if (!PASS_NAMES.includes(name)) throw new UnknownPassError(name);
}

/** Passes from a comma-separated list such as `"simplify,cse,dce"`; `autodiff` needs `opts.wrt`. */
export function pipelineByName(text: string, opts: PipelineOptions = {}): Pass[] {
  const names = text.split(",").map((s) => s.trim());
  if (names.some((n) => n === "")) throw new Error(`pipeline '${text}' has an empty pass name`);
  return names.map((name) => {
    if (name === "autodiff") {
      if (!opts.wrt) throw new Error(`pass 'autodiff' needs the inputs to differentiate (wrt)`);
      return autodiffPass(opts.wrt);
    }
    const pass = CLEANUP_PIPELINE.find((p) => p.name === name);
    if (!pass) throw new UnknownPassError(name);
    return pass;
  });
}

/** The textual form of a pipeline, as accepted by pipelineByName. */
export function pipelineText(passes: readonly Pass[]): string {
  return passes.map((p) => p.name).join(",");
}
