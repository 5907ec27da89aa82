/** Legacy Parameters <-> arrays (Flower's ndarrays_to_parameters / parameters_to_ndarrays). */
import { MalformedMessageError } from "../../src/core/errors";
import { ndarrayToNpy } from "../../src/core/records/npy";
import { NUMPY_TENSOR_TYPE, ndarraysToParameters, parametersToNdarrays } from "../../src/core/records/parameters";
import type { NDArrays } from "../../src/core/records/types";

describe("Parameters", () => {
  const arrays: NDArrays = [
    { dtype: "float32", shape: [2, 2], data: new Float32Array([1, 2, 3, 4]) },
    { dtype: "int64", shape: [], data: new BigInt64Array([-5n]) },
  ];

  test("each array becomes one .npy tensor, tensorType numpy.ndarray, and reads back unchanged", () => {
    const p = ndarraysToParameters(arrays);
    expect(p.tensorType).toBe(NUMPY_TENSOR_TYPE);
    expect(p.tensors).toEqual(arrays.map(ndarrayToNpy));
    expect(parametersToNdarrays(p)).toEqual(arrays);
  });

  test("zero arrays give zero tensors", () => {
    expect(ndarraysToParameters([])).toEqual({ tensors: [], tensorType: "numpy.ndarray" });
    expect(parametersToNdarrays({ tensors: [], tensorType: "" })).toEqual([]);
  });

  test("a tensor that is not .npy is refused, naming its index", () => {
    const p = ndarraysToParameters(arrays);
    p.tensors.push(new Uint8Array([1, 2, 3]));
    expect(() => parametersToNdarrays(p)).toThrow(MalformedMessageError);
    expect(() => parametersToNdarrays(p)).toThrow(
      /^Parameters tensor 2 \(tensorType "numpy.ndarray"\): npyToNdarray: /,
    );
  });
});
