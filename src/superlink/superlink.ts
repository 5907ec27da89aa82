/**
 * The SuperLink as an object: `startSuperLink(config, deps)` opens the state, starts the Driver
 * API and the Fleet API (same TLS credentials on both, optional node authentication on the
 * Fleet API), and returns a handle with the bound ports and a graceful `close()`.
 * Signals, argv and exit codes belong to src/cli/flower-superlink.ts.
 */
import type * as grpc from "@grpc/grpc-js";
import type { Logger } from "../core/logger";
import { AuthenticationError, FlwrError, InvalidConfigError, errorMessage } from "../core/errors";
import { DEFAULT_FLEET_LONG_POLL_MS, DEFAULT_LONG_POLL_MS, IN_MEMORY_DATABASE } from "../core/constants";
import { parseAddress } from "../core/address";
import { DriverService } from "../proto/flwr/proto/driver";
import { FleetService } from "../proto/flwr/proto/fleet";
import type { State } from "../state/state";
import type { ContentSpillOptions } from "../state/content-spill";
import { createState, databaseForLogs } from "../state/state-factory";
import { type RunningGrpcServer, type ServiceRegistration, startGrpcServer } from "../transport/grpc-server";
import { type ServerTlsMaterial, serverCredentials } from "../transport/tls";
import type { ConnectionLimits } from "../transport/options";
import { watchDescriptors } from "../transport/descriptor-watch";
import { DRIVER_TASK_MESSAGES, FLEET_TASK_MESSAGES, withChunkedSerializers } from "../transport/chunked-serializers";
import type { Allowlist } from "../auth/allowlist";
import { type KeyPair, assertKeyPair } from "../auth/keys";
import { FleetAuthenticator, withFleetAuthentication } from "../auth/server-auth";
import { createDriverServicer } from "./driver/driver-servicer";
import { createFleetServicer } from "./fleet/fleet-servicer";
import { DEFAULT_MAX_TASK_INS_PER_PUSH } from "./driver/driver-handler";
import { withTaskInsCountLimit } from "./driver/push-count-limit";
import { createSharedContentServicer } from "./driver/shared-content";
import { DEFAULT_SEND_PACING, sendPacingInterceptor } from "./fleet/send-pacing";
import { reclaimAfterSendInterceptor } from "./memory-reclaim";
import { SharedContentDriverService } from "../proto/flwr_ts/proto/shared_content";
import { DEFAULT_PING_INTERVAL_BOUNDS, type PingIntervalBounds } from "../core/ping-interval";
import { type FleetReceiveLimits, createFleetReceiveGuard } from "./fleet/fleet-receive";
import type { ReceiveAdmissionStats } from "../transport/receive-admission";
import { LongPollHub } from "./long-poll";
import { type RunningRestFleetServer, startRestFleetServer } from "./fleet/rest-server";
import { loadBrowserClientFiles } from "./fleet/browser-client";
import { DEFAULT_REST_MAX_BODY_BYTES } from "../core/wire/fleet-rest";
import { type MetricsServer, SuperLinkMetrics, startMetricsServer } from "./metrics";
import {
  FLEET_API_REQUIRED_EXTENSIONS,
  activeGrpcExtensions,
  requireGrpcExtensions,
} from "../transport/grpc-extensions";

/**
 * Node authentication on the Fleet API (docs/protocol.md, "Node authentication"), with key
 * material the caller read: src/cli/flower-superlink.ts reads the files.
 */
