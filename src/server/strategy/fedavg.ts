/**
 * Federated Averaging (McMahan et al., 2016), as Flower 1.10's `FedAvg`: same options, same
 * defaults, same sampling rule (`max(int(available * fraction), min_clients)`, waiting for
 * `min_available_clients`), same failure rule (with `acceptFailures: false`, any failure
 * discards the round's aggregation).
 */
import { InvalidConfigError } from "../../core/errors";
import { type Logger, silentLogger } from "../../core/logger";
import type { Config, EvaluateIns, FitIns, Metrics, Parameters } from "../../core/records/legacy-types";
import { parametersToNdarrays } from "../../core/records/parameters";
import type { ClientManager } from "../client-manager";
import { NUMPY_TENSOR_TYPE } from "../../core/records/parameters";
import { allocateNpy, ndarrayToNpy } from "../../core/records/npy";
import type { NDArrays } from "../../core/records/types";
import { arraySourcesOf } from "../result-spill";
import {
  type Allocate,
  type WeightedSources,
  aggregateInplaceSources,
  aggregateSources,
  weightedLossAvg,
} from "./aggregate";
import type {
  ConfigFn,
  EvaluateFailure,
  EvaluateFn,
  EvaluateInstruction,
  EvaluateResult,
  FitFailure,
  FitInstruction,
  FitResult,
  MetricsAggregationFn,
  Strategy,
} from "./strategy";

export interface FedAvgOptions {
  /** Fraction of available clients sampled for training. Default 1.0. */
  fractionFit?: number;
  /** Fraction of available clients sampled for evaluation; 0 disables federated evaluation. Default 1.0. */
  fractionEvaluate?: number;
  /** Minimum clients sampled for training. Default 2. */
  minFitClients?: number;
  /** Minimum clients sampled for evaluation. Default 2. */
  minEvaluateClients?: number;
  /** A round waits until this many clients are connected. Default 2. */
  minAvailableClients?: number;
  /** Server-side (centralized) evaluation. */
  evaluateFn?: EvaluateFn;
  /** Config sent with each round's fit instructions. */
  onFitConfigFn?: ConfigFn;
  /** Config sent with each round's evaluate instructions. */
  onEvaluateConfigFn?: ConfigFn;
  /** Aggregate rounds that had failures. Default true. */
  acceptFailures?: boolean;
  /** Initial global parameters; without them one random client is asked. */
  initialParameters?: Parameters;
  fitMetricsAggregationFn?: MetricsAggregationFn;
  evaluateMetricsAggregationFn?: MetricsAggregationFn;
  /** Use Flower's in-place weighted sum (default true) instead of sum-then-divide. */
  inplace?: boolean;
  /** Where the strategy's warnings go (the Server also hands its logger over). */
  logger?: Logger;
}

function checkFraction(name: string, value: number): number {
  if (!Number.isFinite(value) || value < 0 || value > 1) {
    throw new InvalidConfigError(`${name} must be a number between 0 and 1, got ${value}`);
  }
  return value;
}

function checkCount(name: string, value: number): number {
  if (!Number.isInteger(value) || value < 0) {
    throw new InvalidConfigError(`${name} must be a non-negative integer, got ${value}`);
  }
  return value;
}

export class FedAvg implements Strategy {
  readonly fractionFit: number;
  readonly fractionEvaluate: number;
  readonly minFitClients: number;
  readonly minEvaluateClients: number;
  readonly minAvailableClients: number;
  readonly acceptFailures: boolean;
  readonly inplace: boolean;
  protected readonly evaluateFn: EvaluateFn | undefined;
  protected readonly onFitConfigFn: ConfigFn | undefined;
  protected readonly onEvaluateConfigFn: ConfigFn | undefined;
  protected readonly fitMetricsAggregationFn: MetricsAggregationFn | undefined;
  protected readonly evaluateMetricsAggregationFn: MetricsAggregationFn | undefined;
  protected initialParameters: Parameters | undefined;
  protected logger: Logger;

  constructor(options: FedAvgOptions = {}) {
    this.fractionFit = checkFraction("fractionFit", options.fractionFit ?? 1.0);
    this.fractionEvaluate = checkFraction("fractionEvaluate", options.fractionEvaluate ?? 1.0);
    this.minFitClients = checkCount("minFitClients", options.minFitClients ?? 2);
    this.minEvaluateClients = checkCount("minEvaluateClients", options.minEvaluateClients ?? 2);
    this.minAvailableClients = checkCount("minAvailableClients", options.minAvailableClients ?? 2);
    this.evaluateFn = options.evaluateFn;
    this.onFitConfigFn = options.onFitConfigFn;
    this.onEvaluateConfigFn = options.onEvaluateConfigFn;
    this.acceptFailures = options.acceptFailures ?? true;
    this.initialParameters = options.initialParameters;
    this.fitMetricsAggregationFn = options.fitMetricsAggregationFn;
    this.evaluateMetricsAggregationFn = options.evaluateMetricsAggregationFn;
    this.inplace = options.inplace ?? true;
    this.logger = options.logger ?? silentLogger();
    this.minClientsWarningPending =
      this.minFitClients > this.minAvailableClients || this.minEvaluateClients > this.minAvailableClients;
    if (options.logger) this.warnMinClients();
  }

  private minClientsWarningPending: boolean;

