// A two-layer MLP in tessera's DSL: the model, its loss and one SGD step, exported as entries for the CLI.
import { entry, random, spec, valueAndGrad, zeros, type Tensor } from "tessera";

/** The parameter tree: plain objects of tensors. Graph inputs get their names from it (`params.w1`). */
export interface Params {
  w1: Tensor;
  b1: Tensor;
  w2: Tensor;
  b2: Tensor;
}

/** Sizes of the synthetic regression task in train_mlp.ts: 4 features in, one target out. */
export const SIZES = { batch: 64, input: 4, hidden: 32, output: 1 } as const;

/** Scaled normal weights (variance 1/fan-in, so tanh starts in its linear range) and zero biases. */
export function initParams(key: Tensor): Params {
  const [k1, k2] = [random.foldIn(key, 1), random.foldIn(key, 2)];
  return {
    w1: random.normal(k1, [SIZES.input, SIZES.hidden]).mul(1 / Math.sqrt(SIZES.input)),
    b1: zeros([SIZES.hidden]),
    w2: random.normal(k2, [SIZES.hidden, SIZES.output]).mul(1 / Math.sqrt(SIZES.hidden)),
    b2: zeros([SIZES.output]),
  };
}

export function predict(params: Params, x: Tensor): Tensor {
  const h = x.matmul(params.w1).add(params.b1).tanh();
  return h.matmul(params.w2).add(params.b2);
}

/** Mean squared error over the batch. */
export function mseLoss(params: Params, x: Tensor, y: Tensor): Tensor {
  return predict(params, x).sub(y).square().mean();
}

/** One step of plain SGD: the loss and its gradient with respect to every parameter, then `p - lr * g`. */
export function trainStepFn(params: Params, x: Tensor, y: Tensor, lr: Tensor): [Params, Tensor] {
  const [loss, grads] = valueAndGrad(mseLoss)(params, x, y);
  const g = grads as Params;
  const update = (p: Tensor, d: Tensor) => p.sub(d.mul(lr));
  const next: Params = {
    w1: update(params.w1, g.w1),
    b1: update(params.b1, g.b1),
    w2: update(params.w2, g.w2),
    b2: update(params.b2, g.b2),
  };
  return [next, loss];
}

const { batch, input, hidden, output } = SIZES;
export const paramSpecs = {
  w1: spec("f32", [input, hidden]),
  b1: spec("f32", [hidden]),
  w2: spec("f32", [hidden, output]),
  b2: spec("f32", [output]),
};
const xSpec = spec("f32", [batch, input]);
const ySpec = spec("f32", [batch, output]);

/** `tessera compile examples/mlp.ts --entry forward` */
export const forward = entry(predict, [paramSpecs, xSpec]);

/** The parameters are donated: XLA may write the new parameters over the old ones. */
export const trainStep = entry(trainStepFn, [paramSpecs, xSpec, ySpec, spec("f32", [])], { donate: [0] });
