// Tessera's public API: the tracing DSL (ops, transforms, trees, RNG) and compiled execution (jit, arrays).
export * from "./frontend/api.ts";
export * as tx from "./frontend/api.ts";
