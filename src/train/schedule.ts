// The learning-rate schedule of a training run: linear warm-up, then constant or cosine decay.

export interface Schedule {
  lr: number;
  warmup: number;
  steps: number;
  schedule: "cosine" | "constant";
}

/** The learning rate of 1-based step n: linear warm-up to `lr` over `warmup` steps, then constant or cosine to 0 at `steps`. */
export function lrAt(n: number, s: Schedule): number {
  if (n <= s.warmup) return (s.lr * n) / s.warmup;
  if (s.schedule === "constant") return s.lr;
  const progress = (n - s.warmup - 1) / Math.max(1, s.steps - s.warmup);
  return s.lr * 0.5 * (1 + Math.cos(Math.PI * Math.min(1, progress)));
}
