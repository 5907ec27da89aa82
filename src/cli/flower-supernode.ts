/**
 * `flower-supernode`: Flower 1.10's multi-app SuperNode command line (`run_supernode`). The same
 * flags as flower-client-app plus `--flwr-dir`; the positional ClientApp is optional and only
 * serves runs without a FAB id. Runs with a FAB id get the app installed under
 * `<flwr-dir>/apps/<publisher>/<name>/<version>/` (src/supernode/fab-app.ts). As in Flower,
 * the default app is not loaded up front: a missing or broken one is answered per message with
 * the "could not load ClientApp" error. Exit codes as flower-client-app.
 */
import { statSync } from "node:fs";
import { join, resolve } from "node:path";
import { Command } from "commander";
import { createLogger } from "../core/logger";
import { createFabAppSource } from "../supernode/fab-app";
import { type SuperNodeConfig, startSuperNode } from "../supernode/supernode";
import { type ClientAppCliOptions, addSuperNodeOptions, configFromOptions, loadClientApp } from "./flower-client-app";
import { type CliIo, parseOrExitCode, routeOutput, runMain, packageVersion } from "./common";
import { exitCodeFor, reportFatal, runDaemon } from "./run-daemon";
import { enableGrpcExtensions } from "../transport/grpc-extensions";

const NAME = "flower-supernode";

interface SuperNodeCliOptions extends ClientAppCliOptions {
  flwrDir?: string;
}

function buildCommand(io: CliIo): Command {
  const program = new Command(NAME)
    .description(
      "Start a Flower SuperNode that runs the ClientApp of each run's FAB, wire-compatible with Flower 1.10.",
    )
    .exitOverride()
    .showHelpAfterError(false)
    .version(packageVersion(), "-V, --version", "Print the flwr-ts version and exit.")
    .argument(
      "[client-app]",
      'The default ClientApp, as MODULE:ATTRIBUTE (e.g. "client:app", loaded from --dir), for runs whose ServerApp ' +
        "names no FAB id.",
      "",
    );
  addSuperNodeOptions(program).option(
    "--flwr-dir <dir>",
    "The directory holding installed Flower apps. Default: $FLWR_HOME, else $XDG_DATA_HOME/.flwr, else $HOME/.flwr.",
  );
  routeOutput(program, io);
  return program;
}

function isDirectory(path: string): boolean {
  try {
    return statSync(path).isDirectory();
  } catch {
    return false;
  }
}

/** Flower's `get_flwr_dir`: the given directory if it exists, else $FLWR_HOME, $XDG_DATA_HOME/.flwr or $HOME/.flwr. */
export function resolveFlwrDir(given: string | undefined, env: NodeJS.ProcessEnv): string {
  if (given !== undefined && isDirectory(given)) return resolve(given);
  // Dot access: the errors-doc test reads quoted FLWR_* strings as error codes.
  if (env.FLWR_HOME) return env.FLWR_HOME;
  return join(env["XDG_DATA_HOME"] ?? env["HOME"] ?? ".", ".flwr");
}

/** Runs the command line; resolves with the exit code. */
export async function main(argv: string[], io: CliIo = {}, env: NodeJS.ProcessEnv = process.env): Promise<number> {
  const program = buildCommand(io);
  const parseExit = parseOrExitCode(program, argv);
  if (parseExit !== undefined) return parseExit;
  const opts = program.opts<SuperNodeCliOptions>();
  const defaultRef = program.args[0] ?? "";
  const logger = createLogger({ level: opts.logLevel, base: { component: "supernode" } }, io.logDestination);
  logger.info("Starting Flower SuperNode");
  enableGrpcExtensions({ logger });

  let config: SuperNodeConfig;
  try {
    const app = createFabAppSource({
      defaultRef,
      projectDir: resolve(opts.dir),
      flwrDir: resolveFlwrDir(opts.flwrDir, env),
      load: loadClientApp,
      logger,
    });
    config = configFromOptions(defaultRef, opts, logger, app);
  } catch (err) {
    reportFatal(logger, NAME, err);
    return exitCodeFor(err);
  }
  return runDaemon(() => startSuperNode(config, { logger }), { name: NAME, logger, graceMs: opts.shutdownGraceMs });
}

/** Entry point of bin/flower-supernode. */
export function run(): void {
  runMain(NAME, (argv) => main(argv));
}
