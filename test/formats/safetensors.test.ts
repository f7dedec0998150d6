// safetensors: the fixture files, round trips of every dtype, each kind of corrupt file, atomic writes, sharded checkpoints.

import { afterAll, describe, expect, it } from "vitest";
import { open, readFile, writeFile } from "node:fs/promises";
import { join } from "node:path";
import {
  Checkpoint,
  SafetensorsFile,
  parseSafetensors,
  readSafetensors,
  serializeSafetensors,
  writeCheckpoint,
  writeSafetensors,
  type LazyTensor,
} from "../../src/formats/safetensors.ts";
import { HOST_DTYPES, byteWidth } from "../../src/ir/types.ts";
import { fromFloat32, hostTensor, tensorsEqual, toFloat32, type HostTensor } from "../../src/formats/host_tensor.ts";
import { FormatError } from "../../src/formats/errors.ts";
import { commitRenames } from "../../src/formats/atomic.ts";
import { FIXTURE, listDir, rawSafetensors, removeTempDirs, tempDir, writeRaw } from "./helpers.ts";

afterAll(removeTempDirs);

const f32 = (vals: number[], shape = [vals.length]) => fromFloat32(new Float32Array(vals), shape);

describe("reading the fixture", () => {
  it("lists the model's tensors with dtype and shape, reading only the header", async () => {
    const f = await SafetensorsFile.open(join(FIXTURE, "model.safetensors"));
    try {
      expect(f.keys()).toHaveLength(21);
      expect(f.metadata).toEqual({ format: "pt" });
      expect(f.info("model.embed_tokens.weight")).toMatchObject({ dtype: "F32", shape: [512, 64], byteLength: 131072 });
      expect(f.info("model.layers.1.mlp.down_proj.weight").shape).toEqual([64, 172]);
      expect(f.info("model.norm.weight").dataOffsets).toEqual([658432, 658688]);
      expect(() => f.info("nope")).toThrow(/model\.safetensors: no tensor named "nope"/);
      const norm = await f.read("model.norm.weight");
      expect(norm.dtype).toBe("F32");
      expect(norm.shape).toEqual([64]);
      // Bytes straight from the file at data start + offset, decoded by hand.
      const raw = await readFile(join(FIXTURE, "model.safetensors"));
      const at = 8 + Number(raw.readBigUInt64LE(0)) + 658432;
      expect(toFloat32(norm)[0]).toBe(raw.readFloatLE(at));
      expect(toFloat32(norm)[63]).toBe(raw.readFloatLE(at + 63 * 4));
    } finally {
      await f.close();
    }
  });

  it("reads the int32 and float tensors of expected.safetensors", async () => {
    const { tensors, metadata } = await readSafetensors(join(FIXTURE, "expected.safetensors"));
    expect(metadata).toEqual({});
    const ids = tensors.get("input_ids")!;
    expect(ids).toMatchObject({ dtype: "I32", shape: [2, 16] });
    const labels = toFloat32(tensors.get("labels")!);
    expect(Array.from(labels.slice(0, 6))).toEqual([-100, -100, -100, -100, -100, -100]);
    expect(labels[6]).toBeGreaterThanOrEqual(0);
    expect(Array.from(toFloat32(ids)).every((x) => Number.isInteger(x) && x >= 0 && x < 512)).toBe(true);
    const loss = toFloat32(tensors.get("loss_lora")!)[0]!;
    const expectedJson = JSON.parse(await readFile(join(FIXTURE, "expected.json"), "utf8"));
    expect(loss).toBe(Math.fround(expectedJson.loss_lora));
    expect(tensors.get("logits_lora")!.shape).toEqual([2, 16, 512]);
  });

  it("re-serializes every fixture file byte for byte (same layout as the Python writer)", async () => {
    for (const name of ["model.safetensors", "adapter_model.safetensors", "expected.safetensors"]) {
      const orig = new Uint8Array(await readFile(join(FIXTURE, name)));
      const { tensors, metadata } = parseSafetensors(orig, name);
      const again = serializeSafetensors(tensors, Object.keys(metadata).length > 0 ? metadata : undefined);
      expect(Buffer.from(again).equals(Buffer.from(orig)), name).toBe(true);
    }
  });
});

