/**
 * What the three command lines share: redirectable outputs (so tests run `main()` in-process),
 * log levels, parsing with commander's exits turned into exit codes, and Flower's
 * `--server` / `--superlink` precedence.
 */
import type pino from "pino";
import { type Command, CommanderError } from "commander";
import type { Logger } from "../core/logger";
import { EXIT_CONFIG, EXIT_OK } from "./run-daemon";

export const LOG_LEVELS = ["fatal", "error", "warn", "info", "debug", "trace", "silent"];

/** Redirectable outputs, so tests can run main() in-process. */
export interface CliIo {
  /** Help and version text. Default: process.stdout. */
  writeOut?: (text: string) => void;
  /** Usage errors. Default: process.stderr. */
  writeErr?: (text: string) => void;
  /** Where JSON log lines go. Default: stderr (synchronous). */
  logDestination?: pino.DestinationStream;
}

/** Sends commander's help and usage errors to `io` (default: stdout / stderr). */
export function routeOutput(program: Command, io: CliIo): Command {
  return program.configureOutput({
    writeOut: io.writeOut ?? ((s) => process.stdout.write(s)),
    writeErr: io.writeErr ?? ((s) => process.stderr.write(s)),
  });
}

/**
 * Parses `argv` (process.argv-shaped). Returns undefined when parsing succeeded, otherwise the
 * exit code: 0 after --help/--version, EXIT_CONFIG after a usage error (already printed).
 * `program` must have `exitOverride()` set.
 */
export function parseOrExitCode(program: Command, argv: string[]): number | undefined {
  try {
    program.parse(argv, { from: "node" });
    return undefined;
  } catch (err) {
    if (err instanceof CommanderError) {
      const benign = err.code === "commander.helpDisplayed" || err.code === "commander.version" || err.code === "commander.help";
      return benign ? EXIT_OK : EXIT_CONFIG;
    }
    throw err;
  }
}

/**
 * The address to dial after Flower's precedence between `--superlink` and the deprecated
 * `--server` (spec §6.1): `--server` counts only when changed from its default, and loses
 * (with a warning) when `--superlink` was changed too.
 */
export function superlinkAddress(
  flags: { server: string; superlink: string },
  defaultAddress: string,
  apiName: string,
  logger: Logger,
): string {
  if (flags.server === defaultAddress) return flags.superlink;
  logger.warn("DEPRECATED FEATURE: Passing flag --server is deprecated. Use --superlink instead.");
  if (flags.superlink !== defaultAddress) {
    logger.warn(
      "Both `--server` and `--superlink` were passed. `--server` will be ignored. " +
        `Connecting to the Superlink ${apiName} at ${flags.superlink}.`,
    );
    return flags.superlink;
  }
  return flags.server;
}

/**
 * Drops Node's DEP0123 warning ("Setting the TLS ServerName to an IP address…"), and only it.
 * grpc-js always sends the dialled host as SNI, so `--superlink 127.0.0.1:9092` (the documented
 * command) would print it on every connection; the certificate is still checked against the
 * IP address SANs, so the warning tells the user nothing they can act on.
 */
export function silenceIpServernameWarning(): void {
  const emitWarning = process.emitWarning.bind(process) as (...args: unknown[]) => void;
  process.emitWarning = ((warning: unknown, ...rest: unknown[]) => {
    const code = typeof rest[0] === "object" && rest[0] !== null ? (rest[0] as { code?: unknown }).code : rest[1];
    if (code === "DEP0123") return;
    emitWarning(warning, ...rest);
  }) as typeof process.emitWarning;
}
