// Llama-2 in the Tessera DSL, as a user writes it: RMSNorm, HF rotate-half RoPE, GQA causal attention (plain or blockwise), SwiGLU MLP.
import { tx, type Tensor, type TensorSpec } from "tessera";
import {
  LLAMA2_13B,
  LLAMA2_70B,
  LLAMA2_7B,
  LLAMA_PRESETS,
  LLAMA_TINY_A,
  linearFeatures,
  loadLlamaConfig,
  parseLlamaConfig,
  type LlamaConfig,
  type LlamaLinear,
} from "../src/formats/hf_config.ts";
import { loraDelta, type LoraLayout, type LoraWeights } from "./lora.ts";
import { ropeTables, ropeTablesAt } from "./rope.ts";
import { matmulF32Acc } from "./stable.ts";
import {
  type AttentionImpl,
  blockwiseAttention,
  cudnnAttention,
  DEFAULT_BLOCK,
  ATTENTION_IMPLS,
  defaultAttention,
  plainAttention,
} from "./attention.ts";
import { EXIT, TesseraError } from "../src/errors.ts";

export {
  LLAMA2_7B,
  LLAMA2_13B,
  LLAMA2_70B,
  LLAMA_TINY_A,
  loadLlamaConfig,
  parseLlamaConfig,
  type LlamaConfig,
  type LlamaLinear,
};
export { ropeInvFreq, ropeTables } from "./rope.ts";

type DType = Tensor["dtype"];

/** A small Llama for tests and examples: GQA (4 query heads over 2 KV heads), every shape distinct. */
export const LLAMA_TINY: LlamaConfig = Object.freeze({
  vocabSize: 96,
  hiddenSize: 32,
  intermediateSize: 40,
  numLayers: 2,
  numHeads: 4,
  numKvHeads: 2,
  headDim: 8,
  rmsNormEps: 1e-6,
  ropeTheta: 500000,
  maxPositionEmbeddings: 64,
  tieWordEmbeddings: false,
});

/** Named configurations for `llamaConfig(name)`: Llama-2 7B/13B/70B, the fixture's shape and LLAMA_TINY. */
export const PRESETS: Readonly<Record<string, LlamaConfig>> = Object.freeze({ ...LLAMA_PRESETS, tiny: LLAMA_TINY });

/** A preset by name, or the config.json of an HF checkpoint directory (or file). */
export async function llamaConfig(nameOrPath: string): Promise<LlamaConfig> {
  const preset = PRESETS[nameOrPath];
  return preset ?? loadLlamaConfig(nameOrPath);
}

/**
 * One decoder layer's weights, stacked over layers on axis 0 so the layers run as one `scan`. Linear weights are
 * [L, in, out] (HF's [out, in] transposed once at load) so that a projection is `x @ w`.
 */
export interface LlamaLayers<T = Tensor> {
  inputNorm: T;
  q: T;
  k: T;
  v: T;
  o: T;
  postNorm: T;
  gate: T;
  up: T;
  down: T;
}

/** The whole model's weights as a plain tree: embed [V, E], stacked layers, final norm [E], head [E, V]. */
export interface LlamaWeights<T = Tensor> {
  embed: T;
  layers: LlamaLayers<T>;
  norm: T;
  head: T;
}

export const LINEARS: readonly LlamaLinear[] = ["q", "k", "v", "o", "gate", "up", "down"];

/** The shape of every weight for `cfg`, in Tessera's layout. */
export function llamaShapes(cfg: LlamaConfig): LlamaWeights<number[]> {
  const L = cfg.numLayers,
    E = cfg.hiddenSize;
  const f = linearFeatures(cfg);
  const lin = (m: LlamaLinear) => [L, f[m].in, f[m].out];
  return {
    embed: [cfg.vocabSize, E],
    layers: {
      inputNorm: [L, E],
      q: lin("q"),
      k: lin("k"),
      v: lin("v"),
      o: lin("o"),
      postNorm: [L, E],
      gate: lin("gate"),
      up: lin("up"),
      down: lin("down"),
    },
    norm: [E],
    head: [E, cfg.vocabSize],
  };
}

