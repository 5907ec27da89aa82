/**
 * loadTensorFlow: backend choice, caching, no Node.js banner, and the replacement CPU kernels
 * (conv2d filter gradient, max-pool gradient) against plain-JS reference implementations.
 */
import type { Tensor } from "@tensorflow/tfjs";

import type * as TensorFlowModule from "../../src/example/tensorflow";
import type { LoadedTensorFlow } from "../../src/example/tensorflow";

// Required lazily so the console.warn spy is in place before tfjs first loads in this file.
// eslint-disable-next-line @typescript-eslint/no-require-imports
const loadModule = (): typeof TensorFlowModule => require("../../src/example/tensorflow") as typeof TensorFlowModule;

let loaded: LoadedTensorFlow;
let bannerWarnings: unknown[][] = [];

beforeAll(() => {
  // Installed before tfjs is first loaded in this file's module registry, to see the banner.
  const warn = jest.spyOn(console, "warn").mockImplementation(() => undefined);
  try {
    const { loadTensorFlow } = loadModule();
    loaded = loadTensorFlow();
    const t = loaded.tf.add(loaded.tf.tensor1d([1, 2]), 1);
    t.dataSync();
    t.dispose();
    bannerWarnings = warn.mock.calls.filter((args) => /running TensorFlow\.js in Node\.js/.test(String(args[0])));
  } finally {
    warn.mockRestore();
  }
});

test("loads once and reports the backend it activated", () => {
  const { loadTensorFlow } = loadModule();
  expect(loadTensorFlow()).toBe(loaded);
  expect(["cpu", "tfjs-node"]).toContain(loaded.backend);
  expect(loaded.tf.getBackend()).toBe(loaded.backend === "cpu" ? "cpu" : "tensorflow");
});

test("does not print tfjs's 'running TensorFlow.js in Node.js' banner", () => {
  expect(bannerWarnings).toEqual([]);
});

/** Deterministic pseudo-random values with many exact zeros (like ReLU outputs) and ties. */
function values(n: number, seed: number, quantise = false): Float32Array {
  const out = new Float32Array(n);
  let s = seed >>> 0;
  for (let i = 0; i < n; i++) {
    s = (Math.imul(s, 1664525) + 1013904223) >>> 0;
    const v = s / 2 ** 32 - 0.4;
    out[i] = quantise ? Math.round(v * 4) : v < 0 ? 0 : v;
  }
  return out;
}

type Pad = "valid" | "same";

/** TensorFlow's padding: total = max((out-1)*stride + k - in, 0), top gets the smaller half. */
function padding(inSize: number, k: number, stride: number, pad: Pad): { out: number; before: number } {
  if (pad === "valid") return { out: Math.floor((inSize - k) / stride) + 1, before: 0 };
  const out = Math.ceil(inSize / stride);
  return { out, before: Math.floor(Math.max((out - 1) * stride + k - inSize, 0) / 2) };
}

describe("conv2d filter gradient", () => {
  const cases: Array<[Pad, number]> = [
    ["valid", 1],
    ["same", 1],
    ["same", 2],
    ["valid", 2],
  ];
  test.each(cases)("matches the definition (pad %s, stride %d)", (pad, stride) => {
    const { tf } = loaded;
    const [B, H, W, C, KH, KW, O] = [2, 9, 11, 3, 5, 3, 4];
    const xData = values(B * H * W * C, 1);
    const rows = padding(H, KH, stride, pad);
    const cols = padding(W, KW, stride, pad);
    const dyData = values(B * rows.out * cols.out * O, 2).map((v) => v - 0.2);

    const x = tf.tensor4d(xData, [B, H, W, C]);
    const dy = tf.tensor4d(dyData, [B, rows.out, cols.out, O]);
    const filter = tf.zeros([KH, KW, C, O]);
    // d/dw of sum(conv2d(x, w) * dy) is exactly the filter gradient for output gradient dy.
    const dw = tf.grad((w: Tensor) => tf.mul(tf.conv2d(x, w as never, stride, pad), dy).sum())(filter);
    const actual = dw.dataSync();

    const expected = new Float64Array(KH * KW * C * O);
    for (let b = 0; b < B; b++)
      for (let i = 0; i < rows.out; i++)
        for (let j = 0; j < cols.out; j++)
          for (let kh = 0; kh < KH; kh++)
            for (let kw = 0; kw < KW; kw++) {
              const r = i * stride - rows.before + kh;
              const c = j * stride - cols.before + kw;
              if (r < 0 || r >= H || c < 0 || c >= W) continue;
              for (let ci = 0; ci < C; ci++)
                for (let o = 0; o < O; o++) {
                  expected[((kh * KW + kw) * C + ci) * O + o]! +=
                    xData[((b * H + r) * W + c) * C + ci]! * dyData[((b * rows.out + i) * cols.out + j) * O + o]!;
                }
            }
    expect(actual.length).toBe(expected.length);
    expected.forEach((v, i) => expect(actual[i]).toBeCloseTo(v, 5));
    expect(expected.some((v) => v !== 0)).toBe(true);
    tf.dispose([x, dy, dw, filter]);
  });
});

describe("max-pool gradient", () => {
  const cases: Array<[Pad, number, number]> = [
    ["valid", 2, 2],
    ["same", 3, 2],
    ["same", 3, 1], // overlapping windows accumulate
  ];
  test.each(cases)(
    "routes each output gradient to the first maximum of its window (pad %s, size %d, stride %d)",
    (pad, size, stride) => {
      const { tf } = loaded;
      const [B, H, W, C] = [2, 7, 8, 3];
      const xData = values(B * H * W * C, 3, true); // small integers: many ties
      const rows = padding(H, size, stride, pad);
      const cols = padding(W, size, stride, pad);
      const dyData = Float32Array.from({ length: B * rows.out * cols.out * C }, (_, i) => i + 1);

      const x = tf.tensor4d(xData, [B, H, W, C]);
      const dy = tf.tensor4d(dyData, [B, rows.out, cols.out, C]);
      const dx = tf.grad((input: Tensor) => tf.mul(tf.maxPool(input as never, size, stride, pad), dy).sum())(x);
      const actual = dx.dataSync();

      const expected = new Float64Array(xData.length);
      for (let b = 0; b < B; b++)
        for (let i = 0; i < rows.out; i++)
          for (let j = 0; j < cols.out; j++)
            for (let ch = 0; ch < C; ch++) {
              let best = -Infinity;
              let at = -1;
              for (let r = i * stride - rows.before; r < i * stride - rows.before + size; r++)
                for (let c = j * stride - cols.before; c < j * stride - cols.before + size; c++) {
                  if (r < 0 || r >= H || c < 0 || c >= W) continue;
                  const index = ((b * H + r) * W + c) * C + ch;
                  if (xData[index]! > best) {
                    best = xData[index]!;
                    at = index;
                  }
                }
              expected[at]! += dyData[((b * rows.out + i) * cols.out + j) * C + ch]!;
            }
      expect(Array.from(actual)).toEqual(Array.from(expected));
      tf.dispose([x, dy, dx]);
    },
  );
});
