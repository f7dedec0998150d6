// cuDNN fused attention: our custom calls diffed against JAX's lowering for cuda (golden fixtures), and the op's float64 kernels against plain attention.
import { readFileSync } from "node:fs";
import { describe, expect, it } from "vitest";
import { jit, tx, type Tensor } from "tessera";
import { cudnnAttention, plainAttention } from "../../models/attention.ts";
import { mulberry32 } from "../../models/lora.ts";
import { fromFloat32, toFloat32, type HostTensor } from "../../src/formats/host_tensor.ts";
import { interpretOnHost } from "../../src/parity/execute.ts";
import { getClient } from "../../src/backend/runtime/index.ts";
import { TesseraError } from "../../src/errors.ts";
import { uniform } from "./helpers.ts";
import { bind } from "../../src/frontend/core.ts";
import { runPasses } from "../../src/passes/manager.ts";
import { CLEANUP_PIPELINE } from "../../src/passes/pipeline.ts";
import { verify } from "../../src/ir/verify.ts";
import { print } from "../../src/ir/print.ts";
import { parse } from "../../src/ir/parse.ts";
import { graphCost } from "../../src/ir/cost.ts";
import { estimateMemory } from "../../src/passes/memory_estimate.ts";

const FIXTURES = new URL("./fixtures/cudnn_attention/", import.meta.url);
const golden = (name: string) => readFileSync(new URL(`${name}.mlir`, FIXTURES), "utf8");

/**
 * The ops of a module's main function with SSA names replaced by what they refer to: `%argN` stays, a result of
 * another op becomes `<op>#i` (the op's name, or `custom_call@target`), and the defining `%x =` and every
 * `loc(...)` are dropped. Two lowerings that build the same custom calls on the same operands then read the same
 * even where their other ops are numbered differently.
 */
