/**
 * A ServerApp: what `flower-server-app module:attr` loads and runs against a Driver.
 *
 * Two forms, as Flower 1.10:
 *  - legacy:  `new ServerApp({ config: { numRounds: 3 }, strategy: new FedAvg(...) })` runs
 *    Flower's `start_driver` loop (docs/protocol.md, "Strategy loop and History") and returns its History;
 *  - Message API: `new ServerApp({ main: async (driver, context) => {...} })` hands the Driver
 *    to user code and returns an empty History.
 * A `serverFn` form (Flower's `ServerApp(server_fn=...)`) builds the legacy components from the
 * run Context.
 *
 * Instances carry the `Symbol.for("flwr-ts.ServerApp")` brand, so an app compiled against
 * another copy of this package (e.g. loaded through ts-node from src/) is still recognised.
 */
import { InvalidConfigError } from "../core/errors";
import { type Logger, silentLogger } from "../core/logger";
import type { Context } from "../core/records/types";
import { SimpleClientManager, driverNodeDiscovery } from "./client-manager";
import type { Driver } from "./driver";
import { History } from "./history";
import { Server, type ServerConfig, describeServerConfig, resolveServerConfig, runFl } from "./round-loop";
import type { Awaitable, Strategy } from "./strategy/strategy";

const kServerApp = Symbol.for("flwr-ts.ServerApp");

/** The legacy components (Flower's `ServerAppComponents`). */
export interface ServerAppComponents {
  config?: ServerConfig;
  /** Default: FedAvg with Flower's defaults. */
  strategy?: Strategy;
}

export type ServerAppMain = (driver: Driver, context: Context) => Awaitable<void>;
export type ServerFn = (context: Context) => Awaitable<ServerAppComponents>;

export type ServerAppOptions = ServerAppComponents | { main: ServerAppMain } | { serverFn: ServerFn };

export interface ServerAppRunOptions {
  logger?: Logger;
  /** Aborting stops the run between or during waits; run() rejects with the abort reason. */
  signal?: AbortSignal;
  /** Receives the [SUMMARY] lines of a legacy run (stdout in the CLI). */
  out?: (line: string) => void;
}

/** The shape runServerApp relies on, whichever copy of this module created the app. */
export interface ServerAppLike {
  run(driver: Driver, context: Context, opts?: ServerAppRunOptions): Promise<History>;
}

export class ServerApp implements ServerAppLike {
  private readonly options: ServerAppOptions;

  constructor(options: ServerAppOptions = {}) {
    const keys = Object.keys(options);
    const hasMain = "main" in options;
    const hasServerFn = "serverFn" in options;
    const hasLegacy = keys.includes("config") || keys.includes("strategy");
    if ([hasMain, hasServerFn, hasLegacy].filter(Boolean).length > 1) {
      throw new InvalidConfigError(
        "Use either a `main` function, a `serverFn`, or `config`/`strategy` for a ServerApp, not several of them",
      );
    }
    if (hasMain && typeof (options as { main: unknown }).main !== "function") {
      throw new InvalidConfigError("ServerApp `main` must be a function (driver, context) => Promise<void>");
    }
    if (hasServerFn && typeof (options as { serverFn: unknown }).serverFn !== "function") {
      throw new InvalidConfigError("ServerApp `serverFn` must be a function (context) => ServerAppComponents");
    }
    if (hasLegacy) resolveServerConfig((options as ServerAppComponents).config);
    this.options = options;
    Object.defineProperty(this, kServerApp, { value: true });
  }

  /** Brand check that also accepts ServerApps made by another copy of this package. */
  static isServerApp(value: unknown): value is ServerAppLike {
    return (
      typeof value === "object" &&
      value !== null &&
      (value as Record<symbol, unknown>)[kServerApp] === true &&
      typeof (value as { run?: unknown }).run === "function"
    );
  }

  /** Runs the app to completion with `driver`. Returns the History (empty for `main` apps). */
  async run(driver: Driver, context: Context, opts: ServerAppRunOptions = {}): Promise<History> {
    const logger = opts.logger ?? silentLogger();
    if ("main" in this.options) {
      await this.options.main(driver, context);
      logger.debug("ServerApp finished running.");
      return new History();
    }
    const components = "serverFn" in this.options ? await this.options.serverFn(context) : this.options;
    return runLegacy(driver, components, { ...opts, logger });
  }
}

/** Flower's `start_driver`: a client pool fed from GetNodes, the Server loop, the summary. */
async function runLegacy(
  driver: Driver,
  components: ServerAppComponents,
  opts: ServerAppRunOptions & { logger: Logger },
): Promise<History> {
  const { logger, signal } = opts;
  const config = resolveServerConfig(components.config);
  const clientManager = new SimpleClientManager({
    discover: driverNodeDiscovery(driver, { logger }),
    logger,
    ...(signal ? { signal } : {}),
  });
  const server = new Server({
    clientManager,
    ...(components.strategy ? { strategy: components.strategy } : {}),
    logger,
  });
  logger.info(
    { event: "serverapp.start", numRounds: config.numRounds, roundTimeoutSeconds: config.roundTimeoutSeconds ?? null },
    `Starting Flower ServerApp, config: ${describeServerConfig(config)}`,
  );
  const { history } = await runFl(server, config, opts);
  return history;
}
