// loadJsonl on real files: streamed line by line (files past V8's 512 MB string limit), sha256 of the bytes, a BOM accepted.
import { createHash } from "node:crypto";
import { closeSync, mkdtempSync, openSync, rmSync, writeFileSync, writeSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, describe, expect, it } from "vitest";
import { loadJsonl } from "../../src/data/jsonl.ts";
import { DataError } from "../../src/data/records.ts";

const dir = mkdtempSync(join(tmpdir(), "tessera-jsonl-"));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

describe("loadJsonl", () => {
  it("reads a small file with a BOM, CRLF and non-ASCII text; sha256 is that of the file's bytes", async () => {
    const text = '\uFEFF{"input_ids":[1,2],"text":"héllo wörld ✓"}\r\n\r\n{"prompt_ids":[3],"answer_ids":[4]}';
    const file = join(dir, "small.jsonl");
    writeFileSync(file, text);
    const { records, sha256 } = await loadJsonl(file, { vocabSize: 8 });
    expect(records.map((r) => [...r.ids])).toEqual([
      [1, 2],
      [3, 4],
    ]);
    expect(records.map((r) => r.source)).toEqual([`${file}:1`, `${file}:3`]);
    expect(sha256).toBe(createHash("sha256").update(text).digest("hex"));
  });

  it("names file:line for a bad record, and the file when it is missing", async () => {
    const file = join(dir, "bad.jsonl");
    writeFileSync(file, '{"input_ids":[1]}\n{"input_ids":[9]}\n');
    await expect(loadJsonl(file, { vocabSize: 8 })).rejects.toThrow(
      `${file}:2: "input_ids"[0] = 9 is outside the model's vocabulary (token ids 0..7)`,
    );
    const missing = join(dir, "nope.jsonl");
    await expect(loadJsonl(missing, { vocabSize: 8 })).rejects.toThrow(new DataError("no such file", missing));
  });

  it("reads a file over 512 MiB (a whole-file string cannot hold it) with the right records and sha256", async () => {
    // 16 distinct lines of 3000 ids each (~18 KB), repeated; a few thousand ids per line keep JSON.parse fast.
    const V = 32000;
    const lines = Array.from({ length: 16 }, (_, k) => {
      const ids = Array.from({ length: 3000 }, (_, i) => (k * 7919 + i * 104729) % V);
      return Buffer.from(`${JSON.stringify({ input_ids: ids, text: `record ${k} é` })}\n`);
    });
    const block = Buffer.concat(lines);
    const target = 520 * 2 ** 20;
    const repeats = Math.ceil(target / block.length);
    const file = join(dir, "big.jsonl");
    const hash = createHash("sha256");
    const fd = openSync(file, "w");
    try {
      for (let i = 0; i < repeats; i++) {
        writeSync(fd, block);
        hash.update(block);
      }
    } finally {
      closeSync(fd);
    }
    expect(repeats * block.length).toBeGreaterThan(512 * 2 ** 20);
    const t0 = Date.now();
    const { records, sha256 } = await loadJsonl(file, { vocabSize: V });
    const seconds = (Date.now() - t0) / 1000;
    rmSync(file);
    expect(records.length).toBe(repeats * 16);
    expect(sha256).toBe(hash.digest("hex"));
    const last = records[records.length - 1]!;
    expect(last.source).toBe(`${file}:${repeats * 16}`);
    expect(last.ids[1]).toBe((15 * 7919 + 104729) % V);
    expect(seconds).toBeLessThan(60);
  }, 180_000);
});
