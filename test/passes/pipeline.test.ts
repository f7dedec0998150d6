// Pass manager and pipeline: passes by name, unknown names, dump-after, verifier failures naming the pass.
import { describe, expect, it } from "vitest";
import { GraphBuilder, Value, type Graph } from "../../src/ir/graph.ts";
import { interpret } from "../../src/ir/interpret.ts";
import { parse } from "../../src/ir/parse.ts";
import { print } from "../../src/ir/print.ts";
import { valueAndGrad } from "../../src/passes/autodiff.ts";
import { PassError, runPasses } from "../../src/passes/manager.ts";
import type { Pass } from "../../src/passes/pass.ts";
import {
  CLEANUP_PIPELINE,
  PASS_NAMES,
  checkPassName,
  defaultPipeline,
  pipelineByName,
  pipelineText,
} from "../../src/passes/pipeline.ts";
import { makeGraph } from "../../src/passes/rewrite.ts";
import { arr, f32, randomArray, rng } from "./gradcheck.ts";
import { ir } from "./golden.ts";

const sumOfSquares = ir`
  func @main(%0: f32[3] "x") -> (f32[] "loss") {
    %1: f32[3] = mul %0, %0
    %2: f32[] = reduce_sum %1 {axes=[0]}
    return %2
  }`;

describe("pipeline", () => {
  it("lists the passes in order; autodiff comes first when wrt is given", () => {
    expect(PASS_NAMES).toEqual(["autodiff", "constant-fold", "simplify", "cse", "dce", "inline-checkpoints"]);
    expect(pipelineText(CLEANUP_PIPELINE)).toBe("constant-fold,simplify,cse,dce,inline-checkpoints");
    expect(pipelineText(defaultPipeline({ wrt: [0] }))).toBe(
      "autodiff,constant-fold,simplify,cse,dce,inline-checkpoints",
    );
  });

  it("builds a pipeline from its textual form", () => {
    expect(pipelineText(pipelineByName("simplify, cse,dce"))).toBe("simplify,cse,dce");
    expect(pipelineText(pipelineByName("autodiff,dce", { wrt: [0] }))).toBe("autodiff,dce");
  });

  it("rejects unknown pass names, listing the valid ones", () => {
    const valid = "valid passes are: autodiff, constant-fold, simplify, cse, dce, inline-checkpoints";
    expect(() => pipelineByName("simplify,fold")).toThrow(`unknown pass 'fold'; ${valid}`);
    expect(() => checkPassName("dead-code")).toThrow(`unknown pass 'dead-code'; ${valid}`);
    expect(() => checkPassName("cse")).not.toThrow();
    expect(() => pipelineByName("cse,,dce")).toThrow("pipeline 'cse,,dce' has an empty pass name");
    expect(() => pipelineByName("autodiff")).toThrow("pass 'autodiff' needs the inputs to differentiate (wrt)");
  });

  it("the full pipeline turns d/dx sum(x*x) into x + x", () => {
    const out = runPasses(parse(sumOfSquares), defaultPipeline({ wrt: [0] }));
    expect(print(out)).toBe(ir`
      func @main(%0: f32[3] "x") -> (f32[] "loss", f32[3] "grad.x") {
        %1: f32[3] = mul %0, %0
        %2: f32[] = reduce_sum %1 {axes=[0]}
        %3: f32[3] = add %0, %0
        return %2, %3
      }`);
  });

  it("cleanup keeps the values of a gradient graph and removes ops (LoRA layer with a frozen weight)", () => {
    const mm = { lhsBatch: [], rhsBatch: [], lhsContract: [1], rhsContract: [0], outDtype: "f32" } as const;
    const b = new GraphBuilder();
    const [x, w, a, bb] = [f32(3, 8), f32(8, 6), f32(8, 2), f32(2, 6)].map((t) => b.input(t));
    const y = b.add1(
      "add",
      [b.add1("dot_general", [x!, w!], mm), b.add1("dot_general", [b.add1("dot_general", [x!, a!], mm), bb!], mm)],
      {},
    );
    const loss = b.add1("reduce_sum", [b.add1("logistic", [y], {})], { axes: [0, 1] });
    const grad = valueAndGrad(b.build([loss]), [2, 3]);
    const cleaned = runPasses(grad, CLEANUP_PIPELINE);
    expect(cleaned.ops.length).toBeLessThan(grad.ops.length);
    const r = rng(3);
    const args = [f32(3, 8), f32(8, 6), f32(8, 2), f32(2, 6)].map((t) => randomArray(t, r));
    expect(interpret(cleaned, args)).toEqual(interpret(grad, args));
  });
});

