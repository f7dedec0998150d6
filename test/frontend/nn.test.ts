// tx.nn against float64 references written out here, gradients against finite differences, on the IR interpreter.
import { describe, expect, it } from "vitest";
import { random, spec, trace, tx, type Tensor } from "./api.ts";
import { host, run } from "./helpers.ts";
import { checkGrad, rng } from "../passes/gradcheck.ts";

const close = (got: number[], want: number[], tol: number) => {
  expect(got.length).toBe(want.length);
  got.forEach((g, i) => {
    if (!(Math.abs(g - want[i]!) <= tol * (1 + Math.abs(want[i]!))))
      throw new Error(`[${i}] got ${g}, want ${want[i]}`);
  });
};
const randn = (n: number, seed: number, scale = 2) => {
  const r = rng(seed);
  return Array.from({ length: n }, () => Math.fround((r() * 2 - 1) * scale));
};
const gradOf = (fn: (...a: Tensor[]) => Tensor, specs: ReturnType<typeof spec>[], args: ReturnType<typeof host>[]) =>
  checkGrad(trace(fn, specs).graph, args);

// erf by Simpson's rule on its integral: independent of the series nn.ts uses and of the interpreter's kernel.
function erf(x: number): number {
  const n = 2000;
  const h = x / n;
  let s = 1 + Math.exp(-x * x);
  for (let i = 1; i < n; i++) s += (i % 2 ? 4 : 2) * Math.exp(-((i * h) ** 2));
  return ((2 / Math.sqrt(Math.PI)) * s * h) / 3;
}

describe("activations", () => {
  const xs = [-3, -1.5, -0.25, 0, 0.3, 1, 2.5, 4];
  const x = host("f32", [8], xs);
  it("relu, gelu (tanh and erf forms) and silu match their formulas", () => {
    close(
      run(tx.nn.relu, [x])[0]!,
      xs.map((v) => Math.max(Math.fround(v), 0)),
      0,
    );
    const tanhForm = (v: number) => 0.5 * v * (1 + Math.tanh(Math.sqrt(2 / Math.PI) * (v + 0.044715 * v ** 3)));
    close(run((t: Tensor) => tx.nn.gelu(t), [x])[0]!, xs.map(tanhForm), 1e-6);
    close(
      run((t: Tensor) => tx.nn.gelu(t, { approximate: false }), [x])[0]!,
      xs.map((v) => 0.5 * v * (1 + erf(v / Math.SQRT2))),
      1e-6,
    );
    close(
      run(tx.nn.silu, [x])[0]!,
      xs.map((v) => v / (1 + Math.exp(-v))),
      1e-6,
    );
    // The two gelu forms differ (by up to ~1e-3), so the option is not ignored.
    expect(Math.abs(tanhForm(-3) - 0.5 * -3 * (1 + erf(-3 / Math.SQRT2)))).toBeGreaterThan(1e-4);
  });
  it("gelu gradients match finite differences in both forms", () => {
    const s = [spec("f32", [8])];
    gradOf((t) => tx.nn.gelu(t), s, [x]);
    gradOf((t) => tx.nn.gelu(t, { approximate: false }), s, [x]);
  });
});

describe("softmax, logSoftmax", () => {
  const vals = randn(12, 1, 4);
  vals[5] = 1000; // a row with a huge logit: naive exp overflows
  const x = host("f32", [3, 4], vals);
  const rows = [0, 1, 2].map((r) => vals.slice(4 * r, 4 * r + 4));
  const lse = (row: number[]) => {
    const m = Math.max(...row);
    return m + Math.log(row.reduce((s, v) => s + Math.exp(v - m), 0));
  };
  it("are stable and equal the float64 reference along the last axis", () => {
    close(
      run((t: Tensor) => tx.nn.softmax(t), [x])[0]!,
      rows.flatMap((r) => r.map((v) => Math.exp(v - lse(r)))),
      1e-6,
    );
    close(
      run((t: Tensor) => tx.nn.logSoftmax(t), [x])[0]!,
      rows.flatMap((r) => r.map((v) => v - lse(r))),
      1e-6,
    );
    close(run((t: Tensor) => tx.nn.logsumexp(t), [x])[0]!, rows.map(lse), 1e-6);
    // axis 0
    const cols = [0, 1, 2, 3].map((c) => [0, 1, 2].map((r) => vals[4 * r + c]!));
    close(run((t: Tensor) => tx.nn.logsumexp(t, 0), [x])[0]!, cols.map(lse), 1e-6);
  });
  it("gradients match finite differences", () => {
    const small = host("f32", [2, 3], randn(6, 2));
    gradOf((t) => tx.nn.softmax(t), [spec("f32", [2, 3])], [small]);
    gradOf((t) => tx.nn.logSoftmax(t, 0), [spec("f32", [2, 3])], [small]);
  });
  it("refuse integer input", () => {
    expect(() => trace((t: Tensor) => tx.nn.softmax(t), [spec("s32", [3])])).toThrow(
      /nn.softmax: needs a float tensor, got s32/,
    );
  });
});

