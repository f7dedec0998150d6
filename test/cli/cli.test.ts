// The `tessera` command end to end, as a subprocess on small fixture models: outputs, reports and exit codes.
import { execFile } from "node:child_process";
import { mkdtempSync, readFileSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { describe, expect, it as serialIt } from "vitest";

const ROOT = fileURLToPath(new URL("../../", import.meta.url));
const BIN = path.join(ROOT, "bin", "tessera.mjs");
const FIX = "test/cli/fixtures";
// Each run pays for tsx and ts-morph start-up: seconds on a loaded 2-core machine.
const SLOW = 120_000;
// The runs are independent processes: let them overlap (vitest caps how many run at once).
const it = serialIt.concurrent;

interface Run {
  code: number;
  stdout: string;
  stderr: string;
}

function tessera(args: string[], env: Record<string, string> = {}): Promise<Run> {
  return new Promise((resolve) => {
    execFile(
      process.execPath,
      [BIN, ...args],
      { cwd: ROOT, env: { ...process.env, TESSERA_DEBUG: "", ...env } },
      (err, stdout, stderr) => {
        const code = err ? (typeof err.code === "number" ? err.code : -1) : 0;
        resolve({ code, stdout, stderr });
      },
    );
  });
}

describe("command line", () => {
  it("prints help, and rejects unknown commands and options with exit code 2", async () => {
    const [help, unknownCmd, unknownOpt, compileHelp] = await Promise.all([
      tessera(["--help"]),
      tessera(["compil", "x.ts"]),
      tessera(["compile", `${FIX}/matmul.ts`, "--emitt", "ir"]),
      tessera(["compile", "--help"]),
    ]);
    expect(help.code).toBe(0);
    expect(help.stdout).toMatch(/^Usage: tessera <command> \[options\]/);
    expect(help.stdout).toMatch(/^ {2}compile +Type-check a model file/m);
    expect(help.stdout).toMatch(/^ {2}inspect +Print an entry's IR/m);
    expect(help.stdout).toMatch(/^ {2}parity +Recompute a Hugging Face/m);
    expect(unknownCmd).toMatchObject({ code: 2, stdout: "" });
    expect(unknownCmd.stderr).toBe(
      "error: unknown command 'compil' (did you mean 'compile'?)\nRun 'tessera --help' for usage.\n",
    );
    expect(unknownOpt.code).toBe(2);
    expect(unknownOpt.stderr).toContain("error: unknown option '--emitt' (did you mean '--emit'?)");
    expect(compileHelp.code).toBe(0);
    expect(compileHelp.stdout).toContain("Usage: tessera compile <file.ts> [--entry <export>] [--emit <format>]");
    expect(compileHelp.stdout).toMatch(
      /--emit <format> +what to print \(default ir\); exported: a file for\s+loadExported \(choices: "ir", "stablehlo",\s+"exported"\)/,
    );
    expect(compileHelp.stdout).toMatch(/^Examples:\n {2}tessera compile examples\/mlp\.ts --entry forward$/m);
  });

  it("reports commander's usage errors in the CLI's words, with exit code 2", async () => {
    const [missing, badChoice, extra, bare] = await Promise.all([
      tessera(["compile"]),
      tessera(["compile", `${FIX}/matmul.ts`, "--emit", "hlo"]),
      tessera(["parity", "a", "b"]),
      tessera([]),
    ]);
    expect(missing).toMatchObject({ code: 2, stdout: "" });
    expect(missing.stderr).toBe(
      "error: missing required argument 'file.ts'\nRun 'tessera compile --help' for usage.\n",
    );
    expect(badChoice.code).toBe(2);
    expect(badChoice.stderr).toBe(
      "error: option '--emit <format>' argument 'hlo' is invalid. Allowed choices are ir, stablehlo, exported.\nRun 'tessera compile --help' for usage.\n",
    );
    expect(extra.code).toBe(2);
    expect(extra.stderr).toContain("error: too many arguments for 'parity'");
    // Bare `tessera` prints the help, as a usage mistake.
    expect(bare.code).toBe(2);
    expect(bare.stdout).toMatch(/^Usage: tessera <command> \[options\]/);
  });
});

describe("compile", () => {
  it(
    "prints the cleaned-up IR, writes it to --out, and dumps after every pass to --dump-to",
    async () => {
      const dir = mkdtempSync(path.join(tmpdir(), "tessera-cli-"));
      const out = path.join(dir, "out.ir");
      const dump = path.join(dir, "dump.ir");
      const r = await tessera([
        "compile",
        `${FIX}/matmul.ts`,
        "--entry",
        "forward",
        "--dump-after",
        "all",
        "--dump-to",
        dump,
        "--out",
        out,
      ]);
      expect(r).toMatchObject({ code: 0, stdout: "", stderr: "" });
      const ir = readFileSync(out, "utf8");
      expect(ir).toBe(
        [
          `func @main(%0: f32[32] "params.b", %1: f32[16,32] "params.w", %2: f32[8,16] "x") -> (f32[8,32] "out") {`,
          `  %3: f32[8,32] = dot_general %2, %1 {lhsBatch=[], lhsContract=[1], outDtype=f32, rhsBatch=[], rhsContract=[0]}`,
          `  %4: f32[8,32] = broadcast_in_dim %0 {dims=[1], shape=[8,32]}`,
          `  %5: f32[8,32] = add %3, %4`,
          `  return %5`,
          `}`,
          ``,
        ].join("\n"),
      );
      const dumped = readFileSync(dump, "utf8");
      const headers = [...dumped.matchAll(/^\/\/ -----\/\/ IR Dump After (\S+) \/\/----- \/\/$/gm)].map((m) => m[1]);
      expect(headers).toEqual(["constant-fold", "simplify", "cse", "dce", "inline-checkpoints"]);
      // Dumps carry the user's locations: the matmul is on line 5, column 14 of the fixture.
      expect(dumped).toContain(
        `dot_general %2, %1 {lhsBatch=[], lhsContract=[1], outDtype=f32, rhsBatch=[], rhsContract=[0]} loc("${FIX}/matmul.ts":5:14)`,
      );
    },
    SLOW,
  );

  it(
    "emits StableHLO with the entry's name, user locations, and donated parameters aliased to the new ones",
    async () => {
      const r = await tessera(["compile", "examples/mlp.ts", "--entry", "trainStep", "--emit", "stablehlo"]);
      expect(r.stderr).toBe("");
      expect(r.code).toBe(0);
      expect(r.stdout).toMatch(/^module @trainStep attributes \{mhlo.num_partitions = 1 : i32/);
      // Inputs are params.{b1,b2,w1,w2}, x, y, lr; outputs the new params in the same order, then the loss.
      expect(r.stdout).toContain(
        "func.func public @main(%arg0: tensor<32xf32> {tf.aliasing_output = 0 : i32}, %arg1: tensor<1xf32> {tf.aliasing_output = 1 : i32}, " +
          "%arg2: tensor<4x32xf32> {tf.aliasing_output = 2 : i32}, %arg3: tensor<32x1xf32> {tf.aliasing_output = 3 : i32}, " +
          "%arg4: tensor<64x4xf32>, %arg5: tensor<64x1xf32>, %arg6: tensor<f32>) -> " +
          "(tensor<32xf32>, tensor<1xf32>, tensor<4x32xf32>, tensor<32x1xf32>, tensor<f32>)",
      );
      // The first matmul's location is where examples/mlp.ts calls it (the method name, as V8 reports calls).
      const lines = readFileSync(path.join(ROOT, "examples/mlp.ts"), "utf8").split("\n");
      const line = lines.findIndex((l) => l.includes("x.matmul(params.w1)"));
      const col = lines[line]!.indexOf("matmul(params.w1)") + 1;
      expect(r.stdout).toContain(`%0 = stablehlo.dot_general %arg4, %arg2, contracting_dims = [1] x [0]`);
      expect(r.stdout).toContain(`-> tensor<64x32xf32> loc("examples/mlp.ts":${line + 1}:${col})\n`);
      expect(r.stdout.match(/stablehlo\.dot_general/g)).toHaveLength(5); // 2 forward, 3 backward (no dx)
      expect(r.stdout.match(/stablehlo\.tanh/g)).toHaveLength(1);
    },
    SLOW,
  );
});

describe("file-system mistakes", () => {
  it(
    "names the path and the cause, exit 1, when --out's folder is missing or the model file is a folder",
    async () => {
      const dir = mkdtempSync(path.join(tmpdir(), "tessera-cli-"));
      const out = path.join(dir, "missing", "out.ir");
      const [noFolder, folderIn] = await Promise.all([
        tessera(["compile", `${FIX}/matmul.ts`, "--out", out]),
        tessera(["compile", FIX]),
      ]);
      expect(noFolder).toMatchObject({ code: 1, stdout: "" });
      expect(noFolder.stderr).toBe(
        `error: cannot write --out file '${out}': no such file or directory (is '${path.dirname(out)}' there?) (ENOENT)\n`,
      );
      expect(folderIn).toMatchObject({ code: 1, stdout: "" });
      expect(folderIn.stderr).toBe(
        `error: cannot read model file '${FIX}': is a directory, expected a file (EISDIR)\n`,
      );
    },
    SLOW,
  );
});

describe("inspect", () => {
  it(
    "reports op counts, exact FLOPs and bytes for a matmul plus bias",
    async () => {
      const r = await tessera(["inspect", `${FIX}/matmul.ts`]);
      expect(r.stderr).toBe("");
      expect(r.code).toBe(0);
      expect(r.stdout).toMatch(
        /^\/\/ test\/cli\/fixtures\/matmul\.ts --entry forward: 3 ops traced, 3 after cleanup\nfunc @main\(/,
      );
      expect(r.stdout).toContain("  %3: f32[8,32] = dot_general %2, %1");
      expect(r.stdout).toContain("ops: 3\n  add               1\n  broadcast_in_dim  1\n  dot_general       1\n");
      // dot_general 2*M*N*K = 2*8*32*16 = 8192, plus one add per element of f32[8,32] = 256.
      expect(r.stdout).toMatch(/^FLOPs +8448 \(8\.45 k\)$/m);
      expect(r.stdout).toMatch(/^transcendentals +0$/m);
      // dot: (128 + 512 + 256) * 4; broadcast: (32 + 256) * 4; add: 3 * 256 * 4.
      expect(r.stdout).toMatch(/^bytes accessed +7\.63 KiB \(7808 bytes\)$/m);
      expect(r.stdout).toMatch(/^inputs +2\.63 KiB in 3 tensors \(2688 bytes\)$/m);
      expect(r.stdout).toMatch(/^ {2}params +2\.13 KiB in 2 tensors$/m);
      expect(r.stdout).toMatch(/^outputs +1\.00 KiB in 1 tensor \(1024 bytes\)$/m);
      expect(r.stdout).toMatch(/^ {2}f32\[8,32\] +1\.00 KiB +dot_general +test\/cli\/fixtures\/matmul\.ts:5:14$/m);
    },
    SLOW,
  );
});

describe("errors in the user's model", () => {
  it(
    "reports TypeScript errors with file:line:col, the line and a caret, and traces nothing",
    async () => {
      // Written outside the repository, so that the project's own `tsc` never sees the deliberate errors; this
      // also covers a model file outside the package importing "tessera".
      const dir = mkdtempSync(path.join(tmpdir(), "tessera-cli-"));
      const file = path.join(dir, "type_error.ts");
      writeFileSync(
        file,
        [
          `// A model with TypeScript errors: the CLI must stop before tracing (the missing method would throw).`,
          `import { entry, spec, type Tensor } from "tessera";`,
          ``,
          `const width: number = "wide";`,
          `export const forward = entry((x: Tensor) => x.relu(), [spec("f32", [width])]);`,
          ``,
        ].join("\n"),
      );
      const r = await tessera(["compile", file, "--entry", "forward"]);
      expect(r.code).toBe(1);
      expect(r.stdout).toBe("");
      expect(r.stderr).toBe(
        [
          `${file}:4:7 - error TS2322: Type 'string' is not assignable to type 'number'.`,
          ``,
          `4 | const width: number = "wide";`,
          `  |       ^~~~~`,
          ``,
          `${file}:5:47 - error TS2339: Property 'relu' does not exist on type 'Tensor'.`,
          ``,
          `5 | export const forward = entry((x: Tensor) => x.relu(), [spec("f32", [width])]);`,
          `  |                                               ^~~~`,
          ``,
          `Found 2 type errors; nothing was compiled.`,
          ``,
        ].join("\n"),
      );
    },
    SLOW,
  );

  it(
    "calls a syntax error a syntax error, without the type errors that echo it, for compile and inspect",
    async () => {
      const dir = mkdtempSync(path.join(tmpdir(), "tessera-cli-"));
      const file = path.join(dir, "syntax_error.ts");
      writeFileSync(
        file,
        [
          `// A model that does not parse: an operator without its right operand.`,
          `import { entry, spec, type Tensor } from "tessera";`,
          `const width = 2 +;`,
          `export const forward = entry((x: Tensor) => x.exp(), [spec("f32", [width])]);`,
          ``,
        ].join("\n"),
      );
      const [compile, inspect] = await Promise.all([tessera(["compile", file]), tessera(["inspect", file])]);
      for (const r of [compile, inspect]) {
        expect(r.code).toBe(1);
        expect(r.stdout).toBe("");
        expect(r.stderr).toMatch(
          new RegExp(`^${file.replace(/[.*+?^${}()|[\]\\]/g, "\\$&")}:3:\\d+ - error TS1\\d{3}: `),
        );
        expect(r.stderr).toMatch(/\nFound 1 syntax error; nothing was compiled\.\n$/);
        expect(r.stderr).not.toContain("type error");
      }
    },
    SLOW,
  );

  it(
    "reports a shape error at the user's line with a caret and no stack",
    async () => {
      const r = await tessera(["compile", `${FIX}/errors.ts`, "--entry", "badShapes"]);
      expect(r.code).toBe(1);
      expect(r.stdout).toBe("");
      expect(r.stderr).toBe(
        [
          `${FIX}/errors.ts:6:10 - error: matmul: contracting dims must match: lhs dim 1 = 3, rhs dim 0 = 8 (operands f32[4,3], f32[8,3])`,
          ``,
          `6 |   return matmul(h, w);`,
          `  |          ^`,
          ``,
        ].join("\n"),
      );
    },
    SLOW,
  );

  it(
    "names the available entries when --entry is missing or not an entry",
    async () => {
      const [missing, notEntry] = await Promise.all([
        tessera(["inspect", `${FIX}/errors.ts`, "--entry", "nope"]),
        tessera(["compile", `${FIX}/errors.ts`, "--entry", "helper"]),
      ]);
      expect(missing).toMatchObject({ code: 1, stdout: "" });
      expect(missing.stderr).toBe(`error: ${FIX}/errors.ts has no export 'nope'; available entries: badShapes\n`);
      expect(notEntry.code).toBe(1);
      expect(notEntry.stderr).toBe(
        `error: export 'helper' of ${FIX}/errors.ts is a plain function, not an entry(...); available entries: badShapes\n`,
      );
    },
    SLOW,
  );
});
