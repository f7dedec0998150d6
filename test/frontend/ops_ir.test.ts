// Golden IR for each frontend op: what the tracer records, printed without locations.
import { describe, expect, it } from "vitest";
import { tx, spec as s } from "./api.ts";
import { ir } from "./helpers.ts";

const f32 = (...shape: number[]) => s("f32", shape);

describe("element-wise ops", () => {
  it("broadcasts operands with one broadcast_in_dim and splats numbers in the tensor's dtype", () => {
    expect(
      ir((x: tx.Tensor, b: tx.Tensor) => x.add(b).mul(2), [s("bf16", [2, 3]), s("bf16", [3])]),
    ).toMatchInlineSnapshot(`
      "func @main(%0: bf16[2,3] "x", %1: bf16[3] "b") -> (bf16[2,3] "out") {
        %2: bf16[2,3] = broadcast_in_dim %1 {dims=[1], shape=[2,3]}
        %3: bf16[2,3] = add %0, %2
        %4: bf16[2,3] = constant {dtype=bf16, shape=[2,3], value=[2]}
        %5: bf16[2,3] = mul %3, %4
        return %5
      }
      "
    `);
  });

  it("broadcasts size-1 dims on both sides", () => {
    expect(ir((a: tx.Tensor, b: tx.Tensor) => tx.sub(a, b), [f32(4, 1), f32(1, 5)])).toMatchInlineSnapshot(`
      "func @main(%0: f32[4,1] "a", %1: f32[1,5] "b") -> (f32[4,5] "out") {
        %2: f32[4,5] = broadcast_in_dim %0 {dims=[0,1], shape=[4,5]}
        %3: f32[4,5] = broadcast_in_dim %1 {dims=[0,1], shape=[4,5]}
        %4: f32[4,5] = sub %2, %3
        return %4
      }
      "
    `);
  });

  it("maps unary ops to IR ops (sigmoid is logistic, silu is x * logistic(x))", () => {
    expect(
      ir(
        (x: tx.Tensor) => [
          x.neg(),
          x.exp(),
          x.log(),
          x.sqrt(),
          x.rsqrt(),
          x.tanh(),
          x.sigmoid(),
          tx.silu(x),
          x.abs(),
          x.sin(),
          x.cos(),
        ],
        [f32(2)],
      ),
    ).toMatchInlineSnapshot(`
      "func @main(%0: f32[2] "x") -> (f32[2] "out[0]", f32[2] "out[1]", f32[2] "out[2]", f32[2] "out[3]", f32[2] "out[4]", f32[2] "out[5]", f32[2] "out[6]", f32[2] "out[7]", f32[2] "out[8]", f32[2] "out[9]", f32[2] "out[10]") {
        %1: f32[2] = neg %0
        %2: f32[2] = exp %0
        %3: f32[2] = log %0
        %4: f32[2] = sqrt %0
        %5: f32[2] = rsqrt %0
        %6: f32[2] = tanh %0
        %7: f32[2] = logistic %0
        %8: f32[2] = logistic %0
        %9: f32[2] = mul %0, %8
        %10: f32[2] = abs %0
        %11: f32[2] = sin %0
        %12: f32[2] = cos %0
        return %1, %2, %3, %4, %5, %6, %7, %9, %10, %11, %12
      }
      "
    `);
  });

  it("rewrites pow with cheap number exponents and keeps the general case", () => {
    expect(
      ir((x: tx.Tensor) => [x.pow(2), x.pow(0.5), x.pow(-0.5), x.pow(1), x.pow(3)], [f32(2)]),
    ).toMatchInlineSnapshot(`
      "func @main(%0: f32[2] "x") -> (f32[2] "out[0]", f32[2] "out[1]", f32[2] "out[2]", f32[2] "out[3]", f32[2] "out[4]") {
        %1: f32[2] = mul %0, %0
        %2: f32[2] = sqrt %0
        %3: f32[2] = rsqrt %0
        %4: f32[2] = constant {dtype=f32, shape=[2], value=[3]}
        %5: f32[2] = pow %0, %4
        return %1, %2, %3, %0, %5
      }
      "
    `);
  });

  it("records comparisons as compare with a direction and where as select", () => {
    expect(ir((x: tx.Tensor, y: tx.Tensor) => tx.where(x.gt(y), x, 0), [f32(2, 2), f32(2)])).toMatchInlineSnapshot(`
      "func @main(%0: f32[2,2] "x", %1: f32[2] "y") -> (f32[2,2] "out") {
        %2: f32[2,2] = broadcast_in_dim %1 {dims=[1], shape=[2,2]}
        %3: bool[2,2] = compare %0, %2 {dir=gt}
        %4: f32[2,2] = constant {dtype=f32, shape=[2,2], value=[0]}
        %5: f32[2,2] = select %3, %0, %4
        return %5
      }
      "
    `);
  });

  it("records maximum/minimum/astype", () => {
    expect(
      ir((x: tx.Tensor) => [tx.maximum(x, 0), tx.minimum(x, 1), x.astype("bf16"), x.astype("f32")], [f32(3)]),
    ).toMatchInlineSnapshot(`
      "func @main(%0: f32[3] "x") -> (f32[3] "out[0]", f32[3] "out[1]", bf16[3] "out[2]", f32[3] "out[3]") {
        %1: f32[3] = constant {dtype=f32, shape=[3], value=[0]}
        %2: f32[3] = max %0, %1
        %3: f32[3] = constant {dtype=f32, shape=[3], value=[1]}
        %4: f32[3] = min %0, %3
        %5: bf16[3] = convert %0 {dtype=bf16}
        return %2, %4, %5, %0
      }
      "
    `);
  });
});

