/**
 * The grpc-bidi FlowerService (startServer's Join) against a raw gRPC client over TLS on an
 * ephemeral port: registration per stream, strict alternation, timeouts, misbehaving clients,
 * the client limit, and ending streams.
 */
import * as grpc from "@grpc/grpc-js";
import { createServer } from "node:net";
import { NumPyClient } from "../../src/client/numpy-client";
import { type FlowerServiceHandle, createFlowerService } from "../../src/compat/grpc-bidi-server";
import { startClient } from "../../src/compat/start-client";
import type { NDArrays } from "../../src/core/records/types";
import { ClientMessage, Code, FlowerServiceClient, type ServerMessage } from "../../src/proto/flwr/proto/transport";
import { SimpleClientManager } from "../../src/server/client-manager";
import { type RunningGrpcServer, startGrpcServer } from "../../src/transport/grpc-server";
import { serverCredentials } from "../../src/transport/tls";
import { type Fixtures, generateFixtures } from "../helpers/fixtures";
import { f32, memoryLogger, vectorOf, vectorParameters } from "../server/helpers";

let fx: Fixtures;
beforeAll(() => {
  fx = generateFixtures(1);
});
afterAll(() => fx?.cleanup());

interface Harness {
  manager: SimpleClientManager;
  service: FlowerServiceHandle;
  server: RunningGrpcServer;
  client: FlowerServiceClient;
}

let h: Harness;
async function harness(maxClients?: number): Promise<Harness> {
  const manager = new SimpleClientManager();
  const service = createFlowerService({
    clientManager: manager,
    logger: memoryLogger("warn").logger,
    ...(maxClients ? { maxClients } : {}),
  });
  const server = await startGrpcServer(
    "127.0.0.1:0",
    serverCredentials({ caCert: fx.read(fx.caCert), cert: fx.read(fx.serverCert), key: fx.read(fx.serverKey) }),
    [service.registration],
  );
  const client = new FlowerServiceClient(`localhost:${server.port}`, grpc.credentials.createSsl(fx.read(fx.caCert)));
  return { manager, service, server, client };
}
afterEach(async () => {
  h?.client.close();
  await h?.server.close(0);
});

/** A raw Join stream recording what the server sends and how the call ends. */
function join(client: FlowerServiceClient): {
  call: grpc.ClientDuplexStream<ClientMessage, ServerMessage>;
  received: ServerMessage[];
  next: () => Promise<ServerMessage>;
  ended: Promise<{ code: number; details: string }>;
} {
  const call = client.join();
  const received: ServerMessage[] = [];
  let wake: (() => void) | undefined;
  call.on("data", (m: ServerMessage) => {
    received.push(m);
    wake?.();
  });
  const ended = new Promise<{ code: number; details: string }>((resolve) => {
    call.on("status", (s: grpc.StatusObject) => resolve({ code: s.code, details: s.details }));
    call.on("error", () => undefined);
  });
  let taken = 0;
  const next = async (): Promise<ServerMessage> => {
    while (received.length <= taken) await new Promise<void>((r) => (wake = r));
    return received[taken++]!;
  };
  return { call, received, next, ended };
}

async function registered(manager: SimpleClientManager, n: number): Promise<void> {
  expect(await manager.waitFor(n, 10_000)).toBe(true);
}

const fitIns = {
  parameters: { tensors: [Uint8Array.from([1, 2])], tensorType: "numpy.ndarray" },
  config: { round: 1n },
};

