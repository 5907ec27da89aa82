/**
 * The SuperLink as an object: `startSuperLink(config, deps)` opens the state, starts the Driver
 * API and the Fleet API (same TLS credentials on both, optional node authentication on the
 * Fleet API), and returns a handle with the bound ports and a graceful `close()`.
 * Signals, argv and exit codes belong to src/cli/superlink.ts.
 */
import type * as grpc from "@grpc/grpc-js";
import type { KeyObject } from "node:crypto";
import type { Logger } from "../core/logger";
import { AuthenticationError, FlwrError, InvalidConfigError, errorMessage } from "../core/errors";
import { DEFAULT_LONG_POLL_MS, IN_MEMORY_DATABASE } from "../core/constants";
import { parseAddress } from "../core/address";
import { DriverService } from "../proto/flwr/proto/driver";
import { FleetService } from "../proto/flwr/proto/fleet";
import type { State } from "../state/state";
import { createState } from "../state/state-factory";
import { type RunningGrpcServer, type ServiceRegistration, startGrpcServer } from "../transport/server";
import { type ServerTlsMaterial, serverCredentials } from "../transport/tls";
import { DRIVER_TASK_MESSAGES, FLEET_TASK_MESSAGES, withChunkedSerializers } from "../transport/chunked-serializers";
import { Allowlist } from "../auth/allowlist";
import { loadKeyPairFiles } from "../auth/keys";
import { FleetAuthenticator, withFleetAuthentication } from "../auth/server-auth";
import { createDriverServicer } from "./driver/driver-servicer";
import { createFleetServicer } from "./fleet/fleet-servicer";
import { LongPollHub } from "./long-poll";
import { type MetricsServer, SuperLinkMetrics, startMetricsServer } from "./metrics";

/** Node authentication files (spec §4.1). All three are required to enable it. */
export interface SuperLinkAuthConfig {
  /** CSV of allowed SuperNode OpenSSH public keys. */
  allowlistCsv: string;
  /** The SuperLink's OpenSSH (or PEM) EC private key. */
  superlinkPrivateKey: string;
  /** The SuperLink's public key; must belong to the private key. */
  superlinkPublicKey: string;
  /** Reload the CSV when the file changes (default true). */
  watchAllowlist?: boolean;
}

export interface SuperLinkConfig {
  /** HOST:PORT for the Driver API (port 0 = any free port). */
  driverApiAddress: string;
  /** HOST:PORT for the Fleet API (port 0 = any free port). */
  fleetApiAddress: string;
  /** ":flwr-in-memory-state:" or a SQLite file path. */
  database: string;
  /** TLS for both APIs; undefined = plaintext (--insecure). */
  tls?: ServerTlsMaterial;
  /** Node authentication on the Fleet API; requires `tls`. */
  auth?: SuperLinkAuthConfig;
  /** How long an empty pull may wait for work (default DEFAULT_LONG_POLL_MS; 0 = Flower behaviour). */
  longPollMs?: number;
  /** HOST:PORT for Prometheus metrics on GET /metrics; undefined = off. */
  metricsAddress?: string;
  /** Delivery lease in seconds (State `taskLeaseSeconds`); undefined = per-task default. */
  taskLeaseSeconds?: number;
  /** Test-only: extra grpc-js server options (e.g. a small max receive length). */
  grpcServerOptions?: grpc.ChannelOptions;
}

export interface SuperLinkHandle {
  /** HOST:PORT actually bound (port 0 resolved). */
  driverAddress: string;
  fleetAddress: string;
  driverPort: number;
  fleetPort: number;
  /** HOST:PORT of the metrics endpoint, when enabled. */
  metricsAddress?: string;
  state: State;
  metrics: SuperLinkMetrics;
  /** Pull calls currently held open waiting for work (long polling). */
  readonly waitingPulls: number;
  /**
   * Re-reads the allowlist CSV now (as SIGHUP does). Nodes whose keys were removed are deleted
   * and their waiting pulls end with UNAUTHENTICATED. A bad file throws InvalidKeyFileError and
   * keeps the previous list. Throws InvalidConfigError when authentication is off.
   */
  reloadAllowlist(): { added: string[]; removed: string[] };
  /**
   * Ends waiting pulls, stops both servers (in-flight calls get up to `graceMs`, then are
   * cancelled), stops the metrics endpoint and the allowlist watcher, and closes the state.
   * Idempotent.
   */
  close(graceMs?: number): Promise<void>;
}

