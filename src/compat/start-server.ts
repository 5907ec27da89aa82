/**
 * `startServer`: the legacy one-call server of the older Flower guide (Flower 1.10's
 * `flwr.server.start_server`). It serves Flower's grpc-bidi `FlowerService` (what Flower 1.10's
 * `start_client` / `start_numpy_client` use by default) and, on the same port, the grpc-rere
 * Fleet API (what `flower-client-app` and `start_client(..., transport="grpc-rere")` use), then
 * runs the legacy strategy loop (rounds of fit/evaluate, default FedAvg) over the clients of
 * both transports and returns the History.
 *
 * Differences from Flower, on purpose:
 *  - Flower 1.10's start_server serves grpc-bidi only; the grpc-rere Fleet API here comes from an
 *    in-process SuperLink (in-memory state, one run). Its Driver API cannot be switched off: it
 *    is bound to 127.0.0.1 on an ephemeral port (same TLS) and left unused; the loop reaches the
 *    State directly through an InProcessDriver;
 *  - at the end every client is disconnected (Flower's `disconnect_all_clients`): grpc-bidi
 *    clients get `ReconnectIns` (as Flower), grpc-rere nodes a `reconnect` message with 0
 *    seconds; the server then waits (bounded) for the grpc-rere nodes' DeleteNode before it
 *    stops, so that they can unregister and exit instead of retrying a server that is gone;
 *  - the waits for those acknowledgements are bounded (round timeout, or 10 s) where Flower waits
 *    without limit when no round timeout is set;
 *  - bad certificates, a bad address or config reject with typed errors instead of exiting.
 */
import { IN_MEMORY_DATABASE, MessageType } from "../core/constants";
import { FlwrError, InvalidConfigError, StateError, errorMessage } from "../core/errors";
import { type Logger, createLogger } from "../core/logger";
import { applyGrpcExtensionsOption } from "./grpc-extensions-option";
import { RecordSet } from "../core/records/types";
import { type ClientManager, SimpleClientManager, driverNodeDiscovery } from "../server/client-manager";
import type { History } from "../server/history";
import { Server, describeServerConfig, resolveServerConfig, runFl } from "../server/round-loop";
import type { Strategy } from "../server/strategy/strategy";
import { type SuperLinkHandle, startSuperLink } from "../superlink/superlink";
import { type ServerTlsMaterial, checkServerTlsMaterial } from "../transport/tls";
import { type FlowerServiceHandle, type GrpcBidiClientProxy, createFlowerService } from "./grpc-bidi-server";
import { InProcessDriver } from "./in-process-driver";

/** Flower's `ADDRESS_FLEET_API_GRPC_BIDI`, the default of start_server. */
export const DEFAULT_SERVER_ADDRESS = "[::]:8080";
/** Where the (unused) Driver API is bound: loopback only, any free port. */
const INTERNAL_DRIVER_API_ADDRESS = "127.0.0.1:0";
/** Longest wait for clients to acknowledge the final disconnect when no round timeout is set. */
const DISCONNECT_TIMEOUT_MS = 10_000;
/** After acknowledging the disconnect, grpc-rere nodes get this long to send DeleteNode. */
const DELETE_NODE_GRACE_MS = 5_000;
/** How often the node list is re-read while waiting for DeleteNode. */
const DELETE_NODE_POLL_MS = 50;
/** Grace for in-flight calls when the server stops (Flower: `grpc_server.stop(grace=1)`). */
const STOP_GRACE_MS = 1_000;

/** Flower's `ServerConfig`, with Flower's names. */
export interface StartServerConfig {
  /** Number of rounds. Default 1. */
  numRounds?: number;
  /** Per-client wait for an answer in each round, in seconds. Default: no limit. */
  roundTimeout?: number;
}

/** What `onReady` is told once the server accepts connections. */
export interface ServerReadyInfo {
  /** HOST:PORT the server is bound to (port 0 resolved): grpc-bidi and grpc-rere clients connect here. */
  fleetAddress: string;
  fleetPort: number;
  /** The run the strategy loop works in. */
  runId: bigint;
}

