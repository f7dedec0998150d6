// Command-line parsing against a declared command spec: options, positionals, usage errors and help text.

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
  /** Options given, by long name; flags map to "true". */
  readonly options: ReadonlyMap<string, string>;
  readonly help: boolean;
}

/** A mistake on the command line: printed with a hint to `--help`, exit code 2. */
export class UsageError extends Error {
  constructor(
    message: string,
    readonly command?: string,
  ) {
    super(message);
    this.name = "UsageError";
  }
}

export function parseArgs(spec: CommandSpec, argv: readonly string[]): ParsedArgs {
  const positionals: string[] = [];
  const options = new Map<string, string>();
  let help = false;
  for (let i = 0; i < argv.length; i++) {
    const arg = argv[i]!;
    if (arg === "--") {
      positionals.push(...argv.slice(i + 1));
      break;
    }
    if (arg === "-h" || arg === "--help") {
      help = true;
      continue;
    }
    if (!arg.startsWith("-") || arg === "-") {
      positionals.push(arg);
      continue;
    }
    if (!arg.startsWith("--")) throw new UsageError(`unknown option '${arg}'`, spec.name);
    const eq = arg.indexOf("=");
    const name = arg.slice(2, eq < 0 ? undefined : eq);
    const opt = spec.options.find((o) => o.name === name);
    if (!opt) {
      const near = closest(name, spec.options.map((o) => o.name));
      throw new UsageError(`unknown option '--${name}'${near ? ` (did you mean '--${near}'?)` : ""}`, spec.name);
    }
    if (options.has(name)) throw new UsageError(`option '--${name}' given twice`, spec.name);
    if (opt.value === undefined) {
      if (eq >= 0) throw new UsageError(`option '--${name}' takes no value`, spec.name);
      options.set(name, "true");
      continue;
    }
    let value: string | undefined;
    if (eq >= 0) value = arg.slice(eq + 1);
    else if (i + 1 < argv.length && !argv[i + 1]!.startsWith("--")) value = argv[++i];
    if (value === undefined || value === "") throw new UsageError(`option '--${name}' needs a value ${opt.value}`, spec.name);
    if (opt.choices && !opt.choices.includes(value)) {
      throw new UsageError(`option '--${name}' must be one of ${opt.choices.join(", ")}; got '${value}'`, spec.name);
    }
    options.set(name, value);
  }
  if (!help) {
    if (positionals.length < spec.positionals.length) {
      throw new UsageError(`missing argument ${spec.positionals[positionals.length]!.name}`, spec.name);
    }
    if (positionals.length > spec.positionals.length) {
      throw new UsageError(`unexpected argument '${positionals[spec.positionals.length]}'`, spec.name);
    }
    for (const o of spec.options) {
      if (o.required && !options.has(o.name)) throw new UsageError(`missing required option --${o.name} ${o.value ?? ""}`.trimEnd(), spec.name);
    }
  }
  return { positionals, options, help };
}

export function commandUsage(spec: CommandSpec): string {
  const opts = spec.options.map((o) => {
    const body = o.value ? `--${o.name} ${o.value}` : `--${o.name}`;
    return o.required ? body : `[${body}]`;
  });
  return ["tessera", spec.name, ...spec.positionals.map((p) => p.name), ...opts].join(" ");
}

export function commandHelp(spec: CommandSpec): string {
  const lines = [`Usage: ${commandUsage(spec)}`, "", spec.summary];
  const rows: [string, string][] = [
    ...spec.positionals.map((p): [string, string] => [p.name, p.description]),
    ...spec.options.map((o): [string, string] => [
      o.value ? `--${o.name} ${o.value}` : `--${o.name}`,
      o.description + (o.choices ? ` (${o.choices.join(" | ")})` : ""),
    ]),
    ["-h, --help", "show this help"],
  ];
  lines.push("", "Arguments and options:", ...table(rows));
  if (spec.details) lines.push("", spec.details);
  return lines.join("\n") + "\n";
}

export function table(rows: readonly (readonly [string, string])[], indent = 2): string[] {
  const width = Math.max(...rows.map((r) => r[0].length));
  return rows.map(([a, b]) => `${" ".repeat(indent)}${a.padEnd(width)}  ${b}`);
}

/** The candidate within edit distance 2 of `word`, for "did you mean" hints. */
export function closest(word: string, candidates: readonly string[]): string | undefined {
  let best: string | undefined;
  let bestDist = 3;
  for (const c of candidates) {
    const d = editDistance(word, c);
    if (d < bestDist) [best, bestDist] = [c, d];
  }
  return best;
}

function editDistance(a: string, b: string): number {
  let prev = Array.from({ length: b.length + 1 }, (_, j) => j);
  for (let i = 1; i <= a.length; i++) {
    const cur = [i];
    for (let j = 1; j <= b.length; j++) {
      cur[j] = Math.min(prev[j]! + 1, cur[j - 1]! + 1, prev[j - 1]! + (a[i - 1] === b[j - 1] ? 0 : 1));
    }
    prev = cur;
  }
  return prev[b.length]!;
}
