// Numerics shared by llama.ts and lora.ts: the f32-accumulated matmul (softmax and logsumexp are tx.nn's).
import { tx, type Tensor } from "tessera";

/**
 * x @ w over x's last axis, accumulated in f32 and rounded once to x's dtype, as torch's bf16 matmuls do. (XLA's
 * CPU backend also runs bf16 products with an f32 result far faster than ones with a bf16 result.)
 */
export function matmulF32Acc(x: Tensor, w: Tensor): Tensor {
  return tx.dotGeneral(x, w, { lhsContract: [x.ndim - 1], rhsContract: [0], outDtype: "f32" }).astype(x.dtype);
}
