#!/usr/bin/env bash
# Runs the runtime test suite (test/runtime) against the CUDA PJRT plugin on the H200 test machine.
#
#   here:  scripts/gpu-check.sh pack       fill .device/ (ignored by git): a Node binary, the trimmed
#                                          node_modules, the built addon and pjrt_c_api.h, all packed
#   there: bash scripts/gpu-check.sh run   through the device tool, with carry [".device"]; the log
#                                          comes back as $OUT/gpu-check.log
#   there: bash scripts/gpu-check.sh cudnn only test/runtime/cudnn_attention.test.ts: cuDNN flash attention
#                                          (the __cudnn$fmhaSoftmax custom calls) against plain and
#                                          blockwise attention, value and dq/dk/dv, max errors printed
#   here:  scripts/gpu-check.sh dry-run    'run' in a scratch copy of the repo on this machine, with
#                                          the CPU plugin in place of the CUDA one: checks the script
#                                          and the carried bundle, not the GPU
#
#   here:  scripts/gpu-check.sh pack-bench fill .device/ for `npm run bench gpu` without node_modules: the
#                                          Node binary, the addon, bench/gpu.bench.ts bundled by esbuild
#                                          into plain JS (.device/bench/js/gpu_bench.mjs) and a copy of
#                                          ../shared/peers (which the device tool does not carry)
#   there: bash scripts/gpu-check.sh bench Tessera's 7B LoRA step at seq 4096 (16 GiB) and 16384 (20 GiB)
#                                          beside the JAX (cuDNN) and HF + PEFT peers, one process per spec,
#                                          time-boxed; tok/s and peak memory, partial results in
#                                          $OUT/gpu-bench.jsonl, the table in $OUT/gpu-bench.txt. Env:
#                                          BENCH_GPU_SPECS, BENCH_GPU_SPEC_TIMEOUT, BENCH_GPU_TOTAL
#   here:  scripts/gpu-check.sh bench-dry-run  'bench' in a scratch copy with the CPU plugin and the peers'
#                                          tiny shape (BENCH_GPU_SIZE=tiny; the JAX peer on CPU from the
#                                          bench venv), and both peers' scripts compiled by python3
#
# That machine has no Node and no network. Its CUDA plugin is jax-cuda13-pjrt 0.11.2 (PJRT C API
# 0.115) under /opt/torch/.venv; the NVIDIA libraries it links come from the pip packages beside it
# (nvidia/*/lib) and are put on LD_LIBRARY_PATH before Node starts (the loader reads it only then),
# and XLA_FLAGS=--xla_gpu_cuda_data_dir names a CUDA directory holding bin/ptxas and nvvm/libdevice,
# as docs/runtime.md and ../shared/notes/pjrt.md say. Env overrides: TESSERA_SITE_PACKAGES,
# TESSERA_PJRT_PLUGIN, CUDA_ROOT, GPU_CHECK_TESTS (default test/runtime).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
BUNDLE="$ROOT/.device"
say() { echo "gpu-check: $*"; }
die() { echo "gpu-check: ERROR: $*" >&2; exit 1; }

# Packages the runtime tests do not load: the type checker, ts-morph, zod, esbuild, CSS tooling.
PRUNE=(typescript ts-morph @ts-morph zod @types @esbuild esbuild tsx lightningcss lightningcss-linux-x64-gnu)

pack() {
  local addon="$ROOT/native/build/tessera_pjrt.node"
  local cache="${TESSERA_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/tessera}"
  local header="$cache/pjrt/xla-cpu-pjrt-0.0.1/include/pjrt_c_api.h"
  [[ -f "$addon" ]] || die "no addon at $addon: run npm install first"
  [[ -f "$header" ]] || die "no pjrt_c_api.h at $header: run npm install first"
  command -v xz >/dev/null || die "xz is needed to pack"
  rm -rf "$BUNDLE" && mkdir -p "$BUNDLE"
  say "packing $(node --version) from $(command -v node)"
  xz -T0 -6 -c "$(readlink -f "$(command -v node)")" >"$BUNDLE/node.xz"
  local excludes=()
  for p in "${PRUNE[@]}"; do excludes+=("--exclude=node_modules/$p"); done
  say "packing node_modules without: ${PRUNE[*]}"
  tar -C "$ROOT" "${excludes[@]}" --exclude='node_modules/.vite' --exclude='node_modules/.vitest' \
    -cf - node_modules | xz -T0 -6 -c >"$BUNDLE/node_modules.tar.xz"
  cp "$addon" "$BUNDLE/tessera_pjrt.node"
  cp "$header" "$BUNDLE/pjrt_c_api.h"
  node --version >"$BUNDLE/NODE_VERSION"
  local kib
  kib=$(du -sk "$BUNDLE" | cut -f1)
  say "bundle: $(du -sh "$BUNDLE" | cut -f1) in $BUNDLE"
  ls -l "$BUNDLE"
  (( kib < 56 * 1024 )) || die "the bundle is over 56 MiB; the device tool carries 64 MiB with the tree"
}

