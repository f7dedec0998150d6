// The runtime's two-valued environment switches ($TESSERA_CPU_GEMM, $TESSERA_CPU_ALLOC): unset means on, a bad value is named.
import { RuntimeError } from "./errors.ts";

/** Whether `$name` selects `on` (also when unset or empty) rather than `off`; any other value throws, naming both. */
export function envSwitch(name: string, on: string, off: string): boolean {
  const v = process.env[name];
  if (v === undefined || v === "" || v === on) return true;
  if (v === off) return false;
  throw new RuntimeError("ERR_CLIENT_OPTIONS", `$${name} must be "${on}" or "${off}", got ${JSON.stringify(v)}`);
}
