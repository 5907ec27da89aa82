/**
 * `flower-superlink`: Flower 1.10's SuperLink command line (docs/protocol.md, "Keys and files", "TLS", "Transport") plus flwr-ts
 * options (--long-poll-ms, --fleet-long-poll-ms, --metrics-address, --log-level, --shutdown-grace-ms, the connection
 * limits --max-connection-idle-ms and others, src/transport/options.ts, and the Fleet API
 * budgets --fleet-unauthenticated-bytes-per-connection, --fleet-unauthenticated-bytes-total and
 * --fleet-large-result-budget-bytes).
 * Translates the flags into a SuperLinkConfig, starts the SuperLink under runDaemon (SIGINT/SIGTERM: graceful
 * stop; SIGHUP: reload the allowlist) and returns the exit code: 0 clean stop, 2 bad
 * configuration or files, 1 runtime failure.
 */
import { Command, InvalidArgumentError, Option } from "commander";
import {
  DEFAULT_DRIVER_API_ADDRESS,
  DEFAULT_FLEET_API_ADDRESS,
  DEFAULT_FLEET_LONG_POLL_MS,
  DEFAULT_LONG_POLL_MS,
  DEFAULT_SHUTDOWN_GRACE_MS,
  IN_MEMORY_DATABASE,
} from "../core/constants";
import { InvalidConfigError, errorMessage } from "../core/errors";
import type { Logger } from "../core/logger";
import { Allowlist } from "../auth/allowlist";
import { loadKeyPairFiles } from "../auth/keys";
import { type ServerTlsMaterial, readClientCaFile, readServerTlsFiles } from "../transport/tls";
import { parseAddress } from "../core/address";
import { DEFAULT_FLEET_REST_ADDRESS, DEFAULT_REST_MAX_BODY_BYTES } from "../core/wire/fleet-rest";
import { checkCorsOrigins } from "../superlink/fleet/rest-server";
import { DEFAULT_BROWSER_CLIENT_DIR } from "../superlink/fleet/browser-client";
import { DEFAULT_CONNECTION_LIMITS } from "../transport/options";
import {
  DEFAULT_UNAUTHENTICATED_BYTES_PER_CONNECTION,
  DEFAULT_UNAUTHENTICATED_BYTES_TOTAL,
  DEFAULT_LARGE_RESULT_BUDGET_BYTES,
} from "../superlink/fleet/fleet-receive";
import {
  DEFAULT_SUPERLINK_LIMITS,
  type SuperLinkAuthConfig,
  type SuperLinkConfig,
  type SuperLinkHandle,
  startSuperLink,
} from "../superlink/superlink";
import {
  type CliIo,
  LOG_LEVELS,
  LOG_FORMATS,
  LOG_FORMAT_HELP,
  createCliLogger,
  parseOrExitCode,
  routeOutput,
  nonNegativeInt,
  runMain,
  isLoopbackHost,
  packageVersion,
  listenFailureError,
} from "./common";
import { exitCodeFor, reportFatal, runDaemon } from "./run-daemon";
import { enableGrpcExtensions } from "../transport/grpc-extensions";
import { limitHeapGrowth } from "./heap-growth";

const NAME = "flower-superlink";
const FLEET_API_TYPE_GRPC_RERE = "grpc-rere";
const FLEET_API_TYPE_REST = "rest";
const UNSUPPORTED_FLEET_API_TYPES = new Set(["grpc-adapter"]);

