/**
 * The CIFAR-10 binary reader against small files written here in the exact format: records of
 * 1 label byte + R(1024) G(1024) B(1024) row-major planes.
 */
import { mkdirSync, mkdtempSync, rmSync, truncateSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";

import { type FlwrError, InvalidConfigError } from "../../src/core/errors";
import { CIFAR10_RECORD_BYTES, cifar10RecordCount, loadCifar10Binary } from "../../src/example/cifar10";
import { IMAGE_SIZE } from "../../src/example/dataset";
import { loadDataset } from "../../src/example/task";

const TRAIN_FILES = [
  "data_batch_1.bin",
  "data_batch_2.bin",
  "data_batch_3.bin",
  "data_batch_4.bin",
  "data_batch_5.bin",
];

/** Pixel byte of image `id` at channel c, row y, column x: distinct per position and image. */
const pixelByte = (id: number, c: number, y: number, x: number): number => (id * 7 + c * 85 + y * 5 + x * 3) % 256;
const labelOf = (id: number): number => (id * 3) % 10;

/** A record in the CIFAR-10 layout for image `id`. */
function record(id: number): Buffer {
  const bytes = Buffer.alloc(CIFAR10_RECORD_BYTES);
  bytes[0] = labelOf(id);
  for (let c = 0; c < 3; c++) {
    for (let y = 0; y < 32; y++) {
      for (let x = 0; x < 32; x++) bytes[1 + c * 1024 + y * 32 + x] = pixelByte(id, c, y, x);
    }
  }
  return bytes;
}

/** Writes train files with 2, 3, 1, 2, 2 records (ids 0..9) and a test file with ids 100..103. */
function writeCifarDir(dir: string): void {
  mkdirSync(dir, { recursive: true });
  const sizes = [2, 3, 1, 2, 2];
  let id = 0;
  TRAIN_FILES.forEach((name, i) => {
    const records = Array.from({ length: sizes[i]! }, () => record(id++));
    writeFileSync(join(dir, name), Buffer.concat(records));
  });
  writeFileSync(join(dir, "test_batch.bin"), Buffer.concat([100, 101, 102, 103].map(record)));
}

/** Expected normalised HWC value. */
const expected = (id: number, c: number, y: number, x: number): number =>
  Math.fround(pixelByte(id, c, y, x) / 127.5 - 1);

let root: string;
beforeEach(() => {
  root = mkdtempSync(join(tmpdir(), "flwr-ts-cifar-"));
});
afterEach(() => {
  rmSync(root, { recursive: true, force: true });
});

describe("loadCifar10Binary", () => {
  test("reads every record of a split in file order, converting CHW bytes to normalised HWC", () => {
    writeCifarDir(root);
    const train = loadCifar10Binary(root, "train");
    expect(train.count).toBe(10);
    expect(train.images.length).toBe(10 * IMAGE_SIZE);
    expect(Array.from(train.labels)).toEqual(Array.from({ length: 10 }, (_, id) => labelOf(id)));
    for (const id of [0, 4, 9]) {
      for (const [c, y, x] of [
        [0, 0, 0],
        [1, 0, 0],
        [2, 0, 0],
        [0, 0, 1],
        [2, 31, 31],
        [1, 7, 20],
      ] as const) {
        expect(train.images[id * IMAGE_SIZE + (y * 32 + x) * 3 + c]).toBe(expected(id, c, y, x));
      }
    }
    expect(train.source).toContain("CIFAR-10 binary");

    const test = loadCifar10Binary(root, "test");
    expect(test.count).toBe(4);
    expect(Array.from(test.labels)).toEqual([100, 101, 102, 103].map(labelOf));
  });

  test("maps byte 0 to -1 and byte 255 to 1", () => {
    mkdirSync(root, { recursive: true });
    const bytes = Buffer.alloc(CIFAR10_RECORD_BYTES, 0);
    bytes[0] = 9;
    bytes[1 + 1024 + 5] = 255; // green channel, row 0, column 5
    for (const name of [...TRAIN_FILES, "test_batch.bin"]) writeFileSync(join(root, name), bytes);
    const test = loadCifar10Binary(root, "test");
    expect(test.labels[0]).toBe(9);
    expect(test.images[5 * 3 + 1]).toBe(1);
    expect(test.images[5 * 3 + 0]).toBe(-1);
    expect(Math.min(...test.images)).toBe(-1);
  });

  test("reads only the requested records, in the requested order, across files", () => {
    writeCifarDir(root);
    const subset = loadCifar10Binary(root, "train", { indices: [9, 2, 5, 0] });
    expect(subset.count).toBe(4);
    expect(Array.from(subset.labels)).toEqual([9, 2, 5, 0].map(labelOf));
    [9, 2, 5, 0].forEach((id, position) => {
      expect(subset.images[position * IMAGE_SIZE + (3 * 32 + 4) * 3 + 2]).toBe(expected(id, 2, 3, 4));
    });
    expect(() => loadCifar10Binary(root, "train", { indices: [10] })).toThrow(InvalidConfigError);
  });

  test("accepts the parent of the extracted cifar-10-batches-bin directory", () => {
    writeCifarDir(join(root, "cifar-10-batches-bin"));
    expect(cifar10RecordCount(root, "train")).toBe(10);
    expect(loadCifar10Binary(root, "test").count).toBe(4);
  });

  test("a truncated file is rejected with the expected record size in the message", () => {
    writeCifarDir(root);
    truncateSync(join(root, "data_batch_3.bin"), CIFAR10_RECORD_BYTES - 1);
    let caught: unknown;
    try {
      loadCifar10Binary(root, "train");
    } catch (err) {
      caught = err;
    }
    expect(caught).toBeInstanceOf(InvalidConfigError);
    expect((caught as FlwrError).code).toBe("FLWR_INVALID_CONFIG");
    expect((caught as Error).message).toMatch(/data_batch_3\.bin has 3072 bytes, not a positive multiple of 3073/);
    // The other split is unaffected.
    expect(loadCifar10Binary(root, "test").count).toBe(4);
  });

  test("a missing directory or file is a clear error", () => {
    expect(() => loadCifar10Binary(join(root, "nope"), "train")).toThrow(/CIFAR-10 directory .*nope does not exist/);
    writeCifarDir(root);
    rmSync(join(root, "data_batch_5.bin"));
    expect(() => loadCifar10Binary(root, "train")).toThrow(/data_batch_5\.bin is missing/);
    expect(() => cifar10RecordCount(root, "train")).toThrow(InvalidConfigError);
  });

  test("a label byte above 9 is rejected", () => {
    writeCifarDir(root);
    const bad = record(100);
    bad[0] = 10;
    writeFileSync(join(root, "test_batch.bin"), bad);
    expect(() => loadCifar10Binary(root, "test")).toThrow(/record 0 has label 10/);
  });
});

describe("loadDataset with a CIFAR-10 directory", () => {
  test("gives each node a disjoint IID share of both splits, capped by the counts", () => {
    writeCifarDir(root);
    const nodes = [0, 1].map((partitionId) =>
      loadDataset({ cifarDir: root, numPartitions: 2, partitionId, trainCount: 100, testCount: 100 }),
    );
    // Labels identify records here only through the pixels; use a pixel that encodes the id.
    const ids = (images: Float32Array, count: number): number[] =>
      Array.from({ length: count }, (_, i) => {
        const byte = Math.round((images[i * IMAGE_SIZE]! + 1) * 127.5); // channel 0, row 0, col 0
        return (byte * 183) % 256; // inverse of *7 mod 256
      });
    const trainIds = nodes.map((n) => ids(n.train.images, n.train.count));
    expect(trainIds[0]!.length).toBe(5);
    expect(trainIds[1]!.length).toBe(5);
    expect([...trainIds[0]!, ...trainIds[1]!].sort((a, b) => a - b)).toEqual([0, 1, 2, 3, 4, 5, 6, 7, 8, 9]);
    const testIds = nodes.map((n) => ids(n.test.images, n.test.count));
    expect([...testIds[0]!, ...testIds[1]!].sort((a, b) => a - b)).toEqual([100, 101, 102, 103]);
    expect(nodes[0]!.train.source).toContain("IID partition 0/2");

    const capped = loadDataset({ cifarDir: root, numPartitions: 2, partitionId: 1, trainCount: 2, testCount: 1 });
    expect(capped.train.count).toBe(2);
    expect(capped.test.count).toBe(1);
    expect(ids(capped.train.images, 2)).toEqual(trainIds[1]!.slice(0, 2));
  });
});
