// The causal-LM loss vs a direct computation of HF's definition, and AdamW vs torch's algorithm written out in float64.
import { describe, expect, it } from "vitest";
import { tx, type Tensor } from "tessera";
import { fromFloat32, toFloat32, type HostTensor } from "../../src/formats/host_tensor.ts";
import { causalLmLoss } from "../../src/train/loss.ts";
import { adamwUpdate, type AdamWConfig } from "../../src/train/adamw.ts";
import { interpretOnHost } from "../../src/parity/execute.ts";
import { mulberry32 } from "../../models/lora.ts";
import { uniform } from "../models/helpers.ts";

const f32 = (v: ArrayLike<number>, shape: number[]) => fromFloat32(Float32Array.from(v), shape);
const i32 = (v: number[], shape: number[]) => fromFloat32(v, shape, "I32");

/** HF's loss written out: position t predicts labels[t+1]; -100 skipped; mean over the rest. */
function hfLoss(logits: Float32Array, labels: number[], B: number, S: number, V: number): number {
  let sum = 0,
    n = 0;
  for (let b = 0; b < B; b++)
    for (let t = 0; t + 1 < S; t++) {
      const y = labels[b * S + t + 1]!;
      if (y === -100) continue;
      const row = Array.from(logits.subarray((b * S + t) * V, (b * S + t + 1) * V));
      const m = Math.max(...row);
      sum += Math.log(row.reduce((z, x) => z + Math.exp(x - m), 0)) + m - row[y]!;
      n++;
    }
  return sum / n;
}

describe("causalLmLoss", () => {
  const [B, S, V] = [2, 5, 11];
  const rand = mulberry32(4);
  const logits = uniform(B * S * V, 4, rand);
  const run = (labels: number[]) =>
    toFloat32(
      interpretOnHost(
        (l: Tensor, y: Tensor) => causalLmLoss(l, y),
        [f32(logits, [B, S, V]), i32(labels, [B, S])],
      ) as HostTensor,
    )[0]!;

  it("shifts the labels, ignores -100 and averages over the remaining tokens", () => {
    const labels = [-100, -100, 3, 7, 1, -100, 4, -100, 10, 0];
    const got = run(labels);
    expect(Math.abs(got - hfLoss(logits, labels, B, S, V))).toBeLessThan(1e-6);
    // The label at position 0 never counts (nothing predicts it), so changing it changes nothing.
    expect(run([5, ...labels.slice(1)])).toBe(got);
    // Changing the label after a masked one does.
    expect(run(labels.map((y, i) => (i === 8 ? 2 : y)))).not.toBe(got);
  });

  it("is NaN when every label is ignored (0/0, as in torch)", () => {
    expect(run(new Array(B * S).fill(-100))).toBeNaN();
  });
});

/** torch.optim.AdamW (single-tensor, non-amsgrad) in float64. */
function torchAdamW(p: number[], grads: number[][], lrs: number[], hp: AdamWConfig): number[] {
  const m = p.map(() => 0),
    v = p.map(() => 0);
  grads.forEach((g, s) => {
    const t = s + 1,
      lr = lrs[s]!;
    for (let i = 0; i < p.length; i++) {
      p[i]! *= 1 - lr * hp.weightDecay;
      m[i]! += (g[i]! - m[i]!) * (1 - hp.beta1);
      v[i] = v[i]! * hp.beta2 + (1 - hp.beta2) * g[i]! * g[i]!;
      const bc1 = 1 - hp.beta1 ** t,
        bc2 = 1 - hp.beta2 ** t;
      p[i]! -= (lr / bc1) * (m[i]! / (Math.sqrt(v[i]!) / Math.sqrt(bc2) + hp.eps));
    }
  });
  return p;
}

describe("AdamW", () => {
  const hp: AdamWConfig = { lr: 0, beta1: 0.8, beta2: 0.95, eps: 1e-6, weightDecay: 0.1 };
  const n = 6;
  const rand = mulberry32(9);
  const p0 = Array.from(uniform(n, 1, rand));
  const grads = [0, 1, 2].map(() => Array.from(uniform(n, 0.5, rand)));
  const lrs = [1e-2, 5e-3, 2e-2];

  it("three steps (changing lr) match torch's update rule with decoupled weight decay and bias correction", () => {
    let state = { p: f32(p0, [2, 3]), m: f32(new Array(n).fill(0), [2, 3]), v: f32(new Array(n).fill(0), [2, 3]) };
    grads.forEach((g, s) => {
      const out = interpretOnHost(
        (p: Tensor, g: Tensor, m: Tensor, v: Tensor, t: Tensor, lr: Tensor) => {
          const [np, st] = adamwUpdate({ w: p }, { w: g }, { m: { w: m }, v: { w: v } }, t, lr, hp);
          return { p: np.w, m: st.m.w, v: st.v.w };
        },
        [state.p, f32(g, [2, 3]), state.m, state.v, f32([s + 1], []), f32([lrs[s]!], [])],
      ) as typeof state;
      state = out;
    });
    const want = torchAdamW([...p0], grads, lrs, hp);
    const got = toFloat32(state.p);
    for (let i = 0; i < n; i++) expect(Math.abs(got[i]! - want[i]!)).toBeLessThan(2e-6);
  });

  it("the first step moves each weight by about lr * sign(g) after decay", () => {
    const out = interpretOnHost(
      (p: Tensor, g: Tensor) =>
        adamwUpdate([p], [g], { m: [tx.zerosLike(p)], v: [tx.zerosLike(p)] }, tx.full([], 1), tx.full([], 0.01), {
          ...hp,
          eps: 1e-12,
        })[0][0]!,
      [f32(p0, [n]), f32(grads[0]!, [n])],
    ) as HostTensor;
    const got = toFloat32(out);
    for (let i = 0; i < n; i++)
      expect(got[i]!).toBeCloseTo(p0[i]! * (1 - 0.01 * 0.1) - 0.01 * Math.sign(grads[0]![i]!), 6);
  });
});
