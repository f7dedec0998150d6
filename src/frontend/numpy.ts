// The op library in one namespace (numpy-style names): what `tx.*` and the package's named op exports are.
export {
  add, sub, mul, div, pow, maximum, minimum, neg, abs, exp, log, sqrt, rsqrt, tanh, sigmoid, silu, sin, cos, erf, square,
  reciprocal, eq, ne, lt, le, gt, ge, where, astype, bitcast, clip, broadcastShapes, full,
  bitwiseAnd, bitwiseOr, bitwiseXor, bitwiseNot, shiftLeft, shiftRightLogical, logicalAnd, logicalOr, logicalNot,
} from "./ops/elementwise.ts";
export {
  reshape, transpose, swapaxes, moveaxis, expandDims, squeeze, slice, concatenate, stack, split, pad, broadcastTo,
} from "./ops/shape.ts";
export { constant, zeros, ones, zerosLike, onesLike, fullLike, iota, arange, type HostData, type NestedNumbers } from "./ops/creation.ts";
export { sum, mean, max, min, argmax, logsumexp, softmax, logSoftmax, type ReduceOpts } from "./ops/reduce.ts";
export { matmul, einsum, dotGeneral, type DotDims } from "./ops/linalg.ts";
export { take, takeAlongAxis, oneHot, scatterAdd, dynamicSlice, dynamicUpdateSlice, dynamicIndex } from "./ops/indexing.ts";
