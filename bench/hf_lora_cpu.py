# Peer for `npm run bench train_text`: one transformers + PEFT LoRA step on CPU at a Llama shape, median wall time.
#
# What a user of transformers + PEFT (as TRL's SFTTrainer runs it) gets on this machine: random f32 weights, SDPA
# attention, LoRA on the given projections, torch AdamW, labels = inputs (the model shifts them), no gradient
# checkpointing. Usage: hf_lora_cpu.py JSON, with JSON the shape and run (see run()); prints one JSON line.
import json
import os
import sys
import time

import torch
from peft import LoraConfig, get_peft_model
from transformers import LlamaConfig, LlamaForCausalLM


def run(spec: dict) -> dict:
    torch.manual_seed(0)
    threads = spec.get("threads") or os.cpu_count()
    torch.set_num_threads(threads)
    cfg = LlamaConfig(
        vocab_size=spec["vocab"],
        hidden_size=spec["hidden"],
        intermediate_size=spec["ffn"],
        num_hidden_layers=spec["layers"],
        num_attention_heads=spec["heads"],
        num_key_value_heads=spec["kv_heads"],
        max_position_embeddings=spec["max_positions"],
        rope_theta=spec["rope_theta"],
        rms_norm_eps=1e-5,
        tie_word_embeddings=spec["tied"],
    )
    model = LlamaForCausalLM._from_config(cfg, dtype=torch.float32, attn_implementation="sdpa")
    lora = LoraConfig(
        r=spec["r"],
        lora_alpha=spec["alpha"],
        lora_dropout=0.0,
        target_modules=spec["targets"],
        task_type="CAUSAL_LM",
    )
    model = get_peft_model(model, lora)
    model.train()
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=1e-4, weight_decay=0.0)
    ids = torch.randint(0, spec["vocab"], (spec["batch"], spec["seq"]))
    times, cpu = [], []
    loss = None
    for _ in range(spec["warmup"] + spec["steps"]):
        t, c = time.perf_counter(), time.process_time()
        loss = model(input_ids=ids, labels=ids).loss
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        times.append(time.perf_counter() - t)
        cpu.append(time.process_time() - c)
    measured = sorted(zip(times[spec["warmup"] :], cpu[spec["warmup"] :]))
    step_s, cpu_s = measured[len(measured) // 2]
    return {
        "stepS": step_s,
        "cpuS": cpu_s,
        "loss": float(loss),
        "threads": threads,
        "trainable": sum(p.numel() for p in params),
        "versions": {"torch": torch.__version__, "transformers": __import__("transformers").__version__,
                     "peft": __import__("peft").__version__},
    }


if __name__ == "__main__":
    print(json.dumps(run(json.loads(sys.argv[1]))), flush=True)
