/**
 * pino logger factory. The destination is injectable so tests can read the JSON lines;
 * daemons log synchronously to stderr so the last lines survive an abrupt exit.
 * `format: "text"` renders each line for people (`INFO  [superlink] message key=value`),
 * `"json"` keeps pino's JSON lines for machines.
 */
import { writeSync } from "node:fs";
import pino from "pino";

export type Logger = pino.Logger;
export type LogFormat = "json" | "text";

export interface LoggerOptions {
  /** pino level name; default "info". */
  level?: string;
  /** Fixed bindings on every line, e.g. `{ component: "superlink" }`. */
  base?: Record<string, unknown>;
  /** Default "json". */
  format?: LogFormat;
}

export function createLogger(options: LoggerOptions = {}, destination?: pino.DestinationStream): Logger {
  const format = options.format ?? "json";
  const dest =
    destination ?? (format === "text" ? textDestination(2) : pino.destination({ fd: 2, sync: true }));
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

const LEVEL_NAMES: Record<number, string> = { 10: "TRACE", 20: "DEBUG", 30: "INFO", 40: "WARN", 50: "ERROR", 60: "FATAL" };
const HIDDEN_KEYS = new Set(["level", "time", "msg", "component", "pid", "hostname"]);

/** Formats one pino JSON line as text; lines that are not JSON pass through unchanged. */
export function formatLogLine(line: string): string {
  let rec: Record<string, unknown>;
  try {
    rec = JSON.parse(line) as Record<string, unknown>;
  } catch {
    return line.endsWith("\n") ? line : line + "\n";
  }
  const level = LEVEL_NAMES[Number(rec["level"])] ?? String(rec["level"]);
  const time = typeof rec["time"] === "string" ? rec["time"].slice(11, 23) : "";
  const component = rec["component"] ? ` [${String(rec["component"])}]` : "";
  const extras: string[] = [];
  for (const [k, v] of Object.entries(rec)) {
    if (HIDDEN_KEYS.has(k)) continue;
    if (k === "err" && v && typeof v === "object") {
      const e = v as { message?: string; stack?: string };
      extras.push(`err=${JSON.stringify(e.message ?? "")}`);
      continue;
    }
    extras.push(`${k}=${typeof v === "string" ? v : JSON.stringify(v)}`);
  }
  const msg = typeof rec["msg"] === "string" ? rec["msg"] : "";
  return `${time} ${level.padEnd(5)}${component} ${msg}${extras.length ? "  " + extras.join(" ") : ""}\n`;
}

function textDestination(fd: number): pino.DestinationStream {
  return {
    write(line: string): void {
      writeSync(fd, formatLogLine(line));
    },
  };
}
