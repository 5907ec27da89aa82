/**
 * Attacks on the SuperLink's state, against a real flower-superlink process (TLS + node
 * authentication, real gRPC over loopback): CreateNode forged with only a public key, ping
 * intervals out of range, replayed PushTaskRes, storage limits, and TTL expiry with purge.
 * Each test starts its own SuperLink with the limits it needs; everything stops by itself.
 */
import { join } from "node:path";
import * as grpc from "@grpc/grpc-js";
import { SuperNodeAuth } from "../../src/auth/client-auth";
import { base64UrlPadded } from "../../src/auth/crypto";
import { loadPublicKeyFile } from "../../src/auth/keys";
import type { DriverClient } from "../../src/proto/flwr/proto/driver";
import type { FleetClient, PushTaskResRequest } from "../../src/proto/flwr/proto/fleet";
import type { TaskIns } from "../../src/proto/flwr/proto/task";
import { unaryCall } from "../../src/transport/channel";
import { TASK_EXPIRED_REASON } from "../../src/state/state-support";
import { type Fixtures, generateFixtures } from "../helpers/fixtures";
import { runNodeScript } from "../helpers/node-script";
import { driverClient, fleetClient, statusOf, validTaskIns, validTaskRes } from "../superlink/helpers";
import { ensureDist, isEvent, killAll, type RunningSuperLink, startSuperLink, stop, superlinkArgs } from "./helpers";

jest.setTimeout(90_000);

let fx: Fixtures;
let ca: Buffer;
const clients: grpc.Client[] = [];

beforeAll(() => {
  ensureDist();
  fx = generateFixtures(2);
  ca = fx.read(fx.caCert);
}, 120_000);
afterEach(async () => {
  for (const c of clients.splice(0)) c.close();
  await killAll();
});
afterAll(() => fx?.cleanup());

interface Link extends RunningSuperLink {
  driver: DriverClient;
  fleet: FleetClient;
  metricsAddress: string;
}

async function start(extra: string[], database?: string): Promise<Link> {
  const base = superlinkArgs(fx, database === undefined ? {} : { database });
  const link = await startSuperLink([...base, "--metrics-address", "127.0.0.1:0", "--long-poll-ms", "0", ...extra]);
  const ready = await link.proc.waitFor(isEvent("superlink.ready"), "readiness line");
  const driver = driverClient(link.driverAddress, ca);
  const fleet = fleetClient(link.fleetAddress, ca);
  clients.push(driver, fleet);
  return { ...link, driver, fleet, metricsAddress: String(ready["metricsAddress"]) };
}

/** A gauge of the SuperLink's /metrics. */
async function gauge(link: Link, name: string): Promise<number> {
  const text = await (await fetch(`http://${link.metricsAddress}/metrics`)).text();
  const line = text.split("\n").find((l) => l.startsWith(`${name} `));
  if (line === undefined) throw new Error(`metric ${name} not found`);
  return Number(line.split(" ")[1]);
}

/** An honest SuperNode's calls: CreateNode then authenticated Pings, as flower-client-app does. */
async function honestNode(
  link: Link,
  index: number,
  pingInterval = 30,
): Promise<{ auth: SuperNodeAuth; nodeId: bigint }> {
  const auth = SuperNodeAuth.fromFiles(fx.clientPrivateKeys[index]!, fx.clientPublicKeys[index]!);
  const create = { pingInterval };
  const { response, headers } = await unaryCall(
    link.fleet.createNode.bind(link.fleet),
    create,
    auth.metadataFor("CreateNodeRequest", create),
  );
  auth.acceptCreateNodeMetadata(headers);
  const nodeId = response.node!.nodeId;
  expect(await ping(link, auth, nodeId, pingInterval)).toBe(true);
  return { auth, nodeId };
}

