// KV-cache decoding for the Llama model: one compiled prefill program and one compiled decode-step program over fixed-size, donated cache buffers.
import { array, jit, tx, type DeviceArray, type Tensor } from "tessera";
import type { LlamaConfig } from "../src/formats/hf_config.ts";
import { sampleNext, type SamplingMode } from "./sampling.ts";
import { castLayer, LINEARS, type LlamaLayers, type LlamaWeights, rmsNorm, swigluOps } from "./llama.ts";
import { ropeContext, ropeParameters } from "./rope.ts";
import { EXIT, TesseraError } from "../src/errors.ts";
import type { Executable } from "../src/backend/runtime/executable.ts";

type DType = Tensor["dtype"];

const MASKED = -3.4028234663852886e38; // float32 lowest, as HF's eager attention mask

/**
 * The cache: keys and values, one buffer per layer, each [B, Hkv, T, D] in the compute dtype (heads before slots, so
 * that attention reads a layer's cache as it lies, with no transposed copy).
 */
export interface KvCache<T = Tensor> {
  k: T[];
  v: T[];
}

/**
 * The weights as the decode programs take them: every layer's own buffers. The programs are unrolled over the layers
 * and read each weight in place. A scan over the stacked [L, ...] weights (as training runs) slices a layer out of
 * them inside the loop, and XLA's CPU backend materializes each slice before its matmul: a copy of all the weights
 * every token, which made decoding memory-bound on those copies.
 *
 * The projections and the head are stored [out, in] (as torch's nn.Linear), not [in, out] as training keeps them: a
 * decode step multiplies a few rows by each weight, and the CPU GEMM call (native/cpu_gemm.cc) then streams each
 * weight row once for all of them, where XLA's dot packs the whole [in, out] matrix for a handful of rows.
 */
export interface DecodeWeights<T = Tensor> {
  embed: T;
  /** Per layer; q, k, v, o, gate, up, down are [out, in]. */
  layers: LlamaLayers<T>[];
  norm: T;
  /** [V, E]. */
  head: T;
}

/** x [.., in] times a weight stored [out, in]: [.., out], accumulated in f32 and rounded to x's dtype. */
function linearT(x: Tensor, wT: Tensor): Tensor {
  return tx.dotGeneral(x, wT, { lhsContract: [x.ndim - 1], rhsContract: [1], outDtype: "f32" }).astype(x.dtype);
}

/** RoPE inputs computed on the host for each call: the frequencies (dynamic NTK moves them as the sequence grows). */
export interface RopeInputs<T = Tensor> {
  invFreq: T;
  scale: T;
}

/** The sampler's runtime knobs; which of them apply is fixed by the program's SamplingMode. */
export interface SamplerInputs<T = Tensor> {
  temperature: T;
  topK: T;
  topP: T;
  key: T;
  /** Which batch of a run this is (s32): folded into the key, so that batches draw independent noise. */
  stream: T;
}

/**
 * Attention of queries q [B, S, Hq, D] over keys/values [B, Hkv, T, D] where `mask` [B, S, T] says which key each
 * query sees, with HF eager numerics (scores in f32 scaled by 1/sqrt(D), masked to f32 lowest, softmax in f32,
 * probabilities cast to v's dtype). Query head h reads KV head floor(h / G).
 */
export function cachedAttention(q: Tensor, k: Tensor, v: Tensor, mask: Tensor): Tensor {
  const [B, S, Hq, D] = q.shape as [number, number, number, number];
  const [Hkv, T] = [k.shape[1]!, k.shape[2]!];
  const G = Hq / Hkv;
  const q5 = q.reshape([B, S, Hkv, G, D]);
  // [B, Hkv, S, G, T]
  const scores = tx
    .dotGeneral(q5, k, { lhsBatch: [0, 2], rhsBatch: [0, 1], lhsContract: [4], rhsContract: [3], outDtype: "f32" })
    .mul(1 / Math.sqrt(D));
  const masked = tx.where(mask.reshape([B, 1, S, 1, T]), scores, MASKED);
  const p = tx.nn.softmax(masked, -1).astype(v.dtype);
  return tx
    .dotGeneral(p, v, { lhsBatch: [0, 1], rhsBatch: [0, 1], lhsContract: [4], rhsContract: [2], outDtype: "f32" })
    .astype(q.dtype)
    .transpose([0, 2, 1, 3, 4])
    .reshape([B, S, Hq, D]);
}

