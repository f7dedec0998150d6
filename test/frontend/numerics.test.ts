// The rounding and log/exp ops as tx functions and Tensor methods, and numpy's integer promotion (div, floorDiv, mod, mean).
import { describe, expect, it } from "vitest";
import { tx, type Tensor } from "./api.ts";
import { host, run } from "./helpers.ts";

describe("log1p, expm1, floor, ceil, round, sign", () => {
  it("are tx functions and Tensor methods with numpy's values", () => {
    const xs = [-2.5, -0.5, 0.5, 1.5, 2.7, 1e-8];
    const x = host("f32", [6], xs);
    const f = (t: Tensor) => [t.floor(), t.ceil(), t.round(), t.sign(), tx.expm1(t), tx.log1p(tx.abs(t))];
    const [fl, ce, ro, sg, em, lp] = run(f, [x]);
    const x32 = xs.map(Math.fround);
    expect(fl).toEqual(x32.map(Math.floor));
    expect(ce).toEqual(x32.map(Math.ceil).map((v) => (v === 0 ? -0 : v)));
    expect(ro).toEqual([-2, -0, 0, 2, 3, 0]);
    expect(sg).toEqual([-1, -1, 1, 1, 1, 1]);
    expect(em).toEqual(x32.map((v) => Math.fround(Math.expm1(v))));
    expect(lp).toEqual(x32.map((v) => Math.fround(Math.log1p(Math.abs(v)))));
  });
});
