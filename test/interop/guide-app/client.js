"use strict";
/**
 * The older Flower guide's "SSL-enabled Client" snippet translated to flwr-ts
 * (`startNumpyClient`), for the library interop tests; the same numbers as client.py.
 * Usage: node client.js ADDRESS CA_CERT OFFSET NUM_EXAMPLES [TRANSPORT]
 * Prints `RECEIVED {json}` (the weights each fit and evaluate got) when the client returns.
 */
const { readFileSync } = require("node:fs");
const path = require("node:path");
const { NumPyClient, startNumpyClient } = require(
  process.env.FLWR_TS_DIST || path.join(__dirname, "..", "..", "..", "dist"),
);

const [address, caCert, offsetArg, examplesArg, transport] = process.argv.slice(2);
const offset = Number(offsetArg);
const examples = Number(examplesArg);
const received = { fit: [], evaluate: [] };

class FlowerClient extends NumPyClient {
  getParameters() {
    return [{ dtype: "float32", shape: [2], data: new Float32Array([1, 2]) }];
  }

  fit(parameters) {
    const w = parameters[0];
    received.fit.push(Array.from(w.data));
    return [[{ dtype: "float32", shape: w.shape, data: w.data.map((x) => x + offset) }], examples, { impl: "ts" }];
  }

  evaluate(parameters) {
    const w = parameters[0];
    received.evaluate.push(Array.from(w.data));
    return [w.data[0] + offset, examples, { impl: "ts" }];
  }
}

startNumpyClient(address, {
  client: new FlowerClient(),
  rootCertificates: readFileSync(caCert),
  ...(transport ? { transport } : {}),
}).then(
  () => console.log("RECEIVED " + JSON.stringify(received)),
  (err) => {
    console.error(err);
    process.exitCode = 1;
  },
);
