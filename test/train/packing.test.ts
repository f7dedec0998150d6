// Packed rows (positions + segment ids) against the same records unpacked, gradient accumulation against one large batch, and HF's gradient clipping.
import { describe, expect, it } from "vitest";
import { tx, type Tensor } from "tessera";
import { fromFloat32, fromTypedArray, toFloat32, type HostTensor } from "../../src/formats/host_tensor.ts";
import { makeLoraConfig } from "../../src/formats/peft.ts";
import { pjrtOnHost } from "../../src/parity/execute.ts";
import { flatten } from "../../src/frontend/tree.ts";
import { isHostTensor } from "../../src/host/transfer.ts";
import { LLAMA_TINY, llamaLogits, type LlamaWeights } from "../../models/llama.ts";
import { loraFromAdapter, mulberry32, type LoraWeights } from "../../models/lora.ts";
import { BatchStream, epochOrder, paddingStats } from "../../src/data/batches.ts";
import { IGNORE, type TrainRecord } from "../../src/data/records.ts";
import { builtinBaseWeights } from "../../src/train/loop.ts";
import { ADAMW_DEFAULTS } from "../../src/train/adamw.ts";
import { F32 } from "../../src/train/precision.ts";
import {
  clipGrads,
  globalNorm,
  initTrainState,
  lossAndGrads,
  loraLoss,
  makeGuardedTrainStep,
  type Batch,
  type StepConfig,
  type TrainState,
} from "../../src/train/step.ts";
import { randomAdapter } from "../models/helpers.ts";

type HostTree = Parameters<typeof pjrtOnHost>[1][number];
const cfg = LLAMA_TINY;
const base = builtinBaseWeights(cfg, 0);
const lora = loraFromAdapter(
  randomAdapter(cfg, makeLoraConfig({ r: 2, loraAlpha: 4, targetModules: ["q_proj", "v_proj", "down_proj"] }), 4),
  cfg,
);
const flat = (x: unknown) => flatten(x as HostTree, isHostTensor).leaves.map(toFloat32);

function maxRelDiff(a: Float32Array, b: Float32Array): number {
  expect(a.length).toBe(b.length);
  let scale = 0,
    m = 0;
  for (let i = 0; i < a.length; i++) scale = Math.max(scale, Math.abs(b[i]!));
  for (let i = 0; i < a.length; i++) m = Math.max(m, Math.abs(a[i]! - b[i]!));
  return m / Math.max(scale, 1e-30);
}

/** Records of uneven lengths; each has a prompt (labels -100) then an answer, as prompt/answer data does. */
function records(lengths: number[], seed = 5): TrainRecord[] {
  const rand = mulberry32(seed);
  return lengths.map((n, r) => {
    const ids = Int32Array.from({ length: n }, () => 1 + Math.floor(rand() * (cfg.vocabSize - 1)));
    const labels = ids.map((t, i) => (i < Math.floor(n / 2) ? IGNORE : t));
    return { ids, labels, source: `test:${r + 1}` };
  });
}

const i32 = (a: Int32Array, shape: number[]) => fromTypedArray("I32", shape, a);

/** The packed batch's records as one row each, right-padded: what the same records look like unpacked. */
function unpack(p: { tokens: Int32Array; labels: Int32Array; segmentIds: Int32Array }, B: number, S: number) {
  const rows: { ids: Int32Array; labels: Int32Array }[] = [];
  for (let b = 0; b < B; b++) {
    for (let i = 0; i < S; ) {
      const seg = p.segmentIds[b * S + i]!;
      let j = i;
      while (j < S && p.segmentIds[b * S + j] === seg) j++;
      if (seg !== 0)
        rows.push({ ids: p.tokens.slice(b * S + i, b * S + j), labels: p.labels.slice(b * S + i, b * S + j) });
      i = j;
    }
  }
  const tokens = new Int32Array(rows.length * S);
  const labels = new Int32Array(rows.length * S).fill(IGNORE);
  rows.forEach((r, k) => {
    tokens.set(r.ids, k * S);
    labels.set(r.labels, k * S);
  });
  return { tokens, labels, rows: rows.length };
}