describe("shape ops", () => {
  it("reshape infers -1; transpose/swapaxes/expandDims/squeeze", () => {
    expect(
      ir(
        (x: tx.Tensor) => [
          x.reshape([-1, 6]),
          x.transpose([2, 0, 1]),
          x.swapaxes(0, -1),
          x.expandDims(1),
          x.reshape([2, 1, 3, 4]).squeeze(1),
        ],
        [f32(2, 3, 4)],
      ),
    ).toMatchInlineSnapshot(`
      "func @main(%0: f32[2,3,4] "x") -> (f32[4,6] "out[0]", f32[4,2,3] "out[1]", f32[4,3,2] "out[2]", f32[2,1,3,4] "out[3]", f32[2,3,4] "out[4]") {
        %1: f32[4,6] = reshape %0 {shape=[4,6]}
        %2: f32[4,2,3] = transpose %0 {perm=[2,0,1]}
        %3: f32[4,3,2] = transpose %0 {perm=[2,1,0]}
        %4: f32[2,1,3,4] = reshape %0 {shape=[2,1,3,4]}
        %5: f32[2,1,3,4] = reshape %0 {shape=[2,1,3,4]}
        %6: f32[2,3,4] = reshape %5 {shape=[2,3,4]}
        return %1, %2, %3, %4, %6
      }
      "
    `);
  });

  it("slices python-style: negative bounds, steps, integer indices drop the dim", () => {
    expect(
      ir((x: tx.Tensor) => [x.slice(null, [1, null]), x.slice([null, null, 2], -1), x.slice([-2])], [f32(4, 5)]),
    ).toMatchInlineSnapshot(`
      "func @main(%0: f32[4,5] "x") -> (f32[4,4] "out[0]", f32[2] "out[1]", f32[2,5] "out[2]") {
        %1: f32[4,4] = slice %0 {limit=[4,5], start=[0,1], stride=[1,1]}
        %2: f32[2,1] = slice %0 {limit=[4,5], start=[0,4], stride=[2,1]}
        %3: f32[2] = reshape %2 {shape=[2]}
        %4: f32[2,5] = slice %0 {limit=[4,5], start=[2,0], stride=[1,1]}
        return %1, %3, %4
      }
      "
    `);
  });

  it("concatenate, stack, split and pad", () => {
    expect(
      ir(
        (a: tx.Tensor, b: tx.Tensor) => [
          tx.concatenate([a, b], -1),
          tx.stack([a, b]),
          tx.split(a, [1], 1),
          tx.pad(a, [
            [1, 0],
            [0, 2],
          ]),
        ],
        [f32(2, 3), f32(2, 3)],
      ),
    ).toMatchInlineSnapshot(`
      "func @main(%0: f32[2,3] "a", %1: f32[2,3] "b") -> (f32[2,6] "out[0]", f32[2,2,3] "out[1]", f32[2,1] "out[2][0]", f32[2,2] "out[2][1]", f32[3,5] "out[3]") {
        %2: f32[2,6] = concatenate %0, %1 {axis=1}
        %3: f32[1,2,3] = reshape %0 {shape=[1,2,3]}
        %4: f32[1,2,3] = reshape %1 {shape=[1,2,3]}
        %5: f32[2,2,3] = concatenate %3, %4 {axis=0}
        %6: f32[2,1] = slice %0 {limit=[2,1], start=[0,0], stride=[1,1]}
        %7: f32[2,2] = slice %0 {limit=[2,3], start=[0,1], stride=[1,1]}
        %8: f32[] = constant {dtype=f32, shape=[], value=[0]}
        %9: f32[3,5] = pad %0, %8 {high=[0,2], interior=[0,0], low=[1,0]}
        return %2, %5, %6, %7, %9
      }
      "
    `);
  });

  it("creates constants, iota and arange", () => {
    expect(
      ir(
        () => [
          tx.constant([
            [1, 2],
            [3, 4],
          ]),
          tx.zeros([2], "s32"),
          tx.arange(1, 7, 2),
          tx.iota([2, 3], 1),
        ],
        [],
      ),
    ).toMatchInlineSnapshot(`
      "func @main() -> (f32[2,2] "out[0]", s32[2] "out[1]", s32[3] "out[2]", s32[2,3] "out[3]") {
        %0: f32[2,2] = constant {dtype=f32, shape=[2,2], value=[1,2,3,4]}
        %1: s32[2] = constant {dtype=s32, shape=[2], value=[0]}
        %2: s32[3] = iota {dim=0, dtype=s32, shape=[3]}
        %3: s32[3] = constant {dtype=s32, shape=[3], value=[2]}
        %4: s32[3] = mul %2, %3
        %5: s32[3] = constant {dtype=s32, shape=[3], value=[1]}
        %6: s32[3] = add %4, %5
        %7: s32[2,3] = iota {dim=1, dtype=s32, shape=[2,3]}
        return %0, %1, %6, %7
      }
      "
    `);
  });
});

