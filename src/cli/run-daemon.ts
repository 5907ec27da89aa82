/**
 * Owns the process for a long-running daemon: installs SIGINT/SIGTERM (graceful close with a
 * deadline, a second signal forces exit), optional SIGHUP, logs fatal errors, sets exit codes.
 * Only src/cli/ may use this: everything below it is signal- and exit-free.
 */
import type { Logger } from "../core/logger";
import { FlwrError, errorMessage } from "../core/errors";

export const EXIT_OK = 0;
/** Bad configuration, bad files, refused credentials: retrying the same command won't help. */
export const EXIT_CONFIG = 2;
/** A runtime failure (peer unreachable after retries, round failed). */
export const EXIT_FAILURE = 1;
/** flower-server-app: the run ended, but some round had no successful fit result (docs/errors.md). */
export const EXIT_NO_FIT_RESULTS = 3;
export const EXIT_SIGNAL = 130;

export interface DaemonHandle {
  /** Graceful stop; should resolve within `graceMs`. */
  close(graceMs: number): Promise<void>;
  /** Resolves (or rejects) when the daemon ends on its own. */
  done?: Promise<unknown>;
}

export interface RunDaemonOptions {
  name: string;
  logger: Logger;
  graceMs: number;
  onHangup?: () => void;
}

/** Exit code for an error thrown while starting or running a daemon. */
export function exitCodeFor(err: unknown): number {
  if (FlwrError.isFlwrError(err)) {
    switch (err.code) {
      case "FLWR_INVALID_CONFIG":
      case "FLWR_INVALID_KEY_FILE":
      case "FLWR_APP_LOAD_FAILED":
      case "FLWR_STATE_ERROR":
      case "FLWR_STATE_CORRUPT":
      case "FLWR_STATE_LOCKED":
      case "FLWR_AUTHENTICATION_FAILED":
        return EXIT_CONFIG;
      default:
        return EXIT_FAILURE;
    }
  }
  return EXIT_FAILURE;
}

/** Logs a startup/runtime failure the way a user should read it: the message, not a stack. */
export function reportFatal(logger: Logger, name: string, err: unknown): void {
  if (FlwrError.isFlwrError(err)) {
    logger.fatal({ code: err.code }, `${name}: ${err.message}`);
  } else {
    logger.fatal({ err }, `${name}: unexpected error: ${errorMessage(err)}`);
  }
}

/**
 * Starts a daemon, waits until a signal or its own end, and returns the exit code.
 * The caller (a bin wrapper) passes it to process.exit.
 */
export async function runDaemon(start: () => Promise<DaemonHandle>, opts: RunDaemonOptions): Promise<number> {
  const { logger, name } = opts;
  let handle: DaemonHandle;
  try {
    handle = await start();
  } catch (err) {
    reportFatal(logger, name, err);
    return exitCodeFor(err);
  }
  return new Promise<number>((resolveExit) => {
    let stopping = false;
    const cleanup = (): void => {
      process.off("SIGINT", onSignal);
      process.off("SIGTERM", onSignal);
      if (opts.onHangup) process.off("SIGHUP", onHangup);
    };
    const onSignal = (signal: NodeJS.Signals): void => {
      if (stopping) {
        logger.warn(`${name}: second ${signal}, exiting now`);
        cleanup();
        resolveExit(EXIT_SIGNAL);
        return;
      }
      stopping = true;
      logger.info(`${name}: ${signal} received, shutting down (grace ${opts.graceMs} ms)`);
      handle.close(opts.graceMs).then(
        () => {
          cleanup();
          logger.info(`${name}: stopped`);
          resolveExit(EXIT_OK);
        },
        (err: unknown) => {
          cleanup();
          reportFatal(logger, name, err);
          resolveExit(EXIT_FAILURE);
        },
      );
    };
    const onHangup = (): void => opts.onHangup?.();
    process.on("SIGINT", onSignal);
    process.on("SIGTERM", onSignal);
    if (opts.onHangup) process.on("SIGHUP", onHangup);
    handle.done?.then(
      () => {
        if (stopping) return;
        cleanup();
        resolveExit(EXIT_OK);
      },
      (err: unknown) => {
        if (stopping) return;
        cleanup();
        reportFatal(logger, name, err);
        resolveExit(exitCodeFor(err));
      },
    );
  });
}
