/**
 * The SuperLink in-process over real gRPC on 127.0.0.1:0 with real TLS (certificates made by
 * scripts/generate.sh), driven by the generated Driver and Fleet clients.
 */
import { Allowlist } from "../../src/auth/allowlist";
import { loadKeyPairFiles } from "../../src/auth/keys";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import * as grpc from "@grpc/grpc-js";
import { ErrorCode, IN_MEMORY_DATABASE, NODE_UNAVAILABLE_REASON } from "../../src/core/constants";
import { InvalidConfigError } from "../../src/core/errors";
import type { DriverClient } from "../../src/proto/flwr/proto/driver";
import type { FleetClient, PullTaskInsResponse } from "../../src/proto/flwr/proto/fleet";
import { unaryCall } from "../../src/transport/channel";
import { type ServerTlsMaterial, readServerTlsFiles } from "../../src/transport/tls";
import { type SuperLinkConfig, type SuperLinkHandle, startSuperLink } from "../../src/superlink/superlink";
import { type Fixtures, generateFixtures } from "../helpers/fixtures";
import {
  longPollOptIn,
  TLS_CHANNEL_OPTIONS,
  clientCredentials,
  driverClient,
  fleetClient,
  memoryLogger,
  statusOf,
  until,
  validTaskIns,
  validTaskRes,
} from "./helpers";

let fx: Fixtures;
let tls: ServerTlsMaterial;
let ca: Buffer;
const cleanups: Array<() => unknown> = [];

beforeAll(() => {
  fx = generateFixtures(1);
  tls = readServerTlsFiles({ caCertFile: fx.caCert, certFile: fx.serverCert, keyFile: fx.serverKey });
  ca = fx.read(fx.caCert);
});
afterAll(() => fx.cleanup());
afterEach(async () => {
  for (const c of cleanups.splice(0).reverse()) await c();
});

interface Running {
  link: SuperLinkHandle;
  driver: DriverClient;
  fleet: FleetClient;
  lines: Array<Record<string, unknown>>;
}

async function start(extra: Partial<SuperLinkConfig> = {}): Promise<Running> {
  const { logger, lines } = memoryLogger();
  const link = await startSuperLink(
    {
      driverApiAddress: "127.0.0.1:0",
      fleetApiAddress: "127.0.0.1:0",
      database: IN_MEMORY_DATABASE,
      tls,
      longPollMs: 60_000,
      ...extra,
    },
    { logger },
  );
  cleanups.push(() => link.close(1000));
  const caCert = extra.tls === undefined && "tls" in extra ? undefined : ca;
  const driver = driverClient(link.driverAddress, caCert);
  const fleet = fleetClient(link.fleetAddress, caCert);
  cleanups.push(() => {
    driver.close();
    fleet.close();
  });
  return { link, driver, fleet, lines };
}

async function createRun(driver: DriverClient): Promise<bigint> {
  const { response } = await unaryCall(driver.createRun.bind(driver), {
    fabId: "fab",
    fabVersion: "1.0",
    overrideConfig: new Map(),
  });
  return response.runId;
}

async function createNode(fleet: FleetClient, pingInterval = 30): Promise<bigint> {
  const { response } = await unaryCall(fleet.createNode.bind(fleet), { pingInterval });
  return response.node!.nodeId;
}

/** A PullTaskIns for `nodeId` that opts in to being held (as our SuperNodes' pulls do). */
function optedInPull(fleet: FleetClient, nodeId: bigint): Promise<{ response: PullTaskInsResponse }> {
  return unaryCall(fleet.pullTaskIns.bind(fleet), { node: { nodeId, anonymous: false }, taskIds: [] }, longPollOptIn());
}

