# The transformers peer of `npm run bench generate`: greedy generate on CPU in f32 from the same GGUF and prompt ids.
# Usage: hf_generate.py GGUF PROMPT_IDS_JSON NEW_TOKENS REPEATS BATCH...; prints one JSON line per batch size:
# {"batch", "prefill_s", "decode_s", "new_tokens", "output_ids"} (medians over REPEATS after one warm-up).
import json
import os
import statistics
import sys
import time

import torch
from transformers import AutoModelForCausalLM


def main() -> None:
    gguf, ids_json, new_tokens, repeats, *batches = sys.argv[1:]
    new_tokens, repeats = int(new_tokens), int(repeats)
    ids = json.loads(ids_json)
    torch.set_num_threads(os.cpu_count() or 1)
    model = AutoModelForCausalLM.from_pretrained(
        os.path.dirname(gguf), gguf_file=os.path.basename(gguf), dtype=torch.float32
    )
    model.eval()
    for b in map(int, batches):
        x = torch.tensor([ids] * b, dtype=torch.long)
        mask = torch.ones_like(x)

        def gen(n: int) -> torch.Tensor:
            with torch.inference_mode():
                return model.generate(
                    x,
                    attention_mask=mask,
                    do_sample=False,
                    max_new_tokens=n,
                    min_new_tokens=n,
                    pad_token_id=model.generation_config.eos_token_id,
                )

        gen(2)  # warm-up
        prefill, total = [], []
        out = None
        for _ in range(repeats):
            t = time.perf_counter()
            gen(1)
            prefill.append(time.perf_counter() - t)
            t = time.perf_counter()
            out = gen(new_tokens)
            total.append(time.perf_counter() - t)
        p = statistics.median(prefill)
        d = statistics.median(total) - p
        print(
            json.dumps(
                {
                    "batch": b,
                    "prefill_s": p,
                    "decode_s": d,
                    "new_tokens": new_tokens,
                    "output_ids": out[0, len(ids):].tolist(),
                }
            ),
            flush=True,
        )


main()
