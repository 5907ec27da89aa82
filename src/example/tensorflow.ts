/**
 * Loads TensorFlow.js once per process: the native `@tensorflow/tfjs-node` backend when it is
 * installed and works, otherwise the pure-JavaScript `@tensorflow/tfjs` CPU backend, which
 * `useFastestBackend` then moves to `@tensorflow/tfjs-backend-wasm` (SIMD; its threaded build
 * needs Web Workers from blob: URLs, which Node's worker_threads refuse, so tfjs disables it in
 * Node).
 *
 * The pure-JS CPU backend ships two training kernels written against its generic
 * `TensorBuffer.get(...)` accessor (Conv2DBackpropFilter and MaxPoolGrad); for a small CNN they
 * take ~95% of a training step. On the CPU backend this module replaces them with flat-array
 * versions that compute the same values (same summation set, same first-maximum tie rule), which
 * makes CNN training roughly 15x faster. The native backend is left untouched.
 */
import { dirname } from "node:path";
import { AppLoadError } from "../core/errors";
import type * as tfjs from "@tensorflow/tfjs";
import type {
  GradConfig,
  KernelConfig,
  KernelFunc,
  NamedAttrMap,
  Tensor,
  Tensor4D,
  TensorInfo,
} from "@tensorflow/tfjs";
import type * as TfWasm from "@tensorflow/tfjs-backend-wasm";

export type TensorFlow = typeof tfjs;
export type TensorFlowBackend = "tfjs-node" | "wasm" | "cpu";

export interface LoadedTensorFlow {
  tf: TensorFlow;
  /**
   * "tfjs-node": native libtensorflow; "wasm": @tensorflow/tfjs-backend-wasm (XNNPACK, SIMD),
   * after `useFastestBackend`; "cpu": pure-JS kernels (slow for convolutions).
   */
  backend: TensorFlowBackend;
}

let loaded: LoadedTensorFlow | undefined;

// Local aliases for the kernels' loops: global lookups are slow inside vm contexts (jest).
const { max, min } = Math;
const NEGATIVE_INFINITY = -Infinity;

/**
 * Returns the TensorFlow.js module and the backend in use. The first call loads it (tfjs-node if
 * it can be required and activates its "tensorflow" backend, else tfjs with the "cpu" backend);
 * later calls return the same object. Never throws for a missing or broken tfjs-node; throws
 * (saying what to install) when neither package is installed.
 */
export function loadTensorFlow(): LoadedTensorFlow {
  if (loaded !== undefined) return loaded;
  loaded = tryLoadNative() ?? loadPureJs();
  return loaded;
}

let switching: Promise<LoadedTensorFlow> | undefined;

/**
 * Without tfjs-node, moves TensorFlow.js to the WebAssembly backend (its .wasm files ship in
 * the npm package; nothing is downloaded), which trains the example's CNN several times faster
 * than the pure-JS CPU backend with the same accuracy (bench/README.md). It lacks two training
 * kernels, supplied here: ReluGrad, and Conv2D's filter gradient, computed as a wasm
 * convolution (or, for strides other than 1, by the JS kernel the CPU backend uses). Three slow
 * ones get faster paths with the same results: Conv2D's input gradient as a convolution
 * (stride 1), MaxPoolGrad by the JS kernel below, GatherV2 of whole rows (every batch `fit` cuts
 * out of the data) as copies. Stays on the CPU backend if WebAssembly cannot start. Call
 * before creating models; later calls return the same result.
 */
export function useFastestBackend(): Promise<LoadedTensorFlow> {
  switching ??= (async () => {
    const current = loadTensorFlow();
    if (current.backend !== "cpu") return current;
    try {
      const { tf } = current;
      // eslint-disable-next-line @typescript-eslint/no-require-imports
      const wasm = require("@tensorflow/tfjs-backend-wasm") as typeof TfWasm;
      wasm.setWasmPaths(dirname(require.resolve("@tensorflow/tfjs-backend-wasm/dist/tfjs-backend-wasm.wasm")) + "/");
      installWasmTrainingKernels(tf);
      if (!(await tf.setBackend("wasm"))) throw new Error("the wasm backend did not initialise");
      loaded = { tf, backend: "wasm" };
    } catch {
      void current.tf.setBackend("cpu").catch(() => undefined);
    }
    return loadTensorFlow();
  })();
  return switching;
}

