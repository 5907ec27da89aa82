/**
 * GrpcDriver against a real in-process SuperLink over TLS (certificates from
 * scripts/generate.sh), with fake SuperNodes on the Fleet API.
 */
import * as grpc from "@grpc/grpc-js";
import { createServer } from "node:net";
import { ErrorCode } from "../../src/core/constants";
import { ConnectionError, MalformedMessageError, NotFoundError } from "../../src/core/errors";
import { collectGarbage } from "../../src/core/garbage-collection";
import { RecordSet } from "../../src/core/records/types";
import { DriverService, type PushTaskInsRequest } from "../../src/proto/flwr/proto/driver";
import { TaskRes } from "../../src/proto/flwr/proto/task";
import { startGrpcServer } from "../../src/transport/grpc-server";
import { silentLogger } from "../../src/core/logger";
import { type SuperLinkHandle, startSuperLink } from "../../src/superlink/superlink";
import { GrpcDriver, PUSH_BATCH_BYTES } from "../../src/serverapp/grpc-driver";
import { join } from "node:path";
import { createReply, messageToTaskRes } from "../../src/core/records/serde";
import { FleetClient } from "../../src/proto/flwr/proto/fleet";
import { createClient, unaryCall } from "../../src/transport/channel";
import { channelCredentials, readServerTlsFiles } from "../../src/transport/tls";
import { type Fixtures, generateFixtures } from "../helpers/fixtures";
import { memoryLogger } from "../server/helpers";
import { FakeSuperNode, startTestSuperLink } from "./helpers";

let fx: Fixtures;
let ca: Buffer;
const cleanups: Array<() => unknown> = [];

beforeAll(() => {
  fx = generateFixtures(1);
  ca = fx.read(fx.caCert);
});
afterAll(() => fx.cleanup());
afterEach(async () => {
  for (const c of cleanups.splice(0).reverse()) await c();
});

async function superlink(longPollMs?: number): Promise<SuperLinkHandle> {
  const link = await startTestSuperLink(fx, longPollMs === undefined ? {} : { longPollMs });
  cleanups.push(() => link.close(0));
  return link;
}

async function connect(
  link: SuperLinkHandle,
  extra: Partial<Parameters<typeof GrpcDriver.connect>[0]> = {},
): Promise<GrpcDriver> {
  const driver = await GrpcDriver.connect({ superlink: link.driverAddress, rootCertificates: ca, ...extra });
  cleanups.push(() => driver.close());
  return driver;
}

async function node(
  link: SuperLinkHandle,
  handler: Parameters<typeof FakeSuperNode.start>[2],
  pingInterval = 30,
): Promise<FakeSuperNode> {
  const n = await FakeSuperNode.start(link.fleetAddress, ca, handler, pingInterval);
  cleanups.push(() => n.die());
  return n;
}

/** A reply RecordSet that echoes the message type and group. */
function echo(msg: { metadata: { messageType: string; groupId: string } }): RecordSet {
  const rs = new RecordSet();
  rs.configsRecords.set("echo", { type: msg.metadata.messageType, group: msg.metadata.groupId });
  return rs;
}

/** A RecordSet of one raw uint8 tensor holding `data`. */
function rawTensor(data: Uint8Array): RecordSet {
  return new RecordSet({
    parametersRecords: new Map([["p", new Map([["w", { dtype: "uint8", shape: [data.length], stype: "raw", data }]])]]),
  });
}

/**
 * A Driver API (no shared-content extension) that creates run 7 and answers each PushTaskIns
 * with `answer` (its 1-based number among the pushes); closed after the test.
 */
