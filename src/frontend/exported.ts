// AOT export (jax.export): a jitted function lowered at given specs, saved as a self-describing file and run later without its source.
//
// The container is a StableHLO module file whose first line is a `//` comment holding a one-line JSON header:
//
//   // {"format":"tessera.exported","formatVersion":1,"tessera":"0.1.0","name":"jit_step","platform":{...},...}
//   module @jit_step attributes {...} {
//     func.func public @main(...)
//
// Why this form: MLIR reads `//` lines as comments, so the file is itself the program (`stablehlo-opt F`, `less F`),
// `head -1 F | cut -c4- | jq` shows the header, and `tail -n +2 F` is exactly the text the emitter printed (the
// header's sha256 covers it, so a truncated or edited file is refused). JSON never holds a raw newline, so the
// header stays one line. A single JSON file would bury the program in one escaped string; a zip needs a tool.
// The text is compiled through the shared executable cache: an exported program that a jit compiled before (same
// text, plugin and options) is not compiled again.
import { createHash } from "node:crypto";
import { readFile } from "node:fs/promises";
import type { Client, Executable } from "../backend/runtime/index.ts";
import { describe, TesseraError } from "../errors.ts";
import { writeAll, writeFileAtomic } from "../formats/atomic.ts";
import { fsError } from "../host/fs_errors.ts";
import { ShardingError, type Sharding } from "../ir/sharding.ts";
import { formatType, isDType, numel, type DType } from "../ir/types.ts";
import { TESSERA_VERSION } from "../version.ts";
import { array, defaultClient, DeviceArray } from "./array.ts";
import { currentTrace, Tensor } from "./core.ts";
import {
  compileProgramText,
  jit,
  jitInfo,
  runExecutable,
  staticKey,
  type Concrete,
  type Lowered,
  type RunLayout,
} from "./jit.ts";
import { emitProgram, type Program } from "./lowering.ts";
import { DeviceMesh } from "./mesh.ts";
import { flattenNested, typedArrayDType } from "./ops/creation.ts";
import { joinName, paramNames } from "./trace.ts";
import { flatten, isPlainObject, numLeaves, unflatten, type TreeDef } from "./tree.ts";

export const EXPORTED_FORMAT = "tessera.exported";
/** Bumped when a reader of the previous version could not run the file; newer files are refused by older readers. */
export const EXPORTED_FORMAT_VERSION = 1;

/** One tensor of the exported signature. */
export interface ExportedLeaf {
  /** Where the leaf sits in the argument list or result tree, as tree paths are written: `[0].w1`, `[1]`. */
  readonly path: string;
  /** The name the traced function gave it: `params.w1` (an input: parameter name and path), `loss`. */
  readonly name: string;
  readonly dtype: DType;
  readonly shape: readonly number[];
  /** On a mesh: per dimension, the mesh axes it is split over (`[]`: whole). */
  readonly sharding?: readonly (readonly string[])[];
}

export interface ExportedInput extends ExportedLeaf {
  /** The output whose buffer this input's memory becomes (tf.aliasing_output): the input is donated. */
  readonly donatedTo?: number;
  /** Donated with no output of its type: offered to XLA as a buffer donor (jax.buffer_donor). */
  readonly donor?: boolean;
}

/** What the file's first line holds. */
export interface ExportedHeader {
  readonly format: typeof EXPORTED_FORMAT;
  readonly formatVersion: number;
  /** The Tessera version that wrote it. */
  readonly tessera: string;
  /** The StableHLO module name (`jit_<function name>`). */
  readonly name: string;
  /** The PJRT platform and plugin it was lowered for; loading on another platform is refused. */
  readonly platform: {
    readonly name: string;
    readonly version: string;
    readonly plugin: string;
    readonly pjrtApi: string;
    readonly stablehlo?: string;
  };
  readonly inputs: {
    /** The positional arguments' names, as the function declared them. */
    readonly args: readonly string[];
    /** The argument list's structure: an array with one subtree per positional argument (dict keys sorted). */
    readonly tree: TreeDef;
    readonly leaves: readonly ExportedInput[];
  };
  readonly outputs: { readonly tree: TreeDef; readonly leaves: readonly ExportedLeaf[] };
  /** Positional arguments donated (jit's `donate`): their buffers are unusable after a call. */
  readonly donate: readonly number[];
  /** Static arguments (jit's `static`), baked into the program: position and value (as the jit cache keys it). */
  readonly statics: readonly { readonly index: number; readonly value: string }[];
  /** The device mesh of an SPMD program (`jit(fn, { mesh })`), absent for one device. */
  readonly mesh?: {
    readonly axes: readonly { readonly name: string; readonly size: number }[];
    readonly devices?: readonly number[];
  };
  /** The program text after the header line: its length in UTF-8 bytes and sha256. */
  readonly stablehlo: { readonly bytes: number; readonly sha256: string };
}