test("full Driver + Fleet round trip over TLS", async () => {
  const { link, driver, fleet, lines } = await start();
  const ready = lines.find((l) => l["event"] === "superlink.ready");
  expect(ready).toMatchObject({
    driverAddress: link.driverAddress,
    fleetAddress: link.fleetAddress,
    tls: true,
    auth: false,
  });
  expect(link.driverPort).toBeGreaterThan(0);
  expect(link.fleetPort).toBeGreaterThan(0);

  const { response: created } = await unaryCall(driver.createRun.bind(driver), {
    fabId: "fab",
    fabVersion: "1.0",
    overrideConfig: new Map([
      ["lr", { double: 0.5 }],
      ["rounds", { sint64: 3n }],
    ]),
  });
  const runId = created.runId;
  const nodeId = await createNode(fleet);
  expect((await unaryCall(driver.getNodes.bind(driver), { runId })).response.nodes).toEqual([
    { nodeId, anonymous: false },
  ]);
  expect(
    (await unaryCall(fleet.ping.bind(fleet), { node: { nodeId, anonymous: false }, pingInterval: 30 })).response,
  ).toEqual({
    success: true,
  });

  const fleetRun = (await unaryCall(fleet.getRun.bind(fleet), { runId })).response.run!;
  expect(fleetRun).toMatchObject({ runId, fabId: "fab", fabVersion: "1.0" });
  expect(fleetRun.overrideConfig.get("rounds")).toMatchObject({ sint64: 3n });
  expect((await unaryCall(driver.getRun.bind(driver), { runId })).response.run?.runId).toBe(runId);
  expect((await unaryCall(driver.getRun.bind(driver), { runId: runId + 1n })).response.run).toBeUndefined();

  const { response: pushed } = await unaryCall(driver.pushTaskIns.bind(driver), {
    taskInsList: [validTaskIns(runId, nodeId)],
  });
  const [taskInsId] = pushed.taskIds;
  expect(taskInsId).toMatch(/^[0-9a-f-]{36}$/);

  const { response: pulled } = await unaryCall(fleet.pullTaskIns.bind(fleet), {
    node: { nodeId, anonymous: false },
    taskIds: [],
  });
  expect(pulled.taskInsList.map((t) => t.taskId)).toEqual([taskInsId]);
  expect(pulled.taskInsList[0]!.task!.deliveredAt).not.toBe("");
  expect(pulled.taskInsList[0]!.task!.recordset).toBeDefined();

  const { response: stored } = await unaryCall(fleet.pushTaskRes.bind(fleet), {
    taskResList: [validTaskRes(runId, nodeId, taskInsId!)],
  });
  expect(stored.reconnect).toEqual({ reconnect: 5n });
  const [resultId] = [...stored.results.keys()];
  expect(resultId).toMatch(/^[0-9a-f-]{36}$/);

  const { response: results } = await unaryCall(driver.pullTaskRes.bind(driver), {
    node: undefined,
    taskIds: [taskInsId!],
  });
  expect(results.taskResList.map((t) => [t.taskId, t.task!.ancestry])).toEqual([[resultId, [taskInsId]]]);
  // The delivered pair is deleted once the answer went out.
  await until(
    async () => (await link.state.numTaskIns()) === 0 && (await link.state.numTaskRes()) === 0,
    "TaskIns/TaskRes deletion",
  );

  expect((await unaryCall(fleet.deleteNode.bind(fleet), { node: { nodeId, anonymous: false } })).response).toEqual({});
  expect((await unaryCall(driver.getNodes.bind(driver), { runId })).response.nodes).toEqual([]);
  const again = await statusOf(unaryCall(fleet.deleteNode.bind(fleet), { node: { nodeId, anonymous: false } }));
  expect(again.code).toBe(grpc.status.NOT_FOUND);

  expect(link.metrics.rpcCount("Fleet", "Ping", "OK")).toBe(1);
  expect(link.metrics.rpcCount("Fleet", "DeleteNode", "NOT_FOUND")).toBe(1);
  expect(lines.some((l) => l["level"] === 20 && l["rpc"] === "Fleet.PullTaskIns")).toBe(true);
});

test("a PullTaskIns started before the push receives the task (long polling)", async () => {
  const { link, driver, fleet } = await start();
  const runId = await createRun(driver);
  const nodeId = await createNode(fleet);
  const pull = optedInPull(fleet, nodeId);
  await until(() => link.waitingPulls === 1, "the pull to wait");
  const { response } = await unaryCall(driver.pushTaskIns.bind(driver), { taskInsList: [validTaskIns(runId, nodeId)] });
  const { response: pulled } = await pull;
  expect(pulled.taskInsList.map((t) => t.taskId)).toEqual(response.taskIds);
  expect(link.waitingPulls).toBe(0);
});