describe("packed rows", () => {
  const S = 16;
  const recs = records([5, 7, 4, 6, 9, 3, 8, 2, 11]);

  it("hold the records in the epoch's order, positions restarting and the first label of each record ignored", () => {
    const stream = new BatchStream(recs, { batch: 2, seq: S, padId: 0, seed: 1, pack: true });
    const b = stream.next();
    const order = epochOrder(recs.length, 1, 0);
    let k = 0;
    for (let row = 0; row < 2; row++) {
      let at = 0;
      for (let seg = 1; ; seg++) {
        const r = recs[order[k]!]!;
        if (at + r.ids.length > S) break;
        const o = row * S + at;
        expect([...b.tokens.slice(o, o + r.ids.length)]).toEqual([...r.ids]);
        expect([...b.positions!.slice(o, o + r.ids.length)]).toEqual(Array.from(r.ids, (_, i) => i));
        expect([...b.segmentIds!.slice(o, o + r.ids.length)]).toEqual(Array(r.ids.length).fill(seg));
        expect([...b.labels.slice(o, o + r.ids.length)]).toEqual([IGNORE, ...r.labels.slice(1)]);
        at += r.ids.length;
        k++;
      }
      // the rest of the row is padding: segment 0, no loss
      expect([...b.segmentIds!.slice(row * S + at, (row + 1) * S)].every((s) => s === 0)).toBe(true);
      expect([...b.labels.slice(row * S + at, (row + 1) * S)].every((l) => l === IGNORE)).toBe(true);
    }
    expect(stream.position().examplesSeen).toBe(k);
    // a resumed stream continues with the next batch the original would have drawn
    const next = stream.next();
    const resumed = new BatchStream(recs, { batch: 2, seq: S, padId: 0, seed: 1, pack: true, start: k }).next();
    expect([...resumed.tokens]).toEqual([...next.tokens]);
    expect([...resumed.segmentIds!]).toEqual([...next.segmentIds!]);
  });

  it("padding: one record per row wastes what packing saves (paddingStats)", () => {
    const p = paddingStats(recs, S, 1);
    const tokens = recs.reduce((a, r) => a + r.ids.length, 0);
    expect(p.tokens).toBe(tokens);
    expect(p.padding).toBeCloseTo(1 - tokens / (recs.length * S), 12);
    expect(p.packedRows).toBeLessThan(recs.length);
    expect(p.packedRows).toBeGreaterThanOrEqual(Math.ceil(tokens / S));
    expect(p.packedPadding).toBeCloseTo(1 - tokens / (p.packedRows * S), 12);
  });

  it.each(["plain", "blockwise"] as const)(
    "loss and LoRA gradients of a packed batch equal the same records unpacked (%s attention)",
    async (attention) => {
      const B = 3;
      const packed = new BatchStream(recs, { batch: B, seq: S, padId: 0, seed: 2, pack: true }).next();
      const u = unpack(packed as Required<typeof packed>, B, S);
      expect(u.rows).toBeGreaterThan(B); // more than one record per row somewhere
      const c: StepConfig = {
        llama: cfg,
        layout: lora.layout,
        policy: F32,
        adamw: ADAMW_DEFAULTS,
        attention,
        attentionBlock: 4,
      };
      const run = async (batch: Record<string, HostTensor>) =>
        flat(
          await pjrtOnHost(
            (w: LlamaWeights, l: LoraWeights, b: Batch) => tx.valueAndGrad((l: LoraWeights) => loraLoss(c, l, w, b))(l),
            [base as unknown as HostTree, lora.weights as HostTree, batch as HostTree],
          ),
        );
      const shape = [B, S];
      const got = await run({
        tokens: i32(packed.tokens, shape),
        labels: i32(packed.labels, shape),
        positions: i32(packed.positions!, shape),
        segmentIds: i32(packed.segmentIds!, shape),
      });
      const want = await run({ tokens: i32(u.tokens, [u.rows, S]), labels: i32(u.labels, [u.rows, S]) });
      const loss = [got[0]![0]!, want[0]![0]!];
      console.log(`${attention}: packed loss ${loss[0]} (${B} rows), unpacked ${loss[1]} (${u.rows} rows)`);
      expect(Math.abs(loss[0]! - loss[1]!)).toBeLessThanOrEqual(1e-5 * Math.abs(loss[1]!));
      let worst = 0;
      for (let i = 1; i < got.length; i++) worst = Math.max(worst, maxRelDiff(got[i]!, want[i]!));
      console.log(`${attention}: max relative gradient difference ${worst.toExponential(2)}`);
      expect(worst).toBeLessThanOrEqual(1e-4);
      // without segment ids the records would see each other: the loss changes
      const leaky = await run({
        tokens: i32(packed.tokens, shape),
        labels: i32(packed.labels, shape),
        positions: i32(packed.positions!, shape),
      });
      expect(Math.abs(leaky[0]![0]! - loss[1]!)).toBeGreaterThan(1e-3);
    },
  );

  it.each(["plain", "blockwise"] as const)(
    "positions 0..S-1 and a single segment give exactly the default logits (%s attention)",
    async (attention) => {
      const B = 2,
        T = 11;
      const rand = mulberry32(9);
      const tokens = Int32Array.from({ length: B * T }, () => Math.floor(rand() * cfg.vocabSize));
      const pos = Int32Array.from({ length: B * T }, (_, i) => i % T);
      const seg = new Int32Array(B * T).fill(1);
      const o = { attention, attentionBlock: 4 } as const;
      const [a, b, shifted] = flat(
        await pjrtOnHost(
          (w: LlamaWeights, t: Tensor, p: Tensor, s: Tensor) => [
            llamaLogits(cfg, w, t, o),
            llamaLogits(cfg, w, t, { ...o, positions: p, segmentIds: s }),
            llamaLogits(cfg, w, t, { ...o, positions: p.mul(2) }),
          ],
          [base as unknown as HostTree, i32(tokens, [B, T]), i32(pos, [B, T]), i32(seg, [B, T])],
        ),
      );
      expect(maxRelDiff(b!, a!)).toBeLessThanOrEqual(1e-6);
      // the positions are used: spreading them apart changes the logits (a common shift would not: RoPE is relative)
      expect(maxRelDiff(shifted!, a!)).toBeGreaterThan(1e-3);
    },
  );
});

