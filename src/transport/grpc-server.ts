/**
 * Starting and stopping a grpc-js server on HOST:PORT (port 0 allowed), with the connection
 * limits that protect it from idle or slow peers (ConnectionLimits) and undecodable requests
 * answered with INVALID_ARGUMENT (request-decoding.ts). The limits on connections and slow
 * senders, and the larger receive window, need the server-session-hooks extension
 * (SERVER_SESSION_HOOKS below, applied by src/transport/grpc-extensions.ts).
 */
import * as grpc from "@grpc/grpc-js";
import { ConnectionError, errorMessage } from "../core/errors";
import { formatAddress, parseAddress } from "../core/address";
import { type Logger, silentLogger } from "../core/logger";
import {
  type Http2Server,
  type ServerHttp2Session,
  type ServerHttp2Stream,
  constants as http2Constants,
} from "node:http2";
import {
  type ConnectionLimits,
  DEFAULT_CONNECTION_LIMITS,
  SERVER_OPTIONS,
  SERVER_RECEIVE_WINDOW_BYTES,
  connectionLimitOptions,
} from "./options";
import type { Socket } from "node:net";
import { type GrpcExtension, MissingGrpcInternal, isGrpcExtensionActive } from "./grpc-internals";
import { rejectMalformedRequests, withMalformedRequestsMarked } from "./request-decoding";

export interface ServiceRegistration {
  definition: grpc.ServiceDefinition;
  implementation: grpc.UntypedServiceImplementation;
}

export interface RunningGrpcServer {
  server: grpc.Server;
  /** The bound port (the real one when 0 was requested). */
  port: number;
  /** HOST:PORT with the bound port. */
  address: string;
  /** Stops accepting, waits up to `graceMs` for in-flight calls, then cancels the rest. */
  close(graceMs?: number): Promise<void>;
}

export interface GrpcServerOptions {
  /** Idle, age and slow-sender limits; default DEFAULT_CONNECTION_LIMITS. */
  limits?: ConnectionLimits;
  /** Receives the warnings about slow senders and descriptor exhaustion. */
  logger?: Logger;
  /** Names the server in those warnings ("Fleet API"). */
  name?: string;
}

export async function startGrpcServer(
  address: string,
  credentials: grpc.ServerCredentials,
  services: ServiceRegistration[],
  options: grpc.ChannelOptions = {},
  serverOptions: GrpcServerOptions = {},
): Promise<RunningGrpcServer> {
  const hostPort = parseAddress(address);
  const limits = serverOptions.limits ?? DEFAULT_CONNECTION_LIMITS;
  const logger = serverOptions.logger ?? silentLogger();
  const name = serverOptions.name ?? "gRPC server";
  const server = new grpc.Server({
    ...SERVER_OPTIONS,
    ...connectionLimitOptions(limits),
    ...options,
    // Outermost, so the other interceptors (metrics) see the INVALID_ARGUMENT it answers.
    interceptors: [
      ...((options.interceptors as grpc.ServerInterceptor[] | undefined) ?? []),
      rejectMalformedRequests(),
    ],
  });
  for (const s of services) server.addService(withMalformedRequestsMarked(s.definition), s.implementation);
  const port = await new Promise<number>((resolve, reject) => {
    server.bindAsync(formatAddress(hostPort), credentials, (err, boundPort) => {
      if (err) {
        reject(new ConnectionError(`Cannot listen on ${address}: ${errorMessage(err)}`, { cause: err }));
      } else {
        resolve(boundPort);
      }
    });
  });
  const http2Servers = http2ServersOf(server);
  enlargeConnectionWindows(http2Servers, SERVER_RECEIVE_WINDOW_BYTES);
  releaseAlpnCopies(http2Servers);
  const stopWatching = watchConnections(http2Servers, limits, logger, name);
  const stopClosingSilent = closeSilentConnections(http2Servers, limits.maxConnectionIdleMs, logger, name);
  const sessions = openSessions(http2Servers);
  let closing: Promise<void> | undefined;
  return {
    server,
    port,
    address: formatAddress({ host: hostPort.host, port }),
    close(graceMs = 0) {
      closing ??= shutdown(server, graceMs, sessions).finally(() => {
        stopWatching();
        stopClosingSilent();
      });
      return closing;
    },
  };
}

/**
 * The server's open HTTP/2 sessions. grpc-js 1.14.7's `forceShutdown` destroys only the sessions
 * it tracks with channelz on, and ours is off (src/transport/options.ts): without this, a closed
 * server kept every connection with a call still open (a grpc-bidi Join, a held pull), and their
 * sockets kept the process alive.
 */