test("a PullTaskIns without the opt-in header is answered at once, as Flower (Python SuperNodes)", async () => {
  const { link, driver, fleet } = await start();
  await createRun(driver);
  const nodeId = await createNode(fleet);
  const started = performance.now();
  const { response } = await unaryCall(fleet.pullTaskIns.bind(fleet), {
    node: { nodeId, anonymous: false },
    taskIds: [],
  });
  // The SuperLink holds opted-in pulls for 60 s here; an answer within 10 s was not held.
  expect(performance.now() - started).toBeLessThan(10_000);
  expect(response.taskInsList).toEqual([]);
  expect(link.waitingPulls).toBe(0);
});

test("an opted-in PullTaskIns is held up to --fleet-long-poll-ms, apart from the Driver's --long-poll-ms", async () => {
  const { link, driver, fleet } = await start({ longPollMs: 100, fleetLongPollMs: 1500 });
  const runId = await createRun(driver);
  const nodeId = await createNode(fleet);
  const started = performance.now();
  const { response } = await optedInPull(fleet, nodeId);
  expect(response.taskInsList).toEqual([]);
  // Held for the Fleet's 1.5 s, not the Driver API's 0.1 s.
  expect(performance.now() - started).toBeGreaterThanOrEqual(1300);
  expect(link.waitingPulls).toBe(0);
  // A task pushed while a pull is held is delivered by that very pull.
  const pull = optedInPull(fleet, nodeId);
  await until(() => link.waitingPulls === 1, "the pull to wait");
  const pushed = await unaryCall(driver.pushTaskIns.bind(driver), { taskInsList: [validTaskIns(runId, nodeId)] });
  expect((await pull).response.taskInsList.map((t) => t.taskId)).toEqual(pushed.response.taskIds);
});

test("a held PullTaskIns answers before the call's deadline, not with DEADLINE_EXCEEDED", async () => {
  // Default Fleet hold (30 s), a client asking for 60 s but with a 1.5 s deadline.
  const { link, driver, fleet } = await start();
  await createRun(driver);
  const nodeId = await createNode(fleet);
  const started = performance.now();
  const pulled = await new Promise<{ err: grpc.ServiceError | null; tasks: number }>((resolve) =>
    fleet.pullTaskIns(
      { node: { nodeId, anonymous: false }, taskIds: [] },
      longPollOptIn(),
      { deadline: Date.now() + 1500 },
      (err, res) => resolve({ err, tasks: res?.taskInsList.length ?? -1 }),
    ),
  );
  expect(pulled).toEqual({ err: null, tasks: 0 });
  expect(performance.now() - started).toBeGreaterThanOrEqual(800);
  expect(link.waitingPulls).toBe(0);
});

test("--long-poll-ms 0 answers opted-in PullTaskIns at once too (Flower behaviour everywhere)", async () => {
  const { link, driver, fleet } = await start({ longPollMs: 0, fleetLongPollMs: 60_000 });
  await createRun(driver);
  const nodeId = await createNode(fleet);
  const started = performance.now();
  const { response } = await optedInPull(fleet, nodeId);
  expect(response.taskInsList).toEqual([]);
  // A hold would have lasted 60 s.
  expect(performance.now() - started).toBeLessThan(10_000);
  expect(link.waitingPulls).toBe(0);
});

test("a PullTaskRes started before the node answers receives the result (long polling)", async () => {
  const { link, driver, fleet } = await start();
  const runId = await createRun(driver);
  const nodeId = await createNode(fleet);
  const [taskInsId] = (await unaryCall(driver.pushTaskIns.bind(driver), { taskInsList: [validTaskIns(runId, nodeId)] }))
    .response.taskIds;
  const pull = unaryCall(driver.pullTaskRes.bind(driver), { node: undefined, taskIds: [taskInsId!] });
  await until(() => link.waitingPulls === 1, "the pull to wait");
  await unaryCall(fleet.pullTaskIns.bind(fleet), { node: { nodeId, anonymous: false }, taskIds: [] });
  await unaryCall(fleet.pushTaskRes.bind(fleet), { taskResList: [validTaskRes(runId, nodeId, taskInsId!)] });
  const { response } = await pull;
  expect(response.taskResList.map((t) => t.task!.ancestry[0])).toEqual([taskInsId]);
});

