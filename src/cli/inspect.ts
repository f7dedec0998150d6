// `tessera inspect`: an entry's IR after cleanup (every value with its type; --summary leaves it out), its cost summary, and with --shardings its SPMD plan.
import { EXIT } from "../errors.ts";
import { print } from "../ir/print.ts";
import { UsageError, type ParsedArgs } from "./args.ts";
import { lowerEntry, loadEntry, shardingFor } from "./compile.ts";
import { displayPath } from "./diagnostics.ts";
import { summarize } from "./summary.ts";
import { shardingReport } from "./sharding_report.ts";
import { estimateMemory, shardedBytes } from "../passes/memory_estimate.ts";
import { pluginUpcasts16 } from "../backend/runtime/plugins.ts";
import { formatLoc } from "../ir/types.ts";
import { gib, parseSize } from "../memory/budget.ts";

export async function inspectCommand(args: ParsedArgs): Promise<number> {
  const topText = args.options.get("top") ?? "5";
  const top = Number(topText);
  if (!Number.isInteger(top) || top < 0)
    throw new UsageError(`--top must be a non-negative integer, got '${topText}'`, "inspect");
  const meshText = args.options.get("mesh");
  const wantShardings = args.options.has("shardings");
  const wantSummary = args.options.has("summary");
  if (wantSummary && args.options.has("locs"))
    throw new UsageError("--locs is for the IR text, which --summary leaves out", "inspect");
  if (meshText !== undefined && !wantShardings) throw new UsageError("--mesh is for --shardings", "inspect");
  const loaded = await loadEntry(args.positionals[0]!, args.options.get("entry"));
  // With --shardings the entry is lowered as jit lowers it for a mesh, so the printed IR is the one the plan names.
  const c = lowerEntry(loaded, wantShardings ? { sharding: shardingFor(loaded, meshText, "inspect") } : {});
  const header = `// ${displayPath(c.file)} --entry ${c.entryName}: ${c.traced.ops.length} ops traced, ${c.graph.ops.length} after cleanup`;
  const report = c.sharding
    ? `\n${shardingReport(c.sharding.plan, { donate: c.donate, dropped: c.sharding.dropped })}`
    : "";
  const budgetText = args.options.get("memory-budget");
  const budget = budgetText === undefined ? undefined : budgetLine(c, parseSize(budgetText));
  // --summary leaves the IR out: for a real model it is thousands of lines above the numbers one came for.
  const ir = wantSummary ? "" : `${print(c.graph, { locs: args.options.has("locs") }).trimEnd()}\n\n`;
  process.stdout.write(`${header}\n${ir}${summarize(c.graph, { top })}${report}${budget ?? ""}`);
  return EXIT.ok;
}

/**
 * The entry's memory per device against a budget: the estimate `tessera plan` compares (16-bit values as a GPU
 * holds them), the CPU backend's, and where the temporaries peak. For the Llama training step, `tessera plan
 * --memory-budget` searches remat, attention and chunking; an entry's own code fixes those, so this reports.
 */
function budgetLine(c: ReturnType<typeof lowerEntry>, budget: number): string {
  const plan = c.sharding?.plan;
  const base = { donate: c.donate, ...(plan ? { bytes: shardedBytes(plan) } : {}) };
  const gpu = estimateMemory(c.graph, base);
  const cpu = estimateMemory(c.graph, { ...base, cpuUpcast16: pluginUpcasts16() });
  const at = gpu.peakOp
    ? `; temporaries peak at ${gpu.peakOp.name}${gpu.peakLoc ? ` ${formatLoc(gpu.peakLoc)}` : ""}`
    : "";
  const verdict = gpu.total <= budget ? "fits" : "does NOT fit";
  return `\nmemory budget ${gib(budget)}: ${verdict} (${gib(gpu.total)} per device estimated on a GPU, ${gib(cpu.total)} on XLA's CPU backend${at})\n`;
}
