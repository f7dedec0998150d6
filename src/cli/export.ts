// `tessera export --model M [--adapter A --merge] --out DIR [--dtype d]`: flags to exportModel, and what it wrote.
import { UsageError, type ParsedArgs } from "./args.ts";
import { displayPath } from "./diagnostics.ts";
import { EXIT } from "../errors.ts";
import { exportModel, parseShardSize, type ExportDType } from "../export/export.ts";

const DTYPES: Readonly<Record<string, ExportDType>> = { f32: "F32", bf16: "BF16", f16: "F16" };

const fmtBytes = (n: number) =>
  n >= 1e9 ? `${(n / 1e9).toFixed(2)} GB` : n >= 1e6 ? `${(n / 1e6).toFixed(1)} MB` : `${(n / 1e3).toFixed(1)} kB`;

export async function exportCommand(args: ParsedArgs): Promise<number> {
  const o = args.options;
  const usage = (msg: string): never => {
    throw new UsageError(msg, "export");
  };
  const model = o.get("model") ?? usage("--model is required");
  const out = o.get("out") ?? usage("--out is required");
  const adapter = o.get("adapter");
  if (adapter !== undefined && !o.has("merge"))
    usage("--adapter needs --merge: the export is a plain checkpoint, with the adapter folded into its weights");
  if (adapter === undefined && o.has("merge")) usage("--merge needs --adapter, the PEFT adapter to merge");
  const dtypeText = o.get("dtype");
  const dtype = dtypeText === undefined ? undefined : DTYPES[dtypeText];
  if (dtypeText !== undefined && dtype === undefined) usage(`--dtype must be f32, bf16 or f16; got '${dtypeText}'`);
  const shardText = o.get("max-shard-size");
  const maxShardBytes = shardText === undefined ? undefined : parseShardSize(shardText);
  if (shardText !== undefined && maxShardBytes === undefined)
    usage(`--max-shard-size must be a size such as 2GB, 500MB or 1000000 (bytes); got '${shardText}'`);

  const r = await exportModel({ model, adapter, out, dtype, maxShardBytes, overwrite: o.has("overwrite") }, (line) =>
    process.stderr.write(`tessera export: ${line}\n`),
  );
  const c = r.config;
  const kind = r.source.kind === "gguf" ? "GGUF, dequantized" : "Hugging Face checkpoint";
  const lines = [
    `model    ${displayPath(r.source.path)} (${kind}): ${c.numLayers} layers, hidden ${c.hiddenSize}, vocab ${c.vocabSize}${c.tieWordEmbeddings ? ", tied embeddings" : ""}`,
    r.merged
      ? `merged   ${displayPath(r.merged.dir)} (LoRA on ${r.merged.modules.join(",")}, rank ${[...new Set(r.merged.ranks)].join("/")}; W + scale·B·A in f32, then ${r.dtype})`
      : "merged   nothing (the base model, converted)",
    `weights  ${r.tensors} tensors, ${r.dtype}, ${fmtBytes(r.weightBytes)} in ${r.shards === 1 ? "model.safetensors" : `${r.shards} shards + model.safetensors.index.json`}`,
    `wrote    ${displayPath(r.out)}: ${r.files.join(", ")}`,
    "load it  AutoModelForCausalLM.from_pretrained(dir), AutoTokenizer.from_pretrained(dir); --model for every tessera command",
  ];
  process.stdout.write(`${lines.join("\n")}\n`);
  return EXIT.ok;
}