async function fakeDriver(
  answer: (request: PushTaskInsRequest, push: number, cb: grpc.sendUnaryData<unknown>) => void,
): Promise<{ address: string; pushes: number[] }> {
  const pushes: number[] = [];
  const fake = await startGrpcServer("127.0.0.1:0", grpc.ServerCredentials.createInsecure(), [
    {
      definition: DriverService,
      implementation: {
        createRun: (_call: unknown, cb: grpc.sendUnaryData<unknown>) => cb(null, { runId: 7n }),
        getRun: (_call: unknown, cb: grpc.sendUnaryData<unknown>) =>
          cb(null, { run: { runId: 7n, fabId: "", fabVersion: "", overrideConfig: new Map() } }),
        pushTaskIns: (call: grpc.ServerUnaryCall<PushTaskInsRequest, unknown>, cb: grpc.sendUnaryData<unknown>) => {
          pushes.push(call.request.taskInsList.length);
          answer(call.request, pushes.length, cb);
        },
      },
    },
  ]);
  cleanups.push(() => fake.close(0));
  return { address: fake.address, pushes };
}

/** A port that nothing listens on. */
async function closedPort(): Promise<number> {
  const server = createServer();
  await new Promise<void>((r) => server.listen(0, "127.0.0.1", r));
  const { port } = server.address() as { port: number };
  await new Promise<void>((r) => server.close(() => r()));
  return port;
}

describe("GrpcDriver.connect", () => {
  it("creates a run with the fab id/version and reads it back (TLS)", async () => {
    const link = await superlink();
    const driver = await connect(link, { fabId: "flwr/demo", fabVersion: "1.0.0" });
    expect(driver.runCreated).toBe(true);
    expect(typeof driver.runId).toBe("bigint");
    expect(await driver.run()).toEqual({
      runId: driver.runId,
      fabId: "flwr/demo",
      fabVersion: "1.0.0",
      overrideConfig: {},
    });
  });

  it("attaches to an existing run, and refuses an unknown one", async () => {
    const link = await superlink();
    const first = await connect(link);
    const second = await connect(link, { runId: first.runId });
    expect(second.runCreated).toBe(false);
    expect(second.runId).toBe(first.runId);
    await expect(connect(link, { runId: first.runId + 1n })).rejects.toThrow(NotFoundError);
    await expect(connect(link, { runId: first.runId + 1n })).rejects.toThrow(/Cannot find the run with ID/);
  });

  it("gives up on an unreachable SuperLink with a ConnectionError naming it", async () => {
    const port = await closedPort();
    const attempt = GrpcDriver.connect({ superlink: `127.0.0.1:${port}`, rootCertificates: ca, connectTimeoutMs: 600 });
    await expect(attempt).rejects.toThrow(ConnectionError);
    await expect(
      GrpcDriver.connect({ superlink: `127.0.0.1:${port}`, rootCertificates: ca, connectTimeoutMs: 300 }),
    ).rejects.toThrow(new RegExp(`Cannot reach the SuperLink Driver API at 127\\.0\\.0\\.1:${port}`));
  });

  it("waits for a SuperLink that starts shortly after", async () => {
    const port = await closedPort();
    const connecting = GrpcDriver.connect({ superlink: `127.0.0.1:${port}`, insecure: true, connectTimeoutMs: 10_000 });
    await new Promise((r) => setTimeout(r, 300));
    const link = await startSuperLink(
      { driverApiAddress: `127.0.0.1:${port}`, fleetApiAddress: "127.0.0.1:0", database: ":flwr-in-memory-state:" },
      { logger: silentLogger() },
    );
    cleanups.push(() => link.close(0));
    const driver = await connecting;
    cleanups.push(() => driver.close());
    expect(driver.runCreated).toBe(true);
  });

  it("refuses a plaintext connection to a TLS SuperLink", async () => {
    const link = await superlink();
    await expect(
      GrpcDriver.connect({ superlink: link.driverAddress, insecure: true, connectTimeoutMs: 300 }),
    ).rejects.toThrow(ConnectionError);
  });

  it("refuses a malformed address or conflicting credentials", async () => {
    await expect(GrpcDriver.connect({ superlink: "nohostport", insecure: true })).rejects.toThrow(/Invalid address/);
    await expect(
      GrpcDriver.connect({ superlink: "127.0.0.1:1", insecure: true, rootCertificates: ca }),
    ).rejects.toThrow(/Conflicting options/);
  });
});

