/**
 * The synthetic dataset (deterministic, balanced, CIFAR-shaped) and IID partitioning (disjoint,
 * covering, same answer on every node).
 */
import { createHash } from "node:crypto";

import { InvalidConfigError } from "../../src/core/errors";
import { IMAGE_SIZE, classCounts, type ImageDataset } from "../../src/example/dataset";
import { iidPartitionIndices, partitionIid } from "../../src/example/partition";
import { SYNTHETIC_SOURCE, syntheticCifarLike } from "../../src/example/synthetic-data";
import { loadDataset } from "../../src/example/task";

/** One fingerprint per image (pixels and label), to compare datasets as sets. */
function fingerprints(dataset: ImageDataset): string[] {
  return Array.from({ length: dataset.count }, (_, i) => {
    const pixels = dataset.images.subarray(i * IMAGE_SIZE, (i + 1) * IMAGE_SIZE);
    return createHash("sha256")
      .update(new Uint8Array(pixels.buffer, pixels.byteOffset, pixels.byteLength))
      .update(String(dataset.labels[i]))
      .digest("hex");
  });
}

describe("syntheticCifarLike", () => {
  test("the same seed gives identical data; another seed gives different data", () => {
    const a = syntheticCifarLike({ count: 60, seed: 7 });
    const b = syntheticCifarLike({ count: 60, seed: 7 });
    const c = syntheticCifarLike({ count: 60, seed: 8 });
    expect(Buffer.from(a.images.buffer).equals(Buffer.from(b.images.buffer))).toBe(true);
    expect(Array.from(a.labels)).toEqual(Array.from(b.labels));
    expect(Buffer.from(a.images.buffer).equals(Buffer.from(c.images.buffer))).toBe(false);
  });

  test("is CIFAR-shaped, normalised to [-1, 1], labelled as synthetic, and images differ", () => {
    const data = syntheticCifarLike({ count: 40, seed: 1 });
    expect(data.count).toBe(40);
    expect(data.images.length).toBe(40 * 32 * 32 * 3);
    expect(data.labels.length).toBe(40);
    let min = Infinity;
    let max = -Infinity;
    for (const v of data.images) {
      min = Math.min(min, v);
      max = Math.max(max, v);
    }
    expect(min).toBeGreaterThanOrEqual(-1);
    expect(max).toBeLessThanOrEqual(1);
    expect(max - min).toBeGreaterThan(1); // not a constant image
    expect(data.source).toBe(SYNTHETIC_SOURCE);
    expect(data.source).toMatch(/not real CIFAR-10/);
    expect(new Set(fingerprints(data)).size).toBe(40);
  });

  test("labels are balanced across the 10 classes and shuffled", () => {
    expect(classCounts(syntheticCifarLike({ count: 200, seed: 3 }))).toEqual(new Array(10).fill(20));
    const uneven = classCounts(syntheticCifarLike({ count: 103, seed: 3 }));
    expect(uneven.reduce((a, b) => a + b, 0)).toBe(103);
    expect(Math.max(...uneven) - Math.min(...uneven)).toBe(1);
    const labels = Array.from(syntheticCifarLike({ count: 50, seed: 3 }).labels);
    expect(labels).not.toEqual(labels.map((_, i) => i % 10));
  });

  test("generating a subset of indices gives exactly those images of the full dataset", () => {
    const full = syntheticCifarLike({ count: 30, seed: 11 });
    const part = syntheticCifarLike({ count: 30, seed: 11, indices: [29, 3, 17] });
    expect(part.count).toBe(3);
    const all = fingerprints(full);
    expect(fingerprints(part)).toEqual([all[29], all[3], all[17]]);
    expect(() => syntheticCifarLike({ count: 30, seed: 11, indices: [30] })).toThrow(RangeError);
  });
});