export interface SuperLinkAuthConfig {
  /**
   * The SuperNode public keys allowed on the Fleet API. One from `Allowlist.fromCsvFile` can be
   * re-read (reloadAllowlist(), SIGHUP) and followed (`watchAllowlist`). The SuperLink owns it:
   * close(), or a failed start, stops its watcher.
   */
  allowlist: Allowlist;
  /** The SuperLink's EC key pair (e.g. from loadKeyPairFiles); the halves must match. */
  superlinkKeys: KeyPair;
  /** Reload the allowlist when its file changes (default true; a list without a file has none). */
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
  tls?: ServerTlsMaterial | undefined;
  /** Node authentication on the Fleet API; requires `tls`. */
  auth?: SuperLinkAuthConfig;
  /**
   * CA (PEM) that signs Driver API clients: with it, the Driver API admits only ServerApps
   * presenting a client certificate from this CA (mutual TLS); requires `tls`. The Fleet API
   * never asks for client certificates.
   */
  driverApiClientCa?: Buffer;
  /**
   * How long an empty PullTaskRes (Driver API) may wait for work (default DEFAULT_LONG_POLL_MS);
   * 0 = Flower behaviour for every pull, Fleet ones too.
   */
  longPollMs?: number;
  /**
   * How long an empty PullTaskIns of a SuperNode that asks for it (LONG_POLL_HEADER) may wait
   * (default DEFAULT_FLEET_LONG_POLL_MS; 0 = answer at once). Off while `longPollMs` is 0.
   */
  fleetLongPollMs?: number;
  /** HOST:PORT for Prometheus metrics on GET /metrics; undefined = off. */
  metricsAddress?: string;
  /** Fleet API transport: "grpc-rere" (default) or "rest" (Flower 1.10's REST routes over HTTP(S)). */
  fleetApiType?: "grpc-rere" | "rest";
  /**
   * REST Fleet API only: browser origins allowed by CORS (default none), the body cap, and the
   * directory of the prebuilt browser SuperNode to serve on GET / (undefined = not served).
   */
  rest?: { corsOrigins?: string[]; maxBodyBytes?: number; browserClientDir?: string };
  /** Storage limits, TTL purge and ping bounds (see SuperLinkLimits); defaults apply per field. */
  limits?: SuperLinkLimits;
  /** Idle, age and slow-sender limits of both APIs' connections; default DEFAULT_CONNECTION_LIMITS. */
  connectionLimits?: ConnectionLimits;
  /** Fleet API budgets for bytes from unauthenticated calls (src/superlink/fleet/fleet-receive.ts). */
  fleetReceiveLimits?: FleetReceiveLimits;
  /** Delivery lease in seconds (State `taskLeaseSeconds`); undefined = per-task default. */
  taskLeaseSeconds?: number;
  /** Test-only: extra grpc-js server options (e.g. a small max receive length). */
  grpcServerOptions?: grpc.ChannelOptions;
  /**
   * More services served on the Fleet API's port (startServer adds grpc-bidi's FlowerService).
   * Node authentication does not apply to them.
   */
  extraFleetServices?: ServiceRegistration[];
}

/**
 * flwr-ts limits against a client that floods the state (Flower 1.10 has none). Each has a
 * `flower-superlink` flag; a hit is RESOURCE_EXHAUSTED plus a warning.
 */
export interface SuperLinkLimits {
  /** Most stored task bytes of one run (`--max-run-bytes`, default 4 GiB). */
  maxRunBytes?: number;
  /** Most stored task bytes over all runs (`--max-stored-bytes`, default 8 GiB). */
  maxStoredBytes?: number;
  /** Most TaskIns in one PushTaskIns (`--max-task-ins-per-push`, default 10 000). */
  maxTaskInsPerPush?: number;
  /** Most runs stored at once (`--max-runs`, default 1000). */
  maxRuns?: number;
  /** Seconds without stored tasks after which a run is deleted (`--run-idle-ttl`, default 1 day). */
  runIdleSeconds?: number;
  /**
   * Seconds between purges of expired tasks and idle runs (`--purge-interval`, default 60). An
   * expired TaskIns is kept one more interval, so a pulling ServerApp gets its expiry error.
   */
  purgeIntervalSeconds?: number;
  /** Accepted ping_interval range (`--min-ping-interval`/`--max-ping-interval`, default 10..1800 s). */
  pingIntervalBounds?: PingIntervalBounds;
}

export const DEFAULT_SUPERLINK_LIMITS = {
  maxRunBytes: 4 * 1024 ** 3,
  maxStoredBytes: 8 * 1024 ** 3,
  maxTaskInsPerPush: DEFAULT_MAX_TASK_INS_PER_PUSH,
  maxRuns: 1000,
  runIdleSeconds: 86_400,
  purgeIntervalSeconds: 60,
  pingIntervalBounds: DEFAULT_PING_INTERVAL_BOUNDS,
} as const satisfies Required<SuperLinkLimits>;

