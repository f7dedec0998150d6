// `tessera plan`: memory per device of a LoRA training step compiled from shapes alone, and the budget search's choice.
import { join } from "node:path";
import { stat } from "node:fs/promises";
import { EXIT, TesseraError } from "../errors.ts";
import { LLAMA_LINEARS, loadLlamaConfig, type LlamaConfig, type LlamaLinear } from "../formats/hf_config.ts";
import { GgufLlama } from "../formats/gguf_llama.ts";
import { isModelName, resolveModel as resolveModelSource } from "../formats/model_fetch.ts";
import { PRESETS } from "../../models/llama.ts";
import { simpleLoraLayout } from "../../models/lora.ts";
import { getClient, type CompiledMemoryStats } from "../backend/runtime/index.ts";
import { precisionPolicy } from "../train/precision.ts";
import { fmtInt } from "../train/plan.ts";
import {
  chooseWithin,
  describeCandidate,
  estimateAll,
  gib,
  lowerStep,
  parseSize,
  smallestOf,
  type BudgetChoice,
  type StepShape,
} from "../memory/budget.ts";
import { UsageError, type ParsedArgs } from "./args.ts";
import { parseMeshText } from "./sharding_report.ts";

/** `llama-2-7b` is the spelling of Meta's repositories; the presets are `llama2-7b` (13b, 70b likewise). */
export function presetName(name: string): string | undefined {
  const n = name.toLowerCase().replace(/^llama-2-/, "llama2-");
  return n in PRESETS ? n : undefined;
}

/** A preset's config, a catalogued model's (fetched), an HF folder's config.json or a GGUF's metadata: no weights read. */
export async function planModelConfig(model: string): Promise<{ llama: LlamaConfig; what: string }> {
  const preset = presetName(model);
  if (preset) return { llama: PRESETS[preset]!, what: `preset ${preset}` };
  let path = model;
  if (isModelName(model)) path = (await resolveModelSource(model, (m) => process.stderr.write(`${m}\n`))).path;
  const st = await stat(path).catch(() => undefined);
  if (!st)
    throw new UsageError(
      `--model: '${model}' is not a preset (${Object.keys(PRESETS).join(", ")}, or llama-2-7b/13b/70b), a catalogued model, nor an existing folder or .gguf file`,
      "plan",
    );
  if (st.isDirectory()) return { llama: await loadLlamaConfig(join(path, "config.json")), what: path };
  const g = await GgufLlama.open(path);
  try {
    return { llama: g.config, what: path };
  } finally {
    await g.close();
  }
}

function parseTargets(text: string): LlamaLinear[] {
  const out = new Set<string>();
  for (const raw of text.split(",")) {
    const t = raw.trim().replace(/_proj$/, "");
    if (!(LLAMA_LINEARS as readonly string[]).includes(t))
      throw new UsageError(`--targets: '${raw}' is not one of ${LLAMA_LINEARS.join(", ")}`, "plan");
    out.add(t);
  }
  return LLAMA_LINEARS.filter((m) => out.has(m));
}

function positiveInt(args: ParsedArgs, name: string, dflt: number): number {
  const text = args.options.get(name);
  if (text === undefined) return dflt;
  const v = Number(text);
  if (!(Number.isInteger(v) && v >= 1))
    throw new UsageError(`--${name} must be a positive integer; got '${text}'`, "plan");
  return v;
}

/** The one line `--json` prints: the fields and their order are the interface scripts rely on. */
export interface PlanJson {
  model: string;
  seq: number;
  batch: number;
  remat: string | string[];
  attention: string;
  fits: boolean;
  estimate: { gpu_peak_bytes: number; cpu_peak_bytes: number };
  xla_cpu: { peak_bytes: number };
}

export interface PlanResult {
  json: PlanJson;
  choice: BudgetChoice;
  shape: StepShape;
  xla: CompiledMemoryStats;
  lines: string[];
  /** Why nothing fits the budget (when `json.fits` is false). */
  refusal?: string;
}

const xlaPeak = (m: CompiledMemoryStats) => m.argumentBytes + m.outputBytes - m.aliasBytes + m.tempBytes;