interface SuperLinkOptions {
  driverApiAddress: string;
  fleetApiAddress?: string;
  fleetApiType: string;
  fleetApiNumWorkers: number;
  database: string;
  insecure: boolean;
  sslCaCertfile?: string;
  sslCertfile?: string;
  sslKeyfile?: string;
  driverApiClientCa?: string;
  authListPublicKeys?: string;
  authSuperlinkPrivateKey?: string;
  authSuperlinkPublicKey?: string;
  longPollMs: number;
  fleetLongPollMs: number;
  metricsAddress?: string;
  logLevel: string;
  logFormat?: string;
  shutdownGraceMs: number;
  maxRunBytes: number;
  maxStoredBytes: number;
  maxTaskInsPerPush: number;
  maxRuns: number;
  runIdleTtl: number;
  purgeInterval: number;
  minPingInterval: number;
  maxPingInterval: number;
  maxConnectionIdleMs: number;
  maxConnectionAgeMs: number;
  maxConnectionAgeGraceMs: number;
  requestReceiveTimeoutMs: number;
  minRequestReceiveRate: number;
  restCorsOrigins?: string;
  restMaxBodyBytes: number;
  restServeBrowserClient?: boolean;
  fleetUnauthenticatedBytesPerConnection: number;
  fleetUnauthenticatedBytesTotal: number;
  fleetLargeResultBudgetBytes: number;
  taskLeaseSeconds?: number;
}

/** A positive number (seconds, bytes, counts); fractions allowed. */
function positiveNumber(flag: string): (value: string) => number {
  return (value) => {
    const n = Number(value);
    if (value.trim() === "" || !Number.isFinite(n) || n <= 0)
      throw new InvalidArgumentError(`${flag} must be a positive number.`);
    return n;
  };
}

function integer(value: string): number {
  const n = Number(value);
  if (value.trim() === "" || !Number.isInteger(n)) throw new InvalidArgumentError("Must be an integer.");
  return n;
}

const BYTE_UNITS: Record<string, number> = {
  "": 1,
  k: 1024,
  kib: 1024,
  m: 1024 ** 2,
  mib: 1024 ** 2,
  g: 1024 ** 3,
  gib: 1024 ** 3,
};

/** A positive byte count: digits, optionally followed by KiB, MiB or GiB (or k, m, g). */
function byteSize(flag: string, zeroAllowed = false): (value: string) => number {
  return (value) => {
    const match = /^\s*(\d+)\s*([a-z]*)\s*$/i.exec(value);
    const unit = match === null ? undefined : BYTE_UNITS[match[2]!.toLowerCase()];
    const n = match === null || unit === undefined ? NaN : Number(match[1]) * unit;
    if (!Number.isSafeInteger(n) || n < (zeroAllowed ? 0 : 1))
      throw new InvalidArgumentError(
        `${flag} must be a ${zeroAllowed ? "non-negative" : "positive"} number of bytes (e.g. 536870912 or 512MiB).`,
      );
    return n;
  };
}

