/**
 * Aggregation math: small hand-computed cases, then bit-exact agreement with NumPy running
 * Flower 1.10's formulas (fixtures/aggregate-numpy.json, made by fixtures/generate_vectors.py).
 */
import { ndarraysToParameters, parametersToNdarrays } from "../../src/core/records/parameters";
import type { NDArray, NDArrays } from "../../src/core/records/types";
import { RoundFailedError } from "../../src/core/errors";
import type { ClientProxy } from "../../src/server/client-proxy";
import {
  FedAdam,
  aggregate,
  aggregateInplace,
  aggregateMedian,
  weightedLossAvg,
  type FitResult,
} from "../../src/server/strategy";
import vectors from "./fixtures/aggregate-numpy.json";

interface JsonArray {
  dtype: string;
  shape: number[];
  data: number[];
}

function f32(shape: number[], data: number[]): NDArray {
  return { dtype: "float32", shape, data: Float32Array.from(data) };
}

function fromJson(arrays: JsonArray[]): NDArrays {
  return arrays.map((a) => {
    expect(a.dtype).toBe("float32");
    return f32(a.shape, a.data);
  });
}

/** Exact equality of values (as float32) and shape. */
function expectSameArrays(actual: NDArrays, expected: JsonArray[]): void {
  expect(actual).toHaveLength(expected.length);
  actual.forEach((a, i) => {
    expect(a.dtype).toBe(expected[i]!.dtype);
    expect(a.shape).toEqual(expected[i]!.shape);
    expect(Array.from(a.data as Float32Array)).toEqual(Array.from(Float32Array.from(expected[i]!.data)));
  });
}

describe("weighted average (FedAvg)", () => {
  it("weights each client by num_examples / total", () => {
    // (1*1 + 3*5) / 4 = 4 ; (1*2 + 3*(-2)) / 4 = -1
    const results: Array<[NDArrays, number]> = [
      [[f32([2], [1, 2])], 1],
      [[f32([2], [5, -2])], 3],
    ];
    for (const agg of [aggregateInplace, aggregate]) {
      const [out] = agg(results);
      expect(out!.dtype).toBe("float32");
      expect(out!.shape).toEqual([2]);
      expect(Array.from(out!.data as Float32Array)).toEqual([4, -1]);
    }
  });

  it("keeps float64 as float64 and turns integer arrays into float64, as NumPy does", () => {
    const f64: NDArray = { dtype: "float64", shape: [1], data: Float64Array.from([0.1]) };
    const i32: NDArray = { dtype: "int32", shape: [1], data: Int32Array.from([3]) };
    const [a] = aggregateInplace([
      [[f64], 1],
      [[f64], 1],
    ]);
    expect(a!.dtype).toBe("float64");
    expect(a!.data[0]).toBe(0.5 * 0.1 + 0.5 * 0.1);
    const [b] = aggregateInplace([
      [[i32], 1],
      [[i32], 3],
    ]);
    expect(b!.dtype).toBe("float64");
    expect(b!.data[0]).toBe(3);
  });

  it("matches NumPy bit for bit (aggregate_inplace and aggregate, float32)", () => {
    const results = vectors.clients.map((c, i): [NDArrays, number] => [fromJson(c), vectors.nums[i]!]);
    expectSameArrays(aggregateInplace(results), vectors.inplace);
    expectSameArrays(aggregate(results), vectors.aggregate);
  });

  it("refuses results with different shapes, naming them", () => {
    expect(() =>
      aggregateInplace([
        [[f32([2], [1, 2])], 1],
        [[f32([3], [1, 2, 3])], 1],
      ]),
    ).toThrow(RoundFailedError);
    expect(() =>
      aggregateInplace([
        [[f32([2], [1, 2])], 1],
        [[f32([3], [1, 2, 3])], 1],
      ]),
    ).toThrow(/array 0 of result 1 has shape \[3\]/);
    expect(() => aggregateInplace([[[f32([1], [1])], 0]])).toThrow(/0 examples/);
  });
});