function openSessions(http2Servers: Http2Server[]): ReadonlySet<ServerHttp2Session> {
  const sessions = new Set<ServerHttp2Session>();
  for (const http2Server of http2Servers) {
    http2Server.on("session", (session: ServerHttp2Session) => {
      sessions.add(session);
      session.once("close", () => sessions.delete(session));
    });
  }
  return sessions;
}

/**
 * Stops accepting, asks every connection to finish (grpc-js's GOAWAY: calls in progress go on),
 * and after `graceMs` cancels whatever is left.
 */
function shutdown(server: grpc.Server, graceMs: number, sessions: ReadonlySet<ServerHttp2Session>): Promise<void> {
  return new Promise((resolve) => {
    let done = false;
    const finish = (): void => {
      if (done) return;
      done = true;
      clearTimeout(timer);
      resolve();
    };
    const timer = setTimeout(() => {
      server.forceShutdown();
      for (const session of [...sessions]) session.destroy();
      finish();
    }, graceMs);
    server.tryShutdown(() => finish());
  });
}

/**
 * grpc-js has no server option for the HTTP/2 receive window, and at Node's default of 64 KiB
 * for the whole connection, a large upload (PushTaskIns, PushTaskRes) waits for a window update
 * every 64 KiB: one 100 MB upload took 1.0 s instead of 0.6 s (bench hop). Only the connection
 * window grows; each stream keeps 64 KiB. Node's HTTP/2 stops reading while it writes, so if
 * both peers may have megabytes in flight towards each other at once (our channels already
 * accept 16 MiB per stream), a concurrent upload and download on one connection deadlock;
 * with 64 KiB per upload stream they cannot (test/transport/server-window.test.ts).
 * This, watchConnections, closeSilentConnections and openSessions reach into a grpc-js internal (the server's
 * `http2Servers`): only with the server-session-hooks extension active. Without it the server
 * still works, at the default window and without the slow-sender deadline, silent-connection
 * sweep and accept-failure warnings (the SuperLink's Fleet API refuses to start that way).
 */
interface GrpcServerInternals {
  http2Servers?: Map<Http2Server, unknown>;
}

/** Marks the hooks usable once a grpc-js Server holds its Node HTTP/2 servers where 1.14.7 does. */
export const SERVER_SESSION_HOOKS: GrpcExtension = {
  name: "server-session-hooks",
  prepare() {
    // An unbound server with channelz off registers nothing anywhere.
    const probe = new grpc.Server({ "grpc.enable_channelz": 0 });
    if (!((probe as unknown as GrpcServerInternals).http2Servers instanceof Map)) {
      throw new MissingGrpcInternal("build/src/server Server.http2Servers: not a Map");
    }
    return () => undefined;
  },
};

function http2ServersOf(server: grpc.Server): Http2Server[] {
  if (!isGrpcExtensionActive("server-session-hooks")) return [];
  const http2Servers = (server as unknown as GrpcServerInternals).http2Servers;
  return http2Servers instanceof Map ? [...http2Servers.keys()] : [];
}

function enlargeConnectionWindows(http2Servers: Http2Server[], bytes: number): void {
  for (const http2Server of http2Servers) {
    http2Server.on("session", (session: ServerHttp2Session) => {
      session.once("localSettings", () => {
        if (!session.destroyed) session.setLocalWindowSize(bytes);
      });
    });
  }
}

/**
 * Node gives every accepted TLS socket its own copy of the server's ALPN list (`_tlsOptions`,
 * read only while the TLS session is set up). A 3-byte Buffer from the shared 8 KiB pool, it
 * kept a whole pool slab alive per ~3 idle connections (~2.6 KiB per connection). Once the
 * handshake is done the socket points at the server's own list instead.
 */
function releaseAlpnCopies(http2Servers: Http2Server[]): void {
  for (const http2Server of http2Servers) {
    const shared = (http2Server as { ALPNProtocols?: unknown }).ALPNProtocols;
    if (!Buffer.isBuffer(shared)) continue;
    http2Server.on("secureConnection", (socket: object) => releaseAlpnCopy(socket, shared));
  }
}

/** Points `socket`'s ALPN list at `shared`; a no-op unless the socket has Node's field, holding a Buffer. */
export function releaseAlpnCopy(socket: object, shared: Buffer): void {
  const options = (socket as { _tlsOptions?: unknown })._tlsOptions;
  if (typeof options !== "object" || options === null) return;
  const tlsOptions = options as { ALPNProtocols?: unknown };
  if (Buffer.isBuffer(tlsOptions.ALPNProtocols)) tlsOptions.ALPNProtocols = shared;
}

