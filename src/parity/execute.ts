// Runs a traced function on host tensor trees (safetensors-style HostTensor leaves) with the reference interpreter or PJRT.
import { jit, trace, type Tree } from "../index.ts";
import { flatten, numLeaves, unflatten } from "../frontend/tree.ts";
import { interpret } from "../ir/interpret.ts";
import type { HostTensor } from "../formats/host_tensor.ts";
import { fromInterp, isHostTensor, specOf, toInterp, treeFromDevice, treeToDevice } from "../host/transfer.ts";

/**
 * `fn(...args)` traced on the types of `args` (trees of HostTensor) and run by the reference interpreter; the
 * result has the structure `fn` returns, with HostTensor leaves.
 */
export function interpretOnHost(
  fn: (...args: never[]) => unknown,
  args: readonly Tree<HostTensor>[],
): Tree<HostTensor> {
  const specArgs = args.map((a) =>
    unflatten(flatten(a, isHostTensor).def, flatten(a, isHostTensor).leaves.map(specOf)),
  );
  const traced = trace(fn, specArgs);
  const leaves = flatten(args as Tree<HostTensor>, isHostTensor).leaves;
  const outs = interpret(traced.graph, leaves.map(toInterp));
  // Values debug.print shows follow the function's outputs; the interpreter does not print them.
  return unflatten(traced.outTree, outs.slice(0, numLeaves(traced.outTree)).map(fromInterp));
}

/** Like interpretOnHost, but compiled with `jit` (cleanup passes, StableHLO, PJRT CPU) and run on the device. */
export async function pjrtOnHost(
  // biome-ignore lint/suspicious/noExplicitAny: jit(fn) is called with the device copies of `args`, whose types fn's parameters cannot be related to; any[] makes that call type-check (never[] would refuse it)
  fn: (...args: any[]) => unknown,
  args: readonly Tree<HostTensor>[],
): Promise<Tree<HostTensor>> {
  const out = await jit(fn)(...args.map((a) => treeToDevice(a)));
  return treeFromDevice(out);
}
