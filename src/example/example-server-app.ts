/**
 * The bundled example ServerApp (`server:app` at the repository root): FedAvg over 3 rounds
 * with 2 SuperNodes, every node training and evaluating each round; the clients' accuracies are
 * averaged weighted by their number of examples, so the history shows the global model's
 * accuracy round by round.
 */
import type { Metrics } from "../core/records/legacy-types";
import { ServerApp } from "../server/server-app";
import { FedAvg } from "../server/strategy";

export const NUM_ROUNDS = 3;
export const NUM_CLIENTS = 2;

/** Example-weighted mean of every numeric metric the clients reported. */
export function weightedAverage(results: Array<[number, Metrics]>): Metrics {
  const total = results.reduce((sum, [n]) => sum + n, 0);
  const sums = new Map<string, number>();
  for (const [n, metrics] of results) {
    for (const [key, value] of Object.entries(metrics)) {
      if (typeof value === "number" || typeof value === "bigint")
        sums.set(key, (sums.get(key) ?? 0) + n * Number(value));
    }
  }
  const out: Metrics = {};
  for (const [key, sum] of [...sums].sort(([a], [b]) => (a < b ? -1 : 1))) out[key] = total > 0 ? sum / total : 0;
  return out;
}

const strategy = new FedAvg({
  fractionFit: 1.0,
  fractionEvaluate: 1.0,
  minFitClients: NUM_CLIENTS,
  minEvaluateClients: NUM_CLIENTS,
  minAvailableClients: NUM_CLIENTS,
  onFitConfigFn: (serverRound) => ({ server_round: BigInt(serverRound), local_epochs: 1n }),
  fitMetricsAggregationFn: weightedAverage,
  evaluateMetricsAggregationFn: weightedAverage,
});

export const app = new ServerApp({ config: { numRounds: NUM_ROUNDS }, strategy });