export interface StartServerOptions {
  /** HOST:PORT for both transports. Default "[::]:8080", as Flower. Port 0 = any free port. */
  serverAddress?: string;
  config?: StartServerConfig;
  /** Default: `new FedAvg()`. */
  strategy?: Strategy;
  /** PEM contents: CA certificate, server certificate, server private key (Flower's order). */
  certificates?: readonly [ca: Buffer, cert: Buffer, key: Buffer];
  /** Plaintext. Default: true exactly when no certificates are given (as Flower). */
  insecure?: boolean;
  /** Default: a text logger on stderr (Flower logs to the console). */
  logger?: Logger;
  /** Aborting stops the run and the server; startServer then rejects with the abort reason. */
  signal?: AbortSignal;
  /** Called once the Fleet API listens and the run exists (e.g. to start clients on port 0). */
  onReady?: (info: ServerReadyInfo) => void;
  /**
   * Receives the [SUMMARY] block line by line. Default: the History lines are logged at info
   * (runFl already logs the "[SUMMARY] Run finished ..." line).
   */
  out?: (line: string) => void;
  /**
   * Disconnect every client at the end (grpc-bidi: ReconnectIns; grpc-rere: a `reconnect`
   * message with 0 s) so that it shuts down, as Flower does. Default true. With false, grpc-bidi
   * streams still end (status OK) when the server stops; grpc-rere nodes keep retrying.
   */
  disconnectClients?: boolean;
  /**
   * Enable flwr-ts's grpc-js extensions in this process, process-wide, and log that it did.
   * Default true. The Fleet API needs the receive guard among them (docs/security.md): with
   * false, startServer rejects with InvalidConfigError unless the app called
   * `enableGrpcExtensions()` itself. docs/grpc-extensions.md.
   */
  grpcExtensions?: boolean;
}

function isBytes(value: unknown): value is Buffer {
  return value instanceof Uint8Array;
}

/** Checks the security options; returns the TLS material, or undefined for plaintext. */
function resolveTls(options: StartServerOptions): ServerTlsMaterial | undefined {
  const { certificates } = options;
  if (certificates === undefined) {
    if (options.insecure === false) {
      throw new InvalidConfigError(
        "startServer: `insecure: false` needs `certificates: [caCert, serverCert, serverKey]` (PEM Buffers)",
      );
    }
    return undefined;
  }
  if (options.insecure === true) {
    throw new InvalidConfigError("startServer: `insecure: true` and `certificates` cannot be used together");
  }
  if (!Array.isArray(certificates) || certificates.length !== 3 || !certificates.every(isBytes)) {
    throw new InvalidConfigError(
      "startServer: `certificates` must be three Buffers: [CA certificate, server certificate, server private key] (PEM)",
    );
  }
  const [caCert, cert, key] = certificates.map((b) => Buffer.from(b)) as [Buffer, Buffer, Buffer];
  const material: ServerTlsMaterial = { caCert, cert, key };
  // InvalidKeyFileError naming the element at fault, before any port is opened.
  checkServerTlsMaterial(material, {
    caCertFile: "certificates[0]",
    certFile: "certificates[1]",
    keyFile: "certificates[2]",
  });
  return material;
}

/**
 * Starts the server, runs `config.numRounds` rounds with the strategy, and resolves with the
 * History. Rejects with InvalidConfigError (options), InvalidKeyFileError (certificates),
 * ConnectionError (address in use), the abort reason (signal), or whatever the run fails with
 * (e.g. RoundFailedError). Everything it opened is closed before it settles.
 */
