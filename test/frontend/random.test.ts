// The DSL's threefry RNG: the published threefry2x32 test vectors, key splitting, and the draws built on it.
import { describe, expect, it } from "vitest";
import { random, constant, spec, tx } from "./api.ts";
import { run } from "./helpers.ts";

const u32 = (xs: number[]) => constant(new Uint32Array(xs));

describe("threefry2x32", () => {
  // Known-answer tests from the Random123 distribution (kat_vectors, threefry2x32_20).
  const cases: [number[], number[], number[]][] = [
    [
      [0, 0],
      [0, 0],
      [0x6b200159, 0x99ba4efe],
    ],
    [
      [0xffffffff, 0xffffffff],
      [0xffffffff, 0xffffffff],
      [0x1cb996fc, 0xbb002be7],
    ],
    [
      [0x13198a2e, 0x03707344],
      [0x243f6a88, 0x85a308d3],
      [0xc4923a9c, 0x483df7a0],
    ],
  ];
  it.each(cases)("key %j counter %j", (k, c, want) => {
    const out = run(() => random.threefry2x32(u32([k[0]!]), u32([k[1]!]), u32([c[0]!]), u32([c[1]!])), []);
    expect(out.map((o) => o[0])).toEqual(want);
  });
});

describe("keys and draws", () => {
  it("key(seed) is [hi, lo]; split gives distinct keys that destructure; foldIn differs from the key", () => {
    const [k, s, f] = run(() => {
      const key = random.key(42);
      const [a, b] = random.split(key);
      return [key, random.split(key, 3), random.foldIn(key, 1).add(a!.mul(0)).add(b!.mul(0))];
    }, []);
    expect(k).toEqual([0, 42]);
    expect(new Set(s).size).toBe(6);
    expect(f).not.toEqual(k);
    const [big] = run(() => random.key(2 ** 32 + 5), []);
    expect(big).toEqual([1, 5]);
  });

  it("uniform f32 lies in [0, 1) with mean ~1/2 and variance ~1/12, and bins evenly", () => {
    const n = 4096;
    const [u] = run(() => random.uniform(random.key(0), [n]), []);
    expect(Math.min(...u!)).toBeGreaterThanOrEqual(0);
    expect(Math.max(...u!)).toBeLessThan(1);
    const mean = u!.reduce((p, q) => p + q) / n;
    const variance = u!.reduce((p, q) => p + (q - mean) ** 2, 0) / n;
    expect(Math.abs(mean - 0.5)).toBeLessThan(0.02);
    expect(Math.abs(variance - 1 / 12)).toBeLessThan(0.01);
    const bins = new Array(8).fill(0);
    for (const x of u!) bins[Math.floor(x * 8)]++;
    // Chi-squared with 7 degrees of freedom: 24.3 is the 0.1% tail.
    const chi = bins.reduce((p, c) => p + (c - n / 8) ** 2 / (n / 8), 0);
    expect(chi).toBeLessThan(24.3);
  });

  it("uniform respects minval/maxval and bf16 stays below maxval", () => {
    const [u, b] = run(
      () => [
        random.uniform(random.key(1), [512], { minval: -2, maxval: 3 }),
        random.uniform(random.key(1), [512], { dtype: "bf16" }),
      ],
      [],
    );
    expect(Math.min(...u!)).toBeGreaterThanOrEqual(-2);
    expect(Math.max(...u!)).toBeLessThan(3);
    expect(Math.max(...b!)).toBeLessThan(1);
    expect(new Set(b).size).toBeGreaterThan(64);
  });

  it("normal has mean ~0 and variance ~1; bernoulli and dropout keep the expected fraction", () => {
    const n = 4096;
    const [z, bern, drop] = run(
      () => [
        random.normal(random.key(3), [n]),
        random.bernoulli(random.key(4), 0.25, [n]).astype("f32"),
        random.dropout(tx.ones([n]), 0.5, random.key(5)),
      ],
      [],
    );
    const mean = z!.reduce((p, q) => p + q) / n;
    const variance = z!.reduce((p, q) => p + (q - mean) ** 2, 0) / n;
    expect(Math.abs(mean)).toBeLessThan(0.06);
    expect(Math.abs(variance - 1)).toBeLessThan(0.08);
    expect(z!.every(Number.isFinite)).toBe(true);
    expect(Math.abs(bern!.reduce((p, q) => p + q) / n - 0.25)).toBeLessThan(0.03);
    expect(new Set(drop)).toEqual(new Set([0, 2]));
    expect(Math.abs(drop!.reduce((p, q) => p + q) / n - 1)).toBeLessThan(0.06);
  });

  it("categorical draws each class with probability softmax(logits), never a -inf one, and is seeded", () => {
    const n = 8192;
    const logits = [Math.log(0.5), Math.log(0.3), -Infinity, Math.log(0.2)];
    const [draws, again, other] = run(() => {
      const l = tx.broadcastTo(constant(new Float32Array(logits)), [n, 4]);
      return [
        random.categorical(random.key(11), l),
        random.categorical(random.key(11), l),
        random.categorical(random.key(12), l),
      ];
    }, []);
    const counts = [0, 0, 0, 0];
    for (const d of draws!) counts[d]!++;
    expect(counts[2]).toBe(0);
    // Chi-squared with 2 degrees of freedom: 13.8 is the 0.1% tail.
    const want = [0.5, 0.3, 0, 0.2];
    const chi = [0, 1, 3].reduce((p, k) => p + (counts[k]! - n * want[k]!) ** 2 / (n * want[k]!), 0);
    expect(chi).toBeLessThan(13.8);
    expect(again).toEqual(draws);
    expect(other).not.toEqual(draws);
    // Along another axis: one draw per column.
    const [cols] = run(() => random.categorical(random.key(1), tx.zeros([5, 3]), 0), []);
    expect(cols).toHaveLength(3);
    expect(cols!.every((c) => c >= 0 && c < 5)).toBe(true);
  });

  it("gumbel samples have the standard Gumbel mean (Euler's 0.5772) and are finite", () => {
    const n = 8192;
    const [g] = run(() => random.gumbel(random.key(2), [n]), []);
    expect(g!.every(Number.isFinite)).toBe(true);
    expect(Math.abs(g!.reduce((p, q) => p + q) / n - 0.5772)).toBeLessThan(0.05);
  });

  it("rejects things that are not keys", () => {
    expect(() => run(() => random.uniform(tx.zeros([2]), [3]), [])).toThrow(
      /random.bits: expects a key: a u32\[2\] tensor/,
    );
    void spec;
  });
});
