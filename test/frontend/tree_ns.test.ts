// tx.tree (jax.tree's functions over several trees) and evalShape (output specs by tracing alone).
import { describe, expect, it } from "vitest";
import { evalShape, spec, TensorSpec, TraceError, treeMap, tx, tree } from "./api.ts";

describe("tx.tree", () => {
  const a = { w: [1, 2], b: 3, none: null };
  const b = { b: 30, w: [10, 20], none: null };

  it("map over several trees of one structure passes their leaves, then the path", () => {
    expect(tree.map((x: number, y: number, p: string) => `${p}=${x + y}`, a, b)).toEqual({
      w: ["w[0]=11", "w[1]=22"],
      b: "b=33",
      none: null,
    });
    expect(tx.tree.map((x: number) => x * 2, [1, [2]])).toEqual([2, [4]]);
  });

  it("map refuses trees of different structures, naming both", () => {
    expect(() => tree.map((x: number, y: number) => x + y, a, { b: 1, w: [1] })).toThrow(TraceError);
    expect(() => tree.map((x: number, y: number) => x + y, a, { b: 1, w: [1] })).toThrow(
      /^tree.map: tree 2 has structure \{"b":\*,"w":\[\*\]\}, but the first tree has \{"b":\*,"none":null,"w":\[\*,\*\]\}/,
    );
  });

  it("leaves, flatten, unflatten and structure agree with JAX's order and round-trip", () => {
    expect(tree.leaves(a)).toEqual([3, 1, 2]);
    const [leaves, def] = tree.flatten(a);
    expect(leaves).toEqual([3, 1, 2]);
    expect(tree.unflatten(def, [7, 8, 9])).toEqual({ b: 7, none: null, w: [8, 9] });
    expect(tree.structure(b)).toEqual(def);
    expect(tree.structure([1, 2])).not.toEqual(def);
    expect(tree.leaves({ p: [1, 2], q: 3 }, { isLeaf: Array.isArray })).toEqual([[1, 2], 3]);
  });

  it("treeMap keeps its (tree, f(leaf, path)) signature", () => {
    expect(treeMap({ x: 1 }, (l, p) => `${p}${l}`)).toEqual({ x: "x1" });
  });
});

describe("evalShape", () => {
  it("returns the output spec tree without compiling", () => {
    const out = evalShape(
      (p: { w: tx.Tensor }, x: tx.Tensor) => ({ y: x.matmul(p.w), n: x.sum(), ids: x.argmax(-1), k: 1 }),
      { w: spec("f32", [3, 5]) },
      spec("f32", [2, 3]),
    ) as Record<string, TensorSpec>;
    expect(out.y).toBeInstanceOf(TensorSpec);
    expect(String(out.y)).toBe("spec(f32[2,5])");
    expect(String(out.n)).toBe("spec(f32[])");
    expect(String(out.ids)).toBe("spec(s32[2])");
    expect(String(out.k)).toBe("spec(f32[])");
  });

  it("shape errors surface as trace errors", () => {
    expect(() => evalShape((x: tx.Tensor) => x.matmul(x), spec("f32", [2, 3]))).toThrow(/^matmul: contracting dims/);
  });
});
