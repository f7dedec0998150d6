// Test helpers for golden IR-text pass tests: dedented IR literals, and "parse, run pass, print" comparisons.
import { expect } from "vitest";
import type { Graph } from "../../src/ir/graph.ts";
import { parse } from "../../src/ir/parse.ts";
import { print } from "../../src/ir/print.ts";
import { verify } from "../../src/ir/verify.ts";

/** A template literal with its common indentation and the leading/trailing blank lines removed; ends in "\n". */
export function ir(strings: TemplateStringsArray, ...args: unknown[]): string {
  const text = String.raw({ raw: strings }, ...args);
  const lines = text
    .replace(/^\s*\n/, "")
    .replace(/\n\s*$/, "")
    .split("\n");
  const indent = Math.min(...lines.filter((l) => l.trim()).map((l) => /^ */.exec(l)![0].length));
  return `${lines.map((l) => l.slice(indent)).join("\n")}\n`;
}

/** Parses `input`, runs `run`, verifies the result and checks its printed text (locations included). */
export function expectPass(run: (g: Graph) => Graph, input: string, expected: string): Graph {
  const out = run(parse(input));
  verify(out);
  expect(print(out)).toBe(expected);
  return out;
}

/** The pass leaves the graph alone: it returns the very same object. */
export function expectUnchanged(run: (g: Graph) => Graph, input: string): void {
  const g = parse(input);
  expect(run(g)).toBe(g);
}
