/**
 * Aggregation math of Flower's `strategy/aggregate.py`, reproducing NumPy's dtype rules so
 * results match Flower bit for bit: float32 layers are computed in float32 (every operation
 * rounded with Math.fround, as NumPy does with a Python scalar and a float32 array); any other
 * input (float64, integers, mixed) is computed and returned as float64.
 */
import { RoundFailedError } from "../../core/errors";
import type { DType, NDArray, NDArrays } from "../../core/records/types";

/** (arrays, num_examples) of one client. */
export type WeightedArrays = [NDArrays, number];

/**
 * One array of one result, read in element ranges: the aggregation below walks every array in
 * chunks, so a result can stay where it is (its received bytes, or a spill file, see
 * src/server/result-spill.ts) instead of being decoded into one more copy. Each element gets
 * the same operations in the same order as over whole arrays, so the results are bit-identical.
 */
export interface ArraySource {
  readonly dtype: DType;
  readonly shape: number[];
  /** Element count. */
  readonly length: number;
  /**
   * Elements [start, start + count) as numbers. The returned view may be reused by the next
   * read of any array of the same result: use it before reading that result again.
   */
  read(start: number, count: number): ArrayLike<number>;
}

/** (arrays, num_examples) of one client, as sources. */
export type WeightedSources = [ArraySource[], number];

/** Where an aggregated array is written: a fresh typed array of the shape's element count. */
export type Allocate = (precision: Precision, shape: number[]) => Float32Array | Float64Array;

type Precision = "float32" | "float64";

/** Elements per chunk: small enough that one chunk of every result fits in a few MiB. */
export const CHUNK_ELEMENTS = 1 << 18;

/** An in-memory array as a source (int64 values become numbers, as before). */
export function arraySource(a: NDArray): ArraySource {
  const data = a.data;
  return {
    dtype: a.dtype,
    shape: a.shape,
    length: data.length,
    read: (start, count) =>
      data instanceof BigInt64Array
        ? Array.from(data.subarray(start, start + count), (v) => Number(v))
        : data.subarray(start, start + count),
  };
}

function sameShape(a: number[], b: number[]): boolean {
  return a.length === b.length && a.every((d, i) => d === b[i]);
}

/** Checks that every client sent the same layers with the same shapes; returns layer count. */
function checkLayers(all: Array<Array<{ shape: number[] }>>, what: string): number {
  if (all.length === 0) throw new RoundFailedError(`${what}: no results to aggregate`);
  const first = all[0]!;
  all.forEach((arrays, c) => {
    if (arrays.length !== first.length) {
      throw new RoundFailedError(`${what}: result ${c} has ${arrays.length} arrays, result 0 has ${first.length}`);
    }
    arrays.forEach((a, l) => {
      if (!sameShape(a.shape, first[l]!.shape)) {
        throw new RoundFailedError(
          `${what}: array ${l} of result ${c} has shape [${a.shape.join(", ")}], result 0 has [${first[l]!.shape.join(", ")}]`,
        );
      }
    });
  });
  return first.length;
}

function layerPrecision(layers: Array<{ dtype: string }>): Precision {
  return layers.every((a) => a.dtype === "float32") ? "float32" : "float64";
}

function makeArray(precision: Precision, shape: number[], data: Float32Array | Float64Array): NDArray {
  return precision === "float32"
    ? { dtype: "float32", shape: [...shape], data: data }
    : { dtype: "float64", shape: [...shape], data: data };
}

/** Plain typed arrays. */
const allocateArray: Allocate = (precision, shape) => {
  const size = shape.reduce((n, d) => n * d, 1);
  return precision === "float32" ? new Float32Array(size) : new Float64Array(size);
};

function toSources(results: WeightedArrays[]): WeightedSources[] {
  return results.map(([arrays, n]) => [arrays.map(arraySource), n]);
}

/**
 * Flower's `aggregate_inplace` (FedAvg's default): weights n_i / total; the first client's
 * arrays are scaled, then each other client's scaled arrays are added, in result order.
 */
export function aggregateInplace(results: WeightedArrays[]): NDArrays {
  return aggregateInplaceSources(toSources(results));
}

/** aggregateInplace over sources, writing into arrays from `alloc`. */
export function aggregateInplaceSources(results: WeightedSources[], alloc: Allocate = allocateArray): NDArrays {
  const numLayers = checkLayers(
    results.map(([a]) => a),
    "aggregate_inplace",
  );
  const total = results.reduce((sum, [, n]) => sum + n, 0);
  if (!(total > 0)) throw new RoundFailedError("aggregate_inplace: the results report 0 examples in total");
  const factors = results.map(([, n]) => n / total);
  const out: NDArrays = [];
  for (let l = 0; l < numLayers; l++) {
    const layers = results.map(([a]) => a[l]!);
    const precision = layerPrecision(layers);
    const size = layers[0]!.length;
    const acc = alloc(precision, layers[0]!.shape);
    const r = precision === "float32" ? Math.fround : (x: number) => x;
    for (let s = 0; s < size; s += CHUNK_ELEMENTS) {
      const n = Math.min(CHUNK_ELEMENTS, size - s);
      layers.forEach((layer, c) => {
        const x = layer.read(s, n);
        const f = r(factors[c]!);
        if (c === 0) for (let i = 0; i < n; i++) acc[s + i] = r(f * x[i]!);
        else for (let i = 0; i < n; i++) acc[s + i] = r(acc[s + i]! + r(f * x[i]!));
      });
    }
    out.push(makeArray(precision, layers[0]!.shape, acc));
  }
  return out;
}

