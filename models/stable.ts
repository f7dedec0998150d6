// Numerics shared by llama.ts and lora.ts: the f32-accumulated matmul, and softmax/logsumexp whose max-shift autodiff skips.
import { tx, type Tensor } from "tessera";

/*
 * Any shift s gives the same softmax and logsumexp (x - s cancels exactly); the max is used only so exp cannot
 * overflow. Differentiated through reduce_max, though, the shift costs the backward pass a mask over the whole
 * input (where x equals its max) times a cotangent that is zero in exact arithmetic: two or three extra passes
 * over [tokens, vocab] logits or [B, H, S, S] scores. JAX and PyTorch stop the gradient there; the IR has no
 * stop-gradient op, so the shift goes through an integer instead: trunc(max) as s32 is a constant to autodiff
 * (integers carry no cotangent), still within 1 of the max, so exp(x - s) <= e and the sum stays >= 1/e.
 */
function constantShift(x: Tensor, axis: number): Tensor {
  const m = x.max(axis, { keepdims: true });
  // Clamped into s32 range first; a row whose max is +-inf or NaN gives inf/NaN results either way.
  return m.astype("f32").maximum(-2e9).minimum(2e9).astype("s32").astype(x.dtype);
}

/** softmax along `axis` (default last), f32 in, f32 out. */
export function softmax(x: Tensor, axis = -1): Tensor {
  const e = x.sub(constantShift(x, axis)).exp();
  return e.div(e.sum(axis, { keepdims: true }));
}

/** log(sum(exp(x))) along `axis` (default last), without keeping the reduced axis. */
export function logsumexp(x: Tensor, axis = -1): Tensor {
  const s = constantShift(x, axis);
  return x
    .sub(s)
    .exp()
    .sum(axis, { keepdims: true })
    .log()
    .add(s)
    .squeeze(axis < 0 ? x.ndim + axis : axis);
}

/**
 * x @ w over x's last axis, accumulated in f32 and rounded once to x's dtype, as torch's bf16 matmuls do. (XLA's
 * CPU backend also runs bf16 products with an f32 result far faster than ones with a bf16 result.)
 */
export function matmulF32Acc(x: Tensor, w: Tensor): Tensor {
  return tx.dotGeneral(x, w, { lhsContract: [x.ndim - 1], rhsContract: [0], outDtype: "f32" }).astype(x.dtype);
}
