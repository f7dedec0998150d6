// src/data without a device: JSONL records and their errors, fitting to --seq, batching and shuffling, the synthetic task, the lr schedule.
import { describe, expect, it } from "vitest";
import { parseJsonl } from "../../src/data/jsonl.ts";
import { DataError, fitRecord, IGNORE, lossTokens, type TrainRecord } from "../../src/data/records.ts";
import { BatchStream, epochOrder, prepareRecords } from "../../src/data/batches.ts";
import { BOS, keyValueTask, QUERY } from "../../src/data/synthetic.ts";
import { lrAt } from "../../src/train/schedule.ts";

const V = { vocabSize: 96 };
const parse = (text: string) => parseJsonl(text, "d.jsonl", V);
const err = (text: string): string => {
  try {
    parse(text);
  } catch (e) {
    expect(e).toBeInstanceOf(DataError);
    return (e as Error).message;
  }
  throw new Error("expected a DataError");
};

describe("JSONL records", () => {
  it("reads both forms; labels default to the ids; blank lines and extra fields are ignored", () => {
    const recs = parse(
      [
        '{"input_ids":[1,2,3],"labels":[-100,2,3],"id":"a"}',
        "",
        '{"input_ids":[4,5]}',
        '{"prompt_ids":[7,8,9],"answer_ids":[10,11],"text":"ignored"}\r',
        '{"prompt_ids":[],"answer_ids":[95]}',
      ].join("\n"),
    );
    expect(recs.map((r) => [...r.ids])).toEqual([[1, 2, 3], [4, 5], [7, 8, 9, 10, 11], [95]]);
    expect(recs.map((r) => [...r.labels])).toEqual([[-100, 2, 3], [4, 5], [-100, -100, -100, 10, 11], [95]]);
    expect(recs.map((r) => r.answerStart)).toEqual([undefined, undefined, 3, 0]);
    expect(recs.map((r) => r.source)).toEqual(["d.jsonl:1", "d.jsonl:3", "d.jsonl:4", "d.jsonl:5"]);
  });

  it("names file:line and what was expected for every kind of bad record", () => {
    expect(err('{"input_ids":[1]}\n{"input_ids":[1,2\n')).toMatch(/^d\.jsonl:2: not valid JSON \(/);
    expect(err("[1,2,3]")).toBe(
      'd.jsonl:1: expected a JSON object with "input_ids" (and optionally "labels", -100 where no loss is taken), or with "prompt_ids" and "answer_ids" (loss on the answer only); got an array of 3',
    );
    expect(err('{"text":"hello"}')).toMatch(/^d\.jsonl:1: missing field "input_ids": expected a JSON object/);
    expect(err('{"answer_ids":[3]}')).toBe(
      'd.jsonl:1: missing field "prompt_ids" (a record with "answer_ids" needs the prompt too; it may be [])',
    );
    expect(err('{"prompt_ids":[3]}')).toBe('d.jsonl:1: missing field "answer_ids" (the tokens the loss is taken on)');
    expect(err('{"input_ids":"1 2 3"}')).toBe(
      'd.jsonl:1: field "input_ids" must be an array of integer token ids, got the string "1 2 3"',
    );
    expect(err('{"input_ids":[1,2.5]}')).toBe('d.jsonl:1: "input_ids"[1] is number 2.5, expected an integer token id');
    expect(err('{"input_ids":[1,"2"]}')).toBe(
      'd.jsonl:1: "input_ids"[1] is the string "2", expected an integer token id',
    );
    expect(err('\n\n{"input_ids":[1,96]}')).toBe(
      `d.jsonl:3: "input_ids"[1] = 96 is outside the model's vocabulary (token ids 0..95)`,
    );
    expect(err('{"input_ids":[-100]}')).toBe(
      `d.jsonl:1: "input_ids"[0] = -100 is outside the model's vocabulary (token ids 0..95)`,
    );
    expect(err('{"input_ids":[1,2],"labels":[-1,2]}')).toBe(
      `d.jsonl:1: "labels"[0] = -1 is outside the model's vocabulary (token ids 0..95, or -100 for no loss)`,
    );
    expect(err('{"input_ids":[1,2],"labels":[2]}')).toBe(
      'd.jsonl:1: "labels" has 1 entries but "input_ids" has 2; they must match one to one',
    );
    expect(err('{"prompt_ids":[1],"answer_ids":[]}')).toBe(
      'd.jsonl:1: "answer_ids" is empty: a record needs at least one answer token',
    );
    expect(err('{"prompt_ids":[1],"answer_ids":[2],"input_ids":[3]}')).toMatch(
      /^d\.jsonl:1: has both "input_ids"\/"labels" and "prompt_ids"\/"answer_ids"/,
    );
    expect(err('{"input_ids":[]}')).toBe('d.jsonl:1: "input_ids" is empty');
    expect(err("\n  \n")).toMatch(/^d\.jsonl: no records \(expected one JSON object per line/);
  });
});

const rec = (ids: number[], labels: number[], answerStart?: number): TrainRecord => ({
  ids: Int32Array.from(ids),
  labels: Int32Array.from(labels),
  ...(answerStart === undefined ? {} : { answerStart }),
  source: "t",
});

describe("fitting records to --seq", () => {
  it("input_ids/labels keep their first seq tokens; prompt/answer keep the answer and the end of the prompt", () => {
    const a = fitRecord(rec([1, 2, 3, 4, 5], [1, 2, 3, 4, 5]), 3);
    expect([[...a.ids], [...a.labels], a.truncated]).toEqual([[1, 2, 3], [1, 2, 3], true]);
    const fits = fitRecord(rec([1, 2], [1, 2]), 3);
    expect([[...fits.ids], fits.truncated]).toEqual([[1, 2], false]);
    const x = -100;
    const b = fitRecord(rec([10, 11, 12, 13, 20, 21], [x, x, x, x, 20, 21], 4), 4);
    expect([[...b.ids], [...b.labels]]).toEqual([
      [12, 13, 20, 21],
      [x, x, 20, 21],
    ]);
    // An answer as long as the sequence keeps its first seq-1 tokens after one prompt token.
    const c = fitRecord(rec([10, 11, 20, 21, 22, 23], [x, x, 20, 21, 22, 23], 2), 3);
    expect([[...c.ids], [...c.labels]]).toEqual([
      [11, 20, 21],
      [x, 20, 21],
    ]);
  });

  it("counts loss tokens from position 1 (HF shifts labels) and drops records with none", () => {
    expect(lossTokens(Int32Array.from([5, IGNORE, 7]))).toBe(1);
    const p = prepareRecords(
      [rec([1, 2, 3], [1, IGNORE, IGNORE]), rec([1, 2, 3, 4], [IGNORE, IGNORE, IGNORE, 4]), rec([1, 2], [IGNORE, 2])],
      3,
    );
    expect(p.dropped).toEqual(["t", "t"]);
    expect(p.records).toHaveLength(1);
    expect(p.lossTokens).toBe(1);
    expect(p.truncated).toBe(0);
  });
});

describe("batches", () => {
  const records = Array.from({ length: 5 }, (_, i) =>
    rec([i + 1, i + 1, i + 1].slice(0, 1 + (i % 3)), [IGNORE, i + 1, i + 1].slice(0, 1 + (i % 3))),
  );

  it("visits every record once per epoch in a seeded order, pads rows, and resumes at any position", () => {
    const s = new BatchStream(records, { batch: 2, seq: 4, padId: 0, seed: 3 });
    const firstOf = (b: { tokens: Int32Array }) => [b.tokens[0]!, b.tokens[4]!];
    const seen = [...firstOf(s.next()), ...firstOf(s.next()), ...firstOf(s.next())];
    expect(seen.slice(0, 5).sort()).toEqual([1, 2, 3, 4, 5]);
    expect(s.position()).toEqual({ examplesSeen: 6, epoch: 1, index: 1 });
    expect(seen.slice(0, 5)).toEqual([...epochOrder(5, 3, 0)].map((i) => i + 1));
    expect(seen[5]).toBe(epochOrder(5, 3, 1)[0]! + 1);
    expect([...epochOrder(5, 3, 0)]).not.toEqual([...epochOrder(5, 4, 0)]);

    const b = new BatchStream(records, { batch: 2, seq: 4, padId: 9, seed: 3 }).next();
    expect(b.shape).toEqual([2, 4]);
    const row0 = records[epochOrder(5, 3, 0)[0]!]!;
    expect([...b.tokens.subarray(0, 4)]).toEqual([...row0.ids, ...Array(4 - row0.ids.length).fill(9)]);
    expect([...b.labels.subarray(0, 4)]).toEqual([...row0.labels, ...Array(4 - row0.ids.length).fill(IGNORE)]);

    const straight = new BatchStream(records, { batch: 3, seq: 4, padId: 0, seed: 7 });
    for (let i = 0; i < 4; i++) straight.next();
    const resumed = new BatchStream(records, { batch: 3, seq: 4, padId: 0, seed: 7, start: 12 });
    for (let i = 0; i < 3; i++) expect(resumed.next()).toEqual(straight.next());
  });
});

describe("the built-in key -> value task", () => {
  it("is deterministic in its seed and asks for a key present in the prompt, answered from one table", () => {
    const t = keyValueTask({ vocabSize: 96, seq: 64, records: 50, seed: 5 });
    const again = keyValueTask({ vocabSize: 96, seq: 64, records: 50, seed: 5 });
    const other = keyValueTask({ vocabSize: 96, seq: 64, records: 50, seed: 6 });
    expect(again.records).toEqual(t.records);
    expect(other.records[0]!.ids).not.toEqual(t.records[0]!.ids);
    expect(keyValueTask({ vocabSize: 96, seq: 64, records: 3, seed: 5 }).table).toEqual(t.table);
    expect(t.pairs).toBe(30);
    expect(t.keys).toEqual([3, 49]);
    expect(t.values).toEqual([49, 96]);
    for (const r of t.records) {
      const ids = [...r.ids];
      expect(ids.length).toBe(2 * t.pairs + 4);
      expect(ids[0]).toBe(BOS);
      expect(ids[ids.length - 3]).toBe(QUERY);
      const q = ids[ids.length - 2]!,
        answer = ids[ids.length - 1]!;
      const keys = ids.slice(1, -3).filter((_, i) => i % 2 === 0);
      expect(new Set(keys).size).toBe(t.pairs);
      expect(keys).toContain(q);
      expect(answer).toBe(t.table[q - t.keys[0]]);
      expect(ids[ids.indexOf(q) + 1]).toBe(answer);
      expect([...r.labels].filter((l) => l !== IGNORE)).toEqual([answer]);
      expect(r.answerStart).toBe(ids.length - 1);
    }
  });

  it("fills shorter sequences with fewer pairs", () => {
    expect(keyValueTask({ vocabSize: 96, seq: 16, records: 1, seed: 0 }).records[0]!.ids.length).toBe(16);
    expect(keyValueTask({ vocabSize: 96, seq: 15, records: 1, seed: 0 }).pairs).toBe(5);
  });
});

describe("learning-rate schedule", () => {
  it("warms up linearly, then decays by a cosine to near 0 at the last step, or stays constant", () => {
    const s = { lr: 1, warmup: 4, steps: 14, schedule: "cosine" as const };
    expect([1, 2, 3, 4].map((n) => lrAt(n, s))).toEqual([0.25, 0.5, 0.75, 1]);
    expect(lrAt(5, s)).toBe(1);
    expect(lrAt(10, s)).toBeCloseTo(0.5 * (1 + Math.cos(Math.PI * 0.5)), 12);
    expect(lrAt(14, s)).toBeCloseTo(0.5 * (1 + Math.cos(Math.PI * 0.9)), 12);
    expect(lrAt(20, s)).toBe(0);
    expect(lrAt(1, { ...s, warmup: 0 })).toBe(1);
    expect(lrAt(9, { ...s, schedule: "constant" })).toBe(1);
  });
});