function buildCommand(io: CliIo): Command {
  const program = new Command(NAME)
    .description("Start a Flower SuperLink (Driver API and Fleet API), wire-compatible with Flower 1.10.")
    .exitOverride()
    .showHelpAfterError(false)
    .version(packageVersion(), "-V, --version", "Print the flwr-ts version and exit.")
    .option(
      "--driver-api-address <address>",
      "Driver API (gRPC) server address (IPv4, IPv6, or a domain name).",
      DEFAULT_DRIVER_API_ADDRESS,
    )
    .option(
      "--fleet-api-address <address>",
      `Fleet API server address (default: "${DEFAULT_FLEET_API_ADDRESS}", or "${DEFAULT_FLEET_REST_ADDRESS}" for rest).`,
    )
    .option("--fleet-api-type <type>", "Fleet API transport: grpc-rere or rest.", FLEET_API_TYPE_GRPC_RERE)
    .option(
      "--fleet-api-num-workers <n>",
      "Accepted for Flower compatibility; the Fleet API always runs one worker.",
      integer,
      1,
    )
    .option(
      "--database <path>",
      `SQLite database file for persistent state, "${IN_MEMORY_DATABASE}" for in-memory state, or a ` +
        "postgresql:// URL for state shared by several SuperLink replicas (docs/postgresql.md).",
      IN_MEMORY_DATABASE,
    )
    .option("--insecure", "Run both APIs without TLS. Use this flag only if you understand the risks.", false)
    .option("--ssl-ca-certfile <path>", "CA certificate (PEM) of the server certificate.")
    .option("--ssl-certfile <path>", "Server certificate (PEM), used by the Driver API and the Fleet API.")
    .option("--ssl-keyfile <path>", "Server private key (PEM).")
    .option(
      "--driver-api-client-ca <path>",
      "CA certificate (PEM) that signs ServerApp client certificates: the Driver API then admits only ServerApps " +
        "presenting one (mutual TLS). The Fleet API does not ask SuperNodes for certificates.",
    )
    .option("--auth-list-public-keys <path>", "CSV file of known SuperNode public keys; enables node authentication.")
    .option(
      "--auth-superlink-private-key <path>",
      "The SuperLink's private key (OpenSSH EC key) for node authentication.",
    )
    .option("--auth-superlink-public-key <path>", "The SuperLink's public key for node authentication.")
    .option(
      "--long-poll-ms <ms>",
      "How long an empty PullTaskRes may wait for work (0 = every pull, Fleet ones too, answers at once).",
      nonNegativeInt("--long-poll-ms"),
      DEFAULT_LONG_POLL_MS,
    )
    .option(
      "--fleet-long-poll-ms <ms>",
      "How long an empty PullTaskIns of a SuperNode that asks for it (flwr-ts SuperNodes) may wait for work (0 = answer at once).",
      nonNegativeInt("--fleet-long-poll-ms"),
      DEFAULT_FLEET_LONG_POLL_MS,
    )
    .option("--metrics-address <address>", "Serve Prometheus metrics on http://ADDRESS/metrics (off by default).")
    // Limits against clients that flood the state (flwr-ts; see SuperLinkLimits).
    .option(
      "--max-run-bytes <bytes>",
      "Most bytes of stored tasks of one run.",
      positiveNumber("--max-run-bytes"),
      DEFAULT_SUPERLINK_LIMITS.maxRunBytes,
    )
    .option(
      "--max-stored-bytes <bytes>",
      "Most bytes of stored tasks over all runs.",
      positiveNumber("--max-stored-bytes"),
      DEFAULT_SUPERLINK_LIMITS.maxStoredBytes,
    )
    .option(
      "--max-task-ins-per-push <n>",
      "Most TaskIns in one PushTaskIns request.",
      positiveNumber("--max-task-ins-per-push"),
      DEFAULT_SUPERLINK_LIMITS.maxTaskInsPerPush,
    )
    .option(
      "--max-runs <n>",
      "Most runs stored at once.",
      positiveNumber("--max-runs"),
      DEFAULT_SUPERLINK_LIMITS.maxRuns,
    )
    .option(
      "--run-idle-ttl <seconds>",
      "Delete a run once it has no tasks and none were stored for this long.",
      positiveNumber("--run-idle-ttl"),
      DEFAULT_SUPERLINK_LIMITS.runIdleSeconds,
    )
    .option(
      "--purge-interval <seconds>",
      "How often expired tasks and idle runs are deleted.",
      positiveNumber("--purge-interval"),
      DEFAULT_SUPERLINK_LIMITS.purgeIntervalSeconds,
    )
    .option(
      "--min-ping-interval <seconds>",
      "Smaller ping_interval values are raised to this.",
      positiveNumber("--min-ping-interval"),
      DEFAULT_SUPERLINK_LIMITS.pingIntervalBounds.min,
    )
    .option(
      "--max-ping-interval <seconds>",
      "Larger ping_interval values are lowered to this.",
      positiveNumber("--max-ping-interval"),
      DEFAULT_SUPERLINK_LIMITS.pingIntervalBounds.max,
    )
    .addOption(new Option("--log-level <level>", "Log level.").choices(LOG_LEVELS).default("info"))
    .addOption(new Option("--log-format <format>", LOG_FORMAT_HELP).choices(LOG_FORMATS))
    .option(
      "--shutdown-grace-ms <ms>",
      "On SIGINT/SIGTERM, how long in-flight calls may finish before they are cancelled.",
      nonNegativeInt("--shutdown-grace-ms"),
      DEFAULT_SHUTDOWN_GRACE_MS,
    )
    // Connection limits (src/transport/options.ts ConnectionLimits); 0 turns each off.
    .option(
      "--max-connection-idle-ms <ms>",
      "Close a connection that has had no call in flight for this long (clients reconnect on their next call; 0 = never).",
      timerMs("--max-connection-idle-ms"),
      DEFAULT_CONNECTION_LIMITS.maxConnectionIdleMs,
    )
    .option(
      "--max-connection-age-ms <ms>",
      "Close every connection after this long, busy or not (0 = never).",
      timerMs("--max-connection-age-ms"),
      DEFAULT_CONNECTION_LIMITS.maxConnectionAgeMs,
    )
    .option(
      "--max-connection-age-grace-ms <ms>",
      "With --max-connection-age-ms: how long calls in flight may still finish (0 = as long as they take).",
      timerMs("--max-connection-age-grace-ms"),
      DEFAULT_CONNECTION_LIMITS.maxConnectionAgeGraceMs,
    )
    .option(
      "--request-receive-timeout-ms <ms>",
      "Cancel a call whose request has not fully arrived after this long, unless it keeps arriving at " +
        "--min-request-receive-rate (0 = never).",
      timerMs("--request-receive-timeout-ms"),
      DEFAULT_CONNECTION_LIMITS.requestReceiveTimeoutMs,
    )
    .option(
      "--min-request-receive-rate <bytes-per-second>",
      "Average rate below which a request still arriving after --request-receive-timeout-ms is cancelled (0 = any rate).",
      nonNegativeInt("--min-request-receive-rate"),
      DEFAULT_CONNECTION_LIMITS.minRequestBytesPerSecond,
    )
    .option(
      "--rest-cors-origins <origins>",
      'REST Fleet API: comma-separated browser origins allowed by CORS, e.g. "https://app.example.org" (or "*"; default none).',
    )
    .option(
      "--rest-serve-browser-client",
      "REST Fleet API: also serve the browser SuperNode (page and bundle from dist/browser/, see docs/browser.md) on GET /.",
    )
    .option(
      "--rest-max-body-bytes <n>",
      "REST Fleet API: largest request body accepted (413 beyond).",
      nonNegativeInt("--rest-max-body-bytes"),
      DEFAULT_REST_MAX_BODY_BYTES,
    )
    .option(
      "--fleet-unauthenticated-bytes-per-connection <bytes>",
      "Fleet API: most request bytes held for one connection's calls not yet authenticated (all calls without node auth); more ends them RESOURCE_EXHAUSTED.",
      byteSize("--fleet-unauthenticated-bytes-per-connection"),
      DEFAULT_UNAUTHENTICATED_BYTES_PER_CONNECTION,
    )
    .option(
      "--fleet-unauthenticated-bytes-total <bytes>",
      "Fleet API: the same budget over all connections together.",
      byteSize("--fleet-unauthenticated-bytes-total"),
      DEFAULT_UNAUTHENTICATED_BYTES_TOTAL,
    )
    .option(
      "--fleet-large-result-budget-bytes <bytes>",
      "Fleet API: most bytes of large results (PushTaskRes of 16 MiB and more) in memory at once, received, stored or being sent on; further uploads wait (HTTP/2 flow control) until budget frees, 10 s at most. 0 = no budget.",
      byteSize("--fleet-large-result-budget-bytes", true),
      DEFAULT_LARGE_RESULT_BUDGET_BYTES,
    )
    .option(
      "--task-lease-seconds <s>",
      "A task delivered this long ago and still unanswered is offered again (default: half its TTL, 5-60 s).",
      (value: string) => {
        const n = Number(value);
        if (value.trim() === "" || !Number.isFinite(n) || n <= 0)
          throw new InvalidArgumentError("Must be a positive number of seconds.");
        return n;
      },
    );
  routeOutput(program, io);
  return program;
}

