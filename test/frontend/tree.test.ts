// Parameter trees: stable flatten order, path names, round trips, structure keys; input names from parameters.
import { describe, expect, it } from "vitest";
import { spec, trace, treeFlatten, treeMap, treeUnflatten, type tx } from "./api.ts";
import { paramNames } from "../../src/frontend/trace.ts";
import { treeDefKey } from "../../src/frontend/tree.ts";

describe("trees", () => {
  it("flattens objects in sorted key order with path names, and unflattens back", () => {
    const t = { wq: 1, layers: [{ wk: 2, b: null }, { wk: 3 }], "odd key": 4 };
    const { leaves, paths, def } = treeFlatten(t);
    expect(paths).toEqual(["layers[0].wk", "layers[1].wk", '["odd key"]', "wq"]);
    expect(leaves).toEqual([2, 3, 4, 1]);
    expect(treeUnflatten(def, leaves)).toEqual(t);
    expect(treeDefKey(def)).toBe('{"layers":[{"b":null,"wk":*},{"wk":*}],"odd key":*,"wq":*}');
  });

  it("trees built in different key orders have the same structure", () => {
    expect(treeDefKey(treeFlatten({ a: 1, b: 2 }).def)).toBe(treeDefKey(treeFlatten({ b: 2, a: 1 }).def));
  });

  it("class instances are leaves; treeMap keeps structure and passes paths", () => {
    const s = spec("f32", [2]);
    expect(treeMap({ x: s, y: [s] }, (l, p) => `${p}:${l.dtype}`)).toEqual({ x: "x:f32", y: ["y[0]:f32"] });
  });

  it("unflatten checks the leaf count", () => {
    const { def } = treeFlatten([1, 2]);
    expect(() => treeUnflatten(def, [1])).toThrow(/needs more than 1 leaves/);
    expect(() => treeUnflatten(def, [1, 2, 3])).toThrow(/has 2 leaves, got 3/);
  });

  it("graph input names are the function's parameter names plus tree paths", () => {
    const step = (params: { layers: { wq: tx.Tensor }[] }, tokens: tx.Tensor) =>
      params.layers[0]!.wq.sum().add(tokens.astype("f32").sum());
    const { graph } = trace(step, [{ layers: [{ wq: spec("f32", [2]) }, { wq: spec("f32", [2]) }] }, spec("s32", [3])]);
    expect(graph.inputNames).toEqual(["params.layers[0].wq", "params.layers[1].wq", "tokens"]);
    expect(graph.outputNames).toEqual(["out"]);
  });

  it("parameter names: arrows, functions, defaults, destructuring falls back to arg<i>", () => {
    expect(paramNames((a: number, b = 2) => a + b, 2)).toEqual(["a", "b"]);
    expect(
      paramNames(function step(params: unknown, { x }: { x: number }) {
        return [params, x];
      }, 2),
    ).toEqual(["params", "arg1"]);
    expect(paramNames((x: number) => x, 1)).toEqual(["x"]);
    expect(paramNames((...xs: number[]) => xs, 2)).toEqual(["arg0", "arg1"]);
  });
});
