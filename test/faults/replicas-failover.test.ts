/**
 * Replicas on PostgreSQL with real processes (TLS + node authentication): two SuperLinks share
 * one database behind a TCP balancer (TLS passthrough, round-robin, dead replicas skipped), so
 * SuperNodes and the ServerApp are spread over both and long polls must be woken across
 * replicas (LISTEN/NOTIFY). One replica is SIGKILLed mid-run; the run must finish with exactly
 * the History of the same deterministic apps on a single SuperLink, every round complete, no
 * instruction run twice. Skipped, saying why, where PostgreSQL cannot start.
 */
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { type LocalPostgres, localPostgresUnavailableReason, startLocalPostgres } from "../../src/cli/local-postgres";
import { type Fixtures, REPO_ROOT, generateFixtures } from "../helpers/fixtures";
import { startTcpProxy } from "../helpers/tcp-proxy";
import { type Proc, ensureDist, fatalText, isEvent, killAll, spawnBin, startSuperLink, superlinkArgs } from "./helpers";

const ROUNDS = 6;
/** Short lease so a delivery lost with the killed replica is re-offered quickly. */
const LEASE_SECONDS = 3;

const unavailable = localPostgresUnavailableReason();
if (unavailable !== undefined) {
  console.warn(`PostgreSQL replica failover test skipped: ${unavailable}`);
}
const describeIfPostgres = unavailable === undefined ? describe : describe.skip;

jest.setTimeout(180_000);

let fx: Fixtures;
let dir: string;
let postgres: LocalPostgres | undefined;

/** A ClientApp/ServerApp pair whose History depends on every result of every round. */
function writeDeterministicApps(target: string): void {
  const dist = (m: string): string => JSON.stringify(join(REPO_ROOT, "dist", m, "index.js"));
  writeFileSync(
    join(target, "client.js"),
    `"use strict";
const { ClientApp, NumPyClient } = require(${dist("client")});
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
class ReplicaClient extends NumPyClient {
  constructor(context) { super(); this.k = Number(context.nodeConfig["partition-id"]) + 1; }
  getParameters() { return [{ dtype: "float32", shape: [2], data: new Float32Array([0, 0]) }]; }
  async fit(parameters) {
    await sleep(200);
    const out = parameters.map((a) => ({ ...a, data: a.data.map((v) => v * 0.5 + this.k) }));
    return [out, this.k, { w: Number(out[0].data[0]) }];
  }
  async evaluate(parameters) {
    const v = Number(parameters[0].data[0]);
    return [v + this.k, this.k, { acc: v / (v + this.k) }];
  }
}
exports.app = new ClientApp({ clientFn: (context) => new ReplicaClient(context) });
`,
  );
  writeFileSync(
    join(target, "server.js"),
    `"use strict";
const { ServerApp, FedAvg } = require(${dist("server")});
const mean = (key) => (results) => {
  const total = results.reduce((s, [n]) => s + n, 0);
  return { [key]: results.reduce((s, [n, m]) => s + n * m[key], 0) / total };
};
exports.app = new ServerApp({
  config: { numRounds: ${ROUNDS} },
  strategy: new FedAvg({
    minFitClients: 2, minEvaluateClients: 2, minAvailableClients: 2,
    fitMetricsAggregationFn: mean("w"),
    evaluateMetricsAggregationFn: mean("acc"),
  }),
});
`,
  );
}

function spawnNodes(fleet: string): Proc[] {
  return [0, 1].map((i) =>
    spawnBin(`node-${i + 1}`, "flower-client-app", [
      "client:app",
      "--dir",
      dir,
      "--superlink",
      fleet,
      "--root-certificates",
      fx.caCert,
      "--auth-supernode-private-key",
      fx.clientPrivateKeys[i]!,
      "--auth-supernode-public-key",
      fx.clientPublicKeys[i]!,
      "--node-config",
      `partition-id=${i}`,
    ]),
  );
}

function spawnRun(driver: string, historyJson: string): Proc {
  return spawnBin(
    "serverapp",
    "flower-server-app",
    [
      "server:app",
      "--dir",
      dir,
      "--superlink",
      driver,
      "--root-certificates",
      fx.caCert,
      "--retry-deadline",
      "30",
      "--history-json",
      historyJson,
    ],
    dir,
  );
}

function linkArgs(database: string): string[] {
  return [...superlinkArgs(fx, { database }), "--task-lease-seconds", String(LEASE_SECONDS)];
}

