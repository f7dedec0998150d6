// A Llama-2-shaped training step written with the DSL as a user would: used by the tracing-speed test.
import { tx } from "./api.ts";
type T = tx.Tensor;

export interface Layer {
  wq: T;
  wk: T;
  wv: T;
  wo: T;
  wGate: T;
  wUp: T;
  wDown: T;
  attnNorm: T;
  mlpNorm: T;
}
export interface Lora {
  aq: T;
  bq: T;
  av: T;
  bv: T;
}
export interface Params {
  embed: T;
  layers: Layer[];
  norm: T;
  head: T;
}

export interface Dims {
  vocab: number;
  d: number;
  heads: number;
  ffn: number;
  layers: number;
  rank: number;
  batch: number;
  seq: number;
}

function rmsnorm(x: T, w: T): T {
  const x32 = x.astype("f32");
  const r = x32.square().mean(-1, { keepdims: true }).add(1e-5).rsqrt();
  return x32.mul(r).astype(x.dtype).mul(w);
}

function rope(x: T, cos: T, sin: T): T {
  const half = x.shape[x.ndim - 1]! / 2;
  const [a, b] = tx.split(x, [half], -1);
  const rotated = tx.concatenate([b!.neg(), a!], -1);
  return x.mul(cos).add(rotated.mul(sin));
}

function attention(x: T, l: Layer, lo: Lora, dims: Dims, cos: T, sin: T, mask: T): T {
  const [B, S] = [x.shape[0]!, x.shape[1]!];
  const hd = dims.d / dims.heads;
  const q = x.matmul(l.wq).add(x.matmul(lo.aq).matmul(lo.bq).mul(2)).reshape([B, S, dims.heads, hd]);
  const k = x.matmul(l.wk).reshape([B, S, dims.heads, hd]);
  const v = x.matmul(l.wv).add(x.matmul(lo.av).matmul(lo.bv).mul(2)).reshape([B, S, dims.heads, hd]);
  const scores = tx.einsum("bqhd,bkhd->bhqk", rope(q, cos, sin), rope(k, cos, sin)).mul(1 / Math.sqrt(hd));
  const p = tx.softmax(tx.where(mask, scores, -1e9), -1);
  return tx.einsum("bhqk,bkhd->bqhd", p, v).reshape([B, S, dims.d]).matmul(l.wo);
}

function mlp(x: T, l: Layer): T {
  return tx.silu(x.matmul(l.wGate)).mul(x.matmul(l.wUp)).matmul(l.wDown);
}

export function loss(lora: Lora[], params: Params, tokens: T, labels: T, dims: Dims): T {
  const S = tokens.shape[1]!;
  const hd = dims.d / dims.heads;
  const pos = tx.arange(S).astype("f32").reshape([S, 1]);
  const freq = tx
    .arange(0, hd / 2)
    .astype("f32")
    .mul(-2 / hd)
    .mul(Math.log(10000))
    .exp()
    .reshape([1, hd / 2]);
  const ang = tx.concatenate([pos.mul(freq), pos.mul(freq)], -1).reshape([1, S, 1, hd]);
  const [cos, sin] = [ang.cos(), ang.sin()];
  const mask = tx.iota([S, S], 0).ge(tx.iota([S, S], 1));
  let x = tx.take(params.embed, tokens);
  params.layers.forEach((l, i) => {
    x = x.add(attention(rmsnorm(x, l.attnNorm), l, lora[i]!, dims, cos, sin, mask));
    x = x.add(mlp(rmsnorm(x, l.mlpNorm), l));
  });
  const logits = rmsnorm(x, params.norm).matmul(params.head);
  const logp = tx.logSoftmax(logits, -1);
  return tx.takeAlongAxis(logp, labels.expandDims(-1), -1).mean().neg();
}

export function specs(dims: Dims) {
  const f = (...s: number[]) => tx.spec("f32", s);
  const layer = (): Record<keyof Layer, tx.TensorSpec> => ({
    wq: f(dims.d, dims.d),
    wk: f(dims.d, dims.d),
    wv: f(dims.d, dims.d),
    wo: f(dims.d, dims.d),
    wGate: f(dims.d, dims.ffn),
    wUp: f(dims.d, dims.ffn),
    wDown: f(dims.ffn, dims.d),
    attnNorm: f(dims.d),
    mlpNorm: f(dims.d),
  });
  const lora = () => ({
    aq: f(dims.d, dims.rank),
    bq: f(dims.rank, dims.d),
    av: f(dims.d, dims.rank),
    bv: f(dims.rank, dims.d),
  });
  return {
    lora: Array.from({ length: dims.layers }, lora),
    params: {
      embed: f(dims.vocab, dims.d),
      layers: Array.from({ length: dims.layers }, layer),
      norm: f(dims.d),
      head: f(dims.d, dims.vocab),
    },
    tokens: tx.spec("s32", [dims.batch, dims.seq]),
    labels: tx.spec("s32", [dims.batch, dims.seq]),
  };
}
