"use strict";
/**
 * JS counterpart of py-app/client.py for the interop tests, written against flwr-ts's public
 * ClientApp API (dist/client): the same deterministic numbers, with `impl: "ts"` in the metrics.
 * Ints that Python sends/expects as sint64 are bigints here (`num_batches`, `server_round`).
 * FLWR_TS_DIST overrides where the built package is (default: this repository's dist/).
 */
const path = require("node:path");
const { ClientApp, NumPyClient } = require(
  path.join(process.env.FLWR_TS_DIST || path.join(__dirname, "..", "..", "..", "dist"), "client"),
);

class InteropClient extends NumPyClient {
  getParameters(_config) {
    return [
      { dtype: "float32", shape: [2, 3], data: new Float32Array(6) },
      { dtype: "float32", shape: [4], data: new Float32Array(4) },
    ];
  }

  fit(parameters, config) {
    const updated = parameters.map((p) => ({ dtype: p.dtype, shape: p.shape, data: p.data.map((v) => v + 1) }));
    const round = config.server_round === undefined ? -1n : BigInt(config.server_round);
    const metrics = { loss: 0.5, loss_avg: 0.25, num_batches: 3n, server_round: round, impl: "ts" };
    return [updated, 10, metrics];
  }

  evaluate(parameters, _config) {
    let sum = 0;
    let count = 0;
    for (const p of parameters) for (const v of p.data) ((sum += v), (count += 1));
    return [sum / count, 5, { acc: 0.75, accuracy: 0.5, impl: "ts" }];
  }
}

exports.app = new ClientApp({ clientFn: () => new InteropClient() });