describe("FlowerService.Join", () => {
  it("registers one client per stream with a random 32-hex cid; fit goes out and its reply comes back; half-close ends it", async () => {
    h = await harness();
    const a = join(h.client);
    const b = join(h.client);
    await registered(h.manager, 2);
    const cids = [...h.manager.all().keys()];
    expect(cids).toHaveLength(2);
    for (const cid of cids) expect(cid).toMatch(/^[0-9a-f]{32}$/);

    const [proxyA] = h.service.clients();
    const fit = proxyA!.fit(fitIns);
    // Whichever stream got it answers.
    const got = await Promise.race([a.next().then((m) => [a, m] as const), b.next().then((m) => [b, m] as const)]);
    const [stream, msg] = got;
    expect(msg.fitIns?.config.get("round")).toMatchObject({ sint64: 1n });
    stream.call.write(
      ClientMessage.fromPartial({
        fitRes: {
          status: { code: Code.OK, message: "Success" },
          parameters: { tensors: [Buffer.from([3])], tensorType: "numpy.ndarray" },
          numExamples: 7n,
        },
      }),
    );
    await expect(fit).resolves.toMatchObject({ numExamples: 7, parameters: { tensors: [Uint8Array.from([3])] } });

    stream.call.end();
    await expect(stream.ended).resolves.toMatchObject({ code: grpc.status.OK });
    expect(h.manager.numAvailable()).toBe(1);
    h.service.endAll();
    const other = stream === a ? b : a;
    await expect(other.ended).resolves.toMatchObject({ code: grpc.status.OK });
    expect(h.manager.numAvailable()).toBe(0);
  });

  it("a ClientMessage nobody asked for ends the stream with INVALID_ARGUMENT and unregisters the client", async () => {
    h = await harness();
    const a = join(h.client);
    await registered(h.manager, 1);
    a.call.write(ClientMessage.fromPartial({ disconnectRes: {} }));
    await expect(a.ended).resolves.toMatchObject({
      code: grpc.status.INVALID_ARGUMENT,
      details: expect.stringContaining("no instruction is waiting"),
    });
    expect(h.manager.numAvailable()).toBe(0);
  });

  it("a reply of the wrong kind fails the call and ends the stream with INVALID_ARGUMENT", async () => {
    h = await harness();
    const a = join(h.client);
    await registered(h.manager, 1);
    const evaluate = h.service.clients()[0]!.evaluate(fitIns);
    await a.next();
    a.call.write(ClientMessage.fromPartial({ fitRes: { status: { code: Code.OK, message: "" } } }));
    await expect(evaluate).rejects.toMatchObject({ code: "FLWR_MALFORMED_MESSAGE" });
    await expect(a.ended).resolves.toMatchObject({
      code: grpc.status.INVALID_ARGUMENT,
      details: "Expected a ClientMessage with evaluateRes, got fitRes",
    });
    expect(h.manager.numAvailable()).toBe(0);
  });

  it("no reply within the timeout: TimeoutError, and the client sees DEADLINE_EXCEEDED with Flower's text", async () => {
    h = await harness();
    const a = join(h.client);
    await registered(h.manager, 1);
    const fit = h.service.clients()[0]!.fit(fitIns, { timeoutSeconds: 0.2 });
    await expect(fit).rejects.toMatchObject({ code: "FLWR_TIMEOUT", message: "Timeout of 0.2sec was exceeded." });
    await expect(a.ended).resolves.toEqual({
      code: grpc.status.DEADLINE_EXCEEDED,
      details: "Timeout of 0.2sec was exceeded.",
    });
    expect(h.manager.numAvailable()).toBe(0);
  });

  it("a client that cancels while an instruction waits: the call fails with ConnectionError", async () => {
    h = await harness();
    const a = join(h.client);
    await registered(h.manager, 1);
    const reconnect = h.service.clients()[0]!.reconnect(undefined);
    const msg = await a.next();
    expect(msg.reconnectIns?.seconds).toBe(0n);
    a.call.cancel();
    await expect(reconnect).rejects.toMatchObject({ code: "FLWR_CONNECTION_FAILED" });
    for (let i = 0; i < 100 && h.manager.numAvailable() > 0; i++) await new Promise((r) => setTimeout(r, 20));
    expect(h.manager.numAvailable()).toBe(0);
  });

  it("beyond maxClients open streams, Join is refused with RESOURCE_EXHAUSTED; the first stream keeps working", async () => {
    h = await harness(1);
    const a = join(h.client);
    await registered(h.manager, 1);
    const b = join(h.client);
    await expect(b.ended).resolves.toMatchObject({ code: grpc.status.RESOURCE_EXHAUSTED });
    expect(h.manager.numAvailable()).toBe(1);
    const reconnect = h.service.clients()[0]!.reconnect(3);
    expect((await a.next()).reconnectIns?.seconds).toBe(3n);
    a.call.write(ClientMessage.fromPartial({ disconnectRes: { reason: 1 } }));
    await expect(reconnect).resolves.toEqual({ reason: "RECONNECT" });
  });
});

