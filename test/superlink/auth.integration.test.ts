/**
 * The SuperLink in-process with TLS and node authentication: revoking a key (allowlist reload)
 * deletes the node, ends its waiting pull with UNAUTHENTICATED at once, and makes the ServerApp
 * see NODE_UNAVAILABLE for work addressed to it.
 */
import { Allowlist } from "../../src/auth/allowlist";
import { loadKeyPairFiles } from "../../src/auth/keys";
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import * as grpc from "@grpc/grpc-js";
import { SuperNodeAuth } from "../../src/auth/client-auth";
import { ErrorCode, IN_MEMORY_DATABASE } from "../../src/core/constants";
import { InvalidConfigError, InvalidKeyFileError } from "../../src/core/errors";
import type { FleetClient } from "../../src/proto/flwr/proto/fleet";
import { unaryCall } from "../../src/transport/channel";
import { readServerTlsFiles } from "../../src/transport/tls";
import { type SuperLinkHandle, startSuperLink } from "../../src/superlink/superlink";
import { type Fixtures, generateFixtures } from "../helpers/fixtures";
import {
  driverClient,
  fleetClient,
  longPollOptIn,
  memoryLogger,
  registerAuthenticated,
  statusOf,
  until,
  validTaskIns,
} from "./helpers";

let fx: Fixtures;
let csv: string;
let keys: string[];
let link: SuperLinkHandle;
const closers: Array<() => unknown> = [];

beforeAll(() => {
  fx = generateFixtures(2);
  keys = readFileSync(fx.allowlistCsv, "utf8").trim().split(",");
  csv = join(fx.dir, "allowlist.csv");
});
afterAll(() => fx.cleanup());
beforeEach(async () => {
  writeFileSync(csv, `${keys.join(",")}\n`);
  link = await startSuperLink(
    {
      driverApiAddress: "127.0.0.1:0",
      fleetApiAddress: "127.0.0.1:0",
      database: IN_MEMORY_DATABASE,
      tls: readServerTlsFiles({ caCertFile: fx.caCert, certFile: fx.serverCert, keyFile: fx.serverKey }),
      auth: {
        allowlist: Allowlist.fromCsvFile(csv),
        superlinkKeys: loadKeyPairFiles(fx.superlinkPrivateKey, fx.superlinkPublicKey),
        watchAllowlist: false,
      },
      longPollMs: 60_000,
    },
    { logger: memoryLogger().logger },
  );
  closers.push(() => link.close(1000));
});
afterEach(async () => {
  for (const c of closers.splice(0).reverse()) await c();
});

async function connect(fleet: FleetClient, index: number): Promise<{ auth: SuperNodeAuth; nodeId: bigint }> {
  // As a SuperNode does: CreateNode alone leaves a new node offline until its first MAC-checked call.
  const { auth, nodeId } = await registerAuthenticated(
    fleet,
    fx.clientPrivateKeys[index]!,
    fx.clientPublicKeys[index]!,
  );
  return { auth, nodeId };
}

