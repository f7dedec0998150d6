// The public API's names (named exports, and the names inside tx, tx.nn, tx.random, ...) against public_names.txt: a
// name that disappears breaks user code (rename with a deprecated alias instead); a new one is added to the list.
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { describe, expect, it } from "vitest";
import * as api from "../../src/index.ts";

/** Every exported name, namespaces walked two levels down (`tx.nn.relu`); module namespaces have no prototype. */
function publicNames(): string[] {
  const out: string[] = [];
  const walk = (prefix: string, o: Record<string, unknown>, depth: number) => {
    for (const k of Object.keys(o)) {
      out.push(prefix + k);
      const v = o[k];
      if (depth < 2 && v !== null && typeof v === "object" && Object.getPrototypeOf(v) === null)
        walk(`${prefix}${k}.`, v as Record<string, unknown>, depth + 1);
    }
  };
  walk("", api as unknown as Record<string, unknown>, 0);
  return out.sort();
}

const listed = readFileSync(join(import.meta.dirname, "public_names.txt"), "utf8")
  .split("\n")
  .filter((l) => l && !l.startsWith("#"));

describe("the public API's names", () => {
  const now = new Set(publicNames());
  it("keeps every name users may import (a renamed name keeps its old name as an alias)", () => {
    expect(listed.filter((n) => !now.has(n))).toEqual([]);
  });
  it("lists every name it exports (add a new one to test/frontend/public_names.txt)", () => {
    const known = new Set(listed);
    expect([...now].filter((n) => !known.has(n))).toEqual([]);
  });
});
