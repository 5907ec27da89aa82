/**
 * startServer / startClient end to end: a real in-process server with TLS from generated
 * certificates on 127.0.0.1 ephemeral ports, real clients over gRPC with both transports
 * (grpc-bidi, the default, and grpc-rere), NumPyClients with tiny float32 arrays. Also: both
 * transports in one run, round timeout on grpc-bidi, untrusted CA, plaintext client, wrong
 * transport for the server, bad certificate buffers, failure after binding, abort.
 */
import { createServer } from "node:net";
import { startClient, startNumpyClient, startServer } from "../../src/compat";
import type { ClientTransport, ServerReadyInfo } from "../../src/compat";
import { startSuperLink } from "../../src/superlink/superlink";
import { NumPyClient } from "../../src/client/numpy-client";
import type { Config } from "../../src/core/records/legacy-types";
import type { NDArrays } from "../../src/core/records/types";
import { FedAvg } from "../../src/server/strategy/fedavg";
import type { History } from "../../src/server/history";
import { type Fixtures, generateFixtures } from "../helpers/fixtures";
import { f32, memoryLogger } from "../server/helpers";

let fx: Fixtures;
let otherFx: Fixtures;
let certificates: [Buffer, Buffer, Buffer];

beforeAll(() => {
  fx = generateFixtures(1);
  otherFx = generateFixtures(1);
  certificates = [fx.read(fx.caCert), fx.read(fx.serverCert), fx.read(fx.serverKey)];
});
afterAll(() => {
  fx?.cleanup();
  otherFx?.cleanup();
});

/** Adds `offset` to every weight in fit; evaluate's loss is weights[0] + offset. Records what it received. */
class OffsetClient extends NumPyClient {
  readonly fitReceived: number[][] = [];
  readonly evaluateReceived: number[][] = [];

  constructor(
    private readonly offset: number,
    private readonly examples: number,
  ) {
    super();
  }

  override getParameters(): NDArrays {
    return [f32([1, 2])];
  }

  override fit(parameters: NDArrays, _config: Config): [NDArrays, number, Record<string, number>] {
    const w = Array.from(parameters[0]!.data as Float32Array);
    this.fitReceived.push(w);
    return [[f32(w.map((x) => x + this.offset))], this.examples, {}];
  }

  override evaluate(parameters: NDArrays): [number, number, Record<string, number>] {
    const w = Array.from(parameters[0]!.data as Float32Array);
    this.evaluateReceived.push(w);
    return [w[0]! + this.offset, this.examples, {}];
  }
}

/** A promise with its resolve function, for the onReady callbacks. */
function deferred<T>(): { promise: Promise<T>; resolve: (value: T) => void } {
  let resolve!: (value: T) => void;
  const promise = new Promise<T>((r) => (resolve = r));
  return { promise, resolve };
}

/** True when nothing listens on 127.0.0.1:port (we can bind it ourselves). */
function portIsFree(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const probe = createServer();
    probe.once("error", () => resolve(false));
    probe.listen(port, "127.0.0.1", () => probe.close(() => resolve(true)));
  });
}

/** A port that was free a moment ago. */
function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const probe = createServer();
    probe.once("error", reject);
    probe.listen(0, "127.0.0.1", () => {
      const { port } = probe.address() as { port: number };
      probe.close(() => resolve(port));
    });
  });
}

/** Starts a TLS server on port 0 for a test; resolves once it listens. */
async function serverForTest(opts: Parameters<typeof startServer>[0] = {}): Promise<{
  run: Promise<History>;
  port: number;
  log: ReturnType<typeof memoryLogger>;
}> {
  const ready = deferred<ServerReadyInfo>();
  const log = memoryLogger("info");
  const run = startServer({
    serverAddress: "127.0.0.1:0",
    certificates,
    logger: log.logger,
    onReady: ready.resolve,
    ...opts,
  });
  run.catch(() => undefined);
  const { fleetPort } = await Promise.race([
    ready.promise,
    run.then(() => Promise.reject(new Error("server ended early"))),
  ]);
  return { run, port: fleetPort, log };
}

