/**
 * Aggregation math of Flower's `strategy/aggregate.py`, reproducing NumPy's dtype rules so
 * results match Flower bit for bit: float32 layers are computed in float32 (every operation
 * rounded with Math.fround, as NumPy does with a Python scalar and a float32 array); any other
 * input (float64, integers, mixed) is computed and returned as float64.
 */
import { RoundFailedError } from "../../core/errors";
import type { NDArray, NDArrays } from "../../core/records/types";

/** (arrays, num_examples) of one client. */
export type WeightedArrays = [NDArrays, number];

type Precision = "float32" | "float64";

function toNumbers(a: NDArray): ArrayLike<number> {
  if (a.data instanceof BigInt64Array) return Array.from(a.data, (v) => Number(v));
  return a.data;
}

function sameShape(a: number[], b: number[]): boolean {
  return a.length === b.length && a.every((d, i) => d === b[i]);
}

/** Checks that every client sent the same layers with the same shapes; returns layer count. */
function checkLayers(all: NDArrays[], what: string): number {
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

function layerPrecision(layers: NDArray[]): Precision {
  return layers.every((a) => a.dtype === "float32") ? "float32" : "float64";
}

function makeArray(precision: Precision, shape: number[], data: Float32Array | Float64Array): NDArray {
  return precision === "float32"
    ? { dtype: "float32", shape: [...shape], data: data }
    : { dtype: "float64", shape: [...shape], data: data };
}

function allocate(precision: Precision, size: number): Float32Array | Float64Array {
  return precision === "float32" ? new Float32Array(size) : new Float64Array(size);
}

/**
 * Flower's `aggregate_inplace` (FedAvg's default): weights n_i / total; the first client's
 * arrays are scaled, then each other client's scaled arrays are added, in result order.
 */
export function aggregateInplace(results: WeightedArrays[]): NDArrays {
  const numLayers = checkLayers(results.map(([a]) => a), "aggregate_inplace");
  const total = results.reduce((sum, [, n]) => sum + n, 0);
  if (!(total > 0)) throw new RoundFailedError("aggregate_inplace: the results report 0 examples in total");
  const factors = results.map(([, n]) => n / total);
  const out: NDArrays = [];
  for (let l = 0; l < numLayers; l++) {
    const layers = results.map(([a]) => a[l]!);
    const precision = layerPrecision(layers);
    const size = layers[0]!.data.length;
    const acc = allocate(precision, size);
    const r = precision === "float32" ? Math.fround : (x: number) => x;
    layers.forEach((layer, c) => {
      const x = toNumbers(layer);
      const f = r(factors[c]!);
      if (c === 0) for (let i = 0; i < size; i++) acc[i] = r(f * x[i]!);
      else for (let i = 0; i < size; i++) acc[i] = r(acc[i]! + r(f * x[i]!));
    });
    out.push(makeArray(precision, layers[0]!.shape, acc));
  }
  return out;
}

/**
 * Flower's `aggregate`: (sum over clients of arrays * n_i) / total. Same result dtype rules as
 * aggregateInplace; the rounding differs slightly, as it does in Flower.
 */
export function aggregate(results: WeightedArrays[]): NDArrays {
  const numLayers = checkLayers(results.map(([a]) => a), "aggregate");
  const total = results.reduce((sum, [, n]) => sum + n, 0);
  if (!(total > 0)) throw new RoundFailedError("aggregate: the results report 0 examples in total");
  const out: NDArrays = [];
  for (let l = 0; l < numLayers; l++) {
    const layers = results.map(([a]) => a[l]!);
    const precision = layerPrecision(layers);
    const size = layers[0]!.data.length;
    const acc = allocate(precision, size);
    const r = precision === "float32" ? Math.fround : (x: number) => x;
    const t = r(total);
    layers.forEach((layer, c) => {
      const x = toNumbers(layer);
      const n = r(results[c]![1]);
      if (c === 0) for (let i = 0; i < size; i++) acc[i] = r(x[i]! * n);
      else for (let i = 0; i < size; i++) acc[i] = r(acc[i]! + r(x[i]! * n));
    });
    for (let i = 0; i < size; i++) acc[i] = r(acc[i]! / t);
    out.push(makeArray(precision, layers[0]!.shape, acc));
  }
  return out;
}

/**
 * Flower's `aggregate_median`: element-wise median over clients (num_examples ignored); with an
 * even count, the mean of the two middle values. NaN anywhere in a position gives NaN there.
 */
export function aggregateMedian(results: WeightedArrays[]): NDArrays {
  const numLayers = checkLayers(results.map(([a]) => a), "aggregate_median");
  const out: NDArrays = [];
  const k = results.length;
  for (let l = 0; l < numLayers; l++) {
    const layers = results.map(([a]) => a[l]!);
    const precision = layerPrecision(layers);
    const r = precision === "float32" ? Math.fround : (x: number) => x;
    const size = layers[0]!.data.length;
    const columns = layers.map(toNumbers);
    const acc = allocate(precision, size);
    const column = new Float64Array(k);
    for (let i = 0; i < size; i++) {
      let hasNaN = false;
      for (let c = 0; c < k; c++) {
        const v = columns[c]![i]!;
        if (Number.isNaN(v)) hasNaN = true;
        column[c] = v;
      }
      if (hasNaN) {
        acc[i] = NaN;
        continue;
      }
      column.sort();
      const mid = k >> 1;
      acc[i] = k % 2 === 1 ? column[mid]! : r(r(column[mid - 1]! + column[mid]!) / 2);
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