async function ping(link: Link, auth: SuperNodeAuth, nodeId: bigint, pingInterval: number): Promise<boolean> {
  const request = { node: { nodeId, anonymous: false }, pingInterval };
  return (await unaryCall(link.fleet.ping.bind(link.fleet), request, auth.metadataFor("PingRequest", request))).response
    .success;
}

/** CreateNode as someone who holds only node `index`'s public key (CreateNode carries no MAC). */
function forgedCreateNode(link: Link, index: number, pingInterval: number): Promise<bigint> {
  const metadata = new grpc.Metadata();
  metadata.set("public-key", base64UrlPadded(Buffer.from(loadPublicKeyFile(fx.clientPublicKeys[index]!), "latin1")));
  return unaryCall(link.fleet.createNode.bind(link.fleet), { pingInterval }, metadata).then(
    (r) => r.response.node!.nodeId,
  );
}

async function onlineNodes(link: Link, runId: bigint): Promise<bigint[]> {
  return (await unaryCall(link.driver.getNodes.bind(link.driver), { runId })).response.nodes.map((n) => n.nodeId);
}

async function createRun(link: Link): Promise<bigint> {
  return (
    await unaryCall(link.driver.createRun.bind(link.driver), { fabId: "", fabVersion: "", overrideConfig: new Map() })
  ).response.runId;
}

async function pushTaskIns(link: Link, list: TaskIns[]): Promise<string[]> {
  return (await unaryCall(link.driver.pushTaskIns.bind(link.driver), { taskInsList: list })).response.taskIds;
}

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

test("CreateNode with only a live node's public key neither takes it offline nor keeps it online", async () => {
  // Test-sized ping bounds (1..3 s) so liveness can be watched running out.
  const link = await start(["--min-ping-interval", "1", "--max-ping-interval", "3"]);
  const runId = await createRun(link);
  const node = await honestNode(link, 0, 2);
  expect(await onlineNodes(link, runId)).toEqual([node.nodeId]);

  // Knock-offline attempt: negative and NaN intervals are refused, the node stays online.
  for (const bad of [-1e9, 0, Number.NaN]) {
    expect((await statusOf(forgedCreateNode(link, 0, bad))).code).toBe(grpc.status.INVALID_ARGUMENT);
  }
  // Keep-alive attempt: the forged CreateNode gets the node id but no liveness.
  expect(await forgedCreateNode(link, 0, 1e9)).toBe(node.nodeId);
  expect(await onlineNodes(link, runId)).toEqual([node.nodeId]);

  // An absent node's key registers a node, but it is never listed online without a MAC'd Ping.
  const phantom = await forgedCreateNode(link, 1, 1800);
  expect(phantom).not.toBe(0n);
  expect(await onlineNodes(link, runId)).toEqual([node.nodeId]);
  expect(await gauge(link, "flwr_superlink_online_nodes")).toBe(1);

  // The honest node stops pinging ("killed"): it goes offline after its 2 s, forged CreateNodes
  // notwithstanding.
  const deadline = Date.now() + 20_000;
  while ((await onlineNodes(link, runId)).length > 0 && Date.now() < deadline) {
    await forgedCreateNode(link, 0, 1e9);
    await sleep(200);
  }
  expect(await onlineNodes(link, runId)).toEqual([]);
  await forgedCreateNode(link, 0, 1800);
  expect(await onlineNodes(link, runId)).toEqual([]);
  // Only an authenticated Ping brings it back.
  expect(await ping(link, node.auth, node.nodeId, 2)).toBe(true);
  expect(await onlineNodes(link, runId)).toEqual([node.nodeId]);
});

