/**
 * The Strategy contract of the legacy loop, as Flower's `flwr.server.strategy.Strategy`.
 * Methods may return values or promises; the Server awaits both.
 */
import type { Logger } from "../../core/logger";
import type {
  Config,
  EvaluateIns,
  EvaluateRes,
  FitIns,
  FitRes,
  Metrics,
  Parameters,
} from "../../core/records/legacy-types";
import type { NDArrays } from "../../core/records/types";
import type { ClientManager } from "../client-manager";
import type { ClientProxy } from "../client-proxy";

export type Awaitable<T> = T | Promise<T>;

/** A client picked for a round and what to send it. */
export type FitInstruction = [ClientProxy, FitIns];
export type EvaluateInstruction = [ClientProxy, EvaluateIns];
/** A client's successful answer. */
export type FitResult = [ClientProxy, FitRes];
export type EvaluateResult = [ClientProxy, EvaluateRes];
/** A client that answered with a non-OK status, or the error of a client that did not answer. */
export type FitFailure = FitResult | Error;
export type EvaluateFailure = EvaluateResult | Error;

/** Aggregates per-client metrics, given as (num_examples, metrics) pairs. */
export type MetricsAggregationFn = (results: Array<[number, Metrics]>) => Metrics;
/** Server-side evaluation: (round, parameters, config) -> [loss, metrics], or undefined to skip. */
export type EvaluateFn = (
  serverRound: number,
  parameters: NDArrays,
  config: Config,
) => Awaitable<[number, Metrics] | undefined>;
/** Per-round configuration sent to clients. */
export type ConfigFn = (serverRound: number) => Config;

export interface Strategy {
  /** Initial global parameters, or undefined to ask one random client. */
  initializeParameters(clientManager: ClientManager): Awaitable<Parameters | undefined>;
  /** Which clients train this round, with what. An empty list skips the round. */
  configureFit(serverRound: number, parameters: Parameters, clientManager: ClientManager): Awaitable<FitInstruction[]>;
  /** New global parameters (undefined keeps the previous ones) and aggregated fit metrics. */
  aggregateFit(
    serverRound: number,
    results: FitResult[],
    failures: FitFailure[],
  ): Awaitable<[Parameters | undefined, Metrics]>;
  /** Which clients evaluate this round. An empty list skips federated evaluation. */
  configureEvaluate(
    serverRound: number,
    parameters: Parameters,
    clientManager: ClientManager,
  ): Awaitable<EvaluateInstruction[]>;
  /** Aggregated loss (undefined if none) and metrics of federated evaluation. */
  aggregateEvaluate(
    serverRound: number,
    results: EvaluateResult[],
    failures: EvaluateFailure[],
  ): Awaitable<[number | undefined, Metrics]>;
  /** Centralized evaluation of the current parameters, or undefined if the strategy has none. */
  evaluate(serverRound: number, parameters: Parameters): Awaitable<[number, Metrics] | undefined>;
  /** Optional: the Server hands the run's logger to the strategy before the first round. */
  setLogger?(logger: Logger): void;
}
