# Where an XLA CPU program spends its time: per-thunk wall time of one run of a StableHLO module, by HLO op.
#
# Usage: xla_profile.py MODULE.mlir [TOP]   (in the bench venv: ~/.cache/tessera/bench-venv/bin/python)
# MODULE.mlir is what Tessera lowers (e.g. `BENCH_DUMP_MLIR=step.mlir npm run bench train_text -- --child`, or
# `tessera compile --emit stablehlo`). The module is compiled by jaxlib's XLA CPU client with
# --xla_cpu_enable_xprof_traceme, run on random arguments (f32 N(0, 0.02), s32 ids below 49152, u32 zeros), and
# one run is traced with jax.profiler. Prints the TOP thunks by total time with their optimized-HLO shape and
# fused ops (a dot's operand shapes and GF/s), then totals per kind: library dots (__ynn_fusion / __onednn),
# dynamic-update-slice fusions, copies and transposes, the rest. Thunks may overlap (XLA runs independent ones
# concurrently), so the totals can exceed the wall time. Tessera's plugins have no profiler entry point; jaxlib's
# XLA is close to lammps-jax-pjrt-cpu's (both 0.10-0.11 era), so this is a guide, not Tessera's own timing.
import collections
import glob
import gzip
import json
import os
import re
import sys
import tempfile
import time

flags = os.environ.get("XLA_FLAGS", "")
out = tempfile.mkdtemp(prefix="xla_profile_")
os.environ["XLA_FLAGS"] = (
    f"{flags} --xla_cpu_enable_xprof_traceme=true --xla_dump_to={out}/hlo --xla_dump_hlo_as_text"
    " --xla_dump_hlo_pass_re=NONE"
)
os.environ.setdefault("JAX_PLATFORMS", "cpu")
import jax  # noqa: E402
import numpy as np  # noqa: E402
from jax._src import xla_bridge  # noqa: E402
from jax._src.lib import xla_client  # noqa: E402

text = open(sys.argv[1]).read()
top = int(sys.argv[2]) if len(sys.argv) > 2 else 40
backend = xla_bridge.get_backend("cpu")
device = backend.local_devices()[0]
exe = backend.compile_and_load(text, xla_client.DeviceList((device,)), xla_client.CompileOptions())
signature = re.search(r"func\.func public @main\((.*?)\) ->", text, re.S).group(1)
rng = np.random.default_rng(0)
args = []
for dims, dtype in re.findall(r"tensor<([0-9x]*)(f32|bf16|i32|ui32)>", signature):
    shape = tuple(int(d) for d in dims.split("x") if d)
    if dtype in ("f32", "bf16"):
        args.append((rng.standard_normal(shape) * 0.02).astype(np.float32 if dtype == "f32" else jax.numpy.bfloat16))
    elif dtype == "i32":
        args.append(rng.integers(0, 49152, shape).astype(np.int32))
    else:
        args.append(np.zeros(shape, np.uint32))


def run() -> float:
    buffers = [jax.device_put(a, device) for a in args]
    t = time.perf_counter()
    for o in exe.execute(buffers):
        o.block_until_ready()
    return time.perf_counter() - t


walls = [run() for _ in range(3)]
jax.profiler.start_trace(f"{out}/trace", create_perfetto_trace=True)
traced = run()
jax.profiler.stop_trace()
print(f"wall: {' '.join(f'{w:.3f}' for w in walls)} s untraced, {traced:.3f} s traced")

events = json.load(gzip.open(glob.glob(f"{out}/trace/**/*.trace.json.gz", recursive=True)[0]))["traceEvents"]
time_of = collections.defaultdict(lambda: [0, 0.0])
for e in events:
    if e.get("ph") == "X":
        time_of[e["name"]][0] += 1
        time_of[e["name"]][1] += e["dur"] / 1e3

# The optimized HLO: each instruction's computation and text, each computation's instructions.
hlo = open(glob.glob(f"{out}/hlo/*after_optimizations.txt")[0]).read()
computations, current = {}, None
for line in hlo.split("\n"):
    m = re.match(r"^(?:ENTRY )?%?([\w.\-]+) \(.*\{$", line)
    if m:
        current = computations.setdefault(m.group(1), [])
    elif line.startswith("}"):
        current = None
    elif current is not None:
        current.append(line.strip())
instructions, shapes = {}, {}
for lines in computations.values():
    for line in lines:
        m = re.match(r"(?:ROOT )?%?([\w.\-]+) = (\S+) (.*)", line)
        if m:
            instructions[m.group(1)] = m.group(3)
            shapes[m.group(1)] = m.group(2)


def elements(shape: str) -> int:
    dims = re.search(r"\[([\d,]*)\]", shape).group(1)
    return int(np.prod([int(d) for d in dims.split(",") if d])) if dims else 1


rows, kinds = [], collections.defaultdict(float)
for name, (count, ms) in time_of.items():
    if name not in instructions:
        continue
    rest = instructions[name]
    callee = re.search(r"calls=%?([\w.\-]+)", rest)
    body = computations.get(callee.group(1), []) if callee else []
    ops = collections.Counter(
        m.group(1) for m in (re.search(r"= \S+ ([\w\-]+)\(", line) for line in body) if m
    )
    for k in ("parameter", "bitcast", "constant", "get-tuple-element", "tuple"):
        ops.pop(k, None)
    detail = ""
    dot = next((line for line in body if " dot(" in line), None)
    if dot:
        m = re.search(r"= (\S+) dot\(%?([\w.\-]+), %?([\w.\-]+)\).*?lhs_contracting_dims=\{([\d,]*)\}", dot)
        lhs_dims = [int(d) for d in re.search(r"\[([\d,]*)\]", shapes[m.group(2)]).group(1).split(",") if d]
        k = int(np.prod([lhs_dims[int(d)] for d in m.group(4).split(",")]))
        flops = 2 * elements(m.group(1)) * k * count
        detail = f" dot {shapes[m.group(2)].split('{')[0]} x {shapes[m.group(3)].split('{')[0]}: {flops / ms / 1e6:.0f} GF/s"
    library = re.search(r'"kind":"(__\w+)"', rest)
    kind = (
        "library dot"
        if library
        else "dynamic-update-slice"
        if "dynamic-update-slice" in ops
        else "copy/transpose/broadcast"
        if ops and set(ops) <= {"copy", "transpose", "dynamic-slice", "broadcast"} or rest.startswith("copy(")
        else "loop"
        if rest.startswith("while(")
        else "other"
    )
    kinds[kind] += ms
    rows.append((ms, count, name, shapes[name].split("{")[0], dict(ops), detail))
for ms, count, name, shape, ops, detail in sorted(rows, reverse=True)[:top]:
    print(f"{ms:8.1f} ms {count:4d}x {name[:36]:36s} {shape[:30]:30s} {str(ops)[:60]}{detail}")
print("by kind (ms):", {k: round(v) for k, v in sorted(kinds.items(), key=lambda kv: -kv[1])})