interface LayerStep {
  /** Token positions [B, S] (s32) for RoPE. */
  positions: Tensor;
  /** Cache slot of the first of the S tokens (the same for every row: prompts are left-padded). */
  slot: Tensor | number;
  /** [B, S, T] for attention over the cache, or [B, S, S] over the S new tokens alone (prefill). */
  mask: Tensor;
  /** Attend over the S new keys only (prefill: the cache holds nothing older) instead of the whole cache. */
  local: boolean;
}

/**
 * The decoder layers over hidden states h [B, S, E], unrolled, writing each layer's new keys and values into its
 * cache buffer at `slot` (dynamic_update_slice of a donated argument, which XLA does in place).
 */
function decoderLayers(
  cfg: LlamaConfig,
  w: DecodeWeights,
  h: Tensor,
  cache: KvCache,
  rope: RopeInputs,
  st: LayerStep,
): { h: Tensor; cache: KvCache } {
  const [B, S] = [h.shape[0]!, h.shape[1]!];
  const { numHeads: Hq, numKvHeads: Hkv, headDim: D } = cfg;
  const cdt = h.dtype;
  const [cos, sin] = ropeTables(rope, st.positions, cdt);
  const next: KvCache = { k: [], v: [] };
  let x = h;
  for (const [l, weights] of w.layers.entries())
    tx.namedScope(`layer${l}`, () => {
      const lw = castLayer(weights, cdt);
      const hn = rmsNorm(x, lw.inputNorm, cfg.rmsNormEps);
      const q = applyRopeAt(linearT(hn, lw.q).reshape([B, S, Hq, D]), cos, sin);
      const k = applyRopeAt(linearT(hn, lw.k).reshape([B, S, Hkv, D]), cos, sin).transpose([0, 2, 1, 3]);
      const v = linearT(hn, lw.v).reshape([B, S, Hkv, D]).transpose([0, 2, 1, 3]);
      const at = [0, 0, st.slot, 0];
      const kc = tx.dynamicUpdateSlice(cache.k[l]!, k, at);
      const vc = tx.dynamicUpdateSlice(cache.v[l]!, v, at);
      next.k.push(kc);
      next.v.push(vc);
      const o = st.local ? cachedAttention(q, k, v, st.mask) : cachedAttention(q, kc, vc, st.mask);
      const a = x.add(linearT(o.reshape([B, S, Hq * D]), lw.o));
      const m = rmsNorm(a, lw.postNorm, cfg.rmsNormEps);
      x = a.add(linearT(swigluOps(linearT(m, lw.gate), linearT(m, lw.up)), lw.down));
    });
  return { h: x, cache: next };
}

/**
 * cos and sin [B, S, D] for per-row positions [B, S], as transformers' LlamaRotaryEmbedding: angle = position *
 * inv_freq in f32, the half repeated, times the attention scaling, cast to the compute dtype.
 */
function ropeTables(rope: RopeInputs, positions: Tensor, dt: DType): [Tensor, Tensor] {
  const half = rope.invFreq.shape[0]!;
  const [B, S] = positions.shape as [number, number];
  const freqs = positions
    .astype("f32")
    .reshape([B, S, 1])
    .mul(rope.invFreq.reshape([1, 1, half]));
  const ang = tx.concatenate([freqs, freqs], -1);
  return [ang.cos().mul(rope.scale).astype(dt), ang.sin().mul(rope.scale).astype(dt)];
}

