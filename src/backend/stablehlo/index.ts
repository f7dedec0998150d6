// The StableHLO backend's public surface: the emitter, its options and errors, and the lowering table.
export { emitStableHLO, type EmitOptions, type MeshSpec } from "./emit.ts";
export { EmitError } from "./emitter.ts";
export { RULES as LOWERING_RULES, type LowerRule } from "./lower.ts";
export { elementLiteral, roundTo, tensorTypeText } from "./text.ts";
