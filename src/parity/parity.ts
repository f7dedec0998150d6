// `runParity(dir)`: recompute a reference folder's quantities (HF + PEFT outputs) with Tessera and measure the errors.
import { readFile, stat } from "node:fs/promises";
import { join } from "node:path";
import { z } from "zod";
import { tx, type Tensor, type Tree } from "../index.ts";
import { toFloat32, type HostTensor } from "../formats/host_tensor.ts";
import { readSafetensors } from "../formats/safetensors.ts";
import { adapterFromTensors, adapterTensors, loadAdapter, ADAPTER_CONFIG_FILE } from "../formats/peft.ts";
import { FormatError, zodFormatError } from "../formats/errors.ts";
import { stripBom } from "../host/text.ts";
import type { LlamaConfig } from "../formats/hf_config.ts";
import { llamaLogits, type LlamaWeights } from "../../models/llama.ts";
import { loraFromAdapter, loraToAdapter, mergeLora, type LoraLayout, type LoraWeights } from "../../models/lora.ts";
import { llamaToHf, loadLlamaWeights } from "../../models/weights.ts";
import { adamwUpdate, ADAMW_DEFAULTS, type AdamWConfig } from "../train/adamw.ts";
import { loraLoss, type StepConfig } from "../train/step.ts";
import { F32 } from "../train/precision.ts";
import { interpretOnHost } from "./execute.ts";

/** Runs `fn` on host tensor trees and returns host tensor trees: the reference interpreter, or a compiled backend. */
export type Executor = (
  fn: (...args: never[]) => unknown,
  args: readonly Tree<HostTensor>[],
) => Tree<HostTensor> | Promise<Tree<HostTensor>>;

/** The groups a reference folder's expected.safetensors holds, and the relative error each may reach. */
export const DEFAULT_TOLERANCES: Readonly<Record<Group, number>> = Object.freeze({
  logits_base: 1e-5,
  logits_lora: 1e-5,
  loss_lora: 1e-5,
  grad: 1e-4,
  // The optimizer alone, from the reference's gradients: float32 rounding of the weights only.
  adamw_step: 1e-6,
  // End to end, from our own gradients: a per-element bound (see adamwBound), so this is the fraction of it
  // the worst element may use, not a relative error.
  after_adamw: 1,
  merged: 1e-5,
});

export type Group = "logits_base" | "logits_lora" | "loss_lora" | "grad" | "adamw_step" | "after_adamw" | "merged";
const GROUPS: readonly Group[] = [
  "logits_base",
  "logits_lora",
  "loss_lora",
  "grad",
  "adamw_step",
  "after_adamw",
  "merged",
];

export interface ParityOptions {
  /** How to run the computation; default: the reference interpreter. */
  executor?: Executor;
  /** Label for the report (e.g. "interpreter", "pjrt-cpu"). */
  backend?: string;
  tolerances?: Partial<Record<Group, number>>;
}

/** The error of one expected tensor: max |ours - ref| and that divided by max |ref| (normwise relative). */
export interface TensorError {
  name: string;
  group: Group;
  shape: number[];
  maxAbs: number;
  maxRel: number;
}

export interface GroupResult {
  group: Group;
  /** The tensor with the largest relative error (after_adamw: the largest error over its per-element bound). */
  worst?: TensorError;
  count: number;
  tol: number;
  ok: boolean;
  /** after_adamw: the worst |ours - ref| / bound over all elements, what `tol` limits. */
  score?: number;
  /** Tensors we compute that the reference lacks (the whole quantity when it has none): a failure, not a skip. */
  missing?: string[];
}

export interface ParityReport {
  dir: string;
  backend: string;
  groups: GroupResult[];
  tensors: TensorError[];
  ok: boolean;
  seconds: number;
}

function groupOf(name: string): Group | undefined {
  for (const g of GROUPS) if (name === g || name.startsWith(`${g}.`)) return g;
  return undefined;
}