describe("reductions", () => {
  it("sum/max/min with axis and keepdims; mean divides by the count", () => {
    expect(
      ir((x: tx.Tensor) => [x.sum(-1), x.max(0, { keepdims: true }), x.min(), x.mean(1)], [f32(2, 3)]),
    ).toMatchInlineSnapshot(`
      "func @main(%0: f32[2,3] "x") -> (f32[2] "out[0]", f32[1,3] "out[1]", f32[] "out[2]", f32[2] "out[3]") {
        %1: f32[2] = reduce_sum %0 {axes=[1]}
        %2: f32[3] = reduce_max %0 {axes=[0]}
        %3: f32[1,3] = reshape %2 {shape=[1,3]}
        %4: f32[] = reduce_min %0 {axes=[0,1]}
        %5: f32[2] = reduce_sum %0 {axes=[1]}
        %6: f32[2] = constant {dtype=f32, shape=[2], value=[3]}
        %7: f32[2] = div %5, %6
        return %1, %3, %4, %7
      }
      "
    `);
  });

  it("sums bf16 in f32 and rounds once", () => {
    expect(ir((x: tx.Tensor) => x.sum(0), [s("bf16", [8])])).toMatchInlineSnapshot(`
      "func @main(%0: bf16[8] "x") -> (bf16[] "out") {
        %1: f32[8] = convert %0 {dtype=f32}
        %2: f32[] = reduce_sum %1 {axes=[0]}
        %3: bf16[] = convert %2 {dtype=bf16}
        return %3
      }
      "
    `);
  });

  it("softmax subtracts the max; logSoftmax uses a finite-guarded logsumexp", () => {
    expect(ir((x: tx.Tensor) => [tx.softmax(x), tx.logSoftmax(x)], [f32(2, 3)])).toMatchInlineSnapshot(`
      "func @main(%0: f32[2,3] "x") -> (f32[2,3] "out[0]", f32[2,3] "out[1]") {
        %1: f32[2] = reduce_max %0 {axes=[1]}
        %2: f32[2,1] = reshape %1 {shape=[2,1]}
        %3: f32[2,1] = constant {dtype=f32, shape=[2,1], value=[-3.3e+38]}
        %4: f32[2,1] = max %2, %3
        %5: f32[2,1] = constant {dtype=f32, shape=[2,1], value=[3.3e+38]}
        %6: f32[2,1] = min %4, %5
        %7: f32[2,1] = stop_gradient %6
        %8: f32[2,3] = broadcast_in_dim %7 {dims=[0,1], shape=[2,3]}
        %9: f32[2,3] = sub %0, %8
        %10: f32[2,3] = exp %9
        %11: f32[2] = reduce_sum %10 {axes=[1]}
        %12: f32[2,1] = reshape %11 {shape=[2,1]}
        %13: f32[2,3] = broadcast_in_dim %12 {dims=[0,1], shape=[2,3]}
        %14: f32[2,3] = div %10, %13
        %15: f32[2] = reduce_max %0 {axes=[1]}
        %16: f32[2,1] = reshape %15 {shape=[2,1]}
        %17: f32[2,1] = constant {dtype=f32, shape=[2,1], value=[-3.3e+38]}
        %18: f32[2,1] = max %16, %17
        %19: f32[2,1] = constant {dtype=f32, shape=[2,1], value=[3.3e+38]}
        %20: f32[2,1] = min %18, %19
        %21: f32[2,1] = stop_gradient %20
        %22: f32[2,3] = broadcast_in_dim %21 {dims=[0,1], shape=[2,3]}
        %23: f32[2,3] = sub %0, %22
        %24: f32[2,3] = exp %23
        %25: f32[2] = reduce_sum %24 {axes=[1]}
        %26: f32[2,1] = reshape %25 {shape=[2,1]}
        %27: f32[2,1] = log %26
        %28: f32[2,1] = add %27, %21
        %29: f32[2,3] = broadcast_in_dim %28 {dims=[0,1], shape=[2,3]}
        %30: f32[2,3] = sub %0, %29
        return %14, %30
      }
      "
    `);
  });
});

