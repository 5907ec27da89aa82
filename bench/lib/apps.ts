/**
 * The ClientApps and ServerApps the scenarios run, written as plain JS files into a temp dir
 * (as a user would write them), requiring this repository's built dist/. Parameters of a
 * scenario are baked into the file as JSON constants.
 */
import { writeFileSync } from "node:fs";
import { join } from "node:path";
import { REPO_ROOT } from "./processes";

const DIST = JSON.stringify(join(REPO_ROOT, "dist"));

/** Prefix of the stdout line a bench ServerApp prints its measurements on. */
export const RESULT_PREFIX = "BENCH_RESULT ";

/** A tiny NumPyClient (two float32 arrays, 16 values), no TensorFlow. */
const ROUNDS_CLIENT = `"use strict";
const path = require("node:path");
const { ClientApp, NumPyClient } = require(path.join(${DIST}, "client"));

class TinyClient extends NumPyClient {
  getParameters(_config) {
    return [
      { dtype: "float32", shape: [3, 4], data: new Float32Array(12) },
      { dtype: "float32", shape: [4], data: new Float32Array(4) },
    ];
  }
  fit(parameters, _config) {
    const updated = parameters.map((p) => ({ dtype: p.dtype, shape: p.shape, data: p.data.map((v) => v + 0.5) }));
    return [updated, 10, { loss: 0.5 }];
  }
  evaluate(parameters, _config) {
    let sum = 0;
    let n = 0;
    for (const p of parameters) for (const v of p.data) (sum += v), (n += 1);
    return [sum / n, 5, { accuracy: 0.5 }];
  }
}

exports.app = new ClientApp({ clientFn: () => new TinyClient() });
`;

/** FedAvg over exactly the SuperNodes started, `numRounds` rounds, fit and evaluate on all. */
function roundsServer(numRounds: number, numNodes: number): string {
  return `"use strict";
const path = require("node:path");
const { ServerApp, FedAvg } = require(path.join(${DIST}, "server"));

const strategy = new FedAvg({
  fractionFit: 1.0,
  fractionEvaluate: 1.0,
  minFitClients: ${numNodes},
  minEvaluateClients: ${numNodes},
  minAvailableClients: ${numNodes},
});

exports.app = new ServerApp({ config: { numRounds: ${numRounds} }, strategy });
`;
}

/** Message-API ClientApp answering every "query" with the content it received. */
const ECHO_CLIENT = `"use strict";
const path = require("node:path");
const { ClientApp, createReply } = require(path.join(${DIST}, "client"));

exports.app = new ClientApp().query((message) => createReply(message, message.content));
`;

/**
 * Message-API ServerApp: waits for \`numNodes\` nodes, sends each one "query" message carrying a
 * ParametersRecord of \`payloadBytes\` (float32 tensors of \`tensorBytes\`), one PushTaskIns per
 * node (a single push of 10 x 100 MB would pass gRPC's 512 MiB limit), pulls each reply on its
 * own (same reason), checks every reply carries the whole payload back, and prints the timings.
 */
function relayServer(payloadBytes: number, tensorBytes: number, numNodes: number): string {
  return `"use strict";
const path = require("node:path");
const { ServerApp } = require(path.join(${DIST}, "server"));
const { RecordSet } = require(path.join(${DIST}, "client"));

const PAYLOAD_BYTES = ${payloadBytes};
const TENSOR_BYTES = ${tensorBytes};
const NUM_NODES = ${numNodes};
const NODE_WAIT_MS = 120000;
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

function payload() {
  const record = new Map();
  let left = PAYLOAD_BYTES;
  for (let i = 0; left > 0; i++) {
    const n = Math.min(TENSOR_BYTES, left);
    const data = new Uint8Array(n);
    for (let j = 0; j < n; j += 4096) data[j] = (i + j) & 0xff; // touch every page: real memory, not zero pages
    record.set("layer_" + i, { dtype: "float32", shape: [n / 4], stype: "numpy.ndarray", data });
    left -= n;
  }
  return new RecordSet({ parametersRecords: new Map([["payload", record]]) });
}

function bytesOf(content) {
  let total = 0;
  for (const rec of content.parametersRecords.values()) for (const a of rec.values()) total += a.data.byteLength;
  return total;
}

exports.app = new ServerApp({
  main: async (driver) => {
    let nodeIds = [];
    const waitUntil = Date.now() + NODE_WAIT_MS;
    while (nodeIds.length < NUM_NODES) {
      if (Date.now() > waitUntil) throw new Error("only " + nodeIds.length + " of " + NUM_NODES + " nodes online");
      nodeIds = await driver.getNodeIds();
      if (nodeIds.length < NUM_NODES) await sleep(100);
    }
    const content = payload();
    const cpu0 = process.cpuUsage();
    const started = performance.now();
    let lastPushed = 0;
    const perNode = await Promise.all(
      nodeIds.slice(0, NUM_NODES).map(async (nodeId) => {
        const [id] = await driver.pushMessages([driver.createMessage(content, "query", nodeId, "1")]);
        if (!id) throw new Error("message to node " + nodeId + " was not stored");
        const pushedMs = performance.now() - started;
        lastPushed = Math.max(lastPushed, pushedMs);
        for (;;) {
          const [reply] = await driver.pullMessages([id]);
          if (reply === undefined) continue; // the SuperLink held the pull open; nothing yet
          if (reply.error) throw new Error("node " + nodeId + " answered with error " + JSON.stringify(reply.error));
          const got = bytesOf(reply.content);
          if (got !== PAYLOAD_BYTES) throw new Error("node " + nodeId + " echoed " + got + " bytes, expected " + PAYLOAD_BYTES);
          return { pushedMs, repliedMs: performance.now() - started };
        }
      }),
    );
    const totalMs = performance.now() - started;
    const cpu = process.cpuUsage(cpu0);
    console.log(${JSON.stringify(RESULT_PREFIX)} + JSON.stringify({
      nodes: NUM_NODES,
      payloadBytes: PAYLOAD_BYTES,
      allPushedMs: lastPushed,
      totalMs,
      firstReplyMs: Math.min(...perNode.map((p) => p.repliedMs)),
      cpuMs: (cpu.user + cpu.system) / 1000,
      peakRssKiB: process.resourceUsage().maxRSS,
    }));
  },
});
`;
}

