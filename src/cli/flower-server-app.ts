/**
 * `flower-server-app`: Flower 1.10's ServerApp runner command line (docs/protocol.md, "ServerApp") plus flwr-ts
 * options (--history-json, --log-level, and --ssl-certfile/--ssl-keyfile: the client
 * certificate for a SuperLink started with --driver-api-client-ca). Loads `module:attr` from --dir, connects to the
 * SuperLink's Driver API, runs the app, prints the [SUMMARY] / History text to stdout (logs go
 * to stderr) and returns the exit code: 0 success, 1 the run failed (SuperLink unreachable or
 * gone, a round error), 2 bad configuration, files or app, 3 the run ended but some round had no
 * successful fit result, 130 interrupted (SIGINT/SIGTERM).
 *
 * Fixed Flower bug: without --root-certificates and without --insecure, Flower 1.10 silently
 * connects in plaintext; flwr-ts refuses and says what to pass.
 */
import { Command, InvalidArgumentError, Option } from "commander";
import { DEFAULT_DRIVER_API_ADDRESS } from "../core/constants";
import { loadAppObject } from "./app-loader";
import { AppLoadError, InvalidConfigError } from "../core/errors";
import { DEFAULT_RETRY_DEADLINE_MS } from "../serverapp/grpc-driver";
import { type RunServerAppConfig, runServerApp } from "../serverapp/run-server-app";
import { type ClientCertificate, readClientCertificateFiles } from "../transport/tls";
import {
  type CliIo as CommonCliIo,
  LOG_LEVELS,
  LOG_FORMATS,
  LOG_FORMAT_HELP,
  createCliLogger,
  parseOrExitCode,
  routeOutput,
  superlinkAddress,
  clientTlsFromFlags,
  runMain,
  packageVersion,
} from "./common";
import { EXIT_NO_FIT_RESULTS, EXIT_OK, EXIT_SIGNAL, exitCodeFor, reportFatal } from "./run-daemon";
import { enableGrpcExtensions } from "../transport/grpc-extensions";

const NAME = "flower-server-app";
const INT64_MIN = -(2n ** 63n);
const INT64_MAX = 2n ** 63n - 1n;

interface ServerAppOptions {
  insecure: boolean;
  verbose: boolean;
  rootCertificates?: string;
  sslCertfile?: string;
  sslKeyfile?: string;
  server: string;
  superlink: string;
  dir: string;
  fabId?: string;
  fabVersion?: string;
  runId?: bigint;
  flwrDir?: string;
  historyPlot?: string;
  historyJson?: string;
  retryDeadline: number;
  logLevel: string;
  logFormat?: string;
}

function secondsArg(value: string): number {
  const seconds = Number(value.trim());
  if (value.trim() === "" || !Number.isFinite(seconds) || seconds < 0)
    throw new InvalidArgumentError("Must be a non-negative number of seconds.");
  return seconds;
}

function runIdArg(value: string): bigint {
  if (!/^-?\d+$/.test(value.trim())) throw new InvalidArgumentError("Must be an integer run id.");
  const id = BigInt(value.trim());
  if (id < INT64_MIN || id > INT64_MAX) throw new InvalidArgumentError("Must be a signed 64-bit integer.");
  return id;
}

/** The shared outputs, plus where the History goes and a way to stop the run from a test. */
export interface CliIo extends CommonCliIo {
  /** Receives the printed History. Default: process.stdout. */
  out?: (text: string) => void;
  /** Aborting it stops the run like SIGINT does. */
  signal?: AbortSignal;
}