/**
 * Pins TensorFlow.js to the backend `loadTensorFlow` chose (tfjs-node or cpu): later
 * `useFastestBackend` calls keep it instead of moving to wasm. For comparing backends (bench).
 */
export function keepCurrentBackend(): LoadedTensorFlow {
  const current = loadTensorFlow();
  switching ??= Promise.resolve(current);
  return current;
}

interface WasmBackendLike {
  makeOutput(shape: number[], dtype: string): TensorInfo;
  /** A view of the tensor in wasm memory (Int32Array for int32; typed here as the common case). */
  typedArrayFromHeap(info: TensorInfo): Float32Array;
}

/** The CPU backend's view (`data.get(...).values`, `makeTensorInfo`) of the wasm tensors in `inputs`. */
function wasmAsCpuBackend(wasmBackend: WasmBackendLike, inputs: KernelArgs["inputs"]): CpuBackendLike {
  const byId = new Map<object, TensorInfo>();
  for (const t of Object.values(inputs)) if (t !== undefined) byId.set(t.dataId, t);
  return {
    data: {
      get: (dataId) => ({
        values: byId.has(dataId) ? wasmBackend.typedArrayFromHeap(byId.get(dataId)!) : undefined,
      }),
    },
    makeTensorInfo: (shape, dtype, values) => {
      const out = wasmBackend.makeOutput(shape, dtype);
      wasmBackend.typedArrayFromHeap(out).set(values);
      return out;
    },
  };
}

/** Runs a CPU-backend JS kernel of this module over wasm memory; `what` names it in the error. */
function overWasmMemory(args: KernelArgs, kernel: (a: KernelArgs) => TensorInfo | undefined, what: string): TensorInfo {
  const out = kernel({ ...args, backend: wasmAsCpuBackend(args.backend as WasmBackendLike, args.inputs) });
  if (out === undefined) throw new Error(`${what} on wasm: only NHWC float32 is supported`);
  return out;
}

function installWasmTrainingKernels(tf: TensorFlow): void {
  // getKernel is typed as always finding one; it returns undefined when there is none.
  if ((tf.getKernel("ReluGrad", "wasm") as KernelConfig | undefined) === undefined) {
    tf.registerKernel({
      kernelName: "ReluGrad",
      backendName: "wasm",
      kernelFunc: ({ inputs, backend }) => {
        const wasmBackend = backend as WasmBackendLike;
        const dy = inputs["dy"]!;
        const y = inputs["y"]!;
        const out = wasmBackend.makeOutput([...dy.shape], "float32");
        const o = wasmBackend.typedArrayFromHeap(out);
        const d = wasmBackend.typedArrayFromHeap(dy);
        const yv = wasmBackend.typedArrayFromHeap(y);
        for (let i = 0; i < o.length; i++) o[i] = yv[i]! > 0 ? d[i]! : 0;
        return out;
      },
    });
  }
  if ((tf.getKernel(tf.Conv2DBackpropFilter, "wasm") as KernelConfig | undefined) === undefined) {
    // The CPU backend's JS kernel over wasm memory: for the cases the wasm convolution skips.
    tf.registerKernel({
      kernelName: tf.Conv2DBackpropFilter,
      backendName: "wasm",
      kernelFunc: (args) => overWasmMemory(args, (a) => conv2dBackpropFilter(tf, a), "Conv2DBackpropFilter"),
    });
  }
  // The wasm MaxPoolGrad and GatherV2 (which tf.LayersModel.fit uses to cut every batch out of the
  // data) are several times slower than plain copies: same values, faster paths.
  replaceKernel(tf, tf.MaxPoolGrad, "wasm", (original) => (args) => {
    const out = maxPoolGrad(tf, { ...args, backend: wasmAsCpuBackend(args.backend as WasmBackendLike, args.inputs) });
    return out ?? original(args);
  });
  replaceKernel(tf, tf.GatherV2, "wasm", (original) => (args) => gatherRows(args) ?? original(args));
  const original = tf.getGradient(tf.Conv2D) as GradConfig | undefined;
  if (original === undefined) return;
  tf.registerGradient({
    ...original,
    gradFunc: (dy, saved, attrs) => {
      const grads = original.gradFunc(dy, saved, attrs);
      if (tf.getBackend() !== "wasm") return grads;
      const [x, w] = saved as [Tensor4D, Tensor4D];
      const filter = conv2dFilterGradByOps(tf, x, dy as Tensor4D, attrs, w.shape);
      const input = conv2dInputGradByOps(tf, x.shape, dy as Tensor4D, w, attrs);
      return { ...grads, ...(filter !== undefined ? { filter } : {}), ...(input !== undefined ? { x: input } : {}) };
    },
  });
}

