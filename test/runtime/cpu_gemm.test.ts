// The OpenBLAS GEMM custom call: every dot_general layout it takes equals XLA's dot, sums of products accumulate in place, small products and exports keep XLA's dot, and bad settings are named.
import { afterEach, describe, expect, it } from "vitest";
import { array, grad, jit, spec, tx, type Tensor } from "tessera";
import { CPU_GEMM_ENV, cachedOpenblas, cpuGemmEnabled } from "../../src/backend/runtime/cpu_gemm.ts";
import { mulberry32 } from "../../src/host/random.ts";

const saved = process.env[CPU_GEMM_ENV];
afterEach(() => {
  if (saved === undefined) delete process.env[CPU_GEMM_ENV];
  else process.env[CPU_GEMM_ENV] = saved;
});

function randn(shape: number[], seed: number) {
  const rand = mulberry32(seed);
  const n = shape.reduce((a, b) => a * b, 1);
  return array(
    Float32Array.from({ length: n }, () => rand() * 2 - 1),
    { shape },
  );
}

interface Dims {
  lhsBatch?: number[];
  rhsBatch?: number[];
  lhsContract: number[];
  rhsContract: number[];
}

/** Runs one dot_general with the setting `gemm`, returning the result and the lowered text. */
async function run(gemm: "openblas" | "xla", a: number[], b: number[], d: Dims) {
  process.env[CPU_GEMM_ENV] = gemm;
  const f = jit((x: Tensor, y: Tensor) => tx.dotGeneral(x, y, { lhsBatch: [], rhsBatch: [], ...d }));
  const [x, y] = [randn(a, 1), randn(b, 2)];
  const text = f.lower(x, y).stablehlo;
  const out = (await (await f(x, y)).toArray()) as Float32Array;
  return { out, text };
}

function maxRelDiff(a: Float32Array, b: Float32Array): number {
  let scale = 0,
    diff = 0;
  for (let i = 0; i < a.length; i++) {
    scale = Math.max(scale, Math.abs(b[i]!));
    diff = Math.max(diff, Math.abs(a[i]! - b[i]!));
  }
  return diff / scale;
}

const CASES: [string, number[], number[], Dims, string][] = [
  ["A @ B", [128, 96], [96, 64], { lhsContract: [1], rhsContract: [0] }, "nn"],
  ["A^T @ B (A stored [K, M])", [96, 128], [96, 64], { lhsContract: [0], rhsContract: [0] }, "tn"],
  ["A @ B^T (B stored [N, K])", [128, 96], [64, 96], { lhsContract: [1], rhsContract: [1] }, "nt"],
  ["A^T @ B^T", [96, 128], [64, 96], { lhsContract: [0], rhsContract: [1] }, "tt"],
  ["batched", [3, 128, 64], [3, 64, 48], { lhsBatch: [0], rhsBatch: [0], lhsContract: [2], rhsContract: [1] }, "nn"],
  [
    "GQA scores: batch dims not leading (transposed in)",
    [2, 64, 3, 4, 32],
    [2, 48, 3, 32],
    { lhsBatch: [0, 2], rhsBatch: [0, 2], lhsContract: [4], rhsContract: [3] },
    "nt",
  ],
  [
    "two contracting dims (attention's dV)",
    [2, 3, 64, 3, 48],
    [2, 3, 64, 3, 32],
    { lhsBatch: [0, 1], rhsBatch: [0, 1], lhsContract: [2, 3], rhsContract: [2, 3] },
    "tn",
  ],
  ["split over rows (M 256)", [256, 128], [128, 96], { lhsContract: [1], rhsContract: [0] }, "nn"],
  ["split over columns (M 16, N 1024)", [16, 128], [128, 1024], { lhsContract: [1], rhsContract: [0] }, "nn"],
];