describe("round trips", () => {
  it("writes and reads back every dtype bit-exactly, with metadata and odd shapes", async () => {
    const dir = await tempDir();
    const tensors: Record<string, HostTensor> = {};
    HOST_DTYPES.forEach((d, i) => {
      const shape = [i % 3 === 0 ? 3 : 2, 5];
      const bytes = new Uint8Array(shape[0]! * 5 * byteWidth(d));
      for (let j = 0; j < bytes.length; j++) bytes[j] = (j * 37 + i * 11) & 0xff;
      if (d === "BOOL")
        bytes.forEach((_, j) => {
          bytes[j] = j & 1;
        });
      tensors[`t.${d.toLowerCase()}`] = hostTensor(d, shape, bytes);
    });
    tensors.scalar = f32([42], []);
    tensors.empty = f32([], [0, 4]);
    const path = join(dir, "all.safetensors");
    await writeSafetensors(path, tensors, { metadata: { format: "pt", note: "ünïcode" } });

    const f = await SafetensorsFile.open(path);
    expect(f.metadata).toEqual({ format: "pt", note: "ünïcode" });
    expect(f.dataStart % 8).toBe(0);
    expect(new Set(f.keys())).toEqual(new Set(Object.keys(tensors)));
    for (const [name, t] of Object.entries(tensors)) {
      expect(f.info(name)).toMatchObject({ dtype: t.dtype, shape: t.shape, byteLength: t.data.byteLength });
      expect(tensorsEqual(await f.read(name), t), name).toBe(true);
    }
    await f.close();
    await expect(f.read("scalar")).rejects.toThrow(/after close/);
    expect(await listDir(dir)).toEqual(["all.safetensors"]);
  });

  it("lays tensors out by dtype (widest first) then name, as the reference writer does", () => {
    const bytes = serializeSafetensors({
      b: f32([1]),
      a: f32([2]),
      c: fromFloat32([1], [1], "I64"),
      d: fromFloat32([1], [1], "U8"),
    });
    const { tensors } = parseSafetensors(bytes);
    expect([...tensors.keys()]).toEqual(["c", "a", "b", "d"]);
    const n = Number(new DataView(bytes.buffer).getBigUint64(0, true));
    expect(n % 8).toBe(0);
    expect(new TextDecoder().decode(bytes.subarray(8, 8 + n)).trimEnd()).toBe(
      '{"c":{"dtype":"I64","shape":[1],"data_offsets":[0,8]},"a":{"dtype":"F32","shape":[1],"data_offsets":[8,12]},' +
        '"b":{"dtype":"F32","shape":[1],"data_offsets":[12,16]},"d":{"dtype":"U8","shape":[1],"data_offsets":[16,17]}}',
    );
  });

  it("reads one tensor of a 5 GB file without loading the rest (sparse file, offsets past 2^32)", async () => {
    const dir = await tempDir();
    const big = 5 * 2 ** 30;
    const header = {
      __metadata__: { format: "pt" },
      big: { dtype: "U8", shape: [big], data_offsets: [0, big] },
      small: { dtype: "F32", shape: [2], data_offsets: [big, big + 8] },
    };
    const head = rawSafetensors(header, 0);
    const p = join(dir, "huge.safetensors");
    const fh = await open(p, "w");
    await fh.write(head, 0, head.byteLength, 0);
    await fh.write(f32([1.5, -7]).data, 0, 8, head.byteLength + big);
    await fh.close();
    const heapBefore = process.memoryUsage().arrayBuffers;
    const f = await SafetensorsFile.open(p);
    expect(f.info("big").byteLength).toBe(big);
    expect(Array.from(toFloat32(await f.read("small")))).toEqual([1.5, -7]);
    expect(process.memoryUsage().arrayBuffers - heapBefore).toBeLessThan(64 * 2 ** 20);
    await f.close();
  });

  it("reads tensors concurrently from one open file", async () => {
    const dir = await tempDir();
    const tensors = new Map<string, HostTensor>();
    for (let i = 0; i < 20; i++)
      tensors.set(
        `w${i}`,
        f32(
          Array.from({ length: 100 }, (_, j) => i * 1000 + j),
          [10, 10],
        ),
      );
    const path = join(dir, "many.safetensors");
    await writeSafetensors(path, tensors);
    const f = await SafetensorsFile.open(path);
    const got = await Promise.all([...tensors.keys()].map((k) => f.read(k)));
    got.forEach((t, i) => {
      expect(toFloat32(t)[5]).toBe(i * 1000 + 5);
    });
    await f.close();
  });
});