/** Round 1: both start from [1, 2]; FedAvg weights 1:3 -> +1.75. Round 2: another +1.75. */
function expectTwoRoundsOfOffsets(clients: OffsetClient[]): void {
  for (const c of clients) {
    expect(c.fitReceived).toEqual([
      [1, 2],
      [2.75, 3.75],
    ]);
    expect(c.evaluateReceived).toEqual([
      [2.75, 3.75],
      [4.5, 5.5],
    ]);
  }
}

describe.each<[ClientTransport]>([["grpc-bidi"], ["grpc-rere"]])(
  "startServer + startClient (%s) over TLS",
  (transport) => {
    it("runs 2 rounds with two NumPyClients: History has the distributed losses, parameters are FedAvg of the updates", async () => {
      const summary: string[] = [];
      const {
        run: server,
        port,
        log: serverLog,
      } = await serverForTest({
        config: { numRounds: 2 },
        strategy: new FedAvg({ minAvailableClients: 2, minFitClients: 2, minEvaluateClients: 2 }),
        out: (line) => summary.push(line),
      });

      const a = new OffsetClient(1, 1);
      const b = new OffsetClient(2, 3);
      const ca = fx.read(fx.caCert);
      const clientA = startClient(`127.0.0.1:${port}`, {
        client: a,
        rootCertificates: ca,
        transport,
        logger: memoryLogger("warn").logger,
      });
      const clientB = startClient(`localhost:${port}`, {
        client: b,
        rootCertificates: ca,
        transport,
        logger: memoryLogger("warn").logger,
      });

      const history = await server;
      // The final disconnect lets both clients return, as start_client did after start_server.
      await expect(Promise.all([clientA, clientB])).resolves.toEqual([undefined, undefined]);

      expectTwoRoundsOfOffsets([a, b]);
      // Weighted loss: w0 + (1*1 + 3*2) / 4.
      expect(history.lossesDistributed).toEqual([
        [1, 4.5],
        [2, 6.25],
      ]);
      expect(summary).toContain("[SUMMARY]");
      expect(summary).toContain("\tHistory (loss, distributed):");
      const disconnected = serverLog.lines.filter((l) => l["event"] === "server.clients-disconnected");
      expect(disconnected).toEqual([
        transport === "grpc-bidi"
          ? expect.objectContaining({ transport, clients: 2, acknowledged: 2 })
          : expect.objectContaining({ transport, nodes: 2, acknowledged: 2 }),
      ]);
      // grpc-rere nodes unregistered before the server stopped.
      expect(serverLog.lines.some((l) => l["event"] === "server.delete-node-missing")).toBe(false);
      expect(await portIsFree(port)).toBe(true);
    });

    it("startClient with a CA that did not sign the server's certificate rejects with InvalidConfigError", async () => {
      const abort = new AbortController();
      const { run: server, port } = await serverForTest({ signal: abort.signal });
      try {
        const attempt = startClient(`127.0.0.1:${port}`, {
          client: new OffsetClient(1, 1),
          rootCertificates: otherFx.read(otherFx.caCert),
          transport,
          logger: memoryLogger("warn").logger,
        });
        const peer = transport === "grpc-bidi" ? "server" : "SuperLink";
        await expect(attempt).rejects.toMatchObject({
          name: "InvalidConfigError",
          code: "FLWR_INVALID_CONFIG",
          message: expect.stringMatching(
            new RegExp(`TLS certificate verification of the ${peer} at 127\\.0\\.0\\.1:\\d+ failed`),
          ),
        });
      } finally {
        abort.abort(new Error("test over"));
        await expect(server).rejects.toThrow("test over");
      }
    });

    it("a plaintext client against the TLS server is refused (maxRetries bounds the attempts)", async () => {
      const abort = new AbortController();
      const { run: server, port } = await serverForTest({ signal: abort.signal });
      try {
        // No rootCertificates: plaintext by default, as Flower's start_client.
        const attempt = startClient(`127.0.0.1:${port}`, {
          client: new OffsetClient(1, 1),
          maxRetries: 1,
          transport,
          logger: memoryLogger("error").logger,
        });
        const call = transport === "grpc-bidi" ? "Join" : "CreateNode";
        await expect(attempt).rejects.toMatchObject({
          name: "ConnectionError",
          code: "FLWR_CONNECTION_FAILED",
          message: expect.stringMatching(new RegExp(`Giving up on ${call} after 2 tries`)),
        });
      } finally {
        abort.abort(new Error("test over"));
        await expect(server).rejects.toThrow("test over");
      }
    });
  },
);

