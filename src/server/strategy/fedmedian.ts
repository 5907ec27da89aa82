/**
 * FedMedian (Yin et al., 2018), as Flower 1.10's `FedMedian`: FedAvg, except that fit results
 * are combined by the element-wise median instead of the weighted mean.
 */
import type { Metrics, Parameters } from "../../core/records/legacy-types";
import { ndarraysToParameters, parametersToNdarrays } from "../../core/records/parameters";
import { type WeightedArrays, aggregateMedian } from "./aggregate";
import { FedAvg } from "./fedavg";
import type { FitFailure, FitResult } from "./strategy";

export class FedMedian extends FedAvg {
  override aggregateFit(
    serverRound: number,
    results: FitResult[],
    failures: FitFailure[],
  ): [Parameters | undefined, Metrics] {
    if (results.length === 0) return [undefined, {}];
    if (!this.acceptFailures && failures.length > 0) return [undefined, {}];
    const weighted = results.map(([, res]): WeightedArrays => [parametersToNdarrays(res.parameters), res.numExamples]);
    return [ndarraysToParameters(aggregateMedian(weighted)), this.aggregateFitMetrics(serverRound, results)];
  }
}