/** How often the receive deadline is checked, at most (also bounded by a quarter of it). */
const RECEIVE_CHECK_MS = 1000;
/** Accept failures are reported at most this often, with the count of refused connections. */
const ACCEPT_FAILURE_REPORT_MS = 10_000;
/** Cancelled slow requests are warned about at most this often (the others at debug level). */
const SLOW_REQUEST_REPORT_MS = 60_000;

interface ReceivingStream {
  stream: ServerHttp2Stream;
  startedAt: number;
  bytes: number;
}

/**
 * The slow-sender deadline and accept-failure reporting. A stream whose request body is not
 * complete `requestReceiveTimeoutMs` after it opened, and whose bytes so far arrived slower than
 * `minRequestBytesPerSecond` on average, is reset with CANCEL: a peer sending 1 byte/s can no
 * longer hold a stream (and its connection) open, while a large upload that keeps flowing may
 * take as long as it needs. One timer per server checks all streams still receiving. A warning
 * at most once per SLOW_REQUEST_REPORT_MS counts the cancellations since the previous one.
 * EMFILE/ENFILE (or any other failure) on accept is logged at most once per
 * ACCEPT_FAILURE_REPORT_MS, with how many connections were refused since the last report.
 * Returns a function that stops the timers.
 */
function watchConnections(
  http2Servers: Http2Server[],
  limits: ConnectionLimits,
  logger: Logger,
  name: string,
): () => void {
  const receiving = new Set<ReceivingStream>();
  let cancelled = 0;
  let cancelledSinceReport = 0;
  let lastCancelReport = -Infinity;
  const timeoutMs = limits.requestReceiveTimeoutMs;
  let checkTimer: NodeJS.Timeout | undefined;
  if (timeoutMs > 0) {
    checkTimer = setInterval(
      () => {
        const now = Date.now();
        for (const entry of receiving) {
          const { stream } = entry;
          if (stream.destroyed || stream.closed) {
            receiving.delete(entry);
            continue;
          }
          const elapsedMs = now - entry.startedAt;
          if (elapsedMs < timeoutMs || entry.bytes >= (limits.minRequestBytesPerSecond * elapsedMs) / 1000) continue;
          receiving.delete(entry);
          cancelled += 1;
          cancelledSinceReport += 1;
          const warn = now - lastCancelReport >= SLOW_REQUEST_REPORT_MS;
          (warn ? logger.warn : logger.debug).call(
            logger,
            {
              event: "grpc.slow-request-cancelled",
              server: name,
              peer: `${stream.session?.socket?.remoteAddress ?? "?"}:${stream.session?.socket?.remotePort ?? "?"}`,
              receivedBytes: entry.bytes,
              elapsedMs,
              cancelledSinceLastWarning: cancelledSinceReport,
              cancelledTotal: cancelled,
            },
            `${name}: cancelled a request whose body was still incomplete after ${Math.round(elapsedMs / 1000)} s ` +
              `(${entry.bytes} bytes received, below ${limits.minRequestBytesPerSecond} bytes/s; ` +
              `${cancelledSinceReport} cancelled since the last warning)`,
          );
          if (warn) {
            lastCancelReport = now;
            cancelledSinceReport = 0;
          }
          stream.close(http2Constants.NGHTTP2_CANCEL);
        }
      },
      Math.max(10, Math.min(RECEIVE_CHECK_MS, Math.floor(timeoutMs / 4))),
    );
    checkTimer.unref();
  }

  let refused = 0;
  let lastReport = 0;
  let reportTimer: NodeJS.Timeout | undefined;
  let lastError = "";
  const report = (): void => {
    reportTimer = undefined;
    if (refused === 0) return;
    logger.error(
      { event: "grpc.accept-failed", server: name, error: lastError, refused, intervalMs: ACCEPT_FAILURE_REPORT_MS },
      `${name}: ${refused} incoming connection(s) refused: ${lastError}` +
        (/EMFILE|ENFILE/.test(lastError)
          ? " (out of file descriptors: raise the limit, e.g. `ulimit -n`, or find who holds the connections)"
          : ""),
    );
    refused = 0;
    lastReport = Date.now();
  };
  const onServerError = (err: NodeJS.ErrnoException): void => {
    refused += 1;
    lastError = `${err.code ?? "error"}${err.syscall ? ` on ${err.syscall}` : ""}: ${err.message}`;
    if (reportTimer !== undefined) return;
    reportTimer = setTimeout(report, Math.max(0, lastReport + ACCEPT_FAILURE_REPORT_MS - Date.now()));
    reportTimer.unref();
  };

  for (const http2Server of http2Servers) {
    // Without a listener, an accept failure (EMFILE) would be an uncaught 'error' event.
    http2Server.on("error", onServerError);
    if (timeoutMs <= 0) continue;
    http2Server.on("stream", (stream: ServerHttp2Stream) => {
      if (stream.readableEnded || stream.closed) return;
      const entry: ReceivingStream = { stream, startedAt: Date.now(), bytes: 0 };
      receiving.add(entry);
      const done = (): void => {
        receiving.delete(entry);
      };
      stream.once("end", done);
      stream.once("close", done);
      // grpc-js has attached its 'data' listener and paused the stream (this listener runs
      // after its own): counting here changes neither the flow nor who reads the data. A
      // stream grpc-js refused (no listener) is not counted, only timed.
      if (stream.listenerCount("data") > 0) {
        stream.on("data", (chunk: Buffer) => {
          entry.bytes += chunk.length;
        });
      }
    });
  }
  return () => {
    if (checkTimer !== undefined) clearInterval(checkTimer);
    if (reportTimer !== undefined) {
      clearTimeout(reportTimer);
      report();
    }
    receiving.clear();
  };
}

