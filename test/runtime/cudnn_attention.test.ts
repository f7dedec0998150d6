// On a CUDA PJRT plugin (scripts/gpu-check.sh): cuDNN flash attention's value and dq/dk/dv against plain and blockwise attention, max errors printed.
import { describe, expect, it } from "vitest";
import { tx, type Tensor } from "tessera";
import { blockwiseAttention, cudnnAttention, plainAttention, type AttentionOpts } from "../../models/attention.ts";
import { mulberry32 } from "../../models/lora.ts";
import { fromFloat32, toFloat32, type HostTensor } from "../../src/formats/host_tensor.ts";
import { getClient } from "../../src/backend/runtime/index.ts";
import { pjrtOnHost } from "../../src/parity/execute.ts";
import { TesseraError } from "../../src/errors.ts";

// Llama-like heads (8 query over 2 KV heads, D 128) at a length where the flash kernels tile.
const B = 2,
  S = 1024,
  HQ = 8,
  HKV = 2,
  D = 128;

type Attn = (q: Tensor, k: Tensor, v: Tensor, opts: AttentionOpts) => Tensor;

function inputs() {
  const rand = mulberry32(17);
  const t = (h: number, s = 1) =>
    fromFloat32(
      Float32Array.from({ length: B * S * h * D }, () => Math.round((rand() * 2 - 1) * s * 64) / 64),
      [B, S, h, D],
    );
  return { q: t(HQ), k: t(HKV), v: t(HKV), w: t(HQ, 0.5) };
}

/** [out, dq, dk, dv] in f32 of attention `f` computed in `dtype`, under the loss sum(out * w). */
function run(f: Attn, dtype: "bf16" | "f32", causal: boolean) {
  const x = inputs();
  return pjrtOnHost(
    (q: Tensor, k: Tensor, v: Tensor, w: Tensor) => {
      const attn = (q: Tensor, k: Tensor, v: Tensor) =>
        f(q.astype(dtype), k.astype(dtype), v.astype(dtype), { causal }).astype("f32");
      const [, g] = tx.valueAndGrad((q: Tensor, k: Tensor, v: Tensor) => attn(q, k, v).mul(w).sum(), {
        wrt: [0, 1, 2],
      })(q, k, v);
      return [attn(q, k, v), ...(g as Tensor[])];
    },
    [x.q, x.k, x.v, x.w],
  ) as Promise<HostTensor[]>;
}

function maxErr(got: HostTensor, want: HostTensor): { err: number; scale: number } {
  const [a, b] = [toFloat32(got), toFloat32(want)];
  let err = 0,
    scale = 0;
  for (let i = 0; i < a.length; i++) {
    err = Math.max(err, Math.abs(a[i]! - b[i]!));
    scale = Math.max(scale, Math.abs(b[i]!));
  }
  return { err, scale };
}

describe("cuDNN flash attention on the GPU", () => {
  it.each([true, false])(
    "value and dq/dk/dv equal plain attention (f32) to bf16 accuracy, causal %s",
    async (causal) => {
      const client = await getClient();
      if (client.platform === "cpu") {
        // XLA's CPU backend has no implementation of the custom call: the compile error names it
        await expect(run(cudnnAttention, "bf16", causal)).rejects.toThrow(TesseraError);
        return;
      }
      const want = await run(plainAttention, "f32", causal);
      const got = await run(cudnnAttention, "bf16", causal);
      const block = await run(blockwiseAttention, "bf16", causal);
      ["out", "dq", "dk", "dv"].forEach((name, i) => {
        const c = maxErr(got[i]!, want[i]!);
        const b = maxErr(block[i]!, want[i]!);
        console.log(
          `${client.platformName} causal=${causal} ${name}: max |cudnn - plain f32| ${c.err.toExponential(2)}, max |blockwise bf16 - plain f32| ${b.err.toExponential(2)} (max |plain| ${c.scale.toExponential(2)})`,
        );
        // bf16 carries 8 significant bits; cuDNN and blockwise both round P and dS to bf16 before their matmuls
        expect(c.err, name).toBeLessThanOrEqual(c.scale * 2 ** -5);
        expect(c.err, name).toBeLessThanOrEqual(Math.max(4 * b.err, c.scale * 2 ** -7));
      });
    },
    600_000,
  );
});