unxz_to() {  # unxz_to FILE.xz DEST
  if command -v xz >/dev/null; then xz -dc "$1" >"$2"
  else python3 -c 'import lzma, shutil, sys; shutil.copyfileobj(lzma.open(sys.argv[1]), open(sys.argv[2], "wb"), 1 << 20)' "$1" "$2"
  fi
}

# The carried Node binary, unpacked once into a scratch folder: exports NODE and puts it on PATH.
unpack_node() {
  [[ -f "$BUNDLE/node.xz" ]] || die "no $BUNDLE/node.xz: run 'scripts/gpu-check.sh pack' (or pack-bench) here, and carry .device"
  local work="${GPU_CHECK_WORK:-/tmp/tessera-gpu-check}"
  mkdir -p "$work/bin"
  if [[ ! -x "$work/bin/node" ]]; then
    unxz_to "$BUNDLE/node.xz" "$work/bin/node"
    chmod +x "$work/bin/node"
  fi
  NODE="$work/bin/node"
  export PATH="$work/bin:$PATH"
}

# Unpacks the bundle into the tree and a scratch folder, then exports NODE (the carried binary).
unpack() {
  unpack_node
  local work="${GPU_CHECK_WORK:-/tmp/tessera-gpu-check}"
  if [[ ! -d "$ROOT/node_modules/vitest" ]]; then
    say "unpacking node_modules"
    unxz_to "$BUNDLE/node_modules.tar.xz" "$work/node_modules.tar"
    tar -C "$ROOT" -xf "$work/node_modules.tar"
    rm -f "$work/node_modules.tar"
  fi
  mkdir -p "$ROOT/native/build"
  cp "$BUNDLE/tessera_pjrt.node" "$ROOT/native/build/tessera_pjrt.node"
  # A cache with only the header: the fake-plugin tests build against it; CPU-plugin tests skip.
  export TESSERA_CACHE_DIR="$work/cache"
  mkdir -p "$TESSERA_CACHE_DIR/pjrt/xla-cpu-pjrt-0.0.1/include"
  cp "$BUNDLE/pjrt_c_api.h" "$TESSERA_CACHE_DIR/pjrt/xla-cpu-pjrt-0.0.1/include/pjrt_c_api.h"
  say "node $("$NODE" --version) (built for $(cat "$BUNDLE/NODE_VERSION"))"
}

site_packages() {
  if [[ -n "${TESSERA_SITE_PACKAGES:-}" ]]; then echo "$TESSERA_SITE_PACKAGES"; return; fi
  local sp=/opt/torch/.venv/lib/python3.12/site-packages
  if [[ -d "$sp/jax_plugins" ]]; then echo "$sp"; return; fi
  python3 - <<'EOF' 2>/dev/null || true
import os, jax_plugins.xla_cuda13 as p
print(os.path.dirname(os.path.dirname(os.path.dirname(p.__file__))))
EOF
}