describe("element-wise median (FedMedian)", () => {
  it("takes the middle value, or the mean of the two middle values", () => {
    const three: Array<[NDArrays, number]> = [
      [[f32([3], [1, 10, -1])], 100],
      [[f32([3], [2, 30, -5])], 1],
      [[f32([3], [9, 20, -3])], 1],
    ];
    expect(Array.from(aggregateMedian(three)[0]!.data as Float32Array)).toEqual([2, 20, -3]);
    const two = three.slice(0, 2);
    expect(Array.from(aggregateMedian(two)[0]!.data as Float32Array)).toEqual([1.5, 20, -3]);
  });

  it("matches NumPy's np.median(axis=0)", () => {
    const clients = vectors.clients.map((c, i): [NDArrays, number] => [fromJson(c), vectors.nums[i]!]);
    expectSameArrays(aggregateMedian(clients), vectors.median3);
    expectSameArrays(aggregateMedian(clients.slice(0, 2)), vectors.median2);
  });

  it("gives NaN where any client has NaN", () => {
    const out = aggregateMedian([
      [[f32([2], [NaN, 1])], 1],
      [[f32([2], [1, 2])], 1],
      [[f32([2], [2, 3])], 1],
    ]);
    expect(Number.isNaN(out[0]!.data[0] as number)).toBe(true);
    expect(out[0]!.data[1]).toBe(2);
  });
});

describe("weightedLossAvg", () => {
  it("is sum(n * loss) / sum(n)", () => {
    expect(
      weightedLossAvg([
        [10, 1.0],
        [30, 2.0],
      ]),
    ).toBe(1.75);
    expect(
      weightedLossAvg([
        [1, 0.1],
        [2, 0.2],
      ]),
    ).toBe((1 * 0.1 + 2 * 0.2) / 3);
  });
});

const proxy = (cid: string): ClientProxy => ({ cid }) as unknown as ClientProxy;

function fitResult(cid: string, arrays: NDArrays, numExamples: number): FitResult {
  return [
    proxy(cid),
    { status: { code: 0, message: "Success" }, parameters: ndarraysToParameters(arrays), numExamples, metrics: {} },
  ];
}

describe("FedAdam", () => {
  it("takes one Adam step from the FedAvg aggregate (hand-computed)", () => {
    // w = 1, clients average to 3 => delta = 2; m = 0.1 * 2 = 0.2; v = 0.01 * 4 = 0.04;
    // w' = 1 + 0.1 * 0.2 / (sqrt(0.04) + 1e-9) ~= 1.1 (computed in float32).
    const strategy = new FedAdam({ initialParameters: ndarraysToParameters([f32([1], [1])]) });
    const [params] = strategy.aggregateFit(
      1,
      [fitResult("a", [f32([1], [2])], 1), fitResult("b", [f32([1], [4])], 1)],
      [],
    );
    const [w] = parametersToNdarrays(params!);
    const r = Math.fround;
    const expected = r(1 + r(r(r(0.1) * r(0.2)) / r(r(Math.sqrt(r(0.04))) + r(1e-9))));
    expect(w!.dtype).toBe("float32");
    expect(w!.data[0]).toBe(expected);
    expect(w!.data[0]).toBeCloseTo(1.1, 6);
  });

  it("matches NumPy running Flower's FedAdam for two rounds", () => {
    const strategy = new FedAdam({ initialParameters: ndarraysToParameters(fromJson(vectors.fedadam.initial)) });
    vectors.fedadam.steps.forEach((step, round) => {
      const results = step.clients.map((c, i) => fitResult(String(i), fromJson(c), step.nums[i]!));
      const [params] = strategy.aggregateFit(round + 1, results, []);
      expectSameArrays(parametersToNdarrays(params!), step.result);
    });
  });

  it("skips the step when there is nothing to aggregate", () => {
    const strategy = new FedAdam({ initialParameters: ndarraysToParameters([f32([1], [1])]) });
    expect(strategy.aggregateFit(1, [], [new Error("gone")])).toEqual([undefined, {}]);
  });
});