/**
 * Flower's `aggregate`: (sum over clients of arrays * n_i) / total. Same result dtype rules as
 * aggregateInplace; the rounding differs slightly, as it does in Flower.
 */
export function aggregate(results: WeightedArrays[]): NDArrays {
  return aggregateSources(toSources(results));
}

/** aggregate over sources, writing into arrays from `alloc`. */
export function aggregateSources(results: WeightedSources[], alloc: Allocate = allocateArray): NDArrays {
  const numLayers = checkLayers(
    results.map(([a]) => a),
    "aggregate",
  );
  const total = results.reduce((sum, [, n]) => sum + n, 0);
  if (!(total > 0)) throw new RoundFailedError("aggregate: the results report 0 examples in total");
  const out: NDArrays = [];
  for (let l = 0; l < numLayers; l++) {
    const layers = results.map(([a]) => a[l]!);
    const precision = layerPrecision(layers);
    const size = layers[0]!.length;
    const acc = alloc(precision, layers[0]!.shape);
    const r = precision === "float32" ? Math.fround : (x: number) => x;
    const t = r(total);
    for (let s = 0; s < size; s += CHUNK_ELEMENTS) {
      const n = Math.min(CHUNK_ELEMENTS, size - s);
      layers.forEach((layer, c) => {
        const x = layer.read(s, n);
        const w = r(results[c]![1]);
        if (c === 0) for (let i = 0; i < n; i++) acc[s + i] = r(x[i]! * w);
        else for (let i = 0; i < n; i++) acc[s + i] = r(acc[s + i]! + r(x[i]! * w));
      });
      for (let i = s; i < s + n; i++) acc[i] = r(acc[i]! / t);
    }
    out.push(makeArray(precision, layers[0]!.shape, acc));
  }
  return out;
}

/**
 * Flower's `aggregate_median`: element-wise median over clients (num_examples ignored); with an
 * even count, the mean of the two middle values. NaN anywhere in a position gives NaN there.
 */
export function aggregateMedian(results: WeightedArrays[]): NDArrays {
  return aggregateMedianSources(toSources(results));
}

/** aggregateMedian over sources, writing into arrays from `alloc`. */
export function aggregateMedianSources(results: WeightedSources[], alloc: Allocate = allocateArray): NDArrays {
  const numLayers = checkLayers(
    results.map(([a]) => a),
    "aggregate_median",
  );
  const out: NDArrays = [];
  const k = results.length;
  for (let l = 0; l < numLayers; l++) {
    const layers = results.map(([a]) => a[l]!);
    const precision = layerPrecision(layers);
    const r = precision === "float32" ? Math.fround : (x: number) => x;
    const size = layers[0]!.length;
    const acc = alloc(precision, layers[0]!.shape);
    const column = new Float64Array(k);
    for (let s = 0; s < size; s += CHUNK_ELEMENTS) {
      const n = Math.min(CHUNK_ELEMENTS, size - s);
      // Every source hands out its own view, so all k chunks can be held at once.
      const columns = layers.map((layer) => layer.read(s, n));
      for (let i = 0; i < n; i++) {
        let hasNaN = false;
        for (let c = 0; c < k; c++) {
          const v = columns[c]![i]!;
          if (Number.isNaN(v)) hasNaN = true;
          column[c] = v;
        }
        if (hasNaN) {
          acc[s + i] = NaN;
          continue;
        }
        column.sort();
        const mid = k >> 1;
        acc[s + i] = k % 2 === 1 ? column[mid]! : r(r(column[mid - 1]! + column[mid]!) / 2);
      }
    }
    out.push(makeArray(precision, layers[0]!.shape, acc));
  }
  return out;
}

/** Flower's `weighted_loss_avg`: sum(n_i * loss_i) / sum(n_i), over (num_examples, loss) pairs. */
export function weightedLossAvg(results: Array<[number, number]>): number {
  const total = results.reduce((sum, [n]) => sum + n, 0);
  if (!(total > 0)) throw new RoundFailedError("weighted_loss_avg: the results report 0 examples in total");
  let weighted = 0;
  for (const [n, loss] of results) weighted += n * loss;
  return weighted / total;
}
