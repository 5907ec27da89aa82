/**
 * Day-to-day use of the real daemons (bin/*, built dist/): the SuperLink's info lines (node
 * registered/left, run created), the ServerApp's per-round line, --history-plot, exit 3 when
 * a round had no successful fit result, the duplicate-key warning, and the hints for a
 * ServerApp pointed at the Fleet API and for an --insecure SuperNode dialling a TLS SuperLink.
 */
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { type Fixtures, REPO_ROOT, generateFixtures } from "../helpers/fixtures";
import { ensureDist, isEvent, killAll, spawnBin, startSuperLink, stop, superlinkArgs } from "./helpers";

jest.setTimeout(150_000);

let fx: Fixtures;
let appDir: string;

beforeAll(() => {
  ensureDist();
  fx = generateFixtures(2);
  appDir = mkdtempSync(join(tmpdir(), "flwr-ts-daytoday-"));
  const dist = (m: string): string => JSON.stringify(join(REPO_ROOT, "dist", m, "index.js"));
  writeFileSync(
    join(appDir, "client.js"),
    `"use strict";
const { ClientApp, NumPyClient } = require(${dist("client")});
class DayClient extends NumPyClient {
  constructor(context) { super(); this.fail = context.nodeConfig.fail === true; }
  getParameters() { return [{ dtype: "float32", shape: [2], data: new Float32Array([0, 0]) }]; }
  fit(parameters) {
    if (this.fail) throw new Error("training data missing");
    return [parameters.map((a) => ({ ...a, data: a.data.map((v) => v + 1) })), 10, { train_loss: 0.5 }];
  }
  evaluate(parameters) { return [1 / (1 + parameters[0].data[0]), 10, { accuracy: parameters[0].data[0] / 4 }]; }
}
exports.app = new ClientApp({ clientFn: (context) => new DayClient(context) });
`,
  );
  writeFileSync(
    join(appDir, "server.js"),
    `"use strict";
const { ServerApp, FedAvg } = require(${dist("server")});
const mean = (key) => (rs) => ({ [key]: rs.reduce((s, [n, m]) => s + n * m[key], 0) / rs.reduce((s, [n]) => s + n, 0) });
exports.app = new ServerApp({
  config: { numRounds: 3 },
  strategy: new FedAvg({ minFitClients: 1, minAvailableClients: 1, minEvaluateClients: 1,
    fitMetricsAggregationFn: mean("train_loss"), evaluateMetricsAggregationFn: mean("accuracy") }),
});
`,
  );
}, 180_000);

afterAll(() => {
  fx?.cleanup();
  if (appDir) rmSync(appDir, { recursive: true, force: true });
});
afterEach(killAll);

function insecureSuperLink(): ReturnType<typeof startSuperLink> {
  return startSuperLink(["--insecure", "--driver-api-address", "127.0.0.1:0", "--fleet-api-address", "127.0.0.1:0"]);
}

function insecureSuperNode(fleetAddress: string, nodeConfig: string, name = "node"): ReturnType<typeof spawnBin> {
  return spawnBin(name, "flower-client-app", [
    "client:app",
    "--dir",
    appDir,
    "--insecure",
    "--superlink",
    fleetAddress,
    "--node-config",
    nodeConfig,
  ]);
}

function insecureServerApp(driverAddress: string, extra: string[] = []): ReturnType<typeof spawnBin> {
  return spawnBin(
    "serverapp",
    "flower-server-app",
    ["server:app", "--dir", appDir, "--insecure", "--superlink", driverAddress, ...extra],
    appDir,
  );
}

