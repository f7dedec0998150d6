// RoPE scaling (linear, dynamic NTK, YaRN, llama3) against transformers' own numbers, config.json in both forms, and a scaled Llama forward.
import { existsSync, readFileSync } from "node:fs";
import { readFile } from "node:fs/promises";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { array, jit, type Tensor } from "tessera";
import { trainHere } from "../train_cli/helpers.ts";
import { FormatError } from "../../src/formats/errors.ts";
import { listCheckpoints } from "../../src/train/checkpoint.ts";
import { toFloat32, type HostTensor } from "../../src/formats/host_tensor.ts";
import { llamaConfigToJson, parseLlamaConfig, type LlamaConfig } from "../../src/formats/hf_config.ts";
import { LLAMA_TINY, llamaLogits, type LlamaWeights } from "../../models/llama.ts";
import { ropeContext, ropeParameters, ropeTables, ropeTablesHost } from "../../models/rope.ts";
import { loadLlamaWeights } from "../../models/weights.ts";
import { interpretOnHost } from "../../src/parity/execute.ts";
import { refLogits } from "./reference.ts";
import { batch, f64, i32, REPO_ROOT, relErr, tempDir, writeModel } from "./helpers.ts";

interface Case {
  kind: string;
  rope_scaling: Record<string, unknown> | null;
  seq: number;
  inv_freq: number[];
  attention_scaling: number;
  cos: number[][];
  sin: number[][];
}
const FIXTURE = JSON.parse(readFileSync(join(REPO_ROOT, "../shared/fixtures/rope-scaling/expected.json"), "utf8")) as {
  config: Record<string, unknown>;
  cases: Case[];
};

const configOf = (c: Case): LlamaConfig =>
  parseLlamaConfig({ ...FIXTURE.config, ...(c.rope_scaling ? { rope_scaling: c.rope_scaling } : {}) });
const name = (c: Case) => `${c.kind} at seq ${c.seq}`;

/** Largest |a - b| / |b| over elements. */
function elementRelErr(a: ArrayLike<number>, b: ArrayLike<number>): number {
  expect(a.length).toBe(b.length);
  let e = 0;
  for (let i = 0; i < b.length; i++) e = Math.max(e, Math.abs(a[i]! - b[i]!) / Math.abs(b[i]!));
  return e;
}

describe("RoPE scaling: transformers' numbers (../shared/fixtures/rope-scaling)", () => {
  it("the fixture covers every kind, dynamic NTK inside and past the context", () => {
    expect(FIXTURE.cases.map(name)).toEqual([
      "none at seq 200",
      "linear at seq 200",
      "dynamic at seq 48",
      "dynamic at seq 200",
      "yarn at seq 200",
      "llama3 at seq 200",
    ]);
  });

  for (const c of FIXTURE.cases) {
    it(`${name(c)}: inv_freq, attention scaling and the host cos/sin tables`, () => {
      const p = ropeParameters(configOf(c), c.seq);
      expect(elementRelErr(p.invFreq, c.inv_freq)).toBeLessThan(1e-6);
      expect(Math.abs(p.attentionScaling - c.attention_scaling)).toBeLessThan(1e-6 * c.attention_scaling);
      const t = ropeTablesHost(p, c.seq);
      // Normwise over the table: single entries near a zero of cos or sin have no meaningful relative error.
      expect(relErr(t.cos, c.cos.flat())).toBeLessThan(1e-6);
      expect(relErr(t.sin, c.sin.flat())).toBeLessThan(1e-6);
    });
  }

  it("dynamic NTK rescales only past max_position_embeddings; the others do not depend on the length", () => {
    const [, linear, dyn48, dyn200] = FIXTURE.cases as [Case, Case, Case, Case];
    const plain = ropeParameters(configOf(FIXTURE.cases[0]!), 200).invFreq;
    expect(ropeParameters(configOf(dyn48), 64).invFreq).toEqual(plain);
    expect(ropeParameters(configOf(dyn200), 65).invFreq).not.toEqual(plain);
    expect(ropeParameters(configOf(linear), 10).invFreq).toEqual(ropeParameters(configOf(linear), 200).invFreq);
  });

  it("the traced tables the model uses, run on the PJRT CPU plugin, match transformers' cos/sin", async () => {
    for (const c of FIXTURE.cases) {
      const cfg = configOf(c);
      // An unused input: jit compiles one program per input signature.
      const f = jit((_: Tensor) => ropeTables(cfg, c.seq));
      const [cos, sin] = await f(array([0]));
      expect(relErr(await cos!.toArray(), c.cos.flat()), `${name(c)} cos`).toBeLessThan(1e-6);
      expect(relErr(await sin!.toArray(), c.sin.flat()), `${name(c)} sin`).toBeLessThan(1e-6);
    }
  });
});

