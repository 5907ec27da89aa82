/**
 * Runs one ServerApp against a SuperLink, as `flower-server-app` does (docs/protocol.md, "ServerApp"): connect the
 * GrpcDriver (CreateRun unless a run id is given, then GetRun), build the Context
 * (node 0, empty configs, empty state), run the app, close the channel. The [SUMMARY] lines go
 * to `out`; the History is returned and, if asked, written as JSON.
 */
import { existsSync, statSync, writeFileSync } from "node:fs";
import { dirname, resolve } from "node:path";
import { AppLoadError, InvalidConfigError, errorMessage } from "../core/errors";
import type { Logger } from "../core/logger";
import { type Context, RecordSet } from "../core/records/types";
import type { History } from "../server/history";
import { historyToSvg } from "../server/history-plot";
import { ServerApp } from "../server/server-app";
import type { ClientCertificate } from "../transport/tls";
import { GrpcDriver, type GrpcDriverConfig } from "./grpc-driver";
import { activeGrpcExtensions } from "../transport/grpc-extensions";

export interface RunServerAppConfig {
  /** The loaded app; must be a ServerApp (checked by brand, see ServerApp.isServerApp). */
  app: unknown;
  /** Driver API address, HOST:PORT. */
  superlink: string;
  rootCertificates?: Buffer;
  insecure?: boolean;
  /** Presented to a Driver API that requires client certificates (mutual TLS). */
  clientCertificate?: ClientCertificate;
  fabId?: string;
  fabVersion?: string;
  /** Attach to an existing run instead of creating one. */
  runId?: bigint;
  /** Write the History as an SVG chart (server/history-plot.ts) here when the run ends. */
  historyPlotPath?: string;
  /** Write History.toJSON() here when the run ends. */
  historyJsonPath?: string;
  /** Passed to GrpcDriver (pollIntervalMs, connectTimeoutMs, retryDeadlineMs, channelOptions). */
  driver?: Pick<GrpcDriverConfig, "pollIntervalMs" | "connectTimeoutMs" | "retryDeadlineMs" | "channelOptions">;
}

export interface RunServerAppDeps {
  logger: Logger;
  /** Receives the summary/history lines (the CLI prints them to stdout). */
  out?: (line: string) => void;
  /** Aborting stops the run; runServerApp then rejects with the abort reason. */
  signal?: AbortSignal;
}

function checkHistoryPath(path: string, flag = "--history-json"): void {
  const dir = dirname(resolve(path));
  if (!existsSync(dir) || !statSync(dir).isDirectory()) {
    throw new InvalidConfigError(`${flag}: directory "${dir}" does not exist`);
  }
  if (existsSync(path) && statSync(path).isDirectory()) {
    throw new InvalidConfigError(`${flag}: "${path}" is a directory`);
  }
}

function writeHistoryFile(path: string, text: string): void {
  try {
    writeFileSync(path, text);
  } catch (err) {
    throw new InvalidConfigError(`Cannot write the history to "${path}": ${errorMessage(err)}`, { cause: err });
  }
}

/**
 * Runs the app to completion and returns its History. Rejects with AppLoadError (not a
 * ServerApp), InvalidConfigError, ConnectionError (SuperLink unreachable or gone),
 * NotFoundError (unknown run), or whatever the app itself throws. The channel is always closed.
 */
export async function runServerApp(config: RunServerAppConfig, deps: RunServerAppDeps): Promise<History> {
  const { logger, signal } = deps;
  if (!ServerApp.isServerApp(config.app)) {
    throw new AppLoadError("The loaded object is not a ServerApp (create it with `new ServerApp({...})` from flwr-ts)");
  }
  const app = config.app;
  if (config.historyJsonPath !== undefined) checkHistoryPath(config.historyJsonPath);
  if (config.historyPlotPath !== undefined) checkHistoryPath(config.historyPlotPath, "--history-plot");
  signal?.throwIfAborted();

  const driver = await GrpcDriver.connect(
    {
      superlink: config.superlink,
      ...(config.rootCertificates !== undefined ? { rootCertificates: config.rootCertificates } : {}),
      ...(config.insecure ? { insecure: true } : {}),
      ...(config.clientCertificate !== undefined ? { clientCertificate: config.clientCertificate } : {}),
      ...(config.fabId !== undefined ? { fabId: config.fabId } : {}),
      ...(config.fabVersion !== undefined ? { fabVersion: config.fabVersion } : {}),
      ...(config.runId !== undefined ? { runId: config.runId } : {}),
      ...config.driver,
    },
    { logger },
  );
  let history: History;
  try {
    const runId = driver.runId.toString();
    // The ServerApp's ready line: it reached the Driver API and has its run.
    const grpcExtensions = activeGrpcExtensions();
    const extensionsText = `grpc-js extensions: ${grpcExtensions.join(", ") || "none"}`;
    if (driver.runCreated) {
      logger.info({ event: "serverapp.run-created", runId, grpcExtensions }, `Created run ${runId}; ${extensionsText}`);
    } else {
      logger.info(
        { event: "serverapp.run-attached", runId, grpcExtensions },
        `Using existing run ${runId}; ${extensionsText}`,
      );
    }
    const context: Context = { nodeId: 0n, nodeConfig: {}, state: new RecordSet(), runConfig: {} };
    history = await app.run(driver, context, {
      logger,
      ...(signal ? { signal } : {}),
      ...(deps.out ? { out: deps.out } : {}),
    });
  } finally {
    driver.close();
  }

  if (config.historyJsonPath !== undefined) {
    writeHistoryFile(config.historyJsonPath, JSON.stringify(history.toJSON(), null, 2) + "\n");
  }
  if (config.historyPlotPath !== undefined) {
    writeHistoryFile(config.historyPlotPath, historyToSvg(history, `Flower run ${driver.runId}`));
    logger.info(
      { event: "serverapp.history-plot-written", path: config.historyPlotPath },
      `History chart written to ${config.historyPlotPath}`,
    );
  }
  logger.info({ event: "serverapp.finished", runId: driver.runId.toString() }, "ServerApp finished");
  return history;
}
