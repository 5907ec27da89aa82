/**
 * pino logger factory. The destination is injectable so tests can read the JSON lines;
 * daemons log synchronously to stderr so the last lines survive an abrupt exit.
 */
import pino from "pino";

export type Logger = pino.Logger;

export interface LoggerOptions {
  /** pino level name; default "info". */
  level?: string;
  /** Fixed bindings on every line, e.g. `{ component: "superlink" }`. */
  base?: Record<string, unknown>;
}

export function createLogger(options: LoggerOptions = {}, destination?: pino.DestinationStream): Logger {
  const dest = destination ?? pino.destination({ fd: 2, sync: true });
  return pino(
    {
      level: options.level ?? "info",
      base: options.base ?? null,
      timestamp: pino.stdTimeFunctions.isoTime,
      serializers: { err: pino.stdSerializers.err },
    },
    dest,
  );
}

/** A logger that drops everything; the default for library use and unit tests. */
export function silentLogger(): Logger {
  return pino({ level: "silent" });
}