describe("startServer with both transports and grpc-bidi specifics", () => {
  it("one grpc-bidi and one grpc-rere client train together in one run", async () => {
    const {
      run: server,
      port,
      log,
    } = await serverForTest({
      config: { numRounds: 2 },
      strategy: new FedAvg({ minAvailableClients: 2, minFitClients: 2, minEvaluateClients: 2 }),
    });
    const a = new OffsetClient(1, 1);
    const b = new OffsetClient(2, 3);
    const ca = fx.read(fx.caCert);
    const clients = [
      startNumpyClient(`127.0.0.1:${port}`, { client: a, rootCertificates: ca, logger: memoryLogger("warn").logger }),
      startClient(`127.0.0.1:${port}`, {
        client: b,
        rootCertificates: ca,
        transport: "grpc-rere",
        logger: memoryLogger("warn").logger,
      }),
    ];
    const history = await server;
    await expect(Promise.all(clients)).resolves.toEqual([undefined, undefined]);
    expectTwoRoundsOfOffsets([a, b]);
    expect(history.lossesDistributed).toEqual([
      [1, 4.5],
      [2, 6.25],
    ]);
    const disconnected = log.lines.filter((l) => l["event"] === "server.clients-disconnected");
    expect(disconnected).toEqual(
      expect.arrayContaining([
        expect.objectContaining({ transport: "grpc-bidi", clients: 1, acknowledged: 1 }),
        expect.objectContaining({ transport: "grpc-rere", nodes: 1, acknowledged: 1 }),
      ]),
    );
  });

  it("a grpc-bidi client slower than round_timeout is a failure; its stream ends with DEADLINE_EXCEEDED", async () => {
    class SlowFit extends NumPyClient {
      override getParameters(): NDArrays {
        return [f32([1, 2])];
      }
      override async fit(parameters: NDArrays): Promise<[NDArrays, number, Record<string, number>]> {
        await new Promise((r) => setTimeout(r, 10_000).unref());
        return [parameters, 1, {}];
      }
    }
    const abort = new AbortController();
    const {
      run: server,
      port,
      log,
    } = await serverForTest({
      config: { numRounds: 1, roundTimeout: 3 },
      strategy: new FedAvg({ minAvailableClients: 2, minFitClients: 2, minEvaluateClients: 2, acceptFailures: false }),
      signal: abort.signal,
    });
    const ca = fx.read(fx.caCert);
    const clientLog = memoryLogger("info");
    const clients = [
      startClient(`127.0.0.1:${port}`, {
        client: new OffsetClient(1, 1),
        rootCertificates: ca,
        logger: memoryLogger("warn").logger,
        signal: abort.signal,
      }),
      startClient(`127.0.0.1:${port}`, {
        client: new SlowFit(),
        rootCertificates: ca,
        logger: clientLog.logger,
        signal: abort.signal,
      }),
    ];
    try {
      // Round 1's fit: the slow client times out, so aggregation is refused (acceptFailures: false).
      while (!log.lines.some((l) => l["event"] === "serverapp.aggregate-fit"))
        await new Promise((r) => setTimeout(r, 20));
      expect(log.lines.find((l) => l["event"] === "serverapp.aggregate-fit")).toMatchObject({
        results: 1,
        failures: 1,
      });
      expect(log.lines.find((l) => l["event"] === "serverapp.client-failed")?.["msg"]).toMatch(
        /Timeout of 3sec was exceeded/,
      );
      // The slow client saw DEADLINE_EXCEEDED and joins again as a new client.
      while (!clientLog.lines.some((l) => l["event"] === "client.stream-broken"))
        await new Promise((r) => setTimeout(r, 20));
      expect(String(clientLog.lines.find((l) => l["event"] === "client.stream-broken")?.["err"])).toMatch(
        /DEADLINE_EXCEEDED/,
      );
    } finally {
      abort.abort(new Error("test over"));
      await server.catch(() => undefined);
      await Promise.all(clients);
    }
  });

  it("a grpc-bidi client started before the server joins once the server is up", async () => {
    const port = await freePort();
    const ca = fx.read(fx.caCert);
    const clientLog = memoryLogger("info");
    const early = new OffsetClient(1, 1);
    const clients = [
      startClient(`127.0.0.1:${port}`, { client: early, rootCertificates: ca, logger: clientLog.logger }),
    ];
    while (!clientLog.lines.some((l) => l["event"] === "client.join-retry"))
      await new Promise((r) => setTimeout(r, 20));
    const { run: server } = await serverForTest({
      serverAddress: `127.0.0.1:${port}`,
      config: { numRounds: 2 },
      strategy: new FedAvg({ minAvailableClients: 2, minFitClients: 2, minEvaluateClients: 2 }),
    });
    const late = new OffsetClient(2, 3);
    clients.push(
      startClient(`127.0.0.1:${port}`, { client: late, rootCertificates: ca, logger: memoryLogger("warn").logger }),
    );
    await server;
    await expect(Promise.all(clients)).resolves.toEqual([undefined, undefined]);
    expectTwoRoundsOfOffsets([early, late]);
  });

  it("a grpc-bidi client against a SuperLink's Fleet API (grpc-rere only) rejects with a hint", async () => {
    const link = await startSuperLink(
      { driverApiAddress: "127.0.0.1:0", fleetApiAddress: "127.0.0.1:0", database: ":flwr-in-memory-state:" },
      { logger: memoryLogger("warn").logger },
    );
    try {
      await expect(
        startClient(`127.0.0.1:${link.fleetPort}`, {
          client: new OffsetClient(1, 1),
          logger: memoryLogger("error").logger,
        }),
      ).rejects.toMatchObject({
        name: "InvalidConfigError",
        message: expect.stringMatching(/FlowerService\.Join.*transport: "grpc-rere"/s),
      });
    } finally {
      await link.close();
    }
  });

  it('transport "rest" and unknown transports are refused; authKeys need grpc-rere', async () => {
    const logger = memoryLogger("warn").logger;
    const client = new OffsetClient(1, 1);
    await expect(startClient("127.0.0.1:1", { client, transport: "rest", logger })).rejects.toMatchObject({
      name: "InvalidConfigError",
      message: expect.stringContaining('transport "rest"'),
    });
    await expect(
      startClient("127.0.0.1:1", { client, transport: "grpc" as ClientTransport, logger }),
    ).rejects.toMatchObject({
      name: "InvalidConfigError",
      message: expect.stringContaining("unknown transport"),
    });
    await expect(
      startClient("127.0.0.1:1", { client, authKeys: { privateKey: "a", publicKey: "b" }, logger }),
    ).rejects.toMatchObject({ name: "InvalidConfigError", message: expect.stringContaining("grpc-rere") });
    await expect(
      startNumpyClient("127.0.0.1:1", { client: {} as unknown as NumPyClient, logger }),
    ).rejects.toMatchObject({
      name: "InvalidConfigError",
    });
  });
});