export async function startServer(options: StartServerOptions = {}): Promise<History> {
  const config = resolveServerConfig({
    ...(options.config?.numRounds !== undefined ? { numRounds: options.config.numRounds } : {}),
    ...(options.config?.roundTimeout !== undefined ? { roundTimeoutSeconds: options.config.roundTimeout } : {}),
  });
  const tls = resolveTls(options);
  const serverAddress = options.serverAddress ?? DEFAULT_SERVER_ADDRESS;
  const logger = options.logger ?? createLogger({ format: "text", base: { component: "flwr" } });
  const { signal } = options;
  signal?.throwIfAborted();

  logger.info(
    { event: "server.start", numRounds: config.numRounds, roundTimeoutSeconds: config.roundTimeoutSeconds ?? null },
    `Starting Flower server, config: ${describeServerConfig(config)}`,
  );
  applyGrpcExtensionsOption(options.grpcExtensions, "startServer", logger);
  // The grpc-bidi streams register with the client manager as they join; the grpc-rere nodes
  // are found through the Driver once the run exists.
  let discoverNodes: ((manager: ClientManager) => Promise<void>) | undefined;
  const clientManager = new SimpleClientManager({
    discover: async (manager) => discoverNodes?.(manager),
    logger,
    ...(signal ? { signal } : {}),
  });
  const flowerService = createFlowerService({ clientManager, logger });
  const superlink: SuperLinkHandle = await startSuperLink(
    {
      driverApiAddress: INTERNAL_DRIVER_API_ADDRESS,
      fleetApiAddress: serverAddress,
      database: IN_MEMORY_DATABASE,
      ...(tls !== undefined ? { tls } : {}),
      extraFleetServices: [flowerService.registration],
    },
    { logger: logger.child({ module: "superlink" }) },
  );
  let driver: InProcessDriver | undefined;
  try {
    signal?.throwIfAborted();
    const runId = await superlink.state.createRun("", "", new Map());
    if (runId === 0n) throw new StateError("startServer: the SuperLink could not create a run");
    driver = await InProcessDriver.open(superlink.state, runId, { logger });
    discoverNodes = driverNodeDiscovery(driver, { logger });
    logger.info(
      { event: "server.ready", fleetAddress: superlink.fleetAddress, runId: runId.toString(), tls: tls !== undefined },
      `Flower ECE: gRPC server running (${config.numRounds} rounds), SSL is ${tls !== undefined ? "enabled" : "disabled"}` +
        ` (grpc-bidi and grpc-rere on ${superlink.fleetAddress})`,
    );
    options.onReady?.({ fleetAddress: superlink.fleetAddress, fleetPort: superlink.fleetPort, runId });

    const server = new Server({ clientManager, ...(options.strategy ? { strategy: options.strategy } : {}), logger });
    const out =
      options.out ??
      ((line: string): void => {
        if (line.startsWith("\t")) logger.info(line);
      });
    const { history } = await runFl(server, config, { logger, out, ...(signal ? { signal } : {}) });

    if (options.disconnectClients ?? true) {
      await disconnectAll(flowerService, driver, config.roundTimeoutSeconds, logger, signal);
    }
    return history;
  } finally {
    // Streams still open see their end (Flower's clients then shut down) before the server stops.
    flowerService.endAll();
    driver?.close();
    await superlink.close(STOP_GRACE_MS);
    logger.info({ event: "server.stopped" }, "Flower server stopped");
  }
}

/**
 * Flower's `disconnect_all_clients`, over both transports at once. Best effort: failures are
 * logged. Each wait is bounded by the round timeout, or DISCONNECT_TIMEOUT_MS without one.
 */
async function disconnectAll(
  flowerService: FlowerServiceHandle,
  driver: InProcessDriver,
  roundTimeoutSeconds: number | undefined,
  logger: Logger,
  signal: AbortSignal | undefined,
): Promise<void> {
  const timeoutMs = roundTimeoutSeconds !== undefined ? roundTimeoutSeconds * 1000 : DISCONNECT_TIMEOUT_MS;
  await Promise.all([
    disconnectBidiClients(flowerService.clients(), timeoutMs, logger, signal),
    disconnectRereNodes(driver, timeoutMs, logger, signal),
  ]);
}