/** max |a - b| and max |a - b| / max |b| over two same-shaped tensors; NaN anywhere makes both NaN. */
export function compareTensors(ours: HostTensor, ref: HostTensor, name: string): { maxAbs: number; maxRel: number } {
  if (ours.shape.length !== ref.shape.length || ours.shape.some((d, i) => d !== ref.shape[i])) {
    throw new Error(
      `${name}: computed shape [${ours.shape.join(", ")}] differs from the reference's [${ref.shape.join(", ")}]`,
    );
  }
  const a = toFloat32(ours),
    b = toFloat32(ref);
  let maxAbs = 0,
    maxRef = 0;
  for (let i = 0; i < a.length; i++) {
    const d = Math.abs(a[i]! - b[i]!);
    if (Number.isNaN(d)) return { maxAbs: NaN, maxRel: NaN };
    if (d > maxAbs) maxAbs = d;
    maxRef = Math.max(maxRef, Math.abs(b[i]!));
  }
  return { maxAbs, maxRel: maxRef === 0 ? (maxAbs === 0 ? 0 : Infinity) : maxAbs / maxRef };
}

/**
 * The end-to-end AdamW check. A first step from zero moments moves a weight by lr·g/(|g|+eps), whose derivative in
 * g is lr·eps/(|g|+eps)²: up to lr/eps where g is near eps, so float32 noise in a tiny gradient moves the weight
 * far more than the gradient tolerance suggests. Each element may therefore differ by the optimizer's own rounding
 * (adamw_step's tolerance times the tensor's largest weight) plus that sensitivity times the gradient error the
 * grad check allows (its tolerance times the tensor's largest gradient). Returns max |ours - ref| / bound.
 */
export function adamwBound(
  ours: HostTensor,
  ref: HostTensor,
  grad: HostTensor,
  adamw: AdamWConfig,
  tol: { grad: number; step: number },
): number {
  const a = toFloat32(ours),
    b = toFloat32(ref),
    g = toFloat32(grad);
  let maxRef = 0,
    maxG = 0;
  for (let i = 0; i < b.length; i++) {
    maxRef = Math.max(maxRef, Math.abs(b[i]!));
    maxG = Math.max(maxG, Math.abs(g[i]!));
  }
  let score = 0;
  for (let i = 0; i < a.length; i++) {
    const d = Math.abs(a[i]! - b[i]!);
    if (Number.isNaN(d)) return NaN;
    const sensitivity = (adamw.lr * adamw.eps) / (Math.abs(g[i]!) + adamw.eps) ** 2;
    const bound = tol.step * maxRef + sensitivity * tol.grad * maxG;
    score = Math.max(score, bound === 0 ? (d === 0 ? 0 : Infinity) : d / bound);
  }
  return score;
}

const exists = async (p: string) => (await stat(p).catch(() => undefined)) !== undefined;

/** expected.json: only what parity reads is checked (the reference's other notes pass through). */
const expectedSchema = z
  .object({
    adamw: z
      .object({
        lr: z.number().positive().optional(),
        betas: z.tuple([z.number().min(0).lt(1), z.number().min(0).lt(1)]).optional(),
        eps: z.number().positive().optional(),
        weight_decay: z.number().min(0).optional(),
      })
      .loose()
      .optional(),
  })
  .loose();
type ExpectedJson = z.infer<typeof expectedSchema>;

/** Reads and validates `file`; errors name it and the field (FormatError, exit 1). Absent: AdamW's defaults. */
async function loadExpectedJson(file: string): Promise<ExpectedJson> {
  if (!(await exists(file))) return {};
  let json: unknown;
  try {
    json = JSON.parse(stripBom(await readFile(file, "utf8")));
  } catch (e) {
    throw new FormatError(`${file}: not valid JSON (${(e as Error).message})`, { file, cause: e });
  }
  const r = expectedSchema.safeParse(json);
  if (!r.success) throw zodFormatError(file, r.error.issues, json);
  return r.data;
}

function adamwFrom(json: ExpectedJson): AdamWConfig {
  const a = json.adamw ?? {};
  return {
    lr: a.lr ?? ADAMW_DEFAULTS.lr,
    beta1: a.betas?.[0] ?? ADAMW_DEFAULTS.beta1,
    beta2: a.betas?.[1] ?? ADAMW_DEFAULTS.beta2,
    eps: a.eps ?? ADAMW_DEFAULTS.eps,
    weightDecay: a.weight_decay ?? ADAMW_DEFAULTS.weightDecay,
  };
}

/**
 * Everything a reference folder can check, in one traced function: base and adapted logits, the causal-LM loss,
 * its gradients for the adapter, the adapter after one AdamW step from zero moments, and the merged weights.
 */
