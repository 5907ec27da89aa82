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
  const dest = destination ?? (format === "text" ? textDestination(2) : pino.destination({ fd: 2, sync: true }));
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

/** How much of a caller's input an error message or log line may echo. */
const MAX_ECHO_CHARS = 200;

/**
 * `text` cut to `max` characters with a marker saying how much was left out, so that input a
 * caller chose (a 64 MiB task id) cannot make a log line or a grpc-message of its own size:
 * above ~64 KiB a grpc-message breaks the caller's HTTP/2 connection.
 */
export function truncateEcho(text: string, max: number = MAX_ECHO_CHARS): string {
  if (text.length <= max) return text;
  // Never split a surrogate pair: a lone surrogate makes grpc-js's encodeURI of the status throw.
  const cut = isHighSurrogate(text.charCodeAt(max - 1)) ? max - 1 : max;
  return `${text.slice(0, cut)}...[truncated, ${text.length - cut} more chars]`;
}

function isHighSurrogate(code: number): boolean {
  return code >= 0xd800 && code <= 0xdbff;
}

/**
 * C0/C1 control characters, DEL, the Unicode line/paragraph separators and the bidirectional
 * overrides: in a text log they can end a line early (a forged line after a `\n` in a
 * group_id), move the cursor, or reorder what a reader sees.
 */
const UNSAFE_IN_TEXT = /[\u0000-\u001f\u007f-\u009f\u2028\u2029\u202a-\u202e\u2066-\u2069]/g;

/** `text` with every control character written as a visible escape (`\n`, `\u001b`). */
export function escapeControlChars(text: string): string {
  return text.replace(UNSAFE_IN_TEXT, (c) => {
    const code = c.charCodeAt(0);
    if (c === "\n") return "\\n";
    if (c === "\r") return "\\r";
    if (c === "\t") return "\\t";
    return `\\u${code.toString(16).padStart(4, "0")}`;
  });
}

const LEVEL_NAMES: Record<number, string> = {
  10: "TRACE",
  20: "DEBUG",
  30: "INFO",
  40: "WARN",
  50: "ERROR",
  60: "FATAL",
};
const HIDDEN_KEYS = new Set(["level", "time", "msg", "component", "pid", "hostname"]);

/**
 * Formats one pino JSON line as one line of text, control characters escaped (JSON lines are
 * escaped by JSON itself); a line that is not JSON is escaped the same way.
 */
export function formatLogLine(line: string): string {
  let rec: Record<string, unknown>;
  try {
    rec = JSON.parse(line) as Record<string, unknown>;
  } catch {
    return escapeControlChars(line.endsWith("\n") ? line.slice(0, -1) : line) + "\n";
  }
  const level = LEVEL_NAMES[Number(rec["level"])] ?? String(rec["level"]);
  const time = typeof rec["time"] === "string" ? rec["time"].slice(11, 23) : "";
  const rawComponent = rec["component"];
  const component = rawComponent
    ? ` [${typeof rawComponent === "string" ? rawComponent : JSON.stringify(rawComponent)}]`
    : "";
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
  return (
    escapeControlChars(`${time} ${level.padEnd(5)}${component} ${msg}${extras.length ? "  " + extras.join(" ") : ""}`) +
    "\n"
  );
}

function textDestination(fd: number): pino.DestinationStream {
  return {
    write(line: string): void {
      writeSync(fd, formatLogLine(line));
    },
  };
}

/** How much of an internal error's message an incident log line keeps. */
export const MAX_LOGGED_ERROR_CHARS = 1000;

/** An error for an incident log line: its type, message and stack, each bounded in length. */
export function boundedError(err: unknown): { type: string; message: string; stack?: string } {
  if (!(err instanceof Error)) return { type: typeof err, message: truncateEcho(String(err), MAX_LOGGED_ERROR_CHARS) };
  return {
    type: err.name,
    message: truncateEcho(err.message, MAX_LOGGED_ERROR_CHARS),
    ...(err.stack !== undefined ? { stack: truncateEcho(err.stack, 4 * MAX_LOGGED_ERROR_CHARS) } : {}),
  };
}
