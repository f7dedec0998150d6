// Errors raised while building IR: a broken type rule, reported with the op, its operand types and the user's line.
import { TesseraError } from "../errors.ts";
import type { OpName } from "./ops.ts";
import { formatLoc, formatType, scopeSuffix, type SourceLoc, type TensorType } from "./types.ts";

/** A shape or dtype rule violated while building an op: names the op, its operands and the user's line. */
export class OpTypeError extends TesseraError {
  constructor(
    readonly op: OpName,
    readonly detail: string,
    readonly operandTypes: readonly TensorType[],
    readonly loc: SourceLoc | undefined,
  ) {
    const operands = operandTypes.length ? ` (operands ${operandTypes.map(formatType).join(", ")})` : "";
    super(`${op}: ${detail}${operands}${scopeSuffix(loc)}${loc?.file ? ` at ${formatLoc(loc)}` : ""}`, {
      code: "ERR_OP_TYPE",
    });
    this.name = "OpTypeError";
  }
}

/** Thrown by type rules; the builder turns it into an OpTypeError carrying the op and location. */
export class RuleError extends TesseraError {
  constructor(message: string) {
    super(message, { code: "ERR_OP_TYPE" });
  }
}