test("a cancelled long-poll leaves no waiter behind and takes no task", async () => {
  const { link, driver, fleet } = await start();
  const runId = await createRun(driver);
  const nodeId = await createNode(fleet);
  const ended = new Promise<grpc.ServiceError | null>((resolve) => {
    const call = fleet.pullTaskIns({ node: { nodeId, anonymous: false }, taskIds: [] }, longPollOptIn(), (err) =>
      resolve(err),
    );
    void until(() => link.waitingPulls === 1, "the pull to wait").then(() => call.cancel());
  });
  expect((await ended)?.code).toBe(grpc.status.CANCELLED);
  await until(() => link.waitingPulls === 0, "the server to drop the waiter");
  const [taskInsId] = (await unaryCall(driver.pushTaskIns.bind(driver), { taskInsList: [validTaskIns(runId, nodeId)] }))
    .response.taskIds;
  const { response } = await unaryCall(fleet.pullTaskIns.bind(fleet), {
    node: { nodeId, anonymous: false },
    taskIds: [],
  });
  expect(response.taskInsList.map((t) => t.taskId)).toEqual([taskInsId]);
});

test("a node that stops pinging makes PullTaskRes deliver a NODE_UNAVAILABLE error result", async () => {
  // Below the default 10 s minimum ping interval, so the node's 0.3 s run out at once.
  const { driver, fleet } = await start({ longPollMs: 2000, limits: { pingIntervalBounds: { min: 0.1, max: 1800 } } });
  const runId = await createRun(driver);
  const nodeId = await createNode(fleet, 0.3);
  const [taskInsId] = (await unaryCall(driver.pushTaskIns.bind(driver), { taskInsList: [validTaskIns(runId, nodeId)] }))
    .response.taskIds;
  const pullOnce = async () =>
    (await unaryCall(driver.pullTaskRes.bind(driver), { node: undefined, taskIds: [taskInsId!] })).response.taskResList;
  let results = await pullOnce();
  while (results.length === 0) results = await pullOnce();
  expect(results).toHaveLength(1);
  const task = results[0]!.task!;
  expect(task.error).toEqual({ code: BigInt(ErrorCode.NODE_UNAVAILABLE), reason: NODE_UNAVAILABLE_REASON });
  expect(task.producer).toEqual({ nodeId, anonymous: false });
  expect(task.ancestry).toEqual([taskInsId]);
});

test("close() ends a waiting pull promptly with an empty answer", async () => {
  const { link, driver, fleet } = await start();
  await createRun(driver);
  const nodeId = await createNode(fleet);
  const pull = optedInPull(fleet, nodeId);
  await until(() => link.waitingPulls === 1, "the pull to wait");
  await link.close(30_000);
  expect((await pull).response.taskInsList).toEqual([]);
  expect(link.waitingPulls).toBe(0);
});

test("Driver input errors are INVALID_ARGUMENT with a message saying what is wrong", async () => {
  const { driver } = await start();
  const empty = await statusOf(unaryCall(driver.pushTaskIns.bind(driver), { taskInsList: [] }));
  expect(empty.code).toBe(grpc.status.INVALID_ARGUMENT);
  expect(empty.details).toContain("`task_ins_list` must not be empty");
  const runId = await createRun(driver);
  const bad = validTaskIns(runId, 5n);
  bad.task!.consumer = { nodeId: 0n, anonymous: false };
  const malformed = await statusOf(unaryCall(driver.pushTaskIns.bind(driver), { taskInsList: [bad] }));
  expect(malformed.code).toBe(grpc.status.INVALID_ARGUMENT);
  expect(malformed.details).toContain("non-anonymous consumer MUST provide a `node_id`");
  const badId = await statusOf(unaryCall(driver.pullTaskRes.bind(driver), { node: undefined, taskIds: ["zzz"] }));
  expect(badId.code).toBe(grpc.status.INVALID_ARGUMENT);
  expect(badId.details).toContain('"zzz"');
});

test("an oversized request is refused with RESOURCE_EXHAUSTED and the server keeps serving", async () => {
  const { driver } = await start({ grpcServerOptions: { "grpc.max_receive_message_length": 1024 } });
  const runId = await createRun(driver);
  const big = validTaskIns(runId, 5n);
  big.groupId = "x".repeat(4096);
  const refused = await statusOf(unaryCall(driver.pushTaskIns.bind(driver), { taskInsList: [big] }));
  expect(refused.code).toBe(grpc.status.RESOURCE_EXHAUSTED);
  expect((await unaryCall(driver.getNodes.bind(driver), { runId })).response.nodes).toEqual([]);
});