/**
 * GatherV2 along axis 0 (whole rows, e.g. a batch of images out of the dataset) as row copies in
 * wasm memory; undefined for the other cases, which keep the wasm kernel. Same bounds check.
 */
function gatherRows(args: KernelArgs): TensorInfo | undefined {
  const wasmBackend = args.backend as WasmBackendLike;
  const x = args.inputs["x"];
  const indices = args.inputs["indices"];
  const attrs = args.attrs ?? {};
  const axis = attrs["axis"] as number | undefined;
  const batchDims = (attrs["batchDims"] as number | undefined) ?? 0;
  if (x === undefined || indices === undefined || batchDims !== 0) return undefined;
  if ((axis ?? 0) !== 0 && axis !== -x.shape.length) return undefined;
  if (indices.dtype !== "int32" || (x.dtype !== "float32" && x.dtype !== "int32") || x.shape.length < 1) {
    return undefined;
  }
  const rows = x.shape[0]!;
  const rowSize = x.shape.slice(1).reduce((a, b) => a * b, 1);
  // A copy: making the output may grow wasm memory, which detaches earlier views of it.
  const index = Int32Array.from(wasmBackend.typedArrayFromHeap(indices));
  for (const i of index) {
    if (!(i >= 0 && i <= rows - 1)) throw new Error(`GatherV2: the index value ${i} is not in [0, ${rows - 1}]`);
  }
  const out = wasmBackend.makeOutput([...indices.shape, ...x.shape.slice(1)], x.dtype);
  const from = wasmBackend.typedArrayFromHeap(x);
  const to = wasmBackend.typedArrayFromHeap(out);
  index.forEach((i, k) => to.set(from.subarray(i * rowSize, (i + 1) * rowSize), k * rowSize));
  return out;
}

/**
 * Conv2D's input gradient with wasm ops, for NHWC, stride 1, dilation 1: the "full" convolution
 * of dy (padded by the filter size - 1) with the filter flipped and its channel axes swapped,
 * cropped to x (XNNPACK's convolution instead of wasm's plain Conv2DBackpropInput loop).
 * Undefined for other cases, which keep the original gradient.
 */
function conv2dInputGradByOps(
  tf: TensorFlow,
  xShape: number[],
  dy: Tensor4D,
  w: Tensor4D,
  attrs: NamedAttrMap,
): (() => Tensor) | undefined {
  if (!isStrideOneNhwc(attrs) || xShape.length !== 4) return undefined;
  return () =>
    tf.tidy(() => {
      const [, inHeight, inWidth] = xShape as [number, number, number, number];
      const [filterHeight, filterWidth] = w.shape;
      const info = tf.backend_util.computeConv2DInfo(
        xShape as [number, number, number, number],
        w.shape,
        1,
        1,
        attrs["pad"] as "valid" | "same" | number,
        attrs["dimRoundingMode"] as "floor" | "round" | "ceil" | undefined,
        false,
        "channelsLast",
      );
      const padded = tf.pad(dy, [
        [0, 0],
        [filterHeight - 1, filterHeight - 1],
        [filterWidth - 1, filterWidth - 1],
        [0, 0],
      ]);
      // [fh, fw, in, out] -> flipped in space, [fh, fw, out, in]
      const flipped = tf.transpose(tf.reverse(w, [0, 1]), [0, 1, 3, 2]);
      const full = tf.conv2d(padded, flipped, 1, "valid"); // [b, H + pads, W + pads, in]
      const { top, left } = info.padInfo;
      return tf.slice(full, [0, top, left, 0], [-1, inHeight, inWidth, -1]);
    });
}

