// tx.random as users see it: random.ts's functions, typed with their eager overloads (eager_types.ts).
import { eagerTyped } from "./eager_types.ts";
import * as r from "./random.ts";

// key(seed) takes a number, which says nothing about a trace, so it keeps its one signature; keyArray is the
// host-side key.
// Names declared below shadow the star export's (ES module rules), so a function added to random.ts is still
// exported, with its plain type, until it gets a line here.
export * from "./random.ts";
export const threefry2x32 = eagerTyped(r.threefry2x32);
export const split = eagerTyped(r.split);
export const foldIn = eagerTyped(r.foldIn);
export const bits = eagerTyped(r.bits);
export const uniform = eagerTyped(r.uniform);
export const normal = eagerTyped(r.normal);
export const bernoulli = eagerTyped(r.bernoulli);
export const dropout = eagerTyped(r.dropout);
export const gumbel = eagerTyped(r.gumbel);
export const categorical = eagerTyped(r.categorical);
export const randint = eagerTyped(r.randint);
export const permutation = eagerTyped(r.permutation);
export const choice = eagerTyped(r.choice);
