// Constant folding golden tests: small all-constant ops become constants rounded like the op's dtype.
import { describe, it } from "vitest";
import { constantFold } from "../../src/passes/constant_fold.ts";
import { expectPass, expectUnchanged, ir } from "./golden.ts";

describe("constant-fold", () => {
  it("folds an op whose operands are constants, keeping its location; the operands are left for DCE", () => {
    expectPass(
      constantFold,
      ir`
        func @main() -> (f32[2]) {
          %0: f32[2] = constant {dtype=f32, shape=[2], value=[1,2]}
          %1: f32[2] = constant {dtype=f32, shape=[2], value=[0.5]}
          %2: f32[2] = add %0, %1 loc("m.ts":4:2)
          return %2
        }`,
      ir`
        func @main() -> (f32[2]) {
          %0: f32[2] = constant {dtype=f32, shape=[2], value=[1,2]}
          %1: f32[2] = constant {dtype=f32, shape=[2], value=[0.5]}
          %2: f32[2] = constant {dtype=f32, shape=[2], value=[1.5,2.5]} loc("m.ts":4:2)
          return %2
        }`,
    );
  });

  it("rounds like the result dtype: f32 and bf16 sums, s32 wraparound; chains fold in one pass", () => {
    expectPass(
      constantFold,
      ir`
        func @main() -> (f32[], bf16[], s32[], f32[]) {
          %0: f32[] = constant {dtype=f32, shape=[], value=[0.1]}
          %1: f32[] = constant {dtype=f32, shape=[], value=[0.2]}
          %2: f32[] = add %0, %1
          %3: bf16[] = constant {dtype=bf16, shape=[], value=[1]}
          %4: bf16[] = constant {dtype=bf16, shape=[], value=[0.01]}
          %5: bf16[] = add %3, %4
          %6: s32[] = constant {dtype=s32, shape=[], value=[2147483647]}
          %7: s32[] = constant {dtype=s32, shape=[], value=[1]}
          %8: s32[] = add %6, %7
          %9: f32[] = convert %8 {dtype=f32}
          return %2, %5, %8, %9
        }`,
      ir`
        func @main() -> (f32[], bf16[], s32[], f32[]) {
          %0: f32[] = constant {dtype=f32, shape=[], value=[0.1]}
          %1: f32[] = constant {dtype=f32, shape=[], value=[0.2]}
          %2: f32[] = constant {dtype=f32, shape=[], value=[0.30000001192092896]}
          %3: bf16[] = constant {dtype=bf16, shape=[], value=[1]}
          %4: bf16[] = constant {dtype=bf16, shape=[], value=[0.01]}
          %5: bf16[] = constant {dtype=bf16, shape=[], value=[1.0078125]}
          %6: s32[] = constant {dtype=s32, shape=[], value=[2147483647]}
          %7: s32[] = constant {dtype=s32, shape=[], value=[1]}
          %8: s32[] = constant {dtype=s32, shape=[], value=[-2147483648]}
          %9: f32[] = constant {dtype=f32, shape=[], value=[-2147483648]}
          return %2, %5, %8, %9
        }`,
    );
  });

  it("writes uniform results as splats; moves of a splat fold at any size, other large results do not", () => {
    expectPass(
      constantFold,
      ir`
        func @main() -> (f32[4], f32[64,64], f32[2,1024]) {
          %0: f32[4] = constant {dtype=f32, shape=[4], value=[1,1,1,1]}
          %1: f32[4] = constant {dtype=f32, shape=[4], value=[2]}
          %2: f32[4] = mul %0, %1
          %3: f32[] = constant {dtype=f32, shape=[], value=[0]}
          %4: f32[64,64] = broadcast_in_dim %3 {dims=[], shape=[64,64]}
          %5: f32[2] = constant {dtype=f32, shape=[2], value=[1,2]}
          %6: f32[2,1024] = broadcast_in_dim %5 {dims=[0], shape=[2,1024]}
          return %2, %4, %6
        }`,
      ir`
        func @main() -> (f32[4], f32[64,64], f32[2,1024]) {
          %0: f32[4] = constant {dtype=f32, shape=[4], value=[1,1,1,1]}
          %1: f32[4] = constant {dtype=f32, shape=[4], value=[2]}
          %2: f32[4] = constant {dtype=f32, shape=[4], value=[2]}
          %3: f32[] = constant {dtype=f32, shape=[], value=[0]}
          %4: f32[64,64] = constant {dtype=f32, shape=[64,64], value=[0]}
          %5: f32[2] = constant {dtype=f32, shape=[2], value=[1,2]}
          %6: f32[2,1024] = broadcast_in_dim %5 {dims=[0], shape=[2,1024]}
          return %2, %4, %6
        }`,
    );
  });

  it("leaves ops with a non-constant operand, iota and optimization_barrier alone", () => {
    expectUnchanged(
      constantFold,
      ir`
        func @main(%0: f32[2]) -> (f32[2], s32[3], f32[2]) {
          %1: f32[2] = constant {dtype=f32, shape=[2], value=[1]}
          %2: f32[2] = add %0, %1
          %3: s32[3] = iota {dim=0, dtype=s32, shape=[3]}
          %4: f32[2] = optimization_barrier %1
          return %2, %3, %4
        }`,
    );
  });

  it("folds inside scan bodies", () => {
    expectPass(
      constantFold,
      ir`
        func @main(%0: f32[], %1: f32[3]) -> (f32[]) {
          %2: f32[] = scan %0, %1 {length=3, numCarry=1, numConsts=0, reverse=false} body (%3: f32[], %4: f32[]) -> (f32[]) {
            %5: f32[] = constant {dtype=f32, shape=[], value=[4]}
            %6: f32[] = sqrt %5
            %7: f32[] = mul %3, %6
            return %7
          }
          return %2
        }`,
      ir`
        func @main(%0: f32[], %1: f32[3]) -> (f32[]) {
          %2: f32[] = scan %0, %1 {length=3, numCarry=1, numConsts=0, reverse=false} body (%3: f32[], %4: f32[]) -> (f32[]) {
            %5: f32[] = constant {dtype=f32, shape=[], value=[4]}
            %6: f32[] = constant {dtype=f32, shape=[], value=[2]}
            %7: f32[] = mul %3, %6
            return %7
          }
          return %2
        }`,
    );
  });
});