/** Abstract weights for tracing: every leaf `dtype`. */
export function llamaSpecs(cfg: LlamaConfig, dtype: DType): LlamaWeights<TensorSpec> {
  const s = llamaShapes(cfg);
  const sp = (shape: number[]) => tx.spec(dtype, shape);
  const l = s.layers;
  return {
    embed: sp(s.embed),
    layers: {
      inputNorm: sp(l.inputNorm),
      q: sp(l.q),
      k: sp(l.k),
      v: sp(l.v),
      o: sp(l.o),
      postNorm: sp(l.postNorm),
      gate: sp(l.gate),
      up: sp(l.up),
      down: sp(l.down),
    },
    norm: sp(s.norm),
    head: sp(s.head),
  };
}

/** HF LlamaRMSNorm: statistics in f32, normalized value cast back to the input dtype, then times the weight. */
export function rmsNorm(x: Tensor, w: Tensor, eps: number): Tensor {
  return tx.nn.rmsNorm(x, { scale: w, eps });
}

/**
 * HF's apply_rotary_pos_emb: x * cos + rotate_half(x) * sin, with rotate_half(x) = [-x2, x1] over the head dim.
 * `x` is [B, S, ..., D]; cos/sin are [S, D] (positions 0..S-1) or [B, S, D] (per-row positions), in x's dtype.
 */
export function applyRope(x: Tensor, cos: Tensor, sin: Tensor): Tensor {
  const D = x.shape[x.ndim - 1]!;
  const rows = cos.ndim === 3 ? x.shape[0]! : 1;
  const shape = [rows, x.shape[1]!, ...Array.from({ length: x.ndim - 3 }, () => 1), D];
  const [x1, x2] = tx.split(x, 2, -1);
  const rotated = tx.concatenate([x2!.neg(), x1!], -1);
  return x.mul(cos.reshape(shape)).add(rotated.mul(sin.reshape(shape)));
}

/** The per-layer LoRA inputs of one linear: factors in their stored dtype and the layer's scale. */
export interface LayerAdapter {
  a: Tensor;
  b: Tensor;
  /** alpha / r for this layer (0 where the adapter does not apply), a number when uniform over layers. */
  scale: Tensor | number;
  dropout: number;
  /** Per-(layer, module) dropout key; present only when dropout is active. */
  key?: Tensor;
}

/** y = x @ w, plus the LoRA path (dropout(x) @ A * scale) @ B when an adapter is attached. */
export function linear(x: Tensor, w: Tensor, ad?: LayerAdapter): Tensor {
  const y = matmulF32Acc(x, w);
  return ad ? y.add(loraDelta(x, ad)) : y;
}

/**
 * Grouped-query causal self-attention (HF eager semantics with "plain"): projections, RoPE, then the attention
 * kernel `impl` (models/attention.ts). Query head h uses KV head floor(h / G), G = Hq / Hkv.
 */
export function attention(
  x: Tensor,
  cfg: LlamaConfig,
  w: LayerView,
  rope: [Tensor, Tensor],
  impl: LlamaAttention,
  ads: LayerAdapters,
  segmentIds?: Tensor,
): Tensor {
  const [B, S] = [x.shape[0]!, x.shape[1]!];
  const D = cfg.headDim,
    Hkv = cfg.numKvHeads;
  const [cos, sin] = rope;
  const q = applyRope(linear(x, w.q, ads.q).reshape([B, S, cfg.numHeads, D]), cos, sin);
  const k = applyRope(linear(x, w.k, ads.k).reshape([B, S, Hkv, D]), cos, sin);
  const v = linear(x, w.v, ads.v).reshape([B, S, Hkv, D]);
  const seg = segmentIds ? { segmentIds } : {};
  const o =
    impl.kind === "blockwise"
      ? blockwiseAttention(q, k, v, { causal: true, blockQ: impl.block, blockK: impl.block, ...seg })
      : impl.kind === "cudnn"
        ? cudnnAttention(q, k, v, { causal: true, ...seg })
        : plainAttention(q, k, v, { causal: true, ...seg });
  return linear(o.reshape([B, S, cfg.numHeads * D]), w.o, ads.o);
}