/** HF's rotate-half RoPE with per-row tables: x [B, S, H, D], cos/sin [B, S, D] in x's dtype. */
function applyRopeAt(x: Tensor, cos: Tensor, sin: Tensor): Tensor {
  const [B, S, , D] = x.shape as [number, number, number, number];
  const [x1, x2] = tx.split(x, 2, -1);
  const rotated = tx.concatenate([x2!.neg(), x1!], -1);
  return x.mul(cos.reshape([B, S, 1, D])).add(rotated.mul(sin.reshape([B, S, 1, D])));
}

/** The last hidden state [B, E] through the final norm and the head: logits [B, V] in f32. */
function headLogits(w: DecodeWeights, h: Tensor, eps: number): Tensor {
  const hn = rmsNorm(h, w.norm.astype(h.dtype), eps);
  return tx.dotGeneral(hn, w.head.astype(h.dtype), { lhsContract: [1], rhsContract: [1], outDtype: "f32" });
}

/**
 * Prefill: prompts left-padded to P tokens (`pad` [B] = each row's count of padding), run through every layer,
 * their keys and values written to cache slots [0, P); logits at the last position and the sampled next token.
 */
export function prefillProgram(cfg: LlamaConfig, mode: SamplingMode, compute: DType) {
  return function prefill(
    w: DecodeWeights,
    cache: KvCache,
    tokens: Tensor,
    pad: Tensor,
    rope: RopeInputs,
    samp: SamplerInputs,
  ): { cache: KvCache; logits: Tensor; next: Tensor } {
    const [B, P] = tokens.shape as [number, number];
    const s = tx.iota([B, P], 1, "s32");
    const padCol = pad.reshape([B, 1]);
    const positions = tx.maximum(s.sub(padCol), 0);
    // Query s sees keys s' with pad <= s' <= s: causal, and never the padding. A padding query sees itself alone,
    // so that its row stays finite (an all-masked softmax row would be NaN, and NaN keys poison later layers).
    const qi = tx.iota([B, P, P], 1, "s32");
    const ki = tx.iota([B, P, P], 2, "s32");
    const mask = tx.logicalAnd(ki.le(qi), ki.ge(tx.minimum(pad.reshape([B, 1, 1]), qi)));
    const h0 = tx.nn.embedding(w.embed, tokens).astype(compute);
    const out = decoderLayers(cfg, w, h0, cache, rope, { positions, slot: 0, mask, local: true });
    const last = out.h.slice([0, B], [P - 1, P]).reshape([B, out.h.shape[2]!]);
    const logits = headLogits(w, last, cfg.rmsNormEps);
    const next = sampleNext(logits, samp, mode, tx.random.foldIn(tx.random.foldIn(samp.key, samp.stream), 0));
    return { cache: out.cache, logits, next };
  };
}

/**
 * One decode step: one token per row written at cache slot `slot` (the same for every row), attending over the
 * cache slots pad <= j <= slot. Logits [B, V] and the sampled next token.
 */
export function stepProgram(cfg: LlamaConfig, mode: SamplingMode, compute: DType, promptLen: number) {
  return function decodeStep(
    w: DecodeWeights,
    cache: KvCache,
    tokens: Tensor,
    slot: Tensor,
    pad: Tensor,
    rope: RopeInputs,
    samp: SamplerInputs,
  ): { cache: KvCache; logits: Tensor; next: Tensor } {
    const B = tokens.shape[0]!;
    const T = cache.k[0]!.shape[2]!;
    const positions = slot.reshape([1, 1]).sub(pad.reshape([B, 1]));
    const j = tx.iota([B, 1, T], 2, "s32");
    const mask = tx.logicalAnd(j.le(slot), j.ge(pad.reshape([B, 1, 1])));
    const h0 = tx.nn.embedding(w.embed, tokens.reshape([B, 1])).astype(compute);
    const out = decoderLayers(cfg, w, h0, cache, rope, { positions, slot, mask, local: false });
    const logits = headLogits(w, out.h.reshape([B, out.h.shape[2]!]), cfg.rmsNormEps);
    // The n-th new token draws with key fold_in(seed key, n), whatever the prompt bucket.
    const next = sampleNext(
      logits,
      samp,
      mode,
      tx.random.foldIn(tx.random.foldIn(samp.key, samp.stream), slot.sub(promptLen - 1)),
    );
    return { cache: out.cache, logits, next };
  };
}

