/**
 * The example's fit on the wasm backend (its own and our replacement kernels: ReluGrad, Conv2D's
 * filter and input gradients as convolutions, MaxPoolGrad, GatherV2 row copies) ends with the
 * same loss, accuracy and weights as on the CPU backend, from the same start on the same images.
 */
import type { NDArrays } from "../../src/core/records/types";
import { createModel, evaluate, getWeights, train } from "../../src/example/model";
import { syntheticCifarLike } from "../../src/example/synthetic-data";
import { loadTensorFlow, useFastestBackend, type LoadedTensorFlow } from "../../src/example/tensorflow";

const data = syntheticCifarLike({ count: 32, seed: 7 });
/** All weights as one list (the model's arrays are float32). */
const flat = (arrays: NDArrays): number[] => arrays.flatMap((w) => Array.from(w.data as Float32Array));

async function fitOnce(t: LoadedTensorFlow) {
  const model = createModel(t.tf, 0);
  try {
    const fit = await train(model, data, { epochs: 1, batchSize: 16, learningRate: 0.003, shuffleSeed: 1 });
    const evaluated = await evaluate(model, data, 20);
    return { fit, evaluated, weights: flat(getWeights(model)) };
  } finally {
    model.dispose();
  }
}

test("a fit on wasm gives the CPU backend's loss, accuracy and weights", async () => {
  const cpu = loadTensorFlow();
  if (cpu.backend === "tfjs-node") {
    process.stdout.write("wasm-fit.test: skipped, tfjs-node is installed (useFastestBackend keeps it)\n");
    return;
  }
  const expected = await fitOnce(cpu);
  const wasm = await useFastestBackend();
  expect(wasm.backend).toBe("wasm");
  const actual = await fitOnce(wasm);

  // float32 sums in another order: equal up to rounding, not bit for bit.
  expect(Math.abs(actual.fit.loss - expected.fit.loss)).toBeLessThan(1e-4);
  expect(actual.fit.accuracy).toBeCloseTo(expected.fit.accuracy, 6);
  expect(Math.abs(actual.evaluated.loss - expected.evaluated.loss)).toBeLessThan(1e-4);
  expect(actual.evaluated.accuracy).toBeCloseTo(expected.evaluated.accuracy, 6);
  expect(actual.weights.length).toBe(expected.weights.length);
  const worst = Math.max(...actual.weights.map((v, i) => Math.abs(v - expected.weights[i]!)));
  expect(worst).toBeLessThan(1e-4);
  // The fit moved the weights (so the comparison compares trained models, not two initial ones).
  const initialModel = createModel(cpu.tf, 0);
  const initial = flat(getWeights(initialModel));
  initialModel.dispose();
  expect(Math.max(...initial.map((v, i) => Math.abs(v - expected.weights[i]!)))).toBeGreaterThan(1e-3);
});