describe("gradient accumulation and clipping", () => {
  const S = 12,
    B = 2,
    N = 3;
  const rand = mulberry32(11);
  const tokens = Int32Array.from({ length: N * B * S }, () => Math.floor(rand() * cfg.vocabSize));
  // uneven loss tokens per micro-batch: a mean of per-micro-batch means would differ from the large batch's mean
  const labels = tokens.map((t, i) => (i % S < 2 + Math.floor(i / S) ? IGNORE : t));
  const batch = { tokens: i32(tokens, [N * B, S]), labels: i32(labels, [N * B, S]) };
  const key = fromFloat32([0, 3], [2], "U32");
  const c: StepConfig = { llama: cfg, layout: lora.layout, policy: F32, adamw: ADAMW_DEFAULTS };

  it(`${N} micro-batches of ${B} in one step equal one batch of ${N * B}: loss, gradients and the update`, async () => {
    const run = (gradAccum: number) =>
      pjrtOnHost(
        (w: LlamaWeights, l: LoraWeights, b: Batch, k: Tensor, state: TrainState) => {
          const cc = { ...c, gradAccum };
          const [loss, g] = lossAndGrads(cc, l, w, b, k);
          const [next] = makeGuardedTrainStep(cc)(state, w, b, tx.full([], 1e-3, "f32"), k);
          return [loss, g, next.lora];
        },
        [
          base as unknown as HostTree,
          lora.weights as HostTree,
          batch as HostTree,
          key,
          initTrainState(lora.weights) as unknown as HostTree,
        ],
      );
    const got = flat(await run(N));
    const want = flat(await run(1));
    let worst = 0;
    for (let i = 0; i < got.length; i++) worst = Math.max(worst, maxRelDiff(got[i]!, want[i]!));
    console.log(
      `grad-accum ${N}: loss ${got[0]![0]} vs ${want[0]![0]}; worst relative difference ${worst.toExponential(2)}`,
    );
    expect(worst).toBeLessThanOrEqual(1e-5);
  });

  it("clips the global norm as clip_grad_norm_ does: the first moment holds (1 - beta1) x the clipped gradient", async () => {
    const [norm, m, g] = (await pjrtOnHost(
      (w: LlamaWeights, l: LoraWeights, b: Batch, k: Tensor, state: TrainState) => {
        const cc = { ...c, maxGradNorm: 0.01 };
        const [, raw] = lossAndGrads(cc, l, w, b, tx.random.foldIn(k, 1));
        const [next] = makeGuardedTrainStep(cc)(state, w, b, tx.full([], 1e-3, "f32"), k);
        return [globalNorm(raw), next.m, raw];
      },
      [
        base as unknown as HostTree,
        lora.weights as HostTree,
        batch as HostTree,
        key,
        initTrainState(lora.weights) as unknown as HostTree,
      ],
    )) as unknown as [HostTensor, LoraWeights<HostTensor>, LoraWeights<HostTensor>];
    const n = toFloat32(norm)[0]!;
    expect(n).toBeGreaterThan(0.01);
    const coef = 0.01 / (n + 1e-6);
    const [ms, gs] = [flat(m), flat(g)];
    let worst = 0;
    for (let i = 0; i < gs.length; i++)
      worst = Math.max(
        worst,
        maxRelDiff(
          ms[i]!,
          gs[i]!.map((x) => (1 - ADAMW_DEFAULTS.beta1) * coef * x),
        ),
      );
    expect(worst).toBeLessThanOrEqual(1e-5);
    // below the threshold nothing changes; 0 turns clipping off
    const small = flat(
      await pjrtOnHost(
        (gr: LoraWeights) => [clipGrads(gr, globalNorm(gr), n * 2), clipGrads(gr, globalNorm(gr), 0)],
        [g as HostTree],
      ),
    );
    for (let i = 0; i < gs.length; i++) {
      expect(maxRelDiff(small[i]!, gs[i]!)).toBeLessThanOrEqual(1e-6);
      expect(maxRelDiff(small[gs.length + i]!, gs[i]!)).toBe(0);
    }
  });
});
