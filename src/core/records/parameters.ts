/**
 * Legacy `Parameters` <-> arrays, as Flower's `ndarrays_to_parameters` /
 * `parameters_to_ndarrays` (`flwr/common/parameter.py`): one `.npy` blob per tensor.
 */
import { MalformedMessageError } from "../errors";
import type { Parameters } from "./legacy-types";
import { ndarrayToNpy, npyToNdarray } from "./npy";
import type { NDArrays } from "./types";

/** The tensor type Flower writes for `.npy` tensors. */
export const NUMPY_TENSOR_TYPE = "numpy.ndarray";

/** Serializes each array with `np.save` semantics; tensorType is "numpy.ndarray". */
export function ndarraysToParameters(arrs: NDArrays): Parameters {
  return { tensors: arrs.map((a) => ndarrayToNpy(a)), tensorType: NUMPY_TENSOR_TYPE };
}

/**
 * Parses every tensor as `.npy` bytes (like Flower, `tensorType` is not consulted).
 * Throws MalformedMessageError naming the index of the first tensor that does not parse.
 */
export function parametersToNdarrays(p: Parameters): NDArrays {
  return p.tensors.map((tensor, index) => {
    try {
      return npyToNdarray(tensor);
    } catch (cause) {
      const why = cause instanceof Error ? cause.message : String(cause);
      throw new MalformedMessageError(`Parameters tensor ${index} (tensorType "${p.tensorType}"): ${why}`, { cause });
    }
  });
}
