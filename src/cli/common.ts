/**
 * What the three command lines share: redirectable outputs (so tests run `main()` in-process),
 * log levels, parsing with commander's exits turned into exit codes, and Flower's
 * `--server` / `--superlink` precedence.
 */
import { readFileSync } from "node:fs";
import { join } from "node:path";
import * as grpc from "@grpc/grpc-js";
import type pino from "pino";
import { type Command, CommanderError, InvalidArgumentError } from "commander";
import { InvalidConfigError, errorMessage } from "../core/errors";
import { readRootCertificates } from "../transport/tls";
import { type LogFormat, type Logger, createLogger, formatLogLine } from "../core/logger";
import { EXIT_CONFIG, EXIT_OK } from "./run-daemon";

export const LOG_LEVELS = ["fatal", "error", "warn", "info", "debug", "trace", "silent"];
export const LOG_FORMATS: LogFormat[] = ["text", "json"];
/** Help text of every daemon's --log-format flag. */
export const LOG_FORMAT_HELP =
  "Log format: text (for people) or json (one pino JSON object a line). Default: text when stderr is a terminal, else json.";

/** Redirectable outputs, so tests can run main() in-process. */
export interface CliIo {
  /** Help and version text. Default: process.stdout. */
  writeOut?: (text: string) => void;
  /** Usage errors. Default: process.stderr. */
  writeErr?: (text: string) => void;
  /** Where log lines go. Default: stderr (synchronous). */
  logDestination?: pino.DestinationStream;
  /** Whether stderr is a terminal (picks the default --log-format). Default: process.stderr.isTTY, false with logDestination. */
  stderrIsTTY?: boolean;
}

/** --log-format as given, else text for a terminal (as Flower prints) and JSON for pipes and files. */
export function resolveLogFormat(flag: string | undefined, stderrIsTTY: boolean): LogFormat {
  if (flag === "text" || flag === "json") return flag;
  return stderrIsTTY ? "text" : "json";
}

/**
 * The daemon logger from --log-level / --log-format: stderr by default; an injected
 * destination (tests) receives text lines too when the format is text.
 */
export function createCliLogger(opts: { level: string; component: string; logFormat?: string }, io: CliIo): Logger {
  const sink = io.logDestination;
  // An injected destination is not stderr: it gets JSON unless asked otherwise.
  const tty = io.stderrIsTTY ?? (sink === undefined && process.stderr.isTTY);
  const format = resolveLogFormat(opts.logFormat, tty);
  const destination =
    sink !== undefined && format === "text"
      ? {
          write: (line: string): void => {
            sink.write(formatLogLine(line));
          },
        }
      : sink;
  return createLogger({ level: opts.level, base: { component: opts.component }, format }, destination);
}

/** The flwr-ts version from package.json (src/cli/ and dist/cli/ both sit two levels below it). */
export function packageVersion(): string {
  const pkg = JSON.parse(readFileSync(join(__dirname, "..", "..", "package.json"), "utf8")) as { version?: unknown };
  return typeof pkg.version === "string" ? pkg.version : "unknown";
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
      const benign =
        err.code === "commander.helpDisplayed" || err.code === "commander.version" || err.code === "commander.help";
      return benign ? EXIT_OK : EXIT_CONFIG;
    }
    throw err;
  }
}

/**
 * The address to dial after Flower's precedence between `--superlink` and the deprecated
 * `--server` (docs/protocol.md, "SuperNode"): `--server` counts only when changed from its default, and loses
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
  process.emitWarning = (warning: unknown, ...rest: unknown[]) => {
    const code = typeof rest[0] === "object" && rest[0] !== null ? (rest[0] as { code?: unknown }).code : rest[1];
    if (code === "DEP0123") return;
    emitWarning(warning, ...rest);
  };
}

/** Commander argument parser for a non-negative integer flag, with the flag named in the error. */
export function nonNegativeInt(flag: string): (value: string) => number {
  return (value) => {
    const n = Number(value);
    if (value.trim() === "" || !Number.isInteger(n) || n < 0) {
      throw new InvalidArgumentError(`${flag} must be a non-negative integer.`);
    }
    return n;
  };
}

/**
 * The client side's TLS choice from `--insecure` / `--root-certificates` (Flower's texts).
 * Without either, a SuperNode uses the system trust store (as Flower), while a ServerApp
 * refuses: Flower 1.10 silently falls back to plaintext there.
 */