/** Node timers overflow (and fire at once) above 2^31-1 ms: milliseconds in 0..2^31-2. */
function timerMs(flag: string): (value: string) => number {
  const parse = nonNegativeInt(flag);
  return (value) => {
    const n = parse(value);
    if (n > MAX_TIMER_MS) throw new InvalidArgumentError(`${flag} must be at most ${MAX_TIMER_MS} (about 24 days).`);
    return n;
  };
}
const MAX_TIMER_MS = 2 ** 31 - 2;

/** TLS material from the three --ssl-* flags, or undefined with --insecure (docs/protocol.md, "TLS"). */
function tlsFromOptions(opts: SuperLinkOptions, logger: Logger): ServerTlsMaterial | undefined {
  const given = [opts.sslCaCertfile, opts.sslCertfile, opts.sslKeyfile].filter((v) => v !== undefined);
  if (opts.insecure) {
    if (given.length > 0) {
      throw new InvalidConfigError(
        "Conflicting options: --insecure cannot be combined with --ssl-ca-certfile, --ssl-certfile or --ssl-keyfile. " +
          "Drop --insecure to serve TLS, or drop the certificate options.",
      );
    }
    logger.warn("Option `--insecure` was set. Starting insecure HTTP server.");
    return undefined;
  }
  if (given.length === 0) {
    throw new InvalidConfigError(
      "Certificates are required unless running in insecure mode. Please provide certificate paths to " +
        "`--ssl-certfile`, `--ssl-keyfile`, and `--ssl-ca-certfile` or run the server in insecure mode " +
        "using '--insecure' if you understand the risks.",
    );
  }
  if (given.length < 3) {
    throw new InvalidConfigError(
      "You need to provide valid file paths to `--ssl-certfile`, `--ssl-keyfile`, and `--ssl-ca-certfile` " +
        "to create a secure connection in Fleet API server (gRPC-rere).",
    );
  }
  return readServerTlsFiles({
    caCertFile: opts.sslCaCertfile!,
    certFile: opts.sslCertfile!,
    keyFile: opts.sslKeyfile!,
  });
}