function buildCommand(io: CliIo): Command {
  const program = new Command(NAME)
    .description("Start a Flower ServerApp against a SuperLink, wire-compatible with Flower 1.10.")
    .exitOverride()
    .showHelpAfterError(false)
    .version(packageVersion(), "-V, --version", "Print the flwr-ts version and exit.")
    .argument("[server-app]", "For example: `server:app` or `project.package.module:wrapper.app`")
    .option(
      "--insecure",
      "Connect to the SuperLink without TLS. Use this flag only if you understand the risks.",
      false,
    )
    .option("--verbose", "Set the logging to `DEBUG`.", false)
    .option(
      "--root-certificates <path>",
      "Path to the PEM-encoded root certificate file for establishing secure connections.",
    )
    .option(
      "--ssl-certfile <path>",
      "Client certificate (PEM) for a SuperLink started with --driver-api-client-ca (mutual TLS).",
    )
    .option("--ssl-keyfile <path>", "Private key (PEM) of the --ssl-certfile client certificate.")
    .option("--server <address>", "Server address (deprecated: use --superlink).", DEFAULT_DRIVER_API_ADDRESS)
    .option(
      "--superlink <address>",
      "SuperLink Driver API (gRPC-rere) address (IPv4, IPv6, or a domain name).",
      DEFAULT_DRIVER_API_ADDRESS,
    )
    .option("--dir <dir>", "Directory to load the ServerApp module from.", ".")
    .option("--fab-id <id>", "The identifier of the FAB used in the run.")
    .option("--fab-version <version>", "The version of the FAB used in the run.")
    .option("--run-id <id>", "The identifier of an existing run.", runIdArg)
    .option("--flwr-dir <dir>", "The path containing installed Flower Apps (accepted; flwr-ts does not install FABs).")
    .option(
      "--history-plot <path>",
      "Also write the training History as an SVG chart (losses and metrics per round) to this file.",
    )
    .option("--history-json <path>", "Also write the training History as JSON to this file.")
    .option(
      "--retry-deadline <seconds>",
      "How long one Driver API call keeps retrying while the SuperLink is unreachable (e.g. restarting) before the run fails; 0 = no retries.",
      secondsArg,
      DEFAULT_RETRY_DEADLINE_MS / 1000,
    )
    .addOption(
      new Option("--log-level <level>", "Log level (--verbose means debug).").choices(LOG_LEVELS).default("info"),
    )
    .addOption(new Option("--log-format <format>", LOG_FORMAT_HELP).choices(LOG_FORMATS));
  routeOutput(program, io);
  return program;
}

/** Exactly one of server-app and --run-id; flwr-ts can only run a given app. */
function appReference(app: string | undefined, opts: ServerAppOptions): string {
  if ((app === undefined) === (opts.runId === undefined)) {
    throw new InvalidConfigError(
      "Please provide either a ServerApp reference or a Run ID, but not both. " +
        "For more details, use: `flower-server-app -h`",
    );
  }
  if (app === undefined) {
    throw new InvalidConfigError(
      `--run-id ${opts.runId ?? ""} without a server-app: Flower loads the app of an installed FAB for that run, ` +
        "which flwr-ts does not support. Pass the ServerApp reference (e.g. `server:app`) instead.",
    );
  }
  return app;
}

/** The client certificate for mutual TLS on the Driver API: both of --ssl-certfile/--ssl-keyfile, or neither. */
function clientCertificateFromFlags(opts: ServerAppOptions): ClientCertificate | undefined {
  if (opts.sslCertfile === undefined && opts.sslKeyfile === undefined) return undefined;
  if (opts.insecure) {
    throw new InvalidConfigError(
      "Conflicting options: --insecure cannot be combined with --ssl-certfile/--ssl-keyfile (a client certificate needs TLS). " +
        "Drop --insecure and pass --root-certificates.",
    );
  }
  if (opts.sslCertfile === undefined || opts.sslKeyfile === undefined) {
    throw new InvalidConfigError(
      "A client certificate needs both --ssl-certfile (the certificate) and --ssl-keyfile (its private key); " +
        `only ${opts.sslCertfile !== undefined ? "--ssl-certfile" : "--ssl-keyfile"} was given.`,
    );
  }
  return readClientCertificateFiles({ certFile: opts.sslCertfile, keyFile: opts.sslKeyfile });
}

/**
 * Runs the command line. `argv` is process.argv-shaped (node, script, ...args). Resolves with
 * the exit code once the run ended (or failed).
 */