describe("IID partitioning", () => {
  test("partitions are disjoint, cover every index, and differ in size by at most one", () => {
    for (const [total, parts] of [
      [103, 3],
      [10, 10],
      [7, 2],
      [5, 1],
    ] as const) {
      const slices = Array.from({ length: parts }, (_, id) => iidPartitionIndices(total, parts, id, 5));
      const all = slices.flat();
      expect(all.length).toBe(total);
      expect(new Set(all).size).toBe(total);
      expect(Math.min(...all)).toBe(0);
      expect(Math.max(...all)).toBe(total - 1);
      const sizes = slices.map((s) => s.length);
      expect(Math.max(...sizes) - Math.min(...sizes)).toBeLessThanOrEqual(1);
    }
  });

  test("the split is shuffled and fixed by the seed", () => {
    expect(iidPartitionIndices(100, 2, 0, 5)).toEqual(iidPartitionIndices(100, 2, 0, 5));
    expect(iidPartitionIndices(100, 2, 0, 5)).not.toEqual(iidPartitionIndices(100, 2, 0, 6));
    expect(iidPartitionIndices(100, 2, 0, 5)).not.toEqual(Array.from({ length: 50 }, (_, i) => i));
  });

  test("partitionIid splits a dataset into disjoint, covering, roughly balanced shares", () => {
    const data = syntheticCifarLike({ count: 400, seed: 2 });
    const shares = [0, 1, 2].map((id) => partitionIid(data, 3, id, 9));
    expect(shares.map((s) => s.count)).toEqual([134, 133, 133]);
    const prints = shares.map(fingerprints);
    expect(new Set(prints.flat())).toEqual(new Set(fingerprints(data)));
    expect(new Set(prints.flat()).size).toBe(400);
    // IID: every class shows up in every share.
    for (const share of shares) expect(Math.min(...classCounts(share))).toBeGreaterThan(0);
    expect(shares[1]!.source).toContain("IID partition 1/3");
  });

  test("bad partition arguments are InvalidConfigError", () => {
    const data = syntheticCifarLike({ count: 10, seed: 2 });
    expect(() => partitionIid(data, 0, 0, 1)).toThrow(InvalidConfigError);
    expect(() => partitionIid(data, 2, 2, 1)).toThrow(/partition-id must be an integer in \[0, 1\]/);
    expect(() => partitionIid(data, 2, -1, 1)).toThrow(InvalidConfigError);
    expect(() => partitionIid(data, 1.5, 0, 1)).toThrow(InvalidConfigError);
  });
});

describe("loadDataset (synthetic)", () => {
  test("nodes get disjoint training and test sets of the requested sizes", () => {
    const nodes = [0, 1].map((partitionId) =>
      loadDataset({ numPartitions: 2, partitionId, trainCount: 50, testCount: 20 }),
    );
    for (const node of nodes) {
      expect(node.train.count).toBe(50);
      expect(node.test.count).toBe(20);
      expect(node.train.source).toContain("synthetic");
    }
    const trainPrints = nodes.map((n) => fingerprints(n.train));
    const testPrints = nodes.map((n) => fingerprints(n.test));
    const everything = [...trainPrints.flat(), ...testPrints.flat()];
    expect(new Set(everything).size).toBe(everything.length);
    // Deterministic: the same node loads the same data again.
    expect(
      fingerprints(loadDataset({ numPartitions: 2, partitionId: 1, trainCount: 50, testCount: 20 }).train),
    ).toEqual(trainPrints[1]);
  });

  test("bad counts are InvalidConfigError", () => {
    expect(() => loadDataset({ numPartitions: 2, partitionId: 0, trainCount: 0 })).toThrow(
      /train count must be a positive integer/,
    );
    expect(() => loadDataset({ numPartitions: 2, partitionId: 0, testCount: 2.5 })).toThrow(InvalidConfigError);
    expect(() => loadDataset({ numPartitions: 2, partitionId: 3 })).toThrow(InvalidConfigError);
  });
});
