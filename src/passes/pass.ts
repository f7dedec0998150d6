// The Pass interface: a named, documented, pure Graph -> Graph function (no state kept between runs).
import type { Graph } from "../ir/graph.ts";

export interface Pass {
  /** Kebab-case name used in pipelines (`"simplify,cse,dce"`) and by `--dump-after`. */
  readonly name: string;
  /** One sentence for `--help` and docs. */
  readonly description: string;
  /** Returns a new graph (or `g` itself when nothing changed); never mutates `g`. */
  run(g: Graph): Graph;
}
