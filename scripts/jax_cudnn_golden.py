# Writes JAX's StableHLO for cuDNN fused attention (forward and grad), lowered for the cuda platform on a CPU-only machine.
# Run with jax[cuda12]==0.10.2 in a venv outside the repo (see the docstring below); the output is a committed fixture.
"""
JAX's CPU-only wheel refuses to lower cuDNN attention ("cuDNN is not detected"); with the CUDA 12 plugin installed
it lowers for the cuda platform on a machine without a GPU (jax.export, custom-call safety check disabled). Not
part of npm test or CI (the venv is about 5.5 GB):

    python3 -m venv ~/.cache/tessera/jax-cuda-venv
    ~/.cache/tessera/jax-cuda-venv/bin/pip install "jax[cuda12]==0.10.2"
    ~/.cache/tessera/jax-cuda-venv/bin/python scripts/jax_cudnn_golden.py

writes test/models/fixtures/cudnn_attention/{forward,forward_nomask,grad}.mlir: the modules as JAX prints them,
less their source locations (which name this machine's paths). test/models/cudnn_attention.test.ts diffs
Tessera's emitted custom calls against them.
"""
import os
import re
import sys

import jax
import jax.numpy as jnp
from jax import export

B, T, N, K, H = 2, 256, 4, 2, 64  # batch, sequence, query heads, KV heads (GQA 2), head dim


def forward(q, k, v):
    return jax.nn.dot_product_attention(q, k, v, is_causal=True, implementation="cudnn")


def forward_nomask(q, k, v):
    return jax.nn.dot_product_attention(q, k, v, is_causal=False, implementation="cudnn")


def loss(q, k, v, w):
    return jnp.sum(forward(q, k, v).astype(jnp.float32) * w)


grad = jax.grad(loss, argnums=(0, 1, 2))


def main(out_dir: str) -> None:
    os.makedirs(out_dir, exist_ok=True)
    q = jax.ShapeDtypeStruct((B, T, N, H), jnp.bfloat16)
    kv = jax.ShapeDtypeStruct((B, T, K, H), jnp.bfloat16)
    w = jax.ShapeDtypeStruct((B, T, N, H), jnp.float32)
    checks = [export.DisabledSafetyCheck.custom_call(t) for t in ("__cudnn$fmhaSoftmax", "__cudnn$fmhaSoftmaxBackward")]
    runs = (("forward", forward, (q, kv, kv)), ("forward_nomask", forward_nomask, (q, kv, kv)), ("grad", grad, (q, kv, kv, w)))
    for name, f, args in runs:
        exp = export.export(jax.jit(f), platforms=["cuda"], disabled_checks=checks)(*args)
        text = exp.mlir_module()
        # Source locations name this machine's paths: drop the #loc definitions and every loc(...) use.
        text = "\n".join(line for line in text.splitlines() if not line.startswith("#loc")) + "\n"
        text = re.sub(r" loc\((?:[^()]|\([^()]*\))*\)", "", text)
        with open(os.path.join(out_dir, f"{name}.mlir"), "w") as fh:
            fh.write(text)
        print(name, len(text), "chars")


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "test/models/fixtures/cudnn_attention")
