// Reads the optimized HLO module of an executable: per-device parameter/result types, aliasing, collectives, a text view.
import { readFileSync } from "node:fs";
import protobuf from "protobufjs";
import { dtypeFromXla, type RuntimeDType } from "./host_array.ts";

// xla::PrimitiveType names as HLO text prints them.
const XLA_TYPE_NAMES: Record<number, string> = {
  1: "pred",
  2: "s8",
  3: "s16",
  4: "s32",
  5: "s64",
  6: "u8",
  7: "u16",
  8: "u32",
  9: "u64",
  10: "f16",
  11: "f32",
  12: "f64",
  13: "tuple",
  14: "opaque",
  15: "c64",
  16: "bf16",
  17: "token",
  18: "c128",
};
const TUPLE = 13;

export interface HloShape {
  /** Our dtype name, or XLA's type name for a type the runtime does not move (e.g. "f64", "token"). */
  dtype: RuntimeDType | string;
  shape: number[];
  /** Element shapes, for tuples (dtype "tuple"). */
  tuple?: HloShape[];
}

export interface HloInstruction {
  name: string;
  opcode: string;
  shape: HloShape;
  id: number;
  operandIds: number[];
  calledComputationIds: number[];
  /** A custom-call's target ("" for other ops). */
  customCallTarget: string;
  /** XLA's op_name metadata: the name location of the StableHLO op it came from (`layer0/attn/dot_general`), or "". */
  opName: string;
}

export interface HloComputation {
  name: string;
  id: number;
  rootId: number;
  instructions: HloInstruction[];
}

export interface HloAlias {
  /** Index path into the result tuple ([k] for output k). */
  output: number[];
  parameter: number;
  kind: "may-alias" | "must-alias" | "undefined";
}

export interface HloModule {
  name: string;
  entryComputationName: string;
  entryComputationId: number;
  computations: HloComputation[];
  /** Entry parameters as each device sees them (after SPMD partitioning: the local shard). */
  parameters: HloShape[];
  result: HloShape | undefined;
  aliases: HloAlias[];
}

let types: { module: protobuf.Type; withConfig: protobuf.Type } | undefined;

function protoTypes() {
  if (!types) {
    const text = readFileSync(new URL("./hlo_module.proto", import.meta.url), "utf8");
    const root = protobuf.parse(text, { keepCase: true }).root.resolveAll(); // resolveAll: proto3 packing
    types = {
      module: root.lookupType("tessera.xla.HloModuleProto"),
      withConfig: root.lookupType("tessera.xla.HloModuleProtoWithConfig"),
    };
  }
  return types;
}

interface RawShape {
  element_type?: number;
  dimensions?: number[];
  tuple_shapes?: RawShape[];
}

function toShape(s: RawShape | undefined): HloShape {
  const t = s?.element_type ?? 0;
  const shape: HloShape = {
    dtype: dtypeFromXla(t) ?? XLA_TYPE_NAMES[t] ?? `type#${t}`,
    shape: (s?.dimensions ?? []).map(Number),
  };
  if (t === TUPLE) shape.tuple = (s?.tuple_shapes ?? []).map(toShape);
  return shape;
}

