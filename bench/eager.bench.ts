// `npm run bench eager`: per-op eager dispatch overhead (1000 small adds on device arrays, outside any jit) next to JAX's eager dispatch on CPU.
// Rounds alternate Tessera and JAX (a fresh Python process each); each figure is the best chunk of its rounds, so a
// busy machine slows both sides alike rather than one of them.
import { execa } from "execa";
import { array, type DeviceArray } from "../src/index.ts";
import { eagerCounters } from "../src/frontend/eager.ts";
import { jaxPython } from "./jax_peer.ts";

const ROUNDS = Number(process.env.BENCH_ROUNDS ?? 3);
const CHUNKS = 10;
const OPS = 1_000; // per chunk

// The same loops as a JAX user writes them: jnp ops on arrays outside jit, blocking once per chunk.
const JAX_SCRIPT = `
import json, sys, time
import numpy as np
import jax, jax.numpy as jnp
chunks, ops = (int(a) for a in sys.argv[1:3])
x = jnp.zeros(4, jnp.float32)
y = jnp.ones(4, jnp.float32)
for _ in range(ops): x = x + y; x = x + 1.0
x.block_until_ready()
arr, num = [], []
for _ in range(chunks):
    t = time.perf_counter()
    for _ in range(ops): x = x + y
    x.block_until_ready()
    arr.append((time.perf_counter() - t) / ops)
for _ in range(chunks):
    t = time.perf_counter()
    for _ in range(ops): x = x + 1.0
    x.block_until_ready()
    num.append((time.perf_counter() - t) / ops)
print(json.dumps({"version": jax.__version__, "arrays_s": min(arr), "number_s": min(num), "x0": float(x[0])}))
`;

interface Figures {
  arraysUs: number;
  numberUs: number;
}

async function tessera(): Promise<Figures> {
  let x: DeviceArray = array(new Float32Array(4));
  const y = array(new Float32Array([1, 1, 1, 1]));
  for (let i = 0; i < OPS; i++) x = x.add(y).add(1);
  await x.toArray();
  let arrays = Infinity;
  for (let c = 0; c < CHUNKS; c++) {
    const t = performance.now();
    for (let i = 0; i < OPS; i++) x = x.add(y);
    await x.toArray();
    arrays = Math.min(arrays, (performance.now() - t) / OPS);
  }
  let number = Infinity;
  for (let c = 0; c < CHUNKS; c++) {
    const t = performance.now();
    for (let i = 0; i < OPS; i++) x = x.add(1);
    await x.toArray();
    number = Math.min(number, (performance.now() - t) / OPS);
  }
  const v = (await x.toArray())[0];
  if (v !== OPS * 2 + OPS * CHUNKS * 2) throw new Error(`eager adds computed ${v}`);
  return { arraysUs: arrays * 1000, numberUs: number * 1000 };
}

async function jax(py: string): Promise<Figures & { version: string }> {
  const r = await execa(py, ["-c", JAX_SCRIPT, String(CHUNKS), String(OPS)], {
    env: { JAX_PLATFORMS: "cpu", TF_CPP_MIN_LOG_LEVEL: "2" },
    all: true,
  });
  const j = JSON.parse(r.stdout.trim().split("\n").at(-1)!) as {
    version: string;
    arrays_s: number;
    number_s: number;
    x0: number;
  };
  if (j.x0 !== OPS * 2 + OPS * CHUNKS * 2) throw new Error(`JAX's eager adds computed ${j.x0}`);
  return { version: j.version, arraysUs: j.arrays_s * 1e6, numberUs: j.number_s * 1e6 };
}

async function main(): Promise<void> {
  const py = await jaxPython();
  const ours: Figures[] = [];
  const theirs: Figures[] = [];
  let version = "";
  for (let round = 1; round <= ROUNDS; round++) {
    ours.push(await tessera());
    if (py) {
      const j = await jax(py);
      version = j.version;
      theirs.push(j);
    }
    console.log(`bench: round ${round}/${ROUNDS} done`);
  }
  const best = (xs: Figures[], k: keyof Figures) => Math.min(...xs.map((x) => x[k]));
  console.log(
    `\neager: per-op dispatch, ${OPS} dependent f32[4] adds per chunk, best of ${CHUNKS} chunks x ${ROUNDS} rounds; ` +
      `Tessera (${eagerCounters.programs} one-op programs compiled) vs JAX ${version || "n/a"} on CPU`,
  );
  const rows: [string, keyof Figures][] = [
    ["x = x.add(y)      (two arrays)", "arraysUs"],
    ["x = x.add(1)      (array and number)", "numberUs"],
  ];
  console.log(`${"".padEnd(38)}${"Tessera".padStart(10)}${"JAX".padStart(10)}${"ratio".padStart(8)}`);
  for (const [label, k] of rows) {
    const t = best(ours, k);
    const j = theirs.length ? best(theirs, k) : undefined;
    console.log(
      `${label.padEnd(38)}${`${t.toFixed(1)} us`.padStart(10)}${(j === undefined ? "n/a" : `${j.toFixed(1)} us`).padStart(10)}${(j === undefined ? "" : `${(t / j).toFixed(2)}x`).padStart(8)}`,
    );
  }
}

await main();