/** [results, failures] of every aggregate line of the given kind. */
function aggregates(serverApp: Proc, event: string): Array<[unknown, unknown]> {
  return serverApp.logs.filter(isEvent(event)).map((r) => [r["results"], r["failures"]]);
}

async function finished(run: Proc, others: Proc[]): Promise<void> {
  let timer: NodeJS.Timeout | undefined;
  const code = await Promise.race([
    run.exited,
    new Promise<"stuck">((resolve) => {
      timer = setTimeout(() => {
        resolve("stuck");
      }, 120_000);
    }),
  ]);
  clearTimeout(timer);
  if (code === "stuck") {
    const tails = [run, ...others].map((p) => `--- ${p.name}:\n${p.stderr.slice(-25).join("\n")}`);
    throw new Error(`the run did not finish within 120 s\n${tails.join("\n")}`);
  }
  if (code !== 0) throw new Error(`ServerApp exited ${String(code)}: ${fatalText(run)}\n${run.text().slice(-3000)}`);
}

beforeAll(async () => {
  if (unavailable !== undefined) return;
  ensureDist();
  fx = generateFixtures(2);
  dir = mkdtempSync(join(tmpdir(), "flwr-ts-replicas-"));
  writeDeterministicApps(dir);
  postgres = await startLocalPostgres();
}, 120_000);
afterEach(async () => {
  await killAll();
});
afterAll(async () => {
  await killAll();
  await postgres?.stop();
  if (unavailable === undefined) {
    fx.cleanup();
    rmSync(dir, { recursive: true, force: true });
  }
}, 60_000);

describeIfPostgres("SuperLink replicas on PostgreSQL", () => {
  test(`2 replicas on one PostgreSQL, one SIGKILLed mid-run (TLS + auth): the ${ROUNDS}-round run ends with the single-SuperLink History`, async () => {
    // The reference: one SuperLink on its own database.
    const reference = await startSuperLink(
      linkArgs(await postgres!.createDatabase("reference")),
      "superlink-reference",
    );
    let nodes = spawnNodes(reference.fleetAddress);
    await Promise.all(nodes.map((n) => n.waitFor(isEvent("supernode.ready"), "registration")));
    const referencePath = join(dir, "reference.json");
    const referenceRun = spawnRun(reference.driverAddress, referencePath);
    await finished(referenceRun, [...nodes, reference.proc]);
    const expectedHistory: unknown = JSON.parse(readFileSync(referencePath, "utf8"));
    await killAll();

    // Two replicas on a fresh database behind one balanced address per API.
    const database = await postgres!.createDatabase("replicas");
    const [a, b] = await Promise.all([
      startSuperLink(linkArgs(database), "replica-a"),
      startSuperLink(linkArgs(database), "replica-b"),
    ]);
    const fleet = await startTcpProxy([a.fleetAddress, b.fleetAddress]);
    const driver = await startTcpProxy([a.driverAddress, b.driverAddress]);
    try {
      nodes = spawnNodes(fleet.address);
      await Promise.all(nodes.map((n) => n.waitFor(isEvent("supernode.ready"), "registration")));
      const historyPath = join(dir, "replicas.json");
      const run = spawnRun(driver.address, historyPath);
      await run.waitFor(
        isEvent("serverapp.round", (r) => Number(r["round"]) >= 2),
        "round 2",
      );
      // Both replicas serve (the SuperNodes were spread over them) before one dies mid-round.
      expect([...fleet.forwarded.keys()].sort()).toEqual([a.fleetAddress, b.fleetAddress].sort());
      await new Promise((r) => setTimeout(r, 300));
      a.proc.proc.kill("SIGKILL");
      await a.proc.exited;
      await finished(run, [...nodes, b.proc]);

      expect(JSON.parse(readFileSync(historyPath, "utf8"))).toEqual(expectedHistory);
      const full = Array.from({ length: ROUNDS }, () => [2, 0]);
      expect(aggregates(run, "serverapp.aggregate-fit")).toEqual(full);
      expect(aggregates(run, "serverapp.aggregate-evaluate")).toEqual(full);
      for (const n of nodes) {
        const replied = n.logs.filter(isEvent("supernode.reply-sent")).map((l) => String(l["replyTo"]));
        expect({ node: n.name, duplicates: replied.length - new Set(replied).size }).toEqual({
          node: n.name,
          duplicates: 0,
        });
      }
      expect(b.proc.alive()).toBe(true);
    } finally {
      await fleet.close();
      await driver.close();
    }
  });
});
