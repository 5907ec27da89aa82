/**
 * Malformed Fleet input against the real flower-superlink daemon (TLS, no node auth, so the
 * raw client can say anything): every bad request gets an answer and the SuperLink keeps
 * serving. Where Flower 1.10 answers OK and drops or keeps the data (docs/protocol.md, "State", "Fleet API"), so do we.
 * (Driver-side garbage bytes and the receive-size limit: test/superlink/superlink.integration.)
 */
import * as grpc from "@grpc/grpc-js";
import type { DriverClient } from "../../src/proto/flwr/proto/driver";
import type { FleetClient } from "../../src/proto/flwr/proto/fleet";
import { unaryCall } from "../../src/transport/channel";
import { type Fixtures, generateFixtures } from "../helpers/fixtures";
import {
  TLS_CHANNEL_OPTIONS,
  clientCredentials,
  driverClient,
  fleetClient,
  statusOf,
  validTaskIns,
  validTaskRes,
} from "../superlink/helpers";
import { type RunningSuperLink, ensureDist, killAll, startSuperLink, superlinkArgs } from "./helpers";

let fx: Fixtures;
let link: RunningSuperLink;
let ca: Buffer;
let fleet: FleetClient;
let driver: DriverClient;
let raw: grpc.Client;

beforeAll(async () => {
  ensureDist();
  fx = generateFixtures(1);
  ca = fx.read(fx.caCert);
  link = await startSuperLink(superlinkArgs(fx, { auth: false }));
  fleet = fleetClient(link.fleetAddress, ca);
  driver = driverClient(link.driverAddress, ca);
  raw = new grpc.Client(link.fleetAddress, clientCredentials(ca), TLS_CHANNEL_OPTIONS);
}, 120_000);
afterAll(async () => {
  fleet?.close();
  driver?.close();
  raw?.close();
  await killAll();
  fx?.cleanup();
});

async function createRun(): Promise<bigint> {
  return (await unaryCall(driver.createRun.bind(driver), { fabId: "", fabVersion: "", overrideConfig: new Map() }))
    .response.runId;
}

async function createNode(): Promise<bigint> {
  return (await unaryCall(fleet.createNode.bind(fleet), { pingInterval: 30 })).response.node!.nodeId;
}

/** One full instruction -> reply -> pull round trip: proof the SuperLink still serves. */
async function roundTrip(): Promise<void> {
  const runId = await createRun();
  const nodeId = await createNode();
  const [taskInsId] = (await unaryCall(driver.pushTaskIns.bind(driver), { taskInsList: [validTaskIns(runId, nodeId)] }))
    .response.taskIds;
  const pulled = (await unaryCall(fleet.pullTaskIns.bind(fleet), { node: { nodeId, anonymous: false }, taskIds: [] }))
    .response;
  expect(pulled.taskInsList.map((t) => t.taskId)).toEqual([taskInsId]);
  await unaryCall(fleet.pushTaskRes.bind(fleet), { taskResList: [validTaskRes(runId, nodeId, taskInsId!)] });
  const results = (await unaryCall(driver.pullTaskRes.bind(driver), { node: undefined, taskIds: [taskInsId!] }))
    .response.taskResList;
  expect(results.map((r) => r.task!.ancestry)).toEqual([[taskInsId]]);
}

function sendRaw(method: string, body: Buffer): Promise<grpc.ServiceError | null> {
  return new Promise((resolve) =>
    raw.makeUnaryRequest(
      `/flwr.proto.Fleet/${method}`,
      (b: Buffer) => b,
      (b: Buffer) => b,
      body,
      (err) => resolve(err),
    ),
  );
}

test("garbage bytes to Fleet methods get an error status; the SuperLink keeps serving", async () => {
  // Field 1 with wire type 7 does not exist; a truncated length-delimited field.
  for (const [method, body] of [
    ["PushTaskRes", Buffer.from([0x0f, 0xff, 0xff])],
    ["CreateNode", Buffer.from([0x0f, 0x01])],
    ["PullTaskIns", Buffer.from([0x0a, 0x7f, 0x01])],
  ] as const) {
    const err = await sendRaw(method, body);
    expect(err).not.toBeNull();
    expect(err!.code).not.toBe(grpc.status.OK);
  }
  expect(link.proc.alive()).toBe(true);
  await roundTrip();
});

test("PushTaskRes with an empty list is INVALID_ARGUMENT saying so (Flower: UNKNOWN from an IndexError)", async () => {
  const status = await statusOf(unaryCall(fleet.pushTaskRes.bind(fleet), { taskResList: [] }));
  expect(status.code).toBe(grpc.status.INVALID_ARGUMENT);
  expect(status.details).toContain("`task_res_list` must not be empty");
});

test("a TaskRes answering an unknown task id is answered OK like Flower's (no ancestry check) and harms nothing", async () => {
  const runId = await createRun();
  const nodeId = await createNode();
  const unknown = "0b5c1e3a-7f00-4d1e-9c1b-2f4a6d8e0c11";
  const answer = (
    await unaryCall(fleet.pushTaskRes.bind(fleet), { taskResList: [validTaskRes(runId, nodeId, unknown)] })
  ).response;
  expect(answer.reconnect?.reconnect).toBe(5n);
  expect(answer.results.size).toBe(1);
  await roundTrip();
});

test('a TaskRes for an unknown run or with an invalid task is dropped with key "None" and status OK (Flower behaviour)', async () => {
  const nodeId = await createNode();
  const orphan = validTaskRes(123456789n, nodeId, "0b5c1e3a-7f00-4d1e-9c1b-2f4a6d8e0c11");
  expect([...(await unaryCall(fleet.pushTaskRes.bind(fleet), { taskResList: [orphan] })).response.results]).toEqual([
    ["None", 0],
  ]);
  const runId = await createRun();
  const invalid = validTaskRes(runId, nodeId, "0b5c1e3a-7f00-4d1e-9c1b-2f4a6d8e0c11");
  invalid.task!.ttl = 0;
  expect([...(await unaryCall(fleet.pushTaskRes.bind(fleet), { taskResList: [invalid] })).response.results]).toEqual([
    ["None", 0],
  ]);
  await roundTrip();
});

test("a TaskRes whose ancestry is not a UUID does not break later pulls (Flower 1.10's in-memory state does)", async () => {
  const runId = await createRun();
  const nodeId = await createNode();
  const answer = (
    await unaryCall(fleet.pushTaskRes.bind(fleet), { taskResList: [validTaskRes(runId, nodeId, "not-a-uuid")] })
  ).response;
  expect(answer.results.size).toBe(1);
  await roundTrip();
});

test("DeleteNode of an unknown node is NOT_FOUND (Flower: UNKNOWN), Ping of an unknown node is success=false", async () => {
  const del = await statusOf(unaryCall(fleet.deleteNode.bind(fleet), { node: { nodeId: 42n, anonymous: false } }));
  expect(del.code).toBe(grpc.status.NOT_FOUND);
  const ping = await unaryCall(fleet.ping.bind(fleet), { node: { nodeId: 42n, anonymous: false }, pingInterval: 30 });
  expect(ping.response.success).toBe(false);
  await roundTrip();
});
