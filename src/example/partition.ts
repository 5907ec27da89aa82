/**
 * IID partitioning: shuffle all indices once with a shared seed, then cut the shuffled list into
 * `numPartitions` contiguous slices whose sizes differ by at most one. Every node computes the
 * same permutation from the same seed, so the slices are disjoint and together cover the dataset
 * without any coordination.
 */
import { InvalidConfigError } from "../core/errors";
import { selectImages, type ImageDataset } from "./dataset";
import { seededPermutation } from "./random";

/** Checks a (numPartitions, partitionId) pair; throws InvalidConfigError with the reason. */
export function validatePartition(numPartitions: number, partitionId: number): void {
  if (!Number.isInteger(numPartitions) || numPartitions < 1) {
    throw new InvalidConfigError(`num-partitions must be a positive integer, got ${numPartitions}`);
  }
  if (!Number.isInteger(partitionId) || partitionId < 0 || partitionId >= numPartitions) {
    throw new InvalidConfigError(
      `partition-id must be an integer in [0, ${numPartitions - 1}] for ${numPartitions} partitions, got ${partitionId}`,
    );
  }
}

/**
 * The indices (into a dataset of `total` items) that make up partition `partitionId`. Partition
 * sizes are floor(total / numPartitions) or one more; the first `total % numPartitions`
 * partitions get the extra item.
 */
export function iidPartitionIndices(total: number, numPartitions: number, partitionId: number, seed: number): number[] {
  validatePartition(numPartitions, partitionId);
  if (!Number.isInteger(total) || total < 0)
    throw new RangeError(`dataset size must be a non-negative integer, got ${total}`);
  const base = Math.floor(total / numPartitions);
  const extra = total % numPartitions;
  const start = partitionId * base + Math.min(partitionId, extra);
  const size = base + (partitionId < extra ? 1 : 0);
  return seededPermutation(total, seed).slice(start, start + size);
}

/**
 * Partition `partitionId` of `numPartitions` IID partitions of `dataset` (a copy). Calls with
 * the same dataset and seed but different partition ids return disjoint sets of images.
 */
export function partitionIid(
  dataset: ImageDataset,
  numPartitions: number,
  partitionId: number,
  seed: number,
): ImageDataset {
  const indices = iidPartitionIndices(dataset.count, numPartitions, partitionId, seed);
  return selectImages(dataset, indices, `${dataset.source}, IID partition ${partitionId}/${numPartitions}`);
}
