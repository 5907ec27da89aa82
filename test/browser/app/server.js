"use strict";
/**
 * The browser test's ServerApp (dist/server's public API): FedAvg over FLWR_TEST_ROUNDS rounds
 * (default 1) with exactly 2 SuperNodes, fit and evaluate on both. The fit metrics' aggregation
 * adds `clients` and `runtimes` (each node's `runtime` metric, "node" when it sends none, sorted),
 * so the History shows which nodes took part.
 */
const path = require("node:path");
const { ServerApp, FedAvg } = require(path.join(__dirname, "..", "..", "..", "dist", "server"));

function aggregate(results) {
  const total = results.reduce((s, [n]) => s + n, 0);
  const out = {};
  for (const key of ["train_loss", "train_accuracy", "accuracy"]) {
    const with_ = results.filter(([, m]) => typeof m[key] === "number");
    if (with_.length > 0) out[key] = with_.reduce((s, [n, m]) => s + n * m[key], 0) / total;
  }
  out.clients = BigInt(results.length);
  out.runtimes = results
    .map(([, m]) => String(m.runtime ?? "node"))
    .sort()
    .join(",");
  return out;
}

const strategy = new FedAvg({
  fractionFit: 1.0,
  fractionEvaluate: 1.0,
  minFitClients: 2,
  minEvaluateClients: 2,
  minAvailableClients: 2,
  onFitConfigFn: (round) => ({ server_round: BigInt(round), local_epochs: 1n }),
  fitMetricsAggregationFn: aggregate,
  evaluateMetricsAggregationFn: aggregate,
});

exports.app = new ServerApp({ config: { numRounds: Number(process.env.FLWR_TEST_ROUNDS || 1) }, strategy });
