// Errors raised while tracing: a frontend rule (broadcasting, promotion, einsum, trees) broken at the user's line.
import { TesseraError } from "../errors.ts";
import { formatLoc, formatType, scopeSuffix, type SourceLoc, type TensorType } from "../ir/types.ts";
import { opLoc } from "./loc.ts";

/**
 * A shape, dtype or structure mistake caught by the frontend before any IR op is built. The message has the same
 * form as the IR's OpTypeError: `matmul: <detail> (operands f32[2,3], f32[4,5]) at model.ts:12:7`.
 */
export class TraceError extends TesseraError {
  constructor(
    readonly op: string,
    readonly detail: string,
    readonly operandTypes: readonly TensorType[] = [],
    readonly loc: SourceLoc | undefined = opLoc(),
  ) {
    const operands = operandTypes.length ? ` (operands ${operandTypes.map(formatType).join(", ")})` : "";
    super(`${op}: ${detail}${operands}${scopeSuffix(loc)}${loc?.file ? ` at ${formatLoc(loc)}` : ""}`, {
      code: "ERR_TRACE",
    });
    this.name = "TraceError";
  }
}
