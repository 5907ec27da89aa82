/**
 * Connection hygiene and error hygiene of the real flower-superlink daemon, over loopback:
 * idle connections are closed (and gRPC clients reconnect without an error), a 1 byte/s request
 * is cancelled while a slow-but-flowing one is not, a huge bad task id gives a short status and
 * log line and the caller's channel keeps working, a `\n` in a group_id cannot forge a text log
 * line, a state failure tells the caller only an incident id, and wire data that Python's
 * protobuf (upb) rejects gets INVALID_ARGUMENT.
 */
import { spawn } from "node:child_process";
import { createInterface } from "node:readline";
import * as http2 from "node:http2";
import * as net from "node:net";
import { join } from "node:path";
import { mkdirSync, mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import * as grpc from "@grpc/grpc-js";
import { formatLogLine } from "../../src/core/logger";
import { LONG_POLL_HEADER } from "../../src/core/constants";
import { startSuperLink as startSuperLinkInProcess } from "../../src/superlink/superlink";
import { readServerTlsFiles } from "../../src/transport/tls";
import type { DriverClient } from "../../src/proto/flwr/proto/driver";
import type { FleetClient } from "../../src/proto/flwr/proto/fleet";
import { unaryCall } from "../../src/transport/channel";
import { type Fixtures, REPO_ROOT, generateFixtures } from "../helpers/fixtures";
import {
  type LogRecord,
  type RunningSuperLink,
  ensureDist,
  isEvent,
  killAll,
  spawnBin,
  startSuperLink,
  superlinkArgs,
  writeApps,
} from "../faults/helpers";
import {
  TLS_CHANNEL_OPTIONS,
  clientCredentials,
  driverClient,
  fleetClient,
  memoryLogger,
  statusOf,
  validTaskIns,
} from "./helpers";
import { grpcFrameHeader, grpcRequestHeaders } from "../helpers/raw-grpc";

const clients: grpc.Client[] = [];
afterAll(async () => {
  for (const c of clients) c.close();
  await killAll();
});
beforeAll(() => ensureDist());

function track<T extends grpc.Client>(client: T): T {
  clients.push(client);
  return client;
}

/** A raw HTTP/2 session to a plaintext SuperLink, as a misbehaving peer would open it. */
function rawSession(address: string): Promise<http2.ClientHttp2Session> {
  return new Promise((resolve, reject) => {
    const session = http2.connect(`http://${address}`);
    session.once("connect", () => resolve(session));
    session.once("error", reject);
  });
}

/** Opens a gRPC request stream for `method`, headers only; the test writes the body. */
function grpcStream(session: http2.ClientHttp2Session, method: string): http2.ClientHttp2Stream {
  const stream = session.request(grpcRequestHeaders(method));
  stream.on("error", () => {});
  return stream;
}

/** gRPC framing of one message: flag byte, 4-byte big-endian length, the bytes. */
function frame(body: Buffer): Buffer {
  return Buffer.concat([grpcFrameHeader(body.length), body]);
}

/** How long the SuperLink keeps a TCP connection on which the peer sends nothing (< 20 s). */
async function silentConnectionLifetime(address: string): Promise<number> {
  const socket = net.connect(
    Number(address.slice(address.lastIndexOf(":") + 1)),
    address.slice(0, address.lastIndexOf(":")),
  );
  socket.on("error", () => {});
  socket.resume(); // read (and drop) what the server sends, so its FIN is seen
  const opened = Date.now();
  const closed = new Promise<void>((resolve) => socket.once("close", () => resolve()));
  const limit = sleep(20_000).then(() => "still open");
  try {
    expect(await Promise.race([closed, limit])).not.toBe("still open");
  } finally {
    socket.destroy();
  }
  return Date.now() - opened;
}

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

describe("connection limits (plaintext SuperLink with small limits)", () => {
  let link: RunningSuperLink;
  let fleet: FleetClient;

  beforeAll(async () => {
    link = await startSuperLink([
      "--insecure",
      "--driver-api-address",
      "127.0.0.1:0",
      "--fleet-api-address",
      "127.0.0.1:0",
      "--max-connection-idle-ms",
      "800",
      "--request-receive-timeout-ms",
      "1500",
      "--min-request-receive-rate",
      "1024",
    ]);
    fleet = track(fleetClient(link.fleetAddress));
  }, 60_000);

  test("an idle session is closed with GOAWAY after the idle timeout, even while it sends PINGs", async () => {
    const session = await rawSession(link.fleetAddress);
    const opened = Date.now();
    const goaway = new Promise<number>((resolve) => session.once("goaway", (code: number) => resolve(code)));
    const closed = new Promise<void>((resolve) => session.once("close", () => resolve()));
    const pinger = setInterval(() => {
      if (!session.closed && !session.destroyed) session.ping(() => {});
    }, 200);
    try {
      expect(await goaway).toBe(http2.constants.NGHTTP2_NO_ERROR);
      await closed;
    } finally {
      clearInterval(pinger);
    }
    const idleFor = Date.now() - opened;
    expect(idleFor).toBeGreaterThanOrEqual(700);
    expect(idleFor).toBeLessThan(20_000);
  });

  test("a TCP connection that never speaks HTTP/2 is closed after the idle timeout too", async () => {
    expect(await silentConnectionLifetime(link.fleetAddress)).toBeGreaterThanOrEqual(700);
  });

  test("a gRPC client reconnects after its idle connection was closed, and a held long-poll is not idle", async () => {
    let nodeId = 0n;
    for (let i = 0; i < 3; i++) {
      const { response } = await unaryCall(fleet.createNode.bind(fleet), { pingInterval: 30 });
      nodeId = response.node!.nodeId;
      expect(nodeId).not.toBe(0n);
      await sleep(1500); // longer than the idle timeout: the next call needs a new connection
    }
    // Held for the 2 s it asks for (under --fleet-long-poll-ms, default 30 s), more than twice the idle timeout.
    const started = Date.now();
    const optIn = new grpc.Metadata();
    optIn.set(LONG_POLL_HEADER, "2000");
    const pulled = await unaryCall(
      fleet.pullTaskIns.bind(fleet),
      { node: { nodeId, anonymous: false }, taskIds: [] },
      optIn,
    );
    expect(pulled.response.taskInsList).toEqual([]);
    expect(Date.now() - started).toBeGreaterThanOrEqual(1500);
  });

  test("a request body sent at 1 byte/s is cancelled; the SuperLink logs it and keeps serving", async () => {
    const session = await rawSession(link.fleetAddress);
    const stream = grpcStream(session, "/flwr.proto.Fleet/Ping");
    const body = frame(Buffer.alloc(100, 0));
    let sent = 0;
    const drip = setInterval(() => {
      if (sent < body.length && !stream.closed) stream.write(body.subarray(sent, ++sent));
    }, 1000);
    const started = Date.now();
    try {
      const rstCode = await new Promise<number>((resolve) => stream.once("close", () => resolve(stream.rstCode ?? -1)));
      expect(rstCode).toBe(http2.constants.NGHTTP2_CANCEL);
      expect(Date.now() - started).toBeGreaterThanOrEqual(1400);
      expect(Date.now() - started).toBeLessThan(20_000);
    } finally {
      clearInterval(drip);
      session.destroy();
    }
    const warning = await link.proc.waitFor(isEvent("grpc.slow-request-cancelled"), "slow-request warning");
    expect(warning["server"]).toBe("Fleet API");
    expect(Number(warning["receivedBytes"])).toBeLessThan(10);
    await unaryCall(fleet.createNode.bind(fleet), { pingInterval: 30 });
  });

  test("a request that arrives slowly but above the minimum rate runs past the timeout and is answered", async () => {
    const session = await rawSession(link.fleetAddress);
    try {
      const stream = grpcStream(session, "/flwr.proto.Fleet/CreateNode");
      // CreateNodeRequest{ping_interval = 30} padded with an unknown bytes field to 12 KiB,
      // sent at ~4 KiB/s: 3 s, twice the timeout, at four times the minimum rate.
      const padding = Buffer.alloc(12 * 1024 - 12, 0x61);
      const lengthVarint = Buffer.from([0x80 | (padding.length & 0x7f), padding.length >> 7]);
      const message = Buffer.concat([Buffer.from([0x09]), Buffer.alloc(8), Buffer.from([0x7a]), lengthVarint, padding]);
      message.writeDoubleLE(30, 1);
      const body = frame(message);
      const status = new Promise<string>((resolve) => {
        stream.on("trailers", (trailers: Record<string, unknown>) => resolve(String(trailers["grpc-status"])));
        stream.on("response", (headers) => {
          if (headers["grpc-status"] !== undefined) resolve(String(headers["grpc-status"]));
        });
        stream.on("close", () => resolve(`closed (rst ${stream.rstCode})`));
      });
      stream.resume();
      const step = 1024;
      for (let sent = 0; sent < body.length; sent += step) {
        stream.write(body.subarray(sent, Math.min(body.length, sent + step)));
        await sleep(250);
      }
      stream.end();
      expect(await status).toBe(String(grpc.status.OK));
    } finally {
      session.destroy();
    }
  });
});

describe("errors and logs (TLS SuperLink on a SQLite file)", () => {
  let fx: Fixtures;
  let link: RunningSuperLink;
  let driver: DriverClient;
  let fleet: FleetClient;
  let raw: { driver: grpc.Client; fleet: grpc.Client };
  let dbDir: string;
  let dbPath: string;

  beforeAll(async () => {
    fx = generateFixtures(1);
    dbDir = mkdtempSync(join(tmpdir(), "flwr-ts-hygiene-"));
    dbPath = join(dbDir, "secret-location", "state.db");
    mkdirSync(join(dbDir, "secret-location"));
    link = await startSuperLink([
      ...superlinkArgs(fx, { auth: false, database: dbPath }),
      "--metrics-address",
      "127.0.0.1:0",
      "--max-connection-idle-ms",
      "2000",
    ]);
    const ca = fx.read(fx.caCert);
    driver = track(driverClient(link.driverAddress, ca));
    fleet = track(fleetClient(link.fleetAddress, ca));
    raw = {
      driver: track(new grpc.Client(link.driverAddress, clientCredentials(ca), TLS_CHANNEL_OPTIONS)),
      fleet: track(new grpc.Client(link.fleetAddress, clientCredentials(ca), TLS_CHANNEL_OPTIONS)),
    };
  }, 120_000);
  afterAll(() => {
    fx?.cleanup();
    if (dbDir) rmSync(dbDir, { recursive: true, force: true });
  });

  const createRun = async (): Promise<bigint> =>
    (await unaryCall(driver.createRun.bind(driver), { fabId: "", fabVersion: "", overrideConfig: new Map() })).response
      .runId;

  test("with TLS, a TCP connection that never starts the handshake is closed after the idle timeout (not Node's 120 s)", async () => {
    expect(await silentConnectionLifetime(link.fleetAddress)).toBeGreaterThanOrEqual(1900);
    const warning = await link.proc.waitFor(isEvent("grpc.silent-connections-closed"), "silent-connection warning");
    expect(warning["server"]).toBe("Fleet API");
  });

  test("a 16 MiB bad task id: short INVALID_ARGUMENT and log line, and the channel keeps working", async () => {
    const huge = "x".repeat(16 * 1024 * 1024);
    const started = Date.now();
    const status = await statusOf(
      unaryCall(driver.pullTaskRes.bind(driver), { node: undefined, taskIds: [huge, "also-bad"] }),
    );
    const elapsedMs = Date.now() - started;
    expect(status.code).toBe(grpc.status.INVALID_ARGUMENT);
    expect(status.details).toContain("task_ids are not UUIDs");
    expect(status.details).toContain("truncated");
    expect(status.details.length).toBeLessThan(400);
    const line = await link.proc.waitFor(
      (r) => String(r["msg"]).startsWith("Driver.PullTaskRes failed"),
      "warning line",
    );
    expect(JSON.stringify(line).length).toBeLessThan(1000);
    expect(link.proc.stderr.every((l) => l.length < 10_000)).toBe(true);
    // Same channel, next call.
    const runId = await createRun();
    expect(runId).not.toBe(0n);
    // Generous: the 16 MiB request itself has to cross TLS on a loaded 2-core machine.
    expect(elapsedMs).toBeLessThan(15_000);
  });

  test("a \\n in a group_id cannot forge a line in the text log", async () => {
    const apps = writeApps();
    let node: ReturnType<typeof spawnBin> | undefined;
    try {
      node = spawnBin("node-forge", "flower-client-app", [
        "client:app",
        "--dir",
        apps.dir,
        "--superlink",
        link.fleetAddress,
        "--root-certificates",
        fx.caCert,
      ]);
      const ready = await node.waitFor(isEvent("supernode.ready"), "readiness line");
      const nodeId = BigInt(String(ready["nodeId"]));
      const runId = await createRun();
      const forged = "1]\n12:00:00.000 ERROR [superlink] FORGED: all nodes compromised\r\u001b[2K";
      await unaryCall(driver.pushTaskIns.bind(driver), {
        taskInsList: [validTaskIns(runId, nodeId, { groupId: forged })],
      });
      const logged = await node.waitFor((r) => String(r["msg"]).includes("ROUND 1]"), "round line");
      expect(String(logged["msg"])).toContain(forged); // the JSON line keeps the text, escaped by JSON
      const jsonLines = node.stderr.filter((l) => l.startsWith("{"));
      const text = jsonLines.map((l) => formatLogLine(l)).join("");
      const textLines = text.split("\n").filter((l) => l !== "");
      expect(textLines).toHaveLength(jsonLines.length);
      expect(textLines.some((l) => l.startsWith("12:00:00.000 ERROR"))).toBe(false);
      expect(text).not.toMatch(/[\r\u001b]/);
      expect(text).toContain("ROUND 1]\\n12:00:00.000 ERROR [superlink] FORGED");
    } finally {
      if (node?.alive()) {
        node.proc.kill("SIGKILL");
        await node.exited;
      }
      apps.cleanup();
    }
  }, 90_000);

  describe("wire data that Python's protobuf rejects gets INVALID_ARGUMENT", () => {
    const send = (client: grpc.Client, method: string, body: Buffer): Promise<grpc.ServiceError | null> =>
      new Promise((resolve) =>
        client.makeUnaryRequest(
          method,
          (b: Buffer) => b,
          (b: Buffer) => b,
          body,
          (err) => resolve(err),
        ),
      );
    const cases: Array<[string, "driver" | "fleet", string, number[]]> = [
      ["field number 0 (varint)", "fleet", "/flwr.proto.Fleet/Ping", [0x00, 0x00]],
      ["field number 0 (length-delimited)", "driver", "/flwr.proto.Driver/GetNodes", [0x02, 0x00]],
      ["a stray END_GROUP tag", "fleet", "/flwr.proto.Fleet/CreateNode", [0x0c, 0x09, 0, 0, 0, 0, 0, 0, 0x3e, 0x40]],
      ["an END_GROUP closing another field's group", "fleet", "/flwr.proto.Fleet/Ping", [0x1b, 0x24]],
      ["invalid UTF-8 in a string field", "driver", "/flwr.proto.Driver/PullTaskRes", [0x12, 0x02, 0xff, 0xfe]],
      ["invalid UTF-8 in a map key", "driver", "/flwr.proto.Driver/CreateRun", [0x1a, 0x04, 0x0a, 0x02, 0xc3, 0x28]],
      ["a field running past its submessage", "driver", "/flwr.proto.Driver/PullTaskRes", [0x0a, 0x01, 0x08, 0x05]],
    ];
    test.each(cases)("%s", async (_name, api, method, bytes) => {
      const err = await send(raw[api], method, Buffer.from(bytes));
      expect(err?.code).toBe(grpc.status.INVALID_ARGUMENT);
      expect(err?.details).toMatch(/^Malformed \w+ request: /);
    });

    test("a well-formed request on the same channel still succeeds, and unknown fields are still skipped", async () => {
      // PingRequest{node{node_id=1}, ping_interval=30.0, unknown field 15 = varint 1}: Python
      // accepts unknown fields (a zero ping_interval would be refused on its own merits).
      const pingBytes = [0x0a, 0x02, 0x08, 0x02, 0x11, 0, 0, 0, 0, 0, 0, 0x3e, 0x40, 0x78, 0x01];
      const err = await send(raw.fleet, "/flwr.proto.Fleet/Ping", Buffer.from(pingBytes));
      expect(err).toBeNull();
      await unaryCall(fleet.createNode.bind(fleet), { pingInterval: 30 });
    });

    test("the metrics count them as INVALID_ARGUMENT", async () => {
      const ready = await link.proc.waitFor(isEvent("superlink.ready"), "readiness line");
      const text = await (await fetch(`http://${String(ready["metricsAddress"])}/metrics`)).text();
      expect(text).toContain('flwr_superlink_rpcs_total{service="Fleet",method="Ping",code="INVALID_ARGUMENT"} 2');
      expect(text).toContain(
        'flwr_superlink_rpcs_total{service="Driver",method="PullTaskRes",code="INVALID_ARGUMENT"}',
      );
    });
  });
});

describe("file descriptor exhaustion", () => {
  test("is logged once, not once per refused connection, and the SuperLink survives it", async () => {
    // bash sets the descriptor limit (Node cannot); the SuperLink needs ~30 of them to start.
    const bin = join(REPO_ROOT, "bin", "flower-superlink");
    const proc = spawn(
      "bash",
      [
        "-c",
        `ulimit -n 64 && exec "${process.execPath}" "${bin}" --insecure --driver-api-address 127.0.0.1:0 --fleet-api-address 127.0.0.1:0`,
      ],
      {
        stdio: ["ignore", "ignore", "pipe"],
        detached: true,
        // Samples every 250 ms instead of 5 s, so "several samples later" is 2 s, not 11.
        env: { ...process.env, FLWR_TEST_DESCRIPTOR_CHECK_MS: "250" },
      },
    );
    const logs: LogRecord[] = [];
    createInterface({ input: proc.stderr }).on("line", (line) => {
      try {
        logs.push(JSON.parse(line) as LogRecord);
      } catch {
        /* not a log line */
      }
    });
    const sockets: net.Socket[] = [];
    try {
      const deadline = Date.now() + 30_000;
      const waitLog = async (event: string): Promise<LogRecord> => {
        for (;;) {
          const hit = logs.find(isEvent(event));
          if (hit) return hit;
          if (Date.now() > deadline || proc.exitCode !== null)
            throw new Error(`no ${event}: ${JSON.stringify(logs.slice(-5))}`);
          await sleep(100);
        }
      };
      const ready = await waitLog("superlink.ready");
      const fleetAddress = String(ready["fleetAddress"]);
      const port = Number(fleetAddress.slice(fleetAddress.lastIndexOf(":") + 1));
      // Far more connections than descriptors, kept open (each sends the HTTP/2 preface).
      for (let i = 0; i < 120; i++) {
        const socket = net.connect(port, "127.0.0.1", () => socket.write("PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"));
        socket.on("error", () => {});
        socket.resume();
        sockets.push(socket);
        if (i % 20 === 19) await sleep(50);
      }
      const exhausted = await waitLog("grpc.descriptors-exhausted");
      expect(exhausted["level"]).toBe(50);
      expect(String(exhausted["msg"])).toMatch(/Out of file descriptors.*ulimit -n/);
      // More refused attempts, several samples later: still one line.
      for (let i = 0; i < 40; i++) {
        const socket = net.connect(port, "127.0.0.1");
        socket.on("error", () => {});
        sockets.push(socket);
      }
      await sleep(2_000);
      expect(logs.filter(isEvent("grpc.descriptors-exhausted"))).toHaveLength(1);
      for (const socket of sockets) socket.destroy();
      await waitLog("grpc.descriptors-recovered");
      expect(proc.exitCode).toBeNull();
    } finally {
      for (const socket of sockets) socket.destroy();
      if (proc.pid !== undefined && proc.exitCode === null) process.kill(-proc.pid, "SIGKILL");
    }
  }, 60_000);
});

// The SQLite file is locked exclusively by its SuperLink, so no other process can make its writes
// fail: here the state fails under a running SuperLink (its connection closed underneath it).
test("a state failure answers INTERNAL with an incident id and no path; the path is in the log", async () => {
  const fx = generateFixtures(1);
  const dbDir = mkdtempSync(join(tmpdir(), "flwr-ts-hygiene-"));
  const dbPath = join(dbDir, "secret-location", "state.db");
  mkdirSync(join(dbDir, "secret-location"));
  const { logger, lines } = memoryLogger();
  const link = await startSuperLinkInProcess(
    {
      driverApiAddress: "127.0.0.1:0",
      fleetApiAddress: "127.0.0.1:0",
      database: dbPath,
      tls: readServerTlsFiles({ caCertFile: fx.caCert, certFile: fx.serverCert, keyFile: fx.serverKey }),
    },
    { logger },
  );
  const driver = driverClient(link.driverAddress, fx.read(fx.caCert));
  try {
    await link.state.close();
    const status = await statusOf(
      unaryCall(driver.createRun.bind(driver), { fabId: "", fabVersion: "", overrideConfig: new Map() }),
    );
    expect(status.code).toBe(grpc.status.INTERNAL);
    expect(status.details).not.toContain("secret-location");
    expect(status.details).not.toContain(dbDir);
    expect(status.details).not.toMatch(/sqlite|not open/i);
    const incident = /incident ([0-9a-f]+)/.exec(status.details)?.[1];
    expect(incident).toBeDefined();
    const line = lines.find((r) => r["incidentId"] === incident);
    expect(line?.["level"]).toBe(50);
    expect(String(line?.["msg"])).toContain("secret-location");
  } finally {
    driver.close();
    await link.close(500).catch(() => undefined);
    fx.cleanup();
    rmSync(dbDir, { recursive: true, force: true });
  }
}, 60_000);
