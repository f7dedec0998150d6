// The formats folder's public surface: host tensors, safetensors, HF Llama config/checkpoints, GGUF, PEFT LoRA adapters.

export * from "./errors.ts";
export * from "./host_tensor.ts";
export { HOST_DTYPES, isHostDType, type HostDType } from "../ir/types.ts";
export * from "./safetensors.ts";
export * from "./hf_config.ts";
export * from "./hf_checkpoint.ts";
export * from "./peft.ts";
export * from "./gguf.ts";
export * from "./gguf_quants.ts";
export * from "./gguf_llama.ts";
export * from "./model_fetch.ts";
