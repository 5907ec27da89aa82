/**
 * FedMedian (Yin et al., 2018), as Flower 1.10's `FedMedian`: FedAvg, except that fit results
 * are combined by the element-wise median instead of the weighted mean.
 */
import type { Metrics, Parameters } from "../../core/records/legacy-types";
import { arraySourcesOf } from "../result-spill";
import { type WeightedSources, aggregateMedianSources } from "./aggregate";
import { FedAvg, NpyOutput } from "./fedavg";
import type { FitFailure, FitResult } from "./strategy";

export class FedMedian extends FedAvg {
  override aggregateFit(
    serverRound: number,
    results: FitResult[],
    failures: FitFailure[],
  ): [Parameters | undefined, Metrics] {
    if (results.length === 0) return [undefined, {}];
    if (!this.acceptFailures && failures.length > 0) return [undefined, {}];
    const weighted = results.map(([, res]): WeightedSources => [arraySourcesOf(res.parameters), res.numExamples]);
    const output = new NpyOutput();
    return [
      output.parameters(aggregateMedianSources(weighted, output.allocate)),
      this.aggregateFitMetrics(serverRound, results),
    ];
  }
}