/** How long a SQLite SuperLink keeps delivered TaskIns/TaskRes pairs before deleting them. */
export const DELIVERED_PAIR_GRACE_MS = 10_000;

// Task-carrying responses may hold large records: written as chunks, the payload not copied.
const FAST_DRIVER_SERVICE = withChunkedSerializers(DriverService, DRIVER_TASK_MESSAGES);

interface AuthMaterial {
  allowlist: Allowlist;
  serverPrivateKey: KeyObject;
  serverPublicKeyPem: string;
}

function checkConfig(config: SuperLinkConfig): number {
  parseAddress(config.driverApiAddress);
  parseAddress(config.fleetApiAddress);
  if (config.metricsAddress !== undefined) parseAddress(config.metricsAddress);
  if (config.auth !== undefined && config.tls === undefined) {
    throw new InvalidConfigError(
      "Authentication requires secure connections. Please provide certificate paths to " +
        "`--ssl-certfile`, `--ssl-keyfile`, and `--ssl-ca-certfile` and try again.",
    );
  }
  if (config.database === "") throw new InvalidConfigError("--database must not be empty");
  const longPollMs = config.longPollMs ?? DEFAULT_LONG_POLL_MS;
  if (!Number.isFinite(longPollMs) || longPollMs < 0) {
    throw new InvalidConfigError(`Long-poll time must be a non-negative number of milliseconds, got ${longPollMs}`);
  }
  return longPollMs;
}

function loadAuthMaterial(auth: SuperLinkAuthConfig, logger: Logger): AuthMaterial {
  // Throws InvalidKeyFileError naming the file for an unreadable key or a mismatched pair.
  const { privateKey: serverPrivateKey, publicKeyPem: serverPublicKeyPem } = loadKeyPairFiles(
    auth.superlinkPrivateKey,
    auth.superlinkPublicKey,
  );
  const allowlist = Allowlist.fromCsvFile(auth.allowlistCsv, {
    watch: auth.watchAllowlist ?? true,
    logger,
  });
  return { allowlist, serverPrivateKey, serverPublicKeyPem };
}

