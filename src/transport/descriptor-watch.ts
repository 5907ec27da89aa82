/**
 * Warns when the process runs out of file descriptors. At the limit, libuv accepts each new
 * connection on a reserved descriptor and closes it at once (its "EMFILE trick"), so peers see
 * UNAVAILABLE and Node reports nothing. This samples the open descriptors (Linux: /proc/self/fd
 * against the soft limit in /proc/self/limits) and logs once when they run out, then at most
 * once per `reportEveryMs` while it lasts, and once when it is over. Elsewhere it does nothing.
 */
import { readFileSync, readdirSync } from "node:fs";
import type { Logger } from "../core/logger";

export interface DescriptorWatchOptions {
  /** How often to sample (default 5 s). */
  checkEveryMs?: number;
  /** While still exhausted, how often to repeat the error (default 60 s). */
  reportEveryMs?: number;
}

/** Free descriptors below which new connections are about to be refused. */
const HEADROOM = 16;

/** Starts the watch; returns a function that stops it. */
export function watchDescriptors(logger: Logger, options: DescriptorWatchOptions = {}): () => void {
  const limit = softDescriptorLimit();
  if (limit === undefined) return () => {};
  const reportEveryMs = options.reportEveryMs ?? 60_000;
  let exhaustedSince: number | undefined;
  let lastReport = 0;
  const check = (): void => {
    const open = openDescriptors();
    const exhausted = open === "exhausted" || (open !== undefined && open >= limit - HEADROOM);
    const now = Date.now();
    if (exhausted) {
      exhaustedSince ??= now;
      if (now - lastReport < reportEveryMs && lastReport >= exhaustedSince) return;
      lastReport = now;
      const count = open === "exhausted" ? `all ${limit}` : `${open} of ${limit}`;
      logger.error(
        { event: "grpc.descriptors-exhausted", open: open === "exhausted" ? limit : open, limit },
        `Out of file descriptors (${count} open): new connections are refused without a trace until some close. ` +
          "Raise the limit (ulimit -n) or find who holds the connections (--max-connection-idle-ms closes idle ones).",
      );
    } else if (exhaustedSince !== undefined) {
      logger.info(
        { event: "grpc.descriptors-recovered", open, limit, exhaustedMs: now - exhaustedSince },
        `File descriptors available again (${open ?? "?"} of ${limit} open)`,
      );
      exhaustedSince = undefined;
    }
  };
  const timer = setInterval(check, options.checkEveryMs ?? 5_000);
  timer.unref();
  return () => clearInterval(timer);
}

/** The soft RLIMIT_NOFILE, or undefined where /proc/self/limits does not say (not Linux). */
function softDescriptorLimit(): number | undefined {
  try {
    const line = /^Max open files\s+(\d+)/m.exec(readFileSync("/proc/self/limits", "utf8"));
    return line ? Number(line[1]) : undefined;
  } catch {
    return undefined;
  }
}

/** Open descriptors now; "exhausted" when listing them fails for want of one. */
function openDescriptors(): number | "exhausted" | undefined {
  try {
    return readdirSync("/proc/self/fd").length;
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    return code === "EMFILE" || code === "ENFILE" ? "exhausted" : undefined;
  }
}
