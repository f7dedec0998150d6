// `npm run bench generate`: SmolLM2-135M-Instruct greedy decoding on CPU in f32, Tessera's KV-cache decoder vs transformers' generate.
// Same GGUF (dequantized to f32 by both), same 37-token chat prompt (the fixture's first), batch 1 and 8, NEW_TOKENS new
// tokens per row (EOS ignored, so every run decodes the same count). Decode tok/s = rows x decode steps / their time;
// prefill tok/s = rows x prompt tokens / the prefill's time. Tessera runs in a child process per PJRT plugin (the
// default first), compiling before timing; transformers (torch, f32, all cores) from ~/.cache/tessera/bench-venv.
// Each side: median of REPEATS runs after a warm-up; rounds alternate the sides and each keeps its best round.
import { readFileSync } from "node:fs";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import { execa } from "execa";
import { torchPython } from "./torch_peer.ts";
import { DEFAULT_PLUGIN } from "../src/backend/runtime/plugins.ts";
import { ensureModel } from "../src/formats/model_fetch.ts";

const here = dirname(fileURLToPath(import.meta.url));
const FIXTURE = resolve(here, "../../shared/fixtures/smollm2-135m/expected.json");
const ROUNDS = Number(process.env.BENCH_ROUNDS ?? 1);
const REPEATS = Number(process.env.BENCH_REPEATS ?? 3);
const NEW_TOKENS = Number(process.env.BENCH_NEW_TOKENS ?? 32);
const BATCHES = [1, 8];
const PLUGINS = process.env.BENCH_PLUGINS?.split(",") ?? [
  DEFAULT_PLUGIN,
  ...["xla-cpu-pjrt", "lammps-jax-pjrt-cpu"].filter((p) => p !== DEFAULT_PLUGIN),
];

interface Result {
  batch: number;
  prefill_s: number;
  decode_s: number;
  new_tokens: number;
}

const promptIds = (): number[] =>
  (JSON.parse(readFileSync(FIXTURE, "utf8")) as { chats: { prompt_ids: number[] }[] }).chats[0]!.prompt_ids;

const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;

/** In the child: Tessera's figures for each batch size, one JSON line each (one CPU device, as `tessera generate`). */
async function child(): Promise<void> {
  (await import("../src/backend/runtime/client.ts")).setDefaultCpuDevices(1);
  const { loadGenerator } = await import("../src/cli/generate.ts");
  const { resolveModel } = await import("../src/formats/model_fetch.ts");
  const { LlamaDecoder } = await import("../models/llama_decode.ts");
  const g = await loadGenerator(await resolveModel("smollm2-135m-instruct"));
  const ids = promptIds();
  for (const B of BATCHES) {
    const P = Math.ceil(ids.length / 16) * 16;
    const dec = new LlamaDecoder(g.config, g.weights, { batch: B, promptLen: P, maxLen: P + NEW_TOKENS - 1 });
    await dec.compile();
    const prompts = Array.from({ length: B }, () => ids);
    await dec.generate(prompts, { maxNewTokens: 2, eosIds: [] }); // warm-up
    const prefill: number[] = [],
      decode: number[] = [];
    for (let i = 0; i < REPEATS; i++) {
      const r = await dec.generate(prompts, { maxNewTokens: NEW_TOKENS, eosIds: [] });
      prefill.push(r.stats.prefillSeconds);
      decode.push(r.stats.decodeSeconds);
    }
    const out: Result = { batch: B, prefill_s: median(prefill), decode_s: median(decode), new_tokens: NEW_TOKENS };
    console.log(JSON.stringify(out));
  }
}

function parseLines(stdout: string, what: string, all: string): Result[] {
  const rows = stdout
    .split("\n")
    .filter((l) => l.startsWith("{"))
    .map((l) => JSON.parse(l) as Result);
  if (rows.length !== BATCHES.length) throw new Error(`${what} failed:\n${all.split("\n").slice(-8).join("\n")}`);
  return rows;
}

async function tessera(plugin: string): Promise<Result[]> {
  const r = await execa(process.execPath, ["--import", "tsx", fileURLToPath(import.meta.url), "--child"], {
    env: { TESSERA_PJRT_PLUGIN: plugin, TF_CPP_MIN_LOG_LEVEL: "2" },
    all: true,
    reject: false,
  });
  return parseLines(r.stdout, `tessera (${plugin})`, String(r.all));
}

async function transformers(py: string, gguf: string): Promise<Result[]> {
  const args = [join(here, "hf_generate.py"), gguf, JSON.stringify(promptIds()), String(NEW_TOKENS), String(REPEATS)];
  const r = await execa(py, [...args, ...BATCHES.map(String)], { all: true, reject: false });
  return parseLines(r.stdout, "transformers", String(r.all));
}

const decodeRate = (r: Result) => (r.batch * (r.new_tokens - 1)) / r.decode_s;
const prefillRate = (r: Result, promptLen: number) => (r.batch * promptLen) / r.prefill_s;

async function main(): Promise<void> {
  const gguf = (await ensureModel("smollm2-135m-instruct", (l) => console.log(`bench: ${l}`))).path;
  const py = await torchPython();
  const ours = new Map<string, Result[][]>(PLUGINS.map((p) => [p, []]));
  const theirs: Result[][] = [];
  for (let round = 1; round <= ROUNDS; round++) {
    for (const p of PLUGINS) ours.get(p)!.push(await tessera(p));
    if (py) theirs.push(await transformers(py, gguf));
    console.log(`bench: round ${round}/${ROUNDS} done`);
  }
  // Per batch size, each side's best round: the one least disturbed by other processes.
  const best = (rounds: Result[][], b: number) =>
    rounds.map((r) => r.find((x) => x.batch === b)!).reduce((a, x) => (decodeRate(x) > decodeRate(a) ? x : a));
  const P = promptIds().length;
  console.log(
    `\ngenerate: SmolLM2-135M-Instruct (GGUF Q4_1 dequantized to f32), greedy, ${P}-token prompt, ${NEW_TOKENS} new tokens per row, CPU; best of ${ROUNDS} round(s) of median-of-${REPEATS}`,
  );
  const head = `${"".padEnd(34)}${"batch".padStart(6)}${"decode tok/s".padStart(14)}${"prefill tok/s".padStart(15)}${"decode vs hf".padStart(14)}${"prefill vs hf".padStart(15)}`;
  console.log(head);
  for (const b of BATCHES) {
    const hf = theirs.length ? best(theirs, b) : undefined;
    const row = (name: string, r: Result) => {
      const d = decodeRate(r),
        p = prefillRate(r, P);
      const dr = hf ? (d / decodeRate(hf)).toFixed(2) : "n/a";
      const pr = hf ? (p / prefillRate(hf, P)).toFixed(2) : "n/a";
      console.log(
        `${name.padEnd(34)}${String(b).padStart(6)}${d.toFixed(1).padStart(14)}${p.toFixed(1).padStart(15)}${dr.padStart(14)}${pr.padStart(15)}`,
      );
    };
    if (hf) row("transformers (torch, f32)", hf);
    for (const p of PLUGINS) row(`tessera (${p})`, best(ours.get(p)!, b));
  }
}

if (process.argv.includes("--child")) await child();
else await main();
