/**
 * useFastestBackend: without tfjs-node it moves TensorFlow.js to the WebAssembly backend, whose
 * missing training kernels (ReluGrad, Conv2D's filter gradient) are supplied; the gradients
 * match the CPU backend's.
 */
import type { Tensor, Tensor4D } from "@tensorflow/tfjs";
import { loadTensorFlow, useFastestBackend, type LoadedTensorFlow } from "../../src/example/tensorflow";

/** Gradients of sum(relu(conv2d(x, w))) with respect to x and w, as plain arrays. */
function gradients(t: LoadedTensorFlow, strides: number, pad: "valid" | "same"): number[][] {
  const { tf } = t;
  return tf.tidy(() => {
    const x = tf.tensor4d(
      Array.from({ length: 2 * 7 * 6 * 3 }, (_, i) => Math.sin(i * 0.37)),
      [2, 7, 6, 3],
    );
    const w = tf.tensor4d(
      Array.from({ length: 3 * 3 * 3 * 4 }, (_, i) => Math.cos(i * 0.11) * 0.5),
      [3, 3, 3, 4],
    );
    const f = (a: Tensor, b: Tensor): Tensor => tf.relu(tf.conv2d(a as Tensor4D, b as Tensor4D, strides, pad)).sum();
    const [dx, dw] = tf.grads(f)([x, w]);
    return [Array.from(dx!.dataSync()), Array.from(dw!.dataSync())];
  });
}

function expectClose(actual: number[][], expected: number[][]): void {
  expect(actual.map((a) => a.length)).toEqual(expected.map((e) => e.length));
  const worst = Math.max(...actual.flatMap((a, k) => a.map((v, i) => Math.abs(v - expected[k]![i]!))));
  expect(worst).toBeLessThan(1e-4);
}

test("switches to wasm (unless tfjs-node is there) and trains with the CPU backend's gradients", async () => {
  const cpu = loadTensorFlow();
  if (cpu.backend === "tfjs-node") {
    process.stdout.write("tensorflow-wasm.test: skipped, tfjs-node is installed (useFastestBackend keeps it)\n");
    return;
  }
  const expected = [gradients(cpu, 1, "valid"), gradients(cpu, 1, "same"), gradients(cpu, 2, "same")];
  const fast = await useFastestBackend();
  expect(fast.backend).toBe("wasm");
  expect(fast.tf.getBackend()).toBe("wasm");
  expect(loadTensorFlow()).toBe(fast);
  expect(await useFastestBackend()).toBe(fast);
  // Stride 1: the wasm convolution; stride 2: the JS kernel over wasm memory.
  expectClose(gradients(fast, 1, "valid"), expected[0]!);
  expectClose(gradients(fast, 1, "same"), expected[1]!);
  expectClose(gradients(fast, 2, "same"), expected[2]!);
});