/** A file that is not an exported program Tessera can read, or a call that does not fit the exported signature. */
export class ExportedError extends TesseraError {
  constructor(message: string, code = "ERR_EXPORTED", cause?: unknown) {
    super(message, { code, ...(cause === undefined ? {} : { cause }) });
    this.name = "ExportedError";
  }
}

const sha256 = (s: string) => createHash("sha256").update(s).digest("hex");

/** Every leaf's path in a structure, in flatten order (the structure rebuilt with numbers as leaves). */
function leafPaths(def: TreeDef): string[] {
  return flatten<number>(
    unflatten(
      def,
      Array.from({ length: numLeaves(def) }, (_, i) => i),
    ),
  ).paths;
}

/** A `[0].w1` path as the user wrote the argument: `params.w1`. */
function argPath(path: string, args: readonly string[]): string {
  const m = /^\[(\d+)\]\.?(.*)$/.exec(path);
  if (!m) return path || "(arguments)";
  return joinName(args[Number(m[1])] ?? `arg${m[1]}`, m[2]!);
}

/**
 * An exported program: the StableHLO text of one jitted function at one signature, with everything needed to
 * call it (input and output trees with their types, donation, static values, mesh and shardings) and where it
 * came from (Tessera version, platform). `serialize()`/`save()` write it; `call()` (or loadExported) runs it.
 */
export class Exported {
  #exe: Promise<Executable> | undefined;
  #layout: RunLayout | undefined | null = null;

  /** @internal Use exportJitted, loadExported or parseExported. */
  constructor(
    readonly header: ExportedHeader,
    /** The module as the emitter printed it. */
    readonly stablehlo: string,
    /** Where it was read from, for messages (the module name when it was made in this process). */
    readonly source: string = header.name,
  ) {}

  get name(): string {
    return this.header.name;
  }
  get inputs(): readonly ExportedInput[] {
    return this.header.inputs.leaves;
  }
  get outputs(): readonly ExportedLeaf[] {
    return this.header.outputs.leaves;
  }

  /** The file's text: the header line, then the program. */
  serialize(): string {
    return `// ${JSON.stringify(this.header)}\n${this.stablehlo}`;
  }

  /** Writes the file atomically: an existing file is replaced only by a complete one. */
  async save(file: string): Promise<void> {
    const bytes = Buffer.from(this.serialize(), "utf8");
    try {
      await writeFileAtomic(file, (fh) => writeAll(fh, bytes));
    } catch (e) {
      throw fsError(e, file, "write the exported program");
    }
  }

