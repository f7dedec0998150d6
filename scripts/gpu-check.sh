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

# Unpacks the bundle into the tree and a scratch folder, then exports NODE (the carried binary).
unpack() {
  [[ -f "$BUNDLE/node.xz" ]] || die "no $BUNDLE/node.xz: run 'scripts/gpu-check.sh pack' here, and carry .device"
  local work="${GPU_CHECK_WORK:-/tmp/tessera-gpu-check}"
  mkdir -p "$work/bin"
  if [[ ! -x "$work/bin/node" ]]; then
    unxz_to "$BUNDLE/node.xz" "$work/bin/node"
    chmod +x "$work/bin/node"
  fi
  NODE="$work/bin/node"
  export PATH="$work/bin:$PATH"
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

case "${1:-}" in
  pack) pack ;;
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
  *) sed -n '2,20p' "${BASH_SOURCE[0]}"; exit 2 ;;
esac
