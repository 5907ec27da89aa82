/**
 * Loads TensorFlow.js once per process: the native `@tensorflow/tfjs-node` backend when it is
 * installed and works, otherwise the pure-JavaScript `@tensorflow/tfjs` CPU backend.
 *
 * The pure-JS CPU backend ships two training kernels written against its generic
 * `TensorBuffer.get(...)` accessor (Conv2DBackpropFilter and MaxPoolGrad); for a small CNN they
 * take ~95% of a training step. On the CPU backend this module replaces them with flat-array
 * versions that compute the same values (same summation set, same first-maximum tie rule), which
 * makes CNN training roughly 15x faster. The native backend is left untouched.
 */
import type { KernelConfig, KernelFunc, NamedAttrMap, TensorInfo } from "@tensorflow/tfjs";

export type TensorFlow = typeof import("@tensorflow/tfjs");
export type TensorFlowBackend = "tfjs-node" | "cpu";

export interface LoadedTensorFlow {
  tf: TensorFlow;
  /** "tfjs-node": native libtensorflow; "cpu": pure-JS kernels (slow for convolutions). */
  backend: TensorFlowBackend;
}

let loaded: LoadedTensorFlow | undefined;

// Local aliases for the kernels' loops: global lookups are slow inside vm contexts (jest).
const { max, min } = Math;
const NEGATIVE_INFINITY = -Infinity;

/**
 * Returns the TensorFlow.js module and the backend in use. The first call loads it (tfjs-node if
 * it can be required and activates its "tensorflow" backend, else tfjs with the "cpu" backend);
 * later calls return the same object. Never throws for a missing or broken tfjs-node.
 */
export function loadTensorFlow(): LoadedTensorFlow {
  if (loaded !== undefined) return loaded;
  loaded = tryLoadNative() ?? loadPureJs();
  return loaded;
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
  // eslint-disable-next-line @typescript-eslint/no-require-imports
  const tf = require("@tensorflow/tfjs") as TensorFlow;
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
  replaceCpuKernel(tf, tf.Conv2DBackpropFilter, (original) => (args) => conv2dBackpropFilter(tf, args) ?? original(args));
  replaceCpuKernel(tf, tf.MaxPoolGrad, (original) => (args) => maxPoolGrad(tf, args) ?? original(args));
}

function replaceCpuKernel(tf: TensorFlow, kernelName: string, wrap: (original: KernelFunc) => KernelFunc): void {
  const existing = tf.getKernel(kernelName, "cpu");
  if (existing === undefined) return;
  const replacement: KernelConfig = { ...existing, kernelFunc: wrap(existing.kernelFunc) };
  tf.unregisterKernel(kernelName, "cpu");
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
  const attrs = (args.attrs ?? {}) as NamedAttrMap;
  if (x === undefined || dy === undefined) return undefined;
  const dataFormat = tf.backend_util.convertConv2DDataFormat((attrs["dataFormat"] as "NHWC" | "NCHW" | undefined) ?? "NHWC");
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
  return backend.makeTensorInfo([filterHeight, filterWidth, inChannels, outChannels], "float32", Float32Array.from(acc));
}

/**
 * Routes each output gradient of a 2-D max pool (NHWC) to the first maximum of its window in
 * row-major scan order, the same rule as the original kernel; overlapping windows accumulate.
 */
function maxPoolGrad(tf: TensorFlow, args: KernelArgs): TensorInfo | undefined {
  const backend = args.backend as CpuBackendLike;
  const dy = args.inputs["dy"];
  const x = args.inputs["input"];
  const attrs = (args.attrs ?? {}) as NamedAttrMap;
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