/**
 * Node-authentication files, all three or none (docs/protocol.md, "Node authentication"): the
 * key pair is read here, the allowlist CSV too (the SuperLink re-reads it on SIGHUP or a change).
 * Throws InvalidKeyFileError naming the file for an unreadable key or a mismatched pair.
 */
function authFromOptions(
  opts: SuperLinkOptions,
  tls: ServerTlsMaterial | undefined,
  logger: Logger,
): SuperLinkAuthConfig | undefined {
  const { authListPublicKeys: csv, authSuperlinkPrivateKey: privatePath, authSuperlinkPublicKey: publicPath } = opts;
  if (csv === undefined && privatePath === undefined && publicPath === undefined) return undefined;
  if (csv === undefined || privatePath === undefined || publicPath === undefined) {
    throw new InvalidConfigError(
      "Authentication requires providing file paths for '--auth-list-public-keys', " +
        "'--auth-superlink-private-key' and '--auth-superlink-public-key'. Provide all three to enable authentication.",
    );
  }
  if (tls === undefined) {
    throw new InvalidConfigError(
      "Authentication requires secure connections. Please provide certificate paths to `--ssl-certfile`, " +
        "`--ssl-keyfile`, and `--ssl-ca-certfile` (and drop --insecure) and try again.",
    );
  }
  const superlinkKeys = loadKeyPairFiles(privatePath, publicPath);
  const allowlist = Allowlist.fromCsvFile(csv, { logger });
  return { allowlist, superlinkKeys, watchAllowlist: true };
}

/**
 * The CA for Driver API client certificates (mutual TLS), or undefined with a warning when the
 * Driver API is reachable beyond loopback without it: whoever reaches it can run anything on
 * every SuperNode, read the results, and stop every SuperNode (a `reconnect` message).
 */
function driverApiClientCaFromOptions(
  opts: SuperLinkOptions,
  tls: ServerTlsMaterial | undefined,
  logger: Logger,
): Buffer | undefined {
  if (opts.driverApiClientCa === undefined) {
    if (!isLoopbackHost(parseAddress(opts.driverApiAddress).host)) {
      logger.warn(
        { event: "superlink.driver-api-open", driverApiAddress: opts.driverApiAddress },
        `The Driver API listens on ${opts.driverApiAddress} without client authentication: anyone who can reach it can ` +
          "create runs, send tasks to every SuperNode and read their results, and make every SuperNode exit. " +
          "Pass --driver-api-client-ca FILE (ServerApps then need --ssl-certfile/--ssl-keyfile), or listen on " +
          "loopback only (--driver-api-address 127.0.0.1:9091).",
      );
    }
    return undefined;
  }
  if (tls === undefined) {
    throw new InvalidConfigError(
      "--driver-api-client-ca (mutual TLS on the Driver API) needs TLS: drop --insecure and pass " +
        "--ssl-ca-certfile, --ssl-certfile and --ssl-keyfile.",
    );
  }
  return readClientCaFile(opts.driverApiClientCa, "--driver-api-client-ca");
}

