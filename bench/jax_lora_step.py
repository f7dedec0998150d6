"""Driver for `npm run bench llama_step`: runs ../shared/peers/jax_lora.py's LoRA step at a small size on CPU.

Usage: jax_lora_step.py PEER_PATH LAYERS HIDDEN FFN HEADS SEQ BATCH. Adds a "bench" entry to the peer's SIZES and
calls its run(); prints the peer's JSON line (median step time of 5 after 2 warm-ups, compile time, loss).
"""
import importlib.util, os, sys

os.environ.setdefault("JAX_PLATFORMS", "cpu")
peer_path, L, d, f, H, seq, batch = sys.argv[1], *map(int, sys.argv[2:8])
spec = importlib.util.spec_from_file_location("jax_lora", peer_path)
peer = importlib.util.module_from_spec(spec)
spec.loader.exec_module(peer)
peer.SIZES["bench"] = dict(L=L, d=d, f=f, H=H)
peer.run("bench", seq, batch, False, None)
