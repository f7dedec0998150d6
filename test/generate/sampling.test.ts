// The sort-free top-k / top-p warpers of models/sampling.ts against HF's sort-based definitions on the host, ties included.
import { describe, expect, it } from "vitest";
import { tx, type Tensor } from "tessera";
import { interpretOnHost } from "../../src/parity/execute.ts";
import { fromFloat32, toFloat32, type HostTensor } from "../../src/formats/host_tensor.ts";
import { topKFilter, topPFilter } from "../../models/sampling.ts";
import { mulberry32 } from "../../models/lora.ts";

type HostArg = Parameters<typeof interpretOnHost>[1][number];

/** HF TopKLogitsWarper: scores < the k-th largest become -inf. */
function refTopK(row: Float32Array, k: number): Float32Array {
  const kth = [...row].sort((a, b) => b - a)[Math.min(k, row.length) - 1]!;
  return row.map((x) => (x < kth ? -Infinity : x));
}

/** HF TopPLogitsWarper: sort ascending (stable), cumulative softmax, remove where cum <= 1 - p, keep the last. */
function refTopP(row: Float32Array, p: number): Float32Array {
  const max = Math.max(...row);
  const e = [...row].map((x) => Math.exp(x - max));
  const z = e.reduce((a, b) => a + b, 0);
  const order = [...row.keys()].sort((a, b) => row[a]! - row[b]! || a - b);
  const out = row.slice();
  let cum = 0;
  order.forEach((i, r) => {
    cum += e[i]! / z;
    if (cum <= 1 - p && r < order.length - 1) out[i] = -Infinity;
  });
  return out;
}

function run(
  f: (s: Tensor, x: Tensor) => Tensor,
  rows: Float32Array[],
  x: number,
  xDtype: "s32" | "f32",
): Float32Array[] {
  const V = rows[0]!.length;
  const flat = new Float32Array(rows.length * V);
  rows.forEach((r, i) => {
    flat.set(r, i * V);
  });
  const xs = xDtype === "s32" ? fromFloat32(new Float32Array([x]), [], "I32") : fromFloat32(new Float32Array([x]), []);
  const out = interpretOnHost(f, [fromFloat32(flat, [rows.length, V]) as HostArg, xs as HostArg]);
  const v = toFloat32(out as HostTensor);
  return rows.map((_, i) => v.slice(i * V, (i + 1) * V));
}

/** Logits with repeated values (ties at the cut) and both signs. */
function logitRows(n: number, V: number, seed: number): Float32Array[] {
  const rand = mulberry32(seed);
  return Array.from({ length: n }, () => Float32Array.from({ length: V }, () => Math.round((rand() * 2 - 1) * 12) / 4));
}

describe("sampling warpers", () => {
  const rows = logitRows(4, 64, 5);

  it.each([1, 2, 5, 17, 63, 64])("top-k %i keeps exactly what HF's TopKLogitsWarper keeps", (k) => {
    const got = run((s, kk) => topKFilter(s, kk), rows, k, "s32");
    for (const [i, r] of rows.entries()) expect(Array.from(got[i]!)).toEqual(Array.from(refTopK(r, k)));
  });

  it.each([0.05, 0.3, 0.5, 0.9, 0.99, 1])("top-p %f keeps what HF's TopPLogitsWarper keeps", (p) => {
    // Distinct values here: with ties at the cut HF keeps part of a tie by sort order, a sort-free filter all of it.
    const distinct = rows.map((r) => r.map((x, j) => x + j * 1e-3));
    const got = run((s, pp) => topPFilter(s, pp), distinct, p, "f32");
    for (const [i, r] of distinct.entries()) expect(Array.from(got[i]!)).toEqual(Array.from(refTopP(r, p)));
  });

  it("top-k then top-p (HF's order) is exact past the -inf entries top-k leaves", () => {
    const distinct = rows.map((r) => r.map((x, j) => x + j * 1e-3));
    const got = run((s, kk) => topPFilter(topKFilter(s, kk), tx.full([], 0.8, "f32")), distinct, 10, "s32");
    distinct.forEach((r, i) => {
      const want = refTopP(refTopK(r, 10), 0.8);
      expect(Array.from(got[i]!)).toEqual(Array.from(want));
      expect(want.filter(Number.isFinite).length).toBeLessThan(10);
    });
  });
});
