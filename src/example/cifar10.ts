/**
 * Reader for the CIFAR-10 "binary version" (cifar-10-binary.tar.gz from
 * https://www.cs.toronto.edu/~kriz/cifar.html, extracted to `cifar-10-batches-bin/`).
 *
 * Each file is a sequence of 3073-byte records: 1 label byte (0-9), then 3072 pixel bytes in
 * channel-major order: the 1024 red values, then green, then blue, each plane row-major 32x32.
 * Images are converted to HWC and normalised to [-1, 1]. Nothing is downloaded.
 */
import * as fs from "node:fs";
import * as path from "node:path";

import { InvalidConfigError } from "../core/errors";
import { IMAGE_CHANNELS, IMAGE_HEIGHT, IMAGE_SIZE, IMAGE_WIDTH, NUM_CLASSES, type ImageDataset } from "./dataset";

export type Cifar10Split = "train" | "test";

/** Bytes per record: label byte + 32*32*3 pixel bytes. */
export const CIFAR10_RECORD_BYTES = 1 + IMAGE_SIZE;

const SPLIT_FILES: Record<Cifar10Split, readonly string[]> = {
  train: ["data_batch_1.bin", "data_batch_2.bin", "data_batch_3.bin", "data_batch_4.bin", "data_batch_5.bin"],
  test: ["test_batch.bin"],
};

/** The subdirectory name inside the official archive; accepted below the given directory too. */
const ARCHIVE_SUBDIR = "cifar-10-batches-bin";

interface BatchFile {
  path: string;
  records: number;
}

export interface LoadCifar10Options {
  /**
   * Read only these records (global indices across the split's files, in file order), in this
   * order. Default: every record. Lets a node load its partition without holding the whole
   * split in memory (all 50,000 training images are 600 MB as float32).
   */
  indices?: readonly number[];
}

/**
 * Number of records in a split, after checking that every file exists and has a whole number of
 * records. Throws InvalidConfigError naming the directory or file otherwise.
 */
export function cifar10RecordCount(dir: string, split: Cifar10Split): number {
  return batchFiles(dir, split).reduce((sum, file) => sum + file.records, 0);
}

/**
 * Loads a CIFAR-10 split ("train" = data_batch_1..5.bin, "test" = test_batch.bin) from `dir`
 * (the extracted `cifar-10-batches-bin` directory, or its parent).
 *
 * Throws InvalidConfigError for a missing directory or file, a file whose size is not a multiple
 * of 3073 bytes, a label byte above 9, or an index outside the split.
 */
export function loadCifar10Binary(dir: string, split: Cifar10Split, options: LoadCifar10Options = {}): ImageDataset {
  const files = batchFiles(dir, split);
  const total = files.reduce((sum, file) => sum + file.records, 0);
  const source = `CIFAR-10 binary (${path.resolve(dir)}, ${split})`;

  if (options.indices === undefined) {
    const dataset = allocate(total, source);
    let position = 0;
    for (const file of files) {
      const bytes = fs.readFileSync(file.path);
      for (let record = 0; record < file.records; record++, position++) {
        decodeRecord(bytes, record * CIFAR10_RECORD_BYTES, dataset, position, file.path, record);
      }
    }
    return dataset;
  }

  const indices = options.indices;
  const dataset = allocate(indices.length, source);
  const record = Buffer.alloc(CIFAR10_RECORD_BYTES);
  const handles = new Map<string, number>();
  try {
    indices.forEach((index, position) => {
      if (!Number.isInteger(index) || index < 0 || index >= total) {
        throw new InvalidConfigError(`CIFAR-10 ${split} record index ${index} is outside [0, ${total})`);
      }
      let local = index;
      let file = files[0]!;
      for (const candidate of files) {
        file = candidate;
        if (local < candidate.records) break;
        local -= candidate.records;
      }
      let fd = handles.get(file.path);
      if (fd === undefined) {
        fd = fs.openSync(file.path, "r");
        handles.set(file.path, fd);
      }
      const read = fs.readSync(fd, record, 0, CIFAR10_RECORD_BYTES, local * CIFAR10_RECORD_BYTES);
      if (read !== CIFAR10_RECORD_BYTES) {
        throw new InvalidConfigError(
          `CIFAR-10 file ${file.path} changed while reading (short read at record ${local})`,
        );
      }
      decodeRecord(record, 0, dataset, position, file.path, local);
    });
  } finally {
    for (const fd of handles.values()) fs.closeSync(fd);
  }
  return dataset;
}

function batchFiles(dir: string, split: Cifar10Split): BatchFile[] {
  const names = SPLIT_FILES[split];
  if (names === undefined) throw new InvalidConfigError(`unknown CIFAR-10 split "${split}" (use "train" or "test")`);
  if (!isDirectory(dir)) {
    throw new InvalidConfigError(
      `CIFAR-10 directory ${path.resolve(dir)} does not exist or is not a directory; ` +
        `extract cifar-10-binary.tar.gz and pass its ${ARCHIVE_SUBDIR} directory`,
    );
  }
  const nested = path.join(dir, ARCHIVE_SUBDIR);
  const base = !fs.existsSync(path.join(dir, names[0]!)) && isDirectory(nested) ? nested : dir;

  return names.map((name) => {
    const file = path.join(base, name);
    let size: number;
    try {
      const stat = fs.statSync(file);
      if (!stat.isFile()) throw new Error("not a regular file");
      size = stat.size;
    } catch (err) {
      throw new InvalidConfigError(
        `CIFAR-10 ${split} file ${path.resolve(file)} is missing or unreadable ` +
          `(the ${split} split needs ${names.join(", ")})`,
        { cause: err },
      );
    }
    if (size === 0 || size % CIFAR10_RECORD_BYTES !== 0) {
      throw new InvalidConfigError(
        `CIFAR-10 file ${path.resolve(file)} has ${size} bytes, not a positive multiple of ` +
          `${CIFAR10_RECORD_BYTES} (1 label byte + 3072 pixel bytes per image); ` +
          `it is truncated or not the CIFAR-10 binary version`,
      );
    }
    return { path: file, records: size / CIFAR10_RECORD_BYTES };
  });
}

function isDirectory(p: string): boolean {
  try {
    return fs.statSync(p).isDirectory();
  } catch {
    return false;
  }
}

function allocate(count: number, source: string): ImageDataset {
  return { images: new Float32Array(count * IMAGE_SIZE), labels: new Int32Array(count), count, source };
}

const PLANE = IMAGE_HEIGHT * IMAGE_WIDTH;

/** Writes the record at `bytes[offset..]` into slot `position` of `dataset`, CHW -> HWC. */
function decodeRecord(
  bytes: Uint8Array,
  offset: number,
  dataset: ImageDataset,
  position: number,
  file: string,
  record: number,
): void {
  const label = bytes[offset]!;
  if (label >= NUM_CLASSES) {
    throw new InvalidConfigError(`CIFAR-10 file ${file}: record ${record} has label ${label}, expected 0-9`);
  }
  dataset.labels[position] = label;
  const out = position * IMAGE_SIZE;
  const pixels = offset + 1;
  for (let pixel = 0; pixel < PLANE; pixel++) {
    for (let channel = 0; channel < IMAGE_CHANNELS; channel++) {
      dataset.images[out + pixel * IMAGE_CHANNELS + channel] = bytes[pixels + channel * PLANE + pixel]! / 127.5 - 1;
    }
  }
}
