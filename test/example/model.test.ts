/**
 * The example CNN: architecture, deterministic initialisation, weights <-> NDArrays, and that
 * training on the synthetic data actually learns.
 */
import type { LayersModel } from "@tensorflow/tfjs";

import { InvalidConfigError, MalformedMessageError } from "../../src/core/errors";
import type { NDArrays } from "../../src/core/records/types";
import { loadTensorFlow } from "../../src/example/tensorflow";
import { createModel, evaluate, getWeights, setWeights, train } from "../../src/example/model";
import { loadDataset } from "../../src/example/task";
import { requireDist } from "../helpers/dist";
import { runNodeScript } from "../helpers/node-script";

const { tf } = loadTensorFlow();
const models: LayersModel[] = [];
const model = (seed?: number): LayersModel => {
  const m = createModel(tf, seed);
  models.push(m);
  return m;
};
afterAll(() => {
  for (const m of models) m.dispose();
});

const bytesOf = (arrays: NDArrays): Buffer[] =>
  arrays.map((a) => Buffer.from(a.data.buffer, a.data.byteOffset, a.data.byteLength));

describe("createModel / getWeights", () => {
  test("has Flower's Net layer sizes: 10 float32 arrays, 62,006 parameters", () => {
    const weights = getWeights(model(0));
    expect(weights.map((w) => w.shape)).toEqual([
      [5, 5, 3, 6],
      [6],
      [5, 5, 6, 16],
      [16],
      [400, 120],
      [120],
      [120, 84],
      [84],
      [84, 10],
      [10],
    ]);
    for (const w of weights) {
      expect(w.dtype).toBe("float32");
      expect(w.data).toBeInstanceOf(Float32Array);
      expect(w.data.length).toBe(w.shape.reduce((a, b) => a * b, 1));
    }
    expect(weights.reduce((n, w) => n + w.data.length, 0)).toBe(62006);
  });

  test("initialisation is deterministic in the seed", () => {
    const a = bytesOf(getWeights(model(5)));
    const b = bytesOf(getWeights(model(5)));
    const c = bytesOf(getWeights(model(6)));
    a.forEach((bytes, i) => expect(bytes.equals(b[i]!)).toBe(true));
    expect(a[0]!.equals(c[0]!)).toBe(false);
    // Kernels are random, biases start at zero.
    const first = getWeights(model(5));
    expect(first[0]!.data.some((v) => v !== 0)).toBe(true);
    expect(first[1]!.data.every((v) => v === 0)).toBe(true);
  });

  test("getWeights returns copies", () => {
    const m = model(1);
    const w = getWeights(m);
    w[0]!.data[0] = 123;
    expect(getWeights(m)[0]!.data[0]).not.toBe(123);
  });
});

describe("setWeights", () => {
  test("round-trips: weights set on one model read back identically", () => {
    const source = getWeights(model(1));
    const target = model(2);
    setWeights(target, source);
    const back = bytesOf(getWeights(target));
    bytesOf(source).forEach((bytes, i) => expect(bytes.equals(back[i]!)).toBe(true));
  });

  test("float64 arrays are accepted and narrowed to float32", () => {
    const source = getWeights(model(3));
    const asDouble: NDArrays = source.map((a) => ({
      dtype: "float64",
      shape: a.shape,
      data: Float64Array.from(a.data as Float32Array),
    }));
    const target = model(4);
    setWeights(target, asDouble);
    const back = bytesOf(getWeights(target));
    bytesOf(source).forEach((bytes, i) => expect(bytes.equals(back[i]!)).toBe(true));
  });

  test("a mismatch is MalformedMessageError naming the array, and leaves the model unchanged", () => {
    const target = model(7);
    const before = bytesOf(getWeights(target));
    const good = getWeights(model(8));

    const wrongShape = good.map((a, i) => (i === 2 ? { ...a, shape: [5, 5, 16, 6] } : a));
    expect(() => setWeights(target, wrongShape)).toThrow(MalformedMessageError);
    expect(() => setWeights(target, wrongShape)).toThrow(
      /weight array 2 \(.*conv2.*\) has shape \[5, 5, 16, 6\], the model expects \[5, 5, 6, 16\]/,
    );

    expect(() => setWeights(target, good.slice(0, 9))).toThrow(/expects 10 weight arrays, got 9/);
    const shortData = good.map((a, i) => (i === 1 ? { ...a, data: new Float32Array(5) } : a));
    expect(() => setWeights(target, shortData)).toThrow(/weight array 1 .* has 5 values for shape \[6\]/);
    const wrongType = good.map((a, i) =>
      i === 9 ? { dtype: "int32" as const, shape: [10], data: new Int32Array(10) } : a,
    );
    expect(() => setWeights(target, wrongType)).toThrow(/dtype int32, expected float32/);

    const after = bytesOf(getWeights(target));
    before.forEach((bytes, i) => expect(bytes.equals(after[i]!)).toBe(true));
  });
});

