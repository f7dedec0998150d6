// tx.nn as users see it: nn.ts's functions, typed with their eager overloads (eager_types.ts).
import { eagerTyped } from "./eager_types.ts";
import * as nn from "./nn.ts";
import { silu as siluOp } from "./ops/elementwise.ts";
import { dropout as dropoutOp } from "./random.ts";

// Names declared here shadow the star export's (ES module rules), so a function added to nn.ts is still exported,
// with its plain type, until it gets a line below.
export * from "./nn.ts";
export const silu = eagerTyped(siluOp);
export const dropout = eagerTyped(dropoutOp);
export const relu = eagerTyped(nn.relu);
export const gelu = eagerTyped(nn.gelu);
export const softmax = eagerTyped(nn.softmax);
export const logsumexp = eagerTyped(nn.logsumexp);
export const logSoftmax = eagerTyped(nn.logSoftmax);
export const layerNorm = eagerTyped(nn.layerNorm);
export const rmsNorm = eagerTyped(nn.rmsNorm);
export const crossEntropy = eagerTyped(nn.crossEntropy);
export const embedding = eagerTyped(nn.embedding);
