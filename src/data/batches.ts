// Batches for the training loop: records fitted to --seq, shuffled per epoch by seed, padded, with a resumable position.
import { mulberry32 } from "../host/random.ts";
import type { HostBatch } from "../train/loop.ts";
import { fitRecord, IGNORE, lossTokens, type TrainRecord } from "./records.ts";

export interface PreparedData {
  /** Records cut to --seq that still take a loss somewhere, in their original order. */
  records: TrainRecord[];
  /** How many kept records were cut to fit. */
  truncated: number;
  /** Sources (`file:line`) of records dropped because no label is left to learn within --seq. */
  dropped: string[];
  /** Loss tokens over all kept records. */
  lossTokens: number;
}

/** Fits every record to `seq` (records.ts's rules) and drops those left with nothing to learn. */
export function prepareRecords(records: readonly TrainRecord[], seq: number): PreparedData {
  const out: TrainRecord[] = [];
  const dropped: string[] = [];
  let truncated = 0,
    tokens = 0;
  for (const r of records) {
    const f = fitRecord(r, seq);
    const n = lossTokens(f.labels);
    if (n === 0) {
      dropped.push(r.source);
      continue;
    }
    if (f.truncated) truncated++;
    tokens += n;
    out.push({ ids: f.ids, labels: f.labels, source: r.source });
  }
  return { records: out, truncated, dropped, lossTokens: tokens };
}

/** Where a stream stands: examples handed out so far, and the epoch and index within it of the next one. */
export interface DataPosition {
  examplesSeen: number;
  epoch: number;
  index: number;
}

/** The order of `n` records in `epoch`: a Fisher-Yates shuffle seeded by (seed, epoch). */
export function epochOrder(n: number, seed: number, epoch: number): Uint32Array {
  const rand = mulberry32((Math.imul(seed, 0x9e3779b1) ^ Math.imul(epoch + 1, 0x85ebca6b)) >>> 0);
  const order = Uint32Array.from({ length: n }, (_, i) => i);
  for (let i = n - 1; i > 0; i--) {
    const j = Math.floor(rand() * (i + 1));
    const t = order[i]!;
    order[i] = order[j]!;
    order[j] = t;
  }
  return order;
}

export interface BatchStreamOptions {
  batch: number;
  seq: number;
  padId: number;
  seed: number;
  /** Examples already consumed (resuming): the stream continues exactly where that run stopped. */
  start?: number;
}

/**
 * An endless stream of [batch, seq] batches over fitted records: each epoch visits every record once in a seeded
 * order, and a batch may run on into the next epoch (no record is dropped, none repeated within an epoch).
 * Rows are right-padded with `padId` and label -100, which a causal model never sees from the real tokens.
 * Everything is a function of (seed, examples consumed), so a resumed stream yields the batches the original
 * would have.
 */
export class BatchStream implements Iterable<HostBatch> {
  private seen: number;
  private orderEpoch = -1;
  private order: Uint32Array = new Uint32Array(0);

  constructor(
    private readonly records: readonly TrainRecord[],
    private readonly opts: BatchStreamOptions,
  ) {
    if (records.length === 0) throw new Error("BatchStream: no records");
    this.seen = opts.start ?? 0;
  }

  position(): DataPosition {
    const n = this.records.length;
    return { examplesSeen: this.seen, epoch: Math.floor(this.seen / n), index: this.seen % n };
  }

  next(): HostBatch {
    const { batch: B, seq: S, padId } = this.opts;
    const tokens = new Int32Array(B * S).fill(padId);
    const labels = new Int32Array(B * S).fill(IGNORE);
    for (let b = 0; b < B; b++) {
      const { epoch, index } = this.position();
      if (epoch !== this.orderEpoch) {
        this.order = epochOrder(this.records.length, this.opts.seed, epoch);
        this.orderEpoch = epoch;
      }
      const r = this.records[this.order[index]!]!;
      tokens.set(r.ids.subarray(0, S), b * S);
      labels.set(r.labels.subarray(0, S), b * S);
      this.seen++;
    }
    return { tokens, labels, shape: [B, S] };
  }

  *[Symbol.iterator](): Iterator<HostBatch> {
    for (;;) yield this.next();
  }
}