describe("contractions", () => {
  it("matmul with 2-D weights contracts without broadcasting the batch", () => {
    expect(ir((x: tx.Tensor, w: tx.Tensor) => x.matmul(w), [f32(2, 5, 3), f32(3, 4)])).toMatchInlineSnapshot(`
      "func @main(%0: f32[2,5,3] "x", %1: f32[3,4] "w") -> (f32[2,5,4] "out") {
        %2: f32[2,5,4] = dot_general %0, %1 {lhsBatch=[], lhsContract=[2], outDtype=f32, rhsBatch=[], rhsContract=[0]}
        return %2
      }
      "
    `);
  });

  it("matmul broadcasts batch dims and drops vector dims", () => {
    expect(
      ir(
        (a: tx.Tensor, b: tx.Tensor, v: tx.Tensor) => [tx.matmul(a, b), tx.matmul(a, v)],
        [f32(2, 1, 3, 4), f32(5, 4, 6), f32(4)],
      ),
    ).toMatchInlineSnapshot(`
      "func @main(%0: f32[2,1,3,4] "a", %1: f32[5,4,6] "b", %2: f32[4] "v") -> (f32[2,5,3,6] "out[0]", f32[2,1,3] "out[1]") {
        %3: f32[2,5,3,4] = broadcast_in_dim %0 {dims=[0,1,2,3], shape=[2,5,3,4]}
        %4: f32[2,5,4,6] = broadcast_in_dim %1 {dims=[1,2,3], shape=[2,5,4,6]}
        %5: f32[2,5,3,6] = dot_general %3, %4 {lhsBatch=[0,1], lhsContract=[3], outDtype=f32, rhsBatch=[0,1], rhsContract=[2]}
        %6: f32[4,1] = reshape %2 {shape=[4,1]}
        %7: f32[2,1,3,1] = dot_general %0, %6 {lhsBatch=[], lhsContract=[3], outDtype=f32, rhsBatch=[], rhsContract=[0]}
        %8: f32[2,1,3] = reshape %7 {shape=[2,1,3]}
        return %5, %8
      }
      "
    `);
  });

  it("einsum maps shared output labels to batch dims and transposes to the output order", () => {
    expect(
      ir((q: tx.Tensor, k: tx.Tensor) => tx.einsum("bqhd,bkhd->bhqk", q, k), [f32(2, 5, 4, 8), f32(2, 7, 4, 8)]),
    ).toMatchInlineSnapshot(`
      "func @main(%0: f32[2,5,4,8] "q", %1: f32[2,7,4,8] "k") -> (f32[2,4,5,7] "out") {
        %2: f32[2,4,5,7] = dot_general %0, %1 {lhsBatch=[0,2], lhsContract=[3], outDtype=f32, rhsBatch=[0,2], rhsContract=[3]}
        return %2
      }
      "
    `);
  });
});