test("an authenticated Ping's ping_interval is clamped to the bounds; out-of-range values are refused", async () => {
  const link = await start(["--min-ping-interval", "1", "--max-ping-interval", "2"]);
  const runId = await createRun(link);
  const node = await honestNode(link, 0, 1);
  for (const bad of [-5, 0, Number.POSITIVE_INFINITY, Number.NaN]) {
    const request = { node: { nodeId: node.nodeId, anonymous: false }, pingInterval: bad };
    const status = await statusOf(
      unaryCall(link.fleet.ping.bind(link.fleet), request, node.auth.metadataFor("PingRequest", request)),
    );
    expect(status.code).toBe(grpc.status.INVALID_ARGUMENT);
  }
  // 1e9 s is accepted as the 2 s maximum: the node is offline again within a few seconds.
  expect(await ping(link, node.auth, node.nodeId, 1e9)).toBe(true);
  expect(await onlineNodes(link, runId)).toEqual([node.nodeId]);
  await sleep(2_500);
  expect(await onlineNodes(link, runId)).toEqual([]);
});

test("a replayed PushTaskRes reaches the ServerApp once and stores nothing, before and after completion", async () => {
  const link = await start([]);
  const runId = await createRun(link);
  const node = await honestNode(link, 0);
  const [taskInsId] = await pushTaskIns(link, [validTaskIns(runId, node.nodeId)]);
  const pull = { node: { nodeId: node.nodeId, anonymous: false }, taskIds: [] };
  const pulled = await unaryCall(
    link.fleet.pullTaskIns.bind(link.fleet),
    pull,
    node.auth.metadataFor("PullTaskInsRequest", pull),
  );
  expect(pulled.response.taskInsList.map((t) => t.taskId)).toEqual([taskInsId]);

  // The captured request and headers, replayed byte for byte (its MAC stays valid).
  const push: PushTaskResRequest = { taskResList: [validTaskRes(runId, node.nodeId, taskInsId!)] };
  const captured = node.auth.metadataFor("PushTaskResRequest", push);
  const send = async (): Promise<string[]> => [
    ...(await unaryCall(link.fleet.pushTaskRes.bind(link.fleet), push, captured)).response.results.keys(),
  ];
  const [resultId] = await send();
  expect(resultId).toMatch(/^[0-9a-f-]{36}$/);
  // Before completion: every replay is answered with the stored result's id, nothing is added.
  for (let i = 0; i < 5; i++) expect(await send()).toEqual([resultId]);
  expect(await gauge(link, "flwr_superlink_task_res_stored")).toBe(1);

  const results = await unaryCall(link.driver.pullTaskRes.bind(link.driver), {
    node: undefined,
    taskIds: [taskInsId!],
  });
  expect(results.response.taskResList.map((r) => r.taskId)).toEqual([resultId]);
  // The pair is deleted once the answer went out.
  const deadline = Date.now() + 10_000;
  while ((await gauge(link, "flwr_superlink_task_ins_stored")) > 0 && Date.now() < deadline) await sleep(50);
  expect(await gauge(link, "flwr_superlink_task_ins_stored")).toBe(0);

  // After completion: 50 replays are answered "None" (status OK, as Flower) and store nothing.
  for (let i = 0; i < 50; i++) expect(await send()).toEqual(["None"]);
  expect(await gauge(link, "flwr_superlink_task_res_stored")).toBe(0);
  const again = await unaryCall(link.driver.pullTaskRes.bind(link.driver), { node: undefined, taskIds: [taskInsId!] });
  expect(again.response.taskResList).toEqual([]);
  expect(link.proc.logs.some((l) => String(l["msg"]).includes("names no stored TaskIns"))).toBe(true);
});