test("undecodable request bytes get an error status and the server keeps serving", async () => {
  const { link, driver } = await start();
  const raw = new grpc.Client(link.driverAddress, clientCredentials(ca), TLS_CHANNEL_OPTIONS);
  cleanups.push(() => raw.close());
  const identity = (b: Buffer): Buffer => b;
  const status = await new Promise<grpc.ServiceError | null>((resolve) => {
    // Field 1 with wire type 7 does not exist: no protobuf decoder accepts it.
    raw.makeUnaryRequest("/flwr.proto.Driver/CreateRun", identity, identity, Buffer.from([0x0f, 0xff, 0xff]), (err) =>
      resolve(err),
    );
  });
  expect(status).not.toBeNull();
  expect(status!.code).not.toBe(grpc.status.OK);
  expect(await createRun(driver)).not.toBe(0n);
});

test("metrics are served as Prometheus text on GET /metrics", async () => {
  const { link, driver, fleet } = await start({ metricsAddress: "127.0.0.1:0" });
  const runId = await createRun(driver);
  const nodeId = await createNode(fleet);
  await unaryCall(driver.pushTaskIns.bind(driver), { taskInsList: [validTaskIns(runId, nodeId)] });
  await statusOf(unaryCall(driver.pushTaskIns.bind(driver), { taskInsList: [] }));
  const res = await fetch(`http://${link.metricsAddress}/metrics`);
  expect(res.status).toBe(200);
  expect(res.headers.get("content-type")).toContain("text/plain");
  const text = await res.text();
  expect(text).toContain('flwr_superlink_rpcs_total{service="Driver",method="CreateRun",code="OK"} 1');
  expect(text).toContain('flwr_superlink_rpcs_total{service="Driver",method="PushTaskIns",code="INVALID_ARGUMENT"} 1');
  expect(text).toContain('flwr_superlink_rpcs_total{service="Fleet",method="CreateNode",code="OK"} 1');
  expect(text).toMatch(/^flwr_superlink_online_nodes 1$/m);
  expect(text).toMatch(/^flwr_superlink_task_ins_stored 1$/m);
  expect(text).toMatch(/^flwr_superlink_task_res_stored 0$/m);
  expect(text).toMatch(/^flwr_superlink_runs_created_total 1$/m);
  const rss = Number(/^process_resident_memory_bytes (\d+)$/m.exec(text)?.[1]);
  expect(rss).toBeGreaterThan(1024 * 1024);
  expect(text).toMatch(/^process_cpu_seconds_total \d+(\.\d+)?$/m);
  expect((await fetch(`http://${link.metricsAddress}/other`)).status).toBe(404);
});

test("plaintext mode (--insecure) serves both APIs without TLS", async () => {
  const { driver, fleet } = await start({ tls: undefined });
  expect(await createRun(driver)).not.toBe(0n);
  expect(await createNode(fleet)).not.toBe(0n);
});

test("a SQLite database keeps runs and nodes across a restart", async () => {
  const dir = mkdtempSync(join(tmpdir(), "flwr-ts-superlink-"));
  cleanups.push(() => rmSync(dir, { recursive: true, force: true }));
  const database = join(dir, "state.db");
  const first = await start({ database });
  const runId = await createRun(first.driver);
  const nodeId = await createNode(first.fleet);
  await first.link.close(1000);
  first.driver.close();
  first.fleet.close();

  const second = await start({ database });
  expect((await unaryCall(second.fleet.getRun.bind(second.fleet), { runId })).response.run?.runId).toBe(runId);
  const ping = await unaryCall(second.fleet.ping.bind(second.fleet), {
    node: { nodeId, anonymous: false },
    pingInterval: 30,
  });
  expect(ping.response.success).toBe(true);
});

test("authentication without TLS is refused before anything starts", async () => {
  const { logger } = memoryLogger();
  await expect(
    startSuperLink(
      {
        driverApiAddress: "127.0.0.1:0",
        fleetApiAddress: "127.0.0.1:0",
        database: IN_MEMORY_DATABASE,
        auth: {
          allowlist: Allowlist.fromCsvFile(fx.allowlistCsv),
          superlinkKeys: loadKeyPairFiles(fx.superlinkPrivateKey, fx.superlinkPublicKey),
        },
      },
      { logger },
    ),
  ).rejects.toThrow(InvalidConfigError);
});