  /** Flower warns at construction; without a logger yet, the warning waits for setLogger. */
  private warnMinClients(): void {
    if (!this.minClientsWarningPending) return;
    this.minClientsWarningPending = false;
    this.logger.warn(
      "Setting `min_available_clients` lower than `min_fit_clients` or `min_evaluate_clients` can cause the " +
        "server to fail when there are too few clients connected to the server. `min_available_clients` must " +
        "be set to a value larger than or equal to the values of `min_fit_clients` and `min_evaluate_clients`.",
    );
  }

  toString(): string {
    return `${this.constructor.name}(accept_failures=${this.acceptFailures ? "True" : "False"})`;
  }

  setLogger(logger: Logger): void {
    this.logger = logger;
    this.warnMinClients();
  }

  /** [sample size, clients to wait for] for training, given the connected count. */
  numFitClients(numAvailable: number): [number, number] {
    const n = Math.trunc(numAvailable * this.fractionFit);
    return [Math.max(n, this.minFitClients), this.minAvailableClients];
  }

  /** [sample size, clients to wait for] for evaluation, given the connected count. */
  numEvaluationClients(numAvailable: number): [number, number] {
    const n = Math.trunc(numAvailable * this.fractionEvaluate);
    return [Math.max(n, this.minEvaluateClients), this.minAvailableClients];
  }

  /** Returns the initial parameters once, then forgets them (as Flower does). */
  initializeParameters(_clientManager: ClientManager): Parameters | undefined {
    const initial = this.initialParameters;
    this.initialParameters = undefined;
    return initial;
  }

  async evaluate(serverRound: number, parameters: Parameters): Promise<[number, Metrics] | undefined> {
    if (this.evaluateFn === undefined) return undefined;
    const result = await this.evaluateFn(serverRound, parametersToNdarrays(parameters), {});
    return result ?? undefined;
  }

  async configureFit(
    serverRound: number,
    parameters: Parameters,
    clientManager: ClientManager,
  ): Promise<FitInstruction[]> {
    const config: Config = this.onFitConfigFn ? this.onFitConfigFn(serverRound) : {};
    const fitIns: FitIns = { parameters, config };
    const [sampleSize, minNumClients] = this.numFitClients(clientManager.numAvailable());
    const clients = await clientManager.sample(sampleSize, minNumClients);
    return clients.map((client) => [client, fitIns]);
  }

  async configureEvaluate(
    serverRound: number,
    parameters: Parameters,
    clientManager: ClientManager,
  ): Promise<EvaluateInstruction[]> {
    if (this.fractionEvaluate === 0) return [];
    const config: Config = this.onEvaluateConfigFn ? this.onEvaluateConfigFn(serverRound) : {};
    const evaluateIns: EvaluateIns = { parameters, config };
    const [sampleSize, minNumClients] = this.numEvaluationClients(clientManager.numAvailable());
    const clients = await clientManager.sample(sampleSize, minNumClients);
    return clients.map((client) => [client, evaluateIns]);
  }

  aggregateFit(serverRound: number, results: FitResult[], failures: FitFailure[]): [Parameters | undefined, Metrics] {
    if (results.length === 0) return [undefined, {}];
    if (!this.acceptFailures && failures.length > 0) return [undefined, {}];
    const weighted = results.map(([, res]): WeightedSources => [arraySourcesOf(res.parameters), res.numExamples]);
    const output = new NpyOutput();
    const aggregated = this.inplace
      ? aggregateInplaceSources(weighted, output.allocate)
      : aggregateSources(weighted, output.allocate);
    return [output.parameters(aggregated), this.aggregateFitMetrics(serverRound, results)];
  }

  aggregateEvaluate(
    serverRound: number,
    results: EvaluateResult[],
    failures: EvaluateFailure[],
  ): [number | undefined, Metrics] {
    if (results.length === 0) return [undefined, {}];
    if (!this.acceptFailures && failures.length > 0) return [undefined, {}];
    const loss = weightedLossAvg(results.map(([, res]) => [res.numExamples, res.loss]));
    let metrics: Metrics = {};
    if (this.evaluateMetricsAggregationFn) {
      metrics = this.evaluateMetricsAggregationFn(results.map(([, res]) => [res.numExamples, res.metrics]));
    } else if (serverRound === 1) {
      this.logger.warn("No evaluate_metrics_aggregation_fn provided");
    }
    return [loss, metrics];
  }

  /** fitMetricsAggregationFn over (num_examples, metrics), or {} with a round-1 warning. */
  protected aggregateFitMetrics(serverRound: number, results: FitResult[]): Metrics {
    if (this.fitMetricsAggregationFn) {
      return this.fitMetricsAggregationFn(results.map(([, res]) => [res.numExamples, res.metrics]));
    }
    if (serverRound === 1) this.logger.warn("No fit_metrics_aggregation_fn provided");
    return {};
  }
}

/**
 * Aggregated arrays written straight into .npy buffers, so turning them into Parameters copies
 * nothing (the bytes are those ndarraysToParameters would make).
 */
export class NpyOutput {
  private readonly npy = new Map<ArrayBufferView, Uint8Array>();

  readonly allocate: Allocate = (precision, shape) => {
    const { bytes, data } = allocateNpy(precision, shape);
    this.npy.set(data, bytes);
    return data;
  };

  parameters(arrays: NDArrays): Parameters {
    return { tensors: arrays.map((a) => this.npy.get(a.data) ?? ndarrayToNpy(a)), tensorType: NUMPY_TENSOR_TYPE };
  }
}
