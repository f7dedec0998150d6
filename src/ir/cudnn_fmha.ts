// The cuDNN fused-attention ops (cudnn_fmha, cudnn_fmha_bwd): types, float64 kernels, and the custom call JAX emits for them.
//
// Layouts follow jax.nn.dot_product_attention(..., implementation="cudnn") (jax/_src/cudnn/fused_attention_stablehlo.py):
// q [B, T, N, H], k and v [B, S, K, H] (BTNH, N a multiple of K: GQA), the forward's output [B, N, T, H] and its
// softmax stats (the logsumexp of each query row's scaled, masked scores) [B, N, T] f32; the backward takes
// (q, k, v, stats, dO [B, T, N, H], O [B, T, N, H]) and returns dq [B, N, T, H], dk and dv [B, K, S, H]. Each
// custom call also returns a u8[0] workspace, which the IR ops leave out. Query head n reads KV head floor(n / G).
import type { OpName } from "./ops.ts";
import type { TensorType } from "./types.ts";
import { tensorType } from "./types.ts";

/** Ops only XLA's CUDA backend runs (no CPU kernel exists for their custom calls). */
export const GPU_ONLY_OPS: ReadonlySet<OpName> = new Set<OpName>(["cudnn_fmha", "cudnn_fmha_bwd"]);

export interface FmhaParams {
  /** [scale]: the factor of q·k (1/sqrt(H) by default). */
  readonly scale: readonly number[];
  readonly causal: boolean;
}

/** The forward's params: `stats` adds the [B, N, T] f32 softmax stats output (what the backward needs). */
export interface FmhaFwdParams extends FmhaParams {
  readonly stats: boolean;
}

interface Dims {
  B: number;
  T: number;
  S: number;
  N: number;
  K: number;
  H: number;
}

/** Checks q, k, v and returns their dims, or the reason they do not fit. */
export function fmhaDims(q: TensorType, k: TensorType, v: TensorType): Dims | string {
  if (q.shape.length !== 4 || k.shape.length !== 4 || v.shape.length !== 4)
    return "expects q [B, T, N, H], k and v [B, S, K, H]";
  const [B, T, N, H] = q.shape as [number, number, number, number];
  const [kb, S, K, kh] = k.shape as [number, number, number, number];
  if (k.shape.join() !== v.shape.join()) return "k and v must have the same shape";
  if (kb !== B || kh !== H) return `k and v must be [${B}, S, K, ${H}] to match q`;
  if (N % K !== 0) return `query heads ${N} must be a multiple of key/value heads ${K}`;
  if (q.dtype !== k.dtype || q.dtype !== v.dtype) return "q, k and v must have one dtype";
  if (q.dtype !== "bf16" && q.dtype !== "f16") return `cuDNN flash attention takes bf16 or f16, got ${q.dtype}`;
  return { B, T, S, N, K, H };
}

export function fmhaResultTypes(q: TensorType, d: Dims, stats: boolean): TensorType[] {
  const out = tensorType(q.dtype, [d.B, d.N, d.T, d.H]);
  return stats ? [out, tensorType("f32", [d.B, d.N, d.T])] : [out];
}

export function fmhaBwdResultTypes(q: TensorType, d: Dims): TensorType[] {
  return [
    tensorType(q.dtype, [d.B, d.N, d.T, d.H]),
    tensorType(q.dtype, [d.B, d.K, d.S, d.H]),
    tensorType(q.dtype, [d.B, d.K, d.S, d.H]),
  ];
}

/** Row-major offsets of the BTNH inputs. */
const at4 = (s: readonly number[], a: number, b: number, c: number, d: number) =>
  ((a * s[1]! + b) * s[2]! + c) * s[3]! + d;

interface Scores {
  /** Scaled scores of query (b, n, t) against every key, -Infinity where masked. */
  row(b: number, n: number, t: number): Float64Array;
}