# The CUDA environment: plugin path, NVIDIA libraries on LD_LIBRARY_PATH, XLA_FLAGS.
cuda_env() {
  local sp
  sp="$(site_packages)"
  [[ -n "$sp" && -d "$sp" ]] || die "no site-packages with jax_plugins found (set TESSERA_SITE_PACKAGES)"
  say "site-packages: $sp"
  export TESSERA_PJRT_PLUGIN="${TESSERA_PJRT_PLUGIN:-$sp/jax_plugins/xla_cuda13/xla_cuda_plugin.so}"
  [[ -f "$TESSERA_PJRT_PLUGIN" ]] || die "no CUDA plugin at $TESSERA_PJRT_PLUGIN"
  local libs=() d
  for d in "$sp"/nvidia/*/lib "$sp"/nvidia/cu13/lib64; do [[ -d "$d" ]] && libs+=("$d"); done
  (( ${#libs[@]} > 0 )) || say "warning: no nvidia/*/lib folders under $sp"
  local joined
  joined="$(IFS=:; echo "${libs[*]:-}")"
  export LD_LIBRARY_PATH="${joined}${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
  # bin/ptxas and nvvm/libdevice: $CUDA_ROOT, the pip CUDA packages, the system toolkit (JAX's order).
  local nvcc_root=""
  command -v nvcc >/dev/null && nvcc_root="$(dirname "$(dirname "$(readlink -f "$(command -v nvcc)")")")"
  local cuda_dir=""
  for d in "${CUDA_ROOT:-}" "$sp/nvidia/cu13" "$sp/nvidia/cuda_nvcc" "$nvcc_root" /usr/local/cuda /usr/local/cuda-13*; do
    [[ -n "$d" && -x "$d/bin/ptxas" && -d "$d/nvvm/libdevice" ]] && { cuda_dir="$d"; break; }
  done
  if [[ -n "$cuda_dir" ]]; then
    export XLA_FLAGS="--xla_gpu_cuda_data_dir=$cuda_dir${XLA_FLAGS:+ $XLA_FLAGS}"
  else
    say "warning: no CUDA dir with bin/ptxas and nvvm/libdevice found; XLA may fail to compile for the GPU"
  fi
  say "plugin: $TESSERA_PJRT_PLUGIN"
  say "XLA_FLAGS=${XLA_FLAGS:-}"
  say "LD_LIBRARY_PATH=$LD_LIBRARY_PATH"
  command -v nvidia-smi >/dev/null && nvidia-smi -L || true
}

run_tests() {
  local out="${OUT:-/tmp/tessera-gpu-check-out}"
  mkdir -p "$out"
  local tests="${GPU_CHECK_TESTS:-test/runtime}"
  say "running vitest on $tests (plugin ${TESSERA_PJRT_PLUGIN:-default})"
  cd "$ROOT"
  set +e
  # shellcheck disable=SC2086
  "$NODE" node_modules/vitest/vitest.mjs run $tests --reporter=verbose 2>&1 | tee "$out/gpu-check.log"
  local rc=${PIPESTATUS[0]}
  set -e
  say "vitest exited with $rc; log in $out/gpu-check.log"
  return "$rc"
}

dry_run() {
  # A scratch copy of the tracked tree plus the bundle, run with the CPU plugin and no GPU.
  local scratch="${GPU_CHECK_SCRATCH:-/tmp/tessera-gpu-dry-run}"
  [[ -d "$BUNDLE" ]] || pack
  rm -rf "$scratch" && mkdir -p "$scratch"
  git -C "$ROOT" ls-files -z | (cd "$ROOT" && xargs -0 tar -cf - --) | tar -C "$scratch" -xf -
  cp -r "$BUNDLE" "$scratch/.device"
  local cpu="${TESSERA_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/tessera}/pjrt/xla-cpu-pjrt-0.0.1/xla_cpu_pjrt.so"
  say "dry run in $scratch with the CPU plugin $cpu"
  (cd "$scratch" && TESSERA_PJRT_PLUGIN="$cpu" GPU_CHECK_WORK="$scratch/.work" bash scripts/gpu-check.sh run --cpu)
}