describe("startServer: bad certificates and options", () => {
  it("rejects garbage certificate buffers with InvalidKeyFileError naming the element, and opens no port", async () => {
    const port = await freePort();
    const run = startServer({
      serverAddress: `127.0.0.1:${port}`,
      certificates: [Buffer.from("not a certificate"), certificates[1], certificates[2]],
      logger: memoryLogger("warn").logger,
    });
    await expect(run).rejects.toMatchObject({
      name: "InvalidKeyFileError",
      message: expect.stringContaining("certificates[0]"),
    });
    expect(await portIsFree(port)).toBe(true);

    const notAKey = startServer({
      serverAddress: `127.0.0.1:${port}`,
      certificates: [
        certificates[0],
        certificates[1],
        Buffer.from("-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n"),
      ],
      logger: memoryLogger("warn").logger,
    });
    await expect(notAKey).rejects.toMatchObject({
      name: "InvalidKeyFileError",
      message: expect.stringContaining("certificates[2]"),
    });
    expect(await portIsFree(port)).toBe(true);
  });

  it("rejects a key that does not belong to the certificate", async () => {
    const run = startServer({
      serverAddress: "127.0.0.1:0",
      certificates: [certificates[0], certificates[1], otherFx.read(otherFx.serverKey)],
      logger: memoryLogger("warn").logger,
    });
    await expect(run).rejects.toMatchObject({
      name: "InvalidKeyFileError",
      message: expect.stringMatching(/does not belong/),
    });
  });

  it("rejects malformed or conflicting security options with InvalidConfigError", async () => {
    const logger = memoryLogger("warn").logger;
    await expect(
      startServer({ certificates: ["a", "b", "c"] as unknown as [Buffer, Buffer, Buffer], logger }),
    ).rejects.toMatchObject({ name: "InvalidConfigError", message: expect.stringContaining("three Buffers") });
    await expect(startServer({ certificates, insecure: true, logger })).rejects.toMatchObject({
      name: "InvalidConfigError",
    });
    await expect(startServer({ insecure: false, logger })).rejects.toMatchObject({ name: "InvalidConfigError" });
    await expect(startServer({ config: { numRounds: -1 }, logger })).rejects.toMatchObject({
      name: "InvalidConfigError",
    });
    await expect(startServer({ serverAddress: "nonsense", logger })).rejects.toMatchObject({
      name: "InvalidConfigError",
    });
    await expect(startClient("127.0.0.1:1", { client: {}, logger })).rejects.toMatchObject({
      name: "InvalidConfigError",
      message: expect.stringContaining("`client`"),
    });
    await expect(
      startClient("127.0.0.1:1", {
        client: new OffsetClient(1, 1),
        insecure: true,
        rootCertificates: certificates[0],
        logger,
      }),
    ).rejects.toMatchObject({ name: "InvalidConfigError" });
  });

  it("a failure after the port was bound (onReady throws) closes everything and rethrows", async () => {
    let bound = 0;
    const run = startServer({
      serverAddress: "127.0.0.1:0",
      certificates,
      logger: memoryLogger("warn").logger,
      onReady: ({ fleetPort }) => {
        bound = fleetPort;
        throw new Error("onReady failed");
      },
    });
    await expect(run).rejects.toThrow("onReady failed");
    expect(bound).toBeGreaterThan(0);
    expect(await portIsFree(bound)).toBe(true);
  });
});