describe("GrpcDriver messaging", () => {
  it("lists nodes and round-trips messages to several SuperNodes", async () => {
    const link = await superlink();
    const driver = await connect(link);
    const a = await node(link, async (m) => echo(m));
    const b = await node(link, async (m) => echo(m));
    expect(new Set(await driver.getNodeIds())).toEqual(new Set([a.nodeId, b.nodeId]));

    const msgs = [a, b].map((n) => driver.createMessage(new RecordSet(), "query", n.nodeId, "7"));
    const replies = await driver.sendAndReceive(msgs);
    expect(replies).toHaveLength(2);
    for (const reply of replies) {
      expect(reply.content!.configsRecords.get("echo")).toEqual({ type: "query", group: "7" });
      expect(reply.metadata.runId).toBe(driver.runId);
      expect(reply.metadata.dstNodeId).toBe(0n);
    }
    expect(new Set(replies.map((r) => r.metadata.srcNodeId))).toEqual(new Set([a.nodeId, b.nodeId]));
    expect(a.received[0]!.metadata).toMatchObject({ groupId: "7", ttl: 3600, srcNodeId: 0n, messageType: "query" });
  });

  it("splits a large push into requests sent one at a time, keeping the id order", async () => {
    const link = await superlink(0);
    const driver = await connect(link);
    const a = await node(link, async () => "silent");
    // Each message carries 0.6 x PUSH_BATCH_BYTES, so no two fit in one request.
    const big = (i: number): RecordSet => rawTensor(new Uint8Array(Math.ceil(PUSH_BATCH_BYTES * 0.6)).fill(i));
    const msgs = [0, 1, 2].map((i) => driver.createMessage(big(i), "query", a.nodeId, String(i)));
    // Two concurrent calls plus three small messages that share one request.
    const small = [3, 4, 5].map((i) => driver.createMessage(new RecordSet(), "query", a.nodeId, String(i)));
    const [bigIds, smallIds] = await Promise.all([driver.pushMessages(msgs), driver.pushMessages(small)]);
    // Large messages go as shared content (one probe, then one request per distinct payload that
    // does not fit with the one before), the small ones in one plain PushTaskIns.
    expect(link.metrics.rpcCount("SharedContentDriver", "PushSharedTaskIns", "OK")).toBe(4);
    expect(link.metrics.rpcCount("Driver", "PushTaskIns", "OK")).toBe(1);

    expect(new Set([...bigIds, ...smallIds]).size).toBe(6);
    while (a.received.length < 6) await new Promise((r) => setTimeout(r, 20));
    // The node pulls first in, first out: the SuperLink stored them in the order given.
    expect(a.received.map((m) => m.metadata.groupId)).toEqual(["0", "1", "2", "3", "4", "5"]);
    expect(a.received.map((m) => m.metadata.messageId)).toEqual([...bigIds, ...smallIds]);
    const tensor = a.received[1]!.content!.parametersRecords.get("p")!.get("w")!.data;
    expect(tensor.length).toBe(Math.ceil(PUSH_BATCH_BYTES * 0.6));
    expect(Buffer.from(tensor.buffer, tensor.byteOffset, tensor.length).equals(Buffer.alloc(tensor.length, 1))).toBe(
      true,
    );
  });

  it("stops a split push at the first refused request and reports it", async () => {
    // A Driver API that creates runs and refuses the first PushTaskIns.
    const { address, pushes } = await fakeDriver((request, push, cb) => {
      if (push === 1) cb({ code: grpc.status.INTERNAL, details: "disk full" });
      else cb(null, { taskIds: request.taskInsList.map((_, i) => `id-${push}-${i}`) });
    });
    const driver = await GrpcDriver.connect({ superlink: address, insecure: true });
    cleanups.push(() => driver.close());
    const content = rawTensor(new Uint8Array(Math.ceil(PUSH_BATCH_BYTES * 0.6)));
    const msgs = [1, 2, 3].map((i) => driver.createMessage(content, "query", 42n, String(i)));
    await expect(driver.pushMessages(msgs)).rejects.toThrow(/disk full/);
    expect(pushes).toEqual([1]);
    // The queue is not stuck: a later push goes through.
    expect(await driver.pushMessages([driver.createMessage(new RecordSet(), "query", 42n, "4")])).toEqual(["id-2-0"]);
  });

  it("uploads a broadcast once: every node gets the same bytes, the Driver API receives the payload once", async () => {
    const link = await superlink(0);
    const driver = await connect(link);
    const nodes = [await node(link, async () => "silent"), await node(link, async () => "silent")];
    const third = await node(link, async () => "silent");
    nodes.push(third);
    const size = 3 * 1024 * 1024;
    const data = new Uint8Array(size).map((_, i) => (i * 7) % 251);
    const content = rawTensor(data);
    // One call for two nodes, then one more call (legacy round loop style) for the third.
    await driver.pushMessages(nodes.slice(0, 2).map((n) => driver.createMessage(content, "query", n.nodeId, "1")));
    await driver.pushMessages([driver.createMessage(content, "query", third.nodeId, "1")]);
    for (const n of nodes) while (n.received.length < 1) await new Promise((r) => setTimeout(r, 20));
    for (const n of nodes) {
      const got = n.received[0]!.content!.parametersRecords.get("p")!.get("w")!.data;
      expect(Buffer.from(got.buffer, got.byteOffset, got.length).equals(Buffer.from(data))).toBe(true);
    }
    const text = await link.metrics.render();
    const received = (method: string): number =>
      Number(
        new RegExp(`flwr_superlink_driver_received_bytes_total\\{method="${method}"\\} (\\d+)`).exec(text)?.[1] ?? 0,
      );
    // Once (plus envelopes), not three times; nothing went through plain PushTaskIns.
    expect(received("PushSharedTaskIns")).toBeGreaterThan(size);
    expect(received("PushSharedTaskIns")).toBeLessThan(size + 64 * 1024);
    expect(received("PushTaskIns")).toBe(0);
    expect(await link.state.numSharedContents()).toBe(1);
  });

  it("falls back to PushTaskIns, once per channel, on a SuperLink without the extension", async () => {
    const { address, pushes } = await fakeDriver((request, push, cb) =>
      cb(null, { taskIds: request.taskInsList.map((_, i) => `id-${push}-${i}`) }),
    );
    const { logger, lines } = memoryLogger();
    const driver = await GrpcDriver.connect({ superlink: address, insecure: true }, { logger });
    cleanups.push(() => driver.close());
    const content = rawTensor(new Uint8Array(256 * 1024).fill(3));
    const ids = await driver.pushMessages([1n, 2n].map((n) => driver.createMessage(content, "query", n, "1")));
    expect(ids).toEqual(["id-1-0", "id-1-1"]);
    expect(await driver.pushMessages([driver.createMessage(content, "query", 3n, "1")])).toEqual(["id-2-0"]);
    expect(pushes).toEqual([2, 1]);
    expect(lines.filter((l) => /does not implement PushSharedTaskIns/.test(String(l["msg"])))).toHaveLength(1);
  });

  it("returns each reply once from pullMessages", async () => {
    const link = await superlink(0);
    const driver = await connect(link);
    const a = await node(link, async (m) => echo(m));
    const [id] = await driver.pushMessages([driver.createMessage(new RecordSet(), "query", a.nodeId, "")]);
    let replies = await driver.pullMessages([id!]);
    while (replies.length === 0) {
      await new Promise((r) => setTimeout(r, 50));
      replies = await driver.pullMessages([id!]);
    }
    expect(replies.map((r) => r.metadata.replyToMessage)).toEqual([id]);
    expect(await driver.pullMessages([id!])).toEqual([]);
  });

  it("lets a pulled reply's received bytes be collected as soon as its consumer drops them", async () => {
    // grpc-js keeps the PullTaskRes response referenced until the HTTP/2 stream is torn down,
    // a turn or more after the answer: a consumer that has written a 100 MB result out and
    // collects garbage at once must not find the whole received message still held.
    const link = await superlink();
    const driver = await connect(link);
    const a = await node(link, async () => {
      const rs = new RecordSet();
      const data = new Uint8Array(2 * 1024 * 1024).fill(3);
      rs.parametersRecords.set(
        "p",
        new Map([["0", { dtype: "", shape: [data.length], stype: "numpy.ndarray", data }]]),
      );
      return rs;
    });
    let collected = false;
    const registry = new FinalizationRegistry(() => (collected = true));
    /** Round trip; registers the reply's received buffer and keeps nothing of it. */
    const roundTrip = async (): Promise<number> => {
      const [reply] = await driver.sendAndReceive([driver.createMessage(new RecordSet(), "query", a.nodeId, "")]);
      const data = reply!.content!.parametersRecords.get("p")!.get("0")!.data;
      registry.register(data.buffer, undefined);
      return data.length;
    };
    expect(await roundTrip()).toBe(2 * 1024 * 1024);
    collectGarbage(); // in the turn the answer came in, before grpc-js lets go of its stream
    for (let i = 0; i < 50 && !collected; i++) await new Promise((r) => setTimeout(r, 20));
    expect(collected).toBe(true);
  });

  it("works with a SuperLink that does not long-poll (fast empty pulls)", async () => {
    const link = await superlink(0);
    const driver = await connect(link, { pollIntervalMs: 50 });
    const a = await node(link, async (m) => {
      await new Promise((r) => setTimeout(r, 300));
      return echo(m);
    });
    const replies = await driver.sendAndReceive([driver.createMessage(new RecordSet(), "query", a.nodeId, "")]);
    expect(replies).toHaveLength(1);
  });

  it("returns what arrived when the timeout passes, even while the SuperLink holds the pull", async () => {
    const link = await superlink(60_000);
    const driver = await connect(link);
    const a = await node(link, async () => "silent");
    const replies = await driver.sendAndReceive([driver.createMessage(new RecordSet(), "query", a.nodeId, "")], {
      timeoutMs: 500,
    });
    expect(replies).toEqual([]);
  });

  it("rejects with the abort reason and cancels the held pull", async () => {
    const link = await superlink(60_000);
    const driver = await connect(link);
    const a = await node(link, async () => "silent");
    const controller = new AbortController();
    const waiting = driver.sendAndReceive([driver.createMessage(new RecordSet(), "query", a.nodeId, "")], {
      signal: controller.signal,
    });
    setTimeout(() => controller.abort(new Error("stop")), 200);
    await expect(waiting).rejects.toThrow("stop");
  });

  it("answers NODE_UNAVAILABLE for a node whose ping expired", async () => {
    const link = await superlink();
    const driver = await connect(link);
    const dying = await node(link, async () => "silent", 1);
    const waiting = driver.sendAndReceive([driver.createMessage(new RecordSet(), "train", dying.nodeId, "1")]);
    await dying.die();
    const [reply] = await waiting;
    expect(reply!.error?.code).toBe(ErrorCode.NODE_UNAVAILABLE);
    expect(reply!.metadata.srcNodeId).toBe(dying.nodeId);
  });

  it("turns a malformed reply into an error reply instead of crashing or hanging", async () => {
    const link = await superlink();
    const driver = await connect(link);
    const bad = await node(link, async (m) => ({
      raw: TaskRes.fromPartial({
        taskId: "",
        groupId: m.metadata.groupId,
        runId: m.metadata.runId,
        task: {
          producer: { nodeId: m.metadata.dstNodeId, anonymous: false },
          consumer: { nodeId: 0n, anonymous: true },
          createdAt: Date.now() / 1000,
          ttl: 3600,
          ancestry: [m.metadata.messageId],
          taskType: m.metadata.messageType,
          // Two keys but one array: the SuperLink stores it, our serde refuses it.
          recordset: {
            parameters: new Map([
              ["p", { dataKeys: ["a", "b"], dataValues: [{ dtype: "", shape: [], stype: "", data: Buffer.alloc(0) }] }],
            ]),
          },
        },
      }),
    }));
    const [reply] = await driver.sendAndReceive([driver.createMessage(new RecordSet(), "train", bad.nodeId, "1")]);
    expect(reply!.error?.code).toBe(ErrorCode.UNKNOWN);
    expect(reply!.error?.reason).toMatch(/Malformed reply: ParametersRecord "p": 2 keys but 1 arrays/);
  });

  it("refuses messages that were not made for this run", async () => {
    const link = await superlink();
    const driver = await connect(link);
    const msg = driver.createMessage(new RecordSet(), "train", 5n, "");
    await expect(driver.pushMessages([{ ...msg, metadata: { ...msg.metadata, srcNodeId: 3n } }])).rejects.toThrow(
      MalformedMessageError,
    );
  });

  it("reports a lost SuperLink as a ConnectionError once the retry deadline has passed", async () => {
    const link = await superlink();
    const driver = await connect(link, { retryDeadlineMs: 600 });
    await link.close(0);
    const started = Date.now();
    await expect(driver.getNodeIds()).rejects.toThrow(ConnectionError);
    expect(Date.now() - started).toBeGreaterThanOrEqual(500);
    await expect(driver.getNodeIds()).rejects.toThrow(
      /GetNodes to the SuperLink Driver API at 127\.0\.0\.1:\d+ failed \(UNAVAILABLE\).*gave up after retrying for 0\.6 s \(--retry-deadline\)/,
    );
  });

  it("with retryDeadlineMs 0, fails at once", async () => {
    const link = await superlink();
    const driver = await connect(link, { retryDeadlineMs: 0 });
    await link.close(0);
    await expect(driver.getNodeIds()).rejects.toThrow(/GetNodes to the SuperLink Driver API.*failed \(UNAVAILABLE\)/);
  });
});

