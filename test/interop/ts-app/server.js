"use strict";
/**
 * JS counterpart of py-app/server.py, written against flwr-ts's public ServerApp API
 * (dist/server): FedAvg, 2 rounds, 2 clients, fraction_evaluate 1.0, weighted-average metrics
 * aggregation (+ `clients`, `impls`), centralized evaluation = mean of the global weights.
 * FLWR_TS_DIST overrides where the built package is (default: this repository's dist/).
 */
const path = require("node:path");
const { ServerApp, FedAvg } = require(
  path.join(process.env.FLWR_TS_DIST || path.join(__dirname, "..", "..", "..", "dist"), "server"),
);

function weightedAverage(results) {
  const total = results.reduce((s, [n]) => s + n, 0);
  const keys = new Set();
  for (const [, m] of results)
    for (const [k, v] of Object.entries(m)) if (typeof v === "number" || typeof v === "bigint") keys.add(k);
  const out = {};
  for (const k of [...keys].sort()) {
    out[k] = results.reduce((s, [n, m]) => (k in m ? s + n * Number(m[k]) : s), 0) / total;
  }
  out.clients = BigInt(results.length);
  out.impls = results
    .map(([, m]) => String(m.impl ?? "?"))
    .sort()
    .join(",");
  return out;
}

function centralEvaluate(_round, parameters, _config) {
  let sum = 0,
    count = 0,
    min = Infinity,
    max = -Infinity;
  for (const p of parameters)
    for (const v of p.data) ((sum += v), (count += 1), (min = Math.min(min, v)), (max = Math.max(max, v)));
  return [sum / count, { min, max }];
}

const strategy = new FedAvg({
  fractionFit: 1.0,
  fractionEvaluate: 1.0,
  minFitClients: 2,
  minEvaluateClients: 2,
  minAvailableClients: 2,
  onFitConfigFn: (round) => ({ server_round: BigInt(round), lr: 0.1, note: "interop" }),
  evaluateFn: centralEvaluate,
  fitMetricsAggregationFn: weightedAverage,
  evaluateMetricsAggregationFn: weightedAverage,
});

exports.app = new ServerApp({ config: { numRounds: 2 }, strategy });