describe("f32 dot_general through OpenBLAS", () => {
  it("the library is in the cache (npm install fetches it) and is used on the CPU plugin", () => {
    expect(cachedOpenblas()).toBeDefined();
    expect(cpuGemmEnabled()).toBe(true);
  });

  for (const [name, a, b, dims, variant] of CASES) {
    it(`${name}: equals XLA's dot`, async () => {
      const ours = await run("openblas", a, b, dims);
      const xla = await run("xla", a, b, dims);
      expect(ours.text).toContain(`stablehlo.custom_call @tessera_sgemm_f32_${variant}(`);
      expect(ours.text).not.toContain("stablehlo.dot_general");
      expect(xla.text).not.toContain("custom_call");
      expect(maxRelDiff(ours.out, xla.out)).toBeLessThan(1e-6);
    });
  }

  for (const [rows, n, k] of [
    [1, 1003, 600],
    [5, 640, 576],
    [8, 4096, 576],
  ] as const) {
    it(`a decode step's few-rows product (${rows} x ${k} by a weight stored [${n}, ${k}]) equals XLA's dot`, async () => {
      const dims = { lhsContract: [1], rhsContract: [1] };
      const ours = await run("openblas", [rows, k], [n, k], dims);
      const xla = await run("xla", [rows, k], [n, k], dims);
      expect(ours.text).toContain("stablehlo.custom_call @tessera_sgemm_f32_nt(");
      expect(maxRelDiff(ours.out, xla.out)).toBeLessThan(1e-6);
    });
  }

  it("few-rows products by a weight stored [K, N], and tiny products, stay with XLA", async () => {
    const decode = await run("openblas", [8, 576], [576, 576], { lhsContract: [1], rhsContract: [0] });
    expect(decode.text).toContain("stablehlo.dot_general");
    expect(decode.text).not.toContain("custom_call");
    const tiny = await run("openblas", [16, 16], [16, 16], { lhsContract: [1], rhsContract: [0] });
    expect(tiny.text).not.toContain("custom_call");
  });

  it("gradients through the call equal XLA's", async () => {
    const loss = (w: Tensor, x: Tensor) =>
      tx
        .tanh(x.matmul(w))
        .matmul(w.transpose([1, 0]))
        .square()
        .sum();
    const [w, x] = [randn([64, 48], 3), randn([128, 64], 4)];
    const grads: Float32Array[] = [];
    for (const gemm of ["openblas", "xla"] as const) {
      process.env[CPU_GEMM_ENV] = gemm;
      const g = jit(grad(loss));
      expect(g.lower(w, x).stablehlo.includes("tessera_sgemm_f32")).toBe(gemm === "openblas");
      grads.push((await (await g(w, x)).toArray()) as Float32Array);
    }
    expect(maxRelDiff(grads[0]!, grads[1]!)).toBeLessThan(1e-5);
  });

  it("in a layer scan: weights read inside their stack, outputs start uninitialized; values and gradients equal XLA's", async () => {
    // Four "layers" of h = tanh(h @ W[l]), the per-layer h kept (stacked ys), a loss over all of them.
    const layers = (ws: Tensor, h0: Tensor) => {
      const [h, hs] = tx.scan(
        (h: Tensor, w: Tensor) => {
          const next = tx.tanh(h.matmul(w));
          return [next, next];
        },
        h0,
        ws,
      );
      return h.sum().add(hs.square().sum());
    };
    const [ws, h0] = [randn([4, 64, 64], 5).mul(0.2), randn([128, 64], 6)];
    const results: { loss: number; dws: Float32Array; text: string }[] = [];
    for (const gemm of ["openblas", "xla"] as const) {
      process.env[CPU_GEMM_ENV] = gemm;
      const f = jit(tx.valueAndGrad(layers));
      const text = f.lower(ws, h0).stablehlo;
      const [loss, dws] = await f(ws, h0);
      results.push({ loss: await loss.item(), dws: (await dws.toArray()) as Float32Array, text });
    }
    const [ours, xla] = results as [(typeof results)[0], (typeof results)[0]];
    // The weight operand is the whole [4, 64, 64] stack (as [4, 1, 64, 64]) indexed by the loop counter.
    expect(ours.text).toMatch(
      /custom_call @tessera_sgemm_f32_nn\([^)]*\) .* : \(tensor<1x1x128x64xf32>, tensor<4x1x64x64xf32>/,
    );
    expect(ours.text).toContain("custom_call @tessera_uninitialized()");
    expect(xla.text).not.toContain("tessera_uninitialized");
    expect(Math.abs(ours.loss - xla.loss) / Math.abs(xla.loss)).toBeLessThan(1e-6);
    expect(maxRelDiff(ours.dws, xla.dws)).toBeLessThan(1e-5);
  });

  /** f(c, a, b) under both settings: the results (each output's values) and the lowered text with OpenBLAS. */
  async function both(f: (c: Tensor, a: Tensor, b: Tensor) => Tensor[], c: number[], a: number[], b: number[]) {
    const args = [randn(c, 7), randn(a, 8), randn(b, 9)] as const;
    const outs: Float32Array[][] = [];
    let text = "";
    for (const gemm of ["openblas", "xla"] as const) {
      process.env[CPU_GEMM_ENV] = gemm;
      const g = jit(f);
      if (gemm === "openblas") text = g.lower(...args).stablehlo;
      outs.push((await Promise.all((await g(...args)).map((o) => o.toArray()))) as Float32Array[]);
    }
    return { ours: outs[0]!, xla: outs[1]!, text };
  }

  const ALIAS = "output_operand_alias<output_tuple_indices = [], operand_index = 4";
  for (const [name, c, a, b, dims] of [
    ["A @ B", [128, 64], [128, 96], [96, 64], { lhsContract: [1], rhsContract: [0] }],
    ["A @ B^T (a LoRA delta's dh)", [512, 16], [512, 96], [16, 96], { lhsContract: [1], rhsContract: [1] }],
    ["A^T @ B (a weight gradient)", [96, 64], [128, 96], [128, 64], { lhsContract: [0], rhsContract: [0] }],
    ["split over columns", [16, 1024], [16, 128], [128, 1024], { lhsContract: [1], rhsContract: [0] }],
    ["K 16 (a LoRA delta onto its base)", [256, 576], [256, 16], [16, 576], { lhsContract: [1], rhsContract: [0] }],
  ] as [string, number[], number[], number[], Dims][]) {
    it(`C + ${name} is one call that adds into C, equal to XLA's`, async () => {
      const dot = (x: Tensor, y: Tensor) => tx.dotGeneral(x, y, { lhsBatch: [], rhsBatch: [], ...dims });
      const r = await both((cc, x, y) => [cc.add(dot(x, y))], c, a, b);
      expect(r.text).toContain(ALIAS);
      expect(r.text).not.toContain("stablehlo.add");
      expect(maxRelDiff(r.ours[0]!, r.xla[0]!)).toBeLessThan(1e-6);
    });
  }

  it("an addend that lives on is copied first, a product used twice is not absorbed, sums chain", async () => {
    const dims = { lhsBatch: [], rhsBatch: [], lhsContract: [1], rhsContract: [0] };
    const r = await both(
      (c, a, b) => {
        const p = tx.dotGeneral(a, b, dims);
        const q = tx.dotGeneral(a.mul(0.5), b, dims);
        // c is used again after the add (and is an argument): the call must not overwrite it.
        return [c.add(p.mul(2)).add(q), c.mul(3), p.add(c), p];
      },
      [128, 64],
      [128, 96],
      [96, 64],
    );
    expect(r.text.split(ALIAS).length - 1).toBe(1); // only q: p has three uses
    for (let i = 0; i < 4; i++) expect(maxRelDiff(r.ours[i]!, r.xla[i]!)).toBeLessThan(1e-6);
  });

  it("exported programs keep XLA's dot, to run on any plugin", async () => {
    const f = jit((x: Tensor, y: Tensor) => x.matmul(y));
    const exported = await tx.export(f, spec("f32", [64, 64]), spec("f32", [64, 64]));
    expect(exported.stablehlo).toContain("stablehlo.dot_general");
    expect(exported.stablehlo).not.toContain("custom_call");
  });

  it(`a bad $${CPU_GEMM_ENV} is named with the values it takes`, () => {
    process.env[CPU_GEMM_ENV] = "mkl";
    expect(() => cpuGemmEnabled()).toThrow(/TESSERA_CPU_GEMM must be "openblas" or "xla", got "mkl"/);
  });
});
