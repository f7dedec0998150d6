// DCE golden tests: dead ops go, graph outputs stay, scans lose unused ys, consts and xs.
import { describe, it } from "vitest";
import { dce } from "../../src/passes/dce.ts";
import { expectPass, expectUnchanged, ir } from "./golden.ts";

describe("dce", () => {
  it("drops ops whose results are unused", () => {
    expectPass(
      dce,
      ir`
        func @main(%0: f32[2], %1: f32[2]) -> (f32[2]) {
          %2: f32[2] = exp %0
          %3: f32[2] = mul %2, %1
          %4: f32[2] = add %0, %1 loc("model.ts":3:5)
          return %4
        }`,
      ir`
        func @main(%0: f32[2], %1: f32[2]) -> (f32[2]) {
          %2: f32[2] = add %0, %1 loc("model.ts":3:5)
          return %2
        }`,
    );
  });

  it("keeps graph outputs, even inputs returned as is, and returns the same graph when nothing is dead", () => {
    expectUnchanged(
      dce,
      ir`
        func @main(%0: f32[2] "x", %1: s32[] "unused") -> (f32[2] "y", f32[2] "z") {
          %2: f32[2] = neg %0
          return %0, %2
        }`,
    );
  });

  it("keeps a whole optimization_barrier when one of its results is used", () => {
    expectPass(
      dce,
      ir`
        func @main(%0: f32[2], %1: f32[2]) -> (f32[2]) {
          %2: f32[2], %3: f32[2] = optimization_barrier %0, %1
          %4: f32[2] = exp %3
          return %2
        }`,
      ir`
        func @main(%0: f32[2], %1: f32[2]) -> (f32[2]) {
          %2: f32[2], %3: f32[2] = optimization_barrier %0, %1
          return %2
        }`,
    );
  });

  const scan = (outputs: string) => ir`
    func @main(%0: f32[2], %1: f32[2], %2: f32[2], %3: f32[4,2], %4: f32[4,2]) -> (${outputs}) {
      %5: f32[2], %6: f32[4,2], %7: f32[4,2] = scan %0, %1, %2, %3, %4 {length=4, numCarry=1, numConsts=2, reverse=false} body (%8: f32[2], %9: f32[2], %10: f32[2], %11: f32[2], %12: f32[2]) -> (f32[2], f32[2], f32[2]) {
        %13: f32[2] = add %10, %8
        %14: f32[2] = mul %11, %10
        %15: f32[2] = exp %9
        %16: f32[2] = sin %12
        return %13, %14, %16
      }
      return ${outputs.includes(",") ? "%5, %7" : "%5"}
    }`;

  it("scan: drops unused ys, then dead body ops, then consts and xs the body no longer reads", () => {
    expectPass(
      dce,
      scan("f32[2], f32[4,2]"),
      ir`
        func @main(%0: f32[2], %1: f32[2], %2: f32[2], %3: f32[4,2], %4: f32[4,2]) -> (f32[2], f32[4,2]) {
          %5: f32[2], %6: f32[4,2] = scan %0, %2, %4 {length=4, numCarry=1, numConsts=1, reverse=false} body (%7: f32[2], %8: f32[2], %9: f32[2]) -> (f32[2], f32[2]) {
            %10: f32[2] = add %8, %7
            %11: f32[2] = sin %9
            return %10, %11
          }
          return %5, %6
        }`,
    );
  });

  it("scan: keeps the carry when only the final carry is used, even with no xs left", () => {
    expectPass(
      dce,
      scan("f32[2]"),
      ir`
        func @main(%0: f32[2], %1: f32[2], %2: f32[2], %3: f32[4,2], %4: f32[4,2]) -> (f32[2]) {
          %5: f32[2] = scan %0, %2 {length=4, numCarry=1, numConsts=1, reverse=false} body (%6: f32[2], %7: f32[2]) -> (f32[2]) {
            %8: f32[2] = add %7, %6
            return %8
          }
          return %5
        }`,
    );
  });

  it("drops a scan none of whose results is used", () => {
    expectPass(
      dce,
      ir`
        func @main(%0: f32[2], %1: f32[3,2]) -> (f32[2]) {
          %2: f32[2], %3: f32[3,2] = scan %0, %1 {length=3, numCarry=1, numConsts=0, reverse=true} body (%4: f32[2], %5: f32[2]) -> (f32[2], f32[2]) {
            %6: f32[2] = add %4, %5
            return %6, %6
          }
          return %0
        }`,
      ir`
        func @main(%0: f32[2], %1: f32[3,2]) -> (f32[2]) {
          return %0
        }`,
    );
  });
});
