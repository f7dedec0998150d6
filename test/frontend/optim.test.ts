// tx.optim: adamw against the trainer's AdamW bit for bit, sgd/clipping/schedules against float64, chain order.
import { describe, expect, it } from "vitest";
import { optim, tx, type Tensor } from "tessera";
import { fromFloat32, toFloat32, type HostTensor } from "../../src/formats/host_tensor.ts";
import { adamwUpdate, ADAMW_DEFAULTS, type AdamWConfig } from "../../src/train/adamw.ts";
import { interpretOnHost, pjrtOnHost } from "../../src/parity/execute.ts";
import { mulberry32 } from "../../models/lora.ts";

const f32 = (v: ArrayLike<number>, shape: number[]) => fromFloat32(Float32Array.from(v), shape);
const s32 = (v: number) => fromFloat32([v], [], "I32");
const rand = mulberry32(17);
/** Values in ±[0.5, 1.5]: away from 0, so a small step never moves a weight by more than half of it. */
const awayFromZero = (n: number) => Array.from({ length: n }, () => (rand() < 0.5 ? -1 : 1) * (0.5 + rand()));
const signed = (n: number, a: number) => Array.from({ length: n }, () => (2 * rand() - 1) * a);
const fround = (v: number[]) => v.map(Math.fround);

/** A small tree: a matrix, a vector and a nested list. */
const shapes = { w: [2, 3], b: [3], layers: [[4], [1, 2]] } as const;
const sizes = [6, 3, 4, 2];
const shapeList = [shapes.w, shapes.b, shapes.layers[0], shapes.layers[1]].map((s) => [...s]);
// Flatten order sorts object keys: b, layers[0], layers[1], w.
const build = <L>(leaves: L[]) => ({ w: leaves[0]!, b: leaves[1]!, layers: [leaves[2]!, leaves[3]!] });
const hostTree = (vals: number[][]) => build(vals.map((v, i) => f32(v, shapeList[i]!)));
type HostTree = ReturnType<typeof hostTree>;
const leavesOf = (t: HostTree) => [t.w, t.b, t.layers[0], t.layers[1]].map((h) => Array.from(toFloat32(h!)));

const p0 = sizes.map(awayFromZero);
const grads = [0, 1, 2].map(() => sizes.map((n) => signed(n, 0.5)));
const lrs = [1e-2, 5e-3, 2e-2];

/** Three steps of tx.optim's adamw (lr read from an input per step) and of src/train's adamwUpdate, side by side. */
function threeSteps(hp: AdamWConfig) {
  return (p: HostTree, g0: HostTree, g1: HostTree, g2: HostTree, lr: Tensor) => {
    const P = p as unknown as Record<string, Tensor>;
    const gs = [g0, g1, g2] as unknown as Record<string, Tensor>[];
    let step = 0;
    const opt = optim.adamw({
      lr: () => lr.slice(step),
      b1: hp.beta1,
      b2: hp.beta2,
      eps: hp.eps,
      weightDecay: hp.weightDecay,
    });
    let a = P;
    let s = opt.init(P);
    let b = P;
    let st = {
      m: tx.treeMap(P, (x) => tx.zerosLike(x)) as Record<string, Tensor>,
      v: tx.treeMap(P, (x) => tx.zerosLike(x)) as Record<string, Tensor>,
    };
    for (step = 0; step < 3; step++) {
      const [u, s2] = opt.update(gs[step]!, s, a);
      a = optim.applyUpdates(a, u);
      s = s2;
      [b, st] = adamwUpdate(b, gs[step]!, st, tx.full([], step + 1), lr.slice(step), hp);
    }
    return { a, b, mu: s.mu, m: st.m, nu: s.nu, v: st.v, count: s.count };
  };
}

const bits = (t: HostTree) => leavesOf(t).flatMap((l) => Array.from(new Uint32Array(Float32Array.from(l).buffer)));