function isStrideOneNhwc(attrs: NamedAttrMap): boolean {
  const dilations = attrs["dilations"] as number | [number, number] | undefined;
  const dataFormat = (attrs["dataFormat"] as string | undefined) ?? "NHWC";
  const strides = attrs["strides"] as number | [number, number] | undefined;
  const isOne = (v: number | [number, number] | undefined): boolean =>
    v === undefined || v === 1 || (Array.isArray(v) && v[0] === 1 && v[1] === 1);
  return dataFormat === "NHWC" && isOne(dilations) && isOne(strides);
}

/**
 * Conv2D's filter gradient with wasm ops, for NHWC, stride 1, dilation 1 (the example's CNN);
 * undefined for other cases, which keep the original gradient (and the JS kernel below).
 */
function conv2dFilterGradByOps(
  tf: TensorFlow,
  x: Tensor4D,
  dy: Tensor4D,
  attrs: NamedAttrMap,
  filterShape: number[],
): (() => Tensor) | undefined {
  if (!isStrideOneNhwc(attrs)) return undefined;
  return () =>
    tf.tidy(() => {
      const info = tf.backend_util.computeConv2DInfo(
        x.shape,
        filterShape as [number, number, number, number],
        attrs["strides"] as [number, number] | number,
        1,
        attrs["pad"] as "valid" | "same" | number,
        attrs["dimRoundingMode"] as "floor" | "round" | "ceil" | undefined,
        false,
        "channelsLast",
      );
      const { top, bottom, left, right } = info.padInfo;
      const padded =
        top + bottom + left + right > 0
          ? tf.pad(x, [
              [0, 0],
              [top, bottom],
              [left, right],
              [0, 0],
            ])
          : x;
      // With batch as the channel axis, the filter gradient is itself a convolution of x by dy:
      // dW[wR, wC, i, o] = sum over b, y, x of x[b, y + wR, x + wC, i] * dy[b, y, x, o].
      const input = tf.transpose(padded, [3, 1, 2, 0]); // [inC, H, W, batch]
      const kernel = tf.transpose(dy, [1, 2, 0, 3]); // [outH, outW, batch, outC]
      const out = tf.conv2d(input, kernel, 1, "valid"); // [inC, filterH, filterW, outC]
      return tf.transpose(out, [1, 2, 0, 3]);
    });
}

function tryLoadNative(): LoadedTensorFlow | undefined {
  try {
    // An optional dependency: absent here, or present without its native binary (then the
    // require throws while loading the binding).
    // eslint-disable-next-line @typescript-eslint/no-require-imports
    const tf = require("@tensorflow/tfjs-node") as TensorFlow;
    if (typeof tf.getBackend !== "function" || tf.getBackend() !== "tensorflow") return undefined;
    return { tf, backend: "tfjs-node" };
  } catch {
    return undefined;
  }
}

function loadPureJs(): LoadedTensorFlow {
  let tf: TensorFlow;
  try {
    // An optional peer dependency: only the bundled example needs it, not flwr-ts itself.
    // eslint-disable-next-line @typescript-eslint/no-require-imports
    tf = require("@tensorflow/tfjs") as TensorFlow;
  } catch (err) {
    throw new AppLoadError(
      "The example app needs TensorFlow.js: run `npm install @tensorflow/tfjs` (or @tensorflow/tfjs-node) next to flwr-ts",
      {
        cause: err,
      },
    );
  }
  // The CPU backend initialises synchronously, so the backend is active when this returns; the
  // promise only reports success.
  void tf.setBackend("cpu").catch(() => undefined);
  silenceNodeBanner(tf);
  installFastCpuKernels(tf);
  return { tf, backend: "cpu" };
}