/** Decodes PJRT_Executable_OptimizedProgram's bytes ("hlo": HloModuleProto; "hlo_with_config": wrapped). */
export function decodeHloModule(bytes: Uint8Array, format = "hlo"): HloModule {
  const t = protoTypes();
  const obj = (
    format === "hlo_with_config"
      ? (
          t.withConfig.toObject(t.withConfig.decode(bytes), { longs: Number, defaults: true }) as {
            hlo_module?: unknown;
          }
        ).hlo_module
      : t.module.toObject(t.module.decode(bytes), { longs: Number, defaults: true })
  ) as {
    name: string;
    entry_computation_name: string;
    entry_computation_id: number;
    computations: {
      name: string;
      id: number;
      root_id: number;
      instructions: {
        name: string;
        opcode: string;
        shape?: RawShape;
        id: number;
        operand_ids: number[];
        called_computation_ids: number[];
        metadata?: { op_name?: string };
        custom_call_target?: string;
      }[];
    }[];
    host_program_shape?: { parameters?: RawShape[]; result?: RawShape };
    input_output_alias?: { entries?: { output_shape_index: number[]; parameter_number: number; kind: number }[] };
  };
  const kinds = ["undefined", "may-alias", "must-alias"] as const;
  return {
    name: obj.name,
    entryComputationName: obj.entry_computation_name,
    entryComputationId: obj.entry_computation_id,
    computations: obj.computations.map((c) => ({
      name: c.name,
      id: c.id,
      rootId: c.root_id,
      instructions: c.instructions.map((i) => ({
        name: i.name,
        opcode: i.opcode,
        shape: toShape(i.shape),
        id: i.id,
        operandIds: i.operand_ids,
        calledComputationIds: i.called_computation_ids,
        opName: i.metadata?.op_name ?? "",
        customCallTarget: i.custom_call_target ?? "",
      })),
    })),
    parameters: (obj.host_program_shape?.parameters ?? []).map(toShape),
    result: obj.host_program_shape?.result ? toShape(obj.host_program_shape.result) : undefined,
    aliases: (obj.input_output_alias?.entries ?? []).map((e) => ({
      output: e.output_shape_index,
      parameter: e.parameter_number,
      kind: kinds[e.kind] ?? "undefined",
    })),
  };
}

/** Collective opcodes as XLA names them; async pairs are counted once, at their "-start". */
export const COLLECTIVE_OPCODES = [
  "all-reduce",
  "all-gather",
  "reduce-scatter",
  "all-to-all",
  "ragged-all-to-all",
  "collective-permute",
  "collective-broadcast",
] as const;

/** How many of each collective the module holds (all computations, so fused or called ones count too). */
export function countCollectives(m: HloModule): Record<string, number> {
  const counts: Record<string, number> = {};
  for (const c of m.computations) {
    for (const i of c.instructions) {
      const base = i.opcode.endsWith("-start") ? i.opcode.slice(0, -"-start".length) : i.opcode;
      if ((COLLECTIVE_OPCODES as readonly string[]).includes(base)) counts[base] = (counts[base] ?? 0) + 1;
    }
  }
  return counts;
}

export function formatHloShape(s: HloShape): string {
  if (s.tuple) return `(${s.tuple.map(formatHloShape).join(", ")})`;
  const name = typeof s.dtype === "string" && s.dtype === "bool" ? "pred" : s.dtype;
  return `${name}[${s.shape.join(",")}]`;
}

/**
 * HLO-like text of the module: one line per instruction, `%name = type opcode(operands)`, ROOT and
 * called computations marked. A reading aid for humans and greps (opcodes are XLA's); it leaves
 * out attributes and is not meant to be parsed back by XLA.
 */
export function printHloModule(m: HloModule): string {
  const lines = [`HloModule ${m.name}`];
  const names = new Map<number, string>();
  const computations = new Map<number, string>();
  for (const c of m.computations) {
    computations.set(c.id, c.name);
    for (const i of c.instructions) names.set(i.id, i.name);
  }
  for (const c of m.computations) {
    lines.push("", `${c.id === m.entryComputationId ? "ENTRY " : ""}%${c.name} {`);
    for (const i of c.instructions) {
      const ops = i.operandIds.map((id) => `%${names.get(id) ?? id}`).join(", ");
      const calls = i.calledComputationIds.length
        ? `, calls=${i.calledComputationIds.map((id) => `%${computations.get(id) ?? id}`).join(", ")}`
        : "";
      lines.push(
        `  ${i.id === c.rootId ? "ROOT " : ""}%${i.name} = ${formatHloShape(i.shape)} ${i.opcode}(${ops})${calls}`,
      );
    }
    lines.push("}");
  }
  return `${lines.join("\n")}\n`;
}