/** grpc-bidi: `ReconnectIns` (seconds unset) to every open stream; each answers DisconnectRes. */
async function disconnectBidiClients(
  clients: GrpcBidiClientProxy[],
  timeoutMs: number,
  logger: Logger,
  signal: AbortSignal | undefined,
): Promise<void> {
  if (clients.length === 0) return;
  const outcomes = await Promise.allSettled(
    clients.map((c) => c.reconnect(undefined, { timeoutSeconds: timeoutMs / 1000, ...(signal ? { signal } : {}) })),
  );
  signal?.throwIfAborted();
  // Flower's Python client closes its channel right after queueing DisconnectRes, so the reply
  // often never arrives: a stream that ends after ReconnectIns counts as having left.
  const acknowledged = outcomes.filter((o) => o.status === "fulfilled").length;
  let closed = 0;
  outcomes.forEach((o, i) => {
    if (o.status === "fulfilled") return;
    if (FlwrError.isFlwrError(o.reason) && o.reason.code === "FLWR_CONNECTION_FAILED") {
      closed += 1;
      return;
    }
    logger.warn(
      { event: "server.disconnect-failed", cid: clients[i]!.cid, err: o.reason },
      `Disconnecting grpc-bidi client ${clients[i]!.cid} failed: ${errorMessage(o.reason)}`,
    );
  });
  logger.info(
    { event: "server.clients-disconnected", transport: "grpc-bidi", clients: clients.length, acknowledged, closed },
    `Disconnected ${acknowledged + closed} of ${clients.length} grpc-bidi client(s)` +
      ` (${acknowledged} answered DisconnectRes, ${closed} closed the stream)`,
  );
}

/**
 * grpc-rere: a `reconnect` message with `configs["config"]["seconds"] = 0` to every online
 * node, a bounded wait for the replies, then up to DELETE_NODE_GRACE_MS for the nodes that
 * answered to unregister (DeleteNode). A Flower SuperNode sends DeleteNode right after its reply
 * and retries it without limit when the server is already gone.
 */
async function disconnectRereNodes(
  driver: InProcessDriver,
  timeoutMs: number,
  logger: Logger,
  signal: AbortSignal | undefined,
): Promise<void> {
  try {
    const nodeIds = await driver.getNodeIds();
    if (nodeIds.length === 0) return;
    const messages = nodeIds.map((nodeId) =>
      driver.createMessage(
        new RecordSet({ configsRecords: new Map([["config", { seconds: 0n }]]) }),
        MessageType.RECONNECT,
        nodeId,
        "",
      ),
    );
    const replies = await driver.sendAndReceive(messages, { timeoutMs, ...(signal ? { signal } : {}) });
    logger.info(
      {
        event: "server.clients-disconnected",
        transport: "grpc-rere",
        nodes: nodeIds.length,
        acknowledged: replies.length,
      },
      `Disconnected ${replies.length} of ${nodeIds.length} grpc-rere node(s)`,
    );
    const leaving = new Set(replies.map((r) => r.metadata.srcNodeId));
    const deadline = Date.now() + DELETE_NODE_GRACE_MS;
    let remaining = leaving.size;
    while (remaining > 0 && Date.now() < deadline) {
      await sleep(DELETE_NODE_POLL_MS, signal);
      const online = new Set(await driver.getNodeIds());
      remaining = [...leaving].filter((id) => online.has(id)).length;
    }
    if (remaining > 0) {
      logger.warn(
        { event: "server.delete-node-missing", nodes: remaining },
        `${remaining} grpc-rere node(s) did not unregister within ${DELETE_NODE_GRACE_MS / 1000} s`,
      );
    }
  } catch (err) {
    signal?.throwIfAborted();
    logger.warn({ event: "server.disconnect-failed", err }, `Disconnecting the clients failed: ${errorMessage(err)}`);
  }
}

function sleep(ms: number, signal: AbortSignal | undefined): Promise<void> {
  return new Promise((resolve, reject) => {
    const onAbort = (): void => {
      clearTimeout(timer);
      reject(signal!.reason);
    };
    const timer = setTimeout(() => {
      signal?.removeEventListener("abort", onAbort);
      resolve();
    }, ms);
    signal?.addEventListener("abort", onAbort, { once: true });
  });
}