/** fit adds 1 to every weight (or throws when asked to); 2 examples. */
class PlusOne extends NumPyClient {
  constructor(private readonly failFit = false) {
    super();
  }
  override getParameters(): NDArrays {
    return [f32([0])];
  }
  override fit(parameters: NDArrays): [NDArrays, number, Record<string, number>] {
    if (this.failFit) throw new RangeError("fit failed on purpose");
    return [[f32(Array.from(parameters[0]!.data as Float32Array, (x) => x + 1))], 2, {}];
  }
}

/** Polls until `cond` holds (bounded). */
async function until(cond: () => boolean, timeoutMs = 15_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!cond()) {
    if (Date.now() > deadline) throw new Error("condition not met in time");
    await new Promise((r) => setTimeout(r, 20));
  }
}

describe("startClient (grpc-bidi) against the FlowerService", () => {
  it("ReconnectIns with 1 s: answers RECONNECT, leaves, joins again under a new cid; with 0 s it resolves", async () => {
    h = await harness();
    const run = startClient(`localhost:${h.server.port}`, {
      client: new PlusOne(),
      rootCertificates: fx.read(fx.caCert),
      logger: memoryLogger("warn").logger,
    });
    await registered(h.manager, 1);
    const first = h.service.clients()[0]!;
    await expect(first.reconnect(1)).resolves.toEqual({ reason: "RECONNECT" });
    await until(() => h.service.clients().length === 1 && h.service.clients()[0]!.cid !== first.cid);
    const second = h.service.clients()[0]!;
    const res = await second.fit({ parameters: vectorParameters([1.5, 2]), config: {} });
    expect(vectorOf(res.parameters)).toEqual([2.5, 3]);
    expect(res.numExamples).toBe(2);
    await expect(second.reconnect(undefined)).resolves.toEqual({ reason: "RECONNECT" });
    await expect(run).resolves.toBeUndefined();
    await until(() => h.manager.numAvailable() === 0);
  });

  it("the client code throws: startClient rejects with that error (Flower re-raises) and the server's call fails", async () => {
    h = await harness();
    const run = startClient(`localhost:${h.server.port}`, {
      client: new PlusOne(true),
      rootCertificates: fx.read(fx.caCert),
      logger: memoryLogger("fatal").logger,
    });
    run.catch(() => undefined);
    await registered(h.manager, 1);
    const fit = h.service.clients()[0]!.fit({ parameters: vectorParameters([1]), config: {} });
    await expect(run).rejects.toThrow(new RangeError("fit failed on purpose"));
    await expect(fit).rejects.toMatchObject({ code: "FLWR_CONNECTION_FAILED" });
    await until(() => h.manager.numAvailable() === 0);
  });
});

test("startClient (grpc-bidi) resolves when aborted while the server is not up yet", async () => {
  const port = await new Promise<number>((resolve) => {
    const probe = createServer().listen(0, "127.0.0.1", () => {
      const { port: p } = probe.address() as { port: number };
      probe.close(() => resolve(p));
    });
  });
  const controller = new AbortController();
  const log = memoryLogger("debug");
  const running = startClient(`127.0.0.1:${port}`, {
    client: new PlusOne(),
    insecure: true,
    logger: log.logger,
    signal: controller.signal,
  });
  await until(() => log.lines.some((l) => l["event"] === "client.join-retry"));
  controller.abort();
  await expect(running).resolves.toBeUndefined();
});

test("startClient (grpc-bidi) carries a model above gRPC's 4 MB default both ways (Flower's 512 MB limit)", async () => {
  h = await harness();
  const run = startClient(`localhost:${h.server.port}`, {
    client: new PlusOne(),
    rootCertificates: fx.read(fx.caCert),
    logger: memoryLogger("warn").logger,
  });
  await registered(h.manager, 1);
  const weights = new Array<number>(3_000_000).fill(0.5); // 12 MB of float32
  const res = await h.service.clients()[0]!.fit({ parameters: vectorParameters(weights), config: {} });
  const out = vectorOf(res.parameters);
  expect(out).toHaveLength(3_000_000);
  expect(out[0]).toBe(1.5);
  expect(out[2_999_999]).toBe(1.5);
  await h.service.clients()[0]!.reconnect(undefined);
  await expect(run).resolves.toBeUndefined();
});
