"""Driver for `npm run bench compile`: times jax.jit(step).lower(...) of ../shared/peers/jax_lora.py's LoRA step on CPU.

Usage: jax_lower.py PEER_PATH LAYERS HIDDEN FFN HEADS SEQ BATCH REPS WARMUP. Every argument is a
jax.ShapeDtypeStruct (shapes from jax.eval_shape of the peer's init and optax's init), so no weights exist. Each
timed lowering uses a freshly defined step function and a fresh jax.jit after jax.clear_caches(), so no trace
cache is hit. Prints one JSON line: the median lowering time over REPS runs after WARMUP runs, the process's first
lowering (first_s), and the StableHLO size.
"""
import importlib.util, json, os, statistics, sys, time

os.environ.setdefault("JAX_PLATFORMS", "cpu")
peer_path, L, d, f, H, seq, batch, reps, warmup = sys.argv[1], *map(int, sys.argv[2:10])
try:
    import jax, jax.numpy as jnp, optax

    spec = importlib.util.spec_from_file_location("jax_lora", peer_path)
    peer = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(peer)
    cfg = dict(L=L, d=d, f=f, H=H)

    frozen, lora = jax.eval_shape(lambda: peer.init(cfg))
    state = jax.eval_shape(optax.adamw(1e-4).init, lora)
    tokens = jax.ShapeDtypeStruct((batch, seq + 1), jnp.int32)

    def make_step():
        # The peer's step exactly as run() builds it, defined afresh so that jit's caches keyed on it miss.
        opt = optax.adamw(1e-4)

        def step(lora, state, frozen, tokens):
            loss, g = jax.value_and_grad(peer.loss_fn)(lora, frozen, tokens, cfg["H"], None, False)
            upd, state = opt.update(g, state, lora)
            return optax.apply_updates(lora, upd), state, loss

        return jax.jit(step, donate_argnums=(0, 1))

    times, text_len, first = [], 0, None
    for i in range(warmup + reps):
        jax.clear_caches()
        step = make_step()
        t = time.perf_counter()
        lowered = step.lower(lora, state, frozen, tokens)
        dt = time.perf_counter() - t
        first = dt if first is None else first
        if i >= warmup:
            times.append(dt)
        if i == 0:
            text_len = len(lowered.as_text())
    print(json.dumps(dict(system="jax", jax=jax.__version__, lower_s=round(statistics.median(times), 4),
                          min_s=round(min(times), 4), first_s=round(first, 4), runs=reps,
                          stablehlo_chars=text_len)), flush=True)
except Exception as e:  # the bench still prints Tessera's numbers
    print(json.dumps(dict(system="jax", error=repr(e)[:400])), flush=True)