describe("layerNorm, rmsNorm", () => {
  const D = 5;
  const xv = randn(2 * D, 3);
  const sv = randn(D, 4);
  const bv = randn(D, 5);
  const args = [host("f32", [2, D], xv), host("f32", [D], sv), host("f32", [D], bv)];
  const specs = [spec("f32", [2, D]), spec("f32", [D]), spec("f32", [D])];
  const ln = (x: Tensor, s: Tensor, b: Tensor) => tx.nn.layerNorm(x, { scale: s, bias: b, eps: 1e-3 });
  const rms = (x: Tensor, s: Tensor) => tx.nn.rmsNorm(x, { scale: s, eps: 1e-3 });
  it("equal the float64 formulas over the last axis", () => {
    const want: number[] = [];
    const wantRms: number[] = [];
    for (let r = 0; r < 2; r++) {
      const row = xv.slice(r * D, r * D + D);
      const mu = row.reduce((a, v) => a + v, 0) / D;
      const v = row.reduce((a, x) => a + (x - mu) ** 2, 0) / D;
      const ms = row.reduce((a, x) => a + x * x, 0) / D;
      row.forEach((x, i) => {
        want.push(((x - mu) / Math.sqrt(v + 1e-3)) * sv[i]! + bv[i]!);
        wantRms.push((x / Math.sqrt(ms + 1e-3)) * sv[i]!);
      });
    }
    close(run(ln, args)[0]!, want, 1e-5);
    close(run(rms, args.slice(0, 2))[0]!, wantRms, 1e-5);
  });
  it("gradients (input, scale, bias) match finite differences", () => {
    gradOf(ln, specs, args);
    gradOf(rms, specs.slice(0, 2), args.slice(0, 2));
  });
  it("bf16 input computes statistics in f32 and returns bf16", () => {
    const { graph } = trace((x: Tensor) => tx.nn.layerNorm(x), [spec("bf16", [2, 4])]);
    expect(graph.outputs[0]!.type.dtype).toBe("bf16");
  });
});