/** Everything `tessera plan` reports, without printing it. */
export async function planCommandResult(args: ParsedArgs): Promise<PlanResult> {
  const model = args.options.get("model");
  if (!model) throw new UsageError("--model is required (llama-2-7b, a model name, a folder or a .gguf)", "plan");
  const seq = positiveInt(args, "seq", 4096);
  const batch = positiveInt(args, "batch", 1);
  const rank = positiveInt(args, "rank", 16);
  const targets = parseTargets(args.options.get("targets") ?? "q,v");
  const precision = args.options.get("precision") ?? "bf16";
  if (precision !== "bf16" && precision !== "f32")
    throw new UsageError(`--precision must be bf16 or f32; got '${precision}'`, "plan");
  const budgetText = args.options.get("memory-budget");
  const budget = budgetText === undefined ? undefined : parseSize(budgetText);
  let mesh: Record<string, number> | undefined;
  const meshText = args.options.get("mesh");
  if (meshText !== undefined) {
    try {
      mesh = parseMeshText(meshText);
    } catch (e) {
      throw new UsageError(`--mesh: ${e instanceof Error ? e.message : String(e)}`, "plan");
    }
  }
  const devices = mesh ? Object.values(mesh).reduce((a, b) => a * b, 1) : 1;
  const { llama, what } = await planModelConfig(model);
  const layout = simpleLoraLayout(llama, { r: rank, alpha: rank, targets });
  const shape: StepShape = {
    llama,
    layout,
    policy: precisionPolicy(precision),
    seq,
    batch,
    ...(mesh ? { mesh } : {}),
  };
  const lines: string[] = [];
  let refusal: string | undefined;
  lines.push(
    `model    ${what} (${llama.numLayers} layers, hidden ${llama.hiddenSize}, vocab ${fmtInt(llama.vocabSize)}); shapes only, no weights`,
  );
  lines.push(
    `step     LoRA r ${rank} on ${targets.join(",")}, batch ${batch} x seq ${fmtInt(seq)}, ${precision}, ${devices} device${devices === 1 ? "" : `s (${meshText})`}`,
  );
  if (seq > llama.maxPositionEmbeddings)
    lines.push(
      `rope     --seq ${fmtInt(seq)} exceeds max_position_embeddings ${fmtInt(llama.maxPositionEmbeddings)}: training it needs RoPE scaling (e.g. --rope-scaling yarn:${Math.ceil(seq / llama.maxPositionEmbeddings)}); planned anyway`,
    );
  const all = estimateAll(shape);
  let choice: BudgetChoice;
  let fits = true;
  try {
    choice = chooseWithin(shape, all, budget);
  } catch (e) {
    if (!(e instanceof TesseraError) || e.code !== "ERR_MEMORY_BUDGET") throw e;
    // Over budget: the smallest plan is still compiled and reported, marked as not fitting.
    choice = { ...all, chosen: smallestOf(all.estimates), budget, fits: false, reasons: [] };
    refusal = e.message;
    fits = false;
  }
  const c = choice.chosen;
  for (const r of choice.reasons) lines.push(`choice   ${r}`);
  for (const s of choice.skipped)
    lines.push(`skipped  ${describeCandidate(s.candidate)}: does not lower yet (${s.error.slice(0, 120)})`);
  const client = await getClient(devices > 1 ? { cpuDeviceCount: devices } : {});
  const lowered = lowerStep(shape, c.candidate, true);
  const ids = client.devices.slice(0, devices).map((d) => d.id);
  const exe = await client.compile(
    lowered.stablehlo,
    lowered.sharding ? { numPartitions: devices, deviceAssignment: ids, useShardy: true } : { device: ids[0]! },
  );
  const xla = exe.memoryStats;
  exe.dispose();
  if (!xla) throw new TesseraError("the PJRT plugin reports no compiled memory statistics", { code: "ERR_PLAN" });
  lines.push(
    `memory   per device: ${gib(c.gpuPeakBytes)} estimated on a GPU (frozen weights ${gib(c.frozenBytes)}); on XLA's CPU backend ${gib(c.cpuPeakBytes)} estimated, ${gib(xlaPeak(xla))} compiled${c.candidate.attention === "cudnn" ? " (blockwise in place of cudnn)" : ""}`,
  );
  lines.push(
    fits
      ? `fits     ${budget === undefined ? "no --memory-budget given" : `yes: ${gib(c.gpuPeakBytes)} <= ${gib(budget)}`}; ${describeCandidate(c.candidate)}`
      : `fits     no: ${refusal}`,
  );
  const json: PlanJson = {
    model,
    seq,
    batch,
    remat: typeof c.candidate.remat === "string" ? c.candidate.remat : [...c.candidate.remat],
    attention: c.candidate.attention,
    fits,
    estimate: { gpu_peak_bytes: c.gpuPeakBytes, cpu_peak_bytes: c.cpuPeakBytes },
    xla_cpu: { peak_bytes: xlaPeak(xla) },
  };
  return { json, choice, shape, xla, lines, ...(refusal ? { refusal } : {}) };
}

export async function planCommand(args: ParsedArgs): Promise<number> {
  const r = await planCommandResult(args);
  process.stdout.write(args.options.has("json") ? `${JSON.stringify(r.json)}\n` : `${r.lines.join("\n")}\n`);
  // The refusal goes to stderr too, so a script reading the JSON line still sees why.
  if (!r.json.fits && args.options.has("json")) process.stderr.write(`tessera plan: ${r.refusal}\n`);
  return r.json.fits ? EXIT.ok : EXIT.userError;
}
