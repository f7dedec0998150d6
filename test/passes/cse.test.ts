// CSE golden tests: identical ops merge (transitively, inside bodies, scans by structure); barriers never do.
import { describe, it } from "vitest";
import { cse } from "../../src/passes/cse.ts";
import { expectPass, expectUnchanged, ir } from "./golden.ts";

describe("cse", () => {
  it("merges identical ops, keeping the first one's location, and then their now-identical users", () => {
    expectPass(
      cse,
      ir`
        func @main(%0: f32[2], %1: f32[2]) -> (f32[2]) {
          %2: f32[2] = add %0, %1 loc("a.ts":1:1)
          %3: f32[2] = add %0, %1 loc("a.ts":2:1)
          %4: f32[2] = exp %2
          %5: f32[2] = exp %3
          %6: f32[2] = mul %4, %5
          return %6
        }`,
      ir`
        func @main(%0: f32[2], %1: f32[2]) -> (f32[2]) {
          %2: f32[2] = add %0, %1 loc("a.ts":1:1)
          %3: f32[2] = exp %2
          %4: f32[2] = mul %3, %3
          return %4
        }`,
    );
  });

  it("keeps ops apart that differ in params or operand order; tells 0 from -0 but merges NaN with NaN", () => {
    expectPass(
      cse,
      ir`
        func @main(%0: f32[2], %1: f32[2]) -> (bool[2], bool[2], f32[2], f32[2], f32[], f32[], f32[], f32[]) {
          %2: bool[2] = compare %0, %1 {dir=eq}
          %3: bool[2] = compare %0, %1 {dir=lt}
          %4: f32[2] = sub %0, %1
          %5: f32[2] = sub %1, %0
          %6: f32[] = constant {dtype=f32, shape=[], value=[0]}
          %7: f32[] = constant {dtype=f32, shape=[], value=[-0]}
          %8: f32[] = constant {dtype=f32, shape=[], value=[nan]}
          %9: f32[] = constant {dtype=f32, shape=[], value=[nan]}
          return %2, %3, %4, %5, %6, %7, %8, %9
        }`,
      ir`
        func @main(%0: f32[2], %1: f32[2]) -> (bool[2], bool[2], f32[2], f32[2], f32[], f32[], f32[], f32[]) {
          %2: bool[2] = compare %0, %1 {dir=eq}
          %3: bool[2] = compare %0, %1 {dir=lt}
          %4: f32[2] = sub %0, %1
          %5: f32[2] = sub %1, %0
          %6: f32[] = constant {dtype=f32, shape=[], value=[0]}
          %7: f32[] = constant {dtype=f32, shape=[], value=[-0]}
          %8: f32[] = constant {dtype=f32, shape=[], value=[nan]}
          return %2, %3, %4, %5, %6, %7, %8, %8
        }`,
    );
  });

  it("never merges optimization_barrier ops", () => {
    expectUnchanged(
      cse,
      ir`
        func @main(%0: f32[2]) -> (f32[2], f32[2]) {
          %1: f32[2] = optimization_barrier %0
          %2: f32[2] = optimization_barrier %0
          return %1, %2
        }`,
    );
  });

  it("merges scans whose bodies are structurally equal, not those whose bodies differ", () => {
    expectPass(
      cse,
      ir`
        func @main(%0: f32[2], %1: f32[3,2]) -> (f32[3,2], f32[3,2], f32[3,2]) {
          %2: f32[2], %3: f32[3,2] = scan %0, %1 {length=3, numCarry=1, numConsts=0, reverse=false} body (%4: f32[2], %5: f32[2]) -> (f32[2], f32[2]) {
            %6: f32[2] = mul %4, %5
            return %6, %4
          }
          %7: f32[2], %8: f32[3,2] = scan %0, %1 {length=3, numCarry=1, numConsts=0, reverse=false} body (%9: f32[2] "h", %10: f32[2]) -> (f32[2], f32[2]) {
            %11: f32[2] = mul %9, %10
            return %11, %9
          }
          %12: f32[2], %13: f32[3,2] = scan %0, %1 {length=3, numCarry=1, numConsts=0, reverse=false} body (%14: f32[2], %15: f32[2]) -> (f32[2], f32[2]) {
            %16: f32[2] = mul %14, %15
            return %16, %16
          }
          return %3, %8, %13
        }`,
      ir`
        func @main(%0: f32[2], %1: f32[3,2]) -> (f32[3,2], f32[3,2], f32[3,2]) {
          %2: f32[2], %3: f32[3,2] = scan %0, %1 {length=3, numCarry=1, numConsts=0, reverse=false} body (%4: f32[2], %5: f32[2]) -> (f32[2], f32[2]) {
            %6: f32[2] = mul %4, %5
            return %6, %4
          }
          %7: f32[2], %8: f32[3,2] = scan %0, %1 {length=3, numCarry=1, numConsts=0, reverse=false} body (%9: f32[2], %10: f32[2]) -> (f32[2], f32[2]) {
            %11: f32[2] = mul %9, %10
            return %11, %11
          }
          return %3, %3, %8
        }`,
    );
  });

  it("merges duplicates inside a scan body", () => {
    expectPass(
      cse,
      ir`
        func @main(%0: f32[2], %1: f32[3,2]) -> (f32[2]) {
          %2: f32[2] = scan %0, %1 {length=3, numCarry=1, numConsts=0, reverse=false} body (%3: f32[2], %4: f32[2]) -> (f32[2]) {
            %5: f32[2] = exp %4
            %6: f32[2] = exp %4
            %7: f32[2] = add %5, %6
            return %7
          }
          return %2
        }`,
      ir`
        func @main(%0: f32[2], %1: f32[3,2]) -> (f32[2]) {
          %2: f32[2] = scan %0, %1 {length=3, numCarry=1, numConsts=0, reverse=false} body (%3: f32[2], %4: f32[2]) -> (f32[2]) {
            %5: f32[2] = exp %4
            %6: f32[2] = add %5, %5
            return %6
          }
          return %2
        }`,
    );
  });
});
