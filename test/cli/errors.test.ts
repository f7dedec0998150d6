// The one error hierarchy: every error class Tessera throws on purpose is a TesseraError with its code and exit code.
import { describe, expect, it } from "vitest";
import { PjrtError, RuntimeError } from "../../src/backend/runtime/errors.ts";
import { EmitError } from "../../src/backend/stablehlo/emitter.ts";
import { UsageError } from "../../src/cli/args.ts";
import { CliError } from "../../src/cli/diagnostics.ts";
import { EXIT, TesseraError } from "../../src/errors.ts";
import { FormatError } from "../../src/formats/errors.ts";
import { TraceError } from "../../src/frontend/errors.ts";
import { OpTypeError, RuleError } from "../../src/ir/errors.ts";
import { InterpretError } from "../../src/ir/interpret.ts";
import { ParseError } from "../../src/ir/parse.ts";
import { ShardingError } from "../../src/ir/sharding.ts";
import { VerifyError } from "../../src/ir/verify.ts";
import { PassError } from "../../src/passes/manager.ts";
import { UnknownPassError } from "../../src/passes/pipeline.ts";

describe("TesseraError subclasses", () => {
  it("keep their names and messages, and carry the code and exit code the CLI uses", () => {
    const cases: [TesseraError, string, string, number][] = [
      [new TraceError("matmul", "bad", [], undefined), "TraceError", "ERR_TRACE", EXIT.userError],
      [new OpTypeError("add", "bad", [], undefined), "OpTypeError", "ERR_OP_TYPE", EXIT.userError],
      [new RuleError("bad"), "RuleError", "ERR_OP_TYPE", EXIT.userError],
      [new ParseError(3, "bad"), "ParseError", "ERR_PARSE", EXIT.userError],
      [new ShardingError("mesh", "bad"), "ShardingError", "ERR_SHARDING", EXIT.userError],
      [new FormatError("f.json: bad", { file: "f.json" }), "FormatError", "ERR_FORMAT", EXIT.userError],
      [new UnknownPassError("nope"), "UnknownPassError", "ERR_UNKNOWN_PASS", EXIT.userError],
      [new CliError("error: bad\n"), "CliError", "ERR_CLI", EXIT.userError],
      [new UsageError("bad", "compile"), "UsageError", "ERR_USAGE", EXIT.usage],
      [new RuntimeError("ERR_SHAPE", "bad"), "RuntimeError", "ERR_SHAPE", EXIT.userError],
      [new RuntimeError("ERR_NATIVE", "bad"), "RuntimeError", "ERR_NATIVE", EXIT.internal],
      [
        new PjrtError("PJRT_Client_Compile", "RESOURCE_EXHAUSTED", 8, "oom"),
        "PjrtError",
        "RESOURCE_EXHAUSTED",
        EXIT.userError,
      ],
      [
        new PjrtError("PJRT_Client_Compile", "INVALID_ARGUMENT", 3, "bad"),
        "PjrtError",
        "INVALID_ARGUMENT",
        EXIT.internal,
      ],
      [new EmitError("add", "bad"), "EmitError", "ERR_EMIT", EXIT.internal],
      [new InterpretError("bad"), "InterpretError", "ERR_INTERPRET", EXIT.internal],
      [new VerifyError(["bad"], "cse"), "VerifyError", "ERR_VERIFY", EXIT.internal],
      [new PassError("cse", "pass 'cse' failed: bad", "", "cse"), "PassError", "ERR_PASS", EXIT.internal],
    ];
    for (const [e, name, code, exitCode] of cases) {
      expect(e).toBeInstanceOf(TesseraError);
      expect({ name: e.name, code: e.code, exitCode: e.exitCode }).toEqual({ name, code, exitCode });
    }
    expect(new VerifyError(["bad"], "cse").message).toBe("after pass 'cse': bad");
    // Left out, the location is the caller's line, as for a trace.
    expect(new TraceError("matmul", "bad").message).toMatch(/^matmul: bad at test\/cli\/errors\.test\.ts:\d+:\d+$/);
  });

  it("report themselves as the CLI prints them", () => {
    expect(new FormatError("f.json: bad").report()).toBe("error: f.json: bad\n");
    expect(new UsageError("unknown option '--x'", "compile").report()).toBe(
      "error: unknown option '--x'\nRun 'tessera compile --help' for usage.\n",
    );
    expect(new UsageError("unknown command 'x'").report()).toBe(
      "error: unknown command 'x'\nRun 'tessera --help' for usage.\n",
    );
    // Already formatted (a source excerpt): printed as is.
    expect(new CliError("a.ts:1:1 - error: bad\n\n1 | x\n  | ^\n").report()).toBe(
      "a.ts:1:1 - error: bad\n\n1 | x\n  | ^\n",
    );
  });
});
