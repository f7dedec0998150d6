// Prints an IR graph as a StableHLO text module with one public @main, ready for PJRT_Client_Compile.
import type { AnyOp, Graph, Value } from "../../ir/graph.ts";
import { formatType, sameType } from "../../ir/types.ts";
import { EmitError, FuncEmitter } from "./emitter.ts";
import { emitOps } from "./lower.ts";
import { stringLiteral, symbolName, tensorTypeText } from "./text.ts";

/** A Shardy mesh: `sdy.mesh @name = <["x"=4, "y"=2]>`. */
export interface MeshSpec {
  readonly name?: string;
  readonly axes: readonly { readonly name: string; readonly size: number }[];
}

export interface EmitOptions {
  /** `module @<name>`, the HLO module's name in XLA's dumps and errors. Default "tessera". */
  readonly moduleName?: string;
  /** Per input: the output index it is donated into (`tf.aliasing_output`); that output must have its type. */
  readonly donate?: readonly (number | undefined)[];
  /** Per input: donate and let XLA pick the alias (`jax.buffer_donor`). Ignored where `donate` names an output. */
  readonly donors?: readonly boolean[];
  /** Print `loc("file":line:col)` on ops that carry a source location. Default true. */
  readonly locs?: boolean;
  /** `mhlo.num_partitions`. Default 1. */
  readonly numPartitions?: number;
  /** Per input / output: raw `sdy.sharding` attribute text (`#sdy.sharding<@mesh, [{"x"}, {}]>`); "" for none. */
  readonly argShardings?: readonly string[];
  readonly resultShardings?: readonly string[];
  /** The mesh the shardings name: a MeshSpec, or raw text (`@mesh = <["x"=4]>`, with or without `sdy.mesh`). */
  readonly mesh?: MeshSpec | string;
  /**
   * Values (op results, in scan bodies too) to pin with `sdy.sharding_constraint`, each with its tensor sharding
   * text `<@mesh, [{"x"}, {}]>` (or several, applied in turn): the partitioner must lay them out so.
   */
  readonly constraints?: ReadonlyMap<Value, string | readonly string[]>;
  /**
   * Per op, per operand: a sharding (`<@mesh, [...]>`) to move the operand to right before the op, with an
   * `sdy.sharding_constraint` that only this op reads: the reshard the partitioner must do, stated explicitly.
   */
  readonly operandConstraints?: ReadonlyMap<AnyOp, readonly (string | undefined)[]>;
  /**
   * f32 dot_generals as calls of the OpenBLAS GEMM that native/cpu_gemm.cc registers with a CPU plugin
   * (src/backend/runtime/cpu_gemm.ts says when a program may use it). Default false: XLA's own dot.
   */
  readonly cpuGemm?: boolean;
}

function meshLine(mesh: MeshSpec | string): string {
  if (typeof mesh === "string") return mesh.trim().startsWith("sdy.mesh") ? mesh.trim() : `sdy.mesh ${mesh.trim()}`;
  const axes = mesh.axes.map((a) => `${stringLiteral(a.name)}=${a.size}`).join(", ");
  return `sdy.mesh ${symbolName(mesh.name ?? "mesh")} = <[${axes}]>`;
}

function attrDict(attrs: string[]): string {
  return attrs.length ? ` {${attrs.join(", ")}}` : "";
}