  #fail(detail: string): never {
    throw new ExportedError(`${this.source}: ${detail}`, "ERR_EXPORTED_ARGUMENT");
  }

  /** The mesh and per-leaf layouts of an SPMD program, built once. */
  #runLayout(): RunLayout | undefined {
    if (this.#layout !== null) return this.#layout;
    const m = this.header.mesh;
    if (!m) {
      this.#layout = undefined;
      return undefined;
    }
    const mesh = new DeviceMesh(m.axes, m.devices ? { devices: m.devices } : {}, null);
    const sharding = (l: ExportedLeaf): Sharding => ({ dims: l.sharding ?? l.shape.map(() => []) });
    this.#layout = {
      mesh,
      argShardings: this.inputs.map(sharding),
      resultShardings: this.outputs.map(sharding),
    };
    return this.#layout;
  }

  /** Refuses a client of another platform than the one the program was lowered for. */
  checkPlatform(client: Client): void {
    const p = this.header.platform;
    if (client.platformName !== p.name)
      throw new ExportedError(
        `${this.source} was lowered for platform '${p.name}' (plugin ${p.plugin}); this process runs '${client.platformName}' ` +
          `(plugin ${client.plugin.name ?? client.plugin.path}): export it again from the model's source for ${client.platformName}`,
        "ERR_EXPORTED_PLATFORM",
      );
  }

  /** The executable, compiled on first use through the shared cache (memory, then ~/.cache/tessera/executables). */
  compile(): Promise<Executable> {
    if (!this.#exe) {
      const exe = (async () => {
        const client = await defaultClient();
        this.checkPlatform(client);
        const layout = this.#runLayout();
        try {
          return await compileProgramText(this.stablehlo, layout);
        } catch (e) {
          // A mesh that does not fit the devices says so itself; anything else is the plugin refusing the text.
          if (e instanceof ShardingError) throw e;
          const p = this.header.platform;
          const ours = client.pluginAttributes.stablehloCurrentVersion;
          throw new ExportedError(
            `${this.source}: the ${client.platformName} plugin ${client.plugin.name ?? client.plugin.path}` +
              `${ours ? ` (StableHLO ${ours})` : ""} could not compile the program Tessera ${this.header.tessera} ` +
              `lowered with plugin ${p.plugin}${p.stablehlo ? ` (StableHLO ${p.stablehlo})` : ""}: ` +
              `${e instanceof Error ? e.message : String(e)}`,
            "ERR_EXPORTED_COMPILE",
            e,
          );
        }
      })();
      exe.catch(() => {
        if (this.#exe === exe) this.#exe = undefined;
      });
      this.#exe = exe;
    }
    return this.#exe;
  }

  /**
   * Runs the program on an argument list of the exported structure: device arrays, or host data (typed arrays,
   * nested number arrays, numbers, booleans) uploaded as the recorded dtype. Every leaf's dtype and shape is
   * checked against the recorded one; resolves to the output tree of device arrays.
   */
  async call(...args: unknown[]): Promise<unknown> {
    if (currentTrace())
      this.#fail("an exported program runs on device arrays; it cannot be called inside a traced function");
    const arrays = this.#arguments(args);
    const exe = await this.compile();
    const outTypes = this.outputs.map((l) => ({ dtype: l.dtype, shape: l.shape }));
    const names = this.inputs.map((l) => l.name);
    return runExecutable(exe, arrays, names, outTypes, this.header.outputs.tree, this.#runLayout());
  }

  /** The call's leaves matched against the recorded structure and types, as device arrays. */
  #arguments(args: readonly unknown[]): DeviceArray[] {
    const { tree, args: argNames } = this.header.inputs;
    const expected = tree.kind === "array" ? tree.children.length : 0;
    if (args.length !== expected)
      this.#fail(
        `expected ${expected} argument${expected === 1 ? "" : "s"} (${argNames.join(", ")}), got ${args.length}`,
      );
    const statics = new Map(this.header.statics.map((s) => [s.index, s.value]));
    const leaves: unknown[] = [];
    const walk = (x: unknown, d: TreeDef, path: string): void => {
      const at = () => argPath(path, argNames);
      switch (d.kind) {
        case "leaf":
          leaves.push(x);
          return;
        case "none":
          if (x !== null && x !== undefined)
            this.#fail(`argument ${at()}: expected ${String(d.value)} (an empty subtree), got ${describe(x)}`);
          return;
        case "array":
          if (!Array.isArray(x) || x.length !== d.children.length)
            this.#fail(`argument ${at()}: expected an array of ${d.children.length}, got ${describe(x)}`);
          d.children.forEach((c, i) => {
            walk(x[i], c, `${path}[${i}]`);
          });
          return;
        case "object": {
          if (!isPlainObject(x))
            this.#fail(`argument ${at()}: expected an object with keys ${d.keys.join(", ")}, got ${describe(x)}`);
          // A key whose subtree is empty (undefined when exported) may be left out, as it may be given as null.
          const missing = d.keys.filter((k, i) => !(k in x) && d.children[i]!.kind !== "none");
          if (missing.length)
            this.#fail(`argument ${at()}: missing key${missing.length > 1 ? "s" : ""} ${missing.join(", ")}`);
          const extra = Object.keys(x).filter((k) => !d.keys.includes(k) && x[k] !== undefined && x[k] !== null);
          if (extra.length)
            this.#fail(
              `argument ${at()}: key${extra.length > 1 ? "s" : ""} ${extra.join(", ")} not in the exported signature (keys: ${d.keys.join(", ")})`,
            );
          d.keys.forEach((k, i) => {
            walk(x[k], d.children[i]!, /^[A-Za-z_$][\w$]*$/.test(k) ? `${path}.${k}` : `${path}[${JSON.stringify(k)}]`);
          });
          return;
        }
      }
    };
    args.forEach((a, i) => {
      const baked = statics.get(i);
      if (baked !== undefined) {
        // A static argument is part of the program: leave it out (null/undefined) or pass the value it was exported with.
        if (a === null || a === undefined) return;
        let key: string;
        try {
          key = staticKey(a, `${i} (${argNames[i]})`);
        } catch (e) {
          this.#fail(e instanceof Error ? e.message.replace(/^jit: /, "") : String(e));
        }
        if (key !== baked)
          this.#fail(
            `argument ${argNames[i]} is static, exported with the value ${baked}; got ${key} (export again for another value)`,
          );
        return;
      }
      walk(a, (tree as Extract<TreeDef, { kind: "array" }>).children[i]!, `[${i}]`);
    });
    return leaves.map((leaf, k) => this.#leafArray(leaf, this.inputs[k]!));
  }

  /** One argument leaf as a device array of the recorded type, or an error naming it with expected and got. */
  #leafArray(leaf: unknown, spec: ExportedInput): DeviceArray {
    const want = formatType(spec);
    const bad = (got: string): never => this.#fail(`argument ${spec.name}: expected ${want}, got ${got}`);
    if (leaf instanceof DeviceArray) {
      if (
        leaf.dtype !== spec.dtype ||
        leaf.shape.length !== spec.shape.length ||
        leaf.shape.some((n, i) => n !== spec.shape[i])
      )
        bad(formatType(leaf));
      return leaf;
    }
    if (leaf instanceof Tensor) bad(`a traced ${formatType(leaf)} (no trace is active: did a tensor leak out of one?)`);
    if (typeof leaf === "number" || typeof leaf === "boolean") {
      if (spec.shape.length !== 0) bad(`${typeof leaf} ${String(leaf)} (a scalar)`);
      if ((spec.dtype === "bool") !== (typeof leaf === "boolean")) bad(`${typeof leaf} ${String(leaf)}`);
      if ((spec.dtype === "s32" || spec.dtype === "u32") && !Number.isInteger(leaf))
        bad(`number ${leaf} (not an integer)`);
      return array(typeof leaf === "boolean" ? [leaf ? 1 : 0] : [leaf], { dtype: spec.dtype, shape: [] });
    }
    if (ArrayBuffer.isView(leaf) && !(leaf instanceof DataView)) {
      const n = (leaf as unknown as ArrayLike<number>).length;
      const kind = typedArrayDType(leaf) ?? (leaf instanceof Uint8Array ? "bool" : undefined);
      const half = spec.dtype === "bf16" || spec.dtype === "f16";
      // 16-bit floats come as f32 values (rounded) or as raw bits in a Uint16Array, as array() takes them.
      const fits =
        kind === spec.dtype ||
        (half && (kind === "f32" || leaf instanceof Uint16Array)) ||
        (spec.dtype === "bool" && leaf instanceof Uint8Array);
      if (!fits) bad(`${describe(leaf)}${kind ? ` (${kind})` : ""}`);
      if (n !== numel(spec.shape)) bad(`${describe(leaf)} of ${n} values (${numel(spec.shape)} needed)`);
      return array(leaf as Float32Array, { dtype: spec.dtype, shape: spec.shape });
    }
    if (Array.isArray(leaf)) {
      let shape: number[];
      try {
        shape = flattenNested("loadExported", leaf).shape;
      } catch (e) {
        return bad(`an array that is not a nested array of numbers (${e instanceof Error ? e.message : String(e)})`);
      }
      if (shape.length !== spec.shape.length || shape.some((n, i) => n !== spec.shape[i]))
        bad(`a nested array of shape [${shape.join(",")}]`);
      return array(leaf, { dtype: spec.dtype });
    }
    return bad(describe(leaf));
  }
}

