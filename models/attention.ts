// Scaled dot-product attention kernels in the DSL: plain (materialized scores) and blockwise (flash: online softmax over scans).
import { tx, type Tensor } from "tessera";
import { TraceError } from "../src/frontend/errors.ts";
import { bind } from "../src/frontend/core.ts";

/**
 * How attention runs: "plain" materializes every [S, S] score matrix; "blockwise" streams key blocks through an
 * online softmax (memory O(S·block)); "cudnn" is XLA's cuDNN flash-attention custom call (CUDA backends only).
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
 * tx.nn.softmax over the last axis, differentiated as p * (g - rowsum(g * p)) from its output alone (JAX's
 * softmax VJP). Autodiff of exp / sum would keep both exp(s - max) and p for the backward: in a layer scan,
 * two [B, Hkv, S, G, S] stacks per layer instead of one (p is kept anyway for the value product).
 */
const softmaxKeepingOutput = tx.customVjp((s: Tensor) => tx.nn.softmax(s, -1), {
  fwd: (s: Tensor) => {
    const p = tx.nn.softmax(s, -1);
    return [p, p];
  },
  bwd: (p: Tensor, g: Tensor) => [p.mul(g.sub(g.mul(p).sum(-1, { keepdims: true })))],
});

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
  const p = softmaxKeepingOutput(masked).astype(v.dtype);
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
 * The (query block, key block) pairs flash attention visits. Under the causal mask a key block that starts after
 * the query block's last row holds only masked scores and is left out, about half of them for long S. `byQuery`
 * orders them query block by query block (the forward's online softmax), else key block by key block (the
 * backward's dK/dV accumulation); `first` marks the first pair of each group, where the accumulators restart.
 */
export function blockPairs(
  nQ: number,
  nK: number,
  bq: number,
  bk: number,
  causal: boolean,
  byQuery: boolean,
): { i: number[]; j: number[]; first: boolean[] } {
  const live = (i: number, j: number) => !causal || j * bk <= i * bq + bq - 1;
  const i: number[] = [],
    j: number[] = [],
    first: boolean[] = [];
  const [nOuter, nInner] = byQuery ? [nQ, nK] : [nK, nQ];
  for (let a = 0; a < nOuter; a++) {
    let started = false;
    for (let b = 0; b < nInner; b++) {
      const [qi, kj] = byQuery ? [a, b] : [b, a];
      if (!live(qi, kj)) continue;
      i.push(qi);
      j.push(kj);
      first.push(!started);
      started = true;
    }
  }
  return { i, j, first };
}

/**
 * Flash attention: the same result as plainAttention (same layouts, GQA, causal mask, segment ids) without ever
 * holding more than a [B, Hkv, blockQ, G, blockK] block of scores. One scan walks the live (query block, key block)
 * pairs of blockPairs, query block by query block, keeping the running max m, the running sum l of exp(score - m)
 * and the accumulator of exp(score - m) @ v (the online softmax), rescaling both when m grows, and writing
 * acc / l and the rows' logsumexp m + log l into the output at the query block. S is padded up to a multiple of
 * each block size with keys that are masked out and queries whose rows are dropped, so the blocks need not divide
 * S. Under the causal mask the key blocks above the diagonal are not visited: the scan's trip count is the number
 * of live pairs, nQ·(nQ+1)/2 rather than nQ² for equal blocks, so causal attention costs about half the FLOPs.
 *
 * The backward is FlashAttention-2's (a customVjp): the forward saves only its output and the logsumexp per query
 * row; the backward recomputes each block's probabilities P = exp(scores - lse) and, with D = rowsum(dO ∘ O),
 * dS = P ∘ (dO·Vᵀ − D), accumulates dK = dSᵀQ and dV = PᵀdO over the query blocks of one key block (in the carry)
 * and dQ = dS·K into a [B, S, Hq, D] f32 accumulator, in a second scan over the same live pairs, key block by
 * key block. Nothing per block is saved between the passes, so the memory of forward + backward is O(S·D) plus a
 * few blocks. An outer grad (grad of grad) differentiates these two scans as ordinary code. At S=4096 (32 query
 * over 8 KV heads, D 128, f32, blocks of 128, causal) XLA's CPU compile of dq/dk/dv holds 74 MiB of temporaries
 * (the saved output, 64 MiB, then dq's accumulator in its place), and the cost model counts 501 GFLOPs for value
 * and gradients, against 1253 for the former autodiff through nested scans without block skipping (which held
 * 51 MiB there: it saved no output, recomputing the whole forward inside the backward instead).
 *
 * Rows that see no key at all (only padding rows: under the causal mask or segments every query sees itself)
 * come out 0 instead of plain attention's uniform average.
 */
export function blockwiseAttention(q: Tensor, k: Tensor, v: Tensor, opts: BlockwiseOpts): Tensor {
  const op = "blockwiseAttention";
  const { B, S, Hkv, G, D } = checkInputs(op, q, k, v, opts.segmentIds);
  for (const [name, b] of [
    ["blockQ", opts.blockQ],
    ["blockK", opts.blockK],
  ] as const) {
    if (b !== undefined && !(Number.isInteger(b) && b >= 1))
      throw new TraceError(op, `${name} must be a positive integer, got ${b}`);
  }
  const bq = Math.min(opts.blockQ ?? DEFAULT_BLOCK, S);
  const bk = Math.min(opts.blockK ?? DEFAULT_BLOCK, S);
  const f: Flash = { B, S, Hkv, G, D, bq, bk, nQ: Math.ceil(S / bq), nK: Math.ceil(S / bk), causal: opts.causal };
  const seg = opts.segmentIds;
  // The segment ids are closed over: integers get no gradient.
  const attend = tx.customVjp((q: Tensor, k: Tensor, v: Tensor) => flashForward(f, q, k, v, seg).out, {
    fwd: (q: Tensor, k: Tensor, v: Tensor) => {
      const { out, lse } = flashForward(f, q, k, v, seg);
      return [out, { q, k, v, out, lse }];
    },
    bwd: (r, dOut: Tensor) => flashBackward(f, r.q, r.k, r.v, seg, r.out, r.lse, dOut),
  });
  return attend(q, k, v);
}

interface Flash extends Dims {
  bq: number;
  bk: number;
  nQ: number;
  nK: number;
  causal: boolean;
}

/** x [B, S, ...] padded on axis 1 to `len` with `value` (x itself when no padding is needed: no copy). */
function padSeq(x: Tensor, S: number, len: number, value = 0): Tensor {
  if (len === S) return x;
  return tx.pad(
    x,
    x.shape.map((_, i) => (i === 1 ? [0, len - S] : [0, 0]) as [number, number]),
    value,
  );
}

/** x's first S rows (axis 1). */
function unpad(x: Tensor, S: number): Tensor {
  return x.shape[1] === S ? x : x.slice(null, [0, S]);
}

/** The `size` rows of x [B, Spad, ...] from `start` (a traced s32 scalar) on. */
function rows(x: Tensor, start: Tensor, size: number): Tensor {
  return tx.dynamicSlice(
    x,
    x.shape.map((_, a) => (a === 1 ? start : 0)),
    x.shape.map((n, a) => (a === 1 ? size : n)),
  );
}

/** x with `update` written over its rows (axis 1) from `start` on. */
function writeRows(x: Tensor, update: Tensor, start: Tensor): Tensor {
  return tx.dynamicUpdateSlice(
    x,
    update,
    x.shape.map((_, a) => (a === 1 ? start : 0)),
  );
}

/** The pair scan's per-step inputs: block indices and where each group of pairs starts. */
function pairInputs(f: Flash, byQuery: boolean) {
  const p = blockPairs(f.nQ, f.nK, f.bq, f.bk, f.causal, byQuery);
  return {
    i: tx.constant(Int32Array.from(p.i)),
    j: tx.constant(Int32Array.from(p.j)),
    first: tx.constant(p.first),
  };
}

/** The [1 or B, 1, bq, 1, bk] mask of pairs that may attend in query block i and key block j (with padding). */
function blockMask(f: Flash, i: Tensor, j: Tensor, qSeg?: Tensor, kSeg?: Tensor): Tensor {
  const { B, S, bq, bk } = f;
  const qPos = i.mul(bq).add(tx.iota([bq, bk], 0));
  const kPos = j.mul(bk).add(tx.iota([bq, bk], 1));
  const real = attentionMask({ causal: f.causal }, qPos, kPos, qSeg, kSeg);
  const inRange = kPos.lt(S);
  const mask = real ? tx.logicalAnd(real, real.ndim === 3 ? inRange.reshape([1, bq, bk]) : inRange) : inRange;
  return mask.reshape([mask.ndim === 3 ? B : 1, 1, bq, 1, bk]);
}

/** Scores of one block, [B, Hkv, bq, G, bk] f32, from q [B, bq, Hkv, G, D] and k [B, bk, Hkv, D]. */
function blockScores(f: Flash, qb: Tensor, kb: Tensor): Tensor {
  return tx
    .dotGeneral(qb, kb, { lhsBatch: [0, 2], rhsBatch: [0, 2], lhsContract: [4], rhsContract: [3], outDtype: "f32" })
    .mul(1 / Math.sqrt(f.D));
}

/** The forward pass: out [B, S, Hq, D] and the logsumexp of each query row's visible scores, [B, Sq, Hkv, G] f32. */
function flashForward(f: Flash, q: Tensor, k: Tensor, v: Tensor, seg: Tensor | undefined) {
  const { B, S, Hkv, G, D, bq, bk, nQ, nK } = f;
  const Sq = nQ * bq,
    Sk = nK * bk;
  const qp = padSeq(q.reshape([B, S, Hkv, G, D]), S, Sq);
  const kp = padSeq(k, S, Sk);
  const vp = padSeq(v, S, Sk);
  const qSeg = seg ? padSeq(seg, S, Sq, -1) : undefined;
  const kSeg = seg ? padSeq(seg, S, Sk, -1) : undefined;
  const init = {
    m: tx.full([B, Hkv, bq, G], M_INIT, "f32"),
    l: tx.zeros([B, Hkv, bq, G], "f32"),
    acc: tx.zeros([B, Hkv, bq, G, D], "f32"),
    out: tx.zeros([B, Sq, Hkv, G, D], q.dtype),
    lse: tx.zeros([B, Sq, Hkv, G], "f32"),
  };
  const step = (c: typeof init, x: { i: Tensor; j: Tensor; first: Tensor }): [typeof init, null] => {
    const qStart = x.i.mul(bq),
      kStart = x.j.mul(bk);
    // A new query block restarts the online softmax.
    const m0 = tx.where(x.first, M_INIT, c.m);
    const l0 = tx.where(x.first, 0, c.l);
    const acc0 = tx.where(x.first, 0, c.acc);
    const s = blockScores(f, rows(qp, qStart, bq), rows(kp, kStart, bk));
    const allowed = blockMask(f, x.i, x.j, qSeg && rows(qSeg, qStart, bq), kSeg && rows(kSeg, kStart, bk));
    const sm = tx.where(allowed, s, MASKED);
    const m = m0.maximum(shiftOf(sm));
    const p = tx.where(allowed, sm.sub(m.reshape([B, Hkv, bq, G, 1])).exp(), 0);
    const corr = m0.sub(m).exp();
    const pv = tx.dotGeneral(p.astype(v.dtype), rows(vp, kStart, bk), {
      lhsBatch: [0, 1],
      rhsBatch: [0, 2],
      lhsContract: [4],
      rhsContract: [1],
      outDtype: "f32",
    });
    const l = l0.mul(corr).add(p.sum(-1));
    const acc = acc0.mul(corr.reshape([B, Hkv, bq, G, 1])).add(pv);
    // The block's rows as they stand; the last pair of the query block writes the final ones.
    const seen = l.gt(0);
    const o = acc.div(tx.where(seen, l, 1).reshape([B, Hkv, bq, G, 1])).astype(q.dtype);
    const lse = tx.where(seen, m.add(tx.where(seen, l, 1).log()), 0);
    return [
      {
        m,
        l,
        acc,
        out: writeRows(c.out, o.transpose([0, 2, 1, 3, 4]), qStart),
        lse: writeRows(c.lse, lse.transpose([0, 2, 1, 3]), qStart),
      },
      null,
    ];
  };
  const [fin] = tx.scan(step, init, pairInputs(f, true));
  return { out: unpad(fin.out, S).reshape([B, S, Hkv * G, D]), lse: fin.lse };
}

/** FlashAttention-2's backward: [dq, dk, dv] from the inputs, the output, its row logsumexps and dOut. */
function flashBackward(
  f: Flash,
  q: Tensor,
  k: Tensor,
  v: Tensor,
  seg: Tensor | undefined,
  out: Tensor,
  lse: Tensor,
  dOut: Tensor,
): [Tensor, Tensor, Tensor] {
  const { B, S, Hkv, G, D, bq, bk, nQ, nK } = f;
  const Sq = nQ * bq,
    Sk = nK * bk;
  const scale = 1 / Math.sqrt(D);
  const q5 = q.reshape([B, S, Hkv, G, D]);
  const dO5 = dOut.reshape([B, S, Hkv, G, D]);
  // D_i = rowsum(dO ∘ O): the softmax Jacobian's correction, [B, Sq, Hkv, G] f32. A dot with every other dim
  // batched, so XLA never stores the product dO ∘ O (a multiply then reduce did: [B, S, Hq, D] f32).
  const delta = padSeq(
    tx.dotGeneral(dO5, out.reshape([B, S, Hkv, G, D]), {
      lhsBatch: [0, 1, 2, 3],
      rhsBatch: [0, 1, 2, 3],
      lhsContract: [4],
      rhsContract: [4],
      outDtype: "f32",
    }),
    S,
    Sq,
  );
  const qp = padSeq(q5, S, Sq);
  const dOp = padSeq(dO5, S, Sq);
  const kp = padSeq(k, S, Sk);
  const vp = padSeq(v, S, Sk);
  const qSeg = seg ? padSeq(seg, S, Sq, -1) : undefined;
  const kSeg = seg ? padSeq(seg, S, Sk, -1) : undefined;
  const init = {
    dkAcc: tx.zeros([B, Hkv, bk, D], "f32"),
    dvAcc: tx.zeros([B, Hkv, bk, D], "f32"),
    dq: tx.zeros([B, Sq, Hkv, G, D], "f32"),
    // Each key block's rows are final once its last pair has run (pairs go key block by key block): they are
    // stored in k's dtype, the cast the result gets anyway, so no [B, S, Hkv, D] f32 pair is held.
    dk: tx.zeros([B, Sk, Hkv, D], k.dtype),
    dv: tx.zeros([B, Sk, Hkv, D], v.dtype),
  };
  const step = (c: typeof init, x: { i: Tensor; j: Tensor; first: Tensor }): [typeof init, null] => {
    const qStart = x.i.mul(bq),
      kStart = x.j.mul(bk);
    const qb = rows(qp, qStart, bq);
    const dOb = rows(dOp, qStart, bq);
    const kb = rows(kp, kStart, bk);
    const vb = rows(vp, kStart, bk);
    // [B, bq, Hkv, G] -> [B, Hkv, bq, G, 1]
    const col = (t: Tensor) => rows(t, qStart, bq).transpose([0, 2, 1, 3]).reshape([B, Hkv, bq, G, 1]);
    const allowed = blockMask(f, x.i, x.j, qSeg && rows(qSeg, qStart, bq), kSeg && rows(kSeg, kStart, bk));
    const p = tx.where(allowed, blockScores(f, qb, kb).sub(col(lse)).exp(), 0); // [B, Hkv, bq, G, bk]
    // dV_j += Pᵀ dO_i, summed over the block's rows and the group's heads: [B, Hkv, bk, D]
    const dv = tx.dotGeneral(p.astype(dOut.dtype), dOb, {
      lhsBatch: [0, 1],
      rhsBatch: [0, 2],
      lhsContract: [2, 3],
      rhsContract: [1, 3],
      outDtype: "f32",
    });
    const dp = tx.dotGeneral(dOb, vb, {
      lhsBatch: [0, 2],
      rhsBatch: [0, 2],
      lhsContract: [4],
      rhsContract: [3],
      outDtype: "f32",
    }); // [B, Hkv, bq, G, bk]
    // The gradient of the scaled scores, carried back through the 1/sqrt(D) scale.
    const ds = p.mul(dp.sub(col(delta))).mul(scale);
    const dsq = ds.astype(q.dtype);
    const dqBlock = tx.dotGeneral(dsq, kb, {
      lhsBatch: [0, 1],
      rhsBatch: [0, 2],
      lhsContract: [4],
      rhsContract: [1],
      outDtype: "f32",
    }); // [B, Hkv, bq, G, D]
    const dk = tx.dotGeneral(dsq, qb, {
      lhsBatch: [0, 1],
      rhsBatch: [0, 2],
      lhsContract: [2, 3],
      rhsContract: [1, 3],
      outDtype: "f32",
    }); // [B, Hkv, bk, D]
    const dkAcc = tx.where(x.first, 0, c.dkAcc).add(dk);
    const dvAcc = tx.where(x.first, 0, c.dvAcc).add(dv);
    const dqOld = rows(c.dq, qStart, bq);
    return [
      {
        dkAcc,
        dvAcc,
        dq: writeRows(c.dq, dqOld.add(dqBlock.transpose([0, 2, 1, 3, 4])), qStart),
        dk: writeRows(c.dk, dkAcc.transpose([0, 2, 1, 3]).astype(k.dtype), kStart),
        dv: writeRows(c.dv, dvAcc.transpose([0, 2, 1, 3]).astype(v.dtype), kStart),
      },
      null,
    ];
  };
  const [fin] = tx.scan(step, init, pairInputs(f, false));
  return [
    unpad(fin.dq, S)
      .reshape([B, S, Hkv * G, D])
      .astype(q.dtype),
    unpad(fin.dk, S),
    unpad(fin.dv, S),
  ];
}

/**
 * cuDNN flash attention (CUDA only): the custom calls `__cudnn$fmhaSoftmax` and `__cudnn$fmhaSoftmaxBackward`
 * exactly as JAX lowers jax.nn.dot_product_attention(q, k, v, is_causal, implementation="cudnn") for the cuda
 * platform, q [B, S, Hq, D] and k, v [B, S, Hkv, D] (GQA as in plainAttention) in bf16 or f16, scale 1/sqrt(D).
 * A customVjp: the forward (with its softmax stats when differentiated) is one custom call, its VJP the backward
 * custom call on (q, k, v, stats, dO, O). No backend but XLA's CUDA one runs it; segment ids are refused (cuDNN
 * would need them as sequence offsets).
 */
export function cudnnAttention(q: Tensor, k: Tensor, v: Tensor, opts: AttentionOpts): Tensor {
  const op = "cudnnAttention";
  const { D } = checkInputs(op, q, k, v, opts.segmentIds);
  if (opts.segmentIds)
    throw new TraceError(op, "segment ids (packed sequences) are not supported: use blockwise or plain attention");
  if (q.dtype !== "bf16" && q.dtype !== "f16")
    throw new TraceError(op, `cuDNN flash attention takes bf16 or f16 q, k and v, got ${q.dtype}`, [q.type]);
  const params = { scale: [1 / Math.sqrt(D)], causal: opts.causal };
  // [B, N, T, H] -> [B, T, N, H]: free, the custom call lays its results out as BTNH.
  const btnh = (x: Tensor) => x.transpose([0, 2, 1, 3]);
  const attend = tx.customVjp(
    (q: Tensor, k: Tensor, v: Tensor) => btnh(bind("cudnn_fmha", [q, k, v], { ...params, stats: false })[0]!),
    {
      fwd: (q: Tensor, k: Tensor, v: Tensor) => {
        const [o, stats] = bind("cudnn_fmha", [q, k, v], { ...params, stats: true }) as [Tensor, Tensor];
        const out = btnh(o);
        return [out, { q, k, v, stats, out }];
      },
      bwd: (r, dOut: Tensor) =>
        bind("cudnn_fmha_bwd", [r.q, r.k, r.v, r.stats, dOut.astype(r.q.dtype), r.out], params).map(btnh),
    },
  );
  return attend(q, k, v);
}
