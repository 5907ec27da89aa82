/**
 * A multi-megabyte ParametersRecord relayed ServerApp -> SuperLink -> SuperNode -> SuperLink
 * over real gRPC + TLS: the SuperLink's task-carrying responses use the chunked serializers, so
 * every payload byte must come back intact and decodable by the generated clients.
 */
import { status } from "@grpc/grpc-js";
import { randomBytes } from "node:crypto";
import { closeSync, mkdtempSync, openSync, rmSync, writeSync } from "node:fs";
import * as http2 from "node:http2";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { PullTaskInsRequest } from "../../src/proto/flwr/proto/fleet";
import { RecordSet } from "../../src/proto/flwr/proto/recordset";
import type { TaskIns } from "../../src/proto/flwr/proto/task";
import { contentDigest } from "../../src/state/state-support";
import { unaryCall } from "../../src/transport/channel";
import { openFdsUnder } from "../helpers/open-files";
import { type Fixtures, generateFixtures } from "../helpers/fixtures";
import { grpcFrameHeader, grpcRequestHeaders } from "../helpers/raw-grpc";
import {
  driverClient,
  fleetClient,
  memoryLogger,
  startTlsSuperLink,
  until,
  validTaskIns,
  validTaskRes,
} from "./helpers";

let fx: Fixtures;
beforeAll(() => {
  fx = generateFixtures(1);
});
afterAll(() => fx.cleanup());

test("a 6 MB record is relayed both ways with every byte intact", async () => {
  const link = await startTlsSuperLink(fx, { logger: memoryLogger().logger });
  const ca = fx.read(fx.caCert);
  const driver = driverClient(link.driverAddress, ca);
  const fleet = fleetClient(link.fleetAddress, ca);
  try {
    const tensors = [randomBytes(2 * 1024 * 1024), randomBytes(4 * 1024 * 1024 + 3), randomBytes(100)];
    const params = {
      dataKeys: ["a", "b", "c"],
      dataValues: tensors.map((data) => ({ dtype: "uint8", shape: [data.length], stype: "numpy.ndarray", data })),
    };
    const runId = (
      await unaryCall(driver.createRun.bind(driver), { fabId: "f", fabVersion: "1", overrideConfig: new Map() })
    ).response.runId;
    const nodeId = (await unaryCall(fleet.createNode.bind(fleet), { pingInterval: 30 })).response.node!.nodeId;

    const ins = validTaskIns(runId, nodeId, { taskType: "query" });
    ins.task!.recordset = {
      parameters: new Map([["weights", params]]),
      metrics: new Map([["m", { data: new Map([["loss", { double: -0.5 }]]) }]]),
      configs: new Map(),
    };
    const [taskInsId] = (await unaryCall(driver.pushTaskIns.bind(driver), { taskInsList: [ins] })).response.taskIds;

    const pulled = (await unaryCall(fleet.pullTaskIns.bind(fleet), { node: { nodeId, anonymous: false }, taskIds: [] }))
      .response;
    expect(pulled.taskInsList.map((t) => t.taskId)).toEqual([taskInsId]);
    const got = pulled.taskInsList[0]!.task!.recordset!;
    expect(got.parameters.get("weights")!.dataValues.map((v, i) => v.data.equals(tensors[i]!))).toEqual([
      true,
      true,
      true,
    ]);
    expect(got.metrics.get("m")!.data.get("loss")).toEqual({ double: -0.5 });

    const res = validTaskRes(runId, nodeId, taskInsId!);
    res.task!.recordset = got;
    await unaryCall(fleet.pushTaskRes.bind(fleet), { taskResList: [res] });
    const results = (await unaryCall(driver.pullTaskRes.bind(driver), { node: undefined, taskIds: [taskInsId!] }))
      .response;
    expect(results.taskResList).toHaveLength(1);
    const back = results.taskResList[0]!.task!.recordset!.parameters.get("weights")!;
    expect(back.dataKeys).toEqual(["a", "b", "c"]);
    expect(back.dataValues.map((v, i) => v.data.equals(tensors[i]!))).toEqual([true, true, true]);
    await until(
      async () => (await link.state.numTaskIns()) === 0 && (await link.state.numTaskRes()) === 0,
      "TaskIns/TaskRes deletion",
    );
  } finally {
    driver.close();
    fleet.close();
    await link.close(1000);
  }
});