/**
 * The CPU backend prints a "looks like you are running TensorFlow.js in Node.js" banner on its
 * first tensor write. Do that first write with warnings muted (PROD only gates warnings), then
 * restore the flag so later warnings still show.
 */
function silenceNodeBanner(tf: TensorFlow): void {
  const env = tf.env();
  const wasProd = env.getBool("PROD");
  env.set("PROD", true);
  try {
    tf.scalar(0).dispose();
  } finally {
    env.set("PROD", wasProd);
  }
}

/** The part of the CPU backend the replacement kernels use. */
interface CpuBackendLike {
  data: { get(dataId: object): { values?: unknown } };
  makeTensorInfo(shape: number[], dtype: string, values: Float32Array): TensorInfo;
}

type KernelArgs = Parameters<KernelFunc>[0];

function installFastCpuKernels(tf: TensorFlow): void {
  replaceKernel(
    tf,
    tf.Conv2DBackpropFilter,
    "cpu",
    (original) => (args) => conv2dBackpropFilter(tf, args) ?? original(args),
  );
  replaceKernel(tf, tf.MaxPoolGrad, "cpu", (original) => (args) => maxPoolGrad(tf, args) ?? original(args));
}

function replaceKernel(
  tf: TensorFlow,
  kernelName: string,
  backendName: string,
  wrap: (original: KernelFunc) => KernelFunc,
): void {
  const existing = tf.getKernel(kernelName, backendName) as KernelConfig | undefined;
  if (existing === undefined) return;
  const replacement: KernelConfig = { ...existing, kernelFunc: wrap(existing.kernelFunc) };
  tf.unregisterKernel(kernelName, backendName);
  tf.registerKernel(replacement);
}

function float32Values(backend: CpuBackendLike, tensor: TensorInfo): Float32Array | undefined {
  const values = backend.data.get(tensor.dataId).values;
  return values instanceof Float32Array ? values : undefined;
}

/**
 * dW[wR, wC, inC, outC] = sum over batch and output positions of x * dy, for NHWC float32 inputs.
 * Returns undefined for cases it does not handle (NCHW, non-float32), which then use the original.
 */
function conv2dBackpropFilter(tf: TensorFlow, args: KernelArgs): TensorInfo | undefined {
  const backend = args.backend as CpuBackendLike;
  const x = args.inputs["x"];
  const dy = args.inputs["dy"];
  const attrs = args.attrs ?? {};
  if (x === undefined || dy === undefined) return undefined;
  const dataFormat = tf.backend_util.convertConv2DDataFormat(
    (attrs["dataFormat"] as "NHWC" | "NCHW" | undefined) ?? "NHWC",
  );
  if (dataFormat !== "channelsLast") return undefined;
  const xValues = float32Values(backend, x);
  const dyValues = float32Values(backend, dy);
  if (xValues === undefined || dyValues === undefined) return undefined;

  const info = tf.backend_util.computeConv2DInfo(
    x.shape as [number, number, number, number],
    attrs["filterShape"] as [number, number, number, number],
    attrs["strides"] as [number, number] | number,
    1,
    attrs["pad"] as "valid" | "same" | number,
    attrs["dimRoundingMode"] as "floor" | "round" | "ceil" | undefined,
    false,
    "channelsLast",
  );
  const { batchSize, inHeight, inWidth, inChannels, outHeight, outWidth, outChannels } = info;
  const { strideHeight, strideWidth, filterHeight, filterWidth } = info;
  const top = info.padInfo.top;
  const left = info.padInfo.left;
  const acc = new Float64Array(filterHeight * filterWidth * inChannels * outChannels);

  for (let b = 0; b < batchSize; b++) {
    for (let yR = 0; yR < outHeight; yR++) {
      for (let yC = 0; yC < outWidth; yC++) {
        const dyOffset = ((b * outHeight + yR) * outWidth + yC) * outChannels;
        for (let wR = 0; wR < filterHeight; wR++) {
          const xR = yR * strideHeight - top + wR;
          if (xR < 0 || xR >= inHeight) continue;
          for (let wC = 0; wC < filterWidth; wC++) {
            const xC = yC * strideWidth - left + wC;
            if (xC < 0 || xC >= inWidth) continue;
            const xOffset = ((b * inHeight + xR) * inWidth + xC) * inChannels;
            const wOffset = (wR * filterWidth + wC) * inChannels * outChannels;
            for (let d1 = 0; d1 < inChannels; d1++) {
              const xv = xValues[xOffset + d1]!;
              // After a ReLU most inputs are exactly zero; skipping them changes nothing.
              if (xv === 0) continue;
              const rowOffset = wOffset + d1 * outChannels;
              for (let d2 = 0; d2 < outChannels; d2++) {
                acc[rowOffset + d2]! += xv * dyValues[dyOffset + d2]!;
              }
            }
          }
        }
      }
    }
  }
  return backend.makeTensorInfo(
    [filterHeight, filterWidth, inChannels, outChannels],
    "float32",
    Float32Array.from(acc),
  );
}