describe("crossEntropy", () => {
  const V = 4;
  const lv = randn(5 * V, 6, 3);
  const labels = [2, -100, 0, 3, 1];
  const logits = host("f32", [5, V], lv);
  const lab = host("s32", [5], labels);
  const ref = (ignore: number | undefined, smooth: number) => {
    let total = 0;
    let n = 0;
    labels.forEach((y, r) => {
      if (y === ignore) return;
      const row = lv.slice(r * V, r * V + V);
      const m = Math.max(...row);
      const l = m + Math.log(row.reduce((s, v) => s + Math.exp(v - m), 0));
      // Cross-entropy against the smoothed target distribution, written as that sum.
      row.forEach((v, c) => {
        total -= ((c === y ? 1 - smooth : 0) + smooth / V) * (v - l);
      });
      n++;
    });
    return total / n;
  };
  it("is the mean over non-ignored labels, with label smoothing", () => {
    const ce = (o: Parameters<typeof tx.nn.crossEntropy>[2]) => (x: Tensor, y: Tensor) => tx.nn.crossEntropy(x, y, o);
    close(run(ce({ ignoreIndex: -100 }), [logits, lab])[0]!, [ref(-100, 0)], 1e-6);
    close(run(ce({ ignoreIndex: -100, labelSmoothing: 0.1 }), [logits, lab])[0]!, [ref(-100, 0.1)], 1e-6);
    const noIgnore = host("s32", [5], [2, 1, 0, 3, 1]);
    const saved = labels[1];
    labels[1] = 1;
    close(run(ce({}), [logits, noIgnore])[0]!, [ref(undefined, 0)], 1e-6);
    labels[1] = saved!;
    const allIgnored = host("s32", [5], [-100, -100, -100, -100, -100]);
    expect(run(ce({ ignoreIndex: -100 }), [logits, allIgnored])[0]).toEqual([0]);
  });
  it("gradient w.r.t. the logits matches finite differences", () => {
    gradOf(
      (x, y) => tx.nn.crossEntropy(x, y, { ignoreIndex: -100, labelSmoothing: 0.2 }),
      [spec("f32", [5, V]), spec("s32", [5])],
      [logits, lab],
    );
  });
  it("names wrong labels", () => {
    expect(() =>
      trace((x: Tensor, y: Tensor) => tx.nn.crossEntropy(x, y), [spec("f32", [5, V]), spec("f32", [5])]),
    ).toThrow(/nn.crossEntropy: labels must be integer class ids, got f32/);
    expect(() =>
      trace((x: Tensor, y: Tensor) => tx.nn.crossEntropy(x, y), [spec("f32", [5, V]), spec("s32", [4])]),
    ).toThrow(/labels must have the logits' shape without the class axis, \[5\]/);
  });
});

describe("embedding, dropout", () => {
  it("embedding gathers rows", () => {
    const table = host("f32", [3, 2], [0, 1, 10, 11, 20, 21]);
    const ids = host("s32", [2, 2], [2, 0, 1, 2]);
    expect(run(tx.nn.embedding, [table, ids])[0]).toEqual([20, 21, 0, 1, 10, 11, 20, 21]);
  });
  it("dropout is random.dropout", () => {
    expect(tx.nn.dropout).toBe(random.dropout);
  });
});

describe("initializers", () => {
  const N = [64, 32];
  const sample = (init: tx.nn.Initializer, seed: number, shape = N) => run(() => init(random.key(seed), shape), [])[0]!;
  const stats = (v: number[]) => {
    const m = v.reduce((a, x) => a + x, 0) / v.length;
    return {
      mean: m,
      std: Math.sqrt(v.reduce((a, x) => a + (x - m) ** 2, 0) / v.length),
      max: Math.max(...v.map(Math.abs)),
    };
  };
  it("zeros and ones", () => {
    expect(sample(tx.nn.initializers.zeros(), 0, [2, 2])).toEqual([0, 0, 0, 0]);
    expect(sample(tx.nn.initializers.ones(), 0, [3])).toEqual([1, 1, 1]);
  });
  it("normal has the asked standard deviation; a key fixes the sample", () => {
    const a = sample(tx.nn.initializers.normal(0.5), 1);
    const s = stats(a);
    expect(Math.abs(s.mean)).toBeLessThan(0.03);
    expect(Math.abs(s.std - 0.5)).toBeLessThan(0.02);
    expect(sample(tx.nn.initializers.normal(0.5), 1)).toEqual(a);
    expect(sample(tx.nn.initializers.normal(0.5), 2)).not.toEqual(a);
  });
  it("truncatedNormal follows the truncated normal law (KS distance) within +-2 stddev", () => {
    const v = sample(tx.nn.initializers.truncatedNormal(1), 3).sort((a, b) => a - b);
    expect(v[0]!).toBeGreaterThanOrEqual(-2);
    expect(v[v.length - 1]!).toBeLessThanOrEqual(2);
    const z = erf(Math.SQRT2);
    const cdf = (x: number) => (erf(x / Math.SQRT2) + z) / (2 * z);
    let ks = 0;
    v.forEach((x, i) => {
      ks = Math.max(ks, Math.abs(cdf(x) - (i + 0.5) / v.length));
    });
    // 2048 samples: a correct sampler stays under ~0.03 (99.9% KS bound 1.95/sqrt(n) = 0.043).
    expect(ks).toBeLessThan(0.043);
    expect(Math.abs(stats(v).std - 0.87962566103423978)).toBeLessThan(0.03);
  });
  it("glorotUniform and heNormal scale by the fans", () => {
    const limit = Math.sqrt(6 / (64 + 32));
    const g = stats(sample(tx.nn.initializers.glorotUniform(), 4));
    expect(g.max).toBeLessThanOrEqual(limit);
    expect(Math.abs(g.std - limit / Math.sqrt(3))).toBeLessThan(0.01);
    const h = stats(sample(tx.nn.initializers.heNormal(), 5));
    expect(Math.abs(h.std - Math.sqrt(2 / 64))).toBeLessThan(0.006);
    expect(h.max).toBeLessThanOrEqual((2 * Math.sqrt(2 / 64)) / 0.87962566103423978 + 1e-6);
    expect(() => trace(() => tx.nn.initializers.heNormal()(random.key(0), [4]), [])).toThrow(/rank >= 2/);
  });
});
