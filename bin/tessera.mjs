#!/usr/bin/env node
// The `tessera` command: teaches Node to load TypeScript (ours and the user's model files), then runs src/cli/main.ts.
import { register as registerHooks } from "node:module";
import { pathToFileURL } from "node:url";
import { register as registerTsx } from "tsx/esm/api";

const root = new URL("../", import.meta.url);
const indexUrl = new URL("src/index.ts", root).href;

registerTsx();
// A model file outside this package still imports "tessera": map the name to this copy, so the CLI and the model
// share one frontend (one trace stack, one set of classes). And a .ts file is always an ES module here, even in a
// folder without `"type": "module"` (tsx would otherwise load it as CommonJS, which cannot import tessera).
// Registered after tsx, so it runs first and hands the mapped URL on to tsx's resolver.
const hook = `export async function resolve(specifier, context, next) {
  const r = await next(specifier === "tessera" ? ${JSON.stringify(indexUrl)} : specifier, context);
  if (r.format === "commonjs" && /\\.tsx?$/.test(new URL(r.url).pathname)) return { ...r, format: "module" };
  return r;
}`;
registerHooks(`data:text/javascript,${encodeURIComponent(hook)}`, pathToFileURL("./"));

const { main } = await import(new URL("src/cli/main.ts", root).href);
process.exitCode = await main(process.argv.slice(2));