describe("RoPE scaling in config.json", () => {
  const base = { ...FIXTURE.config, model_type: "llama" };
  const parse = (extra: Record<string, unknown>) => parseLlamaConfig({ ...base, ...extra }, "m/config.json");
  const parseErr = (extra: Record<string, unknown>): FormatError => {
    try {
      parse(extra);
    } catch (e) {
      expect(e).toBeInstanceOf(FormatError);
      return e as FormatError;
    }
    throw new Error("expected a FormatError");
  };
  const settings: Record<string, Record<string, unknown>> = {
    linear: { factor: 4 },
    dynamic: { factor: 2 },
    yarn: { factor: 4, original_max_position_embeddings: 32, beta_fast: 16, attention_factor: 1.5 },
    llama3: { factor: 8, low_freq_factor: 1, high_freq_factor: 4, original_max_position_embeddings: 16 },
  };
  const expected = {
    linear: { kind: "linear", factor: 4 },
    dynamic: { kind: "dynamic", factor: 2 },
    yarn: { kind: "yarn", factor: 4, originalMaxPositionEmbeddings: 32, betaFast: 16, attentionFactor: 1.5 },
    llama3: { kind: "llama3", factor: 8, lowFreqFactor: 1, highFreqFactor: 4, originalMaxPositionEmbeddings: 16 },
  };

  for (const [kind, fields] of Object.entries(settings)) {
    it(`${kind}: rope_scaling with type or rope_type (4.x) and rope_parameters (5.x) read the same`, () => {
      const want = expected[kind as keyof typeof expected];
      expect(parse({ rope_scaling: { type: kind, ...fields } }).ropeScaling).toEqual(want);
      expect(parse({ rope_scaling: { rope_type: kind, ...fields } }).ropeScaling).toEqual(want);
      const v5 = parse({ rope_parameters: { rope_type: kind, rope_theta: 10000, ...fields } });
      expect([v5.ropeScaling, v5.ropeTheta]).toEqual([want, 10000]);
      // What Tessera writes (both forms at once) reads back as it was.
      expect(parseLlamaConfig(llamaConfigToJson(v5)).ropeScaling).toEqual(want);
    });
  }

  it("plain RoPE stays unscaled, written and read", () => {
    expect(parse({ rope_scaling: null }).ropeScaling).toBeUndefined();
    expect(parse({ rope_parameters: { rope_type: "default", rope_theta: 10000 } }).ropeScaling).toBeUndefined();
    expect(llamaConfigToJson(parse({})).rope_scaling).toBeNull();
  });

  it("an unknown kind, a missing factor or llama3 frequency factor, and two forms that disagree are FormatErrors", () => {
    expect(parseErr({ rope_scaling: { rope_type: "longrope", factor: 4 } }).message).toBe(
      'm/config.json: field "rope_scaling.rope_type": expected "default" or one of "linear", "dynamic", "yarn", "llama3", got "longrope": that RoPE scaling is not supported',
    );
    expect(parseErr({ rope_parameters: { type: "su", factor: 4 } }).message).toMatch(
      /field "rope_parameters\.type": expected "default" or one of .* got "su"/,
    );
    expect(parseErr({ rope_scaling: { type: "linear" } }).message).toBe(
      'm/config.json: field "rope_scaling.factor": missing: rope_type "linear" needs a number > 0',
    );
    expect(parseErr({ rope_parameters: { rope_type: "yarn", factor: null } }).message).toMatch(
      /field "rope_parameters\.factor": missing/,
    );
    expect(parseErr({ rope_scaling: { rope_type: "llama3", factor: 8, low_freq_factor: 1 } }).message).toMatch(
      /field "rope_scaling\.high_freq_factor": missing: rope_type "llama3" needs a number > 0/,
    );
    expect(parseErr({ rope_scaling: { rope_type: "linear", factor: -2 } }).message).toMatch(
      /field "rope_scaling\.factor"/,
    );
    expect(
      parseErr({
        rope_scaling: { rope_type: "linear", factor: 2 },
        rope_parameters: { rope_type: "linear", factor: 4 },
      }).message,
    ).toMatch(/field "rope_parameters": .* disagrees with rope_scaling/);
  });

  it("the context a scaling covers: factor x the original context, never less than max_position_embeddings", () => {
    expect(ropeContext(parse({}))).toBe(64);
    expect(ropeContext(parse({ rope_scaling: { type: "linear", factor: 4 } }))).toBe(256);
    expect(ropeContext(parse({ rope_scaling: { type: "dynamic", factor: 2.5 } }))).toBe(160);
    expect(ropeContext(parse({ rope_scaling: { ...settings.llama3, rope_type: "llama3" } }))).toBe(128);
    // Llama 3.1's own setting: max_position_embeddings already the stretched context.
    const l31 = { rope_type: "llama3", factor: 8, low_freq_factor: 1, high_freq_factor: 4 };
    expect(
      ropeContext(
        parse({ max_position_embeddings: 131072, rope_scaling: { ...l31, original_max_position_embeddings: 8192 } }),
      ),
    ).toBe(131072);
  });
});

