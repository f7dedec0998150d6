// Command-line parsing with commander against declared command specs: options, positionals, usage errors and help text.
import { Command, CommanderError, Option } from "commander";
import { EXIT, TesseraError } from "../errors.ts";

export interface OptionSpec {
  /** Long name without dashes: `entry` for `--entry`. */
  readonly name: string;
  /** Placeholder shown in help when the option takes a value (`<export>`); absent for boolean flags. */
  readonly value?: string;
  readonly choices?: readonly string[];
  readonly required?: boolean;
  readonly description: string;
}

export interface PositionalSpec {
  /** Shown in usage and help, with its brackets: `<file.ts>`. */
  readonly name: string;
  readonly description: string;
}

export interface CommandSpec {
  readonly name: string;
  readonly summary: string;
  readonly positionals: readonly PositionalSpec[];
  readonly options: readonly OptionSpec[];
  /** Extra help text: examples, notes. */
  readonly details?: string;
}

export interface ParsedArgs {
  readonly positionals: readonly string[];
  /** Options given, by long name; flags map to "true". Options left out are absent: commands apply their defaults. */
  readonly options: ReadonlyMap<string, string>;
  /** Always false from the command line, where commander answers --help itself; kept for callers that build args. */
  readonly help: boolean;
}

export interface RunnableCommand extends CommandSpec {
  run(args: ParsedArgs): Promise<number>;
}

/** The program's own help: what it does, and the text after the command list. */
export interface ProgramSpec {
  readonly description: string;
  readonly epilog: string;
  readonly commands: readonly RunnableCommand[];
}

/** A mistake on the command line: printed with a hint to `--help`, exit code 2. */
export class UsageError extends TesseraError {
  constructor(
    message: string,
    readonly command?: string,
  ) {
    super(message, { code: "ERR_USAGE", exitCode: EXIT.usage });
    this.name = "UsageError";
  }

  override report(): string {
    const help = this.command ? `tessera ${this.command} --help` : "tessera --help";
    return `error: ${this.message}\nRun '${help}' for usage.\n`;
  }
}

/**
 * Commander reports `error: unknown option '--emitt'\n(Did you mean --emit?)` and exits itself; here every mistake
 * becomes a UsageError worded on one line like the rest of the CLI. Help requests pass through as CommanderErrors.
 */
function fromCommander(e: CommanderError, command: string | undefined): Error {
  if (e.code === "commander.helpDisplayed" || e.code === "commander.help" || e.code === "commander.version") return e;
  const message = e.message.replace(/^error: /, "").replace(/\n\(Did you mean (\S+)\?\)$/, " (did you mean '$1'?)");
  return new UsageError(message, command);
}

/** `tessera compile <file.ts> [--entry <export>] ...`: every option spelled out, which commander's `[options]` hides. */
function usageLine(spec: CommandSpec): string {
  const opts = spec.options.map((o) => {
    const body = o.value ? `--${o.name} ${o.value}` : `--${o.name}`;
    return o.required ? body : `[${body}]`;
  });
  return [...spec.positionals.map((p) => p.name), ...opts].join(" ");
}

function optionFor(o: OptionSpec): Option {
  const opt = new Option(o.value ? `--${o.name} ${o.value}` : `--${o.name}`, o.description);
  if (o.choices) opt.choices(o.choices);
  if (o.required) opt.makeOptionMandatory();
  return opt;
}

/** The commander program for `spec`; `onRun` receives the chosen command and its parsed arguments. */
function buildProgram(
  spec: ProgramSpec,
  onRun: (command: RunnableCommand, args: ParsedArgs) => Promise<void>,
): Command {
  const program = new Command("tessera")
    .usage("<command> [options]")
    .description(spec.description)
    .configureOutput({
      writeOut: (s) => process.stdout.write(s),
      writeErr: (s) => process.stderr.write(s),
      // Mistakes are printed once, by main, from the UsageError fromCommander makes.
      outputError: () => {},
    })
    .configureHelp({
      subcommandTerm: (c) => c.name(),
      argumentTerm: (a) => (a.required ? `<${a.name()}>` : `[${a.name()}]`),
    })
    .helpOption("-h, --help", "show this help")
    .helpCommand("help [command]", "show a command's help")
    .showSuggestionAfterError(true)
    .exitOverride((e) => {
      throw fromCommander(e, undefined);
    })
    .addHelpText("after", `\n${spec.epilog}`);
  for (const c of spec.commands) {
    const sub = program
      .command(c.name)
      .description(c.summary)
      .usage(usageLine(c))
      .exitOverride((e) => {
        throw fromCommander(e, c.name);
      });
    for (const p of c.positionals) sub.argument(p.name, p.description);
    const options = c.options.map((o) => ({ spec: o, option: optionFor(o) }));
    for (const { option } of options) sub.addOption(option);
    if (c.details) sub.addHelpText("after", `\n${c.details}`);
    sub.action(async () => {
      const given = new Map<string, string>();
      for (const { spec: o, option } of options) {
        const v: unknown = sub.getOptionValue(option.attributeName());
        if (v !== undefined) given.set(o.name, v === true ? "true" : String(v));
      }
      await onRun(c, { positionals: [...sub.args], options: given, help: false });
    });
  }
  return program;
}

/**
 * Parses `argv` (the arguments after `tessera`) and runs the command it names; resolves to the command's exit
 * code, or EXIT.ok after printing help. Command-line mistakes throw UsageError; the command's own errors pass through.
 */
export async function dispatch(spec: ProgramSpec, argv: readonly string[]): Promise<number> {
  let code: number = EXIT.ok;
  const program = buildProgram(spec, async (command, args) => {
    code = await command.run(args);
  });
  try {
    await program.parseAsync([...argv], { from: "user" });
  } catch (e) {
    // Help was printed: on request (exit 0), or because something was missing (commander's exit 1 is our usage exit).
    if (e instanceof CommanderError) return e.exitCode === 0 ? EXIT.ok : EXIT.usage;
    throw e;
  }
  return code;
}

export function table(rows: readonly (readonly [string, string])[], indent = 2): string[] {
  const width = Math.max(...rows.map((r) => r[0].length));
  return rows.map(([a, b]) => `${" ".repeat(indent)}${a.padEnd(width)}  ${b}`);
}