/**
 * Routes each output gradient of a 2-D max pool (NHWC) to the first maximum of its window in
 * row-major scan order, the same rule as the original kernel; overlapping windows accumulate.
 */
function maxPoolGrad(tf: TensorFlow, args: KernelArgs): TensorInfo | undefined {
  const backend = args.backend as CpuBackendLike;
  const dy = args.inputs["dy"];
  const x = args.inputs["input"];
  const attrs = args.attrs ?? {};
  if (x === undefined || dy === undefined) return undefined;
  const xValues = float32Values(backend, x);
  const dyValues = float32Values(backend, dy);
  if (xValues === undefined || dyValues === undefined) return undefined;

  const info = tf.backend_util.computePool2DInfo(
    x.shape as [number, number, number, number],
    attrs["filterSize"] as [number, number] | number,
    attrs["strides"] as [number, number] | number,
    1,
    attrs["pad"] as "valid" | "same" | number,
    attrs["dimRoundingMode"] as "floor" | "round" | "ceil" | undefined,
  );
  const { batchSize, inHeight, inWidth, inChannels, outHeight, outWidth } = info;
  const { strideHeight, strideWidth, filterHeight, filterWidth } = info;
  const top = info.padInfo.top;
  const left = info.padInfo.left;
  const dx = new Float32Array(batchSize * inHeight * inWidth * inChannels);

  for (let b = 0; b < batchSize; b++) {
    for (let yR = 0; yR < outHeight; yR++) {
      const rStart = max(0, yR * strideHeight - top);
      const rEnd = min(inHeight, yR * strideHeight - top + filterHeight);
      for (let yC = 0; yC < outWidth; yC++) {
        const cStart = max(0, yC * strideWidth - left);
        const cEnd = min(inWidth, yC * strideWidth - left + filterWidth);
        const dyOffset = ((b * outHeight + yR) * outWidth + yC) * inChannels;
        for (let d = 0; d < inChannels; d++) {
          let best = NEGATIVE_INFINITY;
          let bestIndex = -1;
          for (let xR = rStart; xR < rEnd; xR++) {
            for (let xC = cStart; xC < cEnd; xC++) {
              const index = ((b * inHeight + xR) * inWidth + xC) * inChannels + d;
              const value = xValues[index]!;
              if (value > best) {
                best = value;
                bestIndex = index;
              }
            }
          }
          if (bestIndex >= 0) dx[bestIndex]! += dyValues[dyOffset + d]!;
        }
      }
    }
  }
  return backend.makeTensorInfo(x.shape.slice(), "float32", dx);
}
