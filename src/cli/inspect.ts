// `tessera inspect`: an entry's IR after cleanup (every value with its type), its cost summary, and with --shardings its SPMD plan.
import { EXIT } from "../errors.ts";
import { DeviceMesh } from "../frontend/mesh.ts";
import type { ShardingOpts } from "../frontend/spmd.ts";
import { print } from "../ir/print.ts";
import { UsageError, type ParsedArgs } from "./args.ts";
import { lowerEntry, loadEntry, type LoadedEntry } from "./compile.ts";
import { CliError, displayPath, formatUserError } from "./diagnostics.ts";
import { isUserFile } from "./load.ts";
import { summarize } from "./summary.ts";
import { parseMeshText, shardingReport } from "./sharding_report.ts";

/** The mesh and specs for --shardings: `--mesh`, else the entry's own mesh; its `shardings` give the specs. */
function shardingFor(loaded: LoadedEntry, meshText: string | undefined): ShardingOpts {
  let mesh = loaded.entry.mesh;
  if (meshText !== undefined) {
    try {
      mesh = new DeviceMesh(parseMeshText(meshText), {}, null);
    } catch (e) {
      throw new UsageError(
        `--mesh: ${e instanceof Error ? e.message.replace(/^sharding: /, "") : String(e)}`,
        "inspect",
      );
    }
  }
  if (!mesh)
    throw new UsageError(
      `--shardings needs a mesh: --mesh data=2,model=4, or entry(..., { mesh }) in the model file`,
      "inspect",
    );
  const shardings = loaded.entry.shardings;
  try {
    // A function of the mesh is the user's code: whatever it throws is reported at their line.
    const specs = typeof shardings === "function" ? shardings(mesh) : (shardings ?? {});
    return { mesh, in: specs.in, out: specs.out };
  } catch (e) {
    throw new CliError(formatUserError(e, isUserFile), e);
  }
}

export async function inspectCommand(args: ParsedArgs): Promise<number> {
  const topText = args.options.get("top") ?? "5";
  const top = Number(topText);
  if (!Number.isInteger(top) || top < 0)
    throw new UsageError(`--top must be a non-negative integer, got '${topText}'`, "inspect");
  const meshText = args.options.get("mesh");
  const wantShardings = args.options.has("shardings");
  if (meshText !== undefined && !wantShardings) throw new UsageError("--mesh is for --shardings", "inspect");
  const loaded = await loadEntry(args.positionals[0]!, args.options.get("entry"));
  // With --shardings the entry is lowered as jit lowers it for a mesh, so the printed IR is the one the plan names.
  const c = lowerEntry(loaded, wantShardings ? { sharding: shardingFor(loaded, meshText) } : {});
  const header = `// ${displayPath(c.file)} --entry ${c.entryName}: ${c.traced.ops.length} ops traced, ${c.graph.ops.length} after cleanup`;
  const report = c.sharding
    ? `\n${shardingReport(c.sharding.plan, { donate: c.donate, dropped: c.sharding.dropped })}`
    : "";
  process.stdout.write(
    `${header}\n${print(c.graph, { locs: args.options.has("locs") }).trimEnd()}\n\n${summarize(c.graph, { top })}${report}`,
  );
  return EXIT.ok;
}