function parityProgram(cfg: LlamaConfig, layout: LoraLayout | undefined, adamw: AdamWConfig, want: Set<Group>) {
  return (base: LlamaWeights, lora: LoraWeights, tokens: Tensor, labels: Tensor, refGrads: LoraWeights) => {
    const out: Record<string, unknown> = {};
    if (want.has("logits_base")) out.logits_base = llamaLogits(cfg, base, tokens);
    if (!layout) return out;
    if (want.has("logits_lora")) out.logits_lora = llamaLogits(cfg, base, tokens, { lora: { weights: lora, layout } });
    if (want.has("merged")) out.merged = mergeLora(base, lora, layout).layers;
    if (want.has("loss_lora") || want.has("grad") || want.has("after_adamw")) {
      const c: StepConfig = { llama: cfg, layout, policy: F32, adamw };
      const [loss, grads] = tx.valueAndGrad((l: LoraWeights) => loraLoss(c, l, base, { tokens, labels }))(lora);
      out.loss_lora = loss.reshape([1]);
      out.grad = grads;
      const zeros = tx.treeMap(lora as Tree<Tensor>, (t) => tx.zerosLike(t)) as LoraWeights;
      const [after] = adamwUpdate(
        lora,
        grads as LoraWeights,
        { m: zeros, v: zeros },
        tx.full([], 1),
        tx.full([], adamw.lr),
        adamw,
      );
      out.after_adamw = after;
      if (want.has("adamw_step")) {
        const [step] = adamwUpdate(
          lora,
          refGrads,
          { m: zeros, v: zeros },
          tx.full([], 1),
          tx.full([], adamw.lr),
          adamw,
        );
        out.adamw_step = step;
      }
    }
    return out;
  };
}

/**
 * Recomputes what `dir/expected.safetensors` holds from the checkpoint (config.json, model.safetensors), the
 * adapter (adapter_config.json, adapter_model.safetensors) and the batch it records (input_ids, labels), in
 * float32, and reports the worst error per quantity against the tolerances.
 */
export async function runParity(dir: string, opts: ParityOptions = {}): Promise<ParityReport> {
  const t0 = performance.now();
  const ref = await loadReference(dir);
  const model = await loadModel(dir);
  const { want, refGrads } = plannedGroups(ref, model);
  const adamw = adamwFrom(ref.json);
  const ours = await computeOurs(model, ref, want, refGrads, adamw, opts.executor ?? interpretOnHost);
  const tol = { ...DEFAULT_TOLERANCES, ...opts.tolerances };
  const { tensors, scores } = compareAll(dir, ref, ours, adamw, tol);
  const groups = [...want]
    .sort((a, b) => GROUPS.indexOf(a) - GROUPS.indexOf(b))
    .map((g) => groupResult(g, tensors, ours, ref.expected, scores, tol[g]));
  return {
    dir,
    backend: opts.backend ?? "interpreter",
    groups,
    tensors,
    ok: groups.length > 0 && groups.every((g) => g.ok),
    seconds: (performance.now() - t0) / 1000,
  };
}

interface Reference {
  expectedFile: string;
  expected: Map<string, HostTensor>;
  json: ExpectedJson;
  tokens: HostTensor;
  labels: HostTensor;
}

async function loadReference(dir: string): Promise<Reference> {
  const expectedFile = join(dir, "expected.safetensors");
  if (!(await exists(expectedFile)))
    throw new FormatError(`${expectedFile}: not found (a reference folder holds expected.safetensors)`, {
      file: expectedFile,
    });
  const { tensors: expected } = await readSafetensors(expectedFile);
  const json = await loadExpectedJson(join(dir, "expected.json"));
  const tokens = expected.get("input_ids");
  if (!tokens)
    throw new FormatError(`${expectedFile}: missing tensor "input_ids"`, { file: expectedFile, tensor: "input_ids" });
  return { expectedFile, expected, json, tokens, labels: expected.get("labels") ?? tokens };
}

interface Model {
  config: LlamaConfig;
  weights: LlamaWeights<HostTensor>;
  adapter?: Awaited<ReturnType<typeof loadAdapter>>;
  lora?: ReturnType<typeof loraFromAdapter>;
}

async function loadModel(dir: string): Promise<Model> {
  const { config, weights } = await loadLlamaWeights(dir, { dtype: "F32" });
  const hasAdapter = await exists(join(dir, ADAPTER_CONFIG_FILE));
  const adapter = hasAdapter ? await loadAdapter(dir, config) : undefined;
  const lora = adapter ? loraFromAdapter(adapter, config, join(dir, ADAPTER_CONFIG_FILE)) : undefined;
  return { config, weights, adapter, lora };
}