/** The limits with defaults filled in; InvalidConfigError for a non-positive or inverted value. */
function resolveLimits(limits: SuperLinkLimits = {}): Required<SuperLinkLimits> {
  const resolved = { ...DEFAULT_SUPERLINK_LIMITS, ...limits };
  for (const key of [
    "maxRunBytes",
    "maxStoredBytes",
    "maxTaskInsPerPush",
    "maxRuns",
    "runIdleSeconds",
    "purgeIntervalSeconds",
  ] as const) {
    if (!(resolved[key] > 0))
      throw new InvalidConfigError(`Limit ${key} must be a positive number, got ${resolved[key]}`);
  }
  const { min, max } = resolved.pingIntervalBounds;
  if (!(min > 0 && max >= min && Number.isFinite(max))) {
    throw new InvalidConfigError(`Ping interval bounds must satisfy 0 < min <= max, got ${min}..${max}`);
  }
  return resolved;
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
  /** The Fleet API's admission of large results (gRPC Fleet API with a budget; else undefined). */
  largeResultAdmission(): ReceiveAdmissionStats | undefined;
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
const DELIVERED_PAIR_GRACE_MS = 10_000;

// Task-carrying responses may hold large records: written as chunks, the payload not copied.
const FAST_DRIVER_SERVICE = withChunkedSerializers(DriverService, DRIVER_TASK_MESSAGES);

function checkConfig(config: SuperLinkConfig): { longPollMs: number; fleetLongPollMs: number } {
  parseAddress(config.driverApiAddress);
  parseAddress(config.fleetApiAddress);
  if (config.metricsAddress !== undefined) parseAddress(config.metricsAddress);
  if (config.auth !== undefined && config.tls === undefined) {
    throw new InvalidConfigError(
      "Authentication requires secure connections. Please provide certificate paths to " +
        "`--ssl-certfile`, `--ssl-keyfile`, and `--ssl-ca-certfile` and try again.",
    );
  }
  if (config.driverApiClientCa !== undefined && config.tls === undefined) {
    throw new InvalidConfigError("--driver-api-client-ca (mutual TLS on the Driver API) requires TLS: drop --insecure");
  }
  if (config.database === "") throw new InvalidConfigError("--database must not be empty");
  // Without the receive guard and slow-sender hooks the gRPC Fleet API would take unbounded bytes
  // from unauthenticated peers: it does not start that way (docs/security.md).
  if (config.fleetApiType !== "rest") requireGrpcExtensions(FLEET_API_REQUIRED_EXTENSIONS, "The Fleet API (grpc-rere)");
  const longPollMs = config.longPollMs ?? DEFAULT_LONG_POLL_MS;
  const fleetLongPollMs = config.fleetLongPollMs ?? DEFAULT_FLEET_LONG_POLL_MS;
  for (const ms of [longPollMs, fleetLongPollMs]) {
    if (!Number.isFinite(ms) || ms < 0) {
      throw new InvalidConfigError(`Long-poll time must be a non-negative number of milliseconds, got ${ms}`);
    }
  }
  return { longPollMs, fleetLongPollMs: longPollMs === 0 ? 0 : fleetLongPollMs };
}

/** Checks the key pair before anything opens; starts following the allowlist file. */
function prepareAuth(auth: SuperLinkAuthConfig): SuperLinkAuthConfig {
  try {
    // Throws InvalidKeyFileError for a mismatched pair, which would make every MAC fail.
    assertKeyPair(auth.superlinkKeys.privateKey, auth.superlinkKeys.publicKeyPem);
  } catch (err) {
    auth.allowlist.close();
    throw err;
  }
  if ((auth.watchAllowlist ?? true) && auth.allowlist.filePath !== undefined) auth.allowlist.watch();
  return auth;
}

/** Starts the SuperLink. Rejects with a typed error (bad config/files, port in use, bad DB). */
export async function startSuperLink(
  config: SuperLinkConfig,
  // descriptorCheckMs: how often to sample open file descriptors (default 5 s; tests use less);
  // contentSpill: how the in-memory state spills delivered broadcasts (default 16 MiB, TMPDIR).
  deps: { logger: Logger; descriptorCheckMs?: number; contentSpill?: ContentSpillOptions },
): Promise<SuperLinkHandle> {
  const { logger } = deps;
  let longPollMs: number;
  let fleetLongPollMs: number;
  let limits: ReturnType<typeof resolveLimits>;
  try {
    ({ longPollMs, fleetLongPollMs } = checkConfig(config));
    limits = resolveLimits(config.limits);
  } catch (err) {
    config.auth?.allowlist.close(); // the SuperLink owns it (SuperLinkAuthConfig.allowlist)
    throw err;
  }

  // Keys first: a bad key pair must not leave a half-opened database behind.
  const auth = config.auth !== undefined ? prepareAuth(config.auth) : undefined;
  let state: State;
  try {
    state = await createState(config.database, {
      logger: logger.child({ module: "state" }),
      limits: { maxRunBytes: limits.maxRunBytes, maxStoredBytes: limits.maxStoredBytes, maxRuns: limits.maxRuns },
      ...(config.taskLeaseSeconds !== undefined ? { taskLeaseSeconds: config.taskLeaseSeconds } : {}),
      ...(deps.contentSpill !== undefined ? { contentSpill: deps.contentSpill } : {}),
    });
  } catch (err) {
    auth?.allowlist.close();
    throw err;
  }

  const hub = new LongPollHub(state);
  const metrics = new SuperLinkMetrics();
  const servers: Array<RunningGrpcServer | RunningRestFleetServer> = [];
  let metricsServer: MetricsServer | undefined;
  let authenticator: FleetAuthenticator | undefined;
  const stopDescriptorWatch = watchDescriptors(
    logger,
    deps.descriptorCheckMs !== undefined ? { checkEveryMs: deps.descriptorCheckMs } : {},
  );

  const onAllowlistChange = (change: { added: string[]; removed: string[] }): void => {
    logger.info(
      { event: "superlink.allowlist-changed", added: change.added.length, removed: change.removed.length },
      `Allowlist changed: ${change.added.length} key(s) added, ${change.removed.length} removed`,
    );
    for (const pem of change.removed) revokeKey(pem);
  };
  const revokeKey = (pem: string): void => {
    revokeKeyNow(pem).catch((err: unknown) => {
      logger.error({ err }, `Could not revoke a node removed from the allowlist: ${errorMessage(err)}`);
    });
  };
  const revokeKeyNow = async (pem: string): Promise<void> => {
    const nodeId = await state.getNodeId(Buffer.from(pem, "utf8"));
    if (nodeId === undefined) return;
    // Deleting the node makes its pending TaskIns answer the ServerApp with NODE_UNAVAILABLE.
    try {
      await state.deleteNode(nodeId);
    } catch (err) {
      if (!(FlwrError.isFlwrError(err) && err.code === "FLWR_NOT_FOUND")) throw err;
    }
    metrics.nodeGone(nodeId);
    const ended = hub.revokeNode(nodeId, new AuthenticationError(`Node ${nodeId} was removed from the allowlist`));
    logger.info(
      { event: "superlink.node-revoked", nodeId: nodeId.toString(), pullsEnded: ended },
      `Node ${nodeId} removed from the allowlist: deleted, ${ended} waiting pull(s) ended`,
    );
  };

  // Expired tasks and idle runs go periodically; a purge is one state transaction.
  const purge = async (): Promise<void> => {
    try {
      const removed = await state.purge({
        expiredGraceSeconds: limits.purgeIntervalSeconds,
        runIdleSeconds: limits.runIdleSeconds,
      });
      if (removed.taskIns + removed.taskRes + removed.runs > 0) {
        logger.info(
          { event: "superlink.purged", ...removed },
          `Purged ${removed.taskIns} expired TaskIns, ${removed.taskRes} TaskRes and ${removed.runs} idle run(s)`,
        );
      }
    } catch (err) {
      logger.error({ err }, `Purging expired tasks failed: ${errorMessage(err)}`);
    }
  };
  // Once at start too: what a crashed run left in a database file goes without waiting.
  await purge();
  const purgeTimer = setInterval(() => void purge(), limits.purgeIntervalSeconds * 1000);
  purgeTimer.unref();

  let closing: Promise<void> | undefined;
  const close = (graceMs = 0): Promise<void> => {
    closing ??= (async () => {
      clearInterval(purgeTimer);
      hub.close();
      auth?.allowlist.off("change", onAllowlistChange);
      await Promise.all(servers.map((s) => s.close(graceMs)));
      stopDescriptorWatch();
      await metricsServer?.close();
      authenticator?.close();
      await authenticator?.settled();
      auth?.allowlist.close();
      try {
        await state.close();
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
    // Pulled results are freed at once, not at V8's leisure (src/superlink/memory-reclaim.ts);
    // at once after every answer with results while large uploads wait for memory.
    let largeResultsWaiting = (): boolean => false;
    const driverServerOptions: grpc.ChannelOptions = {
      ...serverOptions,
      interceptors: [
        metrics.interceptor(),
        reclaimAfterSendInterceptor(new Set([DriverService.pullTaskRes.path]), undefined, () => largeResultsWaiting()),
      ],
    };
    const limitsFor = (name: string) => ({
      name,
      ...(config.connectionLimits ? { limits: config.connectionLimits } : {}),
    });
    const driverImpl = createDriverServicer({
      state,
      logger: logger.child({ api: "driver" }),
      hub,
      longPollMs,
      maxTaskInsPerPush: limits.maxTaskInsPerPush,
      // Durable state keeps delivered pairs a little while, so a crash right after a PullTaskRes
      // answer does not lose its results (docs/delivery.md); in memory they would die anyway.
      deleteGraceMs: config.database === IN_MEMORY_DATABASE ? 0 : DELIVERED_PAIR_GRACE_MS,
    });
    const driverCredentials =
      config.driverApiClientCa !== undefined
        ? serverCredentials(config.tls, { clientCa: config.driverApiClientCa })
        : credentials;
    const driver = await startGrpcServer(
      config.driverApiAddress,
      driverCredentials,
      [
        {
          definition: metrics.withReceivedBytes(withTaskInsCountLimit(FAST_DRIVER_SERVICE, limits.maxTaskInsPerPush)),
          implementation: driverImpl,
        },
        // flwr-ts extension: broadcasts uploaded once (docs/protocol.md, "Shared content").
        {
          definition: metrics.withReceivedBytes(
            withTaskInsCountLimit(SharedContentDriverService, limits.maxTaskInsPerPush, "pushSharedTaskIns", 2),
          ),
          implementation: createSharedContentServicer({
            state,
            logger: logger.child({ api: "driver" }),
            maxTaskInsPerPush: limits.maxTaskInsPerPush,
          }),
        },
      ],
      driverServerOptions,
      { ...limitsFor("Driver API"), logger: logger.child({ api: "driver" }) },
    );
    servers.push(driver);

    const fleetLogger = logger.child({ api: "fleet" });
    const fleetImpl = createFleetServicer({
      state,
      logger: fleetLogger,
      hub,
      longPollMs: fleetLongPollMs,
      pingIntervalBounds: limits.pingIntervalBounds,
    });
    // The receive guard comes first (it needs grpc-js's own call); the authentication gate last,
    // so metrics see its refusals.
    // (The REST Fleet API caps bodies itself; the guard is for gRPC calls.)
    const fleetReceive =
      config.fleetApiType === "rest"
        ? undefined
        : createFleetReceiveGuard(config.fleetReceiveLimits ?? {}, fleetLogger, auth !== undefined);
    const admission = fleetReceive?.admission;
    if (admission !== undefined) {
      metrics.watchLargeResultAdmission(() => admission.stats());
      largeResultsWaiting = () => admission.stats().waiting > 0;
    }
    const fleetInterceptors: grpc.ServerInterceptor[] = [
      ...(fleetReceive ? [fleetReceive.interceptor()] : []),
      metrics.interceptor(),
      // A broadcast stored once is pulled by all nodes at once: a few large answers at a time.
      sendPacingInterceptor({ ...DEFAULT_SEND_PACING, paths: new Set([FleetService.pullTaskIns.path]) }),
    ];
    let fleetService: ServiceRegistration = { definition: FleetService, implementation: fleetImpl };
    if (auth !== undefined) {
      authenticator = new FleetAuthenticator({
        allowlist: auth.allowlist,
        serverPrivateKey: auth.superlinkKeys.privateKey,
        serverPublicKeyPem: auth.superlinkKeys.publicKeyPem,
        state,
        logger: fleetLogger,
        pingIntervalBounds: limits.pingIntervalBounds,
        // The ECDH of each known key in a worker thread before its node registers.
        precomputeHmacKeys: true,
        // A node's first MAC-checked call brings it online as a Ping would: the gauge follows.
        onFirstCallOnline: (nodeId, seconds) => metrics.nodeAlive(nodeId, seconds),
      });
      const authenticated = withFleetAuthentication(fleetImpl, authenticator, {
        onAuthenticated: (metadata) => fleetReceive?.markAuthenticated(metadata),
      });
      fleetService = authenticated;
      fleetInterceptors.push(authenticated.interceptor);
      metrics.createNodeMeansOnline = false;
      auth.allowlist.on("change", onAllowlistChange);
      logger.info(
        { event: "superlink.auth-enabled", knownKeys: auth.allowlist.size },
        `Client authentication enabled with ${auth.allowlist.size} known public keys`,
      );
    }
    fleetService = {
      ...fleetService,
      definition: withChunkedSerializers(fleetService.definition, FLEET_TASK_MESSAGES),
    };
    const fleet =
      config.fleetApiType === "rest"
        ? await startRestFleetServer({
            address: config.fleetApiAddress,
            ...(config.tls !== undefined ? { tls: config.tls } : {}),
            state,
            hub,
            longPollMs: fleetLongPollMs,
            pingIntervalBounds: limits.pingIntervalBounds,
            ...(authenticator !== undefined ? { authenticator } : {}),
            maxBodyBytes: config.rest?.maxBodyBytes ?? DEFAULT_REST_MAX_BODY_BYTES,
            corsOrigins: config.rest?.corsOrigins ?? [],
            ...(config.rest?.browserClientDir !== undefined
              ? { staticFiles: loadBrowserClientFiles(config.rest.browserClientDir) }
              : {}),
            logger: fleetLogger,
            onCall: (path, code, request, response, seconds) => {
              metrics.recordCall(path, code, request, response, seconds);
            },
          })
        : await startGrpcServer(
            config.fleetApiAddress,
            credentials,
            [fleetService, ...(config.extraFleetServices ?? [])],
            { ...serverOptions, interceptors: fleetInterceptors },
            { ...limitsFor("Fleet API"), logger: fleetLogger },
          );
    servers.push(fleet);

    if (config.metricsAddress !== undefined) {
      // Read from the state at every scrape (for PostgreSQL, the counts of all replicas).
      metrics.setGauges(async () => {
        const [taskIns, taskRes] = await Promise.all([state.numTaskIns(), state.numTaskRes()]);
        return { taskInsStored: taskIns, taskResStored: taskRes, longPollsWaiting: hub.waiting };
      });
      metricsServer = await startMetricsServer(config.metricsAddress, metrics, logger);
    }

    const browserClientUrl =
      config.fleetApiType === "rest" && config.rest?.browserClientDir !== undefined
        ? `${config.tls !== undefined ? "https" : "http"}://${fleet.address}/`
        : undefined;
    logger.info(
      {
        event: "superlink.ready",
        driverAddress: driver.address,
        fleetAddress: fleet.address,
        ...(metricsServer ? { metricsAddress: metricsServer.address } : {}),
        tls: config.tls !== undefined,
        driverApiClientCertificates: config.driverApiClientCa !== undefined,
        auth: auth !== undefined,
        database: databaseForLogs(config.database),
        longPollMs,
        fleetLongPollMs,
        limits,
        fleetApiType: config.fleetApiType ?? "grpc-rere",
        grpcExtensions: activeGrpcExtensions(),
        ...(browserClientUrl !== undefined ? { browserClientUrl } : {}),
      },
      `SuperLink ready: Driver API on ${driver.address}, Fleet API (${config.fleetApiType ?? "grpc-rere"}) on ${fleet.address}` +
        `; grpc-js extensions: ${activeGrpcExtensions().join(", ") || "none"}` +
        (browserClientUrl !== undefined ? `; browser SuperNode page at ${browserClientUrl}` : ""),
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
      largeResultAdmission: () => fleetReceive?.admission?.stats(),
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