describe("abort", () => {
  it("one AbortSignal stops the waiting server (rejects with the reason) and both clients (resolve)", async () => {
    const abort = new AbortController();
    const ready = deferred<ServerReadyInfo>();
    const serverLog = memoryLogger("info");
    // Needs 3 clients: with 2 connected the server waits until aborted.
    const server = startServer({
      serverAddress: "127.0.0.1:0",
      config: { numRounds: 1 },
      strategy: new FedAvg({ minAvailableClients: 3, minFitClients: 3, minEvaluateClients: 3 }),
      certificates,
      logger: serverLog.logger,
      signal: abort.signal,
      onReady: ready.resolve,
    });
    server.catch(() => undefined);
    const { fleetPort } = await ready.promise;
    const ca = fx.read(fx.caCert);
    const registered = [deferred<bigint>(), deferred<bigint>()];
    const clients = registered.map((r, i) =>
      startClient(`127.0.0.1:${fleetPort}`, {
        client: new OffsetClient(i, 1),
        rootCertificates: ca,
        logger: memoryLogger("warn").logger,
        signal: abort.signal,
        onReady: ({ nodeId }) => r.resolve(nodeId),
      }),
    );
    // grpc-bidi clients have no node id (Flower's -1); onReady says the server took the stream.
    expect(await Promise.all(registered.map((r) => r.promise))).toEqual([-1n, -1n]);
    // Wait until the server has seen both nodes (it is then waiting for a third).
    while (!serverLog.lines.some((l) => l["event"] === "serverapp.waiting-for-clients")) {
      await new Promise((r) => setTimeout(r, 20));
    }

    const reason = new Error("stop requested");
    abort.abort(reason);
    await expect(server).rejects.toBe(reason);
    await expect(Promise.all(clients)).resolves.toEqual([undefined, undefined]);
    expect(await portIsFree(fleetPort)).toBe(true);
    expect(serverLog.lines.some((l) => l["event"] === "server.stopped")).toBe(true);
  });

  it("an already aborted signal starts nothing", async () => {
    const abort = new AbortController();
    abort.abort(new Error("already"));
    await expect(
      startServer({ serverAddress: "127.0.0.1:0", signal: abort.signal, logger: memoryLogger().logger }),
    ).rejects.toThrow("already");
    await expect(
      startClient("127.0.0.1:1", { client: new OffsetClient(1, 1), signal: abort.signal }),
    ).resolves.toBeUndefined();
  });
});
