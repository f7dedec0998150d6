// `runParity(dir)`: recompute a reference folder's quantities (HF + PEFT outputs) with Tessera and measure the errors.
import { readFile, stat } from "node:fs/promises";
import { join } from "node:path";
import { tx, type Tensor, type Tree } from "../index.ts";
import { toFloat32, type HostTensor } from "../formats/host_tensor.ts";
import { readSafetensors } from "../formats/safetensors.ts";
import { adapterTensors, loadAdapter, ADAPTER_CONFIG_FILE } from "../formats/peft.ts";
import { FormatError } from "../formats/errors.ts";
import type { LlamaConfig } from "../formats/hf_config.ts";
import { llamaLogits, type LlamaWeights } from "../../models/llama.ts";
import { loraFromAdapter, loraToAdapter, mergeLora, type LoraLayout, type LoraWeights } from "../../models/lora.ts";
import { llamaToHf, loadLlamaWeights } from "../../models/weights.ts";
import { adamwUpdate, ADAMW_DEFAULTS, type AdamWConfig } from "../train/adamw.ts";
import { loraLoss, type StepConfig } from "../train/step.ts";
import { F32 } from "../train/precision.ts";
import { interpretOnHost } from "./execute.ts";

/** Runs `fn` on host tensor trees and returns host tensor trees: the reference interpreter, or a compiled backend. */
export type Executor = (fn: (...args: any[]) => unknown, args: readonly Tree<HostTensor>[]) => Tree<HostTensor> | Promise<Tree<HostTensor>>;

/** The groups a reference folder's expected.safetensors holds, and the relative error each may reach. */
export const DEFAULT_TOLERANCES: Readonly<Record<Group, number>> = Object.freeze({
  logits_base: 1e-5,
  logits_lora: 1e-5,
  loss_lora: 1e-5,
  grad: 1e-4,
  // One AdamW step moves each weight by about lr * sign(g); its error follows the gradients'.
  after_adamw: 1e-4,
  merged: 1e-5,
});

export type Group = "logits_base" | "logits_lora" | "loss_lora" | "grad" | "after_adamw" | "merged";
const GROUPS: readonly Group[] = ["logits_base", "logits_lora", "loss_lora", "grad", "after_adamw", "merged"];

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
  /** The tensor with the largest relative error. */
  worst: TensorError;
  count: number;
  tol: number;
  ok: boolean;
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
    throw new Error(`${name}: computed shape [${ours.shape.join(", ")}] differs from the reference's [${ref.shape.join(", ")}]`);
  }
  const a = toFloat32(ours), b = toFloat32(ref);
  let maxAbs = 0, maxRef = 0;
  for (let i = 0; i < a.length; i++) {
    const d = Math.abs(a[i]! - b[i]!);
    if (Number.isNaN(d)) return { maxAbs: NaN, maxRel: NaN };
    if (d > maxAbs) maxAbs = d;
    maxRef = Math.max(maxRef, Math.abs(b[i]!));
  }
  return { maxAbs, maxRel: maxRef === 0 ? (maxAbs === 0 ? 0 : Infinity) : maxAbs / maxRef };
}

const exists = async (p: string) => (await stat(p).catch(() => undefined)) !== undefined;