test("an honest re-push after a SuperLink restart (SQLite) is answered as the first push and stored once", async () => {
  const database = join(fx.dir, "re-push.db");
  const first = await start([], database);
  const runId = await createRun(first);
  const node = await honestNode(first, 0);
  const [taskInsId] = await pushTaskIns(first, [validTaskIns(runId, node.nodeId)]);
  const push: PushTaskResRequest = { taskResList: [validTaskRes(runId, node.nodeId, taskInsId!)] };
  const metadata = node.auth.metadataFor("PushTaskResRequest", push);
  const [resultId] = [
    ...(await unaryCall(first.fleet.pushTaskRes.bind(first.fleet), push, metadata)).response.results.keys(),
  ];
  // The SuperLink dies before the SuperNode sees the answer (as far as the SuperNode knows).
  first.proc.proc.kill("SIGKILL");
  await first.proc.exited;

  const second = await start([], database);
  const again = await unaryCall(second.fleet.pushTaskRes.bind(second.fleet), push, metadata);
  expect([...again.response.results.keys()]).toEqual([resultId]);
  expect(await gauge(second, "flwr_superlink_task_res_stored")).toBe(1);
  const results = await unaryCall(second.driver.pullTaskRes.bind(second.driver), {
    node: undefined,
    taskIds: [taskInsId!],
  });
  expect(results.response.taskResList.map((r) => r.taskId)).toEqual([resultId]);
  expect(await stop(second.proc)).toBe(0);
});

test("storage limits answer RESOURCE_EXHAUSTED with a log line, and store nothing of the refused request", async () => {
  const link = await start(["--max-task-ins-per-push", "100", "--max-run-bytes", "3000000", "--max-runs", "2"]);
  const runId = await createRun(link);

  const tooMany = Array.from({ length: 101 }, () => validTaskIns(runId, 42n));
  const perPush = await statusOf(pushTaskIns(link, tooMany));
  expect(perPush.code).toBe(grpc.status.RESOURCE_EXHAUSTED);
  expect(perPush.details).toContain("--max-task-ins-per-push");
  expect(await pushTaskIns(link, tooMany.slice(0, 100))).toHaveLength(100);

  const big = (): TaskIns => {
    const t = validTaskIns(runId, 42n);
    t.task!.recordset = {
      parameters: new Map([
        [
          "w",
          { dataKeys: ["a"], dataValues: [{ dtype: "u8", shape: [], stype: "raw", data: Buffer.alloc(1_000_000, 7) }] },
        ],
      ]),
      metrics: new Map(),
      configs: new Map(),
    };
    return t;
  };
  expect(await pushTaskIns(link, [big(), big()])).toHaveLength(2);
  const before = await gauge(link, "flwr_superlink_task_ins_stored");
  // A batch that would cross the run's byte limit is refused as a whole.
  const bytes = await statusOf(pushTaskIns(link, [validTaskIns(runId, 42n), big()]));
  expect(bytes.code).toBe(grpc.status.RESOURCE_EXHAUSTED);
  expect(bytes.details).toContain("--max-run-bytes");
  expect(await gauge(link, "flwr_superlink_task_ins_stored")).toBe(before);

  await createRun(link);
  const runs = await statusOf(createRun(link));
  expect(runs.code).toBe(grpc.status.RESOURCE_EXHAUSTED);
  expect(runs.details).toContain("--max-runs");
  // Log lines arrive over a pipe, possibly after the answers.
  const exhausted = (l: Record<string, unknown>): boolean => l["code"] === "FLWR_RESOURCE_EXHAUSTED";
  await link.proc.waitForCount(exhausted, 3, "three RESOURCE_EXHAUSTED log lines");
  const logged = link.proc.logs.filter(exhausted).map((l) => String(l["rpc"]));
  expect(logged).toEqual(["Driver.PushTaskIns", "Driver.PushTaskIns", "Driver.CreateRun"]);
});

/** Pushes `count` tiny TaskIns in one PushTaskIns from a child process; prints the status code. */
const FLOOD_SCRIPT = `
const { readFileSync } = require("node:fs");
const { DriverClient } = require("./dist/proto/flwr/proto/driver");
const { createClient } = require("./dist/transport/channel");
const { channelCredentials } = require("./dist/transport/tls");
const [address, caPath, runId, nodeId, count] = process.argv.slice(1);
const client = createClient(DriverClient, address, channelCredentials({ rootCertificates: readFileSync(caPath) }),
  { "grpc.ssl_target_name_override": "localhost" });
const now = Date.now() / 1000;
const taskIns = () => ({ taskId: "", groupId: "1", runId: BigInt(runId), task: {
  producer: { nodeId: 0n, anonymous: true }, consumer: { nodeId: BigInt(nodeId), anonymous: false },
  createdAt: now, deliveredAt: "", pushedAt: now, ttl: 3600, ancestry: [], taskType: "train",
  recordset: { parameters: new Map(), metrics: new Map(), configs: new Map() } } });
const request = { taskInsList: Array.from({ length: Number(count) }, taskIns) };
console.log("sending");
client.pushTaskIns(request, (err) => { console.log("status", err ? err.code : 0); client.close(); });
`;

