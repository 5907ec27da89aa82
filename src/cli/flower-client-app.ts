/**
 * `flower-client-app`: Flower 1.10's SuperNode command line (docs/protocol.md, "SuperNode") plus flwr-ts options
 * (--poll-interval-ms, --log-level, --shutdown-grace-ms). Loads the ClientApp named by the
 * positional `module:attr` from --dir, translates the flags into a SuperNodeConfig and runs the
 * SuperNode under runDaemon (SIGINT/SIGTERM: DeleteNode and a clean stop). Exit codes: 0 clean
 * stop, 2 bad configuration, files, app or refused credentials, 1 runtime failure (SuperLink
 * unreachable after the retry limits).
 */
import { Command, InvalidArgumentError, Option } from "commander";
import { loadKeyPairFiles } from "../auth/keys";
import { ClientApp } from "../client/client-app";
import { DEFAULT_FLEET_API_ADDRESS, DEFAULT_SHUTDOWN_GRACE_MS } from "../core/constants";
import { loadAppObject, parseAppReference } from "./app-loader";
import { AppLoadError, InvalidConfigError, errorMessage } from "../core/errors";
import type { Logger } from "../core/logger";
import { parseNodeConfig } from "../supernode/node-config";
import { parseRestBaseUrl } from "../supernode/rest-connection";
import { DEFAULT_POLL_INTERVAL_MS, type SuperNodeConfig, startSuperNode } from "../supernode/supernode";
import {
  type CliIo,
  LOG_LEVELS,
  LOG_FORMATS,
  LOG_FORMAT_HELP,
  createCliLogger,
  parseOrExitCode,
  routeOutput,
  superlinkAddress,
  clientTlsFromFlags,
  nonNegativeInt,
  runMain,
  packageVersion,
} from "./common";
import { exitCodeFor, reportFatal, runDaemon } from "./run-daemon";
import { enableGrpcExtensions } from "../transport/grpc-extensions";

const NAME = "flower-client-app";

export interface ClientAppCliOptions {
  insecure: boolean;
  grpcRere?: boolean;
  grpcAdapter?: boolean;
  rest?: boolean;
  rootCertificates?: string;
  superlink: string;
  server: string;
  maxRetries?: number;
  maxWaitTime?: number;
  dir: string;
  authSupernodePrivateKey?: string;
  authSupernodePublicKey?: string;
  nodeConfig?: string;
  pollIntervalMs: number;
  logLevel: string;
  logFormat?: string;
  shutdownGraceMs: number;
}

function nonNegativeNumber(what: string): (value: string) => number {
  return (value) => {
    const n = Number(value);
    if (value.trim() === "" || !Number.isFinite(n) || n < 0) {
      throw new InvalidArgumentError(`${what} must be a non-negative number.`);
    }
    return n;
  };
}