describe("indexing", () => {
  it("take on axis 0 is one gather; takeAlongAxis and oneHot", () => {
    expect(
      ir(
        (t: tx.Tensor, ids: tx.Tensor) => [
          tx.take(t, ids),
          tx.takeAlongAxis(t.slice([0, 2]), ids.reshape([2, 1]), 1),
          tx.oneHot(ids, 3),
        ],
        [f32(4, 3), s("s32", [2])],
      ),
    ).toMatchInlineSnapshot(`
      "func @main(%0: f32[4,3] "t", %1: s32[2] "ids") -> (f32[2,3] "out[0]", f32[2,1] "out[1]", f32[2,3] "out[2]") {
        %2: f32[2,3] = gather %0, %1
        %3: f32[2,3] = slice %0 {limit=[2,3], start=[0,0], stride=[1,1]}
        %4: s32[2,1] = reshape %1 {shape=[2,1]}
        %5: f32[2,1] = take_along_axis %3, %4 {axis=1}
        %6: s32[2,3] = iota {dim=1, dtype=s32, shape=[2,3]}
        %7: s32[2,1] = reshape %1 {shape=[2,1]}
        %8: s32[2,3] = broadcast_in_dim %7 {dims=[0,1], shape=[2,3]}
        %9: bool[2,3] = compare %8, %6 {dir=eq}
        %10: f32[2,3] = convert %9 {dtype=f32}
        return %2, %5, %10
      }
      "
    `);
  });

  it("dynamicSlice and dynamicUpdateSlice take one start per dim, numbers as s32 constants", () => {
    expect(
      ir(
        (x: tx.Tensor, i: tx.Tensor) => tx.dynamicUpdateSlice(x, tx.dynamicSlice(x, [i, 0], [1, 3]), [0, 0]),
        [f32(4, 3), s("s32", [])],
      ),
    ).toMatchInlineSnapshot(`
      "func @main(%0: f32[4,3] "x", %1: s32[] "i") -> (f32[4,3] "out") {
        %2: s32[] = constant {dtype=s32, shape=[], value=[0]}
        %3: f32[1,3] = dynamic_slice %0, %1, %2 {sizes=[1,3]}
        %4: s32[] = constant {dtype=s32, shape=[], value=[0]}
        %5: s32[] = constant {dtype=s32, shape=[], value=[0]}
        %6: f32[4,3] = dynamic_update_slice %0, %3, %4, %5
        return %6
      }
      "
    `);
  });
});

