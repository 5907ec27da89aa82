/**
 * `startServer`: the legacy one-call server of the older Flower guide (Flower 1.10's
 * `flwr.server.start_server`). It starts a SuperLink in this process, creates one run, and
 * runs the legacy strategy loop (rounds of fit/evaluate, default FedAvg) against the
 * SuperNodes that connect, then returns the History.
 *
 * Differences from Flower, on purpose:
 *  - the Fleet API speaks grpc-rere (Flower 1.10's SuperNode protocol); Flower's start_server
 *    serves the deprecated grpc-bidi `FlowerService`, which flwr-ts does not implement, so
 *    Python clients must be `flower-client-app` / `start_client(..., transport="grpc-rere")`;
 *  - the SuperLink's Driver API cannot be switched off: it is bound to 127.0.0.1 on an
 *    ephemeral port (same TLS as the Fleet API) and left unused; the loop reaches the State
 *    directly through an InProcessDriver;
 *  - at the end, every online node is sent a `reconnect` message with 0 seconds — the grpc-rere
 *    form of Flower's `disconnect_all_clients` — so `startClient` (and Flower 1.10 SuperNodes)
 *    shut down as start_client did after start_server's last round;
 *  - bad certificates, a bad address or config reject with typed errors instead of exiting.
 */
import { IN_MEMORY_DATABASE, MessageType } from "../core/constants";
import { InvalidConfigError, StateError, errorMessage } from "../core/errors";
import { type Logger, createLogger } from "../core/logger";
import { RecordSet } from "../core/records/types";
import { SimpleClientManager, driverNodeDiscovery } from "../server/client-manager";
import type { History } from "../server/history";
import { Server, describeServerConfig, resolveServerConfig, runFl } from "../server/server";
import type { Strategy } from "../server/strategy/strategy";
import { type SuperLinkHandle, startSuperLink } from "../superlink/superlink";
import { type ServerTlsMaterial, checkServerTlsMaterial } from "../transport/tls";
import { InProcessDriver } from "./in-process-driver";

/** Flower's `ADDRESS_FLEET_API_GRPC_BIDI`, the default of start_server. */
export const DEFAULT_SERVER_ADDRESS = "[::]:8080";
/** Where the (unused) Driver API is bound: loopback only, any free port. */
export const INTERNAL_DRIVER_API_ADDRESS = "127.0.0.1:0";
/** Longest wait for nodes to acknowledge the final disconnect when no round timeout is set. */
export const DISCONNECT_TIMEOUT_MS = 10_000;
/** Grace for in-flight calls when the server stops (Flower: `grpc_server.stop(grace=1)`). */
export const STOP_GRACE_MS = 1_000;

/** Flower's `ServerConfig`, with Flower's names. */
export interface StartServerConfig {
  /** Number of rounds. Default 1. */
  numRounds?: number;
  /** Per-client wait for an answer in each round, in seconds. Default: no limit. */
  roundTimeout?: number;
}

/** What `onReady` is told once the server accepts connections. */
export interface ServerReadyInfo {
  /** HOST:PORT the Fleet API is bound to (port 0 resolved). */
  fleetAddress: string;
  fleetPort: number;
  /** The run the strategy loop works in. */
  runId: bigint;
}

export interface StartServerOptions {
  /** HOST:PORT for the Fleet API (grpc-rere). Default "[::]:8080", as Flower. Port 0 = any free port. */
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
  /** Send every online node a final `reconnect` (0 s) so it shuts down. Default true. */
  disconnectClients?: boolean;
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
  const superlink: SuperLinkHandle = await startSuperLink(
    {
      driverApiAddress: INTERNAL_DRIVER_API_ADDRESS,
      fleetApiAddress: serverAddress,
      database: IN_MEMORY_DATABASE,
      ...(tls !== undefined ? { tls } : {}),
    },
    { logger: logger.child({ module: "superlink" }) },
  );
  let driver: InProcessDriver | undefined;
  try {
    signal?.throwIfAborted();
    const runId = superlink.state.createRun("", "", new Map());
    if (runId === 0n) throw new StateError("startServer: the SuperLink could not create a run");
    driver = new InProcessDriver(superlink.state, runId, { logger });
    logger.info(
      { event: "server.ready", fleetAddress: superlink.fleetAddress, runId: runId.toString(), tls: tls !== undefined },
      `Flower ECE: gRPC server running (${config.numRounds} rounds), SSL is ${tls !== undefined ? "enabled" : "disabled"}` +
        ` (Fleet API grpc-rere on ${superlink.fleetAddress})`,
    );
    options.onReady?.({ fleetAddress: superlink.fleetAddress, fleetPort: superlink.fleetPort, runId });

    const clientManager = new SimpleClientManager({
      discover: driverNodeDiscovery(driver, { logger }),
      logger,
      ...(signal ? { signal } : {}),
    });
    const server = new Server({ clientManager, ...(options.strategy ? { strategy: options.strategy } : {}), logger });
    const out =
      options.out ??
      ((line: string): void => {
        if (line.startsWith("\t")) logger.info(line);
      });
    const { history } = await runFl(server, config, { logger, out, ...(signal ? { signal } : {}) });

    if (options.disconnectClients ?? true) await disconnectAll(driver, config.roundTimeoutSeconds, logger, signal);
    return history;
  } finally {
    driver?.close();
    await superlink.close(STOP_GRACE_MS);
    logger.info({ event: "server.stopped" }, "Flower server stopped");
  }
}

/**
 * Flower's `disconnect_all_clients` over grpc-rere: a `reconnect` message with
 * `configs["config"]["seconds"] = 0` to every online node, then a bounded wait for the replies
 * (each node answers before it unregisters). Best effort: failures are logged.
 */
async function disconnectAll(
  driver: InProcessDriver,
  roundTimeoutSeconds: number | undefined,
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
    const timeoutMs = roundTimeoutSeconds !== undefined ? roundTimeoutSeconds * 1000 : DISCONNECT_TIMEOUT_MS;
    const replies = await driver.sendAndReceive(messages, { timeoutMs, ...(signal ? { signal } : {}) });
    logger.info(
      { event: "server.clients-disconnected", nodes: nodeIds.length, acknowledged: replies.length },
      `Disconnected ${replies.length} of ${nodeIds.length} client(s)`,
    );
  } catch (err) {
    signal?.throwIfAborted();
    logger.warn({ event: "server.disconnect-failed", err }, `Disconnecting the clients failed: ${errorMessage(err)}`);
  }
}
