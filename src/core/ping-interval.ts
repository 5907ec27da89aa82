/**
 * The accepted range of a SuperNode's `ping_interval` (flwr-ts). Flower 1.10 accepts any value:
 * a negative one knocks a node offline, 1e9 keeps it online for decades. Later Flower bounds
 * heartbeats to 10 s .. 1800 s, and so does the SuperLink by default (`--min-ping-interval`,
 * `--max-ping-interval`). Flower's SuperNodes announce 30 s.
 */
import { MalformedMessageError } from "./errors";

export interface PingIntervalBounds {
  /** Seconds; > 0. */
  min: number;
  /** Seconds; >= min. */
  max: number;
}

export const DEFAULT_PING_INTERVAL_BOUNDS: Readonly<PingIntervalBounds> = { min: 10, max: 1800 };

/**
 * The interval to record: a finite positive value clamped into `bounds` (a SuperNode asking for
 * 5 s or 1 h still works, with 10 s or 30 min); NaN, infinities, zero and negative values are a
 * MalformedMessageError (INVALID_ARGUMENT).
 */
export function boundedPingInterval(
  pingInterval: number,
  bounds: PingIntervalBounds = DEFAULT_PING_INTERVAL_BOUNDS,
): number {
  if (!(Number.isFinite(pingInterval) && pingInterval > 0)) {
    throw new MalformedMessageError(`ping_interval must be a positive number of seconds, got ${pingInterval}`);
  }
  return Math.min(bounds.max, Math.max(bounds.min, pingInterval));
}