describe("runPasses", () => {
  it("dumps the printed IR after the named passes, or after all", () => {
    const dumps: [string, string][] = [];
    const dump = (name: string, text: string) => dumps.push([name, text]);
    const g = parse(sumOfSquares);
    runPasses(g, defaultPipeline({ wrt: [0] }), { dumpAfter: ["simplify"], dump });
    expect(dumps.map(([n]) => n)).toEqual(["simplify"]);
    expect(dumps[0]![1]).toContain("= add %0, %0");
    expect(dumps[0]![1]).toContain("constant"); // simplify bypasses; DCE has not run yet
    dumps.length = 0;
    const out = runPasses(g, CLEANUP_PIPELINE, { dumpAfter: "all", dump });
    expect(dumps.map(([n]) => n)).toEqual(["constant-fold", "simplify", "cse", "dce", "inline-checkpoints"]);
    expect(dumps[3]![1]).toBe(print(out));
  });

  it("rejects a dump-after name that is not in the pipeline", () => {
    expect(() => runPasses(parse(sumOfSquares), CLEANUP_PIPELINE, { dumpAfter: ["autodiff"] })).toThrow(
      "cannot dump after 'autodiff': it is not in the pipeline (constant-fold, simplify, cse, dce, inline-checkpoints)",
    );
  });

  /** A broken pass: returns a graph whose output is never defined. */
  const breaks: Pass = {
    name: "break-things",
    description: "test only",
    run: (g: Graph) => makeGraph(g.inputs, g.ops, [new Value(g.outputs[0]!.type)]),
  };

  it("a verifier failure names the pass and carries the IR before it as a reproducer", () => {
    const g = parse(sumOfSquares);
    let err: unknown;
    try {
      runPasses(g, [CLEANUP_PIPELINE[0]!, breaks, CLEANUP_PIPELINE[3]!]);
    } catch (e) {
      err = e;
    }
    expect(err).toBeInstanceOf(PassError);
    const pe = err as PassError;
    expect(pe.passName).toBe("break-things");
    expect(pe.pipeline).toBe("constant-fold,break-things,dce");
    expect(pe.message).toMatch(/^after pass 'break-things': return: output 0 %\d+ is never defined/);
    expect(pe.message).toContain(
      `reproducer (pipeline "constant-fold,break-things,dce"): the IR before pass 'break-things':\n${print(g)}`,
    );
    expect(pe.reproducer).toBe(print(g));
  });

  it("verification can be switched off; an exception inside a pass is wrapped with the pass name", () => {
    const g = parse(sumOfSquares);
    expect(() => runPasses(g, [breaks], { verify: false })).not.toThrow();
    const throws: Pass = {
      name: "throws",
      description: "test only",
      run: () => {
        throw new Error("boom");
      },
    };
    expect(() => runPasses(g, [throws])).toThrow("pass 'throws' failed: boom");
    const ad = pipelineByName("autodiff", { wrt: [0] });
    const vector = parse(ir`
      func @main(%0: f32[3]) -> (f32[3]) {
        %1: f32[3] = exp %0
        return %1
      }`);
    expect(() => runPasses(vector, ad)).toThrow(
      "pass 'autodiff' failed: valueAndGrad: output 0 must be a rank-0 float (the loss), got f32[3]",
    );
    expect(interpret(runPasses(parse(sumOfSquares), ad), [arr("f32", [3], [1, 2, 3])])[1]!.data).toEqual(
      new Float64Array([2, 4, 6]),
    );
  });
});
