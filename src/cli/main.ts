// The `tessera` command line: the table of commands, top-level help, and the mapping of failures to exit codes.
import { closest, commandHelp, parseArgs, table, UsageError, type CommandSpec, type ParsedArgs } from "./args.ts";
import { CliError } from "./diagnostics.ts";
import { PARITY_COMMAND_SPEC } from "../parity/spec.ts";

/** Exit codes, stated once: scripts and tests rely on them. */
export const EXIT = {
  ok: 0,
  /** The model has a problem: type error, shape error, missing entry, unreadable file. */
  modelError: 1,
  /** The command line is wrong: unknown command or option, missing argument. */
  usage: 2,
  /** A bug in tessera itself: the stack is printed. */
  internal: 3,
} as const;

export interface Command extends CommandSpec {
  /** Implementations are imported on demand so that `--help` does not pay for ts-morph and the compiler. */
  run(args: ParsedArgs): Promise<number>;
}

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
    summary: "Type-check a model file, trace one entry, run the cleanup passes and print IR or StableHLO.",
    positionals: [FILE_ARG],
    options: [
      ENTRY_OPT,
      { name: "emit", value: "<format>", choices: ["ir", "stablehlo"], description: "what to print (default ir)" },
      { name: "dump-after", value: "<pass>", description: "also print the IR after this pass, or after every pass with 'all'" },
      { name: "dump-to", value: "<file>", description: "write --dump-after output to a file instead of stderr" },
      { name: "out", value: "<file>", description: "write the result to a file instead of stdout" },
      { name: "locs", description: "print source locations in IR text" },
    ],
    details: [
      "Examples:",
      "  tessera compile examples/mlp.ts --entry forward",
      "  tessera compile examples/mlp.ts --entry trainStep --emit stablehlo --out step.mlir",
      "  tessera compile examples/mlp.ts --entry trainStep --dump-after all",
    ].join("\n"),
    run: async (args) => (await import("./compile.ts")).compileCommand(args),
  },
  {
    name: "inspect",
    summary: "Print an entry's IR with shapes, then op counts, FLOPs, bytes and the largest intermediates.",
    positionals: [FILE_ARG],
    options: [
      ENTRY_OPT,
      { name: "top", value: "<n>", description: "how many of the largest intermediates to list (default 5)" },
      { name: "locs", description: "print source locations in IR text" },
    ],
    details: "Example:\n  tessera inspect examples/mlp.ts --entry forward",
    run: async (args) => (await import("./inspect.ts")).inspectCommand(args),
  },
  {
    ...PARITY_COMMAND_SPEC,
    positionals: [...PARITY_COMMAND_SPEC.positionals],
    options: PARITY_COMMAND_SPEC.options.map((o) => ("choices" in o ? { ...o, choices: [...o.choices] } : o)),
    run: async (args) => {
      if (args.positionals.length !== 1) throw new UsageError("parity needs exactly one folder", "parity");
      return (await import("../parity/command.ts")).parityCommand(args);
    },
  },
];

export function topHelp(): string {
  return [
    "Usage: tessera <command> [options]",
    "",
    "Compile TypeScript model definitions to XLA.",
    "",
    "Commands:",
    ...table(COMMANDS.map((c) => [c.name, c.summary])),
    "",
    "Run 'tessera <command> --help' for a command's options.",
    `Exit codes: ${EXIT.ok} success, ${EXIT.modelError} error in the model, ${EXIT.usage} usage error, ${EXIT.internal} internal error.`,
    "Set TESSERA_DEBUG=1 to see stack traces with errors.",
    "",
  ].join("\n");
}

export async function main(argv: readonly string[]): Promise<number> {
  const [name, ...rest] = argv;
  if (name === undefined || name === "-h" || name === "--help" || (name === "help" && rest.length === 0)) {
    process.stdout.write(topHelp());
    return name === undefined ? EXIT.usage : EXIT.ok;
  }
  // `tessera help compile` is `tessera compile --help`.
  const [commandName, commandArgs] = name === "help" ? [rest[0]!, ["--help"]] : [name, rest];
  const command = COMMANDS.find((c) => c.name === commandName);
  try {
    if (!command) {
      const near = closest(commandName, COMMANDS.map((c) => c.name));
      throw new UsageError(`unknown command '${commandName}'${near ? ` (did you mean '${near}'?)` : ""}`);
    }
    const args = parseArgs(command, commandArgs);
    if (args.help) {
      process.stdout.write(commandHelp(command));
      return EXIT.ok;
    }
    return await command.run(args);
  } catch (e) {
    if (e instanceof UsageError) {
      const help = e.command ? `tessera ${e.command} --help` : "tessera --help";
      process.stderr.write(`error: ${e.message}\nRun '${help}' for usage.\n`);
      return EXIT.usage;
    }
    if (e instanceof CliError) {
      process.stderr.write(e.message);
      return EXIT.modelError;
    }
    process.stderr.write(`internal error: ${e instanceof Error ? (e.stack ?? e.message) : String(e)}\n`);
    return EXIT.internal;
  }
}
