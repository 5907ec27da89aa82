/**
 * Fault: a SuperNode dies (SIGKILL, no DeleteNode) in the middle of a round. Real processes:
 * flower-superlink (TLS + node auth), two flower-client-app, flower-server-app.
 *
 * Expected (docs/protocol.md, "State" and "Strategy loop and History"): once the dead node's last ping has run out (ping_interval
 * 30 s in Flower; here the nodes announce 6 s so the test does not wait half a minute), the SuperLink answers the ServerApp's pull for the unanswered instruction with a
 * synthesized NODE_UNAVAILABLE error reply; the legacy ServerApp counts it as a failure, FedAvg
 * aggregates the surviving result, the run finishes, and the surviving node keeps training.
 */
import { type Fixtures, generateFixtures } from "../helpers/fixtures";
import {
  ensureDist,
  isEvent,
  killAll,
  spawnServerApp,
  startSuperLink,
  startSuperNode,
  trainRepliesSent,
  writeApps,
} from "./helpers";

jest.setTimeout(150_000);

/** Seconds; the survivor pings every ~2.4 s, so it stays online with room for a slow machine. */
const PING_INTERVAL = 6;

let fx: Fixtures;
let apps: { dir: string; cleanup(): void };

beforeAll(() => {
  ensureDist();
  fx = generateFixtures(2);
  apps = writeApps();
}, 120_000);
afterEach(killAll);
afterAll(() => {
  fx?.cleanup();
  apps?.cleanup();
});

test("a SuperNode killed mid-round: its instruction fails with NODE_UNAVAILABLE, the run finishes, the other node keeps working", async () => {
  const link = await startSuperLink([
    "--ssl-ca-certfile",
    fx.caCert,
    "--ssl-certfile",
    fx.serverCert,
    "--ssl-keyfile",
    fx.serverKey,
    "--auth-list-public-keys",
    fx.allowlistCsv,
    "--auth-superlink-private-key",
    fx.superlinkPrivateKey,
    "--auth-superlink-public-key",
    fx.superlinkPublicKey,
    "--driver-api-address",
    "127.0.0.1:0",
    "--fleet-api-address",
    "127.0.0.1:0",
    "--min-ping-interval",
    "1",
  ]);
  const survivor = await startSuperNode(fx, apps.dir, link.fleetAddress, 0, { pingInterval: PING_INTERVAL });
  // The victim's fit never returns, so it is surely still "training" when it is killed.
  const victim = await startSuperNode(fx, apps.dir, link.fleetAddress, 1, {
    nodeConfig: "partition-id=1,hang=true",
    pingInterval: PING_INTERVAL,
  });

  // `solo` needs one node per round, so round 2 can go on without the dead node.
  const serverApp = spawnServerApp(fx, apps.dir, link.driverAddress, "solo");
  const round1 = await serverApp.waitFor(
    isEvent("serverapp.configure-fit", (r) => r["round"] === 1),
    "round 1",
  );
  expect(round1["sampled"]).toBe(2);
  await victim.node.waitFor(
    isEvent("supernode.message-received", (r) => r["messageType"] === "train"),
    "the train instruction",
  );
  victim.node.proc.kill("SIGKILL");
  expect(await victim.node.exited).toBeNull(); // killed, no clean exit

  const aggregated = await serverApp.waitFor(
    isEvent("serverapp.aggregate-fit", (r) => r["round"] === 1),
    "round 1 aggregation",
  );
  expect({ results: aggregated["results"], failures: aggregated["failures"] }).toEqual({ results: 1, failures: 1 });
  const failed = serverApp.logs.find(isEvent("serverapp.client-failed", (r) => r["round"] === 1));
  expect(failed?.["nodeId"]).toBe(victim.nodeId.toString());
  expect(String(failed?.["msg"])).toContain("Node Unavailable");

  expect(await serverApp.exited).toBe(0);
  expect(serverApp.stdout[0]).toBe("[SUMMARY]");
  expect(serverApp.stdout[1]).toMatch(/^Run finished 2 round\(s\)/);
  // Round 2 sampled only the survivor (the dead node is no longer listed by GetNodes).
  const round2 = serverApp.logs.find(isEvent("serverapp.aggregate-fit", (r) => r["round"] === 2));
  expect({ results: round2?.["results"], failures: round2?.["failures"] }).toEqual({ results: 1, failures: 0 });
  expect(trainRepliesSent(survivor.node)).toBe(2);

  // Nothing else went down.
  expect(survivor.node.alive()).toBe(true);
  expect(link.proc.alive()).toBe(true);
});
