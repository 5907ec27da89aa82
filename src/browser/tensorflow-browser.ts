/**
 * The browser form of the example's TensorFlow.js loader (swapped in for it by
 * scripts/build-browser.js, same exports): the page picks the backend once, before training —
 * WebGL when the browser has it, else the pure-JS CPU backend — and `loadTensorFlow` then returns
 * the ready module synchronously, as the Node loader does.
 */
import * as tfjs from "@tensorflow/tfjs";

export type TensorFlow = typeof tfjs;
export type TensorFlowBackend = "webgl" | "cpu";

export interface LoadedTensorFlow {
  tf: TensorFlow;
  backend: TensorFlowBackend;
}

let backend: TensorFlowBackend = "cpu";

export function loadTensorFlow(): LoadedTensorFlow {
  return { tf: tfjs, backend };
}

/** The Node loader's fastest-backend switch: here the page already chose (initBrowserTensorFlow). */
export function useFastestBackend(): Promise<LoadedTensorFlow> {
  return Promise.resolve(loadTensorFlow());
}

/** The Node loader's "stay on the loaded backend": the page's choice already stands. */
export function keepCurrentBackend(): LoadedTensorFlow {
  return loadTensorFlow();
}

/**
 * Activates `preferred` ("webgl" by default) if this browser can run it, else "cpu"; resolves
 * with the backend in use. A WebGL context that cannot compile tfjs's shaders counts as absent.
 */
export async function initBrowserTensorFlow(preferred: TensorFlowBackend = "webgl"): Promise<TensorFlowBackend> {
  if (preferred === "webgl") {
    try {
      if ((await tfjs.setBackend("webgl")) && (await probe())) {
        backend = "webgl";
        return backend;
      }
    } catch {
      /* no WebGL: fall back below */
    }
  }
  await tfjs.setBackend("cpu");
  await tfjs.ready();
  backend = "cpu";
  return backend;
}

async function probe(): Promise<boolean> {
  await tfjs.ready();
  const t = tfjs.tidy(() =>
    tfjs.conv2d(tfjs.ones([1, 4, 4, 1]).as4D(1, 4, 4, 1), tfjs.ones([2, 2, 1, 1]).as4D(2, 2, 1, 1), 1, "valid").sum(),
  );
  const value = (await t.data())[0];
  t.dispose();
  return value === 36;
}