// Training runs in a plain Node process on dist/, as the example's SuperNodes run it: inside
// jest's vm context TensorFlow.js's pure-JS kernels are about 3x slower.
const TRAIN_SCRIPT = `
const { loadTensorFlow } = require("./dist/example/tensorflow");
const { createModel, evaluate, getWeights, train } = require("./dist/example/model");
const { loadDataset } = require("./dist/example/task");
(async () => {
  const { tf } = loadTensorFlow();
  const { train: trainData, test: testData } = loadDataset({ numPartitions: 1, partitionId: 0, trainCount: 200, testCount: 100, seed: 1 });
  const m = createModel(tf, 0);
  const untrained = await evaluate(m, testData);
  const fit = await train(m, trainData, { epochs: 2, batchSize: 16, learningRate: 0.003, shuffleSeed: 1 });
  const trained = await evaluate(m, testData);
  const { train: small } = loadDataset({ numPartitions: 1, partitionId: 0, trainCount: 32, testCount: 1, seed: 2 });
  const runs = [];
  for (let i = 0; i < 2; i++) {
    const r = createModel(tf, 9);
    await train(r, small, { epochs: 1, batchSize: 16, learningRate: 0.003, shuffleSeed: 4 });
    runs.push(getWeights(r).map((a) => Buffer.from(a.data.buffer, a.data.byteOffset, a.data.byteLength).toString("base64")));
  }
  console.log(JSON.stringify({ untrained, fit, trained, sameWeights: runs[0].map((w, i) => w === runs[1][i]) }));
})();
`;

interface TrainOutcome {
  untrained: { loss: number; accuracy: number };
  fit: { loss: number; accuracy: number };
  trained: { loss: number; accuracy: number };
  sameWeights: boolean[];
}

describe("train / evaluate", () => {
  let outcome: TrainOutcome;
  beforeAll(async () => {
    requireDist();
    const r = await runNodeScript(TRAIN_SCRIPT, [], 150_000);
    if (r.code !== 0) throw new Error(`training script exited ${String(r.code)}:\n${r.stderr}`);
    outcome = JSON.parse(r.stdout.trim().split("\n").pop() ?? "") as TrainOutcome;
  }, 160_000);

  test("two epochs on synthetic data raise held-out accuracy well above the untrained model", () => {
    const { untrained, fit, trained } = outcome;
    expect(untrained.loss).toBeGreaterThan(0);
    expect(untrained.accuracy).toBeLessThan(0.2); // ~chance for 10 balanced classes
    expect(Number.isFinite(fit.loss)).toBe(true);
    expect(fit.accuracy).toBeGreaterThan(0);
    expect(trained.accuracy).toBeGreaterThan(untrained.accuracy + 0.1);
    expect(trained.loss).toBeLessThan(untrained.loss);
  });

  test("training is reproducible from the same weights, data and shuffle seed", () => {
    expect(outcome.sameWeights).toEqual(Array(10).fill(true));
  });

  test("bad options and empty data are InvalidConfigError", async () => {
    const { train: data } = loadDataset({ numPartitions: 1, partitionId: 0, trainCount: 4, testCount: 1 });
    const m = model(0);
    await expect(train(m, data, { epochs: 0, batchSize: 16, learningRate: 0.01 })).rejects.toThrow(InvalidConfigError);
    await expect(train(m, data, { epochs: 1, batchSize: 0, learningRate: 0.01 })).rejects.toThrow(/batch size/);
    await expect(train(m, data, { epochs: 1, batchSize: 4, learningRate: -1 })).rejects.toThrow(/learning rate/);
    const empty = { images: new Float32Array(0), labels: new Int32Array(0), count: 0, source: "empty" };
    await expect(evaluate(m, empty)).rejects.toThrow(/empty dataset/);
    await expect(evaluate(m, data, 0)).rejects.toThrow(/batch size/);
  });
});
