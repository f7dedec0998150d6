// Tessera's public API: the tracing DSL (ops, transforms, trees, RNG) and compiled execution (jit, arrays).
//
// Everything is exported twice, by name and inside the `tx` namespace, so both styles work:
//
//   import { tx } from "tessera";                        tx.matmul(x, w), tx.jit(step), tx.random.split(key)
//   import { matmul, jit, random, spec } from "tessera";
//
// and every op is also a Tensor method where numpy has one (`x.matmul(w).add(b).tanh()`).
//
// Tracing. A function over Tensors runs once per input signature with tracers that record IR ops, each at the
// caller's file:line:col (frames in Tessera's own src/ are skipped; `setLocationCapture(false)` turns it off).
// Shape and dtype mistakes throw at that point, naming the op, the operand types and the user's line.
// namedScope("layer0", () => ...) (jax.named_scope) adds a scope path to those locations: the IR dump, inspect and
// the StableHLO locs (XLA's op_name) show `layer0/attention/...`; nested scopes join with '/'.
//   spec(dtype, shape)            an abstract argument;  trace(fn, [specTrees...]) -> { graph, inTree, outTree }
//   entry(fn, [specTrees...], { donate })   marks a model-file export for `tessera compile file.ts --entry name`
//   jit(fn, { donate })           compiles through XLA; call with DeviceArrays -> Promise of the output tree;
//                                 jit(fn).lower(...specs) -> { graph, stablehlo } without running
//   valueAndGrad(fn, { wrt, hasAux }), grad(...)   traceable (inside jit), nestable; outside a trace they jit
//   vmap(fn, { inAxes, outAxes })                  jax.vmap: batching rules for every op; composes with grad and jit
//   scan(f, init, xs, { length, reverse })         one IR scan op; closed-over tensors become loop constants
//   cond(pred, trueFn, falseFn, ...ops), switchCase(i, branches, ...ops) (= tx.switch), whileLoop(condFn, bodyFn,
//   init), foriLoop(lo, hi, body, init), stopGradient(x), customVjp(fn, { fwd, bwd })   as JAX's lax / custom_vjp
//   optimizationBarrier(tree)
//   jit(fn, { static: [i] }) hashes those arguments by value; disableJit(() => ...) runs jitted functions op by op
//   debug.print("loss {} at {}", a, b) (also debugPrint; jax.debug.print): printed when the program runs, once per
//   scan iteration / vmap example / taken branch; debug.effectsBarrier() waits for eager prints; debug.setSink(fn)
//   exportJitted(jitted, ...specs) (= tx.export, jax.export) -> Exported; .save(file); loadExported(file) -> a function
//                                 running that StableHLO file (its header: trees, specs, donation, mesh, platform)
// Data. array(values | TypedArray, { dtype, shape }) -> DeviceArray; await a.toArray() / a.item(); a.dispose().
// Eager. Outside a trace, ops on DeviceArrays run at once (one cached program per op signature) -> DeviceArray.
// Devices. jit(fn, { mesh: mesh({ data: 2, model: 4 }), in: [P("data", null), ...], out }) runs SPMD over a mesh;
// shard(x, P(...)) pins an intermediate; array(data, { mesh, spec }) and put(a, mesh, spec) make sharded arrays
// (docs/sharding.md).
// Trees. Plain objects and arrays of tensors; keys flatten in sorted order; graph inputs are named by the
// function's parameter names plus paths (`params.layers[0].wq`). treeFlatten/treeUnflatten/treeMap/treeLeaves.
// Promotion (src/frontend/ops/elementwise.ts). Tensor operands of one op must share a dtype (no implicit
// f32/bf16/int mixing: use astype); a JS number adopts the tensor operand's dtype; numbers alone are f32. As in
// numpy, integer div and mean are f32 (floorDiv and remainder stay integer).
// Shapes broadcast as in numpy. bf16/f16 sums and means accumulate in f32.
// jnp's tril/triu(x, k), cumsum/cumprod(x, axis), argmin, var/std(x, axis, { ddof }) (`var` is also exported as
// `variance`, since `import { var }` is not valid JS), sort/argsort(x, axis, { descending, stable }) and lax's
// topK(x, k) -> [values, indices]; sort, argsort and topK are one `sort` IR op (stablehlo.sort).
// nn.* (JAX's jax.nn: relu, gelu, softmax, layerNorm, rmsNorm, crossEntropy, initializers...); tree.* (jax.tree);
// evalShape(fn, ...specs) -> output spec tree, by tracing only.
// RNG (random.*). Threefry-2x32 keys (u32[2]): key(seed) in a trace, keyArray(seed) on the host; split, foldIn,
// bits, uniform, normal (Box-Muller), bernoulli, dropout(x, rate, key), gumbel, categorical, randint(key, shape,
// minval, maxval), permutation(key, n | x) and choice(key, n | a, shape, { replace, p }).
export * from "./frontend/api.ts";
export * as tx from "./frontend/api.ts";
// Training lives in its own entry point, `tessera/train` (src/train/index.ts): the model files import this one, and
// the training run imports the models, so one barrel for both would be an import cycle.