/** The attention kernel of every layer, resolved from ForwardOpts. */
export type LlamaAttention = { kind: "plain" } | { kind: "cudnn" } | { kind: "blockwise"; block: number };

/**
 * ForwardOpts.attention resolved for sequence length `seq`. "cudnn" traces to XLA's cuDNN custom calls, which only
 * a CUDA backend compiles (train refuses it on others before anything runs; see src/train/plan.ts).
 */
export function resolveAttention(opts: Pick<ForwardOpts, "attention" | "attentionBlock">, seq: number): LlamaAttention {
  const kind = opts.attention ?? defaultAttention(seq);
  // A JS caller or a JSON config can pass any string; one that is no kernel must not quietly run plain attention.
  if (!ATTENTION_IMPLS.includes(kind))
    throw new TesseraError(`attention must be ${ATTENTION_IMPLS.join(", ")}; got '${String(kind)}'`, {
      code: "ERR_CONFIG",
      exitCode: EXIT.usage,
    });
  if (kind === "plain" || kind === "cudnn") return { kind };
  const block = opts.attentionBlock ?? DEFAULT_BLOCK;
  if (!(Number.isInteger(block) && block >= 1))
    throw new TesseraError(`attentionBlock must be a positive integer, got ${block}`, {
      code: "ERR_CONFIG",
      exitCode: EXIT.usage,
    });
  return { kind, block };
}

/** SwiGLU: down(silu(gate(x)) * up(x)), the activation computed in f32 as torch does inside its bf16 kernel. */
export function mlp(x: Tensor, w: LayerView, ads: LayerAdapters, chunk?: number): Tensor {
  const S = x.shape[1]!;
  if (chunk !== undefined && chunk < S && S % chunk === 0) return chunkedMlp(x, w, ads, chunk);
  return linear(swiglu(linear(x, w.gate, ads.gate), linear(x, w.up, ads.up)), w.down, ads.down);
}

/**
 * silu(g) * u, silu in f32 (as torch computes it inside its bf16 kernel), differentiated from g and u alone: the
 * backward recomputes sigmoid(g) and silu(g), which autodiff of the plain ops would keep, two more [B, S, F]
 * stacks per layer in a scan (a custom_vjp nothing differentiates is inlined: the forward is these ops).
 */
export const swigluOps = (g: Tensor, u: Tensor): Tensor => tx.nn.silu(g.astype("f32")).astype(u.dtype).mul(u);
const swiglu = tx.customVjp(swigluOps, {
  fwd: (g: Tensor, u: Tensor) => [swigluOps(g, u), { g, u }],
  bwd: ({ g, u }: { g: Tensor; u: Tensor }, dh: Tensor) => {
    const g32 = g.astype("f32");
    const sig = g32.sigmoid();
    const act = g32.mul(sig).astype(u.dtype);
    // d silu / dg = sigmoid(g) * (1 + g * (1 - sigmoid(g)))
    const dg = dh
      .mul(u)
      .astype("f32")
      .mul(sig.mul(g32.mul(sig.neg().add(1)).add(1)));
    return [dg.astype(g.dtype), dh.mul(act)];
  },
});

/**
 * The MLP over `chunk` positions at a time (a scan over sequence chunks): each position's MLP is independent, so the
 * result is the same, but the [B, S, intermediate] activations of one chunk exist at a time, in the forward and the
 * backward pass. Not with LoRA dropout (its masks are drawn over the whole sequence).
 */
function chunkedMlp(x: Tensor, w: LayerView, ads: LayerAdapters, chunk: number): Tensor {
  const [B, S, E] = x.shape as [number, number, number];
  const n = S / chunk;
  const xs = x.reshape([B, n, chunk, E]).transpose([1, 0, 2, 3]);
  const [, ys] = tx.scan((c: Tensor, xc: Tensor): [Tensor, Tensor] => [c, mlp(xc, w, ads)], tx.zeros([], "f32"), xs);
  return ys.transpose([1, 0, 2, 3]).reshape([B, S, E]);
}

/** One layer's slice of the stacked weights (no leading L axis). */
export type LayerView = LlamaLayers<Tensor>;
export type LayerAdapters = Partial<Record<LlamaLinear, LayerAdapter>>;