function normalizedOps(module: string): string[] {
  const body = module.slice(module.indexOf("func.func public @main"));
  const lines = body
    .split("\n")
    .slice(1)
    .map((l) => l.trim().replace(/ loc\((?:[^()]|\([^()]*\))*\)$/, ""))
    .filter((l) => l.startsWith("%") || l.startsWith("return"));
  const defs = new Map<string, string>();
  return lines.map((line) => {
    const m = /^(%[\w$]+)(?::\d+)? = (stablehlo\.\w+)(?: @([\w$]+))?/.exec(line);
    const rhs = m ? line.slice(line.indexOf(" = ") + 3) : line;
    const text = rhs.replace(/%([\w$]+)(#\d+)?/g, (ref, name: string, idx?: string) =>
      name.startsWith("arg") ? ref : `<${defs.get(`%${name}`) ?? "?"}>${idx ?? ""}`,
    );
    if (m) defs.set(m[1]!, m[3] ? `custom_call@${m[3]}` : m[2]!.replace("stablehlo.", ""));
    return text;
  });
}

const B = 2,
  T = 256,
  N = 4,
  K = 2,
  H = 64;
const qSpec = tx.spec("bf16", [B, T, N, H]);
const kvSpec = tx.spec("bf16", [B, T, K, H]);
const wSpec = tx.spec("f32", [B, T, N, H]);
const forward = (causal: boolean) => (q: Tensor, k: Tensor, v: Tensor) => cudnnAttention(q, k, v, { causal });
const grad = (q: Tensor, k: Tensor, v: Tensor, w: Tensor) =>
  tx.grad((q: Tensor, k: Tensor, v: Tensor) => forward(true)(q, k, v).astype("f32").mul(w).sum(), {
    wrt: [0, 1, 2],
  })(q, k, v);

describe("cudnnAttention lowers as JAX lowers jax.nn.dot_product_attention(implementation='cudnn') for cuda", () => {
  it("forward, causal and not: the same custom call (backend_config, layouts, types) and transpose", () => {
    for (const [name, causal] of [
      ["forward", true],
      ["forward_nomask", false],
    ] as const) {
      const ours = normalizedOps(jit(forward(causal)).lower(qSpec, kvSpec, kvSpec).stablehlo);
      const jax = normalizedOps(golden(name));
      expect(ours, name).toEqual(jax);
      expect(ours[0]).toContain("@__cudnn$fmhaSoftmax(%arg0, %arg1, %arg2)");
      expect(ours[0]).toContain(causal ? "\\22mask_type\\22: \\22CAUSAL\\22" : "\\22mask_type\\22: \\22NO_MASK\\22");
    }
  });

  it("grad: the forward with stats, the backward on (q, k, v, stats, dO, O), and the transposes of dq, dk, dv", () => {
    const keep = (l: string) => l.includes("custom_call") || l.includes("transpose") || l.startsWith("return");
    const ours = normalizedOps(jit(grad).lower(qSpec, kvSpec, kvSpec, wSpec).stablehlo).filter(keep);
    const jax = normalizedOps(golden("grad")).filter(keep);
    expect(ours).toEqual(jax);
    // JAX's dO is convert(1 * w); ours is convert(w): the same operand kind
    expect(ours[2]).toContain(
      "@__cudnn$fmhaSoftmaxBackward(%arg0, %arg1, %arg2, <custom_call@__cudnn$fmhaSoftmax>#1, <convert>, <transpose>)",
    );
    expect(ours).toHaveLength(7); // 2 custom calls, 4 transposes, return
  });
});

describe("cudnn_fmha's float64 kernels (the interpreter) against plain attention", () => {
  // bf16 inputs (exact in f32): the fused op rounds its results to bf16 once, plain attention computes in f32
  const S = 7,
    D = 4;
  const rand = mulberry32(5);
  const bf = (h: number) =>
    fromFloat32(
      uniform(2 * S * h * D, 1.5, rand).map((x) => Math.round(x * 64) / 64),
      [2, S, h, D],
    );
  const [q, k, v] = [bf(4), bf(2), bf(2)];
  const w = fromFloat32(uniform(2 * S * 4 * D, 1, rand), [2, S, 4, D]);

  it.each([true, false])("value and dq/dk/dv, GQA 2, causal %s: within bf16 rounding", (causal) => {
    const run = (attn: typeof plainAttention, dtype: "bf16" | "f32") =>
      interpretOnHost(
        (q: Tensor, k: Tensor, v: Tensor, w: Tensor) => {
          const f = (q: Tensor, k: Tensor, v: Tensor) =>
            attn(q.astype(dtype), k.astype(dtype), v.astype(dtype), { causal }).astype("f32").mul(w).sum();
          const [, g] = tx.valueAndGrad(f, { wrt: [0, 1, 2] })(q, k, v);
          return [
            attn(q.astype(dtype), k.astype(dtype), v.astype(dtype), { causal }).astype("f32"),
            ...(g as Tensor[]),
          ];
        },
        [q, k, v, w],
      ) as HostTensor[];
    const want = run(plainAttention, "f32");
    const got = run(cudnnAttention, "bf16");
    ["out", "dq", "dk", "dv"].forEach((name, i) => {
      const [a, b] = [toFloat32(got[i]!), toFloat32(want[i]!)];
      let worst = 0,
        scale = 0;
      for (let j = 0; j < a.length; j++) {
        worst = Math.max(worst, Math.abs(a[j]! - b[j]!));
        scale = Math.max(scale, Math.abs(b[j]!));
      }
      // bf16 keeps 8 bits: half an ulp of the largest value, twice over (the result and dO's rounding)
      expect(worst, name).toBeLessThanOrEqual(scale * 2 ** -7);
      expect(scale, name).toBeGreaterThan(0.05);
    });
  });
});

describe("the cudnn_fmha ops in the IR", () => {
  it("print/parse round-trip, verify, cost and memory see them; autodiff goes through the customVjp", () => {
    const { graph } = tx.trace(grad, [qSpec, kvSpec, kvSpec, wSpec]);
    const g = runPasses(graph, CLEANUP_PIPELINE);
    const names = g.ops.map((op) => op.name);
    expect(names.filter((n) => n.startsWith("cudnn"))).toEqual(["cudnn_fmha", "cudnn_fmha_bwd"]);
    verify(g);
    expect(print(parse(print(g)))).toBe(print(g));
    expect(print(g)).toMatch(/cudnn_fmha .*\{causal=true, scale=\[0\.125\], stats=true\}/);
    // 2 score matmuls forward, 5 backward: 7 x 2·B·N·T·S·H
    const matmul = 2 * B * N * T * T * H;
    expect(graphCost(g).total.flops).toBeGreaterThanOrEqual(7 * matmul);
    expect(graphCost(g).total.flops).toBeLessThan(7.1 * matmul);
    expect(estimateMemory(g).temporaries).toBeLessThan(4 * B * T * N * H * 4);
  });

  it("the raw op has no VJP of its own: differentiating it directly names cudnnAttention", () => {
    const raw = (q: Tensor, k: Tensor, v: Tensor) =>
      bind("cudnn_fmha", [q, k, v], { scale: [0.125], causal: true, stats: false })[0]!
        .astype("f32")
        .sum();
    expect(() => tx.trace(tx.grad(raw), [qSpec, kvSpec, kvSpec])).toThrow(/differentiated through cudnnAttention/);
  });
});

describe("cudnnAttention's refusals", () => {
  it("names the cause: f32 inputs, segment ids, and a CPU backend that has no cuDNN", async () => {
    const trace = (dtype: "f32" | "bf16", seg: boolean) =>
      tx.trace(
        (q: Tensor, k: Tensor, s: Tensor) =>
          cudnnAttention(q, k, k, { causal: true, ...(seg ? { segmentIds: s } : {}) }),
        [tx.spec(dtype, [1, 8, 2, 4]), tx.spec(dtype, [1, 8, 2, 4]), tx.spec("s32", [1, 8])],
      );
    expect(() => trace("f32", false)).toThrow(/cudnnAttention: cuDNN flash attention takes bf16 or f16/);
    expect(() => trace("bf16", true)).toThrow(/segment ids/);
    expect(() => trace("bf16", false)).not.toThrow();
    // XLA's CPU backend has no implementation of the custom call: compiling fails with an error, not a crash
    const client = await getClient();
    const text = jit(forward(true)).lower(
      tx.spec("bf16", [1, 8, 2, 4]),
      tx.spec("bf16", [1, 8, 2, 4]),
      tx.spec("bf16", [1, 8, 2, 4]),
    ).stablehlo;
    const err = await client.compile(text, { device: client.devices[0]!.id }).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(TesseraError);
    expect((err as Error).message).toMatch(/__cudnn\$fmhaSoftmax/);
  });
});
