// The running Tessera's version, from package.json: recorded in the files Tessera writes for other programs to read.
import { readFileSync } from "node:fs";

/** "0.1.0": package.json's `version`, read once. */
export const TESSERA_VERSION: string = (
  JSON.parse(readFileSync(new URL("../package.json", import.meta.url), "utf8")) as { version: string }
).version;