/** The quantities to compute, and the gradients the optimizer-alone check steps from. */
function plannedGroups(
  ref: Reference,
  { config, adapter, lora }: Model,
): { want: Set<Group>; refGrads: LoraWeights<HostTensor> } {
  // Every quantity the folder can be checked on is computed; one the reference lacks fails in groupResult.
  const want = new Set<Group>(lora ? GROUPS : ["logits_base"]);
  const refGradTensors = new Map(
    [...ref.expected].filter(([k]) => k.startsWith("grad.")).map(([k, t]) => [k.slice("grad.".length), t]),
  );
  // The adapter's own weights stand in when the reference has no gradients (adamw_step is then not checked).
  let refGrads = lora?.weights ?? {};
  if (adapter && lora && refGradTensors.size > 0) {
    refGrads = loraFromAdapter(
      adapterFromTensors(adapter.config, refGradTensors, config, { weights: ref.expectedFile }),
      config,
    ).weights;
  } else {
    want.delete("adamw_step");
  }
  return { want, refGrads };
}

/** Runs the parity program and returns our outputs under the reference's tensor names. */
async function computeOurs(
  { config, weights, lora }: Model,
  ref: Reference,
  want: Set<Group>,
  refGrads: LoraWeights<HostTensor>,
  adamw: AdamWConfig,
  exec: Executor,
): Promise<Map<string, HostTensor>> {
  const args = [
    weights as unknown as Tree<HostTensor>,
    (lora?.weights ?? {}) as Tree<HostTensor>,
    ref.tokens,
    ref.labels,
    refGrads as Tree<HostTensor>,
  ];
  const out = (await exec(parityProgram(config, lora?.layout, adamw, want), args)) as Record<string, unknown>;
  const ours = new Map<string, HostTensor>();
  for (const g of ["logits_base", "logits_lora", "loss_lora"] as const) if (out[g]) ours.set(g, out[g] as HostTensor);
  if (lora) {
    for (const g of ["grad", "after_adamw", "adamw_step"] as const) {
      if (!out[g]) continue;
      const adapter = loraToAdapter(lora.layout, out[g] as LoraWeights<HostTensor>, config);
      for (const [k, t] of adapterTensors(adapter)) ours.set(`${g}.${k}`, t);
    }
    if (out.merged) {
      const merged = llamaToHf(config, { ...weights, layers: out.merged as LlamaWeights<HostTensor>["layers"] });
      for (const [k, t] of merged) ours.set(`merged.${k}`, t);
    }
  }
  return ours;
}

/** Each reference tensor's error, and after_adamw's per-element bound scores (keyed by tensor name). */
function compareAll(
  dir: string,
  { expectedFile, expected }: Reference,
  ours: Map<string, HostTensor>,
  adamw: AdamWConfig,
  tol: Record<Group, number>,
): { tensors: TensorError[]; scores: Map<string, number> } {
  const tensors: TensorError[] = [];
  const scores = new Map<string, number>();
  for (const [name, ref] of expected) {
    const group = groupOf(name);
    if (!group) continue;
    const mine = ours.get(name);
    if (!mine)
      throw new FormatError(
        `${expectedFile}: tensor "${name}" has no counterpart in what Tessera computed (is the adapter in ${dir}?)`,
        { file: expectedFile, tensor: name },
      );
    tensors.push({ name, group, shape: [...ref.shape], ...compareTensors(mine, ref, name) });
    const step = ours.get(`adamw_step.${name.slice(group.length + 1)}`);
    if (group === "after_adamw" && step) {
      // The optimizer alone: our AdamW on the reference's gradients, against the reference's step.
      tensors.push({
        name: `adamw_step.${name.slice(group.length + 1)}`,
        group: "adamw_step",
        shape: [...ref.shape],
        ...compareTensors(step, ref, name),
      });
      const grad = expected.get(`grad.${name.slice(group.length + 1)}`);
      if (grad) scores.set(name, adamwBound(mine, ref, grad, adamw, { grad: tol.grad, step: tol.adamw_step }));
    }
  }
  return { tensors, scores };
}

