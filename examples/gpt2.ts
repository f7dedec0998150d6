// A small GPT-2 written with the public API only (tx.nn, tx.optim, tx.tree), trained char-level on CPU: `npx tsx examples/gpt2.ts`.
import { pathToFileURL } from "node:url";
import { tx, type DeviceArray, type Tensor } from "tessera";
import { mulberry32 } from "../src/host/random.ts";

/** The model's sizes. Plain numbers, so a jitted function can take the config as a static argument. */
export interface Gpt2Config {
  readonly vocab: number;
  /** Positions (the learned positional table's rows); sequences may be shorter. */
  readonly ctx: number;
  readonly dModel: number;
  readonly heads: number;
  readonly layers: number;
  /** GPT-2's embd/resid/attn dropout rate; applied only when the forward pass is given a key. */
  readonly dropout: number;
}

export interface LayerNormParams {
  scale: Tensor;
  bias: Tensor;
}

export interface BlockParams {
  ln1: LayerNormParams;
  /** Fused q, k, v projection [d, 3d] as GPT-2's c_attn, and the output projection [d, d] (c_proj). */
  attn: { wqkv: Tensor; bqkv: Tensor; wo: Tensor; bo: Tensor };
  ln2: LayerNormParams;
  mlp: { wfc: Tensor; bfc: Tensor; wproj: Tensor; bproj: Tensor };
}

export interface Gpt2Params {
  /** Token embeddings [vocab, d]; the output head is their transpose (tied, as in GPT-2). */
  wte: Tensor;
  /** Learned positional embeddings [ctx, d]. */
  wpe: Tensor;
  blocks: BlockParams[];
  lnF: LayerNormParams;
}

/**
 * GPT-2's initialisation: weights N(0, 0.02²), the residual projections scaled by 1/sqrt(2·layers), biases zero,
 * layer norms the identity.
 */
export function initParams(cfg: Gpt2Config, key: Tensor): Gpt2Params {
  const d = cfg.dModel;
  const normal = tx.nn.initializers.normal(0.02);
  const resid = tx.nn.initializers.normal(0.02 / Math.sqrt(2 * cfg.layers));
  const keys = tx.random.split(key, 2 + 4 * cfg.layers);
  const k = (i: number) => keys.slice(i);
  const ln = (): LayerNormParams => ({ scale: tx.ones([d]), bias: tx.zeros([d]) });
  const blocks = Array.from(
    { length: cfg.layers },
    (_, l): BlockParams => ({
      ln1: ln(),
      attn: {
        wqkv: normal(k(2 + 4 * l), [d, 3 * d]),
        bqkv: tx.zeros([3 * d]),
        wo: resid(k(3 + 4 * l), [d, d]),
        bo: tx.zeros([d]),
      },
      ln2: ln(),
      mlp: {
        wfc: normal(k(4 + 4 * l), [d, 4 * d]),
        bfc: tx.zeros([4 * d]),
        wproj: resid(k(5 + 4 * l), [4 * d, d]),
        bproj: tx.zeros([d]),
      },
    }),
  );
  return { wte: normal(k(0), [cfg.vocab, d]), wpe: normal(k(1), [cfg.ctx, d]), blocks, lnF: ln() };
}

const layerNorm = (x: Tensor, p: LayerNormParams) => tx.nn.layerNorm(x, { scale: p.scale, bias: p.bias, eps: 1e-5 });

/** Dropout with the next of the forward pass's keys, or nothing when the pass has none (evaluation). */
type Drop = (x: Tensor) => Tensor;

/** Causal multi-head self-attention over x [B, T, d]. */
function attention(x: Tensor, p: BlockParams["attn"], cfg: Gpt2Config, drop: Drop): Tensor {
  const [b, t, d] = x.shape as [number, number, number];
  const hd = d / cfg.heads;
  const qkv = x.matmul(p.wqkv).add(p.bqkv).reshape([b, t, 3, cfg.heads, hd]);
  const [q, k, v] = tx.split(qkv, 3, 2).map((a) => a.squeeze(2)) as [Tensor, Tensor, Tensor];
  const scores = tx.einsum("bqhd,bkhd->bhqk", q, k).mul(1 / Math.sqrt(hd));
  // Position q sees keys 0..q only; a large finite negative keeps the softmax NaN-free.
  const causal = tx.tril(tx.ones([t, t])).gt(0);
  const probs = drop(tx.nn.softmax(tx.where(causal, scores, -1e9), -1));
  const out = tx.einsum("bhqk,bkhd->bqhd", probs, v).reshape([b, t, d]);
  return out.matmul(p.wo).add(p.bo);
}