function scores(q: Float64Array, k: Float64Array, d: Dims, p: FmhaParams): Scores {
  const G = d.N / d.K;
  const qs = [d.B, d.T, d.N, d.H],
    ks = [d.B, d.S, d.K, d.H];
  return {
    row(b, n, t) {
      const r = new Float64Array(d.S);
      for (let j = 0; j < d.S; j++) {
        if (p.causal && j > t) {
          r[j] = -Infinity;
          continue;
        }
        let acc = 0;
        for (let h = 0; h < d.H; h++) acc += q[at4(qs, b, t, n, h)]! * k[at4(ks, b, j, Math.floor(n / G), h)]!;
        r[j] = acc * p.scale[0]!;
      }
      return r;
    },
  };
}

/** The forward in float64: [out [B, N, T, H], stats [B, N, T]] (both unrounded). */
export function fmhaForward(q: Float64Array, k: Float64Array, v: Float64Array, d: Dims, p: FmhaParams) {
  const G = d.N / d.K;
  const ks = [d.B, d.S, d.K, d.H];
  const out = new Float64Array(d.B * d.N * d.T * d.H);
  const stats = new Float64Array(d.B * d.N * d.T);
  const sc = scores(q, k, d, p);
  for (let b = 0; b < d.B; b++)
    for (let n = 0; n < d.N; n++)
      for (let t = 0; t < d.T; t++) {
        const r = sc.row(b, n, t);
        const m = Math.max(...r);
        let l = 0;
        for (let j = 0; j < d.S; j++) l += Math.exp(r[j]! - m);
        const lse = m + Math.log(l);
        const row = (b * d.N + n) * d.T + t;
        stats[row] = lse;
        for (let h = 0; h < d.H; h++) {
          let acc = 0;
          for (let j = 0; j < d.S; j++) acc += Math.exp(r[j]! - lse) * v[at4(ks, b, j, Math.floor(n / G), h)]!;
          out[row * d.H + h] = acc;
        }
      }
  return { out, stats };
}

/** The backward in float64 from the stats: [dq [B, N, T, H], dk [B, K, S, H], dv [B, K, S, H]] (unrounded). */
export function fmhaBackward(
  q: Float64Array,
  k: Float64Array,
  v: Float64Array,
  stats: Float64Array,
  dO: Float64Array,
  o: Float64Array,
  d: Dims,
  p: FmhaParams,
) {
  const G = d.N / d.K;
  const qs = [d.B, d.T, d.N, d.H],
    ks = [d.B, d.S, d.K, d.H];
  const dq = new Float64Array(d.B * d.N * d.T * d.H);
  const dk = new Float64Array(d.B * d.K * d.S * d.H);
  const dv = new Float64Array(d.B * d.K * d.S * d.H);
  const sc = scores(q, k, d, p);
  const scale = p.scale[0]!;
  for (let b = 0; b < d.B; b++)
    for (let n = 0; n < d.N; n++) {
      const kv = Math.floor(n / G);
      for (let t = 0; t < d.T; t++) {
        const r = sc.row(b, n, t);
        const lse = stats[(b * d.N + n) * d.T + t]!;
        let delta = 0;
        for (let h = 0; h < d.H; h++) delta += dO[at4(qs, b, t, n, h)]! * o[at4(qs, b, t, n, h)]!;
        for (let j = 0; j < d.S; j++) {
          const pj = Math.exp(r[j]! - lse);
          if (pj === 0) continue;
          let dp = 0;
          for (let h = 0; h < d.H; h++) dp += dO[at4(qs, b, t, n, h)]! * v[at4(ks, b, j, kv, h)]!;
          const ds = pj * (dp - delta) * scale;
          for (let h = 0; h < d.H; h++) {
            dq[((b * d.N + n) * d.T + t) * d.H + h]! += ds * k[at4(ks, b, j, kv, h)]!;
            dk[((b * d.K + kv) * d.S + j) * d.H + h]! += ds * q[at4(qs, b, t, n, h)]!;
            dv[((b * d.K + kv) * d.S + j) * d.H + h]! += pj * dO[at4(qs, b, t, n, h)]!;
          }
        }
      }
    }
  return { dq, dk, dv };
}

