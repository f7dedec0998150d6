// Scaled dot-product attention kernels in the DSL: plain (materialized scores) and blockwise (flash: online softmax over scans).
import { tx, type Tensor } from "tessera";
import { TraceError } from "../src/frontend/errors.ts";

/**
 * How attention runs: "plain" materializes every [S, S] score matrix; "blockwise" streams key blocks through an
 * online softmax (memory O(S·block)); "cudnn" names a fused GPU kernel that Tessera cannot emit yet (refused).
 */
export type AttentionImpl = "plain" | "blockwise" | "cudnn";
export const ATTENTION_IMPLS: readonly AttentionImpl[] = ["plain", "blockwise", "cudnn"];

/** Above this sequence length `defaultAttention` picks "blockwise"; at or below it, "plain" (the fastest on CPU). */
export const PLAIN_MAX_SEQ = 1024;

/** "plain" up to PLAIN_MAX_SEQ tokens, "blockwise" beyond: the [B, H, S, S] scores grow quadratically. */
export function defaultAttention(seq: number): "plain" | "blockwise" {
  return seq <= PLAIN_MAX_SEQ ? "plain" : "blockwise";
}

export interface AttentionOpts {
  /** Query i sees keys 0..i only. */
  causal: boolean;
  /** [B, S] int32: a query sees only keys of its own segment (packed sequences). */
  segmentIds?: Tensor;
}

export interface BlockwiseOpts extends AttentionOpts {
  /** Queries per block of the outer scan (default 128, at most S). */
  blockQ?: number;
  /** Keys per block of the inner scan (default 128, at most S). */
  blockK?: number;
}

export const DEFAULT_BLOCK = 128;

const MASKED = -3.4028234663852886e38; // float32 lowest, as HF's eager mask uses finfo.min
// The online softmax's running max starts here: below every real score, and exactly representable in f32 and s32.
const M_INIT = -2e9;

interface Dims {
  B: number;
  S: number;
  Hkv: number;
  G: number;
  D: number;
}

/** Checks q [B, S, Hq, D], k and v [B, S, Hkv, D] with Hkv dividing Hq, and segment ids [B, S] int32. */
function checkInputs(op: string, q: Tensor, k: Tensor, v: Tensor, segmentIds?: Tensor): Dims {
  const types = [q.type, k.type, v.type];
  if (q.ndim !== 4 || k.ndim !== 4 || v.ndim !== 4)
    throw new TraceError(op, "expected q [B, S, Hq, D], k and v [B, S, Hkv, D]", types);
  const [B, S, Hq, D] = q.shape as [number, number, number, number];
  const Hkv = k.shape[2]!;
  if (k.shape.join() !== v.shape.join()) throw new TraceError(op, "k and v must have the same shape", types);
  if (k.shape[0] !== B || k.shape[1] !== S || k.shape[3] !== D)
    throw new TraceError(op, `k and v must be [${B}, ${S}, Hkv, ${D}] to match q`, types);
  if (Hq % Hkv !== 0)
    throw new TraceError(op, `query heads ${Hq} must be a multiple of key/value heads ${Hkv} (GQA)`, types);
  if (segmentIds && (segmentIds.shape.join() !== `${B},${S}` || segmentIds.dtype !== "s32")) {
    throw new TraceError(op, `segmentIds must be s32[${B},${S}]`, [...types, segmentIds.type]);
  }
  return { B, S, Hkv, G: Hq / Hkv, D };
}

/**
 * The HF eager computation, unchanged from llama.ts: scores [B, Hkv, Sq, G, Sk] in f32, masked to float32 lowest,
 * softmax in f32, probabilities cast to v's dtype for the value product. q [B, S, Hq, D], k/v [B, S, Hkv, D];
 * query head h uses KV head floor(h / G), G = Hq / Hkv, so K and V are never repeated. Returns [B, S, Hq, D].
 */