function mlp(x: Tensor, p: BlockParams["mlp"]): Tensor {
  return tx.nn.gelu(x.matmul(p.wfc).add(p.bfc)).matmul(p.wproj).add(p.bproj);
}

/**
 * Logits [B, T, vocab] for token ids [B, T] (T <= ctx). With a threefry `key` and a nonzero `cfg.dropout`, dropout
 * is applied as GPT-2 does (embeddings, attention probabilities, each residual branch); without a key it is off.
 */
export function forward(params: Gpt2Params, ids: Tensor, cfg: Gpt2Config, key?: Tensor): Tensor {
  const t = ids.shape[1]!;
  let drop: Drop = (x) => x;
  if (key !== undefined && cfg.dropout > 0) {
    const keys = tx.random.split(key, 1 + 3 * cfg.layers);
    let used = 0;
    drop = (x) => tx.nn.dropout(x, cfg.dropout, keys.slice(used++));
  }
  let h = drop(tx.nn.embedding(params.wte, ids).add(params.wpe.slice([0, t])));
  for (const [l, block] of params.blocks.entries()) {
    h = tx.namedScope(`block${l}`, () => {
      const a = h.add(drop(attention(layerNorm(h, block.ln1), block.attn, cfg, drop)));
      return a.add(drop(mlp(layerNorm(a, block.ln2), block.mlp)));
    });
  }
  return layerNorm(h, params.lnF).matmul(params.wte.T);
}

/** Mean next-token cross-entropy: `targets` are the ids shifted by one. */
export function loss(params: Gpt2Params, ids: Tensor, targets: Tensor, cfg: Gpt2Config, key?: Tensor): Tensor {
  return tx.nn.crossEntropy(forward(params, ids, cfg, key), targets);
}

export interface TrainOpts {
  readonly peakLr: number;
  readonly warmupSteps: number;
  readonly totalSteps: number;
  readonly weightDecay: number;
  readonly maxGradNorm: number;
}

export const TRAIN_DEFAULTS: TrainOpts = {
  peakLr: 3e-3,
  warmupSteps: 20,
  totalSteps: 300,
  weightDecay: 0.1,
  maxGradNorm: 1,
};

/** optax's recipe: clip the global gradient norm, then AdamW on a warmup + cosine schedule. */
export function optimizer(o: TrainOpts = TRAIN_DEFAULTS): tx.optim.GradientTransformation<unknown[]> {
  return tx.optim.chain(
    tx.optim.clipByGlobalNorm(o.maxGradNorm),
    tx.optim.adamw({
      lr: tx.optim.warmupCosine({ peak: o.peakLr, warmupSteps: o.warmupSteps, decaySteps: o.totalSteps }),
      weightDecay: o.weightDecay,
    }),
  );
}

/**
 * One training step (to be jitted): loss and gradients, the optimizer's update, the new params. `key` drives
 * dropout; pass none to train without it.
 */
export function makeTrainStep(cfg: Gpt2Config, opt: tx.optim.GradientTransformation<unknown[]>) {
  // The config is closed over: valueAndGrad differentiates trees of tensors, and cfg holds plain numbers.
  const lossAndGrad = tx.valueAndGrad((p: Gpt2Params, ids: Tensor, targets: Tensor, key?: Tensor) =>
    loss(p, ids, targets, cfg, key),
  );
  return (params: Gpt2Params, state: unknown[], ids: Tensor, targets: Tensor, key?: Tensor) => {
    const [value, grads] = lossAndGrad(params, ids, targets, key) as [Tensor, Gpt2Params];
    const [updates, next] = opt.update(grads, state, params);
    return { params: tx.optim.applyUpdates(params, updates), state: next, loss: value };
  };
}

/** The built-in corpus: short enough to learn in a few hundred steps, long enough that the loss means something. */
export const TEXT = `First Citizen:
Before we proceed any further, hear me speak.
All:
Speak, speak.
First Citizen:
You are all resolved rather to die than to famish?
All:
Resolved. resolved.
First Citizen:
First, you know Caius Marcius is chief enemy to the people.
All:
We know't, we know't.
First Citizen:
Let us kill him, and we'll have corn at our own price.
Is't a verdict?
All:
No more talking on't; let it be done: away, away!
`;