test("SuperLink: info lines for node registered, run created and node left; ServerApp: a line per round and an SVG chart", async () => {
  const link = await insecureSuperLink();
  const node = insecureSuperNode(link.fleetAddress, "partition-id=0");
  const ready = await node.waitFor(isEvent("supernode.ready"), "readiness");
  const registered = await link.proc.waitFor(isEvent("superlink.node-registered"), "node registered line");
  expect(registered["level"]).toBe(30);
  expect(registered["nodeId"]).toBe(String(ready["nodeId"]));
  expect(registered["authenticated"]).toBe(false);
  expect(String(registered["msg"])).toContain(`Node ${String(ready["nodeId"])} registered (not authenticated)`);

  const plot = join(appDir, "history.svg");
  const app = insecureServerApp(link.driverAddress, ["--history-plot", plot]);
  expect(await app.exited).toBe(0);
  const runCreated = await link.proc.waitFor(isEvent("superlink.run-created"), "run created line");
  expect(typeof runCreated["runId"]).toBe("string");
  const appRun = app.logs.find(isEvent("serverapp.run-created"));
  expect(runCreated["runId"]).toBe(appRun?.["runId"]);

  const rounds = app.logs.filter(isEvent("serverapp.round-finished"));
  expect(rounds.map((r) => r["round"])).toEqual([1, 2, 3]);
  expect(
    rounds.every((r) => r["level"] === 30 && r["fitResults"] === 1 && r["fitFailures"] === 0 && r["evalResults"] === 1),
  ).toBe(true);
  expect(rounds[0]!["fitMetrics"]).toEqual({ train_loss: 0.5 });
  expect(rounds[2]!["evalMetrics"]).toEqual({ accuracy: 0.75 });
  expect(rounds[2]!["evalLoss"]).toBeCloseTo(0.25);
  expect(String(rounds[1]!["msg"])).toMatch(
    /^Round 2\/3 done in \d+\.\d\d s: fit 1 results, 0 failures \(train_loss=0\.5\); evaluate 1 results, 0 failures, loss 0\.3333 \(accuracy=0\.5\)$/,
  );

  const svg = readFileSync(plot, "utf8");
  expect(svg).toContain("<svg");
  expect(svg).toContain("accuracy (distributed, evaluate)");
  expect(svg).toContain("train_loss (distributed, fit)");

  expect(await stop(node)).toBe(0);
  const left = await link.proc.waitFor(isEvent("superlink.node-left"), "node left line");
  expect(left["nodeId"]).toBe(String(ready["nodeId"]));
  expect(left["reason"]).toBe("DeleteNode");
});

test("ServerApp: exit 3 when a round had no successful fit result (every fit failed)", async () => {
  const link = await insecureSuperLink();
  const node = insecureSuperNode(link.fleetAddress, "fail=true");
  await node.waitFor(isEvent("supernode.ready"), "readiness");
  const plot = join(appDir, "failed.svg");
  const app = insecureServerApp(link.driverAddress, ["--history-plot", plot]);
  expect(await app.exited).toBe(3);
  const rounds = app.logs.filter(isEvent("serverapp.round-finished"));
  expect(rounds).toHaveLength(3);
  expect(rounds.every((r) => r["fitResults"] === 0 && r["fitFailures"] === 1)).toBe(true);
  const final = app.logs.find(isEvent("serverapp.no-fit-results"));
  expect(final?.["level"]).toBe(50);
  expect(final?.["rounds"]).toEqual([1, 2, 3]);
  // The History and its chart are still written: they show what did happen.
  expect(existsSync(plot)).toBe(true);
  expect(app.stdout.join("\n")).toContain("[SUMMARY]");
});

test("ServerApp pointed at the Fleet API: exit 2 with 'is that the Fleet API?'", async () => {
  const link = await insecureSuperLink();
  const app = insecureServerApp(link.fleetAddress);
  expect(await app.exited).toBe(2);
  const fatal = app.logs.find((l) => l["level"] === 60);
  expect(String(fatal?.["msg"])).toMatch(
    /does not implement CreateRun .*is that the Fleet API\? The Driver API is on port 9091 by default/,
  );
  expect(fatal?.["code"]).toBe("FLWR_INVALID_CONFIG");
});