export function plainAttention(q: Tensor, k: Tensor, v: Tensor, opts: AttentionOpts): Tensor {
  const { B, S, Hkv, G, D } = checkInputs("plainAttention", q, k, v, opts.segmentIds);
  const q5 = q.reshape([B, S, Hkv, G, D]);
  const scores = tx
    .dotGeneral(q5, k, { lhsBatch: [0, 2], rhsBatch: [0, 2], lhsContract: [4], rhsContract: [3], outDtype: "f32" })
    .mul(1 / Math.sqrt(D));
  const mask = attentionMask(opts, tx.iota([S, S], 0), tx.iota([S, S], 1), opts.segmentIds, opts.segmentIds);
  const masked = mask ? tx.where(mask.reshape([mask.ndim === 3 ? B : 1, 1, S, 1, S]), scores, MASKED) : scores;
  const p = tx.nn.softmax(masked, -1).astype(v.dtype);
  // [B, Hkv, Sq, G, D] -> [B, Sq, Hkv, G, D]
  return tx
    .dotGeneral(p, v, { lhsBatch: [0, 1], rhsBatch: [0, 2], lhsContract: [4], rhsContract: [1], outDtype: "f32" })
    .astype(q.dtype)
    .transpose([0, 2, 1, 3, 4])
    .reshape([B, S, Hkv * G, D]);
}

/**
 * Which (query, key) pairs may attend, from positions qPos/kPos [Sq, Sk] and segment ids [B, Sq] / [B, Sk]:
 * [Sq, Sk] (causal only), [B, Sq, Sk] (with segments), or undefined when everything is visible.
 */
function attentionMask(
  opts: AttentionOpts,
  qPos: Tensor,
  kPos: Tensor,
  qSeg: Tensor | undefined,
  kSeg: Tensor | undefined,
): Tensor | undefined {
  let mask = opts.causal ? qPos.ge(kPos) : undefined;
  if (qSeg && kSeg) {
    const [B, Sq] = qSeg.shape as [number, number];
    const same = qSeg.reshape([B, Sq, 1]).eq(kSeg.reshape([B, 1, kSeg.shape[1]!]));
    mask = mask ? tx.logicalAnd(mask.reshape([1, ...mask.shape]), same) : same;
  }
  return mask;
}

/** x's max along the last axis (at least M_INIT) as a shift through which no gradient flows. */
function shiftOf(x: Tensor): Tensor {
  return tx.stopGradient(x.max(-1).maximum(M_INIT));
}

/**
 * Flash attention: the same result as plainAttention (same layouts, GQA, causal mask, segment ids) without ever
 * holding more than a [B, Hkv, blockQ, G, blockK] block of scores. An outer scan walks query blocks; for each, an
 * inner scan walks key blocks keeping the running max m, the running sum l of exp(score - m), and the
 * accumulator of exp(score - m) @ v (the online softmax), rescaling both when m grows; the block's output is
 * acc / l. S is padded up to a multiple of each block size with keys that are masked out and queries whose rows
 * are dropped, so the blocks need not divide S.
 *
 * The max shift is behind stopGradient, so autodiff treats it as a constant: the result does not depend on it, and
 * the backward pass then needs no mask of where each row reached its max. Gradients come from autodiff through both
 * scans: the backward scans recompute each block's
 * scores from the saved carries, so memory stays O(S·block) per (batch, head) rather than O(S²): the inner scan
 * saves its carries (m, l [blockQ, G] and acc [blockQ, G, D] per key block) for one query block at a time.
 * estimateMemory of forward + dq/dk/dv (32 query over 8 KV heads, D 128, f32, blocks of 128): 93 MiB of
 * temporaries at S=1024 and 322 MiB at S=4096, against plain attention's 420 MiB and 6288 MiB.
 * Under the causal mask the key blocks above the diagonal are still computed (then fully masked): scans have a
 * fixed trip count, so causal attention costs the FLOPs of the full matrix.
 *
 * Rows that see no key at all (only padding rows: under the causal mask or segments every query sees itself)
 * come out 0 instead of plain attention's uniform average.
 */
