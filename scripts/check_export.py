# Checks a `tessera export` folder with transformers: config and tokenizer load, and the model's logits match a fixture.
#
#   python scripts/check_export.py EXPORT_DIR [--fixture ../shared/fixtures/smollm2-135m/expected.json]
#
# Needs `pip install transformers safetensors numpy` (no torch). With torch installed, the model is loaded with
# AutoModelForCausalLM.from_pretrained and its last-position logits and greedy generations are compared with the
# fixture; without torch, the same logits come from a NumPy transcription of transformers' eager Llama forward pass
# run on the exported safetensors (so the file layout and names are still checked independently of Tessera).
# The fixture comparisons apply to an export of the unmodified base model (no adapter merged); the NumPy path
# reads f32/f16 exports (NumPy has no bfloat16).
import argparse
import json
import math
import os
import sys

import numpy as np
from transformers import AutoConfig, AutoTokenizer

TOL = 1e-4


def numpy_logits(export_dir, cfg, ids):
    """transformers' LlamaForCausalLM forward (eager attention, default RoPE), f32, last position only."""
    from safetensors.numpy import load_file

    index = os.path.join(export_dir, "model.safetensors.index.json")
    if os.path.exists(index):
        files = sorted(set(json.load(open(index))["weight_map"].values()))
    else:
        files = ["model.safetensors"]
    w = {}
    for f in files:
        w.update({k: v.astype(np.float32) for k, v in load_file(os.path.join(export_dir, f)).items()})
    H, KV = cfg.num_attention_heads, cfg.num_key_value_heads
    D = getattr(cfg, "head_dim", None) or cfg.hidden_size // H
    eps = cfg.rms_norm_eps
    theta = cfg.rope_parameters["rope_theta"] if getattr(cfg, "rope_parameters", None) else cfg.rope_theta

    def rms(x, g):
        return g * (x / np.sqrt((x * x).mean(-1, keepdims=True) + eps))

    S = len(ids)
    inv = 1.0 / (theta ** (np.arange(0, D, 2, dtype=np.float32) / D))
    ang = np.outer(np.arange(S, dtype=np.float32), inv)
    emb = np.concatenate([ang, ang], -1)
    cos, sin = np.cos(emb), np.sin(emb)

    def rope(x):  # [h, S, D]
        rot = np.concatenate([-x[..., D // 2 :], x[..., : D // 2]], -1)
        return x * cos + rot * sin

    x = w["model.embed_tokens.weight"][ids]
    mask = np.triu(np.full((S, S), -np.inf, dtype=np.float32), 1)
    for l in range(cfg.num_hidden_layers):
        p = f"model.layers.{l}."
        h = rms(x, w[p + "input_layernorm.weight"])
        q = (h @ w[p + "self_attn.q_proj.weight"].T).reshape(S, H, D).transpose(1, 0, 2)
        k = (h @ w[p + "self_attn.k_proj.weight"].T).reshape(S, KV, D).transpose(1, 0, 2)
        v = (h @ w[p + "self_attn.v_proj.weight"].T).reshape(S, KV, D).transpose(1, 0, 2)
        q, k = rope(q), rope(k)
        k = np.repeat(k, H // KV, 0)
        v = np.repeat(v, H // KV, 0)
        s = q @ k.transpose(0, 2, 1) / math.sqrt(D) + mask
        s = np.exp(s - s.max(-1, keepdims=True))
        a = (s / s.sum(-1, keepdims=True)) @ v
        x = x + a.transpose(1, 0, 2).reshape(S, H * D) @ w[p + "self_attn.o_proj.weight"].T
        h = rms(x, w[p + "post_attention_layernorm.weight"])
        g = h @ w[p + "mlp.gate_proj.weight"].T
        u = h @ w[p + "mlp.up_proj.weight"].T
        x = x + ((g / (1 + np.exp(-g))) * u) @ w[p + "mlp.down_proj.weight"].T
    x = rms(x, w["model.norm.weight"])
    head = w["model.embed_tokens.weight"] if cfg.tie_word_embeddings else w["lm_head.weight"]
    return x[-1] @ head.T


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("export_dir")
    ap.add_argument("--fixture", help="an expected.json like ../shared/fixtures/smollm2-135m/expected.json")
    args = ap.parse_args()
    failures = []

    cfg = AutoConfig.from_pretrained(args.export_dir)
    print(f"AutoConfig: {type(cfg).__name__}, {cfg.num_hidden_layers} layers, dtype {getattr(cfg, 'dtype', None)}")
    if cfg.architectures != ["LlamaForCausalLM"]:
        failures.append(f"architectures {cfg.architectures}")
    tok = AutoTokenizer.from_pretrained(args.export_dir)
    print(f"AutoTokenizer: {type(tok).__name__}, bos {tok.bos_token!r} eos {tok.eos_token!r} pad {tok.pad_token!r}")
    if not args.fixture:
        return report(failures)

    fx = json.load(open(args.fixture))
    for t in fx["tokenize"]:
        if tok(t["text"])["input_ids"] != t["ids"]:
            failures.append(f"tokenize {t['text']!r}")
    for i, c in enumerate(fx["chats"]):
        prompt = tok.apply_chat_template(c["messages"], add_generation_prompt=True, tokenize=False)
        if prompt != c["prompt_text"]:
            failures.append(f"chat {i}: prompt text")
        if tok(prompt, add_special_tokens=False)["input_ids"] != c["prompt_ids"]:
            failures.append(f"chat {i}: prompt ids")
    print(f"tokenizer: {len(fx['tokenize'])} texts and {len(fx['chats'])} chat prompts compared")

    try:
        import torch
        from transformers import AutoModelForCausalLM

        model = AutoModelForCausalLM.from_pretrained(args.export_dir, dtype=torch.float32, attn_implementation="eager")
        model.eval()
        how = "AutoModelForCausalLM"
    except ImportError:
        model, how = None, "NumPy transcription of transformers' Llama (torch is not installed)"
    for i, c in enumerate(fx["chats"]):
        ids = c["prompt_ids"]
        if model is not None:
            with torch.no_grad():
                logits = model(torch.tensor([ids])).logits[0, -1].numpy()
                gen = model.generate(torch.tensor([ids]), do_sample=False, max_new_tokens=len(c["greedy_ids"]))
            new = gen[0, len(ids) :].tolist()
            if new != c["greedy_ids"]:
                failures.append(f"chat {i}: greedy ids {new} != {c['greedy_ids']}")
        else:
            logits = numpy_logits(args.export_dir, cfg, np.array(ids))
        logits = logits.astype(np.float64)
        top = np.argsort(-logits)[:10].tolist()
        want = c["last_logits_top10"]
        worst = max(abs(logits[j] - v) / abs(v) for j, v in zip(want["ids"], want["values"]))
        m = logits.max()
        lse = m + math.log(np.exp(logits - m).sum())
        lse_err = abs(lse - c["last_logsumexp"]) / abs(c["last_logsumexp"])
        print(f"chat {i} ({how}): top-10 ids {'equal' if top == want['ids'] else 'DIFFER'}, "
              f"worst relative error {worst:.2e}, logsumexp relative error {lse_err:.2e}")
        if top != want["ids"] or worst > TOL or lse_err > TOL:
            failures.append(f"chat {i}: logits")
    return report(failures)


def report(failures):
    if failures:
        print("FAILED: " + "; ".join(failures))
        return 1
    print("ok")
    return 0


if __name__ == "__main__":
    sys.exit(main())