/** Starts the SuperLink. Rejects with a typed error (bad config/files, port in use, bad DB). */
export async function startSuperLink(config: SuperLinkConfig, deps: { logger: Logger }): Promise<SuperLinkHandle> {
  const { logger } = deps;
  const longPollMs = checkConfig(config);

  // Keys first: a bad key file must not leave a half-opened database behind.
  const auth = config.auth !== undefined ? loadAuthMaterial(config.auth, logger) : undefined;
  let state: State;
  try {
    state = createState(config.database, {
      logger: logger.child({ module: "state" }),
      ...(config.taskLeaseSeconds !== undefined ? { taskLeaseSeconds: config.taskLeaseSeconds } : {}),
    });
  } catch (err) {
    auth?.allowlist.close();
    throw err;
  }

  const hub = new LongPollHub(state);
  const metrics = new SuperLinkMetrics();
  const servers: RunningGrpcServer[] = [];
  let metricsServer: MetricsServer | undefined;
  let authenticator: FleetAuthenticator | undefined;

  const onAllowlistChange = (change: { added: string[]; removed: string[] }): void => {
    logger.info(
      { event: "superlink.allowlist-changed", added: change.added.length, removed: change.removed.length },
      `Allowlist changed: ${change.added.length} key(s) added, ${change.removed.length} removed`,
    );
    for (const pem of change.removed) revokeKey(pem);
  };
  const revokeKey = (pem: string): void => {
    try {
      const nodeId = state.getNodeId(Buffer.from(pem, "utf8"));
      if (nodeId === undefined) return;
      // Deleting the node makes its pending TaskIns answer the ServerApp with NODE_UNAVAILABLE.
      try {
        state.deleteNode(nodeId);
      } catch (err) {
        if (!(FlwrError.isFlwrError(err) && err.code === "FLWR_NOT_FOUND")) throw err;
      }
      metrics.nodeGone(nodeId);
      const ended = hub.revokeNode(nodeId, new AuthenticationError(`Node ${nodeId} was removed from the allowlist`));
      logger.info(
        { event: "superlink.node-revoked", nodeId: nodeId.toString(), pullsEnded: ended },
        `Node ${nodeId} removed from the allowlist: deleted, ${ended} waiting pull(s) ended`,
      );
    } catch (err) {
      logger.error({ err }, `Could not revoke a node removed from the allowlist: ${errorMessage(err)}`);
    }
  };

  let closing: Promise<void> | undefined;
  const close = (graceMs = 0): Promise<void> => {
    closing ??= (async () => {
      hub.close();
      auth?.allowlist.off("change", onAllowlistChange);
      await Promise.all(servers.map((s) => s.close(graceMs)));
      await metricsServer?.close();
      authenticator?.close();
      auth?.allowlist.close();
      try {
        state.close();
      } catch (err) {
        logger.error({ err }, `Closing the state failed: ${errorMessage(err)}`);
      }
    })();
    return closing;
  };

  try {
    const credentials = serverCredentials(config.tls);
    const serverOptions: grpc.ChannelOptions = {
      ...config.grpcServerOptions,
      interceptors: [metrics.interceptor()],
    };
    const driverImpl = createDriverServicer({
      state,
      logger: logger.child({ api: "driver" }),
      hub,
      longPollMs,
      // Durable state keeps delivered pairs a little while, so a crash right after a PullTaskRes
      // answer does not lose its results (docs/delivery.md); in memory they would die anyway.
      deleteGraceMs: config.database === IN_MEMORY_DATABASE ? 0 : DELIVERED_PAIR_GRACE_MS,
    });
    const driver = await startGrpcServer(
      config.driverApiAddress,
      credentials,
      [{ definition: FAST_DRIVER_SERVICE, implementation: driverImpl }],
      serverOptions,
    );
    servers.push(driver);

    const fleetLogger = logger.child({ api: "fleet" });
    const fleetImpl = createFleetServicer({ state, logger: fleetLogger, hub, longPollMs });
    let fleetService: ServiceRegistration = { definition: FleetService, implementation: fleetImpl };
    if (auth !== undefined) {
      authenticator = new FleetAuthenticator({
        allowlist: auth.allowlist,
        serverPrivateKey: auth.serverPrivateKey,
        serverPublicKeyPem: auth.serverPublicKeyPem,
        state,
        logger: fleetLogger,
      });
      fleetService = withFleetAuthentication(fleetImpl, authenticator);
      auth.allowlist.on("change", onAllowlistChange);
      logger.info(
        { event: "superlink.auth-enabled", knownKeys: auth.allowlist.size },
        `Client authentication enabled with ${auth.allowlist.size} known public keys`,
      );
    }
    fleetService = { ...fleetService, definition: withChunkedSerializers(fleetService.definition, FLEET_TASK_MESSAGES) };
    const fleet = await startGrpcServer(config.fleetApiAddress, credentials, [fleetService], serverOptions);
    servers.push(fleet);

    if (config.metricsAddress !== undefined) {
      metricsServer = await startMetricsServer(
        config.metricsAddress,
        () =>
          metrics.render({
            taskInsStored: state.numTaskIns(),
            taskResStored: state.numTaskRes(),
            longPollsWaiting: hub.waiting,
          }),
        logger,
      );
    }

    logger.info(
      {
        event: "superlink.ready",
        driverAddress: driver.address,
        fleetAddress: fleet.address,
        ...(metricsServer ? { metricsAddress: metricsServer.address } : {}),
        tls: config.tls !== undefined,
        auth: auth !== undefined,
        database: config.database,
        longPollMs,
      },
      `SuperLink ready: Driver API on ${driver.address}, Fleet API (grpc-rere) on ${fleet.address}`,
    );

    return {
      driverAddress: driver.address,
      fleetAddress: fleet.address,
      driverPort: driver.port,
      fleetPort: fleet.port,
      ...(metricsServer ? { metricsAddress: metricsServer.address } : {}),
      state,
      metrics,
      get waitingPulls() {
        return hub.waiting;
      },
      reloadAllowlist() {
        if (auth === undefined) {
          throw new InvalidConfigError("Authentication is not enabled: there is no allowlist to reload");
        }
        return auth.allowlist.reload();
      },
      close,
    };
  } catch (err) {
    await close(0);
    throw err;
  }
}
