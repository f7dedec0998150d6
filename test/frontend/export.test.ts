// AOT export: tx.export writes a StableHLO file with its signature; loadExported runs it without the model's source, as jit would.
import { execFile } from "node:child_process";
import { createHash } from "node:crypto";
import { mkdtempSync, readFileSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { beforeAll, describe, expect, it } from "vitest";
import { getClient, onCompile, type CompileEvent } from "../../src/backend/runtime/index.ts";
import { paramSpecs, SIZES, trainStepFn, type Params } from "../../examples/mlp.ts";
import { TESSERA_VERSION } from "../../src/version.ts";
import { llamaStep, megatronMlp } from "../sharding/fixtures/sharded.ts";
import { tx, type DeviceArray } from "./api.ts";

type T = tx.Tensor;
const ROOT = fileURLToPath(new URL("../../", import.meta.url));
const dir = mkdtempSync(path.join(tmpdir(), "tessera-export-"));
const { batch, input, hidden, output } = SIZES;
const xSpec = tx.spec("f32", [batch, input]);
const ySpec = tx.spec("f32", [batch, output]);

/** Deterministic host data: the same values for the jitted and the loaded run. */
function values(n: number, seed: number): Float32Array {
  return Float32Array.from({ length: n }, (_, i) => Math.sin(seed * 7.1 + i * 0.37) * 0.5);
}
const hostParams = {
  w1: values(input * hidden, 1),
  b1: values(hidden, 2),
  w2: values(hidden * output, 3),
  b2: values(output, 4),
};
const uploadParams = (): { [K in keyof Params]: DeviceArray } => ({
  w1: tx.array(hostParams.w1, { shape: [input, hidden] }),
  b1: tx.array(hostParams.b1),
  w2: tx.array(hostParams.w2, { shape: [hidden, output] }),
  b2: tx.array(hostParams.b2),
});
const hostX = values(batch * input, 5);
const hostY = values(batch * output, 6);

async function bits(a: DeviceArray): Promise<number[]> {
  return Array.from(new Uint32Array((await a.toArray()).buffer));
}
async function treeBits(t: unknown): Promise<Record<string, number[]>> {
  const { leaves, paths } = tx.treeFlatten(t as tx.Tree<DeviceArray>);
  const out: Record<string, number[]> = {};
  for (let i = 0; i < leaves.length; i++) out[paths[i]!] = await bits(leaves[i]!);
  return out;
}

/** Runs `steps` SGD steps, feeding the new parameters back; returns every step's outputs as bit patterns. */
async function train(step: (...a: unknown[]) => Promise<unknown>, steps: number): Promise<Record<string, number[]>[]> {
  let params: unknown = uploadParams();
  const x = tx.array(hostX, { shape: [batch, input] });
  const y = tx.array(hostY, { shape: [batch, output] });
  const seen: Record<string, number[]>[] = [];
  for (let s = 0; s < steps; s++) {
    const [next, loss] = (await step(params, x, y, 0.1)) as [Params, DeviceArray];
    seen.push(await treeBits({ next, loss }));
    params = next;
  }
  return seen;
}

const step = tx.jit(trainStepFn, { donate: [0] });
let exported: tx.Exported;
const stepFile = path.join(dir, "step.mlir");

beforeAll(async () => {
  exported = await tx.export(step, paramSpecs, xSpec, ySpec, 0.1);
  await exported.save(stepFile);
});

describe("tx.export", () => {
  it("records exactly the jitted StableHLO, the trees with their types, donation, platform and version", async () => {
    const lowered = step.lower(paramSpecs, xSpec, ySpec, 0.1);
    expect(exported.stablehlo).toBe(lowered.stablehlo);
    const text = readFileSync(stepFile, "utf8");
    const [first, ...rest] = text.split("\n");
    // The file is the module with the header as an MLIR comment: the program is the text after line 1.
    expect(rest.join("\n")).toBe(lowered.stablehlo);
    const h = JSON.parse(first!.slice(3)) as tx.ExportedHeader;
    expect(h).toMatchObject({
      format: "tessera.exported",
      formatVersion: tx.EXPORTED_FORMAT_VERSION,
      tessera: TESSERA_VERSION,
      name: "jit_trainStepFn",
      platform: { name: "cpu" },
      donate: [0],
      statics: [],
    });
    expect(h.mesh).toBeUndefined();
    expect(h.inputs.args).toEqual(["params", "x", "y", "lr"]);
    expect(h.inputs.leaves.map((l) => [l.name, l.path, `${l.dtype}[${l.shape}]`, l.donatedTo])).toEqual([
      ["params.b1", "[0].b1", "f32[32]", 0],
      ["params.b2", "[0].b2", "f32[1]", 1],
      ["params.w1", "[0].w1", "f32[4,32]", 2],
      ["params.w2", "[0].w2", "f32[32,1]", 3],
      ["x", "[1]", "f32[64,4]", undefined],
      ["y", "[2]", "f32[64,1]", undefined],
      ["lr", "[3]", "f32[]", undefined],
    ]);
    expect(h.outputs.leaves.map((l) => [l.path, `${l.dtype}[${l.shape}]`])).toEqual([
      ["[0].b1", "f32[32]"],
      ["[0].b2", "f32[1]"],
      ["[0].w1", "f32[4,32]"],
      ["[0].w2", "f32[32,1]"],
      ["[1]", "f32[]"],
    ]);
    expect(h.outputs.tree).toEqual({
      kind: "array",
      children: [
        { kind: "object", keys: ["b1", "b2", "w1", "w2"], children: Array(4).fill({ kind: "leaf" }) },
        { kind: "leaf" },
      ],
    });
  });

  it("round-trips an MLP training step: the loaded program's losses and parameters equal jit's bit for bit", async () => {
    const events: CompileEvent[] = [];
    const jitted = await train(step as never, 3);
    const stop = onCompile((e) => events.push(e));
    const loaded = await tx.loadExported(stepFile);
    const fromFile = await train(loaded, 3);
    stop();
    expect(fromFile).toEqual(jitted);
    // Three steps of SGD on the same batch lower the loss.
    const losses = jitted.map((s) => new Float32Array(new Uint32Array(s.loss!).buffer)[0]!);
    expect(losses[2]).toBeLessThan(losses[0]!);
    // Compiled through the shared executable cache: the program jit compiled is reused, not compiled again.
    expect(events.map((e) => [e.name, e.source])).toEqual([["jit_trainStepFn", "memory"]]);
    expect(loaded.exported.outputs).toHaveLength(5);
  });

  it("donates the donated argument: its buffers hold the outputs afterwards, the others stay usable", async () => {
    // Typed as a jit call of trainStepFn would be (with host data allowed where tensors go).
    const loaded = await tx.loadExported<typeof trainStepFn>(stepFile);
    const params = uploadParams();
    const x = tx.array(hostX, { shape: [batch, input] });
    const [next, loss] = await loaded(params, x, hostY, 0.1);
    expect([next.w1.shape, loss.shape]).toEqual([[input, hidden], []]);
    expect([params.w1.donated, params.b1.donated, params.w2.donated, params.b2.donated]).toEqual([
      true,
      true,
      true,
      true,
    ]);
    expect(x.donated).toBe(false);
    await expect(loaded(params, x, hostY, 0.1)).rejects.toThrow(/was donated to a jit call/);
    // @ts-expect-error: the typed call needs all four arguments, as the file does
    await expect(loaded(next, x, hostY)).rejects.toThrow("expected 4 arguments (params, x, y, lr), got 3");
  });

  it("takes host data as the recorded dtype: typed arrays, nested arrays and numbers", async () => {
    const f = tx.jit((a: T, i: T, s: T) => ({ y: a.mul(s).add(i.astype("f32")), n: i.sum() }));
    const e = await tx.export(f, tx.spec("f32", [2, 2]), tx.spec("s32", [2, 2]), tx.spec("f32", []));
    const r = (await e.call(
      new Float32Array([1, 2, 3, 4]),
      [
        [1, 2],
        [3, 4],
      ],
      2,
    )) as { y: DeviceArray; n: DeviceArray };
    expect(Array.from(await r.y.toArray())).toEqual([3, 6, 9, 12]);
    expect(r.n.dtype).toBe("s32");
    expect(await r.n.item()).toBe(10);
  });

  it("bakes static arguments in: the call may leave them out or repeat them, another value is refused", async () => {
    const f = tx.jit((x: T, n: number) => x.mul(n), { static: [1] });
    const e = tx.parseExported((await tx.export(f, tx.spec("f32", [3]), 3)).serialize(), "scaled.mlir");
    expect(e.header.statics).toEqual([{ index: 1, value: "3" }]);
    const x = tx.array([1, 2, 3]);
    expect(Array.from(await ((await e.call(x, 3)) as DeviceArray).toArray())).toEqual([3, 6, 9]);
    expect(Array.from(await ((await e.call(x, null)) as DeviceArray).toArray())).toEqual([3, 6, 9]);
    await expect(e.call(x, 4)).rejects.toThrow(
      "scaled.mlir: argument n is static, exported with the value 3; got 4 (export again for another value)",
    );
  });
});

describe("tx.export refuses what a file cannot carry", () => {
  it("a function that calls debug.print (its lines would be dropped silently)", async () => {
    const f = tx.jit((x: T) => {
      tx.debug.print("x {}", x);
      return x.mul(2);
    });
    await expect(tx.export(f, tx.spec("f32", [3]))).rejects.toThrow(
      /calls debug\.print, which an exported program cannot carry/,
    );
  });
});

describe("tx.export of a real training step", () => {
  it("the tiny Llama LoRA step (a scan over layers, AdamW, a state tree) runs from its file as jit runs it", async () => {
    const f = tx.jit(llamaStep.fn, { donate: llamaStep.donate ?? [] });
    const e = tx.parseExported((await tx.export(f, ...llamaStep.args)).serialize(), "llama_step.mlir");
    expect(e.header.donate).toEqual([0]);
    // Every leaf of the state (adapter, moments, step) is donated into its namesake in the new state.
    const state = e.inputs.filter((l) => l.path.startsWith("[0]"));
    expect(state.length).toBeGreaterThan(10);
    for (const l of state) expect(e.outputs[l.donatedTo!]?.path).toBe(l.path);
    // Inputs from the header alone: small floats, token ids below the vocabulary, a fixed key.
    const hostLeaves = e.inputs.map((l, i) => {
      const n = l.shape.reduce((a, b) => a * b, 1);
      if (l.dtype === "s32")
        return tx.array(
          Int32Array.from({ length: n }, (_, k) => (k * 7 + i) % 100),
          { shape: l.shape },
        );
      if (l.dtype === "u32")
        return tx.array(
          Uint32Array.from({ length: n }, (_, k) => k + 42),
          { shape: l.shape },
        );
      return tx.array(
        values(n, i).map((v) => v * 0.2),
        { shape: l.shape, dtype: l.dtype },
      );
    });
    const copy = async () =>
      Promise.all(hostLeaves.map(async (a) => tx.array(await a.toArray(), { shape: a.shape, dtype: a.dtype })));
    const args = async () => tx.treeUnflatten(e.header.inputs.tree, await copy()) as unknown[];
    const want = await f(...((await args()) as Parameters<typeof f>));
    const got = await e.call(...(await args()));
    expect(await treeBits(got)).toEqual(await treeBits(want));
    const loss = await ((got as unknown[])[1] as DeviceArray).item();
    expect(Number.isFinite(loss)).toBe(true);
  });
});

describe("tx.export over a device mesh", () => {
  let eight = false;
  beforeAll(async () => {
    eight = (await getClient()).devices.length === 8;
  });

  it("records the mesh and every leaf's sharding; the loaded program returns sharded arrays equal to jit's", async (ctx) => {
    if (!eight) return ctx.skip();
    const m = tx.mesh({ data: 2, model: 4 });
    const f = tx.jit((w: T, x: T) => ({ y: x.matmul(w).tanh(), total: x.sum() }), {
      mesh: m,
      in: [tx.P(null, "model"), tx.P("data", null)],
      out: { y: tx.P("data", "model") },
    });
    const w = values(4 * 8, 7);
    const x = values(8 * 4, 8);
    const e = await tx.export(f, tx.spec("f32", [4, 8]), tx.spec("f32", [8, 4]));
    const file = path.join(dir, "sharded.mlir");
    await e.save(file);
    expect(e.stablehlo).toContain("sdy.mesh");
    expect(e.header.mesh).toEqual({
      axes: [
        { name: "data", size: 2 },
        { name: "model", size: 4 },
      ],
    });
    expect(e.inputs.map((l) => [l.name, l.sharding])).toEqual([
      ["w", [[], ["model"]]],
      ["x", [["data"], []]],
    ]);
    expect(e.outputs.find((l) => l.path === "y")?.sharding).toEqual([["data"], ["model"]]);
    const want = (await f(tx.array(w, { shape: [4, 8] }), tx.array(x, { shape: [8, 4] }))) as Record<
      string,
      DeviceArray
    >;
    const loaded = await tx.loadExported(file);
    const got = (await loaded(w, x)) as Record<string, DeviceArray>;
    expect(got.y!.sharding?.sharding).toEqual({ dims: [["data"], ["model"]] });
    expect(await treeBits(got)).toEqual(await treeBits(want));
    // Outputs feed the next call in place.
    const again = (await loaded(w, got.y!.matmul(tx.array(values(8 * 4, 9), { shape: [8, 4] })))) as Record<
      string,
      DeviceArray
    >;
    expect(again.y!.shape).toEqual([8, 8]);
  });
});

/** `tessera compile FILE --entry E --emit exported --out OUT` as a subprocess. */
function compileExported(file: string, entryName: string, out: string): Promise<{ code: number; stderr: string }> {
  return new Promise((resolve) => {
    execFile(
      process.execPath,
      [
        path.join(ROOT, "bin", "tessera.mjs"),
        "compile",
        file,
        "--entry",
        entryName,
        "--emit",
        "exported",
        "--out",
        out,
      ],
      { cwd: ROOT, env: { ...process.env, TESSERA_DEBUG: "" } },
      (err, _stdout, stderr) => resolve({ code: err ? Number(err.code ?? -1) : 0, stderr }),
    );
  });
}

describe("tessera compile --emit exported", () => {
  const stepOut = path.join(dir, "cli_step.mlir");
  const mlpOut = path.join(dir, "cli_megatron.mlir");
  const keptOut = path.join(dir, "kept.mlir");
  // Each run pays for tsx and the model file's type check: both start at once.
  let runs: Promise<{ code: number; stderr: string }[]>;
  beforeAll(() => {
    writeFileSync(keptOut, "an earlier export\n");
    runs = Promise.all([
      compileExported("examples/mlp.ts", "trainStep", stepOut),
      compileExported("test/sharding/fixtures/sharded.ts", "megatronMlp", mlpOut),
      compileExported("test/cli/fixtures/errors.ts", "badShapes", keptOut),
    ]);
  });

  it("writes the file tx.export writes for the entry, and loadExported runs it", async () => {
    expect((await runs)[0]).toEqual({ code: 0, stderr: "" });
    // The entry is trainStep = entry(trainStepFn, [paramSpecs, x, y, lr], { donate: [0] }): jit(trainStepFn, { donate: [0] }).
    expect(readFileSync(stepOut, "utf8")).toBe(exported.serialize());
    const loaded = await tx.loadExported(stepOut);
    expect(await train(loaded, 2)).toEqual(await train(step as never, 2));
  });

  it("a model that fails to trace is reported at its line and leaves --out as it was", async () => {
    const r = (await runs)[2]!;
    expect(r.code).toBe(1);
    expect(r.stderr).toContain("test/cli/fixtures/errors.ts:6:10 - error: matmul: contracting dims must match");
    expect(readFileSync(keptOut, "utf8")).toBe("an earlier export\n");
  });

  it("examples/train_exported.ts trains from the file alone, printing its signature and a falling loss", async () => {
    expect((await runs)[0]!.code).toBe(0);
    const { code, stdout, stderr } = await new Promise<{ code: number; stdout: string; stderr: string }>((resolve) => {
      execFile(
        process.execPath,
        ["--import", "tsx", "examples/train_exported.ts", stepOut],
        { cwd: ROOT },
        (err, stdout, stderr) => resolve({ code: err ? Number(err.code ?? -1) : 0, stdout, stderr }),
      );
    });
    expect({ code, stderr }).toEqual({ code: 0, stderr: "" });
    expect(stdout).toContain(`${stepOut}: jit_trainStepFn, Tessera ${TESSERA_VERSION}, for cpu (`);
    expect(stdout).toContain("  params.w1  f32[4,32]  donated\n");
    expect(stdout).toContain("  lr         f32[]\n");
    const means = [...stdout.matchAll(/^steps +\d+-\d+ +mean loss (\d+\.\d+)$/gm)].map((m) => Number(m[1]));
    expect(means).toHaveLength(4);
    expect(means.at(-1)!).toBeLessThan(means[0]! / 2);
  });

  it("exports an entry with a mesh as jit over that mesh does", async (ctx) => {
    expect((await runs)[1]).toEqual({ code: 0, stderr: "" });
    if ((await getClient()).devices.length !== 8) return ctx.skip();
    const e = megatronMlp;
    const specs = typeof e.shardings === "function" ? e.shardings(e.mesh!) : e.shardings!;
    const f = tx.jit(e.fn, { mesh: e.mesh!, in: specs.in, out: specs.out });
    expect(readFileSync(mlpOut, "utf8")).toBe((await tx.export(f, ...e.args)).serialize());
    const loaded = await tx.loadExported(mlpOut);
    expect(loaded.exported.header.mesh?.axes.map((a) => `${a.name}=${a.size}`)).toEqual(["data=2", "model=4"]);
    const w = { up: values(16 * 32, 10), down: values(32 * 16, 11) };
    const x = values(8 * 16, 12);
    const got = (await loaded(w, x)) as DeviceArray;
    const want = (await f(
      { up: tx.array(w.up, { shape: [16, 32] }), down: tx.array(w.down, { shape: [32, 16] }) },
      tx.array(x, { shape: [8, 16] }),
    )) as DeviceArray;
    expect(got.sharding?.sharding).toEqual({ dims: [["data"], []] });
    expect(await bits(got)).toEqual(await bits(want));
  });
});

describe("loadExported errors", () => {
  const header = () => JSON.parse(readFileSync(stepFile, "utf8").split("\n")[0]!.slice(3)) as Record<string, unknown>;
  const withHeader = (h: unknown) => `// ${JSON.stringify(h)}\n${exported.stablehlo}`;
  const write = (name: string, text: string) => {
    const f = path.join(dir, name);
    writeFileSync(f, text);
    return f;
  };

  it("names the leaf, the expected and the given type on a wrong shape, dtype or structure", async () => {
    const loaded = await tx.loadExported(stepFile);
    const p = uploadParams();
    const x = tx.array(hostX, { shape: [batch, input] });
    await expect(
      loaded({ ...p, w1: tx.array(new Float32Array(64), { shape: [4, 16] }) }, x, hostY, 0.1),
    ).rejects.toThrow(`${stepFile}: argument params.w1: expected f32[4,32], got f32[4,16]`);
    await expect(loaded(p, tx.array(new Int32Array(256), { shape: [64, 4] }), hostY, 0.1)).rejects.toThrow(
      `${stepFile}: argument x: expected f32[64,4], got s32[64,4]`,
    );
    await expect(loaded(p, x, new Float32Array(10), 0.1)).rejects.toThrow(
      `${stepFile}: argument y: expected f32[64,1], got a Float32Array of 10 values (64 needed)`,
    );
    await expect(loaded(p, x, hostY, [0.1])).rejects.toThrow(
      `${stepFile}: argument lr: expected f32[], got a nested array of shape [1]`,
    );
    const { w2: _w2, ...three } = p;
    await expect(loaded(three, x, hostY, 0.1)).rejects.toThrow(`${stepFile}: argument params: missing key w2`);
    // A key may be left out only where the exported tree had nothing (an undefined subtree).
    const opt = await tx.export(
      tx.jit((t: { a: T; b?: T }) => t.a.mul(2)),
      { a: tx.spec("f32", [2]), b: undefined },
    );
    expect(Array.from(await ((await opt.call({ a: [1, 2] })) as DeviceArray).toArray())).toEqual([2, 4]);
    await expect(opt.call({ a: [1, 2], c: [1] })).rejects.toThrow(
      "jit_main: argument t: key c not in the exported signature (keys: a, b)",
    );
    await expect(loaded(p, x, hostY)).rejects.toThrow(`${stepFile}: expected 4 arguments (params, x, y, lr), got 3`);
    expect(p.w1.donated).toBe(false); // nothing ran
  });

  it("refuses a damaged file, naming what is wrong", async () => {
    const text = readFileSync(stepFile, "utf8");
    await expect(tx.loadExported(write("cut.mlir", text.slice(0, text.length - 40)))).rejects.toThrow(
      /cut\.mlir: not a readable Tessera exported program: the program after line 1 \(\d+ bytes\) does not match the header's length and sha256 \(\d+ bytes\): the file was truncated or edited/,
    );
    await expect(tx.loadExported(write("plain.mlir", exported.stablehlo))).rejects.toThrow(
      'plain.mlir: not a readable Tessera exported program: line 1 is not the "// {...}" header that tessera export writes',
    );
    await expect(tx.loadExported(write("json.mlir", `// {"format": \n${exported.stablehlo}`))).rejects.toThrow(
      /json\.mlir: not a readable Tessera exported program: line 1: the header is not valid JSON/,
    );
    const h = header();
    const leaves = (h.inputs as { leaves: Record<string, unknown>[] }).leaves;
    leaves[2] = { ...leaves[2], dtype: "f64" };
    await expect(tx.loadExported(write("dtype.mlir", withHeader(h)))).rejects.toThrow(
      'dtype.mlir: not a readable Tessera exported program: line 1: "inputs.leaves[2].dtype" is "f64"',
    );
    // A sharding without a mesh, and a mesh whose axes a sharding does not use by name.
    leaves[2] = { ...leaves[2], dtype: "f32", sharding: [["data"], []] };
    await expect(tx.loadExported(write("sharding.mlir", withHeader(h)))).rejects.toThrow(
      'sharding.mlir: not a readable Tessera exported program: line 1: "inputs.leaves[2].sharding" is [["data"],[]]',
    );
    const meshed = { ...h, mesh: { axes: [{ name: "model", size: 8 }] } };
    await expect(tx.loadExported(write("axes.mlir", withHeader(meshed)))).rejects.toThrow(
      'line 1: "inputs.leaves[0].sharding" is missing',
    );
    await expect(tx.loadExported(path.join(dir, "missing.mlir"))).rejects.toThrow(/cannot read the exported program/);
  });

  it("reports a program the plugin cannot compile with both plugins named", async () => {
    const bad = exported.stablehlo.replace("stablehlo.tanh", "stablehlo.tanhh");
    const h = {
      ...header(),
      stablehlo: { bytes: Buffer.byteLength(bad), sha256: createHash("sha256").update(bad).digest("hex") },
    };
    const loaded = await tx.loadExported(write("bad_op.mlir", `// ${JSON.stringify(h)}\n${bad}`));
    const err = await loaded(uploadParams(), hostX, hostY, 0.1).catch((e: unknown) => e);
    expect((err as tx.ExportedError).code).toBe("ERR_EXPORTED_COMPILE");
    expect((err as Error).message).toMatch(
      /^.*bad_op\.mlir: the cpu plugin \S+ \(StableHLO [\d.]+\) could not compile the program Tessera \S+ lowered with plugin \S+ \(StableHLO [\d.]+\): .*tanhh/s,
    );
  });

  it("refuses a newer format version and another platform", async () => {
    await expect(
      tx.loadExported(write("newer.mlir", withHeader({ ...header(), formatVersion: 2, tessera: "9.0.0" }))),
    ).rejects.toThrow(
      `newer.mlir was written by Tessera 9.0.0 in exported format 2; this Tessera (${TESSERA_VERSION}) reads format 1 and older: upgrade Tessera to load it`,
    );
    const cuda = { ...header(), platform: { ...(header().platform as object), name: "cuda", plugin: "xla-cuda12" } };
    const err = await tx.loadExported(write("cuda.mlir", withHeader(cuda))).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(tx.ExportedError);
    expect((err as tx.ExportedError).code).toBe("ERR_EXPORTED_PLATFORM");
    expect(String((err as Error).message)).toMatch(
      /cuda\.mlir was lowered for platform 'cuda' \(plugin xla-cuda12\); this process runs 'cpu' \(plugin .+\): export it again from the model's source for cpu/,
    );
  });
});