interface ExpectedJson {
  adamw?: { lr?: number; betas?: [number, number]; eps?: number; weight_decay?: number };
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
  return (base: LlamaWeights, lora: LoraWeights, tokens: Tensor, labels: Tensor) => {
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
      const [after] = adamwUpdate(lora, grads as LoraWeights, { m: zeros, v: zeros }, tx.full([], 1), tx.full([], adamw.lr), adamw);
      out.after_adamw = after;
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
  const expectedFile = join(dir, "expected.safetensors");
  if (!(await exists(expectedFile))) throw new FormatError(`${expectedFile}: not found (a reference folder holds expected.safetensors)`, { file: expectedFile });
  const { tensors: expected } = await readSafetensors(expectedFile);
  const json: ExpectedJson = (await exists(join(dir, "expected.json"))) ? JSON.parse(await readFile(join(dir, "expected.json"), "utf8")) : {};
  const need = (k: string) => {
    const t = expected.get(k);
    if (!t) throw new FormatError(`${expectedFile}: missing tensor "${k}"`, { file: expectedFile, tensor: k });
    return t;
  };
  const tokens = need("input_ids");
  const labels = expected.get("labels") ?? tokens;

  const { config, weights } = await loadLlamaWeights(dir, { dtype: "F32" });
  const hasAdapter = await exists(join(dir, ADAPTER_CONFIG_FILE));
  const lora = hasAdapter ? loraFromAdapter(await loadAdapter(dir, config), config, join(dir, ADAPTER_CONFIG_FILE)) : undefined;

  const want = new Set<Group>();
  for (const k of expected.keys()) {
    const g = groupOf(k);
    if (g) want.add(g);
  }
  const adamw = adamwFrom(json);
  const exec = opts.executor ?? interpretOnHost;
  const out = (await exec(parityProgram(config, lora?.layout, adamw, want), [weights as unknown as Tree<HostTensor>, (lora?.weights ?? {}) as Tree<HostTensor>, tokens, labels])) as Record<string, unknown>;

  // Our outputs under the reference's names.
  const ours = new Map<string, HostTensor>();
  for (const g of ["logits_base", "logits_lora", "loss_lora"] as const) if (out[g]) ours.set(g, out[g] as HostTensor);
  if (lora) {
    for (const g of ["grad", "after_adamw"] as const) {
      if (!out[g]) continue;
      const adapter = loraToAdapter(lora.layout, out[g] as LoraWeights<HostTensor>, config);
      for (const [k, t] of adapterTensors(adapter)) ours.set(`${g}.${k}`, t);
    }
    if (out.merged) {
      const merged = llamaToHf(config, { ...weights, layers: out.merged as LlamaWeights<HostTensor>["layers"] });
      for (const [k, t] of merged) ours.set(`merged.${k}`, t);
    }
  }

  const tensors: TensorError[] = [];
  for (const [name, ref] of expected) {
    const group = groupOf(name);
    if (!group) continue;
    const mine = ours.get(name);
    if (!mine) throw new Error(`${expectedFile}: tensor "${name}" has no counterpart in what Tessera computed (is the adapter in ${dir}?)`);
    tensors.push({ name, group, shape: [...ref.shape], ...compareTensors(mine, ref, name) });
  }
  const tol = { ...DEFAULT_TOLERANCES, ...opts.tolerances };
  const groups: GroupResult[] = [];
  for (const g of GROUPS) {
    const ts = tensors.filter((t) => t.group === g);
    if (ts.length === 0) continue;
    const worst = ts.reduce((a, b) => (b.maxRel > a.maxRel || Number.isNaN(b.maxRel) ? b : a));
    groups.push({ group: g, worst, count: ts.length, tol: tol[g], ok: worst.maxRel <= tol[g] });
  }
  return {
    dir,
    backend: opts.backend ?? "interpreter",
    groups,
    tensors,
    ok: groups.length > 0 && groups.every((g) => g.ok),
    seconds: (performance.now() - t0) / 1000,
  };
}

const sci = (x: number) => (Number.isFinite(x) ? x.toExponential(2) : String(x));

/** The report as a table: one line per quantity with its worst tensor, then the verdict. */
export function formatParityReport(r: ParityReport, opts: { verbose?: boolean } = {}): string {
  const lines = [`parity ${r.dir} (${r.backend}, float32, ${r.seconds.toFixed(1)} s)`];
  const w = Math.max(...r.groups.map((g) => g.group.length), 8);
  lines.push(`  ${"quantity".padEnd(w)}  ${"tensors".padStart(7)}  ${"max rel".padStart(9)}  ${"max abs".padStart(9)}  ${"tol".padStart(8)}  result  worst tensor`);
  for (const g of r.groups) {
    lines.push(
      `  ${g.group.padEnd(w)}  ${String(g.count).padStart(7)}  ${sci(g.worst.maxRel).padStart(9)}  ${sci(g.worst.maxAbs).padStart(9)}  ${sci(g.tol).padStart(8)}  ${(g.ok ? "ok" : "FAIL").padEnd(6)}  ${g.worst.name}`,
    );
    if (opts.verbose) {
      for (const t of r.tensors.filter((t) => t.group === g.group)) lines.push(`      ${t.name}: rel ${sci(t.maxRel)}, abs ${sci(t.maxAbs)}`);
    }
  }
  lines.push(r.ok ? "parity: ok" : `parity: FAILED (${r.groups.filter((g) => !g.ok).map((g) => g.group).join(", ")} past tolerance)`);
  return lines.join("\n");
}
