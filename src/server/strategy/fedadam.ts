/**
 * FedAdam, as Flower 1.10's `FedAdam`: the FedAvg aggregate is treated as a pseudo-gradient
 * step delta = avg - w, and the server applies Adam without bias correction:
 *   m = beta1 * m + (1 - beta1) * delta
 *   v = beta2 * v + (1 - beta2) * delta^2
 *   w = w + eta * m / (sqrt(v) + tau)
 * float32 weights are updated in float32 (each operation rounded), as NumPy does.
 */
import type { Metrics, Parameters } from "../../core/records/legacy-types";
import { ndarraysToParameters, parametersToNdarrays } from "../../core/records/parameters";
import type { NDArray, NDArrays } from "../../core/records/types";
import { RoundFailedError } from "../../core/errors";
import { FedOpt, type FedOptOptions } from "./fedopt";
import type { FitFailure, FitResult } from "./strategy";

type Round = (x: number) => number;

function values(a: NDArray): ArrayLike<number> {
  return a.data instanceof BigInt64Array ? Array.from(a.data, (v) => Number(v)) : a.data;
}

/** Element-wise op over arrays of one shape, in float32 if every input is float32. */
function elementwise(inputs: NDArray[], op: (r: Round, ...xs: number[]) => number): NDArray {
  const float32 = inputs.every((a) => a.dtype === "float32");
  const r: Round = float32 ? Math.fround : (x) => x;
  const size = inputs[0]!.data.length;
  const data = float32 ? new Float32Array(size) : new Float64Array(size);
  const cols = inputs.map(values);
  const xs = new Array<number>(cols.length);
  for (let i = 0; i < size; i++) {
    for (let c = 0; c < cols.length; c++) xs[c] = cols[c]![i]!;
    data[i] = r(op(r, ...xs));
  }
  const shape = [...inputs[0]!.shape];
  return float32 ? { dtype: "float32", shape, data: data } : { dtype: "float64", shape, data: data };
}

function zerosLike(a: NDArray): NDArray {
  const shape = [...a.shape];
  return a.dtype === "float32"
    ? { dtype: "float32", shape, data: new Float32Array(a.data.length) }
    : { dtype: "float64", shape, data: new Float64Array(a.data.length) };
}

export class FedAdam extends FedOpt {
  constructor(options: FedOptOptions) {
    super(options, { beta1: 0.9, beta2: 0.99 });
  }

  override aggregateFit(
    serverRound: number,
    results: FitResult[],
    failures: FitFailure[],
  ): [Parameters | undefined, Metrics] {
    const [fedavgParameters, metrics] = super.aggregateFit(serverRound, results, failures);
    if (fedavgParameters === undefined) return [undefined, {}];
    const averaged = parametersToNdarrays(fedavgParameters);
    if (averaged.length !== this.currentWeights.length) {
      throw new RoundFailedError(
        `FedAdam: clients returned ${averaged.length} arrays, the global model has ${this.currentWeights.length}`,
      );
    }
    const { beta1, beta2, eta, tau } = this;
    const delta: NDArrays = averaged.map((x, i) => elementwise([x, this.currentWeights[i]!], (_r, a, b) => a - b));
    const mPrev = this.mT ?? delta.map(zerosLike);
    this.mT = mPrev.map((m, i) => elementwise([m, delta[i]!], (r, mv, d) => r(r(beta1) * mv) + r(r(1 - beta1) * d)));
    const vPrev = this.vT ?? delta.map(zerosLike);
    this.vT = vPrev.map((v, i) =>
      elementwise([v, delta[i]!], (r, vv, d) => r(r(beta2) * vv) + r(r(1 - beta2) * r(d * d))),
    );
    this.currentWeights = this.currentWeights.map((w, i) =>
      elementwise(
        [w, this.mT![i]!, this.vT![i]!],
        (r, wv, mv, vv) => wv + r(r(r(eta) * mv) / r(r(Math.sqrt(vv)) + r(tau))),
      ),
    );
    return [ndarraysToParameters(this.currentWeights), metrics];
  }
}
