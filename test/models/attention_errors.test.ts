// Issue 9's refusals, each naming its cause: segment ids of the wrong shape or dtype (both kernels and the Llama model), and an attention kind that is no kernel.
import { describe, expect, it } from "vitest";
import { tx, type Tensor, type TensorSpec } from "tessera";
import { blockwiseAttention, plainAttention } from "../../models/attention.ts";
import { LLAMA_TINY, llamaLogits, llamaSpecs, resolveAttention, type LlamaWeights } from "../../models/llama.ts";
import { TesseraError } from "../../src/errors.ts";

const [B, S, H, D] = [2, 8, 4, 16];

/** The error tracing `f` over q, k, v [B, S, H, D] f32 and segment ids `seg` throws. */
function traceError(f: (q: Tensor, k: Tensor, v: Tensor, seg: Tensor) => Tensor, seg: TensorSpec): unknown {
  const qkv = tx.spec("f32", [B, S, H, D]);
  try {
    tx.trace(f, [qkv, qkv, qkv, seg]);
  } catch (e) {
    return e;
  }
  return undefined;
}

describe("segment ids of the wrong shape or dtype", () => {
  const cases = [
    [
      "blockwise",
      (q: Tensor, k: Tensor, v: Tensor, seg: Tensor) =>
        blockwiseAttention(q, k, v, { causal: true, segmentIds: seg, blockQ: 4, blockK: 4 }),
    ],
    [
      "plain",
      (q: Tensor, k: Tensor, v: Tensor, seg: Tensor) => plainAttention(q, k, v, { causal: true, segmentIds: seg }),
    ],
  ] as const;
  for (const [name, f] of cases) {
    it(`${name} attention names the shape it needs and the operands it got`, () => {
      for (const seg of [tx.spec("s32", [B, S + 1]), tx.spec("s32", [S]), tx.spec("f32", [B, S])]) {
        const err = traceError(f, seg);
        expect(err).toBeInstanceOf(TesseraError);
        expect((err as Error).message).toMatch(
          new RegExp(
            `^\\w+: segmentIds must be s32\\[${B},${S}\\] \\(operands f32\\[${B},${S},${H},${D}\\], .*${seg.dtype}\\[${seg.shape.join(",")}\\]\\)`,
          ),
        );
      }
    });
  }

  it("the Llama model refuses segment ids that do not match its tokens before tracing a layer", () => {
    let err: unknown;
    try {
      tx.trace(
        (w: LlamaWeights, ids: Tensor, seg: Tensor) => llamaLogits(LLAMA_TINY, w, ids, { segmentIds: seg }),
        [llamaSpecs(LLAMA_TINY, "f32"), tx.spec("s32", [2, 16]), tx.spec("s32", [2, 15])],
      );
    } catch (e) {
      err = e;
    }
    expect(err).toBeInstanceOf(TesseraError);
    expect((err as Error).message).toBe("llamaHidden: segmentIds must be s32[2,16] like the tokens; got s32[2,15]");
  });
});

describe("attention kinds", () => {
  it("an attention kind that is no kernel is a usage error listing the kernels (not a silent plain attention)", () => {
    let err: unknown;
    try {
      resolveAttention({ attention: "flash" as never }, 64);
    } catch (e) {
      err = e;
    }
    expect(err).toBeInstanceOf(TesseraError);
    expect((err as TesseraError).exitCode).toBe(2);
    expect((err as Error).message).toBe("attention must be plain, blockwise, cudnn; got 'flash'");
    expect(resolveAttention({ attention: "blockwise", attentionBlock: 32 }, 64)).toEqual({
      kind: "blockwise",
      block: 32,
    });
  });
});