test("--insecure SuperNode against a TLS SuperLink: a warning with the hint, and it keeps retrying", async () => {
  const link = await startSuperLink(superlinkArgs(fx, { auth: false }));
  const node = insecureSuperNode(link.fleetAddress, "partition-id=0");
  const hint = await node.waitFor(isEvent("supernode.tls-hint"), "TLS hint");
  expect(hint["level"]).toBe(40);
  expect(String(hint["msg"])).toContain("it probably serves TLS. Drop --insecure and pass --root-certificates");
  await node.waitFor(
    isEvent("supernode.retry", (r) => Number(r["tries"]) >= 3),
    "a retry after the hint",
  );
  expect(node.alive()).toBe(true);
  expect(node.logs.filter(isEvent("supernode.tls-hint"))).toHaveLength(1);
});

test("TLS SuperNode against a plaintext SuperLink: unambiguous, so exit 2 with the hint", async () => {
  const link = await insecureSuperLink();
  const node = spawnBin("tls-node", "flower-client-app", [
    "client:app",
    "--dir",
    appDir,
    "--superlink",
    link.fleetAddress,
    "--root-certificates",
    fx.caCert,
  ]);
  expect(await node.exited).toBe(2);
  const fatal = node.logs.find((l) => l["level"] === 60);
  expect(String(fatal?.["msg"])).toMatch(/does not speak TLS .*it probably runs with --insecure/);
});

test("SuperLink with node authentication: registered (authenticated), and a warning when two live SuperNodes present the same key", async () => {
  const link = await startSuperLink(superlinkArgs(fx));
  const nodeArgs = (name: string): string[] => [
    "client:app",
    "--dir",
    appDir,
    "--superlink",
    link.fleetAddress,
    "--root-certificates",
    fx.caCert,
    "--auth-supernode-private-key",
    fx.clientPrivateKeys[0]!,
    "--auth-supernode-public-key",
    fx.clientPublicKeys[0]!,
    "--node-config",
    `name="${name}"`,
  ];
  const first = spawnBin("first", "flower-client-app", nodeArgs("first"));
  const ready = await first.waitFor(isEvent("supernode.ready"), "readiness");
  const registered = await link.proc.waitFor(isEvent("superlink.node-registered"), "node registered line");
  expect(registered).toMatchObject({ nodeId: String(ready["nodeId"]), authenticated: true, reused: false });
  expect(link.proc.logs.some(isEvent("superlink.duplicate-node-key"))).toBe(false);

  const second = spawnBin("second", "flower-client-app", nodeArgs("second"));
  await second.waitFor(isEvent("supernode.ready"), "readiness of the second node");
  const duplicate = await link.proc.waitFor(isEvent("superlink.duplicate-node-key"), "duplicate-key warning");
  expect(duplicate["level"]).toBe(40);
  expect(duplicate["nodeId"]).toBe(String(ready["nodeId"]));
  expect(String(duplicate["key"])).toMatch(/^SHA256:/);
  expect(String(duplicate["msg"])).toContain("are two SuperNodes using the same key pair?");
  expect(first.alive() && second.alive()).toBe(true);

  // After a clean DeleteNode the key is free again: registering it anew is no duplicate.
  second.proc.kill("SIGKILL");
  await second.exited;
  expect(await stop(first)).toBe(0);
  await link.proc.waitFor(isEvent("superlink.node-left"), "node left line");
  const third = spawnBin("third", "flower-client-app", nodeArgs("third"));
  const thirdReady = await third.waitFor(isEvent("supernode.ready"), "readiness of the third node");
  const again = await link.proc.waitFor(
    isEvent("superlink.node-registered", (r) => r["nodeId"] === String(thirdReady["nodeId"])),
    "the third node's registration",
  );
  expect(again["reused"]).toBe(false);
  expect(link.proc.logs.filter(isEvent("superlink.duplicate-node-key"))).toHaveLength(1);
});