export interface DecoderShape {
  /** Rows decoded together. */
  batch: number;
  /** Prompt bucket: every prompt is left-padded to this many tokens. */
  promptLen: number;
  /** Cache slots: the prompt bucket plus the new tokens (at most the model's context). */
  maxLen: number;
}

export interface SamplingOptions {
  /** 0: greedy (argmax). Otherwise logits are divided by it and a token is drawn. */
  temperature: number;
  /** Keep the k most likely tokens (0: off), as HF's TopKLogitsWarper. */
  topK: number;
  /** Keep the smallest set of most likely tokens whose probability reaches p (1: off), as HF's TopPLogitsWarper. */
  topP: number;
  seed: number;
}

export const GREEDY: SamplingOptions = Object.freeze({ temperature: 0, topK: 0, topP: 1, seed: 0 });

function samplingMode(s: SamplingOptions): SamplingMode {
  if (s.temperature === 0) return { kind: "greedy" };
  return { kind: "sample", topK: s.topK > 0, topP: s.topP < 1 };
}

/** The output of one row: generated ids (the EOS included when it stopped on one) and why it stopped. */
export interface GeneratedRow {
  outputIds: number[];
  finish: "eos" | "length";
}

export interface GenerateOptions {
  maxNewTokens: number;
  /** Ids that end a row (the model's EOS tokens); the EOS is kept in the output. */
  eosIds: readonly number[];
  /** Called after every step with the new token of each row still running (undefined for finished rows). */
  onTokens?: (tokens: (number | undefined)[]) => void;
  /** The batch's index in a run (default 0): sampled batches with different indices draw independently. */
  stream?: number;
  /** Called with each step's logits [B, V] (tests compare them with a full forward pass). */
  onLogits?: (logits: Float32Array, step: number) => void;
}

export interface GenerateStats {
  prefillSeconds: number;
  /** Decode steps run (after the prefill), and their time. */
  decodeSteps: number;
  decodeSeconds: number;
}

const PROJECTIONS = new Set<string>(LINEARS);

/**
 * Stacked [L, ...] layer weights as L trees of per-layer buffers, projections transposed to [out, in], and the head
 * [E, V] as [V, E]: DecodeWeights' layout, in one program per layer count and dtype.
 */
const unstack = jit((layers: LlamaLayers, head: Tensor) => ({
  layers: Array.from({ length: layers.q.shape[0]! }, (_, l) =>
    Object.fromEntries(
      Object.entries(layers).map(([name, t]) => [
        name,
        PROJECTIONS.has(name) ? (t as Tensor).slice(l).transpose([1, 0]) : (t as Tensor).slice(l),
      ]),
    ),
  ) as unknown as LlamaLayers[],
  head: head.transpose([1, 0]),
}));

const unstacked = new WeakMap<LlamaWeights<DeviceArray>, Promise<DecodeWeights<DeviceArray>>>();

/**
 * The weights in the decoder's layout: stacked weights (as loaded, merged or trained) are unstacked once on the
 * device, remembered per weights object; weights already per layer are returned as they are. The unstacked copy
 * holds the layers a second time while the stacked one lives (loadGenerator keeps only this one).
 */
export function decodeWeights(
  w: LlamaWeights<DeviceArray> | DecodeWeights<DeviceArray>,
): Promise<DecodeWeights<DeviceArray>> {
  if (Array.isArray(w.layers)) return Promise.resolve(w as DecodeWeights<DeviceArray>);
  const stacked = w as LlamaWeights<DeviceArray>;
  let p = unstacked.get(stacked);
  if (!p) {
    const run = unstack as unknown as (
      l: LlamaLayers<DeviceArray>,
      head: DeviceArray,
    ) => Promise<{ layers: LlamaLayers<DeviceArray>[]; head: DeviceArray }>;
    p = run(stacked.layers, stacked.head).then(({ layers, head }) => ({ embed: w.embed, layers, norm: w.norm, head }));
    unstacked.set(stacked, p);
  }
  return p;
}

