// The built-in training task: key -> value lookup over a long context of key/value pairs, generated from a seed.
import { mulberry32 } from "../host/random.ts";
import { IGNORE, type TrainRecord } from "./records.ts";

export interface KeyValueTaskOptions {
  vocabSize: number;
  /** Records are at most this long; the number of pairs in a prompt is chosen to fill it. */
  seq: number;
  records: number;
  seed: number;
}

export interface KeyValueTask {
  records: TrainRecord[];
  /** Key/value pairs in each prompt. */
  pairs: number;
  /** Token id ranges [start, end) of keys and values. */
  keys: [number, number];
  values: [number, number];
  /** The value of key `keys[0] + i` is `table[i]`. */
  table: Int32Array;
}

/** Token ids with a fixed role: padding, start of sequence, and the query marker before the asked key. */
export const PAD = 0;
export const BOS = 1;
export const QUERY = 2;

/** The smallest sequence that holds one pair and its question: BOS k v QUERY k -> v. */
export const MIN_SEQ = 6;

/**
 * A RAG-shaped task a tiny model can learn in a few dozen steps. Each record's prompt lists distinct keys with
 * their values, then asks for one of those keys; the answer is its value (loss on the answer only):
 *
 *   prompt: BOS k1 v1 k2 v2 ... kn vn QUERY kq      answer: vq
 *
 * Keys and values are disjoint halves of the vocabulary above the three special ids. A key's value comes from one
 * seeded table shared by every record, so the answer can be read from the context or learned as a fact; a tiny
 * model starts by learning the facts, which is what makes the loss fall within a few dozen steps. Deterministic in
 * `seed` (the same seed gives the same table and records).
 */
export function keyValueTask(opts: KeyValueTaskOptions): KeyValueTask {
  const V = opts.vocabSize;
  if (V < 8) throw new Error(`the key/value task needs a vocabulary of at least 8 tokens, the model has ${V}`);
  if (opts.seq < MIN_SEQ)
    throw new Error(`the key/value task needs sequences of at least ${MIN_SEQ} tokens (--seq ${opts.seq})`);
  const numKeys = Math.floor((V - 3) / 2);
  const keys: [number, number] = [3, 3 + numKeys];
  const values: [number, number] = [3 + numKeys, V];
  const numValues = V - values[0];
  const pairs = Math.min(numKeys, Math.floor((opts.seq - 4) / 2));
  // Separate streams, so the table does not depend on how many records are drawn.
  const tableRand = mulberry32(opts.seed * 2 + 1);
  const table = Int32Array.from({ length: numKeys }, () => values[0] + Math.floor(tableRand() * numValues));
  const rand = mulberry32(opts.seed * 2 + 2);
  const records: TrainRecord[] = [];
  for (let r = 0; r < opts.records; r++) {
    const chosen = new Set<number>();
    while (chosen.size < pairs) chosen.add(Math.floor(rand() * numKeys));
    const ks = [...chosen];
    const q = ks[Math.floor(rand() * pairs)]!;
    const prompt = [BOS];
    for (const k of ks) prompt.push(keys[0] + k, table[k]!);
    prompt.push(QUERY, keys[0] + q);
    const ids = Int32Array.from([...prompt, table[q]!]);
    const labels = new Int32Array(ids.length).fill(IGNORE);
    labels[ids.length - 1] = table[q]!;
    records.push({ ids, labels, answerStart: prompt.length, source: `synthetic record ${r}` });
  }
  return { records, pairs, keys, values, table };
}