/** Argument attributes: donation (checked against the aliased output's type) and sharding. */
function argAttrs(g: Graph, opts: EmitOptions): string[][] {
  const aliased = new Map<number, number>();
  return g.inputs.map((v, i) => {
    const attrs: string[] = [];
    const k = opts.donate?.[i];
    if (k !== undefined) {
      const out = g.outputs[k];
      if (!Number.isInteger(k) || out === undefined) {
        throw new EmitError(
          undefined,
          `input ${i} is donated to output ${k}, but the graph has ${g.outputs.length} outputs`,
        );
      }
      if (!sameType(out.type, v.type)) {
        throw new EmitError(
          undefined,
          `input ${i} (${formatType(v.type)}) is donated to output ${k} of another type (${formatType(out.type)})`,
        );
      }
      const prev = aliased.get(k);
      if (prev !== undefined) throw new EmitError(undefined, `inputs ${prev} and ${i} are both donated to output ${k}`);
      aliased.set(k, i);
      attrs.push(`tf.aliasing_output = ${k} : i32`);
    } else if (opts.donors?.[i]) {
      attrs.push(`jax.buffer_donor = true`);
    }
    const sh = opts.argShardings?.[i];
    if (sh) attrs.push(`sdy.sharding = ${sh}`);
    return attrs;
  });
}

/** Prints `g` as a StableHLO module whose `@main` takes `g.inputs` and returns `g.outputs`, in order. */
export function emitStableHLO(g: Graph, opts: EmitOptions = {}): string {
  const argAttrList = argAttrs(g, opts);
  const e = new FuncEmitter(opts.locs ?? true, 2);
  e.cpuGemm = opts.cpuGemm ?? false;
  const constraints = opts.constraints;
  if (constraints?.size) {
    e.constrain = (v, ref) => {
      const sh = constraints.get(v);
      if (!sh) return ref;
      // Several: pinned to each in turn (the layout an op computes in, then the value's own).
      for (const one of typeof sh === "string" ? [sh] : sh)
        ref = e.op1(`sdy.sharding_constraint ${ref} ${one} : ${tensorTypeText(v.type)}`);
      return ref;
    };
  }
  const operandConstraints = opts.operandConstraints;
  if (operandConstraints?.size) {
    e.beforeOp = (op) => {
      const list = operandConstraints.get(op);
      if (!list) return undefined;
      const saved: [Value, string][] = [];
      op.inputs.forEach((v, i) => {
        const sh = list[i];
        if (!sh || saved.some(([w]) => w === v)) return;
        const ref = e.ref(v);
        saved.push([v, ref]);
        e.bind(v, e.op1(`sdy.sharding_constraint ${ref} ${sh} : ${tensorTypeText(v.type)}`));
      });
      return () =>
        saved.forEach(([v, ref]) => {
          e.bind(v, ref);
        });
    };
  }
  const args = g.inputs.map((v, i) => {
    const name = `%arg${i}`;
    e.bind(v, name);
    return `${name}: ${tensorTypeText(v.type)}${attrDict(argAttrList[i]!)}`;
  });
  emitOps(e, g);
  const outRefs = g.outputs.map((v) => e.ref(v));
  const outTypes = g.outputs.map((v) => tensorTypeText(v.type));
  const results = g.outputs.map((_, i) => {
    const sh = opts.resultShardings?.[i];
    return `${outTypes[i]}${attrDict(sh ? [`sdy.sharding = ${sh}`] : [])}`;
  });
  const sig =
    results.length === 0
      ? ""
      : results.length === 1 && !results[0]!.includes("{")
        ? ` -> ${results[0]}`
        : ` -> (${results.join(", ")})`;
  const ret = outRefs.length ? `return ${outRefs.join(", ")} : ${outTypes.join(", ")}` : "return";

  const sharded =
    (opts.argShardings ?? []).some((s) => s) ||
    (opts.resultShardings ?? []).some((s) => s) ||
    (constraints?.size ?? 0) > 0;
  const lines = [
    `module ${symbolName(opts.moduleName ?? "tessera")} attributes {mhlo.num_partitions = ${opts.numPartitions ?? 1} : i32, mhlo.num_replicas = 1 : i32} {`,
    ...(sharded && opts.mesh ? [`  ${meshLine(opts.mesh)}`] : []),
    `  func.func public @main(${args.join(", ")})${sig} {`,
    ...e.lines(),
    `    ${ret}`,
    `  }`,
    `}`,
  ];
  return `${lines.join("\n")}\n`;
}
