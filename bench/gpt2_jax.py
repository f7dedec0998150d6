"""The GPT-2 of examples/gpt2.ts written in JAX + optax, for test/examples/gpt2_jax.test.ts.

Usage: gpt2_jax.py IN.json OUT.json. IN holds the model config, the initial params (a tree whose leaves are
{"shape", "data"}), the optimizer settings and a list of batches ({"ids", "targets"}, each [B, T] int lists).
OUT gets the loss and gradients at the initial params on the first batch, then the loss of each optimizer step
(one batch per step) and the params after the last, leaves in the same {"shape", "data"} form.

Written independently of Tessera from GPT-2's definition: learned positional embeddings, pre-LN blocks, causal
multi-head attention with a fused qkv projection, GELU (tanh form) MLP, final layer norm, head tied to the token
embeddings; loss is the mean next-token cross-entropy; the optimizer is optax's clip_by_global_norm then adamw on
warmup_cosine_decay_schedule. Dropout is off (evaluation-mode forward), as in the comparison.
"""
import json, os, sys

os.environ.setdefault("JAX_PLATFORMS", "cpu")
import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import optax  # noqa: E402


def is_leaf(x):
    return isinstance(x, dict) and set(x) == {"shape", "data"}


def to_jax(tree):
    return jax.tree.map(lambda l: jnp.asarray(np.asarray(l["data"], np.float32).reshape(l["shape"])), tree, is_leaf=is_leaf)


def to_json(tree):
    return jax.tree.map(lambda a: {"shape": list(a.shape), "data": np.asarray(a, np.float32).ravel().tolist()}, tree)


def layer_norm(x, p, eps=1e-5):
    mu = x.mean(-1, keepdims=True)
    var = ((x - mu) ** 2).mean(-1, keepdims=True)
    return (x - mu) / jnp.sqrt(var + eps) * p["scale"] + p["bias"]


def attention(x, p, heads):
    b, t, d = x.shape
    hd = d // heads
    q, k, v = jnp.split(x @ p["wqkv"] + p["bqkv"], 3, axis=-1)
    q, k, v = (a.reshape(b, t, heads, hd) for a in (q, k, v))
    scores = jnp.einsum("bqhd,bkhd->bhqk", q, k) / jnp.sqrt(jnp.float32(hd))
    causal = jnp.tril(jnp.ones((t, t), bool))
    probs = jax.nn.softmax(jnp.where(causal, scores, -1e9), axis=-1)
    out = jnp.einsum("bhqk,bkhd->bqhd", probs, v).reshape(b, t, d)
    return out @ p["wo"] + p["bo"]


def mlp(x, p):
    return jax.nn.gelu(x @ p["wfc"] + p["bfc"], approximate=True) @ p["wproj"] + p["bproj"]


def forward(params, ids, cfg):
    t = ids.shape[1]
    h = params["wte"][ids] + params["wpe"][:t]
    for blk in params["blocks"]:
        h = h + attention(layer_norm(h, blk["ln1"]), blk["attn"], cfg["heads"])
        h = h + mlp(layer_norm(h, blk["ln2"]), blk["mlp"])
    return layer_norm(h, params["lnF"]) @ params["wte"].T


def loss_fn(params, ids, targets, cfg):
    logits = forward(params, ids, cfg)
    return optax.softmax_cross_entropy_with_integer_labels(logits, targets).mean()


def main():
    with open(sys.argv[1]) as f:
        inp = json.load(f)
    cfg, o = inp["config"], inp["opt"]
    params = to_jax(inp["params"])
    batches = [(jnp.asarray(b["ids"], jnp.int32), jnp.asarray(b["targets"], jnp.int32)) for b in inp["batches"]]

    value_and_grad = jax.jit(jax.value_and_grad(lambda p, x, y: loss_fn(p, x, y, cfg)))
    loss0, grads0 = value_and_grad(params, *batches[0])

    schedule = optax.warmup_cosine_decay_schedule(
        init_value=0.0, peak_value=o["peakLr"], warmup_steps=o["warmupSteps"], decay_steps=o["totalSteps"], end_value=0.0
    )
    opt = optax.chain(
        optax.clip_by_global_norm(o["maxGradNorm"]),
        optax.adamw(schedule, b1=0.9, b2=0.999, eps=1e-8, weight_decay=o["weightDecay"]),
    )
    state = opt.init(params)

    @jax.jit
    def step(p, s, x, y):
        loss, g = value_and_grad(p, x, y)
        updates, s = opt.update(g, s, p)
        return optax.apply_updates(p, updates), s, loss

    losses = []
    for x, y in batches:
        params, state, loss = step(params, state, x, y)
        losses.append(float(loss))

    out = {
        "jax": jax.__version__,
        "optax": optax.__version__,
        "loss": float(loss0),
        "grads": to_json(grads0),
        "step_losses": losses,
        "params": to_json(params),
    }
    with open(sys.argv[2], "w") as f:
        json.dump(out, f)


main()
