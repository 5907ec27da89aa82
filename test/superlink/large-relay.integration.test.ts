/**
 * A multi-megabyte ParametersRecord relayed ServerApp -> SuperLink -> SuperNode -> SuperLink
 * over real gRPC + TLS: the SuperLink's task-carrying responses use the chunked serializers, so
 * every payload byte must come back intact and decodable by the generated clients.
 */
import { randomBytes } from "node:crypto";
import { mkdtempSync, readdirSync, readlinkSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { RecordSet } from "../../src/proto/flwr/proto/recordset";
import type { TaskIns } from "../../src/proto/flwr/proto/task";
import { contentDigest } from "../../src/state/state-support";
import { unaryCall } from "../../src/transport/channel";
import { type Fixtures, generateFixtures } from "../helpers/fixtures";
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
  const spillFiles = (): number =>
    readdirSync("/proc/self/fd").filter((fd) => {
      try {
        return readlinkSync(`/proc/self/fd/${fd}`).startsWith(dir);
      } catch {
        return false;
      }
    }).length;
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