/**
 * A Llama with its weights on the device, ready to decode batches of `shape` with one sampling setting. The cache
 * buffers live here and are donated to each program call, which returns them updated: one prefill and one step
 * program are compiled (on first use) and then reused for every token and every batch.
 */
export class LlamaDecoder {
  readonly compute: DType;
  private cache: KvCache<DeviceArray>;
  private readonly layerWeights: Promise<DecodeWeights<DeviceArray>>;
  private readonly prefillFn;
  private readonly stepFn;
  private readonly sampler: Omit<SamplerInputs<DeviceArray>, "stream">;
  private readonly mode: SamplingMode;

  constructor(
    readonly cfg: LlamaConfig,
    weights: LlamaWeights<DeviceArray> | DecodeWeights<DeviceArray>,
    readonly shape: DecoderShape,
    readonly sampling: SamplingOptions = GREEDY,
  ) {
    const { promptLen: P, maxLen: T } = shape;
    // One row per prompt, batch 1 included: with the weights read in place, XLA's one-row (matrix-vector) products
    // decoded SmolLM2 1.6-1.8x faster than padding to two rows, which the scanned decoder had needed.
    const B = shape.batch;
    if (!(P >= 1 && T > P))
      throw new TesseraError(`decoder shape: need 1 <= promptLen < maxLen, got ${P} and ${T}`, {
        code: "ERR_CONFIG",
        exitCode: EXIT.usage,
      });
    const context = ropeContext(cfg);
    if (T > context)
      throw new TesseraError(`decoder shape: ${T} cache slots exceed the model's context of ${context} tokens`, {
        code: "ERR_CONTEXT",
      });
    this.compute = weights.embed.dtype === "bf16" ? "bf16" : "f32";
    this.layerWeights = decodeWeights(weights);
    const cacheShape = [B, cfg.numKvHeads, T, cfg.headDim];
    const n = B * T * cfg.numKvHeads * cfg.headDim;
    const zeros = () =>
      Array.from({ length: cfg.numLayers }, () =>
        this.compute === "bf16"
          ? array(new Uint16Array(n), { dtype: "bf16", shape: cacheShape })
          : array(new Float32Array(n), { shape: cacheShape }),
      );
    this.cache = { k: zeros(), v: zeros() };
    this.mode = samplingMode(sampling);
    this.prefillFn = jit(prefillProgram(cfg, this.mode, this.compute), { donate: 1 });
    this.stepFn = jit(stepProgram(cfg, this.mode, this.compute, P), { donate: 1 });
    this.sampler = {
      temperature: array(new Float32Array([sampling.temperature || 1]), { shape: [] }),
      topK: array(new Int32Array([Math.min(sampling.topK, cfg.vocabSize)]), { shape: [] }),
      topP: array(new Float32Array([sampling.topP]), { shape: [] }),
      key: tx.random.keyArray(sampling.seed),
    };
  }

  /** Programs compiled so far (prefill and step; stays 2 however many tokens and batches run). */
  get compiles(): number {
    return this.prefillFn.cacheSize + this.stepFn.cacheSize;
  }

  /**
   * Compiles both programs now (otherwise the first call does), so that generate's timings are the run alone.
   * Resolves to their executables (cached: calling it again compiles nothing).
   */
  async compile(): Promise<{ prefill: Executable; step: Executable }> {
    const B = this.shape.batch;
    const P = this.shape.promptLen;
    const s32 = (shape: number[]) => tx.spec("s32", shape);
    const rope = { invFreq: tx.spec("f32", [this.cfg.headDim / 2]), scale: tx.spec("f32", []) };
    const samp = { ...this.sampler, stream: s32([]) };
    type Compile = (...a: unknown[]) => Promise<{ executable: Executable }>;
    const prefill = this.prefillFn.compile as unknown as Compile;
    const step = this.stepFn.compile as unknown as Compile;
    const w = await this.layerWeights;
    return {
      prefill: (await prefill(w, this.cache, s32([B, P]), s32([B]), rope, samp)).executable,
      step: (await step(w, this.cache, s32([B]), s32([]), s32([B]), rope, samp)).executable,
    };
  }