/** A float that Python's json.dumps prints with a decimal point (0.0, not 0). */
class PyFloat {
  constructor(readonly value: number) {}
}

/** json.dumps(x) as Python writes it (", " and ": " separators), which is how JAX spells backend_config. */
function pyJson(x: unknown): string {
  if (x instanceof PyFloat) {
    const s = String(x.value);
    return Number.isInteger(x.value) && !s.includes("e") ? `${s}.0` : s;
  }
  if (typeof x === "string") return JSON.stringify(x);
  if (typeof x === "number" || typeof x === "boolean") return String(x);
  if (Array.isArray(x)) return `[${x.map(pyJson).join(", ")}]`;
  const o = x as Record<string, unknown>;
  return `{${Object.keys(o)
    .map((key) => `${JSON.stringify(key)}: ${pyJson(o[key])}`)
    .join(", ")}}`;
}

const dims = (lc: number[], rc: number[], lb: number[], rb: number[]) => ({
  lhs_contracting_dimensions: lc.map(String),
  rhs_contracting_dimensions: rc.map(String),
  lhs_batch_dimensions: lb.map(String),
  rhs_batch_dimensions: rb.map(String),
});

/** The backend_config JAX writes for the forward or backward custom call (quotes not yet escaped). */
export function fmhaBackendConfig(q: TensorType, d: Dims, p: FmhaParams, backward: boolean): string {
  const gemms = backward
    ? {
        bmm1_grad_gemm1_dot_dimension_numbers: dims([2], [1], [0, 1], [0, 2]),
        bmm1_grad_gemm2_dot_dimension_numbers: dims([3], [1], [0, 1], [0, 2]),
        bmm2_grad_gemm1_dot_dimension_numbers: dims([2], [1], [0, 1], [0, 2]),
        bmm2_grad_gemm2_dot_dimension_numbers: dims([3], [3], [0, 2], [0, 2]),
      }
    : {
        bmm1_dot_dimension_numbers: dims([3], [3], [0, 2], [0, 2]),
        bmm2_dot_dimension_numbers: dims([3], [1], [0, 1], [0, 2]),
      };
  return pyJson({
    operation_queue_id: "0",
    cudnn_fmha_backend_config: {
      algorithm: {
        algo_id: "0",
        math_type: "TENSOR_OP_MATH",
        tuning_knobs: { "17": "1", "24": "0" },
        is_cudnn_frontend: true,
        workspace_size: "0",
      },
      fmha_scale: new PyFloat(p.scale[0]!),
      intermediate_tensor_shape: {
        element_type: q.dtype.toUpperCase(),
        dimensions: [d.B, d.N, d.T, d.S].map(String),
        tuple_shapes: [],
        layout: {
          dim_level_types: [],
          dim_unique: [],
          dim_ordered: [],
          minor_to_major: ["3", "2", "1", "0"],
          tiles: [],
          element_size_in_bits: "0",
          memory_space: "0",
          index_primitive_type: "PRIMITIVE_TYPE_INVALID",
          pointer_primitive_type: "PRIMITIVE_TYPE_INVALID",
          dynamic_shape_metadata_prefix_bytes: "0",
        },
        is_dynamic_dimension: [false, false, false, false],
      },
      is_flash_attention: true,
      mask_type: p.causal ? "CAUSAL" : "NO_MASK",
      ...gemms,
      dropout_rate: new PyFloat(0),
      seed: 42,
      sliding_window_length: 0,
      max_seg_per_batch: 1,
      is_paged_attention: false,
    },
  });
}

/** FLOPs as XLA counts a fused attention: the two (forward) or four (backward, plus dV) score-sized matmuls. */
export function fmhaFlops(d: Dims, backward: boolean): number {
  const matmul = 2 * d.B * d.N * d.T * d.S * d.H;
  return (backward ? 5 : 2) * matmul;
}