/** Each flag that makes the SuperLink listen, with its address (to name the one in use). */
function listenFlags(config: SuperLinkConfig): Array<[string, string]> {
  const flags: Array<[string, string]> = [
    ["--driver-api-address", config.driverApiAddress],
    ["--fleet-api-address", config.fleetApiAddress],
  ];
  if (config.metricsAddress !== undefined) flags.push(["--metrics-address", config.metricsAddress]);
  return flags;
}

/** The REST Fleet API's CORS allow-list and body cap. */
function restFromOptions(opts: SuperLinkOptions): {
  corsOrigins: string[];
  maxBodyBytes: number;
  browserClientDir?: string;
} {
  const corsOrigins = (opts.restCorsOrigins ?? "")
    .split(",")
    .map((o) => o.trim())
    .filter((o) => o !== "");
  checkCorsOrigins(corsOrigins);
  return {
    corsOrigins,
    maxBodyBytes: opts.restMaxBodyBytes,
    ...(opts.restServeBrowserClient === true ? { browserClientDir: DEFAULT_BROWSER_CLIENT_DIR } : {}),
  };
}

/** Turns parsed flags into a SuperLinkConfig; throws InvalidConfigError / InvalidKeyFileError. */
export function configFromOptions(opts: SuperLinkOptions, logger: Logger): SuperLinkConfig {
  const rest = opts.fleetApiType === FLEET_API_TYPE_REST;
  if (opts.fleetApiType !== FLEET_API_TYPE_GRPC_RERE && !rest) {
    if (UNSUPPORTED_FLEET_API_TYPES.has(opts.fleetApiType)) {
      throw new InvalidConfigError(
        `--fleet-api-type ${opts.fleetApiType} is not supported by flwr-ts; grpc-rere (the default) and rest are.`,
      );
    }
    throw new InvalidConfigError(
      `Unknown --fleet-api-type "${opts.fleetApiType}": expected grpc-rere or rest (grpc-adapter is not supported by flwr-ts).`,
    );
  }
  if (opts.fleetApiNumWorkers !== 1) {
    logger.warn(
      `The Fleet API currently supports only 1 worker. You have specified ${opts.fleetApiNumWorkers} workers. ` +
        "Proceeding with a single worker.",
    );
  }
  if (!rest && opts.restServeBrowserClient === true) {
    throw new InvalidConfigError(
      "--rest-serve-browser-client needs --fleet-api-type rest (the page talks to the REST Fleet API)",
    );
  }
  if (!rest && opts.restCorsOrigins !== undefined) {
    logger.warn("--rest-cors-origins applies only to --fleet-api-type rest; ignored for the gRPC Fleet API.");
  }
  const tls = tlsFromOptions(opts, logger);
  const auth = authFromOptions(opts, tls, logger);
  const driverApiClientCa = driverApiClientCaFromOptions(opts, tls, logger);
  return {
    driverApiAddress: opts.driverApiAddress,
    fleetApiAddress: opts.fleetApiAddress ?? (rest ? DEFAULT_FLEET_REST_ADDRESS : DEFAULT_FLEET_API_ADDRESS),
    ...(rest ? { fleetApiType: "rest" as const, rest: restFromOptions(opts) } : {}),
    database: opts.database,
    ...(tls ? { tls } : {}),
    ...(auth ? { auth } : {}),
    ...(driverApiClientCa ? { driverApiClientCa } : {}),
    longPollMs: opts.longPollMs,
    fleetLongPollMs: opts.fleetLongPollMs,
    limits: {
      maxRunBytes: opts.maxRunBytes,
      maxStoredBytes: opts.maxStoredBytes,
      maxTaskInsPerPush: opts.maxTaskInsPerPush,
      maxRuns: opts.maxRuns,
      runIdleSeconds: opts.runIdleTtl,
      purgeIntervalSeconds: opts.purgeInterval,
      pingIntervalBounds: { min: opts.minPingInterval, max: opts.maxPingInterval },
    },
    ...(opts.metricsAddress !== undefined ? { metricsAddress: opts.metricsAddress } : {}),
    connectionLimits: {
      maxConnectionIdleMs: opts.maxConnectionIdleMs,
      maxConnectionAgeMs: opts.maxConnectionAgeMs,
      maxConnectionAgeGraceMs: opts.maxConnectionAgeGraceMs,
      requestReceiveTimeoutMs: opts.requestReceiveTimeoutMs,
      minRequestBytesPerSecond: opts.minRequestReceiveRate,
    },
    fleetReceiveLimits: {
      unauthenticatedBytesPerConnection: opts.fleetUnauthenticatedBytesPerConnection,
      unauthenticatedBytesTotal: opts.fleetUnauthenticatedBytesTotal,
      largeResultBudgetBytes: opts.fleetLargeResultBudgetBytes,
    },
    ...(opts.taskLeaseSeconds !== undefined ? { taskLeaseSeconds: opts.taskLeaseSeconds } : {}),
  };
}