test("removing a key revokes its node at once and its work answers NODE_UNAVAILABLE", async () => {
  const ca = fx.read(fx.caCert);
  const fleet = fleetClient(link.fleetAddress, ca);
  const driver = driverClient(link.driverAddress, ca);
  closers.push(() => {
    fleet.close();
    driver.close();
  });
  const n1 = await connect(fleet, 0);
  const n2 = await connect(fleet, 1);
  const runId = (
    await unaryCall(driver.createRun.bind(driver), { fabId: "", fabVersion: "", overrideConfig: new Map() })
  ).response.runId;

  const pull = { node: { nodeId: n1.nodeId, anonymous: false }, taskIds: [] };
  const waiting = statusOf(
    unaryCall(fleet.pullTaskIns.bind(fleet), pull, longPollOptIn(n1.auth.metadataFor("PullTaskInsRequest", pull))),
  );
  await until(() => link.waitingPulls === 1, "node 1's pull to wait");

  writeFileSync(csv, `${keys[1]}\n`);
  const change = link.reloadAllowlist();
  expect(change.added).toEqual([]);
  expect(change.removed).toHaveLength(1);
  expect(await waiting).toEqual({ code: grpc.status.UNAUTHENTICATED, details: "Access denied" });
  expect(link.waitingPulls).toBe(0);

  expect((await unaryCall(driver.getNodes.bind(driver), { runId })).response.nodes).toEqual([
    { nodeId: n2.nodeId, anonymous: false },
  ]);
  const ping = { node: { nodeId: n1.nodeId, anonymous: false }, pingInterval: 30 };
  expect(await statusOf(unaryCall(fleet.ping.bind(fleet), ping, n1.auth.metadataFor("PingRequest", ping)))).toEqual({
    code: grpc.status.UNAUTHENTICATED,
    details: "Access denied",
  });

  // Work for the revoked node comes back to the ServerApp as a NODE_UNAVAILABLE error.
  const [taskInsId] = (
    await unaryCall(driver.pushTaskIns.bind(driver), { taskInsList: [validTaskIns(runId, n1.nodeId)] })
  ).response.taskIds;
  const { response } = await unaryCall(driver.pullTaskRes.bind(driver), { node: undefined, taskIds: [taskInsId!] });
  expect(response.taskResList.map((t) => t.task!.error?.code)).toEqual([BigInt(ErrorCode.NODE_UNAVAILABLE)]);

  // The remaining node is unaffected.
  const ping2 = { node: { nodeId: n2.nodeId, anonymous: false }, pingInterval: 30 };
  expect(
    (await unaryCall(fleet.ping.bind(fleet), ping2, n2.auth.metadataFor("PingRequest", ping2))).response.success,
  ).toBe(true);
  expect(link.metrics.rpcCount("Fleet", "PullTaskIns", "UNAUTHENTICATED")).toBe(1);
});

test("a bad allowlist file on reload throws and keeps the previous list", async () => {
  const ca = fx.read(fx.caCert);
  const fleet = fleetClient(link.fleetAddress, ca);
  closers.push(() => fleet.close());
  writeFileSync(csv, "not a key at all\n");
  expect(() => link.reloadAllowlist()).toThrow(InvalidKeyFileError);
  const { nodeId } = await connect(fleet, 0);
  expect(nodeId).not.toBe(0n);
});

test("reloadAllowlist without authentication is a configuration error", async () => {
  const plain = await startSuperLink(
    { driverApiAddress: "127.0.0.1:0", fleetApiAddress: "127.0.0.1:0", database: IN_MEMORY_DATABASE },
    { logger: memoryLogger().logger },
  );
  closers.push(() => plain.close());
  expect(() => plain.reloadAllowlist()).toThrow(InvalidConfigError);
});

// The SQLite file is locked by its SuperLink, so the state is made to fail by closing it under
// the running SuperLink: an authenticated CreateNode then answers an incident id, not the path.
test("an authenticated CreateNode whose state fails answers INTERNAL with an incident id the log names", async () => {
  const dbDir = mkdtempSync(join(tmpdir(), "flwr-ts-auth-incident-"));
  const { logger, lines } = memoryLogger();
  const failing = await startSuperLink(
    {
      driverApiAddress: "127.0.0.1:0",
      fleetApiAddress: "127.0.0.1:0",
      database: join(dbDir, "secret-location.db"),
      tls: readServerTlsFiles({ caCertFile: fx.caCert, certFile: fx.serverCert, keyFile: fx.serverKey }),
      auth: {
        allowlist: Allowlist.fromCsvFile(csv),
        superlinkKeys: loadKeyPairFiles(fx.superlinkPrivateKey, fx.superlinkPublicKey),
        watchAllowlist: false,
      },
    },
    { logger },
  );
  const fleet = fleetClient(failing.fleetAddress, fx.read(fx.caCert));
  closers.push(async () => {
    fleet.close();
    await failing.close(500).catch(() => undefined);
    rmSync(dbDir, { recursive: true, force: true });
  });
  await failing.state.close();
  const auth = SuperNodeAuth.fromFiles(fx.clientPrivateKeys[0]!, fx.clientPublicKeys[0]!);
  const request = { pingInterval: 30 };
  const status = await statusOf(
    unaryCall(fleet.createNode.bind(fleet), request, auth.metadataFor("CreateNodeRequest", request)),
  );
  expect(status.code).toBe(grpc.status.INTERNAL);
  expect(status.details).not.toContain("secret-location");
  const incident = /incident ([0-9a-f]+)/.exec(status.details)?.[1];
  expect(incident).toBeDefined();
  const line = lines.find((r) => r["incidentId"] === incident);
  expect(line?.["level"]).toBe(50);
  expect(line?.["event"]).toBe("fleet.auth-internal-error");
});
