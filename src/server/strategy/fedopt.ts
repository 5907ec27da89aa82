/**
 * The FedOpt family (Reddi et al., 2020, "Adaptive Federated Optimization"), as Flower 1.10's
 * `FedOpt`: FedAvg plus server-side optimizer state. `initialParameters` is required, because
 * the optimizer steps from the current global weights.
 */
import { InvalidConfigError } from "../../core/errors";
import type { Parameters } from "../../core/records/legacy-types";
import { parametersToNdarrays } from "../../core/records/parameters";
import type { NDArrays } from "../../core/records/types";
import { FedAvg, type FedAvgOptions } from "./fedavg";

export interface FedOptOptions extends FedAvgOptions {
  initialParameters: Parameters;
  /** Server-side learning rate. Default 1e-1. */
  eta?: number;
  /** Client-side learning rate. Default 1e-1. */
  etaL?: number;
  /** Momentum parameter. Default 0.0 (FedAdam: 0.9). */
  beta1?: number;
  /** Second moment parameter. Default 0.0 (FedAdam: 0.99). */
  beta2?: number;
  /** Degree of adaptability. Default 1e-9. */
  tau?: number;
}

function checkFinite(name: string, value: number): number {
  if (!Number.isFinite(value)) throw new InvalidConfigError(`${name} must be a finite number, got ${value}`);
  return value;
}

export class FedOpt extends FedAvg {
  readonly eta: number;
  readonly etaL: number;
  readonly beta1: number;
  readonly beta2: number;
  readonly tau: number;
  /** The global weights the optimizer steps from. */
  protected currentWeights: NDArrays;
  /** First moment (momentum), created on the first aggregation. */
  protected mT: NDArrays | undefined;
  /** Second moment, created on the first aggregation. */
  protected vT: NDArrays | undefined;

  constructor(options: FedOptOptions, defaults: { beta1: number; beta2: number } = { beta1: 0.0, beta2: 0.0 }) {
    if (options.initialParameters === undefined) {
      throw new InvalidConfigError(`${new.target.name} needs initialParameters: the server optimizer starts from them`);
    }
    super(options);
    this.currentWeights = parametersToNdarrays(options.initialParameters);
    this.eta = checkFinite("eta", options.eta ?? 1e-1);
    this.etaL = checkFinite("etaL", options.etaL ?? 1e-1);
    this.beta1 = checkFinite("beta1", options.beta1 ?? defaults.beta1);
    this.beta2 = checkFinite("beta2", options.beta2 ?? defaults.beta2);
    this.tau = checkFinite("tau", options.tau ?? 1e-9);
  }
}