export function blockwiseAttention(q: Tensor, k: Tensor, v: Tensor, opts: BlockwiseOpts): Tensor {
  const op = "blockwiseAttention";
  const { B, S, Hkv, G, D } = checkInputs(op, q, k, v, opts.segmentIds);
  const bq = Math.min(opts.blockQ ?? DEFAULT_BLOCK, S);
  const bk = Math.min(opts.blockK ?? DEFAULT_BLOCK, S);
  for (const [name, b] of [
    ["blockQ", opts.blockQ],
    ["blockK", opts.blockK],
  ] as const) {
    if (b !== undefined && !(Number.isInteger(b) && b >= 1))
      throw new TraceError(op, `${name} must be a positive integer, got ${b}`);
  }
  const nQ = Math.ceil(S / bq),
    nK = Math.ceil(S / bk);
  const padTo = (x: Tensor, len: number, value: number) =>
    tx.pad(
      x,
      x.shape.map((_, i) => (i === 1 ? [0, len - S] : [0, 0]) as [number, number]),
      value,
    );
  // Blocks stacked on a leading axis for the scans: [n, B, block, ...].
  const blocks = (x: Tensor, n: number, size: number, value = 0) => {
    const rest = x.shape.slice(2);
    const perm = [1, 0, ...Array.from({ length: rest.length + 1 }, (_, i) => i + 2)];
    return padTo(x, n * size, value)
      .reshape([B, n, size, ...rest])
      .transpose(perm);
  };
  const qBlocks = blocks(q.reshape([B, S, Hkv, G, D]), nQ, bq);
  const kBlocks = blocks(k, nK, bk);
  const vBlocks = blocks(v, nK, bk);
  const seg = opts.segmentIds;
  const qSeg = seg ? blocks(seg, nQ, bq, -1) : undefined;
  const kSeg = seg ? blocks(seg, nK, bk, -1) : undefined;
  const scale = 1 / Math.sqrt(D);

  const queryBlock = (_: null, x: { q: Tensor; i: Tensor; seg?: Tensor }): [null, Tensor] => {
    const qPos = x.i.mul(bq).add(tx.iota([bq, bk], 0));
    const init = {
      m: tx.full([B, Hkv, bq, G], M_INIT, "f32"),
      l: tx.zeros([B, Hkv, bq, G], "f32"),
      acc: tx.zeros([B, Hkv, bq, G, D], "f32"),
    };
    const keyBlock = (c: typeof init, y: { k: Tensor; v: Tensor; j: Tensor; seg?: Tensor }): [typeof init, null] => {
      const s = tx
        .dotGeneral(x.q, y.k, {
          lhsBatch: [0, 2],
          rhsBatch: [0, 2],
          lhsContract: [4],
          rhsContract: [3],
          outDtype: "f32",
        })
        .mul(scale); // [B, Hkv, bq, G, bk]
      const kPos = y.j.mul(bk).add(tx.iota([bq, bk], 1));
      const real = attentionMask(opts, qPos, kPos, x.seg, y.seg);
      const inRange = kPos.lt(S);
      const mask = real ? tx.logicalAnd(real, real.ndim === 3 ? inRange.reshape([1, bq, bk]) : inRange) : inRange;
      const allowed = mask.reshape([mask.ndim === 3 ? B : 1, 1, bq, 1, bk]);
      const sm = tx.where(allowed, s, MASKED);
      const m = c.m.maximum(shiftOf(sm));
      const p = tx.where(allowed, sm.sub(m.reshape([B, Hkv, bq, G, 1])).exp(), 0);
      const corr = c.m.sub(m).exp();
      const pv = tx.dotGeneral(p.astype(v.dtype), y.v, {
        lhsBatch: [0, 1],
        rhsBatch: [0, 2],
        lhsContract: [4],
        rhsContract: [1],
        outDtype: "f32",
      });
      return [
        {
          m,
          l: c.l.mul(corr).add(p.sum(-1)),
          acc: c.acc.mul(corr.reshape([B, Hkv, bq, G, 1])).add(pv),
        },
        null,
      ];
    };
    const ks = { k: kBlocks, v: vBlocks, j: tx.iota([nK], 0), ...(kSeg ? { seg: kSeg } : {}) };
    const [fin] = tx.scan(keyBlock, init, ks);
    const l = tx.where(fin.l.gt(0), fin.l, 1).reshape([B, Hkv, bq, G, 1]);
    // [B, Hkv, bq, G, D] -> [B, bq, Hkv, G, D]
    return [null, fin.acc.div(l).astype(q.dtype).transpose([0, 2, 1, 3, 4])];
  };
  const qs = { q: qBlocks, i: tx.iota([nQ], 0), ...(qSeg ? { seg: qSeg } : {}) };
  const [, out] = tx.scan(queryBlock, null, qs); // [nQ, B, bq, Hkv, G, D]
  return out
    .transpose([1, 0, 2, 3, 4, 5])
    .reshape([B, nQ * bq, Hkv * G, D])
    .slice(null, [0, S]);
}
