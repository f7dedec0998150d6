"""Driver for `npm run bench llama_step`: the JAX peer's LoRA step (../shared/peers/jax_lora.py) at a small size on CPU.

Usage: jax_lora_step.py PEER_PATH LAYERS HIDDEN FFN HEADS SEQ BATCH STEPS WARMUP. Builds the step exactly as the
peer's run() does (its init, loss_fn, optax AdamW, donated state) and prints one JSON line: median wall time and
median process CPU time (all threads) per step, compile time, loss. CPU time is reported because a shared machine
stretches wall time unevenly.
"""
import functools, importlib.util, json, os, sys, time

os.environ.setdefault("JAX_PLATFORMS", "cpu")
peer_path = sys.argv[1]
L, d, f, H, seq, batch, steps, warmup = map(int, sys.argv[2:10])
spec = importlib.util.spec_from_file_location("jax_lora", peer_path)
peer = importlib.util.module_from_spec(spec)
spec.loader.exec_module(peer)
import jax, optax  # noqa: E402  (after the peer, which imports them the same way)

cfg = dict(L=L, d=d, f=f, H=H)
peer.SIZES["bench"] = cfg
frozen, lora = peer.init(cfg)
opt = optax.adamw(1e-4)
state = opt.init(lora)

@functools.partial(jax.jit, donate_argnums=(0, 1))
def step(lora, state, frozen, tokens):
    loss, g = jax.value_and_grad(peer.loss_fn)(lora, frozen, tokens, H, None, False)
    upd, state = opt.update(g, state, lora)
    return optax.apply_updates(lora, upd), state, loss

tokens = jax.random.randint(jax.random.key(1), (batch, seq + 1), 0, peer.V)
t0 = time.perf_counter()
compiled = step.lower(lora, state, frozen, tokens).compile()
compile_s = time.perf_counter() - t0
wall, cpu = [], []
for i in range(warmup + steps):
    t, c = time.perf_counter(), time.process_time()
    lora, state, loss = compiled(lora, state, frozen, tokens)
    loss.block_until_ready()
    wall.append(time.perf_counter() - t)
    cpu.append(time.process_time() - c)
med = lambda xs: sorted(xs[warmup:])[len(xs[warmup:]) // 2]
print(json.dumps(dict(peer="jax", version=jax.__version__, stepS=med(wall), cpuS=med(cpu), compileS=compile_s, loss=float(loss))), flush=True)