export function writeRoundsApps(dir: string, numRounds: number, numNodes: number): void {
  writeFileSync(join(dir, "tiny_client.js"), ROUNDS_CLIENT);
  writeFileSync(join(dir, "fedavg_server.js"), roundsServer(numRounds, numNodes));
}

export function writeRelayApps(dir: string, payloadBytes: number, tensorBytes: number, numNodes: number): void {
  writeFileSync(join(dir, "echo_client.js"), ECHO_CLIENT);
  writeFileSync(join(dir, "relay_server.js"), relayServer(payloadBytes, tensorBytes, numNodes));
}

/**
 * A NumPyClient for "fedavg": fit returns the global arrays plus a per-node offset (fresh
 * arrays, as a real update) and a node-specific num_examples, so the weights differ.
 */
const LARGE_CLIENT = `"use strict";
const path = require("node:path");
const { ClientApp, NumPyClient } = require(path.join(${DIST}, "client"));

class LargeClient extends NumPyClient {
  constructor(partition) {
    super();
    this.partition = partition;
  }
  fit(parameters, _config) {
    const offset = (this.partition + 1) / 8;
    const updated = parameters.map((p) => ({ dtype: p.dtype, shape: p.shape, data: p.data.map((v) => v + offset) }));
    return [updated, 100 + 7 * this.partition, {}];
  }
}

exports.app = new ClientApp({
  clientFn: (context) => new LargeClient(Number(context.nodeConfig["partition-id"] ?? 0)),
});
`;

/**
 * Legacy FedAvg over \`numNodes\` nodes with \`payloadBytes\` of float32 initial parameters (tensors
 * of \`tensorBytes\`), fit only. After each round's aggregation it prints the process's peak RSS
 * so far (configureEvaluate runs right after aggregate_fit and the centralized evaluation).
 */
function largeFedAvgServer(payloadBytes: number, tensorBytes: number, numNodes: number, numRounds: number): string {
  return `"use strict";
const path = require("node:path");
const { ServerApp, FedAvg } = require(path.join(${DIST}, "server"));
const { ndarraysToParameters } = require(path.join(${DIST}, "core", "records", "parameters"));

function initial() {
  const arrays = [];
  for (let left = ${payloadBytes}, i = 0; left > 0; i++) {
    const n = Math.min(${tensorBytes}, left) / 4;
    const data = new Float32Array(n);
    for (let j = 0; j < n; j++) data[j] = ((i * 31 + j) % 1000) / 1000;
    arrays.push({ dtype: "float32", shape: [n], data });
    left -= n * 4;
  }
  return ndarraysToParameters(arrays);
}

// A memory timeline in the log (kept with --keep): where the peak happens.
const started = Date.now();
setInterval(() => {
  const m = process.memoryUsage();
  const mib = (x) => Math.round(x / 2 ** 20);
  console.log("BENCH_MEM " + JSON.stringify({ s: (Date.now() - started) / 1000, rss: mib(m.rss), external: mib(m.external), arrayBuffers: mib(m.arrayBuffers), heap: mib(m.heapUsed) }));
}, 250).unref();

class MeasuredFedAvg extends FedAvg {
  configureEvaluate(round, parameters, clientManager) {
    console.log(${JSON.stringify(RESULT_PREFIX)} + JSON.stringify({ round, peakRssKiB: process.resourceUsage().maxRSS }));
    return super.configureEvaluate(round, parameters, clientManager);
  }
}

const strategy = new MeasuredFedAvg({
  initialParameters: initial(),
  fractionEvaluate: 0,
  minFitClients: ${numNodes},
  minAvailableClients: ${numNodes},
});

exports.app = new ServerApp({ config: { numRounds: ${numRounds} }, strategy });
`;
}

export function writeFedAvgApps(
  dir: string,
  payloadBytes: number,
  tensorBytes: number,
  numNodes: number,
  numRounds: number,
): void {
  writeFileSync(join(dir, "large_client.js"), LARGE_CLIENT);
  writeFileSync(join(dir, "large_fedavg_server.js"), largeFedAvgServer(payloadBytes, tensorBytes, numNodes, numRounds));
}
