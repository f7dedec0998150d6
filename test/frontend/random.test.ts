import { describe, expect, it } from "vitest";
import { random, constant, spec } from "../../src/frontend/api.ts";
import { run } from "./helpers.ts";

const u32 = (xs: number[]) => constant(new Uint32Array(xs));

describe("threefry2x32", () => {
  // Known-answer tests from the Random123 distribution (kat_vectors, threefry2x32_20).
  const cases: [number[], number[], number[]][] = [
    [[0, 0], [0, 0], [0x6b200159, 0x99ba4efe]],
    [[0xffffffff, 0xffffffff], [0xffffffff, 0xffffffff], [0x1cb996fc, 0xbb002be7]],
    [[0x13198a2e, 0x03707344], [0x243f6a88, 0x85a308d3], [0xc4923a9c, 0x483df7a0]],
  ];
  it.each(cases)("key %j counter %j", (k, c, want) => {
    const out = run(() => random.threefry2x32(u32([k[0]!]), u32([k[1]!]), u32([c[0]!]), u32([c[1]!])), []);
    expect(out.map((o) => o[0])).toEqual(want);
  });
});