describe("optim.adamw", () => {
  const hp: AdamWConfig = { lr: 0, beta1: 0.8, beta2: 0.95, eps: 1e-6, weightDecay: 0.1 };
  const args = [hostTree(p0), ...grads.map(hostTree), f32(lrs, [3])];

  it("equals src/train's adamwUpdate bit for bit over 3 steps (interpreter)", () => {
    const out = interpretOnHost(threeSteps(hp), args) as unknown as Record<string, HostTree> & { count: HostTensor };
    expect(bits(out.a!)).toEqual(bits(out.b!));
    expect(bits(out.mu!)).toEqual(bits(out.m!));
    expect(bits(out.nu!)).toEqual(bits(out.v!));
    expect(Array.from(toFloat32(out.count))).toEqual([3]);
    // And it moved: not a vacuous equality.
    expect(bits(out.a!)).not.toEqual(bits(hostTree(p0)));
  });

  it("equals src/train's adamwUpdate bit for bit over 3 steps (jit, PJRT CPU), with torch's defaults", async () => {
    const out = (await pjrtOnHost(threeSteps({ ...ADAMW_DEFAULTS }), args)) as unknown as Record<string, HostTree>;
    expect(bits(out.a!)).toEqual(bits(out.b!));
    expect(bits(out.mu!)).toEqual(bits(out.m!));
    expect(bits(out.nu!)).toEqual(bits(out.v!));
  });

  it("defaults to torch.optim.AdamW's: lr 1e-3, b1 0.9, b2 0.999, eps 1e-8, weightDecay 0.01", () => {
    const torchDefaults = { lr: 1e-3, b1: 0.9, b2: 0.999, eps: 1e-8, weightDecay: 0.01 };
    const variants = [
      {},
      torchDefaults,
      ...Object.entries(torchDefaults).map(([k, v]) => ({ ...torchDefaults, [k]: v * 3 })),
    ];
    // Two steps, so b2 and eps reach the update; tiny grads, so eps matters.
    const out = interpretOnHost(
      (p: HostTree, g: HostTree) => {
        const P = p as unknown as Record<string, Tensor>;
        const G = tx.treeMap(g as unknown as Record<string, Tensor>, (x) => x.mul(1e-7));
        return variants.map((o) => {
          const opt = optim.adamw(o);
          const [, s1] = opt.update(G, opt.init(P), P);
          return opt.update(
            tx.treeMap(G, (x) => x.mul(-2)),
            s1,
            P,
          )[0];
        });
      },
      [hostTree(p0), hostTree(grads[0]!)],
    ) as unknown as HostTree[];
    expect(bits(out[0]!)).toEqual(bits(out[1]!));
    for (let i = 2; i < out.length; i++) expect(bits(out[i]!)).not.toEqual(bits(out[0]!));
  });

  it("adam is adamw with weightDecay 0", () => {
    const out = interpretOnHost(
      (p: HostTree, g: HostTree) => {
        const P = p as unknown as Record<string, Tensor>;
        const G = g as unknown as Record<string, Tensor>;
        const x = optim.adam({ lr: 0.01, b1: 0.85 });
        const y = optim.adamw({ lr: 0.01, b1: 0.85, weightDecay: 0 });
        return { x: x.update(G, x.init(P), P)[0], y: y.update(G, y.init(P), P)[0] };
      },
      [hostTree(p0), hostTree(grads[0]!)],
    ) as unknown as { x: HostTree; y: HostTree };
    expect(bits(out.x)).toEqual(bits(out.y));
    // The decayed variant differs.
    const decayed = interpretOnHost(
      (p: HostTree, g: HostTree) => {
        const P = p as unknown as Record<string, Tensor>;
        const z = optim.adamw({ lr: 0.01, b1: 0.85 });
        return z.update(g as unknown as Record<string, Tensor>, z.init(P), P)[0];
      },
      [hostTree(p0), hostTree(grads[0]!)],
    ) as unknown as HostTree;
    expect(bits(decayed)).not.toEqual(bits(out.x));
  });
});

/** Runs `steps` updates of `opt` from p0 with the three grads; returns the final params' leaves. */
function runOpt(make: () => optim.GradientTransformation<unknown>): number[][] {
  const out = interpretOnHost(
    (p: HostTree, g0: HostTree, g1: HostTree, g2: HostTree) => {
      const opt = make();
      let P = p as unknown as Record<string, Tensor>;
      let s = opt.init(P);
      for (const g of [g0, g1, g2] as unknown as Record<string, Tensor>[]) {
        const [u, s2] = opt.update(g, s, P);
        P = optim.applyUpdates(P, u);
        s = s2;
      }
      return P;
    },
    [hostTree(p0), ...grads.map(hostTree)],
  ) as unknown as HostTree;
  return leavesOf(out);
}