describe("corrupt files are rejected with the file and tensor named", () => {
  const good = { w: { dtype: "F32", shape: [2, 2], data_offsets: [0, 16] } };

  async function openErr(bytes: Uint8Array, name = "bad.safetensors"): Promise<string> {
    const dir = await tempDir();
    const p = await writeRaw(dir, name, bytes);
    const err = await SafetensorsFile.open(p).then(
      () => undefined,
      (e: unknown) => e,
    );
    expect(err).toBeInstanceOf(FormatError);
    expect((err as FormatError).message.startsWith(p)).toBe(true);
    return (err as FormatError).message;
  }

  it("a file shorter than the length prefix, a directory, a missing file", async () => {
    expect(await openErr(new Uint8Array(5))).toMatch(/5 bytes, too short for a safetensors header/);
    const dir = await tempDir();
    await expect(SafetensorsFile.open(dir)).rejects.toThrow(`${dir}: not a regular file`);
    await expect(SafetensorsFile.open(join(dir, "nope.safetensors"))).rejects.toThrow(
      /nope\.safetensors: cannot open safetensors file \(ENOENT/,
    );
  });

  it("a header length beyond the file size", async () => {
    expect(await openErr(rawSafetensors(good, 16, { headerLength: 10_000n }))).toMatch(
      /header length 10000 .* exceeds the \d+ bytes after it/,
    );
    expect(await openErr(rawSafetensors(good, 16, { headerLength: 2n ** 63n }))).toMatch(
      /header length 9223372036854775808/,
    );
  });

  it("a header that is not JSON, not UTF-8, or not an object", async () => {
    expect(await openErr(rawSafetensors('{"w": {"dtype": "F32",', 16))).toMatch(/header is not valid JSON/);
    const bad = rawSafetensors("{}", 0);
    bad[9] = 0xff;
    expect(await openErr(bad)).toMatch(/not valid UTF-8/);
    expect(await openErr(rawSafetensors("[1,2]", 0))).toMatch(/must be a JSON object/);
  });

  it("an unknown dtype, a bad shape, bad offsets", async () => {
    expect(await openErr(rawSafetensors({ w: { dtype: "F8_E4M3", shape: [4], data_offsets: [0, 4] } }, 4))).toMatch(
      /tensor "w" has unknown dtype "F8_E4M3" \(supported: F64, F32/,
    );
    expect(await openErr(rawSafetensors({ w: { dtype: "F32", shape: [2, -1], data_offsets: [0, 8] } }, 8))).toMatch(
      /tensor "w": shape must be a list of non-negative integers, got \[2,-1\]/,
    );
    expect(await openErr(rawSafetensors({ w: { dtype: "F32", shape: [2], data_offsets: [8, 0] } }, 8))).toMatch(
      /tensor "w": data_offsets must be \[start, end\]/,
    );
    expect(
      await openErr(
        rawSafetensors({ w: { dtype: "F32", shape: [2], data_offsets: [0, 8] }, __metadata__: { a: 1 } }, 8),
      ),
    ).toMatch(/"__metadata__" value for "a" must be a string/);
  });

  it("offsets that do not match dtype x shape", async () => {
    const msg = await openErr(rawSafetensors({ w: { dtype: "F32", shape: [2, 2], data_offsets: [0, 12] } }, 12));
    expect(msg).toMatch(/tensor "w": F32\[2, 2\] needs 16 bytes but data_offsets \[0, 12\] span 12/);
  });

  it("overlapping tensors and gaps", async () => {
    const overlap = {
      a: { dtype: "F32", shape: [2], data_offsets: [0, 8] },
      b: { dtype: "F32", shape: [2], data_offsets: [4, 12] },
    };
    expect(await openErr(rawSafetensors(overlap, 12))).toMatch(/tensor "b" data_offsets \[4, 12\] overlap tensor "a"/);
    const gap = {
      a: { dtype: "F32", shape: [2], data_offsets: [0, 8] },
      b: { dtype: "F32", shape: [2], data_offsets: [12, 20] },
    };
    expect(await openErr(rawSafetensors(gap, 20))).toMatch(
      /tensor "b" data_offsets \[12, 20\] leave a gap of 4 bytes after tensor "a"/,
    );
    const late = { a: { dtype: "F32", shape: [1], data_offsets: [4, 8] } };
    expect(await openErr(rawSafetensors(late, 8))).toMatch(/gap of 4 bytes after the start of the data region/);
  });

  it("a truncated data region, and trailing garbage", async () => {
    const full = serializeSafetensors({ a: f32([1, 2]), b: f32([3, 4, 5, 6]) });
    const msg = await openErr(full.subarray(0, full.byteLength - 3));
    expect(msg).toMatch(
      /file is truncated: tensor "b" ends at byte 24 of the data region but only 21 bytes follow the header/,
    );
    const longer = new Uint8Array(full.byteLength + 5);
    longer.set(full);
    expect(await openErr(longer)).toMatch(/5 unexpected bytes after the last tensor/);
  });

  it("a file that shrinks after opening", async () => {
    const dir = await tempDir();
    const p = join(dir, "shrinks.safetensors");
    await writeFile(p, serializeSafetensors({ a: f32([1, 2, 3, 4]) }));
    const f = await SafetensorsFile.open(p);
    await writeFile(p, new Uint8Array(10));
    await expect(f.read("a")).rejects.toThrow(/shrinks\.safetensors: file ended while reading tensor "a"/);
    await f.close();
  });

  it("refuses to write inconsistent tensors, naming them", async () => {
    const dir = await tempDir();
    const p = join(dir, "out.safetensors");
    await expect(writeSafetensors(p, { w: { dtype: "F32", shape: [3], data: new Uint8Array(8) } })).rejects.toThrow(
      /out\.safetensors: cannot write tensor "w": F32\[3\] needs 12 bytes, data has 8/,
    );
    await expect(writeSafetensors(p, { __metadata__: f32([1]) })).rejects.toThrow(/reserved or empty name/);
    expect(await listDir(dir)).toEqual([]);
  });
});

describe("atomic writes", () => {
  it("a failure mid-write leaves the old file intact and no temp file behind", async () => {
    const dir = await tempDir();
    const p = join(dir, "w.safetensors");
    await writeSafetensors(p, { a: f32([1, 2, 3]) });
    const before = await readFile(p);
    const failing: LazyTensor = {
      dtype: "F32",
      shape: [1000],
      load: async () => {
        throw new Error("disk on fire");
      },
    };
    await expect(writeSafetensors(p, { a: f32([9, 9, 9]), z: failing })).rejects.toThrow(/disk on fire/);
    expect((await readFile(p)).equals(before)).toBe(true);
    expect(await listDir(dir)).toEqual(["w.safetensors"]);
    // A lazy tensor that produces the wrong number of bytes is caught too.
    const short: LazyTensor = { dtype: "F32", shape: [4], load: async () => new Uint8Array(12) };
    await expect(writeSafetensors(join(dir, "new.safetensors"), { s: short })).rejects.toThrow(
      /tensor "s" loaded 12 bytes, expected 16/,
    );
    expect(await listDir(dir)).toEqual(["w.safetensors"]);
  });

  it("lazy tensors are loaded one at a time while writing", async () => {
    const dir = await tempDir();
    const loaded: string[] = [];
    const lazy = (name: string, v: number): LazyTensor => ({
      dtype: "F32",
      shape: [2],
      load: async () => {
        loaded.push(name);
        return f32([v, v]).data;
      },
    });
    await writeSafetensors(join(dir, "l.safetensors"), { y: lazy("y", 2), x: lazy("x", 1) });
    expect(loaded).toEqual(["x", "y"]);
    const { tensors } = await readSafetensors(join(dir, "l.safetensors"));
    expect(Array.from(toFloat32(tensors.get("y")!))).toEqual([2, 2]);
  });

  it("a failed multi-file commit puts the old files back, removes new ones, restores removed ones", async () => {
    const dir = await tempDir();
    const p = (n: string) => join(dir, n);
    await writeFile(p("a.txt"), "old a");
    await writeFile(p("b.txt"), "old b");
    await writeFile(p("d.txt"), "old d");
    await writeFile(p(".a.new"), "new a");
    await writeFile(p(".c.new"), "new c");
    // b's temp file does not exist, so its rename fails after a.txt was replaced and c.txt created.
    const pairs = [
      { tmp: p(".a.new"), target: p("a.txt") },
      { tmp: p(".c.new"), target: p("c.txt") },
      { tmp: p(".b.missing"), target: p("b.txt") },
    ];
    await expect(commitRenames(pairs, [p("d.txt")])).rejects.toThrow(/ENOENT/);
    expect(await listDir(dir)).toEqual(["a.txt", "b.txt", "d.txt"]);
    expect(await readFile(p("a.txt"), "utf8")).toBe("old a");
    expect(await readFile(p("b.txt"), "utf8")).toBe("old b");
    expect(await readFile(p("d.txt"), "utf8")).toBe("old d");
    // And when every rename works, the removals happen and no backups remain.
    await writeFile(p(".a.new"), "new a");
    await writeFile(p(".c.new"), "new c");
    await commitRenames(pairs.slice(0, 2), [p("d.txt")]);
    expect(await listDir(dir)).toEqual(["a.txt", "b.txt", "c.txt"]);
    expect(await readFile(p("a.txt"), "utf8")).toBe("new a");
  });
});

describe("multi-file checkpoints", () => {
  const tensors = new Map<string, HostTensor>([
    [
      "model.embed_tokens.weight",
      f32(
        Array.from({ length: 32 }, (_, i) => i),
        [8, 4],
      ),
    ],
    ["model.norm.weight", f32([1, 2, 3, 4])],
    [
      "lm_head.weight",
      f32(
        Array.from({ length: 32 }, (_, i) => -i),
        [8, 4],
      ),
    ],
    [
      "model.layers.0.mlp.up_proj.weight",
      f32(
        Array.from({ length: 16 }, (_, i) => i / 2),
        [4, 4],
      ),
    ],
  ]);

  it("opens a single model.safetensors", async () => {
    const dir = await tempDir();
    await writeCheckpoint(dir, tensors);
    expect(await listDir(dir)).toEqual(["model.safetensors"]);
    const c = await Checkpoint.open(dir);
    expect(c.indexPath).toBeUndefined();
    expect(new Set(c.keys())).toEqual(new Set(tensors.keys()));
    expect(tensorsEqual(await c.read("model.norm.weight"), tensors.get("model.norm.weight")!)).toBe(true);
    await c.close();
  });

  it("shards past maxShardBytes, writes the index, and reads each tensor from its shard", async () => {
    const dir = await tempDir();
    await writeCheckpoint(dir, tensors, { maxShardBytes: 130 });
    const files = await listDir(dir);
    expect(files).toEqual([
      "model-00001-of-00003.safetensors",
      "model-00002-of-00003.safetensors",
      "model-00003-of-00003.safetensors",
      "model.safetensors.index.json",
    ]);
    const index = JSON.parse(await readFile(join(dir, "model.safetensors.index.json"), "utf8"));
    expect(index.metadata.total_size).toBe(128 + 16 + 128 + 64);
    expect(index.weight_map["model.norm.weight"]).toBe("model-00003-of-00003.safetensors");
    const c = await Checkpoint.open(dir);
    expect(c.indexPath).toBe(join(dir, "model.safetensors.index.json"));
    expect(c.files).toHaveLength(3);
    for (const [k, t] of tensors) {
      expect(tensorsEqual(await c.read(k), t), k).toBe(true);
      expect(c.info(k).file).toBe(join(dir, index.weight_map[k]));
    }
    await expect(c.read("nope")).rejects.toThrow(
      /model\.safetensors\.index\.json: checkpoint has no tensor named "nope"/,
    );
    await c.close();
    // Saving again unsharded removes the old shards and index, so the directory has one layout only.
    await writeCheckpoint(dir, tensors);
    expect(await listDir(dir)).toEqual(["model.safetensors"]);
    // And the other way: a sharded save replaces the single file.
    await writeCheckpoint(dir, tensors, { maxShardBytes: 300 });
    expect(await listDir(dir)).toEqual([
      "model-00001-of-00002.safetensors",
      "model-00002-of-00002.safetensors",
      "model.safetensors.index.json",
    ]);
  });

  it("creates the directory it saves into", async () => {
    const dir = join(await tempDir(), "a", "b");
    await writeCheckpoint(dir, tensors);
    expect(await listDir(dir)).toEqual(["model.safetensors"]);
  });

  async function shardedDir(): Promise<{ dir: string; index: Record<string, unknown> }> {
    const dir = await tempDir();
    await writeCheckpoint(dir, tensors, { maxShardBytes: 130 });
    const index = JSON.parse(await readFile(join(dir, "model.safetensors.index.json"), "utf8"));
    return { dir, index };
  }

  async function withIndex(dir: string, index: unknown): Promise<string> {
    await writeFile(join(dir, "model.safetensors.index.json"), JSON.stringify(index));
    return Checkpoint.open(dir).then(
      () => "opened",
      (e: Error) => e.message,
    );
  }

  it("rejects a missing shard file", async () => {
    const { dir, index } = await shardedDir();
    const wm = index.weight_map as Record<string, string>;
    wm["model.norm.weight"] = "model-00009-of-00009.safetensors";
    expect(await withIndex(dir, index)).toMatch(
      /model\.safetensors\.index\.json: shard "model-00009-of-00009\.safetensors" \(holding "model\.norm\.weight"\) does not exist/,
    );
  });

  it("rejects a tensor the index maps to a shard that lacks it", async () => {
    const { dir, index } = await shardedDir();
    (index.weight_map as Record<string, string>)["model.layers.9.extra.weight"] = "model-00001-of-00003.safetensors";
    expect(await withIndex(dir, index)).toMatch(
      /tensor "model\.layers\.9\.extra\.weight" is mapped to shard "model-00001-of-00003\.safetensors", which does not contain it/,
    );
  });

  it("rejects a tensor stored in two shards, and one the index does not list", async () => {
    const { dir, index } = await shardedDir();
    const wm = index.weight_map as Record<string, string>;
    // Put a second copy of model.norm.weight into shard 1.
    const shard1 = join(dir, "model-00001-of-00003.safetensors");
    const { tensors: t1 } = await readSafetensors(shard1);
    t1.set("model.norm.weight", tensors.get("model.norm.weight")!);
    await writeSafetensors(shard1, t1);
    expect(await withIndex(dir, index)).toMatch(/tensor "model\.norm\.weight" appears in two shards/);
    delete wm["model.norm.weight"];
    t1.delete("model.norm.weight");
    await writeSafetensors(shard1, t1);
    expect(await withIndex(dir, index)).toMatch(
      /shard "model-00003-of-00003\.safetensors" holds tensor "model\.norm\.weight" that weight_map does not list/,
    );
  });

  it("rejects a malformed index and shard names outside the directory", async () => {
    const { dir, index } = await shardedDir();
    expect(await withIndex(dir, { weight_map: [] })).toMatch(/must be an object with a "weight_map" object/);
    (index.weight_map as Record<string, string>)["model.norm.weight"] = "../elsewhere.safetensors";
    expect(await withIndex(dir, index)).toMatch(
      /weight_map entry for "model\.norm\.weight" must be a file name in the same directory/,
    );
    await writeFile(join(dir, "model.safetensors.index.json"), "{not json");
    await expect(Checkpoint.open(dir)).rejects.toThrow(/model\.safetensors\.index\.json: cannot read index/);
  });

  it("explains a directory without safetensors weights", async () => {
    const dir = await tempDir();
    await expect(Checkpoint.open(dir)).rejects.toThrow(/no model\.safetensors or model\.safetensors\.index\.json/);
    await writeFile(join(dir, "pytorch_model.bin"), "x");
    await expect(Checkpoint.open(dir)).rejects.toThrow(/convert them to safetensors first/);
  });

  it("opens a single file or an index path directly", async () => {
    const { dir } = await shardedDir();
    const c = await Checkpoint.open(join(dir, "model.safetensors.index.json"));
    expect(c.keys()).toHaveLength(4);
    await c.close();
    const one = await Checkpoint.open(join(FIXTURE, "model.safetensors"));
    expect(one.keys()).toHaveLength(21);
    await one.close();
  });
});