/** One quantity's verdict: its worst tensor against `tol`, failing when the reference lacks any of it. */
function groupResult(
  g: Group,
  tensors: readonly TensorError[],
  ours: Map<string, HostTensor>,
  expected: Map<string, HostTensor>,
  scores: Map<string, number>,
  tol: number,
): GroupResult {
  const ts = tensors.filter((t) => t.group === g);
  // Every tensor we computed must be in the reference (merged: the reference holds only the adapted weights).
  const computed = [...ours.keys()].filter((k) => groupOf(k) === g && g !== "merged" && g !== "adamw_step");
  const missing = ts.length === 0 ? [g] : computed.filter((k) => !expected.has(k));
  if (g === "after_adamw") return afterAdamwResult(ts, missing, scores, tol);
  const worst = ts.reduce<TensorError | undefined>(
    (a, b) => (!a || b.maxRel > a.maxRel || Number.isNaN(b.maxRel) ? b : a),
    undefined,
  );
  const ok = missing.length === 0 && worst !== undefined && worst.maxRel <= tol;
  return {
    group: g,
    ...(worst ? { worst } : {}),
    count: ts.length,
    tol,
    ok,
    ...(missing.length ? { missing } : {}),
  };
}

/** after_adamw is judged by per-element bound scores, so a tensor without the reference's gradient is missing. */
function afterAdamwResult(
  ts: readonly TensorError[],
  missing: string[],
  scores: Map<string, number>,
  tol: number,
): GroupResult {
  const g = "after_adamw";
  const scored = ts.filter((t) => scores.has(t.name));
  const worst = scored.reduce<TensorError | undefined>(
    (a, b) => (!a || !(scores.get(b.name)! <= scores.get(a.name)!) ? b : a),
    undefined,
  );
  const score = worst ? scores.get(worst.name)! : NaN;
  if (scored.length < ts.length)
    missing.push(...ts.filter((t) => !scores.has(t.name)).map((t) => `grad.${t.name.slice(g.length + 1)}`));
  return {
    group: g,
    ...(worst ? { worst, score } : {}),
    count: ts.length,
    tol,
    ok: missing.length === 0 && score <= tol,
    ...(missing.length ? { missing } : {}),
  };
}

const sci = (x: number) => (Number.isFinite(x) ? x.toExponential(2) : String(x));

/** The report as a table: one line per quantity with its worst tensor, then the verdict. */
export function formatParityReport(r: ParityReport, opts: { verbose?: boolean } = {}): string {
  const lines = [`parity ${r.dir} (${r.backend}, float32, ${r.seconds.toFixed(1)} s)`];
  const w = Math.max(...r.groups.map((g) => g.group.length), 8);
  lines.push(
    `  ${"quantity".padEnd(w)}  ${"tensors".padStart(7)}  ${"max rel".padStart(9)}  ${"max abs".padStart(9)}  ${"tol".padStart(8)}  result  worst tensor`,
  );
  for (const g of r.groups) {
    const result = (g.ok ? "ok" : "FAIL").padEnd(6);
    const tol = g.group === "after_adamw" ? "per-elem" : sci(g.tol);
    if (g.worst === undefined) {
      lines.push(
        `  ${g.group.padEnd(w)}  ${String(g.count).padStart(7)}  ${"-".padStart(9)}  ${"-".padStart(9)}  ${tol.padStart(8)}  ${result}  missing from the reference`,
      );
    } else {
      const extra = g.score === undefined ? "" : ` (worst element at ${g.score.toFixed(3)} of its bound)`;
      lines.push(
        `  ${g.group.padEnd(w)}  ${String(g.count).padStart(7)}  ${sci(g.worst.maxRel).padStart(9)}  ${sci(g.worst.maxAbs).padStart(9)}  ${tol.padStart(8)}  ${result}  ${g.worst.name}${extra}`,
      );
    }
    if (g.missing && g.worst !== undefined) lines.push(`      missing from the reference: ${g.missing.join(", ")}`);
    if (opts.verbose) {
      for (const t of r.tensors.filter((t) => t.group === g.group))
        lines.push(`      ${t.name}: rel ${sci(t.maxRel)}, abs ${sci(t.maxAbs)}`);
    }
  }
  if (r.groups.some((g) => g.group === "adamw_step" || g.group === "after_adamw")) {
    lines.push(
      "  adamw_step: our AdamW on the reference's gradients. after_adamw: on our gradients, each element within",
      "  adamw_step's tol·max|w| + lr·eps/(|g|+eps)²·(grad's tol·max|g|), the step's sensitivity to the gradient error.",
    );
  }
  const failed = r.groups.filter((g) => !g.ok);
  const why = (g: GroupResult) =>
    g.missing?.length ? `${g.group} missing from the reference` : `${g.group} past tolerance`;
  lines.push(r.ok ? "parity: ok" : `parity: FAILED (${failed.map(why).join(", ")})`);
  return lines.join("\n");
}