function close(got: number[][], want: number[][], tol: number): void {
  for (const [i, l] of got.entries())
    for (const [j, x] of l.entries()) expect(Math.abs(x - want[i]![j]!)).toBeLessThan(tol);
}

describe("optim.sgd", () => {
  /** torch.optim.SGD (dampening 0, no weight decay) in float64 on the f32 inputs. */
  function torchSgd(lr: number, momentum: number, nesterov: boolean): number[][] {
    const p = p0.map(fround);
    const buf = p.map((l) => l.map(() => 0));
    for (const gs of grads)
      for (const [i, l] of p.entries())
        for (const j of l.keys()) {
          const g = Math.fround(gs[i]![j]!);
          buf[i]![j] = momentum * buf[i]![j]! + g;
          const d = nesterov ? g + momentum * buf[i]![j]! : buf[i]![j]!;
          l[j] = l[j]! - lr * d;
        }
    return p;
  }

  it("plain, heavy-ball and Nesterov momentum match torch's rule", () => {
    close(
      runOpt(() => optim.sgd({ lr: 0.1 })),
      torchSgd(0.1, 0, false),
      1e-6,
    );
    close(
      runOpt(() => optim.sgd({ lr: 0.1, momentum: 0.9 })),
      torchSgd(0.1, 0.9, false),
      1e-6,
    );
    close(
      runOpt(() => optim.sgd({ lr: 0.1, momentum: 0.9, nesterov: true })),
      torchSgd(0.1, 0.9, true),
      1e-6,
    );
    // Momentum matters (the references differ), so the checks above are not vacuous.
    expect(Math.abs(torchSgd(0.1, 0.9, true)[0]![0]! - torchSgd(0.1, 0.9, false)[0]![0]!)).toBeGreaterThan(1e-3);
  });
});

describe("optim.clipByGlobalNorm", () => {
  const g = grads[0]!;
  const norm = Math.sqrt(g.flat().reduce((a, x) => a + Math.fround(x) ** 2, 0));
  const clip = (maxNorm: number) =>
    leavesOf(
      interpretOnHost(
        (t: HostTree) => optim.clipByGlobalNorm(maxNorm).update(t as unknown as Record<string, Tensor>, {})[0],
        [hostTree(g)],
      ) as unknown as HostTree,
    );

  it("leaves the grads untouched at or under the max norm", () => {
    expect(clip(norm * 1.5)).toEqual(g.map(fround));
  });

  it("scales to the max norm when above it", () => {
    const maxNorm = norm / 4;
    const got = clip(maxNorm);
    close(
      got,
      g.map((l) => l.map((x) => (Math.fround(x) * maxNorm) / norm)),
      1e-6,
    );
    expect(Math.sqrt(got.flat().reduce((a, x) => a + x * x, 0))).toBeCloseTo(maxNorm, 5);
  });
});

describe("optim.chain", () => {
  it("applies its transformations in order (clip, then adamw)", () => {
    const out = interpretOnHost(
      (p: HostTree, g: HostTree) => {
        const P = p as unknown as Record<string, Tensor>;
        const G = g as unknown as Record<string, Tensor>;
        const c = optim.chain(optim.clipByGlobalNorm(0.1), optim.adamw({ lr: 0.01 }));
        const [viaChain] = c.update(G, c.init(P), P);
        const a = optim.adamw({ lr: 0.01 });
        const [byHand] = a.update(optim.clipByGlobalNorm(0.1).update(G, {})[0], a.init(P), P);
        const r = optim.chain(optim.adamw({ lr: 0.01 }), optim.clipByGlobalNorm(0.1));
        const [reversed] = r.update(G, r.init(P), P);
        return { viaChain, byHand, reversed };
      },
      // Large grads, so clipping is active and moves adamw's input well off the raw grads.
      [hostTree(p0), hostTree(grads[1]!.map((l) => l.map((x) => x * 10)))],
    ) as unknown as { viaChain: HostTree; byHand: HostTree; reversed: HostTree };
    expect(bits(out.viaChain)).toEqual(bits(out.byHand));
    expect(bits(out.viaChain)).not.toEqual(bits(out.reversed));
  });
});

