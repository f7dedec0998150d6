// Test helpers: trace a function on specs and run it through the reference interpreter.
import { hostArray, interpret, type HostArray } from "../../src/ir/interpret.ts";
import { print } from "../../src/ir/print.ts";
import { trace } from "../../src/frontend/trace.ts";
import type { DType } from "../../src/ir/types.ts";

/** A host argument: dtype, shape and row-major values. */
export function host(dtype: DType, shape: number[], values: ArrayLike<number>): HostArray {
  return hostArray(dtype, shape, values);
}

/** Traces `fn` on the types of `args` and interprets the graph on them; returns output values as number arrays. */
export function run(fn: (...a: never[]) => unknown, args: HostArray[]): number[][] {
  const { graph } = trace(
    fn,
    args.map((a) => a.type),
  );
  return interpret(graph, args).map((o) => Array.from(o.data));
}

/** Printed IR of `fn` traced on `specs`, without locations (goldens stay independent of line numbers). */
export function ir(fn: (...a: never[]) => unknown, specs: unknown[]): string {
  return print(trace(fn, specs).graph, { locs: false });
}

/** The error `f` throws (fails the test when it throws none), so a test can assert its type and message. */
export function caught(f: () => unknown): Error {
  try {
    f();
  } catch (e) {
    return e as Error;
  }
  throw new Error("expected an error");
}
