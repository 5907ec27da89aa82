"use strict";
/**
 * The older Flower guide's "SSL-enabled Server" snippet translated to flwr-ts (`startServer`),
 * for the library interop tests. Usage: node server.js PORT CERT_DIR NUM_ROUNDS
 * Prints one line `HISTORY {json}` with the distributed losses, then exits.
 * FLWR_TS_DIST overrides where the built package is (default: this repository's dist/).
 */
const { readFileSync } = require("node:fs");
const path = require("node:path");
const { startServer } = require(process.env.FLWR_TS_DIST || path.join(__dirname, "..", "..", "..", "dist"));

const [port, certDir, numRounds] = process.argv.slice(2);

async function main() {
  const history = await startServer({
    serverAddress: `127.0.0.1:${port}`,
    config: { numRounds: Number(numRounds) },
    certificates: [
      readFileSync(path.join(certDir, "ca.crt")),
      readFileSync(path.join(certDir, "server.pem")),
      readFileSync(path.join(certDir, "server.key")),
    ],
  });
  console.log("HISTORY " + JSON.stringify({ losses_distributed: history.lossesDistributed }));
}

main().catch((err) => {
  console.error(err);
  process.exitCode = 1;
});