describe("integer, bitwise and logical ops", () => {
  it("bitwise and shift ops on u32, logical ops on bool, bitcast and scatterAdd", () => {
    expect(
      ir(
        (u: tx.Tensor, m: tx.Tensor, t: tx.Tensor, ids: tx.Tensor) => [
          tx.bitwiseOr(tx.shiftLeft(u, 3), tx.shiftRightLogical(u, 29)),
          tx.bitwiseXor(tx.bitwiseAnd(u, 0xff), tx.bitwiseNot(u)),
          tx.logicalOr(tx.logicalAnd(m, tx.logicalNot(m)), 1),
          tx.bitcast(t, "u32"),
          tx.scatterAdd(t, ids, tx.ones([2, 3])),
        ],
        [s("u32", [2]), s("bool", [2]), f32(4, 3), s("s32", [2])],
      ),
    ).toMatchInlineSnapshot(`
      "func @main(%0: u32[2] "u", %1: bool[2] "m", %2: f32[4,3] "t", %3: s32[2] "ids") -> (u32[2] "out[0]", u32[2] "out[1]", bool[2] "out[2]", u32[4,3] "out[3]", f32[4,3] "out[4]") {
        %4: u32[2] = constant {dtype=u32, shape=[2], value=[3]}
        %5: u32[2] = shift_left %0, %4
        %6: u32[2] = constant {dtype=u32, shape=[2], value=[29]}
        %7: u32[2] = shift_right_logical %0, %6
        %8: u32[2] = or %5, %7
        %9: u32[2] = constant {dtype=u32, shape=[2], value=[255]}
        %10: u32[2] = and %0, %9
        %11: u32[2] = not %0
        %12: u32[2] = xor %10, %11
        %13: bool[2] = not %1
        %14: bool[2] = and %1, %13
        %15: bool[2] = constant {dtype=bool, shape=[2], value=[1]}
        %16: bool[2] = or %14, %15
        %17: u32[4,3] = bitcast_convert %2 {dtype=u32}
        %18: f32[2,3] = constant {dtype=f32, shape=[2,3], value=[1]}
        %19: f32[4,3] = scatter_add %2, %3, %18
        return %8, %12, %16, %17, %19
      }
      "
    `);
  });

  it("dotGeneral passes dims through (negative dims count from the end) with an explicit result dtype", () => {
    expect(
      ir(
        (a: tx.Tensor, b: tx.Tensor) =>
          tx.dotGeneral(a, b, { lhsBatch: [0], rhsBatch: [0], lhsContract: [-1], rhsContract: [1], outDtype: "f32" }),
        [s("bf16", [2, 3, 4]), s("bf16", [2, 4, 5])],
      ),
    ).toMatchInlineSnapshot(`
      "func @main(%0: bf16[2,3,4] "a", %1: bf16[2,4,5] "b") -> (f32[2,3,5] "out") {
        %2: f32[2,3,5] = dot_general %0, %1 {lhsBatch=[0], lhsContract=[2], outDtype=f32, rhsBatch=[0], rhsContract=[1]}
        return %2
      }
      "
    `);
  });
});

describe("promotion", () => {
  it("numbers alone make f32; 0 and 1 adopt bool; integers adopt s32", () => {
    expect(
      ir(
        (m: tx.Tensor, i: tx.Tensor) => [tx.add(1, 2), tx.where(m, 1, 0).astype("f32"), tx.eq(m, 1), i.mul(3)],
        [s("bool", [2]), s("s32", [2])],
      ),
    ).toMatchInlineSnapshot(`
      "func @main(%0: bool[2] "m", %1: s32[2] "i") -> (f32[] "out[0]", f32[2] "out[1]", bool[2] "out[2]", s32[2] "out[3]") {
        %2: f32[] = constant {dtype=f32, shape=[], value=[1]}
        %3: f32[] = constant {dtype=f32, shape=[], value=[2]}
        %4: f32[] = add %2, %3
        %5: f32[] = constant {dtype=f32, shape=[], value=[1]}
        %6: f32[] = constant {dtype=f32, shape=[], value=[0]}
        %7: f32[2] = broadcast_in_dim %5 {dims=[], shape=[2]}
        %8: f32[2] = broadcast_in_dim %6 {dims=[], shape=[2]}
        %9: f32[2] = select %0, %7, %8
        %10: bool[2] = constant {dtype=bool, shape=[2], value=[1]}
        %11: bool[2] = compare %0, %10 {dir=eq}
        %12: s32[2] = constant {dtype=s32, shape=[2], value=[3]}
        %13: s32[2] = mul %1, %12
        return %4, %9, %11, %13
      }
      "
    `);
  });
});