describe("a Llama with scaled RoPE", () => {
  let dir: string, cleanup: () => Promise<void>;
  let hf: Map<string, HostTensor>;
  let w: LlamaWeights<HostTensor>;
  const plain = parseLlamaConfig(FIXTURE.config);
  beforeAll(async () => {
    ({ dir, cleanup } = await tempDir("rope"));
    hf = await writeModel(dir, plain);
    w = (await loadLlamaWeights(dir)).weights;
  });
  afterAll(() => cleanup());

  // YaRN (which also scales cos and sin) and dynamic NTK, both past the 64-token context, against the float64
  // reference model given transformers' frequencies from the fixture.
  for (const kind of ["yarn", "dynamic"]) {
    it(`${kind}: the traced forward pass at seq 200 matches the reference with transformers' frequencies`, () => {
      const c = FIXTURE.cases.find((k) => k.kind === kind && k.seq === 200)!;
      const cfg = configOf(c);
      const tokens = batch(1, c.seq, cfg.vocabSize, 0).tokens;
      const got = toFloat32(
        interpretOnHost(
          (w: LlamaWeights, ids: Tensor) => llamaLogits(cfg, w, ids),
          [w as unknown as Parameters<typeof interpretOnHost>[1][number], i32(tokens)],
        ) as HostTensor,
      );
      const ref = refLogits(cfg, f64(hf), tokens[0]!, undefined, {
        invFreq: c.inv_freq,
        scaling: c.attention_scaling,
      });
      expect(relErr(got, ref)).toBeLessThan(2e-6);
      // And the scaling mattered: the unscaled model's logits are far from these.
      expect(relErr(refLogits(plain, f64(hf), tokens[0]!), ref)).toBeGreaterThan(1e-3);
    });
  }
});

describe("tessera train --rope-scaling", () => {
  let tmp: string, cleanup: () => Promise<void>;
  beforeAll(async () => {
    ({ dir: tmp, cleanup } = await tempDir("rope-train"));
  });
  afterAll(() => cleanup());

  const small = { batch: "2", targets: "q,v", rank: "4", alpha: "8", "log-every": "1" };

  it("refuses --seq past max_position_embeddings, or past what the scaling covers, saying how to fix it", async () => {
    const out = join(tmp, "nothing");
    expect(await trainHere({ seq: "200", out })).toEqual({
      code: 1,
      out: "",
      err: "error: --seq 200 exceeds the model's max_position_embeddings 64 (built-in tiny Llama); to train past it, scale RoPE with --rope-scaling (e.g. --rope-scaling yarn:4; kinds linear, dynamic, yarn, llama3), or lower --seq\n",
    });
    expect(await trainHere({ seq: "200", "rope-scaling": "linear:2", out })).toEqual({
      code: 1,
      out: "",
      err: "error: --seq 200 exceeds the 128 positions that --rope-scaling linear:2 covers (factor x original context 64); raise the factor to at least 4 with --rope-scaling linear:4, or lower --seq\n",
    });
    // A checkpoint whose config.json carries the scaling: its own factor is the limit.
    const model = join(tmp, "scaled-model");
    await writeModel(model, { ...LLAMA_TINY, ropeScaling: { kind: "dynamic", factor: 2 } });
    expect(await trainHere({ model, seq: "200", out })).toMatchObject({
      code: 1,
      err: `error: --seq 200 exceeds the 128 positions that the model's rope_scaling dynamic factor 2 (${model}/config.json) covers (factor x original context 64); raise the factor to at least 4 with --rope-scaling dynamic:4, or lower --seq\n`,
    });
    for (const bad of ["cubic:2", "linear", "linear:0.5", "yarn:x", "yarn:4:2"])
      await expect(trainHere({ "rope-scaling": bad, out })).rejects.toThrow(
        `--rope-scaling: expected kind:factor with kind one of linear, dynamic, yarn, llama3 and factor a number >= 1 (e.g. linear:4); got '${bad}'`,
      );
    expect(existsSync(out)).toBe(false);
  });

  it("trains past the context with scaling, records it in trainer_state.json, and --resume must agree", async () => {
    const out = join(tmp, "run");
    const r = await trainHere({ ...small, seq: "128", "rope-scaling": "yarn:2.0", steps: "2", out });
    expect(r.err).toBe("");
    expect(r.code).toBe(0);
    expect(r.out).toContain("RoPE scaling yarn x2 (up to 128 positions)");
    expect(r.out).toContain("batch 2 x seq 128");
    const [last] = (await listCheckpoints(out)).slice(-1);
    const state = JSON.parse(await readFile(join(last!.dir, "trainer_state.json"), "utf8"));
    expect(state.options["rope-scaling"]).toBe("yarn:2");

    expect(await trainHere({ "rope-scaling": "linear:2", steps: "3", resume: "true", out })).toMatchObject({
      code: 1,
      err: expect.stringContaining("--rope-scaling linear:2 differs from the run being resumed (yarn:2"),
    });
    const resumed = await trainHere({ steps: "3", resume: "true", out });
    expect(resumed.code).toBe(0);
    expect(resumed.out).toContain("RoPE scaling yarn x2");
  });
});