test("a delivered broadcast read back from its spill file arrives intact (redelivery after the lease)", async () => {
  const dir = mkdtempSync(join(tmpdir(), "flwr-relay-spill-"));
  const { logger, lines } = memoryLogger();
  const spillFiles = (): number => openFdsUnder(dir).length;
  const link = await startTlsSuperLink(
    fx,
    // Every content spilled and, once it is, every read from the file.
    { logger, contentSpill: { minBytes: 1024, dir, alwaysReadBack: true } },
    { taskLeaseSeconds: 0 },
  );
  const ca = fx.read(fx.caCert);
  const driver = driverClient(link.driverAddress, ca);
  const fleet = fleetClient(link.fleetAddress, ca);
  try {
    // Larger than a few 1 MiB send batches, not a multiple of one.
    const tensors = [randomBytes(3 * 1024 * 1024 + 5), randomBytes(100)];
    const recordset = {
      parameters: new Map([
        [
          "weights",
          {
            dataKeys: ["a", "b"],
            dataValues: tensors.map((data) => ({ dtype: "uint8", shape: [data.length], stype: "raw", data })),
          },
        ],
      ]),
      metrics: new Map(),
      configs: new Map(),
    };
    const encoded = Buffer.from(RecordSet.encode(recordset).finish());
    const shared = { digest: contentDigest(encoded), encoded, recordset: RecordSet.decode(encoded) };
    const runId = (
      await unaryCall(driver.createRun.bind(driver), { fabId: "f", fabVersion: "1", overrideConfig: new Map() })
    ).response.runId;
    const nodeId = (await unaryCall(fleet.createNode.bind(fleet), { pingInterval: 30 })).response.node!.nodeId;
    const ins = validTaskIns(runId, nodeId, { taskType: "query" });
    ins.task!.recordset = shared.recordset;
    const taskInsId = await link.state.storeTaskIns(ins, shared);
    const pull = async (): Promise<TaskIns | undefined> =>
      (await unaryCall(fleet.pullTaskIns.bind(fleet), { node: { nodeId, anonymous: false }, taskIds: [] })).response
        .taskInsList[0];
    const intact = (t: TaskIns | undefined): boolean[] =>
      t!.task!.recordset!.parameters.get("weights")!.dataValues.map((v, i) => v.data.equals(tensors[i]!));

    const first = await pull();
    expect(first?.taskId).toBe(taskInsId);
    expect(intact(first)).toEqual([true, true]);
    await until(() => lines.some((l) => l["event"] === "state.shared-content-spilled"), "the spill");
    expect(spillFiles()).toBe(1);
    // Lease 0: offered again at once, now from the file.
    const again = await pull();
    expect(again?.taskId).toBe(taskInsId);
    expect(intact(again)).toEqual([true, true]);
    expect(Buffer.from(RecordSet.encode(again!.task!.recordset!).finish()).equals(encoded)).toBe(true);
  } finally {
    driver.close();
    fleet.close();
    await link.close(1000);
    rmSync(dir, { recursive: true, force: true });
  }
});