describe("GrpcDriver across a SuperLink restart", () => {
  it("keeps the ids it holds, resumes pulling after a restart on the same database, and drops a second reply", async () => {
    const database = join(fx.dir, `restart-${process.pid}.db`);
    const start = (driverApiAddress: string, fleetApiAddress: string): Promise<SuperLinkHandle> =>
      startSuperLink(
        {
          driverApiAddress,
          fleetApiAddress,
          database,
          tls: readServerTlsFiles({ caCertFile: fx.caCert, certFile: fx.serverCert, keyFile: fx.serverKey }),
          longPollMs: 500,
        },
        { logger: silentLogger() },
      );
    let link = await start("127.0.0.1:0", "127.0.0.1:0");
    cleanups.push(() => link.close(0));
    const { logger, lines } = memoryLogger("info");
    const driver = await GrpcDriver.connect(
      { superlink: link.driverAddress, rootCertificates: ca, retryDeadlineMs: 30_000 },
      { logger },
    );
    cleanups.push(() => driver.close());
    const silent = await node(link, async () => "silent");
    const [taskId] = await driver.pushMessages([driver.createMessage(new RecordSet(), "query", silent.nodeId, "1")]);
    const pending = (async () => {
      const got = [];
      while (got.length === 0) got.push(...(await driver.pullMessages([taskId!])));
      return got;
    })();
    while (silent.received.length === 0) await new Promise((r) => setTimeout(r, 20));

    await link.close(0);
    await new Promise((r) => setTimeout(r, 700));
    link = await start(link.driverAddress, link.fleetAddress);

    // The node answers through the restarted SuperLink, twice (a re-push after a lost answer).
    const fleet = createClient(FleetClient, link.fleetAddress, channelCredentials({ rootCertificates: ca }));
    cleanups.push(() => fleet.close());
    const taskRes = messageToTaskRes(createReply(silent.received[0]!, echo(silent.received[0]!)));
    await unaryCall(fleet.pushTaskRes.bind(fleet), { taskResList: [taskRes] });
    const replies = await pending;
    expect(replies.map((r) => r.metadata.replyToMessage)).toEqual([taskId]);
    expect(lines.some((l) => l["event"] === "serverapp.retry")).toBe(true);
    expect(lines.some((l) => l["event"] === "serverapp.reconnected")).toBe(true);

    await unaryCall(fleet.pushTaskRes.bind(fleet), { taskResList: [taskRes] }).catch(() => undefined);
    await new Promise((r) => setTimeout(r, 100));
    expect(await driver.pullMessages([taskId!])).toEqual([]);
  });
});
