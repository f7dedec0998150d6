// The mixed-precision policy in one place: which dtype base weights, activations, LoRA masters and the loss use.
import type { DType } from "../ir/types.ts";

/**
 * bf16 training: frozen base weights and activations bf16; LoRA master weights, AdamW moments and the loss f32
 * (factors are cast to bf16 where they meet activations). Attention scores, softmax and logits are always f32.
 * f32 mode runs everything in f32, for parity with Hugging Face's float32 reference.
 */
export interface PrecisionPolicy {
  readonly name: "bf16" | "f32";
  /** Stored dtype of the frozen base weights. */
  readonly base: DType;
  /** Activation dtype inside the model. */
  readonly compute: DType;
  /** LoRA master weights and optimizer state. */
  readonly master: DType;
  /** The loss and everything after the logits. */
  readonly loss: DType;
}

export const BF16: PrecisionPolicy = Object.freeze({
  name: "bf16",
  base: "bf16",
  compute: "bf16",
  master: "f32",
  loss: "f32",
});
export const F32: PrecisionPolicy = Object.freeze({
  name: "f32",
  base: "f32",
  compute: "f32",
  master: "f32",
  loss: "f32",
});

export function precisionPolicy(name: string): PrecisionPolicy {
  if (name === "bf16") return BF16;
  if (name === "f32" || name === "float32") return F32;
  throw new Error(`unknown precision "${name}" (expected "bf16" or "f32")`);
}

/** The safetensors dtype to load base weights in for `policy`. */
export function baseHostDType(policy: PrecisionPolicy): "F32" | "BF16" | "F16" {
  return policy.base === "bf16" ? "BF16" : policy.base === "f16" ? "F16" : "F32";
}