export interface ForwardOpts {
  /** A LoRA adapter: its stacked weights (any float dtype; cast to the compute dtype) and static layout. */
  lora?: { weights: LoraWeights; layout: LoraLayout };
  /** Enables LoRA dropout (when the layout's rate > 0); needs `key`. */
  training?: boolean;
  key?: Tensor;
  /** Activation dtype; defaults to the embedding's dtype (bf16 weights run in bf16, f32 in f32). */
  compute?: DType;
  /**
   * How the layers run: one `scan` over the stacked weights (default: one copy of the layer in the program, fast to
   * compile at 32+ layers), or unrolled (each layer its own ops). Either way autodiff keeps every activation
   * unless `remat` says otherwise.
   */
  layers?: "scan" | "unroll";
  /**
   * Rematerialize each layer in the backward pass (tx.checkpoint with this policy): only what the policy saves
   * is kept from the forward pass. Unrolled, nothingSaveable keeps one hidden state per layer instead of every
   * activation. Scanned, as JAX's scan: without a policy the forward scan stacks every residual of the layer (no
   * recomputation); nothingSaveable stacks only the hidden states and the backward scan recomputes each layer from
   * them; a policy that saves (dotsSaveable, names) stacks those values too and skips recomputing them. An array
   * gives each layer its own policy (undefined: none); scanned layers have one body, so it must be uniform.
   */
  remat?: tx.SavePolicy | readonly (tx.SavePolicy | undefined)[];
  /**
   * The attention kernel: "plain" materializes [B, H, S, S] scores (HF eager numerics), "blockwise" is flash
   * attention (memory O(S·block)); default defaultAttention(S): plain up to 1024 tokens, blockwise beyond.
   */
  attention?: AttentionImpl;
  /** Query and key block size of "blockwise" (default 128, capped at S). */
  attentionBlock?: number;
  /**
   * Run each layer's MLP over this many positions at a time (a scan over sequence chunks; must divide S), so its
   * [B, S, intermediate] activations exist one chunk at a time; same result. Default: the whole sequence. Ignored
   * with LoRA dropout in training.
   */
  mlpChunk?: number;
  /**
   * RoPE position of each token, [B, S] s32 (default 0..S-1 in every row): packed rows restart it at each record,
   * so a record sees the positions it would alone.
   */
  positions?: Tensor;
  /**
   * [B, S] s32: a token attends only to earlier tokens of the same segment (packed rows: one id per record), in
   * both attention kernels. Default: one segment per row.
   */
  segmentIds?: Tensor;
}

