// The `tessera parity` entry of the command table: name, summary, arguments; no imports, so `--help` stays cheap.

/** The command's table entry fields (name, summary, arguments), for src/cli/main.ts. */
export const PARITY_COMMAND_SPEC = {
  name: "parity",
  summary:
    "Recompute a Hugging Face + PEFT reference folder (logits, loss, LoRA grads, AdamW step, merge) and report errors.",
  positionals: [
    {
      name: "<dir>",
      description: "folder with config.json, model.safetensors, adapter_*, expected.safetensors, expected.json",
    },
  ],
  options: [
    {
      name: "backend",
      value: "<name>",
      choices: ["pjrt", "interpreter"],
      description: "where to compute: the PJRT CPU plugin (default) or the reference interpreter",
    },
    { name: "verbose", description: "list every tensor's error, not only the worst per quantity" },
  ],
  details: [
    "Exit code 0 when every quantity is within tolerance, 1 otherwise.",
    "Example:",
    "  tessera parity ../shared/fixtures/llama-tiny-a",
  ].join("\n"),
} as const;
