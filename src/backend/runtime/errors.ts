// Runtime errors: PjrtError carries XLA's own message and status code; RuntimeError is a check of ours that failed first.
import { EXIT, TesseraError } from "../../errors.ts";

/** Status codes of PJRT_Error_Code (absl status codes), by number. */
export const PJRT_CODE_NAMES = [
  "OK",
  "CANCELLED",
  "UNKNOWN",
  "INVALID_ARGUMENT",
  "DEADLINE_EXCEEDED",
  "NOT_FOUND",
  "ALREADY_EXISTS",
  "PERMISSION_DENIED",
  "RESOURCE_EXHAUSTED",
  "FAILED_PRECONDITION",
  "ABORTED",
  "OUT_OF_RANGE",
  "UNIMPLEMENTED",
  "INTERNAL",
  "UNAVAILABLE",
  "DATA_LOSS",
  "UNAUTHENTICATED",
] as const;
export type PjrtCodeName = (typeof PJRT_CODE_NAMES)[number];

/** An error returned by the PJRT plugin (XLA): `code` is the status name, `xlaMessage` XLA's text verbatim. */
export class PjrtError extends TesseraError {
  override readonly name = "PjrtError";
  constructor(
    /** The PJRT C API function that failed, e.g. "PJRT_Client_Compile". */
    readonly op: string,
    /** Status name, e.g. "INVALID_ARGUMENT". */
    override readonly code: PjrtCodeName,
    /** Status number (PJRT_Error_Code). */
    readonly pjrtCode: number,
    /** XLA's message, unchanged. */
    readonly xlaMessage: string,
    context?: string,
  ) {
    // XLA rejecting what we emitted is our bug; running out of device memory is the user's model or batch size.
    const exitCode = code === "RESOURCE_EXHAUSTED" ? EXIT.userError : EXIT.internal;
    super(`${context ? `${context}: ` : ""}${op} failed (${code}): ${xlaMessage}`, { code, exitCode });
  }
}

/** Codes of the checks Tessera makes before calling into XLA (or around it). */
export type RuntimeErrorCode =
  | "ERR_ADDON_MISSING" // native/build/tessera_pjrt.node not built
  | "ERR_PLUGIN_NOT_FOUND" // plugin path does not exist
  | "ERR_PLUGIN_CORRUPT" // a cached plugin differs from its cache entry's manifest (size or sha256)
  | "ERR_PLUGIN_LOAD" // dlopen/GetPjrtApi/version failure
  | "ERR_PLUGIN_TOO_OLD" // a needed PJRT function is missing from the plugin's PJRT_Api
  | "ERR_PLUGIN_FETCH" // pip/python/download/hash failure
  | "ERR_BLAS_FETCH" // the OpenBLAS wheel: pip/python/download/hash failure
  | "ERR_BLAS_REGISTER" // the OpenBLAS GEMM could not be registered with a CPU plugin
  | "ERR_CLIENT_OPTIONS" // bad client options
  | "ERR_DTYPE" // unknown dtype, or TypedArray of the wrong kind
  | "ERR_SHAPE" // bad shape, or data length that does not match it
  | "ERR_DEVICE" // unknown device, or a buffer on the wrong device
  | "ERR_DISPOSED" // use of a disposed (or donated) buffer or executable
  | "ERR_PROGRAM" // empty program, no @main
  | "ERR_SHARDING_DIALECTS" // mhlo.sharding mixed with sdy, or with the Shardy partitioner
  | "ERR_COMPILE_OPTIONS" // bad replica/partition counts or device assignment
  | "ERR_ARG_COUNT" // wrong number of devices or arguments
  | "ERR_ARG_TYPE" // argument dtype or shape differs from the executable's parameter
  | "ERR_CLIENT_MISMATCH" // a buffer of another client
  | "ERR_UNSUPPORTED" // the plugin lacks an optional function
  | "ERR_NATIVE"; // an argument check inside the addon

export class RuntimeError extends TesseraError {
  override readonly name = "RuntimeError";
  constructor(
    override readonly code: RuntimeErrorCode,
    message: string,
  ) {
    // These checks guard the caller's setup and arguments; only an addon check failing means a bug of ours.
    super(message, { code, exitCode: code === "ERR_NATIVE" ? EXIT.internal : EXIT.userError });
  }
}

interface NativeErrorShape {
  message: string;
  code?: string;
  pjrtCode?: number;
  pjrtOp?: string;
  pjrtMessage?: string;
}

/** Turns an error thrown by the addon into a PjrtError (plugin status) or RuntimeError (addon check). */
export function fromNative(e: unknown, context?: string): Error {
  if (!(e instanceof Error)) return new RuntimeError("ERR_NATIVE", `${context ? `${context}: ` : ""}${String(e)}`);
  const n = e as Error & NativeErrorShape;
  if (typeof n.pjrtCode === "number") {
    const code = PJRT_CODE_NAMES[n.pjrtCode] ?? "UNKNOWN";
    return new PjrtError(n.pjrtOp ?? "PJRT", code, n.pjrtCode, n.pjrtMessage ?? n.message, context);
  }
  if (n.code === "TESSERA_NATIVE") {
    return new RuntimeError("ERR_NATIVE", `${context ? `${context}: ` : ""}${n.message}`);
  }
  return e;
}