/** Connections that did not start HTTP/2 in time are reported at most this often, with a count. */
const SILENT_REPORT_MS = 60_000;

/**
 * grpc-js's idle timer starts with the HTTP/2 session, which a TLS server creates only after the
 * handshake: a peer that opens TCP and never completes TLS held its socket for Node's TLS
 * handshake timeout (120 s). Here every connection whose peer has not sent its HTTP/2 SETTINGS
 * within `idleMs` of connecting is destroyed, whatever stage it is stuck in. Connections are
 * matched to sessions by remote address and port (http2 hands out a proxy of the socket).
 */
function closeSilentConnections(http2Servers: Http2Server[], idleMs: number, logger: Logger, name: string): () => void {
  if (idleMs <= 0) return () => {};
  // A plaintext server emits 'session' before 'connection'; a TLS one, 'session' after the handshake.
  const pending = new Map<string, { openedAt: number; socket?: Socket; session?: ServerHttp2Session }>();
  const keyOf = (socket: { remoteAddress?: string | undefined; remotePort?: number | undefined }): string =>
    `${socket.remoteAddress ?? "?"}|${socket.remotePort ?? "?"}`;
  const entryFor = (key: string): { openedAt: number; socket?: Socket; session?: ServerHttp2Session } => {
    let entry = pending.get(key);
    if (entry === undefined) {
      entry = { openedAt: Date.now() };
      pending.set(key, entry);
    }
    return entry;
  };
  let closed = 0;
  let lastReport = 0;
  const sweep = (): void => {
    const now = Date.now();
    for (const [key, entry] of pending) {
      if (entry.session?.destroyed || (entry.session === undefined && entry.socket?.destroyed)) {
        pending.delete(key);
      } else if (now - entry.openedAt >= idleMs) {
        pending.delete(key);
        // Once a session owns the socket, only destroying the session closes it.
        if (entry.session !== undefined) entry.session.destroy();
        else entry.socket?.destroy();
        closed += 1;
      }
    }
    if (closed > 0 && now - lastReport >= SILENT_REPORT_MS) {
      logger.warn(
        { event: "grpc.silent-connections-closed", server: name, closed, idleMs },
        `${name}: closed ${closed} connection(s) that did not start HTTP/2 within ${idleMs} ms`,
      );
      closed = 0;
      lastReport = now;
    }
  };
  const timer = setInterval(sweep, Math.max(10, Math.min(RECEIVE_CHECK_MS, Math.floor(idleMs / 4))));
  timer.unref();
  for (const http2Server of http2Servers) {
    http2Server.on("connection", (socket: Socket) => {
      const key = keyOf(socket);
      entryFor(key).socket = socket;
      socket.once("close", () => {
        if (pending.get(key)?.socket === socket) pending.delete(key);
      });
    });
    http2Server.on("session", (session: ServerHttp2Session) => {
      const key = keyOf(session.socket);
      entryFor(key).session = session;
      session.once("remoteSettings", () => pending.delete(key));
      session.once("close", () => {
        if (pending.get(key)?.session === session) pending.delete(key);
      });
    });
  }
  return () => {
    clearInterval(timer);
    pending.clear();
  };
}