/** Characters in first-appearance order, and the text as their ids. */
export function charVocab(text: string): { chars: string[]; ids: Int32Array } {
  const chars = [...new Set(text)];
  const index = new Map(chars.map((c, i) => [c, i]));
  return { chars, ids: Int32Array.from(text, (c) => index.get(c)!) };
}

/** `batch` random windows of `seq + 1` ids: inputs are the first seq, targets the last seq. */
export function sampleBatch(
  ids: Int32Array,
  batch: number,
  seq: number,
  next: () => number,
): { x: Int32Array; y: Int32Array } {
  const x = new Int32Array(batch * seq);
  const y = new Int32Array(batch * seq);
  for (let b = 0; b < batch; b++) {
    const start = Math.floor(next() * (ids.length - seq - 1));
    x.set(ids.subarray(start, start + seq), b * seq);
    y.set(ids.subarray(start + 1, start + seq + 1), b * seq);
  }
  return { x, y };
}

async function main(): Promise<void> {
  const { chars, ids } = charVocab(TEXT);
  const cfg: Gpt2Config = { vocab: chars.length, ctx: 64, dModel: 64, heads: 4, layers: 2, dropout: 0.1 };
  const batch = 16;
  const seq = 64;
  const opts = TRAIN_DEFAULTS;
  const opt = optimizer(opts);

  // Params and optimizer state are made on the device by one small program; cfg is static (hashed by value).
  const init = tx.jit(
    (key: Tensor, c: Gpt2Config) => {
      const params = initParams(c, key);
      return { params, state: opt.init(params) };
    },
    { static: 1 },
  );
  let { params, state } = await init(tx.random.keyArray(0), cfg);
  const nParams = tx.tree.leaves(params).reduce((n: number, p: DeviceArray) => n + p.size, 0);
  console.log(
    `gpt2: ${cfg.layers} layers, d ${cfg.dModel}, ${cfg.heads} heads, vocab ${cfg.vocab} chars, ${nParams} parameters; ` +
      `batch ${batch} x ${seq}, AdamW peak lr ${opts.peakLr} (warmup ${opts.warmupSteps}, cosine), clip ${opts.maxGradNorm}, dropout ${cfg.dropout}`,
  );

  // Old params and state are donated: XLA updates them in place.
  const step = tx.jit(makeTrainStep(cfg, opt), { donate: [0, 1] });
  const next = mulberry32(1);
  let key = tx.random.keyArray(1);
  const start = performance.now();
  let window = 0;
  for (let i = 1; i <= opts.totalSteps; i++) {
    const { x, y } = sampleBatch(ids, batch, seq, next);
    const [k, sub] = tx.random.split(key);
    key = k!;
    const out = await step(
      params,
      state,
      tx.array(x, { shape: [batch, seq] }),
      tx.array(y, { shape: [batch, seq] }),
      sub!,
    );
    ({ params, state } = out);
    window += await out.loss.item();
    if (i % 50 === 0) {
      console.log(`steps ${String(i - 49).padStart(3)}-${String(i).padEnd(3)}  mean loss ${(window / 50).toFixed(4)}`);
      window = 0;
    }
  }
  const secs = (performance.now() - start) / 1000;
  console.log(`${opts.totalSteps} steps in ${secs.toFixed(1)} s (the first compiles)`);

  // Greedy sampling in eval mode (no key: no dropout). The input is always ctx long, right-padded, and the causal
  // mask keeps the padding out of earlier positions, so one compiled program serves every step.
  const nextToken = tx.jit(
    (p: Gpt2Params, x: Tensor, pos: Tensor, c: Gpt2Config) => tx.take(forward(p, x, c).squeeze(0), pos).argmax(-1),
    { static: 3 },
  );
  const prompt = "First Citizen:\n";
  const out = [...ids.subarray(0, prompt.length)];
  while (out.length < 56) {
    const padded = new Int32Array(cfg.ctx);
    padded.set(out);
    const pos = tx.array(out.length - 1, { dtype: "s32" });
    out.push(await (await nextToken(params, tx.array(padded, { shape: [1, cfg.ctx] }), pos, cfg)).item());
  }
  console.log(`sample: ${JSON.stringify(out.map((c) => chars[c]).join(""))}`);
}

if (import.meta.url === pathToFileURL(process.argv[1] ?? "").href) await main();