export async function main(argv: string[], io: CliIo = {}): Promise<number> {
  const program = buildCommand(io);
  const parseExit = parseOrExitCode(program, argv);
  if (parseExit !== undefined) return parseExit;
  const opts = program.opts<ServerAppOptions>();
  const appArg = program.args[0];
  const level = opts.verbose && program.getOptionValueSource("logLevel") !== "cli" ? "debug" : opts.logLevel;
  const logger = createCliLogger(
    { level, component: "serverapp", ...(opts.logFormat !== undefined ? { logFormat: opts.logFormat } : {}) },
    io,
  );
  enableGrpcExtensions({ logger });

  let config: RunServerAppConfig;
  try {
    const superlink = superlinkAddress(opts, DEFAULT_DRIVER_API_ADDRESS, "Driver API", logger);
    const credentials = clientTlsFromFlags(opts, superlink, "refuse", logger);
    const clientCertificate = clientCertificateFromFlags(opts);
    const ref = appReference(appArg, opts);
    if (opts.flwrDir !== undefined) logger.debug(`--flwr-dir ${opts.flwrDir} is accepted but not used by flwr-ts`);
    logger.debug(`Flower will load ServerApp \`${ref}\` in ${opts.dir}`);
    const app = loadAppObject(ref, opts.dir);
    if (typeof app !== "object" || app === null || typeof (app as { run?: unknown }).run !== "function") {
      throw new AppLoadError(
        `"${ref}" is not a ServerApp: export \`new ServerApp({...})\` from flwr-ts as "${ref.split(":")[1] ?? ""}"`,
      );
    }
    config = {
      app,
      superlink,
      ...credentials,
      ...(clientCertificate !== undefined ? { clientCertificate } : {}),
      ...(opts.fabId !== undefined ? { fabId: opts.fabId } : {}),
      ...(opts.fabVersion !== undefined ? { fabVersion: opts.fabVersion } : {}),
      ...(opts.historyPlot !== undefined ? { historyPlotPath: opts.historyPlot } : {}),
      ...(opts.historyJson !== undefined ? { historyJsonPath: opts.historyJson } : {}),
      driver: { retryDeadlineMs: opts.retryDeadline * 1000 },
    };
  } catch (err) {
    reportFatal(logger, NAME, err);
    return exitCodeFor(err);
  }

  const controller = new AbortController();
  const onSignal = (signal: NodeJS.Signals): void => {
    if (controller.signal.aborted) return;
    logger.warn(`${NAME}: ${signal} received, stopping the run`);
    controller.abort(new Error(`interrupted by ${signal}`));
  };
  const onExternalAbort = (): void => controller.abort(io.signal?.reason);
  process.on("SIGINT", onSignal);
  process.on("SIGTERM", onSignal);
  io.signal?.addEventListener("abort", onExternalAbort, { once: true });
  const out = io.out ?? ((text: string) => process.stdout.write(text));
  try {
    const history = await runServerApp(config, { logger, signal: controller.signal, out: (line) => out(line + "\n") });
    const failedRounds = history.roundsWithoutFitResults;
    if (failedRounds.length > 0) {
      logger.error(
        { event: "serverapp.no-fit-results", rounds: failedRounds, exitCode: EXIT_NO_FIT_RESULTS },
        `${NAME}: ${failedRounds.length} round(s) had no successful fit result (round ${failedRounds.join(", ")}): ` +
          `the model was not trained there; exiting with ${EXIT_NO_FIT_RESULTS}. See the warnings above for why the fits failed.`,
      );
      return EXIT_NO_FIT_RESULTS;
    }
    return EXIT_OK;
  } catch (err) {
    if (controller.signal.aborted) {
      logger.warn({ event: "serverapp.interrupted" }, `${NAME}: run interrupted`);
      return EXIT_SIGNAL;
    }
    reportFatal(logger, NAME, err);
    return exitCodeFor(err);
  } finally {
    process.off("SIGINT", onSignal);
    process.off("SIGTERM", onSignal);
    io.signal?.removeEventListener("abort", onExternalAbort);
  }
}

/** Entry point of bin/flower-server-app. */
export function run(): void {
  runMain(NAME, (argv) => main(argv));
}
