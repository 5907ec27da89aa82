/**
 * startServer / startClient end to end: a real in-process SuperLink with TLS from generated
 * certificates on 127.0.0.1 ephemeral ports, real SuperNodes over gRPC, NumPyClients with tiny
 * float32 arrays. Also: untrusted CA, bad certificate buffers, failure after binding, abort.
 */
import { createServer } from "node:net";
import { startClient, startServer } from "../../src/compat";
import type { ServerReadyInfo } from "../../src/compat";
import { NumPyClient } from "../../src/client/numpy-client";
import type { Config } from "../../src/core/records/legacy-types";
import type { NDArrays } from "../../src/core/records/types";
import { FedAvg } from "../../src/server/strategy/fedavg";
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

  override fit(parameters: NDArrays, config: Config): [NDArrays, number, Record<string, number>] {
    void config;
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

describe("startServer + startClient over TLS", () => {
  it("runs 2 rounds with two NumPyClients: History has the distributed losses, parameters are FedAvg of the updates", async () => {
    const ready = deferred<ServerReadyInfo>();
    const summary: string[] = [];
    const serverLog = memoryLogger("info");
    const server = startServer({
      serverAddress: "127.0.0.1:0",
      config: { numRounds: 2 },
      strategy: new FedAvg({ minAvailableClients: 2, minFitClients: 2, minEvaluateClients: 2 }),
      certificates,
      logger: serverLog.logger,
      onReady: ready.resolve,
      out: (line) => summary.push(line),
    });
    const { fleetPort } = await Promise.race([ready.promise, server.then(() => Promise.reject(new Error("server ended early")))]);

    const a = new OffsetClient(1, 1);
    const b = new OffsetClient(2, 3);
    const ca = fx.read(fx.caCert);
    const clientA = startClient(`127.0.0.1:${fleetPort}`, { client: a, rootCertificates: ca, logger: memoryLogger("warn").logger });
    const clientB = startClient(`localhost:${fleetPort}`, { client: b, rootCertificates: ca, logger: memoryLogger("warn").logger });

    const history = await server;
    // The final reconnect(0) lets both clients return, as start_client did after start_server.
    await expect(Promise.all([clientA, clientB])).resolves.toEqual([undefined, undefined]);

    // Round 1: both start from [1, 2]; FedAvg weights 1:3 -> +1.75. Round 2: another +1.75.
    for (const c of [a, b]) {
      expect(c.fitReceived).toEqual([
        [1, 2],
        [2.75, 3.75],
      ]);
      expect(c.evaluateReceived).toEqual([
        [2.75, 3.75],
        [4.5, 5.5],
      ]);
    }
    // Weighted loss: w0 + (1*1 + 3*2) / 4.
    expect(history.lossesDistributed).toEqual([
      [1, 4.5],
      [2, 6.25],
    ]);
    expect(summary).toContain("[SUMMARY]");
    expect(summary).toContain("\tHistory (loss, distributed):");
    const events = serverLog.lines.map((l) => l["event"]);
    expect(events).toContain("server.clients-disconnected");
    expect(serverLog.lines.find((l) => l["event"] === "server.clients-disconnected")).toMatchObject({ nodes: 2, acknowledged: 2 });
    expect(await portIsFree(fleetPort)).toBe(true);
  });

  it("startClient with a CA that did not sign the server's certificate rejects with InvalidConfigError", async () => {
    const ready = deferred<ServerReadyInfo>();
    const abort = new AbortController();
    const server = startServer({
      serverAddress: "127.0.0.1:0",
      certificates,
      logger: memoryLogger("warn").logger,
      signal: abort.signal,
      onReady: ready.resolve,
    });
    server.catch(() => undefined);
    try {
      const { fleetPort } = await ready.promise;
      const attempt = startClient(`127.0.0.1:${fleetPort}`, {
        client: new OffsetClient(1, 1),
        rootCertificates: otherFx.read(otherFx.caCert),
        logger: memoryLogger("warn").logger,
      });
      await expect(attempt).rejects.toMatchObject({
        name: "InvalidConfigError",
        code: "FLWR_INVALID_CONFIG",
        message: expect.stringMatching(/TLS certificate verification of the SuperLink at 127\.0\.0\.1:\d+ failed/),
      });
    } finally {
      abort.abort(new Error("test over"));
      await expect(server).rejects.toThrow("test over");
    }
  });

  it("a plaintext client against the TLS server is refused (maxRetries bounds the attempts)", async () => {
    const ready = deferred<ServerReadyInfo>();
    const abort = new AbortController();
    const server = startServer({
      serverAddress: "127.0.0.1:0",
      certificates,
      logger: memoryLogger("warn").logger,
      signal: abort.signal,
      onReady: ready.resolve,
    });
    server.catch(() => undefined);
    try {
      const { fleetPort } = await ready.promise;
      // No rootCertificates: plaintext by default, as Flower's start_client.
      const attempt = startClient(`127.0.0.1:${fleetPort}`, {
        client: new OffsetClient(1, 1),
        maxRetries: 1,
        logger: memoryLogger("error").logger,
      });
      await expect(attempt).rejects.toMatchObject({
        name: "ConnectionError",
        code: "FLWR_CONNECTION_FAILED",
        message: expect.stringMatching(/Giving up on CreateNode after 2 tries/),
      });
    } finally {
      abort.abort(new Error("test over"));
      await expect(server).rejects.toThrow("test over");
    }
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
    await expect(run).rejects.toMatchObject({ name: "InvalidKeyFileError", message: expect.stringContaining("certificates[0]") });
    expect(await portIsFree(port)).toBe(true);

    const notAKey = startServer({
      serverAddress: `127.0.0.1:${port}`,
      certificates: [certificates[0], certificates[1], Buffer.from("-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n")],
      logger: memoryLogger("warn").logger,
    });
    await expect(notAKey).rejects.toMatchObject({ name: "InvalidKeyFileError", message: expect.stringContaining("certificates[2]") });
    expect(await portIsFree(port)).toBe(true);
  });

  it("rejects a key that does not belong to the certificate", async () => {
    const run = startServer({
      serverAddress: "127.0.0.1:0",
      certificates: [certificates[0], certificates[1], otherFx.read(otherFx.serverKey)],
      logger: memoryLogger("warn").logger,
    });
    await expect(run).rejects.toMatchObject({ name: "InvalidKeyFileError", message: expect.stringMatching(/does not belong/) });
  });

  it("rejects malformed or conflicting security options with InvalidConfigError", async () => {
    const logger = memoryLogger("warn").logger;
    await expect(
      startServer({ certificates: ["a", "b", "c"] as unknown as [Buffer, Buffer, Buffer], logger }),
    ).rejects.toMatchObject({ name: "InvalidConfigError", message: expect.stringContaining("three Buffers") });
    await expect(startServer({ certificates, insecure: true, logger })).rejects.toMatchObject({ name: "InvalidConfigError" });
    await expect(startServer({ insecure: false, logger })).rejects.toMatchObject({ name: "InvalidConfigError" });
    await expect(startServer({ config: { numRounds: -1 }, logger })).rejects.toMatchObject({ name: "InvalidConfigError" });
    await expect(startServer({ serverAddress: "nonsense", logger })).rejects.toMatchObject({ name: "InvalidConfigError" });
    await expect(
      startClient("127.0.0.1:1", { client: {} as NumPyClient, logger }),
    ).rejects.toMatchObject({ name: "InvalidConfigError", message: expect.stringContaining("`client`") });
    await expect(
      startClient("127.0.0.1:1", { client: new OffsetClient(1, 1), insecure: true, rootCertificates: certificates[0], logger }),
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
    const nodeIds = await Promise.all(registered.map((r) => r.promise));
    expect(nodeIds[0]).not.toBe(nodeIds[1]);
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
    await expect(startServer({ serverAddress: "127.0.0.1:0", signal: abort.signal, logger: memoryLogger().logger })).rejects.toThrow(
      "already",
    );
    await expect(startClient("127.0.0.1:1", { client: new OffsetClient(1, 1), signal: abort.signal })).resolves.toBeUndefined();
  });
});