/** The options flower-client-app and flower-supernode share (Flower's `_parse_args_common`). */
export function addSuperNodeOptions(program: Command): Command {
  return program
    .option(
      "--insecure",
      "Run the client without HTTPS. By default, the client runs with HTTPS enabled. " +
        "Use this flag only if you understand the risks.",
      false,
    )
    .addOption(new Option("--grpc-rere", "Use grpc-rere as a transport layer for the client (the default)."))
    .addOption(
      new Option("--grpc-adapter", "Use grpc-adapter as a transport layer (not supported by flwr-ts).").conflicts([
        "grpcRere",
        "rest",
      ]),
    )
    .addOption(
      new Option(
        "--rest",
        "Use REST as a transport layer (--superlink then takes an http:// or https:// URL).",
      ).conflicts(["grpcRere"]),
    )
    .option(
      "--root-certificates <path>",
      "PEM-encoded root certificate file for the HTTPS connection (default: the system's trusted CAs).",
    )
    .option("--server <address>", "Deprecated: use --superlink.", DEFAULT_FLEET_API_ADDRESS)
    .option(
      "--superlink <address>",
      "SuperLink Fleet API (gRPC-rere) address (IPv4, IPv6, or a domain name).",
      DEFAULT_FLEET_API_ADDRESS,
    )
    .option(
      "--max-retries <n>",
      "How many times a failing connection is retried before giving up (default: no limit).",
      nonNegativeInt("--max-retries"),
    )
    .option(
      "--max-wait-time <seconds>",
      "How long a failing connection is retried before giving up (default: no limit).",
      nonNegativeNumber("--max-wait-time"),
    )
    .option("--dir <dir>", "Directory the ClientApp module is loaded from.", ".")
    .option(
      "--auth-supernode-private-key <path>",
      "The SuperNode's private key (OpenSSH EC key) to enable authentication.",
    )
    .option("--auth-supernode-public-key <path>", "The SuperNode's public key to enable authentication.")
    .option(
      "--node-config <pairs>",
      "Comma-separated key=value pairs (TOML values) handed to the ClientApp, e.g. 'partition-id=0,num-partitions=2,name=\"a\"'.",
    )
    .option(
      "--poll-interval-ms <ms>",
      "After an empty pull answered at once (Python SuperLink), wait this long before pulling again.",
      nonNegativeInt("--poll-interval-ms"),
      DEFAULT_POLL_INTERVAL_MS,
    )
    .addOption(new Option("--log-level <level>", "Log level.").choices(LOG_LEVELS).default("info"))
    .addOption(new Option("--log-format <format>", LOG_FORMAT_HELP).choices(LOG_FORMATS))
    .option(
      "--shutdown-grace-ms <ms>",
      "On SIGINT/SIGTERM, how long a message being handled may finish (and DeleteNode be sent).",
      nonNegativeInt("--shutdown-grace-ms"),
      DEFAULT_SHUTDOWN_GRACE_MS,
    );
}

function buildCommand(io: CliIo): Command {
  const program = new Command(NAME)
    .description("Start a Flower SuperNode running a ClientApp, wire-compatible with Flower 1.10.")
    .exitOverride()
    .showHelpAfterError(false)
    .version(packageVersion(), "-V, --version", "Print the flwr-ts version and exit.")
    .argument("<client-app>", 'The ClientApp to run, as MODULE:ATTRIBUTE, e.g. "client:app" (loaded from --dir).');
  addSuperNodeOptions(program);
  routeOutput(program, io);
  return program;
}

/** Loads `ref` from `dir`; accepts a ClientApp or a function returning one (called once). */
export function loadClientApp(ref: string, dir: string): ClientApp {
  const { attribute } = parseAppReference(ref);
  const value = loadAppObject(ref, dir);
  if (ClientApp.isClientApp(value)) return value;
  if (typeof value === "function") {
    let made: unknown;
    try {
      made = (value as () => unknown)();
    } catch (err) {
      throw new AppLoadError(
        `Calling "${attribute}" (from "${ref}") to create the ClientApp failed: ${errorMessage(err)}`,
        {
          cause: err,
        },
      );
    }
    if (ClientApp.isClientApp(made)) return made;
    throw new AppLoadError(`"${attribute}" (from "${ref}") is a function but did not return a ClientApp`);
  }
  throw new AppLoadError(
    `Attribute "${attribute}" (from "${ref}") is not a ClientApp: export \`const ${attribute} = new ClientApp(...)\``,
  );
}

/**
 * `--rest`: the URL's scheme decides TLS, as in Flower (which ignores --insecure there); flags
 * that contradict the scheme are refused instead of being ignored.
 */
function checkRestFlags(superlink: string, opts: ClientAppCliOptions, logger: Logger): void {
  const url = parseRestBaseUrl(superlink);
  const secure = url.protocol === "https:";
  if (secure && opts.insecure) {
    throw new InvalidConfigError(
      `Conflicting options: --insecure with the https:// SuperLink URL ${superlink}. Use http:// or drop --insecure.`,
    );
  }
  if (!secure && opts.rootCertificates !== undefined) {
    throw new InvalidConfigError(
      `Conflicting options: --root-certificates with the http:// SuperLink URL ${superlink}. Use https://.`,
    );
  }
  if (!secure && (opts.authSupernodePrivateKey !== undefined || opts.authSupernodePublicKey !== undefined)) {
    throw new InvalidConfigError("Authentication requires a secure connection: use an https:// SuperLink URL.");
  }
  if (!secure && !opts.insecure) logger.warn(`Connecting without TLS to the http:// SuperLink URL ${superlink}.`);
}

