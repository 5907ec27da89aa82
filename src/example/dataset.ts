/**
 * The in-memory image dataset shared by the example's loaders, partitioner and model code.
 */

export const IMAGE_HEIGHT = 32;
export const IMAGE_WIDTH = 32;
export const IMAGE_CHANNELS = 3;
/** Values per image (HWC order). */
export const IMAGE_SIZE = IMAGE_HEIGHT * IMAGE_WIDTH * IMAGE_CHANNELS;
export const NUM_CLASSES = 10;

/** CIFAR-10 label names, index = label. */
export const CIFAR10_CLASSES: readonly string[] = [
  "airplane",
  "automobile",
  "bird",
  "cat",
  "deer",
  "dog",
  "frog",
  "horse",
  "ship",
  "truck",
];

/**
 * `count` images of 32x32x3, stored image after image in HWC (row, column, channel) order and
 * normalised to [-1, 1] (pixel / 127.5 - 1, i.e. torchvision's Normalize(0.5, 0.5) after ToTensor).
 */
export interface ImageDataset {
  /** count * 32 * 32 * 3 values in [-1, 1]. */
  images: Float32Array;
  /** count labels in [0, 10). */
  labels: Int32Array;
  count: number;
  /** Where the images came from, for logs (e.g. "CIFAR-10 binary (/data/cifar, train)"). */
  source: string;
}

/** A new dataset holding copies of the images at `indices`, in that order. */
export function selectImages(dataset: ImageDataset, indices: readonly number[], source = dataset.source): ImageDataset {
  const images = new Float32Array(indices.length * IMAGE_SIZE);
  const labels = new Int32Array(indices.length);
  indices.forEach((index, position) => {
    if (!Number.isInteger(index) || index < 0 || index >= dataset.count) {
      throw new RangeError(`image index ${index} is outside [0, ${dataset.count})`);
    }
    images.set(dataset.images.subarray(index * IMAGE_SIZE, (index + 1) * IMAGE_SIZE), position * IMAGE_SIZE);
    labels[position] = dataset.labels[index]!;
  });
  return { images, labels, count: indices.length, source };
}

/** Number of images per label (length 10). */
export function classCounts(dataset: ImageDataset): number[] {
  const counts = new Array<number>(NUM_CLASSES).fill(0);
  for (const label of dataset.labels) counts[label] = (counts[label] ?? 0) + 1;
  return counts;
}
