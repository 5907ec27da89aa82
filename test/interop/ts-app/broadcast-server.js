"use strict";
/**
 * A FedAvg ServerApp like server.js whose global model is one float32 array of
 * BROADCAST_FLOATS (default 250 000, i.e. 1 MB) zeros: every round broadcasts a payload large
 * enough for the flwr-ts shared-content path (docs/protocol.md, "Shared content"). Clients add 1
 * to every weight, so the centralized loss (mean of the weights) must read 0, 1, 2.
 * FLWR_TS_DIST overrides where the built package is (default: this repository's dist/).
 */
const path = require("node:path");
const dist = process.env.FLWR_TS_DIST || path.join(__dirname, "..", "..", "..", "dist");
const { ServerApp, FedAvg } = require(path.join(dist, "server"));
const { ndarraysToParameters } = require(dist);

const floats = Number(process.env.BROADCAST_FLOATS || 250000);

function centralEvaluate(_round, parameters) {
  let sum = 0;
  let count = 0;
  for (const p of parameters) for (const v of p.data) ((sum += v), (count += 1));
  return [sum / count, {}];
}

const strategy = new FedAvg({
  fractionFit: 1.0,
  fractionEvaluate: 1.0,
  minFitClients: 2,
  minEvaluateClients: 2,
  minAvailableClients: Number(process.env.BROADCAST_CLIENTS || 2),
  initialParameters: ndarraysToParameters([{ dtype: "float32", shape: [floats], data: new Float32Array(floats) }]),
  evaluateFn: centralEvaluate,
});

exports.app = new ServerApp({ config: { numRounds: 2 }, strategy });
