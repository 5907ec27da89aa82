/** grpc-js options shared by every server and channel (values as Flower 1.10, docs/protocol.md, "Transport"). */
import type { ChannelOptions } from "@grpc/grpc-js";
import { GRPC_MAX_MESSAGE_LENGTH } from "../core/constants";

/**
 * channelz off (servers and channels): nothing here serves the channelz service, and its
 * bookkeeping (a socket ref and trace lines per connection, counters and timestamps per call)
 * is paid on every registration and call. grpc-js behaves the same otherwise (idle and age
 * limits, keepalive).
 */
const NO_CHANNELZ: ChannelOptions = { "grpc.enable_channelz": 0 };

export const SERVER_OPTIONS: ChannelOptions = {
  ...NO_CHANNELZ,
  "grpc.max_receive_message_length": GRPC_MAX_MESSAGE_LENGTH,
  "grpc.max_send_message_length": GRPC_MAX_MESSAGE_LENGTH,
  "grpc.max_concurrent_streams": 1000,
  "grpc.keepalive_time_ms": 210_000,
  "grpc.keepalive_permit_without_calls": 0,
  "grpc.http2.max_pings_without_data": 0,
};

/**
 * Client channels set no keepalive: a Python SuperLink treats client keepalive pings without
 * active calls as abuse and closes the connection (docs/protocol.md, "Transport"). The larger HTTP/2 receive window
 * (default 64 KiB) lets a pulled 100 MB model arrive in fewer round trips: bench relay 100 MB x 2
 * went from 11.3-13.3 s to 8.5-11.2 s. It only changes what this side advertises.
 */
export const CHANNEL_OPTIONS: ChannelOptions = {
  ...NO_CHANNELZ,
  "grpc.max_receive_message_length": GRPC_MAX_MESSAGE_LENGTH,
  "grpc.max_send_message_length": GRPC_MAX_MESSAGE_LENGTH,
  "grpc-node.flow_control_window": 16 * 1024 * 1024,
};

/**
 * HTTP/2 receive window of our servers' connections (Node's default: 64 KiB); streams keep the
 * default 64 KiB, so uploads and downloads cannot deadlock (see src/transport/grpc-server.ts).
 */
export const SERVER_RECEIVE_WINDOW_BYTES = 16 * 1024 * 1024;

/**
 * Limits that keep idle and slow peers from holding connections (and file descriptors) open.
 * Every value is in milliseconds or bytes per second; 0 turns a limit off.
 */
export interface ConnectionLimits {
  /**
   * A connection with no call in flight for this long is closed with GOAWAY (grpc-js
   * `grpc.max_connection_idle_ms`). A held long-poll is a call in flight; gRPC clients (grpc-js,
   * Python's grpc-core) reconnect on their next call without an error.
   */
  maxConnectionIdleMs: number;
  /** A connection is closed with GOAWAY after this long (±10% jitter), busy or not. */
  maxConnectionAgeMs: number;
  /** After that GOAWAY, calls still in flight get this long before the connection is dropped (0 = as long as they take). */
  maxConnectionAgeGraceMs: number;
  /** A request body not complete after this long may be cancelled (see minRequestBytesPerSecond). */
  requestReceiveTimeoutMs: number;
  /** ...when its bytes so far arrived slower than this on average. 0: the timeout alone decides. */
  minRequestBytesPerSecond: number;
}

/**
 * 60 s idle: every known client calls more often while it has work (Flower's SuperNode and
 * ServerApp poll every 3 s, ours long-poll), and a closed idle connection costs the next call
 * one reconnect. No age limit. A request body may take 30 s, and longer only while it averages
 * at least 16 KiB/s: a 1 byte/s sender is cut off after 30 s, a 100 MB upload at 1 MB/s runs
 * its 100 s.
 */
export const DEFAULT_CONNECTION_LIMITS: ConnectionLimits = {
  maxConnectionIdleMs: 60_000,
  maxConnectionAgeMs: 0,
  maxConnectionAgeGraceMs: 0,
  requestReceiveTimeoutMs: 30_000,
  minRequestBytesPerSecond: 16 * 1024,
};

/** The grpc-js server options for the limits grpc-js enforces itself (idle and age). */
export function connectionLimitOptions(limits: ConnectionLimits): ChannelOptions {
  return {
    ...(limits.maxConnectionIdleMs > 0 ? { "grpc.max_connection_idle_ms": limits.maxConnectionIdleMs } : {}),
    ...(limits.maxConnectionAgeMs > 0 ? { "grpc.max_connection_age_ms": limits.maxConnectionAgeMs } : {}),
    ...(limits.maxConnectionAgeMs > 0 && limits.maxConnectionAgeGraceMs > 0
      ? { "grpc.max_connection_age_grace_ms": limits.maxConnectionAgeGraceMs }
      : {}),
  };
}
