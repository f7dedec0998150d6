// Numerics shared by llama.ts and lora.ts: the f32-accumulated matmul, and softmax/logsumexp whose max-shift autodiff skips.
import { tx, type Tensor } from "tessera";

/** softmax along `axis` (default last), f32 in, f32 out; its max-shift carries no gradient (tx.nn.softmax). */
export const softmax = (x: Tensor, axis = -1): Tensor => tx.nn.softmax(x, axis);

/** log(sum(exp(x))) along `axis` (default last), without keeping the reduced axis (tx.nn.logsumexp). */
export const logsumexp = (x: Tensor, axis = -1): Tensor => tx.nn.logsumexp(x, axis);

/**
 * x @ w over x's last axis, accumulated in f32 and rounded once to x's dtype, as torch's bf16 matmuls do. (XLA's
 * CPU backend also runs bf16 products with an f32 result far faster than ones with a bf16 result.)
 */
export function matmulF32Acc(x: Tensor, w: Tensor): Tensor {
  return tx.dotGeneral(x, w, { lhsContract: [x.ndim - 1], rhsContract: [0], outDtype: "f32" }).astype(x.dtype);
}