/**
 * Runs the SuperLink command line. `argv` is process.argv-shaped (node, script, ...flags).
 * Resolves with the exit code once the daemon stopped (or failed to start).
 */
export async function main(argv: string[], io: CliIo = {}): Promise<number> {
  const program = buildCommand(io);
  const parseExit = parseOrExitCode(program, argv);
  if (parseExit !== undefined) return parseExit;
  const opts = program.opts<SuperLinkOptions>();
  const logger = createCliLogger(
    {
      level: opts.logLevel,
      component: "superlink",
      ...(opts.logFormat !== undefined ? { logFormat: opts.logFormat } : {}),
    },
    io,
  );
  logger.info("Starting Flower SuperLink");
  enableGrpcExtensions({ logger });

  let config: SuperLinkConfig;
  try {
    config = configFromOptions(opts, logger);
  } catch (err) {
    reportFatal(logger, NAME, err);
    return exitCodeFor(err);
  }

  let handle: SuperLinkHandle | undefined;
  return runDaemon(
    async () => {
      try {
        handle = await startSuperLink(config, { logger, ...testDescriptorCheck() });
      } catch (err) {
        throw listenFailureError(err, listenFlags(config)) ?? err;
      }
      return handle;
    },
    {
      name: NAME,
      logger,
      graceMs: opts.shutdownGraceMs,
      onHangup: () => {
        if (handle === undefined) return;
        if (config.auth === undefined) {
          logger.info("SIGHUP received: authentication is not enabled, nothing to reload");
          return;
        }
        try {
          const { added, removed } = handle.reloadAllowlist();
          logger.info(
            { event: "superlink.allowlist-reloaded", added: added.length, removed: removed.length },
            `SIGHUP: allowlist reloaded (${added.length} added, ${removed.length} removed)`,
          );
        } catch (err) {
          logger.error(
            { event: "superlink.allowlist-reload-failed" },
            `SIGHUP: could not reload the allowlist, keeping the previous one: ${errorMessage(err)}`,
          );
        }
      },
    },
  );
}

/**
 * FLWR_TEST_DESCRIPTOR_CHECK_MS (for tests only): how often to sample open file descriptors
 * instead of every 5 s, so a test of the exhaustion warning needs no long waits.
 */
function testDescriptorCheck(): { descriptorCheckMs?: number } {
  const ms = Number(process.env.FLWR_TEST_DESCRIPTOR_CHECK_MS);
  return Number.isFinite(ms) && ms > 0 ? { descriptorCheckMs: ms } : {};
}

/** Entry point of bin/flower-superlink. */
export function run(): void {
  limitHeapGrowth();
  runMain(NAME, (argv) => main(argv));
}
