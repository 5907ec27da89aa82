/**
 * The example's machine-learning task, in one import for the ClientApp and ServerApp: image
 * classification on CIFAR-10-shaped data (32x32x3, 10 classes), partitioned IID across
 * SuperNodes, with the small CNN of `model.ts`.
 *
 * Data: real CIFAR-10 when a directory holding the binary version is given (nothing is ever
 * downloaded), otherwise the offline synthetic stand-in of `synthetic-data.ts`, whose `source`
 * says so.
 *
 * Defaults are sized for the pure-JS TensorFlow.js backend: one round of local training plus
 * evaluation on one node (400 training images, 1 epoch, batch 16, then 200 test images) took
 * 4-5 s alone and 5.5-6.5 s with two nodes running at once on 2 cores, so the demo
 * (2 SuperNodes, 3 FedAvg rounds) fits in a minute including process startup. On the synthetic
 * data the global model's accuracy went 10% -> 35% -> 42% -> 49% over those 3 rounds.
 */
import { InvalidConfigError } from "../core/errors";
import { cifar10RecordCount, loadCifar10Binary } from "./cifar10";
import type { ImageDataset } from "./dataset";
import type { TrainOptions } from "./model";
import { iidPartitionIndices, validatePartition } from "./partition";
import { syntheticCifarLike } from "./synthetic-data";

export {
  loadTensorFlow,
  useFastestBackend,
  type LoadedTensorFlow,
  type TensorFlow,
  type TensorFlowBackend,
} from "./tensorflow";
export { CIFAR10_CLASSES, IMAGE_SIZE, NUM_CLASSES, classCounts, selectImages, type ImageDataset } from "./dataset";
export {
  CIFAR10_RECORD_BYTES,
  cifar10RecordCount,
  loadCifar10Binary,
  type Cifar10Split,
  type LoadCifar10Options,
} from "./cifar10";
export { SYNTHETIC_CLASSES, SYNTHETIC_SOURCE, syntheticCifarLike, type SyntheticOptions } from "./synthetic-data";
export { iidPartitionIndices, partitionIid, validatePartition } from "./partition";
export {
  MODEL_DESCRIPTION,
  createModel,
  evaluate,
  getWeights,
  setWeights,
  train,
  type EvaluateResult,
  type TrainOptions,
  type TrainResult,
} from "./model";

/** Training images per node (per partition). */
export const DEFAULT_TRAIN_COUNT = 400;
/** Test images per node (per partition). */
export const DEFAULT_TEST_COUNT = 200;
/** Seed of the synthetic data and of the partition shuffle; all nodes must use the same one. */
const DEFAULT_DATA_SEED = 42;
/** Local training per federated round. */
export const DEFAULT_TRAIN_OPTIONS: Readonly<TrainOptions> = Object.freeze({
  epochs: 1,
  batchSize: 16,
  learningRate: 0.003,
});

export interface LoadDatasetOptions {
  /** Directory with the CIFAR-10 binary version (or its parent); synthetic data when absent. */
  cifarDir?: string | undefined;
  /** Number of SuperNodes sharing the data; positive integer. */
  numPartitions: number;
  /** This node's partition, in [0, numPartitions). */
  partitionId: number;
  /** Training images for this node (default 400). With CIFAR-10, at most the partition's size. */
  trainCount?: number;
  /** Test images for this node (default 200). With CIFAR-10, at most the partition's size. */
  testCount?: number;
  /** Data and partition seed (default 42); must be the same on every node. */
  seed?: number;
}

export interface NodeDataset {
  train: ImageDataset;
  test: ImageDataset;
}

/**
 * This node's training and test data. Both splits are partitioned IID with the shared seed, so
 * the nodes' training sets (and their test sets) are disjoint.
 *
 * - CIFAR-10 (`cifarDir` given): each split is shuffled and cut into `numPartitions` slices; the
 *   node reads the first `trainCount` / `testCount` images of its slices from disk.
 * - Synthetic: a dataset of `trainCount * numPartitions` training images (and likewise for the
 *   test images, from a different seed) is partitioned the same way; only this node's images
 *   are generated.
 *
 * Throws InvalidConfigError for a bad partition, count, or CIFAR-10 directory.
 */
export function loadDataset(options: LoadDatasetOptions): NodeDataset {
  const { numPartitions, partitionId } = options;
  validatePartition(numPartitions, partitionId);
  const trainCount = positiveInteger(options.trainCount ?? DEFAULT_TRAIN_COUNT, "train count");
  const testCount = positiveInteger(options.testCount ?? DEFAULT_TEST_COUNT, "test count");
  const seed = options.seed ?? DEFAULT_DATA_SEED;
  if (!Number.isInteger(seed)) throw new InvalidConfigError(`data seed must be an integer, got ${seed}`);
  const partition = `IID partition ${partitionId}/${numPartitions}`;

  if (options.cifarDir !== undefined) {
    const dir = options.cifarDir;
    const load = (split: "train" | "test", count: number): ImageDataset => {
      const indices = iidPartitionIndices(cifar10RecordCount(dir, split), numPartitions, partitionId, seed).slice(
        0,
        count,
      );
      const dataset = loadCifar10Binary(dir, split, { indices });
      return { ...dataset, source: `${dataset.source}, ${partition}` };
    };
    return { train: load("train", trainCount), test: load("test", testCount) };
  }

  // Distinct seeds per split, so no test image repeats a training image.
  const synthetic = (count: number, splitSeed: number): ImageDataset => {
    const total = count * numPartitions;
    const indices = iidPartitionIndices(total, numPartitions, partitionId, seed);
    const dataset = syntheticCifarLike({ count: total, seed: splitSeed, indices });
    return { ...dataset, source: `${dataset.source}, ${partition}` };
  };
  return { train: synthetic(trainCount, seed * 2), test: synthetic(testCount, seed * 2 + 1) };
}

function positiveInteger(value: number, what: string): number {
  if (!Number.isInteger(value) || value < 1)
    throw new InvalidConfigError(`${what} must be a positive integer, got ${value}`);
  return value;
}