/**
 * Turns parsed flags into a SuperNodeConfig; throws typed errors (exit code 2). `app` replaces
 * loading `ref` (flower-supernode passes its per-run app source).
 */
export function configFromOptions(
  ref: string,
  opts: ClientAppCliOptions,
  logger: Logger,
  app?: SuperNodeConfig["app"],
): SuperNodeConfig {
  if (opts.grpcAdapter) {
    throw new InvalidConfigError("--grpc-adapter is not supported by flwr-ts: grpc-rere (the default) and --rest are.");
  }
  const superlink = superlinkAddress(opts, DEFAULT_FLEET_API_ADDRESS, "Fleet API", logger);
  if (opts.rest) checkRestFlags(superlink, opts, logger);
  const tls = clientTlsFromFlags(opts, superlink, "system-roots", logger);

  const clientApp = app ?? loadClientApp(ref, opts.dir);

  const keys = [opts.authSupernodePrivateKey, opts.authSupernodePublicKey];
  if (keys.filter((k) => k !== undefined).length === 1) {
    throw new InvalidConfigError(
      "Authentication requires file paths to both '--auth-supernode-private-key' and " +
        "'--auth-supernode-public-key' to be provided (providing only one of them is not sufficient).",
    );
  }
  const { authSupernodePrivateKey: privatePath, authSupernodePublicKey: publicPath } = opts;
  const authWanted = privatePath !== undefined && publicPath !== undefined;
  if (authWanted && opts.insecure) {
    throw new InvalidConfigError(
      "Authentication requires a secure connection: drop --insecure (and pass --root-certificates if needed).",
    );
  }
  // Throws InvalidKeyFileError naming the file for an unreadable key or a mismatched pair.
  const auth =
    privatePath !== undefined && publicPath !== undefined ? loadKeyPairFiles(privatePath, publicPath) : undefined;

  return {
    superlink,
    ...(opts.rest ? { transport: "rest" as const } : {}),
    ...tls,
    insecure: opts.insecure,
    ...(auth !== undefined ? { auth } : {}),
    app: clientApp,
    nodeConfig: parseNodeConfig(opts.nodeConfig),
    ...(opts.maxRetries !== undefined ? { maxRetries: opts.maxRetries } : {}),
    ...(opts.maxWaitTime !== undefined ? { maxWaitTimeMs: opts.maxWaitTime * 1000 } : {}),
    pollIntervalMs: opts.pollIntervalMs,
    ...testPingInterval(),
  };
}

/**
 * FLWR_TEST_PING_INTERVAL (seconds; for tests only): the ping_interval to announce instead of
 * Flower's 30 s, so a test sees a killed node go offline in seconds. The SuperLink still clamps
 * it into --min-ping-interval..--max-ping-interval; startSuperNode refuses a non-positive value.
 */
function testPingInterval(): Pick<SuperNodeConfig, "pingIntervalSeconds"> {
  const seconds = process.env.FLWR_TEST_PING_INTERVAL;
  return seconds === undefined || seconds === "" ? {} : { pingIntervalSeconds: Number(seconds) };
}

/**
 * Runs the SuperNode command line. `argv` is process.argv-shaped (node, script, ...args).
 * Resolves with the exit code once the node stopped (or failed to start).
 */
export async function main(argv: string[], io: CliIo = {}): Promise<number> {
  const program = buildCommand(io);
  const parseExit = parseOrExitCode(program, argv);
  if (parseExit !== undefined) return parseExit;
  const opts = program.opts<ClientAppCliOptions>();
  const ref = program.args[0]!;
  const logger = createCliLogger(
    {
      level: opts.logLevel,
      component: "supernode",
      ...(opts.logFormat !== undefined ? { logFormat: opts.logFormat } : {}),
    },
    io,
  );
  logger.info("Long-running Flower client starting");
  enableGrpcExtensions({ logger });

  let config: SuperNodeConfig;
  try {
    config = configFromOptions(ref, opts, logger);
  } catch (err) {
    reportFatal(logger, NAME, err);
    return exitCodeFor(err);
  }
  return runDaemon(() => startSuperNode(config, { logger }), {
    name: NAME,
    logger,
    graceMs: opts.shutdownGraceMs,
  });
}

/** Entry point of bin/flower-client-app. */
export function run(): void {
  runMain(NAME, (argv) => main(argv));
}
