// Simplify golden tests: each algebraic identity, splat detection through broadcasts, and what must not fold.
import { describe, it } from "vitest";
import { simplify } from "../../src/passes/simplify.ts";
import { expectPass, expectUnchanged, ir } from "./golden.ts";

describe("simplify", () => {
  it("x+0, 0+x, x-0, x*1, 1*x, x/1 with splat constants and broadcasts of them", () => {
    expectPass(
      simplify,
      ir`
        func @main(%0: f32[2,3]) -> (f32[2,3]) {
          %1: f32[] = constant {dtype=f32, shape=[], value=[0]}
          %2: f32[2,3] = broadcast_in_dim %1 {dims=[], shape=[2,3]}
          %3: f32[2,3] = constant {dtype=f32, shape=[2,3], value=[1]}
          %4: f32[2,3] = add %0, %2
          %5: f32[2,3] = add %2, %4
          %6: f32[2,3] = sub %5, %2
          %7: f32[2,3] = mul %6, %3
          %8: f32[2,3] = mul %3, %7
          %9: f32[2,3] = div %8, %3
          return %9
        }`,
      ir`
        func @main(%0: f32[2,3]) -> (f32[2,3]) {
          %1: f32[] = constant {dtype=f32, shape=[], value=[0]}
          %2: f32[2,3] = broadcast_in_dim %1 {dims=[], shape=[2,3]}
          %3: f32[2,3] = constant {dtype=f32, shape=[2,3], value=[1]}
          return %0
        }`,
    );
  });

  it("keeps 0-x and x+c for non-uniform c; x*0 stays for floats (NaN, inf) but folds for integers", () => {
    expectPass(
      simplify,
      ir`
        func @main(%0: f32[2], %1: s32[2]) -> (f32[2], f32[2], f32[2], s32[2]) {
          %2: f32[2] = constant {dtype=f32, shape=[2], value=[0]}
          %3: f32[2] = constant {dtype=f32, shape=[2], value=[1,0]}
          %4: f32[2] = sub %2, %0
          %5: f32[2] = add %0, %3
          %6: f32[2] = mul %0, %2
          %7: s32[2] = constant {dtype=s32, shape=[2], value=[0]}
          %8: s32[2] = mul %7, %1 loc("m.ts":9:1)
          return %4, %5, %6, %8
        }`,
      ir`
        func @main(%0: f32[2], %1: s32[2]) -> (f32[2], f32[2], f32[2], s32[2]) {
          %2: f32[2] = constant {dtype=f32, shape=[2], value=[0]}
          %3: f32[2] = constant {dtype=f32, shape=[2], value=[1,0]}
          %4: f32[2] = sub %2, %0
          %5: f32[2] = add %0, %3
          %6: f32[2] = mul %0, %2
          %7: s32[2] = constant {dtype=s32, shape=[2], value=[0]}
          %8: s32[2] = constant {dtype=s32, shape=[2], value=[0]} loc("m.ts":9:1)
          return %4, %5, %6, %8
        }`,
    );
  });

  it("neg(neg x) and no-op convert, reshape, transpose, broadcast_in_dim, slice", () => {
    expectPass(
      simplify,
      ir`
        func @main(%0: f32[2,3]) -> (f32[2,3], f32[2,3], f32[2,3], f32[2,3], f32[2,3], f32[2,3]) {
          %1: f32[2,3] = neg %0
          %2: f32[2,3] = neg %1
          %3: f32[2,3] = convert %0 {dtype=f32}
          %4: f32[2,3] = reshape %0 {shape=[2,3]}
          %5: f32[2,3] = transpose %0 {perm=[0,1]}
          %6: f32[2,3] = broadcast_in_dim %0 {dims=[0,1], shape=[2,3]}
          %7: f32[2,3] = slice %0 {limit=[2,3], start=[0,0], stride=[1,1]}
          return %2, %3, %4, %5, %6, %7
        }`,
      ir`
        func @main(%0: f32[2,3]) -> (f32[2,3], f32[2,3], f32[2,3], f32[2,3], f32[2,3], f32[2,3]) {
          %1: f32[2,3] = neg %0
          return %0, %0, %0, %0, %0, %0
        }`,
    );
  });

  it("reshape of reshape and transpose of transpose collapse into one op (or none when they cancel)", () => {
    expectPass(
      simplify,
      ir`
        func @main(%0: f32[2,3,4]) -> (f32[4,6], f32[2,3,4], f32[3,4,2], f32[2,3,4]) {
          %1: f32[6,4] = reshape %0 {shape=[6,4]}
          %2: f32[4,6] = reshape %1 {shape=[4,6]} loc("m.ts":2:1)
          %3: f32[24] = reshape %0 {shape=[24]}
          %4: f32[2,3,4] = reshape %3 {shape=[2,3,4]}
          %5: f32[4,2,3] = transpose %0 {perm=[2,0,1]}
          %6: f32[3,4,2] = transpose %5 {perm=[2,0,1]}
          %7: f32[2,3,4] = transpose %5 {perm=[1,2,0]}
          return %2, %4, %6, %7
        }`,
      ir`
        func @main(%0: f32[2,3,4]) -> (f32[4,6], f32[2,3,4], f32[3,4,2], f32[2,3,4]) {
          %1: f32[6,4] = reshape %0 {shape=[6,4]}
          %2: f32[4,6] = reshape %0 {shape=[4,6]} loc("m.ts":2:1)
          %3: f32[24] = reshape %0 {shape=[24]}
          %4: f32[4,2,3] = transpose %0 {perm=[2,0,1]}
          %5: f32[3,4,2] = transpose %0 {perm=[1,2,0]}
          return %2, %0, %5, %0
        }`,
    );
  });

  it("select with a constant predicate, or with both branches the same value", () => {
    expectPass(
      simplify,
      ir`
        func @main(%0: f32[2], %1: f32[2], %2: bool[2]) -> (f32[2], f32[2], f32[2]) {
          %3: bool[] = constant {dtype=bool, shape=[], value=[1]}
          %4: bool[2] = broadcast_in_dim %3 {dims=[], shape=[2]}
          %5: bool[2] = constant {dtype=bool, shape=[2], value=[0]}
          %6: f32[2] = select %4, %0, %1
          %7: f32[2] = select %5, %0, %1
          %8: f32[2] = select %2, %1, %1
          return %6, %7, %8
        }`,
      ir`
        func @main(%0: f32[2], %1: f32[2], %2: bool[2]) -> (f32[2], f32[2], f32[2]) {
          %3: bool[] = constant {dtype=bool, shape=[], value=[1]}
          %4: bool[2] = broadcast_in_dim %3 {dims=[], shape=[2]}
          %5: bool[2] = constant {dtype=bool, shape=[2], value=[0]}
          return %0, %1, %1
        }`,
    );
  });

  it("simplifies inside scan bodies; returns the same graph when nothing applies", () => {
    expectPass(
      simplify,
      ir`
        func @main(%0: f32[], %1: f32[3]) -> (f32[]) {
          %2: f32[] = scan %0, %1 {length=3, numCarry=1, numConsts=0, reverse=false} body (%3: f32[], %4: f32[]) -> (f32[]) {
            %5: f32[] = constant {dtype=f32, shape=[], value=[1]}
            %6: f32[] = mul %4, %5
            %7: f32[] = add %3, %6
            return %7
          }
          return %2
        }`,
      ir`
        func @main(%0: f32[], %1: f32[3]) -> (f32[]) {
          %2: f32[] = scan %0, %1 {length=3, numCarry=1, numConsts=0, reverse=false} body (%3: f32[], %4: f32[]) -> (f32[]) {
            %5: f32[] = constant {dtype=f32, shape=[], value=[1]}
            %6: f32[] = add %3, %4
            return %6
          }
          return %2
        }`,
    );
    expectUnchanged(
      simplify,
      ir`
        func @main(%0: f32[2]) -> (f32[2]) {
          %1: f32[2] = exp %0
          return %1
        }`,
    );
  });
});