test("a broadcast whose spill file goes bad before a paced answer is written from it: an error, never wrong bytes", async () => {
  const dir = mkdtempSync(join(tmpdir(), "flwr-relay-spill-"));
  const { logger, lines } = memoryLogger();
  const spillFds = (): string[] => openFdsUnder(dir);
  // Once spilled, every read from the file (the test holds the content).
  const link = await startTlsSuperLink(
    fx,
    { logger, contentSpill: { minBytes: 1024, dir, alwaysReadBack: true } },
    { taskLeaseSeconds: 0 },
  );
  const ca = fx.read(fx.caCert);
  const fleet = fleetClient(link.fleetAddress, ca);
  const session = http2.connect(`https://localhost:${link.fleetAddress.split(":").pop()}`, { ca });
  session.on("error", () => undefined);
  try {
    // Large enough to be paced (one large answer on the wire at a time).
    const tensor = randomBytes(9 * 1024 * 1024 + 5);
    const recordset = {
      parameters: new Map([
        [
          "weights",
          { dataKeys: ["a"], dataValues: [{ dtype: "uint8", shape: [tensor.length], stype: "raw", data: tensor }] },
        ],
      ]),
      metrics: new Map(),
      configs: new Map(),
    };
    const encoded = Buffer.from(RecordSet.encode(recordset).finish());
    const shared = { digest: contentDigest(encoded), encoded, recordset: RecordSet.decode(encoded) };
    const driver = driverClient(link.driverAddress, ca);
    const runId = (
      await unaryCall(driver.createRun.bind(driver), { fabId: "f", fabVersion: "1", overrideConfig: new Map() })
    ).response.runId;
    driver.close();
    const createNode = async (): Promise<bigint> =>
      (await unaryCall(fleet.createNode.bind(fleet), { pingInterval: 30 })).response.node!.nodeId;
    const [a, b] = [await createNode(), await createNode()];
    for (const nodeId of [a, b]) {
      const ins = validTaskIns(runId, nodeId, { taskType: "query" });
      ins.task!.recordset = shared.recordset;
      expect(await link.state.storeTaskIns(ins, shared)).toBeDefined();
    }
    // Node a pulls and does not read its answer: the answer holds the send permit.
    const request = Buffer.from(
      PullTaskInsRequest.encode({ node: { nodeId: a, anonymous: false }, taskIds: [] }).finish(),
    );
    const stalled = session.request(grpcRequestHeaders("/flwr.proto.Fleet/PullTaskIns"));
    stalled.on("error", () => undefined);
    const answering = new Promise((resolve) => stalled.once("response", resolve));
    stalled.end(Buffer.concat([grpcFrameHeader(request.length), request]));
    await answering;
    // Node b's pull, the last delivery, spills the content; its answer waits for the permit.
    const pulledB = unaryCall(fleet.pullTaskIns.bind(fleet), { node: { nodeId: b, anonymous: false }, taskIds: [] });
    const outcomeB = pulledB.then(
      (r) => `answered with ${r.response.taskInsList.length} TaskIns`,
      (err: unknown) => (err as { code?: number }).code,
    );
    await until(() => lines.some((l) => l["event"] === "state.shared-content-spilled"), "the spill");
    const [fd] = spillFds();
    const other = openSync(`/proc/self/fd/${fd!}`, "r+");
    writeSync(other, Buffer.from("garbage"), 0, 7, 4 * 1024 * 1024);
    closeSync(other);
    // Node a goes away: b's answer is written from the file, and ends short of its last byte.
    stalled.close(http2.constants.NGHTTP2_CANCEL);
    const failed = await outcomeB;
    expect(failed).toBe(status.INTERNAL);
    expect(lines.filter((l) => l["event"] === "state.shared-content-unreadable")).toHaveLength(1);
    await until(() => spillFds().length === 0, "the bad spill file closed");
    // Lease 0: offered again at once, but the content cannot be read: not delivered.
    const again = await unaryCall(fleet.pullTaskIns.bind(fleet), {
      node: { nodeId: b, anonymous: false },
      taskIds: [],
    });
    expect(again.response.taskInsList).toEqual([]);
  } finally {
    session.destroy();
    fleet.close();
    await link.close(1000);
    rmSync(dir, { recursive: true, force: true });
  }
});