export function clientTlsFromFlags(
  flags: { insecure: boolean; rootCertificates?: string },
  target: string,
  withoutRoots: "system-roots" | "refuse",
  logger: Logger,
): { insecure?: true; rootCertificates?: Buffer } {
  if (flags.insecure) {
    if (flags.rootCertificates !== undefined) {
      throw new InvalidConfigError(
        "Conflicting options: The '--insecure' flag disables HTTPS, but '--root-certificates' was also specified. " +
          "Please remove the '--root-certificates' option when running in insecure mode, or omit '--insecure' to use HTTPS.",
      );
    }
    logger.warn(`Option \`--insecure\` was set. Starting insecure HTTP client connected to ${target}.`);
    return { insecure: true };
  }
  if (flags.rootCertificates === undefined && withoutRoots === "refuse") {
    throw new InvalidConfigError(
      "No --root-certificates given. flwr-ts does not fall back to a plaintext connection silently " +
        "(Flower 1.10 does). Pass --root-certificates PATH (the CA certificate of the SuperLink) to connect " +
        "with TLS, or --insecure to connect without TLS if you understand the risks.",
    );
  }
  logger.debug(
    `Starting secure HTTPS client connected to ${target} with the following certificates: ${flags.rootCertificates ?? "(system)"}.`,
  );
  return flags.rootCertificates === undefined ? {} : { rootCertificates: readRootCertificates(flags.rootCertificates) };
}

/**
 * True for a listen host that only this machine can reach: localhost, 127.0.0.0/8, ::1 (also
 * IPv4-mapped). 0.0.0.0, ::, other addresses and other names count as reachable from outside.
 */
export function isLoopbackHost(host: string): boolean {
  const h = host.toLowerCase().replace(/^\[|\]$/g, "");
  if (h === "localhost" || h === "::1" || h === "0:0:0:0:0:0:0:1") return true;
  const v4 = h.startsWith("::ffff:") ? h.slice("::ffff:".length) : h;
  return /^127\.\d{1,3}\.\d{1,3}\.\d{1,3}$/.test(v4);
}

/** Node's errno codes for an address this process cannot listen on, and what they mean. */
const LISTEN_FAILURES: Record<string, string> = {
  EADDRINUSE: "is already in use: another process (perhaps a SuperLink still running) listens there",
  EADDRNOTAVAIL: "is not an address of this machine",
};

/**
 * A failed start because a listen address is unusable, as an InvalidConfigError (exit 2) that
 * names the flag to change; undefined for any other failure. `flags` pairs each listening
 * flag with the address it was given; the failed address is found in the error's message.
 */
export function listenFailureError(
  err: unknown,
  flags: ReadonlyArray<readonly [flag: string, address: string]>,
): InvalidConfigError | undefined {
  const text = errorMessage(err);
  const errno = Object.keys(LISTEN_FAILURES).find((code) => text.includes(code));
  if (errno === undefined) return undefined;
  const culprits = flags.filter(([, address]) => text.includes(` on ${address}:`));
  const named = culprits.length > 0 ? culprits : flags;
  const which = named.map(([flag, address]) => `${address} (${flag})`).join(" or ");
  return new InvalidConfigError(
    `Cannot listen on ${which}: the address ${LISTEN_FAILURES[errno] ?? "cannot be used"} (${errno}). ` +
      `Pass another address or port with ${named.map(([flag]) => flag).join(" / ")}.`,
    { cause: err },
  );
}

/**
 * grpc-js logs "E No address added out of total N resolved" on its own when a bind fails, and
 * then rejects with that same text plus the reason; the rejection is reported properly, so the
 * stray line is dropped. Every other grpc-js log line is kept.
 */
function dropGrpcBindLogLine(): void {
  // grpc-js's default logger, with that one line left out (grpc-js exports no getter for it).
  grpc.setLogger({
    error: (message?: unknown, ...rest: unknown[]) => {
      if (typeof message === "string" && message.startsWith("No address added out of total")) return;
      console.error(`E ${String(message)}`, ...rest);
    },
    info: (message?: unknown, ...rest: unknown[]) => console.error(`I ${String(message)}`, ...rest),
    debug: (message?: unknown, ...rest: unknown[]) => console.error(`D ${String(message)}`, ...rest),
  });
}

/** A bin wrapper's whole job: run `main` on process.argv and exit with its code. */
export function runMain(name: string, main: (argv: string[]) => Promise<number>): void {
  silenceIpServernameWarning();
  dropGrpcBindLogLine();
  main(process.argv).then(
    (code) => process.exit(code),
    (err: unknown) => {
      process.stderr.write(`${name}: unexpected error: ${errorMessage(err)}\n`);
      process.exit(1);
    },
  );
}
