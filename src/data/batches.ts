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
  /**
   * Pack records into full rows (see BatchStream): batches then carry positions and segment ids, and a batch
   * holds as many records as fit in its rows, so `examplesSeen` advances by a varying count.
   */
  pack?: boolean;
}

/**
 * An endless stream of [batch, seq] batches over fitted records: each epoch visits every record once in a seeded
 * order, and a batch may run on into the next epoch (no record is dropped, none repeated within an epoch).
 * Rows are right-padded with `padId` and label -100, which a causal model never sees from the real tokens.
 * Everything is a function of (seed, examples consumed), so a resumed stream yields the batches the original
 * would have.
 *
 * Packed (`pack`): each row takes the next records in that same order for as long as the next one fits (a record
 * that does not fit starts the next row; records are never split), then is right-padded. Each record gets its own
 * segment id (1, 2, ... within a row; padding is 0), so attention never crosses a record; positions restart at 0
 * at each record, so RoPE sees what it would unpacked; and a record's first label is -100, so its first token is
 * not predicted from the previous record's last one. Those first labels are never scored unpacked either (the
 * loss shifts them away), so a packed batch takes the loss on exactly the same tokens as the records unpacked.
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

  /** The record the stream hands out next (not consumed). */
  private peek(): TrainRecord {
    const { epoch, index } = this.position();
    if (epoch !== this.orderEpoch) {
      this.order = epochOrder(this.records.length, this.opts.seed, epoch);
      this.orderEpoch = epoch;
    }
    return this.records[this.order[index]!]!;
  }

  next(): HostBatch {
    const { batch: B, seq: S, padId } = this.opts;
    const tokens = new Int32Array(B * S).fill(padId);
    const labels = new Int32Array(B * S).fill(IGNORE);
    if (this.opts.pack) return this.nextPacked(tokens, labels);
    for (let b = 0; b < B; b++) {
      const r = this.peek();
      tokens.set(r.ids.subarray(0, S), b * S);
      labels.set(r.labels.subarray(0, S), b * S);
      this.seen++;
    }
    return { tokens, labels, shape: [B, S] };
  }

  private nextPacked(tokens: Int32Array, labels: Int32Array): HostBatch {
    const { batch: B, seq: S } = this.opts;
    const positions = new Int32Array(B * S);
    const segmentIds = new Int32Array(B * S);
    for (let b = 0; b < B; b++) {
      let at = 0;
      for (let segment = 1; ; segment++) {
        const r = this.peek();
        const n = Math.min(r.ids.length, S);
        // A row always takes at least one record, so fitted records (at most S tokens) always move the stream on.
        if (at > 0 && at + n > S) break;
        const o = b * S + at;
        tokens.set(r.ids.subarray(0, n), o);
        labels.set(r.labels.subarray(0, n), o);
        labels[o] = IGNORE;
        for (let i = 0; i < n; i++) positions[o + i] = i;
        segmentIds.fill(segment, o, o + n);
        at += n;
        this.seen++;
        if (at === S) break;
      }
    }
    return { tokens, labels, positions, segmentIds, shape: [B, S] };
  }

  *[Symbol.iterator](): Iterator<HostBatch> {
    for (;;) yield this.next();
  }
}

/** How much of the rows is padding: unpacked (a row per record) and packed as BatchStream packs one epoch. */
export interface PaddingStats {
  tokens: number;
  /** Rows of one epoch and their padding share, one record per row. */
  rows: number;
  padding: number;
  /** The same for packed rows (epoch 0's order). */
  packedRows: number;
  packedPadding: number;
}

/** Padding of one epoch of fitted records at `seq`, without and with packing (records in epoch 0's order for `seed`). */
export function paddingStats(records: readonly TrainRecord[], seq: number, seed: number): PaddingStats {
  const order = epochOrder(records.length, seed, 0);
  let tokens = 0,
    packedRows = 0,
    at = seq;
  for (const i of order) {
    const n = Math.min(records[i]!.ids.length, seq);
    tokens += n;
    if (at + n > seq) {
      packedRows++;
      at = 0;
    }
    at += n;
  }
  const rows = records.length;
  return {
    tokens,
    rows,
    padding: rows === 0 ? 0 : 1 - tokens / (rows * seq),
    packedRows,
    packedPadding: packedRows === 0 ? 0 : 1 - tokens / (packedRows * seq),
  };
}

/**
 * Every record once, in file order, as [batch, seq] batches for evaluation (unpacked: a row per record); the last
 * batch is filled up with empty rows (labels all -100), which add nothing to the summed loss or the token count.
 */
export function evalBatches(records: readonly TrainRecord[], batch: number, seq: number, padId: number): HostBatch[] {
  const out: HostBatch[] = [];
  for (let i = 0; i < records.length; i += batch) {
    const tokens = new Int32Array(batch * seq).fill(padId);
    const labels = new Int32Array(batch * seq).fill(IGNORE);
    records.slice(i, i + batch).forEach((r, b) => {
      tokens.set(r.ids.subarray(0, seq), b * seq);
      labels.set(r.labels.subarray(0, seq), b * seq);
    });
    out.push({ tokens, labels, shape: [batch, seq] });
  }
  return out;
}
