// Parameter trees: plain nested objects and arrays, flattened in a stable order with path names like layers[0].wq.

/** A tree whose leaves are `L`: nested plain objects and arrays; null/undefined are empty subtrees. */
export type Tree<L> = L | null | undefined | readonly Tree<L>[] | { readonly [key: string]: Tree<L> };

/** The structure of a tree without its leaves; two trees with equal `key(def)` flatten compatibly. */
export type TreeDef =
  | { readonly kind: "leaf" }
  | { readonly kind: "none"; readonly value: null | undefined }
  | { readonly kind: "array"; readonly children: readonly TreeDef[] }
  | { readonly kind: "object"; readonly keys: readonly string[]; readonly children: readonly TreeDef[] };

const LEAF: TreeDef = Object.freeze({ kind: "leaf" });

/** Plain objects (object literals, Object.create(null)) are containers; class instances are leaves. */
export function isPlainObject(x: unknown): x is Record<string, unknown> {
  if (x === null || typeof x !== "object" || Array.isArray(x)) return false;
  const p = Object.getPrototypeOf(x);
  return p === Object.prototype || p === null;
}

/**
 * Leaves in order (object keys sorted, so that trees built in different orders agree, as in JAX), their path names
 * and the tree's structure. `isLeaf` may stop the descent early (e.g. to treat a spec object as a leaf).
 */
export function flatten<L>(
  tree: Tree<L>,
  isLeaf?: (x: unknown) => boolean,
): { leaves: L[]; paths: string[]; def: TreeDef } {
  const leaves: L[] = [];
  const paths: string[] = [];
  const walk = (x: unknown, path: string): TreeDef => {
    if (isLeaf?.(x)) {
      leaves.push(x as L);
      paths.push(path);
      return LEAF;
    }
    if (x === null || x === undefined) return { kind: "none", value: x };
    if (Array.isArray(x)) return { kind: "array", children: x.map((c, i) => walk(c, `${path}[${i}]`)) };
    if (isPlainObject(x)) {
      const keys = Object.keys(x).sort();
      return { kind: "object", keys, children: keys.map((k) => walk(x[k], joinKey(path, k))) };
    }
    leaves.push(x as L);
    paths.push(path);
    return LEAF;
  };
  const def = walk(tree, "");
  return { leaves, paths, def };
}

function joinKey(path: string, key: string): string {
  const k = /^[A-Za-z_$][\w$]*$/.test(key) ? key : JSON.stringify(key);
  if (k !== key) return `${path}[${k}]`;
  return path ? `${path}.${key}` : key;
}

/** Rebuilds a tree of `def`'s structure from leaves in flatten order. */
export function unflatten<L>(def: TreeDef, leaves: readonly L[]): Tree<L> {
  let i = 0;
  const build = (d: TreeDef): Tree<L> => {
    switch (d.kind) {
      case "leaf":
        if (i >= leaves.length) throw new Error(`unflatten: tree needs more than ${leaves.length} leaves`);
        return leaves[i++]!;
      case "none":
        return d.value;
      case "array":
        return d.children.map(build);
      case "object": {
        const o: Record<string, Tree<L>> = {};
        d.keys.forEach((k, j) => {
          o[k] = build(d.children[j]!);
        });
        return o;
      }
    }
  };
  const out = build(def);
  if (i !== leaves.length) throw new Error(`unflatten: tree has ${i} leaves, got ${leaves.length}`);
  return out;
}

export function numLeaves(def: TreeDef): number {
  switch (def.kind) {
    case "leaf":
      return 1;
    case "none":
      return 0;
    case "array":
    case "object":
      return def.children.reduce((n, c) => n + numLeaves(c), 0);
  }
}

/** A compact string for a structure, for cache keys and messages: `{a:*,b:[*,*]}`. */
export function treeDefKey(def: TreeDef): string {
  switch (def.kind) {
    case "leaf":
      return "*";
    case "none":
      return String(def.value);
    case "array":
      return `[${def.children.map(treeDefKey).join(",")}]`;
    case "object":
      return `{${def.keys.map((k, i) => `${JSON.stringify(k)}:${treeDefKey(def.children[i]!)}`).join(",")}}`;
  }
}

/** Applies `f` to every leaf, keeping the structure. */
export function treeMap<A, B>(
  tree: Tree<A>,
  f: (leaf: A, path: string) => B,
  isLeaf?: (x: unknown) => boolean,
): Tree<B> {
  const { leaves, paths, def } = flatten(tree, isLeaf);
  return unflatten(
    def,
    leaves.map((l, i) => f(l, paths[i]!)),
  );
}

/** The leaves of a tree in flatten order. */
export function leaves<L>(tree: Tree<L>, isLeaf?: (x: unknown) => boolean): L[] {
  return flatten(tree, isLeaf).leaves;
}