  /** RoPE frequencies for a forward pass whose longest row reaches `seqLen` tokens (dynamic NTK depends on it). */
  private rope(seqLen: number): RopeInputs<DeviceArray> {
    const p = ropeParameters(this.cfg, seqLen);
    return { invFreq: array(p.invFreq), scale: array(new Float32Array([p.attentionScaling]), { shape: [] }) };
  }

  /**
   * Generates for up to `batch` prompts (token ids; each at most promptLen long). Rows stop at an EOS id or after
   * maxNewTokens (or when the cache is full); the batch stops when every row has.
   */
  async generate(
    prompts: readonly (readonly number[])[],
    opts: GenerateOptions,
  ): Promise<{ rows: GeneratedRow[]; stats: GenerateStats }> {
    const { promptLen: P, maxLen: T } = this.shape;
    if (prompts.length === 0 || prompts.length > this.shape.batch)
      throw new Error(`LlamaDecoder.generate: 1 to ${this.shape.batch} prompts per call, got ${prompts.length}`);
    const B = this.shape.batch;
    const tokens = new Int32Array(B * P);
    const pad = new Int32Array(B);
    for (let b = 0; b < B; b++) {
      // Rows past the prompts given repeat the first, so that the batch stays full and well-formed.
      const ids = prompts[b] ?? prompts[0]!;
      if (ids.length === 0) throw new Error(`LlamaDecoder.generate: prompt ${b} is empty`);
      if (ids.length > P) throw new Error(`LlamaDecoder.generate: prompt ${b} has ${ids.length} tokens, over ${P}`);
      pad[b] = P - ids.length;
      tokens.set(ids, b * P + pad[b]!);
    }
    const eos = new Set(opts.eosIds);
    const live = prompts.length;
    const rows: GeneratedRow[] = Array.from({ length: live }, () => ({ outputIds: [], finish: "length" }));
    const done = new Array<boolean>(live).fill(false);
    const maxNew = Math.min(opts.maxNewTokens, T - P + 1);
    const longest = Math.max(...prompts.map((p) => p.length));
    const padDev = array(pad, { shape: [B] });
    const sampler = { ...this.sampler, stream: array(new Int32Array([opts.stream ?? 0]), { shape: [] }) };

    const weights = await this.layerWeights;
    const t0 = performance.now();
    let out = await this.prefillFn(
      weights,
      this.cache,
      array(tokens, { shape: [B, P] }),
      padDev,
      this.rope(longest),
      sampler,
    );
    this.cache = out.cache;
    let steps = 0;
    const accept = async (): Promise<Int32Array> => {
      if (opts.onLogits) opts.onLogits((await out.logits.data()) as Float32Array, steps);
      const next = (await out.next.data()) as Int32Array;
      const shown: (number | undefined)[] = [];
      for (let b = 0; b < live; b++) {
        if (done[b]) {
          shown.push(undefined);
          continue;
        }
        const id = next[b]!;
        rows[b]!.outputIds.push(id);
        shown.push(id);
        if (eos.has(id)) {
          done[b] = true;
          rows[b]!.finish = "eos";
        } else if (rows[b]!.outputIds.length >= maxNew) done[b] = true;
      }
      opts.onTokens?.(shown);
      return next;
    };
    let next = await accept();
    const prefillSeconds = (performance.now() - t0) / 1000;
    const t1 = performance.now();
    while (!done.every(Boolean)) {
      const slot = P + steps;
      out = await this.stepFn(
        weights,
        this.cache,
        array(next, { shape: [B] }),
        array(new Int32Array([slot]), { shape: [] }),
        padDev,
        this.rope(longest + steps + 1),
        sampler,
      );
      this.cache = out.cache;
      steps++;
      next = await accept();
    }
    return { rows, stats: { prefillSeconds, decodeSteps: steps, decodeSeconds: (performance.now() - t1) / 1000 } };
  }
}