/** The platform a client runs, as the header records it. */
function platformOf(client: Client): ExportedHeader["platform"] {
  const stablehlo = client.pluginAttributes.stablehloCurrentVersion;
  return {
    name: client.platformName,
    version: client.platformVersion,
    plugin: client.plugin.name ?? client.plugin.path.replace(/^.*\//, ""),
    pjrtApi: client.plugin.apiVersion,
    ...(stablehlo ? { stablehlo } : {}),
  };
}

/** What an export records of its function beyond the lowered program. */
export interface ExportSource {
  readonly name: string;
  readonly argNames: readonly string[];
  /** Positional arguments donated. */
  readonly donate: readonly number[];
  /** Static positions and the values they were exported with. */
  readonly statics: readonly { readonly index: number; readonly value: unknown }[];
}

/** @internal An Exported from a lowered program and its text: what exportJitted and `tessera compile --emit exported` share. */
export function exportedFromProgram(p: Program, stablehlo: string, src: ExportSource, client: Client): Exported {
  // The printed values are extra outputs that only this process knows how to format (as jax.export refuses host
  // callbacks): an exported program would drop them silently.
  if (p.prints?.length)
    throw new ExportedError(
      `export: ${src.name} calls debug.print, which an exported program cannot carry; remove the prints before exporting`,
      "ERR_EXPORTED_USAGE",
    );
  const g = p.graph;
  const s = p.sharding;
  const inPaths = leafPaths(p.inTree);
  const outPaths = leafPaths(p.outTree);
  const inputs = g.inputs.map((v, i): ExportedInput => {
    const to = p.donate[i];
    return {
      path: inPaths[i] ?? "",
      name: g.inputNames?.[i] || argPath(inPaths[i] ?? "", src.argNames),
      dtype: v.type.dtype,
      shape: [...v.type.shape],
      ...(s ? { sharding: s.argShardings[i]!.dims } : {}),
      ...(to !== undefined ? { donatedTo: to } : {}),
      ...(p.donors[i] ? { donor: true } : {}),
    };
  });
  const outputs = g.outputs.map(
    (v, k): ExportedLeaf => ({
      path: outPaths[k] ?? "",
      name: g.outputNames?.[k] || `out${outPaths[k] ?? ""}`,
      dtype: v.type.dtype,
      shape: [...v.type.shape],
      ...(s ? { sharding: s.resultShardings[k]!.dims } : {}),
    }),
  );
  const header: ExportedHeader = {
    format: EXPORTED_FORMAT,
    formatVersion: EXPORTED_FORMAT_VERSION,
    tessera: TESSERA_VERSION,
    name: src.name,
    platform: platformOf(client),
    inputs: { args: [...src.argNames], tree: p.inTree, leaves: inputs },
    outputs: { tree: p.outTree, leaves: outputs },
    donate: [...src.donate],
    statics: src.statics.map((st) => ({ index: st.index, value: staticKey(st.value, String(st.index)) })),
    ...(s
      ? {
          mesh: {
            axes: s.mesh.axes.map((a) => ({ name: a.name, size: a.size })),
            ...(s.mesh.devices ? { devices: [...s.mesh.devices] } : {}),
          },
        }
      : {}),
    stablehlo: { bytes: Buffer.byteLength(stablehlo, "utf8"), sha256: sha256(stablehlo) },
  };
  return new Exported(header, stablehlo);
}

/**
 * Exports `jitted` (a `jit(fn, opts)` function; a plain function is jitted with no options) lowered at `specs`,
 * as jax.export: the same specs `jitted.lower(...)` takes (spec trees, device arrays, numbers and booleans as a
 * call passes them, static values at static positions). The result's text is exactly what jit compiles for those
 * types; `await exported.save(file)` writes it, `loadExported(file)` runs it without the model's source.
 * Exported as `exportJitted` and as `tx.export`.
 */
export async function exportJitted(jitted: (...args: never[]) => unknown, ...specs: unknown[]): Promise<Exported> {
  if (typeof jitted !== "function")
    throw new ExportedError(`export: expected a jitted function, got ${describe(jitted)}`, "ERR_EXPORTED_USAGE");
  const f = jitInfo(jitted) ? jitted : jit(jitted);
  const info = jitInfo(f)!;
  const lowered = (f as unknown as { lower(...a: unknown[]): Lowered }).lower(...specs);
  const client = await defaultClient();
  return exportedFromProgram(
    lowered,
    // XLA's own dots: the file must compile on every plugin, also where no OpenBLAS call is registered.
    emitProgram(lowered, info.name, { cpuGemm: false }),
    {
      name: info.name,
      argNames: paramNames(info.fn, specs.length),
      donate: info.donate,
      statics: info.statics.map((index) => ({ index, value: specs[index] })),
    },
    client,
  );
}

/** Reads an exported program from its text, checking the header and the program's checksum. */
export function parseExported(text: string, source = "<exported>"): Exported {
  const corrupt = (why: string): never => {
    throw new ExportedError(`${source}: not a readable Tessera exported program: ${why}`, "ERR_EXPORTED_FORMAT");
  };
  const nl = text.indexOf("\n");
  const first = nl < 0 ? text : text.slice(0, nl);
  if (!first.startsWith("// {")) corrupt('line 1 is not the "// {...}" header that tessera export writes');
  let h: unknown;
  try {
    h = JSON.parse(first.slice(3));
  } catch (e) {
    return corrupt(`line 1: the header is not valid JSON (${e instanceof Error ? e.message : String(e)})`);
  }
  if (!isPlainObject(h)) return corrupt("line 1: the header is not a JSON object");
  if (h.format !== EXPORTED_FORMAT)
    corrupt(`line 1: "format" is ${JSON.stringify(h.format)}, not "${EXPORTED_FORMAT}"`);
  const v = h.formatVersion;
  if (typeof v !== "number" || !Number.isInteger(v) || v < 1)
    corrupt(`line 1: "formatVersion" is ${JSON.stringify(v)}`);
  if ((v as number) > EXPORTED_FORMAT_VERSION)
    throw new ExportedError(
      `${source} was written by Tessera ${String(h.tessera)} in exported format ${v}; this Tessera (${TESSERA_VERSION}) ` +
        `reads format ${EXPORTED_FORMAT_VERSION} and older: upgrade Tessera to load it`,
      "ERR_EXPORTED_VERSION",
    );
  const header = checkHeader(h, corrupt);
  const program = nl < 0 ? "" : text.slice(nl + 1);
  const bytes = Buffer.byteLength(program, "utf8");
  if (bytes !== header.stablehlo.bytes || sha256(program) !== header.stablehlo.sha256)
    corrupt(
      `the program after line 1 (${bytes} bytes) does not match the header's length and sha256 (${header.stablehlo.bytes} bytes): the file was truncated or edited`,
    );
  return new Exported(header, program, source);
}

/** The header's fields, each checked for its kind, so a damaged file fails here naming the field, not at a call. */
function checkHeader(h: Record<string, unknown>, corrupt: (why: string) => never): ExportedHeader {
  const field = (ok: boolean, name: string, x: unknown) => {
    if (!ok) corrupt(`line 1: "${name}" is ${JSON.stringify(x) ?? "missing"}`);
  };
  const isStr = (x: unknown): x is string => typeof x === "string";
  const isInt = (x: unknown): x is number => Number.isSafeInteger(x) && (x as number) >= 0;
  const isObj = (x: unknown): x is Record<string, unknown> => isPlainObject(x);
  field(isStr(h.tessera), "tessera", h.tessera);
  field(isStr(h.name), "name", h.name);
  const p = h.platform;
  field(isObj(p) && isStr(p.name) && isStr(p.version) && isStr(p.plugin) && isStr(p.pjrtApi), "platform", p);
  const checkTree = (d: unknown, name: string): TreeDef => {
    const ok = (x: unknown): boolean => {
      if (!isObj(x)) return false;
      switch (x.kind) {
        case "leaf":
          return true;
        case "none":
          return x.value === undefined || x.value === null;
        case "array":
          return Array.isArray(x.children) && x.children.every(ok);
        case "object":
          return (
            Array.isArray(x.keys) &&
            x.keys.every(isStr) &&
            Array.isArray(x.children) &&
            x.children.length === x.keys.length &&
            x.children.every(ok)
          );
        default:
          return false;
      }
    };
    field(ok(d), name, d);
    return d as TreeDef;
  };
  /** `axes`: the mesh's axis names, when there is a mesh; every leaf then has a sharding over them, else none. */
  const checkLeaves = (ls: unknown, tree: TreeDef, name: string, axes: readonly string[] | undefined): void => {
    field(
      Array.isArray(ls) && ls.length === numLeaves(tree),
      `${name}.leaves`,
      Array.isArray(ls) ? `${ls.length} leaves for a tree of ${numLeaves(tree)}` : ls,
    );
    (ls as unknown[]).forEach((l, i) => {
      const where = `${name}.leaves[${i}]`;
      field(isObj(l) && isStr(l.path) && isStr(l.name), where, l);
      const x = l as Record<string, unknown>;
      field(isStr(x.dtype) && isDType(x.dtype), `${where}.dtype`, x.dtype);
      field(Array.isArray(x.shape) && x.shape.every(isInt), `${where}.shape`, x.shape);
      field(
        axes
          ? Array.isArray(x.sharding) &&
              x.sharding.length === (x.shape as unknown[]).length &&
              x.sharding.every((d) => Array.isArray(d) && d.every((a) => isStr(a) && axes.includes(a)))
          : x.sharding === undefined,
        `${where}.sharding`,
        x.sharding,
      );
      if (x.donatedTo !== undefined) field(isInt(x.donatedTo), `${where}.donatedTo`, x.donatedTo);
    });
  };
  const ins = h.inputs;
  field(isObj(ins) && Array.isArray(ins.args) && ins.args.every(isStr), "inputs", ins);
  const inputs = ins as Record<string, unknown>;
  const inTree = checkTree(inputs.tree, "inputs.tree");
  field(
    inTree.kind === "array" && inTree.children.length === (inputs.args as unknown[]).length,
    "inputs.tree",
    inTree.kind,
  );
  const outs = h.outputs;
  field(isObj(outs), "outputs", outs);
  const outTree = checkTree((outs as Record<string, unknown>).tree, "outputs.tree");
  const mesh = h.mesh;
  if (mesh !== undefined)
    field(
      isObj(mesh) &&
        Array.isArray(mesh.axes) &&
        mesh.axes.every((a) => isObj(a) && isStr(a.name) && isInt(a.size)) &&
        (mesh.devices === undefined || (Array.isArray(mesh.devices) && mesh.devices.every(isInt))),
      "mesh",
      mesh,
    );
  const axes = mesh === undefined ? undefined : (mesh as { axes: { name: string }[] }).axes.map((a) => a.name);
  checkLeaves(inputs.leaves, inTree, "inputs", axes);
  checkLeaves((outs as Record<string, unknown>).leaves, outTree, "outputs", axes);
  field(Array.isArray(h.donate) && h.donate.every(isInt), "donate", h.donate);
  field(
    Array.isArray(h.statics) && h.statics.every((s) => isObj(s) && isInt(s.index) && isStr(s.value)),
    "statics",
    h.statics,
  );
  const t = h.stablehlo;
  field(isObj(t) && isInt(t.bytes) && isStr(t.sha256), "stablehlo", t);
  return h as unknown as ExportedHeader;
}

/**
 * What a loaded program takes where the traced function took a Tensor: a device array, or host data uploaded as
 * the recorded dtype (a typed array or nested number arrays of the recorded shape, a number or boolean scalar).
 */
export type ExportedArg<T> = T extends Tensor
  ? DeviceArray | number | boolean | ArrayBufferView | readonly unknown[]
  : T extends object
    ? { [K in keyof T]: ExportedArg<T[K]> }
    : T;

/**
 * A loaded program as a function: call it with the exported argument structure; `exported` describes it. With the
 * traced function's type (`loadExported<typeof trainStep>(file)`) the call is typed as a jit call of it would be;
 * the file is not checked against that type (the leaves are, against the header, at each call).
 */
export interface LoadedExported<F extends (...args: never[]) => unknown = (...args: unknown[]) => unknown> {
  (...args: ExportedArg<Parameters<F>>): Promise<Concrete<ReturnType<F>>>;
  readonly exported: Exported;
}

/**
 * Loads a file written by `exportJitted(...).save(file)` or `tessera compile --emit exported` and returns it as
 * a function (jax.export's deserialize + call): arguments as the exported structure (device arrays or host data),
 * each leaf checked against its recorded dtype and shape; the program is compiled through the executable cache on
 * the first call. A file of a newer format, another platform, or damaged is refused with the reason.
 */
export async function loadExported<F extends (...args: never[]) => unknown = (...args: unknown[]) => unknown>(
  file: string,
): Promise<LoadedExported<F>> {
  let text: string;
  try {
    text = await readFile(file, "utf8");
  } catch (e) {
    throw fsError(e, file, "read the exported program");
  }
  const exported = parseExported(text, file);
  exported.checkPlatform(await defaultClient());
  const call = (...args: unknown[]) => exported.call(...args);
  Object.defineProperty(call, "exported", { value: exported });
  return call as unknown as LoadedExported<F>;
}