describe("optim schedules", () => {
  const at = (s: optim.Schedule, steps: number[]) =>
    steps.map((k) => toFloat32(interpretOnHost((t: Tensor) => s(t), [s32(k)]) as HostTensor)[0]!);
  const steps = [0, 1, 5, 10, 37, 100, 150];
  const check = (s: optim.Schedule, f: (k: number) => number) => {
    for (const [i, v] of at(s, steps).entries()) expect(Math.abs(v - f(steps[i]!))).toBeLessThan(1e-6);
  };

  it("constant", () => check(optim.constant(3e-4), () => 3e-4));

  it("linearWarmup", () =>
    check(optim.linearWarmup({ init: 1e-5, peak: 1e-3, warmupSteps: 10 }), (k) =>
      k >= 10 ? 1e-3 : 1e-5 + ((1e-3 - 1e-5) * k) / 10,
    ));

  it("cosineDecay, as optax", () => {
    const [init, T, alpha] = [2e-3, 100, 0.1];
    check(optim.cosineDecay({ init, decaySteps: T, alpha }), (k) => {
      const t = Math.min(k, T);
      return init * ((1 - alpha) * 0.5 * (1 + Math.cos((Math.PI * t) / T)) + alpha);
    });
  });

  it("warmupCosine, as optax's warmup_cosine_decay_schedule", () => {
    const [init, peak, W, T, end] = [0, 1e-3, 10, 110, 1e-5];
    check(optim.warmupCosine({ init, peak, warmupSteps: W, decaySteps: T, end }), (k) => {
      if (k < W) return init + ((peak - init) * k) / W;
      const t = Math.min(k - W, T - W);
      const alpha = end / peak;
      return peak * ((1 - alpha) * 0.5 * (1 + Math.cos((Math.PI * t) / (T - W))) + alpha);
    });
  });

  it("a schedule as sgd's lr is read at the 0-based step count", () => {
    const sched = optim.linearWarmup({ peak: 0.1, warmupSteps: 2 });
    const rates = [0, 0.05, 0.1];
    const want = p0.map((l, i) =>
      l.map((x, j) => grads.reduce((p, gs, k) => p - rates[k]! * Math.fround(gs[i]![j]!), Math.fround(x))),
    );
    close(
      runOpt(() => optim.sgd({ lr: sched })),
      want,
      1e-6,
    );
  });
});

describe("optim.applyUpdates", () => {
  it("adds leafwise", () => {
    const u = sizes.map((n) => signed(n, 1));
    const got = leavesOf(
      interpretOnHost(
        (p: HostTree, d: HostTree) =>
          optim.applyUpdates(p as unknown as Record<string, Tensor>, d as unknown as Record<string, Tensor>),
        [hostTree(p0), hostTree(u)],
      ) as unknown as HostTree,
    );
    expect(got).toEqual(p0.map((l, i) => l.map((x, j) => Math.fround(Math.fround(x) + Math.fround(u[i]![j]!)))));
  });
});

describe("optim state across jit", () => {
  it("init and update run as separate jitted programs, the state (s32 count, {} and moment trees) passing between", async () => {
    const mk = () =>
      optim.chain(
        optim.clipByGlobalNorm(1),
        optim.sgd({ lr: optim.warmupCosine({ peak: 0.1, warmupSteps: 2, decaySteps: 10 }), momentum: 0.9 }),
        optim.adamw(),
      );
    const p = { w: f32([1, 2, 3], [3]) };
    const s0 = await pjrtOnHost((q: { w: Tensor }) => mk().init(q), [p]);
    const out = (await pjrtOnHost(
      (q: { w: Tensor }, s: unknown[], g: { w: Tensor }) => {
        const [u, s2] = mk().update(g, s, q);
        return { p: optim.applyUpdates(q, u), s: s2 };
      },
      [p, s0 as never, { w: f32([3, 4, 5], [3]) }],
    )) as unknown as { p: { w: HostTensor }; s: [unknown, { count: HostTensor }, { count: HostTensor }] };
    // The warmup's rate is 0 at step 0, so sgd passes zeros and adamw only decays: p * (1 - 1e-3 * 0.01).
    expect(Array.from(toFloat32(out.p.w))).toEqual([1, 2, 3].map((x) => Math.fround(x * Math.fround(1 - 1e-5))));
    expect(Array.from(toFloat32(out.s[1].count))).toEqual([1]);
    expect(Array.from(toFloat32(out.s[2].count))).toEqual([1]);
  });
});
