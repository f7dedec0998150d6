// The public API as tests import it (the package entry point).
export * from "../../src/index.ts";