test("200 000 tiny TaskIns in one push are refused undecoded, and the Fleet API stays responsive", async () => {
  const link = await start([]);
  const runId = await createRun(link);
  const node = await honestNode(link, 0);
  let finished = false;
  const t0 = performance.now();
  const flood = runNodeScript(
    FLOOD_SCRIPT,
    [link.driverAddress, fx.caCert, String(runId), String(node.nodeId), "200000"],
    60_000,
  ).finally(() => (finished = true));
  // Ping the SuperLink from this process while the child builds, sends and gets the answer.
  const samples: number[] = [];
  while (!finished && samples.length < 10_000) {
    const start = performance.now();
    await ping(link, node.auth, node.nodeId, 30);
    samples.push(performance.now() - start);
  }
  const result = await flood;
  expect(result.stdout).toContain(`status ${grpc.status.RESOURCE_EXHAUSTED}`);
  expect(await gauge(link, "flwr_superlink_task_ins_stored")).toBe(0);
  samples.sort((a, b) => a - b);
  // Several samples, generous bounds: no multi-second stall while the 11 MB request arrives.
  expect(samples.length).toBeGreaterThan(5);
  expect(samples[Math.floor(samples.length / 2)]!).toBeLessThan(100);
  expect(samples[samples.length - 1]!).toBeLessThan(1_000);
  process.stderr.write(
    `200k push: refused after ${(performance.now() - t0).toFixed(0)} ms (child included); ${samples.length} pings meanwhile, ` +
      `median ${samples[Math.floor(samples.length / 2)]!.toFixed(1)} ms, max ${samples[samples.length - 1]!.toFixed(0)} ms\n`,
  );
});

test("an expired TaskIns is not delivered, its pull answers an expiry error, and it is purged", async () => {
  const link = await start(["--purge-interval", "3"]);
  const runId = await createRun(link);
  const node = await honestNode(link, 0);
  const shortLived = (): TaskIns => {
    const task = validTaskIns(runId, node.nodeId);
    task.task!.ttl = 2;
    return task;
  };
  // `pulled` is asked for by the ServerApp; `forgotten` never is, so only the purge removes it.
  const [pulled] = await pushTaskIns(link, [shortLived(), shortLived()]);
  expect(await gauge(link, "flwr_superlink_task_ins_stored")).toBe(2);
  await sleep(2_200);

  const pull = { node: { nodeId: node.nodeId, anonymous: false }, taskIds: [] };
  const delivered = await unaryCall(
    link.fleet.pullTaskIns.bind(link.fleet),
    pull,
    node.auth.metadataFor("PullTaskInsRequest", pull),
  );
  expect(delivered.response.taskInsList).toEqual([]);
  const results = await unaryCall(link.driver.pullTaskRes.bind(link.driver), { node: undefined, taskIds: [pulled!] });
  expect(results.response.taskResList.map((r) => r.task!.error?.reason)).toEqual([TASK_EXPIRED_REASON]);

  const purged = await link.proc.waitFor(isEvent("superlink.purged"), "a purge");
  expect(purged["taskIns"]).toBe(1);
  expect([
    await gauge(link, "flwr_superlink_task_ins_stored"),
    await gauge(link, "flwr_superlink_task_res_stored"),
  ]).toEqual([0, 0]);
});
