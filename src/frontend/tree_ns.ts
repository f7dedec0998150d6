// tx.tree: JAX's jax.tree functions (map over several trees, leaves, flatten, unflatten, structure).
import { TraceError } from "./errors.ts";
import * as t from "./tree.ts";
import type { Tree, TreeDef } from "./tree.ts";

export type { Tree, TreeDef };

/** Options of every function here: `isLeaf` stops the descent early (e.g. to keep a pair as one leaf). */
export interface TreeOpts {
  readonly isLeaf?: (x: unknown) => boolean;
}

/**
 * `fn(leafOfFirst, leafOfSecond, ..., path)` at each leaf position of `tree`, whose structure every tree in
 * `rest` must have; the result has that structure. As jax.tree.map(f, tree, *rest), plus the path.
 */
// biome-ignore lint/suspicious/noExplicitAny: the leaves of the trees are of any type each; fn's parameters name them
export function map<R>(fn: (...leavesThenPath: any[]) => R, tree: Tree<unknown>, ...rest: Tree<unknown>[]): Tree<R> {
  const first = t.flatten(tree);
  const others = rest.map((r, k) => {
    const f = t.flatten(r);
    const want = t.treeDefKey(first.def);
    const got = t.treeDefKey(f.def);
    if (got !== want)
      throw new TraceError("tree.map", `tree ${k + 2} has structure ${got}, but the first tree has ${want}`);
    return f.leaves;
  });
  return t.unflatten(
    first.def,
    first.leaves.map((l, i) => fn(l, ...others.map((o) => o[i]), first.paths[i]!)),
  );
}

/** The leaves in flatten order (object keys sorted). */
export function leaves<L>(tree: Tree<L>, opts: TreeOpts = {}): L[] {
  return t.flatten(tree, opts.isLeaf).leaves;
}

/** `[leaves, structure]`, as jax.tree.flatten. */
export function flatten<L>(tree: Tree<L>, opts: TreeOpts = {}): [L[], TreeDef] {
  const f = t.flatten(tree, opts.isLeaf);
  return [f.leaves, f.def];
}

/** Rebuilds a tree of structure `def` from leaves in flatten order (the count must match). */
export function unflatten<L>(def: TreeDef, leaves: readonly L[]): Tree<L> {
  return t.unflatten(def, leaves);
}

/** The structure of a tree, without its leaves. */
export function structure(tree: Tree<unknown>, opts: TreeOpts = {}): TreeDef {
  return t.flatten(tree, opts.isLeaf).def;
}
