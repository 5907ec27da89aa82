/**
 * End to end over the REST Fleet API with real processes from dist/: `flower-superlink
 * --fleet-api-type rest` with TLS and node authentication, one `flower-client-app --rest` and one
 * `flower-supernode --rest` over https with their keys, and `flower-server-app` running the
 * interop ServerApp (FedAvg, 2 rounds) to completion. A node whose key is not allowlisted is
 * refused and exits 2.
 */
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { requireDist } from "../helpers/dist";
import { type Fixtures, REPO_ROOT, generateFixtures } from "../helpers/fixtures";
import { Peer } from "../helpers/peer-process";

jest.setTimeout(180_000);

const TS_APP_DIR = join(REPO_ROOT, "test", "interop", "ts-app");

let fx: Fixtures;
let stranger: Fixtures;
let work: string;
const peers: Peer[] = [];

const start = (name: string, bin: string, args: string[]): Peer => {
  const p = new Peer(name, process.execPath, [join(REPO_ROOT, "bin", bin), ...args], process.env, work);
  peers.push(p);
  return p;
};

beforeAll(() => {
  requireDist();
  fx = generateFixtures(2);
  stranger = generateFixtures(1);
  work = mkdtempSync(join(tmpdir(), "flwr-ts-rest-e2e-"));
});
afterAll(async () => {
  const nodes = peers.filter((p) => !/superlink/.test(p.name));
  await Promise.all(nodes.map((p) => p.stop()));
  await Promise.all(peers.map((p) => p.stop()));
  fx?.cleanup();
  stranger?.cleanup();
  if (work) rmSync(work, { recursive: true, force: true });
});

test("REST SuperLink (TLS + auth) + flower-client-app --rest + flower-supernode --rest run a ServerApp", async () => {
  const superlink = start("superlink", "flower-superlink", [
    "--fleet-api-type",
    "rest",
    "--driver-api-address",
    "127.0.0.1:0",
    "--fleet-api-address",
    "127.0.0.1:0",
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
  ]);
  const ready = await superlink.waitFor(/\{[^\n]*"event":"superlink\.ready"[^\n]*\}/, 30_000);
  const { driverAddress, fleetAddress, fleetApiType } = JSON.parse(ready[0]) as {
    driverAddress: string;
    fleetAddress: string;
    fleetApiType: string;
  };
  expect(fleetApiType).toBe("rest");
  const url = `https://${fleetAddress}`;
  const nodeArgs = (i: number): string[] => [
    "--rest",
    "--superlink",
    url,
    "--root-certificates",
    fx.caCert,
    "--auth-supernode-private-key",
    fx.clientPrivateKeys[i]!,
    "--auth-supernode-public-key",
    fx.clientPublicKeys[i]!,
  ];
  const nodes = [
    start("client-app", "flower-client-app", ["client:app", "--dir", TS_APP_DIR, ...nodeArgs(0)]),
    start("supernode", "flower-supernode", ["client:app", "--dir", TS_APP_DIR, ...nodeArgs(1)]),
  ];
  await Promise.all(nodes.map((n) => n.waitFor(/"event":"supernode\.ready"/, 30_000)));

  const serverApp = start("server-app", "flower-server-app", [
    "server:app",
    "--dir",
    TS_APP_DIR,
    "--root-certificates",
    fx.caCert,
    "--superlink",
    driverAddress,
  ]);
  const code = await serverApp.waitForExit(120_000);
  if (code !== 0) throw new Error(`ServerApp exit ${code}\n${peers.map((p) => p.tail()).join("\n")}`);
  const summary = /\{[^\n]*"event":"serverapp\.summary"[^\n]*\}/.exec(serverApp.output);
  const history = (JSON.parse(summary![0]) as { history: Record<string, unknown> }).history;
  expect(history["lossesCentralized"]).toEqual([
    [0, 0],
    [1, 1],
    [2, 2],
  ]);
  expect((history["metricsDistributedFit"] as Record<string, unknown>)["impls"]).toEqual([
    [1, "ts,ts"],
    [2, "ts,ts"],
  ]);
  // flower-supernode found no FAB id in the run and used its default app, as Flower says.
  expect(nodes[1]!.output).toContain("FAB ID is not provided; the default ClientApp will be loaded.");
  for (const n of nodes) expect(n.running).toBe(true);

  // A SuperNode whose key is not allowlisted is refused over REST and gives up at once (exit 2).
  const outsider = start("outsider", "flower-client-app", [
    "client:app",
    "--dir",
    TS_APP_DIR,
    "--rest",
    "--superlink",
    url,
    "--root-certificates",
    fx.caCert,
    "--auth-supernode-private-key",
    stranger.clientPrivateKeys[0]!,
    "--auth-supernode-public-key",
    stranger.clientPublicKeys[0]!,
  ]);
  expect(await outsider.waitForExit(30_000)).toBe(2);
  expect(outsider.output).toMatch(/allowlist/);
  expect(superlink.output).toMatch(/"event":"fleet\.auth-denied"/);
});
