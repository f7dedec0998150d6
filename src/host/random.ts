// A seeded host-side PRNG (mulberry32) for initialization and test inputs: reproducible, fast, not statistical-grade.

/** A generator of floats in [0, 1) that yields the same sequence for the same seed on every run. */
export function mulberry32(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/** `n` normal samples N(0, std²) by Box-Muller, two per pair of uniforms drawn from `rand`. */
export function normalSamples(rand: () => number, n: number, std: number): Float32Array {
  const v = new Float32Array(n);
  for (let i = 0; i < n; i += 2) {
    const r = Math.sqrt(-2 * Math.log(1 - rand())) * std,
      th = 2 * Math.PI * rand();
    v[i] = r * Math.cos(th);
    if (i + 1 < n) v[i + 1] = r * Math.sin(th);
  }
  return v;
}
