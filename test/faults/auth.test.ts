/**
 * Node-authentication faults against the real flower-superlink daemon (TLS + auth):
 * - forged or tampered requests (wrong private key behind an allowed public key, a tampered
 *   auth-token, a tampered body, a result claiming another node) are refused with
 *   UNAUTHENTICATED "Access denied" (docs/protocol.md, "SuperLink checks", "Flower 1.10 bugs") and the SuperLink keeps serving;
 * - a SuperNode whose key files are not one pair refuses to start (exit 2);
 * - the allowlist changes without a restart: the file watcher lets a new node in, and a key
 *   removed + SIGHUP revokes a running SuperNode, which then stops with exit 2.
 * (Unknown key, MAC over another request and wrong node id are in test/superlink/superlink.e2e.)
 */
import { readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import * as grpc from "@grpc/grpc-js";
import { SuperNodeAuth } from "../../src/auth/client-auth";
import { AUTH_TOKEN_HEADER } from "../../src/core/constants";
import { canonicalEncode } from "../../src/core/wire/canonical";
import type { FleetClient } from "../../src/proto/flwr/proto/fleet";
import { unaryCall } from "../../src/transport/channel";
import { type Fixtures, generateFixtures } from "../helpers/fixtures";
import {
  TLS_CHANNEL_OPTIONS,
  authenticatedCreateNode,
  clientCredentials,
  driverClient,
  fleetClient,
  statusOf,
  validTaskIns,
  validTaskRes,
} from "../superlink/helpers";
import {
  type RunningSuperLink,
  ensureDist,
  fatalText,
  isEvent,
  killAll,
  spawnBin,
  spawnSuperNode,
  startSuperLink,
  superlinkArgs,
  writeApps,
} from "./helpers";

jest.setTimeout(90_000);

const DENIED = { code: grpc.status.UNAUTHENTICATED, details: "Access denied" };

let fx: Fixtures;
let apps: { dir: string; cleanup(): void };
let keys: string[];
let csv: string;
let link: RunningSuperLink;
let ca: Buffer;
const closers: Array<() => void> = [];

beforeAll(async () => {
  ensureDist();
  fx = generateFixtures(3);
  apps = writeApps();
  ca = fx.read(fx.caCert);
  keys = readFileSync(fx.allowlistCsv, "utf8").trim().split(",");
  csv = join(fx.dir, "allowlist.csv");
  writeFileSync(csv, `${keys[0]},${keys[1]}\n`); // key 3 is not allowed at first
  link = await startSuperLink(superlinkArgs(fx, { allowlistCsv: csv }));
}, 120_000);
afterEach(() => {
  for (const c of closers.splice(0)) c();
});
afterAll(async () => {
  await killAll();
  fx?.cleanup();
  apps?.cleanup();
});

function fleet(): FleetClient {
  const client = fleetClient(link.fleetAddress, ca);
  closers.push(() => client.close());
  return client;
}

/** CreateNode as node `index`; returns its auth state (with the shared key) and node id. */
async function register(
  client: FleetClient,
  index: number,
): Promise<{ auth: SuperNodeAuth; nodeId: bigint; headers: grpc.Metadata }> {
  const auth = SuperNodeAuth.fromFiles(fx.clientPrivateKeys[index]!, fx.clientPublicKeys[index]!);
  const { nodeId, headers } = await authenticatedCreateNode(client, auth);
  // As a SuperNode does: CreateNode alone leaves a new node offline until its first Ping.
  const ping = { node: { nodeId, anonymous: false }, pingInterval: 30 };
  await unaryCall(client.ping.bind(client), ping, auth.metadataFor("PingRequest", ping));
  return { auth, nodeId, headers };
}

function pingOf(nodeId: bigint): { node: { nodeId: bigint; anonymous: boolean }; pingInterval: number } {
  return { node: { nodeId, anonymous: false }, pingInterval: 30 };
}

describe("forged and tampered requests", () => {
  test("an allowed public key with a MAC made by another node's private key is refused", async () => {
    const client = fleet();
    const n1 = await register(client, 0);
    // Node 2's private key, fed the SuperLink's key from node 1's CreateNode answer: a valid HMAC
    // key, but not the one shared between the SuperLink and node 1.
    const impostor = SuperNodeAuth.fromFiles(fx.clientPrivateKeys[1]!, fx.clientPublicKeys[1]!);
    impostor.acceptCreateNodeMetadata(n1.headers);
    const ping = pingOf(n1.nodeId);
    const metadata = impostor.metadataFor("PingRequest", ping);
    metadata.set("public-key", n1.auth.publicKeyHeader);
    expect(await statusOf(unaryCall(client.ping.bind(client), ping, metadata))).toEqual(DENIED);
    // The real node 1 is unaffected.
    expect(
      (await unaryCall(client.ping.bind(client), ping, n1.auth.metadataFor("PingRequest", ping))).response.success,
    ).toBe(true);
  });

  test("a tampered auth-token or a tampered body is refused; the untouched request passes", async () => {
    const client = fleet();
    const n1 = await register(client, 0);
    const ping = pingOf(n1.nodeId);

    const tampered = n1.auth.metadataFor("PingRequest", ping);
    const token = String(tampered.get(AUTH_TOKEN_HEADER)[0]);
    tampered.set(AUTH_TOKEN_HEADER, (token[0] === "A" ? "B" : "A") + token.slice(1));
    expect(await statusOf(unaryCall(client.ping.bind(client), ping, tampered))).toEqual(DENIED);

    // Raw bytes: the MAC covers ping_interval 30, the body says 31.
    const raw = new grpc.Client(link.fleetAddress, clientCredentials(ca), TLS_CHANNEL_OPTIONS);
    closers.push(() => raw.close());
    const { bytes, metadata } = n1.auth.signedRequest("PingRequest", ping);
    const send = (body: Uint8Array): Promise<grpc.ServiceError | null> =>
      new Promise((resolve) =>
        raw.makeUnaryRequest(
          "/flwr.proto.Fleet/Ping",
          (b: Buffer) => b,
          (b: Buffer) => b,
          Buffer.from(body),
          metadata,
          (err) => resolve(err),
        ),
      );
    const otherBody = canonicalEncode("PingRequest", { ...ping, pingInterval: 31 }, "upb");
    const refused = await send(otherBody);
    expect({ code: refused?.code, details: refused?.details }).toEqual(DENIED);
    expect(await send(bytes)).toBeNull();
  });

  test("a result claiming to come from another node is refused, and is not delivered", async () => {
    const client = fleet();
    const n1 = await register(client, 0);
    const n2 = await register(client, 1);
    const driver = driverClient(link.driverAddress, ca);
    closers.push(() => driver.close());
    const runId = (
      await unaryCall(driver.createRun.bind(driver), { fabId: "", fabVersion: "", overrideConfig: new Map() })
    ).response.runId;
    const [taskInsId] = (
      await unaryCall(driver.pushTaskIns.bind(driver), { taskInsList: [validTaskIns(runId, n2.nodeId)] })
    ).response.taskIds;
    // Node 1, correctly authenticated, pushes a reply to node 2's instruction in node 2's name.
    const push = { taskResList: [validTaskRes(runId, n2.nodeId, taskInsId!)] };
    expect(
      await statusOf(unaryCall(client.pushTaskRes.bind(client), push, n1.auth.metadataFor("PushTaskResRequest", push))),
    ).toEqual(DENIED);
    const pulled = await unaryCall(driver.pullTaskRes.bind(driver), { node: undefined, taskIds: [taskInsId!] });
    expect(pulled.response.taskResList).toEqual([]);
    // In its own name, node 2's reply goes through.
    const ok = await unaryCall(client.pushTaskRes.bind(client), push, n2.auth.metadataFor("PushTaskResRequest", push));
    expect([...ok.response.results.keys()][0]).toMatch(/^[0-9a-f-]{36}$/);
  });
});

test("a SuperNode whose private key is not the half of its public key exits 2 before connecting", async () => {
  const node = spawnSuperNode(fx, apps.dir, link.fleetAddress, 0, {
    keys: { privateKey: fx.clientPrivateKeys[1]!, publicKey: fx.clientPublicKeys[0]! },
  });
  expect(await node.exited).toBe(2);
  expect(fatalText(node)).toMatch(/not the public key of/);
  expect(node.logs.some(isEvent("supernode.ready"))).toBe(false);
});

test("allowlist without restart: the watched file lets a new node in; removing its key + SIGHUP revokes it (exit 2)", async () => {
  // Key 3 is refused for now (the node retries nothing: access denied is final).
  const refused = spawnSuperNode(fx, apps.dir, link.fleetAddress, 2, { name: "node-3-refused" });
  expect(await refused.exited).toBe(2);

  // Added to the file, no signal: the SuperLink's watcher picks it up.
  const changesBefore = link.proc.logs.filter(isEvent("superlink.allowlist-changed")).length;
  writeFileSync(csv, `${keys[0]},${keys[1]},${keys[2]}\n`);
  await link.proc.waitForCount(
    isEvent("superlink.allowlist-changed", (r) => r["added"] === 1),
    changesBefore + 1,
    "the watcher's reload",
  );
  expect(link.proc.logs.some(isEvent("superlink.allowlist-reloaded"))).toBe(false); // no SIGHUP involved
  const node3 = spawnSuperNode(fx, apps.dir, link.fleetAddress, 2, { name: "node-3" });
  const ready = await node3.waitFor(isEvent("supernode.ready"), "readiness");
  const nodeId = String(ready["nodeId"]);

  // Removed + SIGHUP: the node is deleted at once, its waiting pull ends, it cannot register again.
  writeFileSync(csv, `${keys[0]},${keys[1]}\n`);
  link.proc.proc.kill("SIGHUP");
  await link.proc.waitFor(isEvent("superlink.allowlist-reloaded"), "the SIGHUP reload");
  await link.proc.waitFor(
    isEvent("superlink.node-revoked", (r) => r["nodeId"] === nodeId),
    "the revocation",
  );
  expect(await node3.exited).toBe(2);
  expect(node3.text()).toContain("access denied");
  expect(link.proc.alive()).toBe(true);
});

test("authentication flags without TLS are refused at startup (exit 2), nothing listens", async () => {
  const proc = spawnBin("superlink-insecure-auth", "flower-superlink", [
    "--insecure",
    "--driver-api-address",
    "127.0.0.1:0",
    "--fleet-api-address",
    "127.0.0.1:0",
    "--auth-list-public-keys",
    csv,
    "--auth-superlink-private-key",
    fx.superlinkPrivateKey,
    "--auth-superlink-public-key",
    fx.superlinkPublicKey,
  ]);
  expect(await proc.exited).toBe(2);
  expect(fatalText(proc)).toContain("Authentication requires secure connections");
  expect(proc.logs.some(isEvent("superlink.ready"))).toBe(false);
});
