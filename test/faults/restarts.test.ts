/**
 * Faults around process restarts, with real processes (TLS + node authentication):
 * - the SuperLink restarted on its SQLite database between two runs: the SuperNodes ride it out
 *   with backoff, keep their node ids (the node rows and key mappings persist, docs/protocol.md, "State"),
 *   the next run completes and the earlier run is still known (GetRun);
 * - the ServerApp killed mid-run: the SuperLink and SuperNodes keep running and the next
 *   ServerApp completes.
 */
import { join } from "node:path";
import { unaryCall } from "../../src/transport/channel";
import { type Fixtures, generateFixtures } from "../helpers/fixtures";
import { driverClient } from "../superlink/helpers";
import {
  ensureDist,
  isEvent,
  killAll,
  runIdOf,
  spawnServerApp,
  startSuperLink,
  startSuperNode,
  stop,
  superlinkArgs,
  trainRepliesSent,
  writeApps,
} from "./helpers";

jest.setTimeout(120_000);

let fx: Fixtures;
let apps: { dir: string; cleanup(): void };
const closers: Array<() => void> = [];

beforeAll(() => {
  ensureDist();
  fx = generateFixtures(2);
  apps = writeApps();
}, 120_000);
afterEach(async () => {
  for (const c of closers.splice(0)) c();
  await killAll();
});
afterAll(() => {
  fx?.cleanup();
  apps?.cleanup();
});

test("SuperLink restart on --database FILE between runs: nodes reconnect with the same ids, old runs stay known, a new run completes", async () => {
  const database = join(fx.dir, "restart.db");
  const first = await startSuperLink(superlinkArgs(fx, { database }), "superlink-1");
  const n1 = await startSuperNode(fx, apps.dir, first.fleetAddress, 0);
  const n2 = await startSuperNode(fx, apps.dir, first.fleetAddress, 1);

  const run1App = spawnServerApp(fx, apps.dir, first.driverAddress);
  const run1 = await runIdOf(run1App);
  expect(await run1App.exited).toBe(0);

  // Graceful stop. The SuperNodes' calls now fail and they back off (they do not give up).
  expect(await stop(first.proc, "SIGTERM")).toBe(0);
  for (const n of [n1, n2]) await n.node.waitFor(isEvent("supernode.retry"), "a failed call being retried");
  // A new process on the same database and the same ports.
  const second = await startSuperLink(
    superlinkArgs(fx, { database, driver: first.driverAddress, fleet: first.fleetAddress }),
    "superlink-2",
  );
  expect([second.driverAddress, second.fleetAddress]).toEqual([first.driverAddress, first.fleetAddress]);

  // Each SuperNode comes back through its retry loop.
  for (const n of [n1, n2]) {
    await n.node.waitFor(isEvent("supernode.reconnected"), "reconnection after the restart");
  }

  const run2App = spawnServerApp(fx, apps.dir, second.driverAddress);
  const run2 = await runIdOf(run2App);
  expect(await run2App.exited).toBe(0);
  expect(run2).not.toBe(run1);
  expect(run2App.stdout[1]).toMatch(/^Run finished 2 round\(s\)/);
  // Both nodes trained in both runs.
  expect(trainRepliesSent(n1.node)).toBe(4);
  expect(trainRepliesSent(n2.node)).toBe(4);

  // Same node ids as before the restart: nobody had to register anew.
  for (const n of [n1, n2]) {
    expect(n.node.logs.some(isEvent("supernode.reregistered"))).toBe(false);
    expect(n.node.alive()).toBe(true);
  }
  const driver = driverClient(second.driverAddress, fx.read(fx.caCert));
  closers.push(() => driver.close());
  const nodes = (await unaryCall(driver.getNodes.bind(driver), { runId: run2 })).response.nodes.map((n) => n.nodeId);
  expect(nodes.sort()).toEqual([n1.nodeId, n2.nodeId].sort());
  // The run created before the restart is still known.
  const old = (await unaryCall(driver.getRun.bind(driver), { runId: run1 })).response.run;
  expect(old?.runId).toBe(run1);
});

test("ServerApp killed mid-run: SuperLink and SuperNodes keep running and the next ServerApp completes", async () => {
  const link = await startSuperLink(superlinkArgs(fx));
  const n1 = await startSuperNode(fx, apps.dir, link.fleetAddress, 0);
  const n2 = await startSuperNode(fx, apps.dir, link.fleetAddress, 1);

  const doomed = spawnServerApp(fx, apps.dir, link.driverAddress);
  await doomed.waitFor(
    isEvent("serverapp.configure-fit", (r) => r["round"] === 1),
    "round 1",
  );
  doomed.proc.kill("SIGKILL");
  expect(await doomed.exited).toBeNull();

  const next = spawnServerApp(fx, apps.dir, link.driverAddress);
  expect(await next.exited).toBe(0);
  expect(next.stdout[0]).toBe("[SUMMARY]");
  expect(next.stdout[1]).toMatch(/^Run finished 2 round\(s\)/);
  const rounds = next.logs.filter(isEvent("serverapp.aggregate-fit"));
  expect(rounds.map((r) => [r["results"], r["failures"]])).toEqual([
    [2, 0],
    [2, 0],
  ]);
  for (const n of [n1, n2]) expect(n.node.alive()).toBe(true);
  expect(link.proc.alive()).toBe(true);
});