/** The final hidden states [B, S, E] (after the last RMSNorm) for tokens [B, S]. */
export function llamaHidden(cfg: LlamaConfig, w: LlamaWeights, tokens: Tensor, opts: ForwardOpts = {}): Tensor {
  const [B, S] = [tokens.shape[0]!, tokens.shape[1]!];
  const cdt = opts.compute ?? w.embed.dtype;
  const cast = (t: Tensor) => t.astype(cdt);
  for (const [name, t] of [
    ["positions", opts.positions],
    ["segmentIds", opts.segmentIds],
  ] as const) {
    if (t && (t.dtype !== "s32" || t.shape.join() !== `${B},${S}`))
      throw new TesseraError(
        `llamaHidden: ${name} must be s32[${B},${S}] like the tokens; got ${t.dtype}[${t.shape.join(",")}]`,
        {
          code: "ERR_CONFIG",
        },
      );
  }
  const [cos32, sin32] = opts.positions ? ropeTablesAt(cfg, S, opts.positions) : ropeTables(cfg, S);
  const rope: [Tensor, Tensor] = [cast(cos32), cast(sin32)];
  const attn = resolveAttention(opts, S);
  const lora = opts.lora;
  const dropoutOn = !!(opts.training && lora && lora.layout.dropout > 0);
  if (dropoutOn && !opts.key) throw new Error("llamaHidden: LoRA dropout in training needs a random key (opts.key)");

  // Per-layer scales ride along as xs only when they differ between layers; uniform ones stay numbers.
  const scaleXs: Partial<Record<LlamaLinear, Tensor>> = {};
  const scaleNum: Partial<Record<LlamaLinear, number>> = {};
  for (const m of lora?.layout.modules ?? []) {
    const s = lora!.layout.scale[m]!;
    if (s.every((v) => v === s[0])) scaleNum[m] = s[0]!;
    else scaleXs[m] = tx.constant(new Float32Array(s));
  }
  const xs = { w: w.layers, lora: lora?.weights ?? {}, scale: scaleXs, idx: tx.iota([cfg.numLayers], 0, "s32") };

  const h0 = cast(tx.nn.embedding(w.embed, tokens));
  const layer = (h: Tensor, x: typeof xs): [Tensor, null] => {
    const lw = castLayer(x.w, cdt);
    const ads: LayerAdapters = {};
    for (const m of lora?.layout.modules ?? []) {
      const f = x.lora[m]!;
      const scale = scaleNum[m] ?? x.scale[m]!.astype(cdt);
      const key = dropoutOn ? tx.random.foldIn(tx.random.foldIn(opts.key!, x.idx), LINEARS.indexOf(m)) : undefined;
      ads[m] = {
        a: cast(f.a),
        b: cast(f.b),
        scale,
        dropout: dropoutOn ? lora!.layout.dropout : 0,
        ...(key ? { key } : {}),
      };
    }
    // Scope names (jax.named_scope) tell the two halves apart in inspect, the StableHLO locs and XLA's op_name.
    const a = h.add(
      tx.namedScope("attention", () =>
        attention(rmsNorm(h, lw.inputNorm, cfg.rmsNormEps), cfg, lw, rope, attn, ads, opts.segmentIds),
      ),
    );
    const out = a.add(
      tx.namedScope("mlp", () =>
        mlp(rmsNorm(a, lw.postNorm, cfg.rmsNormEps), lw, ads, dropoutOn ? undefined : opts.mlpChunk),
      ),
    );
    return [out, null];
  };
  const perLayer = Array.isArray(opts.remat) ? (opts.remat as readonly (tx.SavePolicy | undefined)[]) : undefined;
  if (perLayer && perLayer.length !== cfg.numLayers)
    throw new TesseraError(`remat: ${perLayer.length} policies for ${cfg.numLayers} layers`, { code: "ERR_CONFIG" });
  const policyAt = (i: number) => (perLayer ? perLayer[i] : (opts.remat as tx.SavePolicy | undefined));
  const runAt = (i: number) => {
    const p = policyAt(i);
    return p ? tx.checkpoint(layer, { policy: p }) : layer;
  };
  let h = h0;
  if (opts.layers === "unroll") {
    for (let i = 0; i < cfg.numLayers; i++)
      h = tx.namedScope(
        `layer${i}`,
        () => runAt(i)(h, tx.treeMap(xs as unknown as tx.Tree<Tensor>, (t) => t.slice(i)) as unknown as typeof xs)[0],
      );
  } else {
    if (perLayer?.some((p) => p !== perLayer[0]))
      throw new TesseraError(
        "remat: scanned layers share one body, so one policy for all of them (or layers: unroll)",
        {
          code: "ERR_CONFIG",
        },
      );
    [h] = tx.namedScope("layers", () => tx.scan(runAt(0), h0, xs));
  }
  return rmsNorm(h, cast(w.norm), cfg.rmsNormEps);
}

/** A layer's weights in the compute dtype (astype is the identity where they already are). */
export function castLayer(l: LayerView, dt: DType): LayerView {
  const c = (t: Tensor) => t.astype(dt);
  return {
    inputNorm: c(l.inputNorm),
    q: c(l.q),
    k: c(l.k),
    v: c(l.v),
    o: c(l.o),
    postNorm: c(l.postNorm),
    gate: c(l.gate),
    up: c(l.up),
    down: c(l.down),
  };
}

/** Logits [B, S, V] in f32 (the head accumulates in f32 whatever the compute dtype). */
export function llamaLogits(cfg: LlamaConfig, w: LlamaWeights, tokens: Tensor, opts: ForwardOpts = {}): Tensor {
  const h = llamaHidden(cfg, w, tokens, opts);
  return tx.dotGeneral(h, w.head.astype(h.dtype), { lhsContract: [2], rhsContract: [0], outDtype: "f32" });
}