# Packs what `bench` needs and nothing of node_modules: the code is one esbuild bundle of plain JS.
pack_bench() {
  local addon="$ROOT/native/build/tessera_pjrt.node"
  local esbuild="$ROOT/node_modules/.bin/esbuild"
  local peers="${BENCH_PEERS_DIR:-$ROOT/../shared/peers}"
  [[ -f "$addon" ]] || die "no addon at $addon: run npm install first"
  [[ -x "$esbuild" ]] || die "no esbuild at $esbuild (it comes with tsx): run npm install first"
  [[ -f "$peers/jax_lora.py" && -f "$peers/hf_peft.py" ]] || die "no peers' scripts in $peers (set BENCH_PEERS_DIR)"
  command -v xz >/dev/null || die "xz is needed to pack"
  rm -rf "$BUNDLE" && mkdir -p "$BUNDLE/bench/js" "$BUNDLE/bench/peers"
  say "packing $(node --version) from $(command -v node)"
  xz -T0 -6 -c "$(readlink -f "$(command -v node)")" >"$BUNDLE/node.xz"
  node --version >"$BUNDLE/NODE_VERSION"
  cp "$addon" "$BUNDLE/tessera_pjrt.node"
  # Three folders down from the root, so the bundle's import.meta.url-relative paths (../../../native/build for
  # the addon) land where they do from src/backend/runtime; the .proto files it reads sit beside it.
  say "bundling bench/gpu.bench.ts with esbuild $("$esbuild" --version)"
  "$esbuild" "$ROOT/bench/gpu.bench.ts" --bundle --platform=node --format=esm --target=node20 \
    --outfile="$BUNDLE/bench/js/gpu_bench.mjs" --log-level=warning --legal-comments=none \
    --banner:js="import { createRequire as __tesseraCreateRequire } from 'node:module'; const require = __tesseraCreateRequire(import.meta.url);"
  cp "$ROOT"/src/backend/runtime/*.proto "$BUNDLE/bench/js/"
  cp "$peers/jax_lora.py" "$peers/hf_peft.py" "$peers/README.md" "$BUNDLE/bench/peers/"
  local kib
  kib=$(du -sk "$BUNDLE" | cut -f1)
  say "bundle: $(du -sh "$BUNDLE" | cut -f1) in $BUNDLE"
  ls -lR "$BUNDLE"
  (( kib < 56 * 1024 )) || die "the bundle is over 56 MiB; the device tool carries 64 MiB with the tree"
}

# Runs the bundled bench: NODE from unpack_node, the addon put where the bundle loads it.
run_bench() {
  [[ -f "$BUNDLE/bench/js/gpu_bench.mjs" ]] || die "no $BUNDLE/bench/js/gpu_bench.mjs: run 'scripts/gpu-check.sh pack-bench' here, and carry .device"
  mkdir -p "$ROOT/native/build"
  cp "$BUNDLE/tessera_pjrt.node" "$ROOT/native/build/tessera_pjrt.node"
  local out="${OUT:-/tmp/tessera-gpu-bench-out}"
  mkdir -p "$out"
  export OUT="$out" BENCH_PEERS_DIR="${BENCH_PEERS_DIR:-$BUNDLE/bench/peers}"
  export TESSERA_CACHE_DIR="${TESSERA_CACHE_DIR:-${GPU_CHECK_WORK:-/tmp/tessera-gpu-check}/cache}"
  say "bench: $NODE $BUNDLE/bench/js/gpu_bench.mjs (plugin ${TESSERA_PJRT_PLUGIN:-default}, python ${BENCH_PYTHON:-python3}, out $out)"
  cd "$ROOT"
  set +e
  "$NODE" "$BUNDLE/bench/js/gpu_bench.mjs"
  local rc=$?
  set -e
  say "bench exited with $rc; results in $out/gpu-bench.jsonl, table in $out/gpu-bench.txt, log in $out/gpu-bench.log"
  return "$rc"
}

bench_dry_run() {
  local scratch="${GPU_CHECK_SCRATCH:-/tmp/tessera-gpu-bench-dry-run}"
  pack_bench
  for f in "$BUNDLE"/bench/peers/*.py; do
    python3 -m py_compile "$f" && say "python3 compiles $(basename "$f")"
  done
  rm -rf "$scratch" && mkdir -p "$scratch"
  git -C "$ROOT" ls-files -z | (cd "$ROOT" && xargs -0 tar -cf - --) | tar -C "$scratch" -xf -
  cp -r "$BUNDLE" "$scratch/.device"
  local cache="${TESSERA_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/tessera}"
  local cpu="$cache/pjrt/xla-cpu-pjrt-0.0.1/xla_cpu_pjrt.so"
  local py="$cache/bench-venv/bin/python"
  [[ -x "$py" ]] || py=python3
  say "bench dry run in $scratch (no node_modules there) with the CPU plugin $cpu and the peers' tiny shape"
  (cd "$scratch" && TESSERA_PJRT_PLUGIN="$cpu" GPU_CHECK_WORK="$scratch/.work" BENCH_GPU_SIZE=tiny \
    BENCH_PYTHON="$py" OUT="${OUT:-$scratch/out}" bash scripts/gpu-check.sh bench --cpu)
}

case "${1:-}" in
  pack) pack ;;
  pack-bench) pack_bench ;;
  bench)
    unpack_node
    if [[ "${2:-}" == "--cpu" ]]; then say "CPU mode: no CUDA environment"; else cuda_env; fi
    run_bench
    ;;
  bench-dry-run) bench_dry_run ;;
  run)
    unpack
    if [[ "${2:-}" == "--cpu" ]]; then say "CPU mode: no CUDA environment"; else cuda_env; fi
    run_tests
    ;;
  cudnn)
    unpack
    cuda_env
    GPU_CHECK_TESTS=test/runtime/cudnn_attention.test.ts run_tests
    ;;
  dry-run) dry_run ;;
  *) sed -n '2,33p' "${BASH_SOURCE[0]}"; exit 2 ;;
esac
