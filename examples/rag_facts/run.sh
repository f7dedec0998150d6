#!/usr/bin/env bash
# The README's worked example: SmolLM2-135M-Instruct answers RAG questions about made-up facts, before and after a LoRA fine-tune.
set -euo pipefail
cd "$(dirname "$0")/../.."
M=smollm2-135m-instruct
F=examples/rag_facts
OUT=${OUT:-rag-run}
npx tessera generate --model $M --file $F/ask.jsonl --max-new-tokens 40 2>/dev/null
npx tessera train --model $M --data $F/train.jsonl --eval-data $F/eval.jsonl --eval-every 15 \
  --steps 45 --batch 4 --lr 1e-3 --rank 16 --alpha 32 --log-every 5 --out "$OUT" --overwrite
npx tessera generate --model $M --adapter "$OUT/adapter" --file $F/ask.jsonl --max-new-tokens 40 2>/dev/null
npx tessera eval --model $M --data $F/eval.jsonl
npx tessera eval --model $M --adapter "$OUT/adapter" --data $F/eval.jsonl
