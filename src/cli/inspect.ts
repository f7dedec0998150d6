// `tessera inspect`: an entry's IR after cleanup (every value with its type), its cost summary, and with --shardings its SPMD plan.
import { print } from "../ir/print.ts";
import { UsageError, type ParsedArgs } from "./args.ts";
import { compileEntry, type Compiled } from "./compile.ts";
import { CliError, displayPath, formatUserError } from "./diagnostics.ts";
import { isUserFile } from "./load.ts";
import { summarize } from "./summary.ts";
import { parseMeshText, shardingReport } from "./sharding_report.ts";
import { annotationMark, annotationsSince } from "../frontend/annotations.ts";
import { donationMap } from "../frontend/jit.ts";
import { DeviceMesh } from "../frontend/mesh.ts";
import { planShardings } from "../frontend/spmd.ts";
import { numLeaves } from "../frontend/tree.ts";
import { runPasses } from "../passes/manager.ts";
import { unshareBroadcastsPass } from "../passes/unshare_broadcasts.ts";

/** Donation as jit does it, for the memory estimate (a donated argument's buffer holds its output). */
function donation(c: Compiled): (number | undefined)[] | undefined {
  const donate = c.entry.donate ?? [];
  if (!donate.length || c.inTree.kind !== "array") return undefined;
  const argOfLeaf = c.inTree.children.flatMap((child, arg) => Array<number>(numLeaves(child)).fill(arg));
  return donationMap(c.graph, new Set(c.graph.inputs.flatMap((_, i) => (donate.includes(argOfLeaf[i]!) ? [i] : []))));
}

function shardings(c: Compiled, meshText: string | undefined, made: Parameters<typeof planShardings>[4]): string {
  let mesh = c.entry.mesh;
  if (meshText !== undefined) {
    try {
      mesh = new DeviceMesh(parseMeshText(meshText), {}, null);
    } catch (e) {
      throw new UsageError(`--mesh: ${e instanceof Error ? e.message.replace(/^sharding: /, "") : String(e)}`, "inspect");
    }
  }
  if (!mesh) throw new UsageError(`--shardings needs a mesh: --mesh data=2,model=4, or entry(..., { mesh }) in the model file`, "inspect");
  try {
    const specs = typeof c.entry.shardings === "function" ? c.entry.shardings(mesh) : (c.entry.shardings ?? {});
    // As jit lowers a sharded program: every user of a broadcast gets its own copy.
    const graph = runPasses(c.graph, [unshareBroadcastsPass]);
    const s = planShardings(graph, c.inTree, c.outTree, { mesh, in: specs.in, out: specs.out }, made, undefined);
    const donate = donation(c);
    return shardingReport(s.plan, { ...(donate ? { donate } : {}), dropped: s.dropped });
  } catch (e) {
    if (e instanceof UsageError) throw e;
    throw new CliError(formatUserError(e, isUserFile));
  }
}

export async function inspectCommand(args: ParsedArgs): Promise<number> {
  const topText = args.options.get("top") ?? "5";
  const top = Number(topText);
  if (!Number.isInteger(top) || top < 0) throw new UsageError(`--top must be a non-negative integer, got '${topText}'`, "inspect");
  const meshText = args.options.get("mesh");
  const wantShardings = args.options.has("shardings");
  if (meshText !== undefined && !wantShardings) throw new UsageError("--mesh is for --shardings", "inspect");
  const mark = annotationMark();
  const c = await compileEntry(args.positionals[0]!, args.options.get("entry"));
  const made = annotationsSince(mark);
  const header = `// ${displayPath(c.file)} --entry ${c.entryName}: ${c.traced.ops.length} ops traced, ${c.graph.ops.length} after cleanup`;
  const report = wantShardings ? `\n${shardings(c, meshText, made)}` : "";
  process.stdout.write(`${header}\n${print(c.graph, { locs: args.options.has("locs") }).trimEnd()}\n\n${summarize(c.graph, { top })}${report}`);
  return 0;
}
