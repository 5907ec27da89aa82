/**
 * The Fleet API over REST (`--fleet-api-type rest`): Flower 1.10's routes and protobuf bodies
 * (src/core/wire/fleet-rest.ts) over HTTP or HTTPS (the SuperLink's certificate), answered by
 * the same handlers as the gRPC Fleet API (fleet-handler.ts).
 *
 * Beyond Flower 1.10:
 * - node authentication, with the gRPC headers as HTTP headers. With it on, a request whose
 *   `public-key` header names no allowlisted key (or that lacks `auth-token`, CreateNode
 *   excepted) is refused with 401 before its body is read and before the size check;
 *   a body whose `auth-token` does not match, or that acts for another node, gets 403;
 * - a body cap (413, checked on Content-Length first, then while reading), and malformed
 *   protobuf answered 400 with a short message (Flower: 500);
 * - long polling of PullTaskIns for clients that opt in with LONG_POLL_HEADER;
 * - CORS for an allow-list of browser origins, preflight included.
 * Requests to `//api/...` are served as `/api/...`: Flower's REST client asks for GetRun there.
 */
import * as http from "node:http";
import * as https from "node:https";
import type { Socket } from "node:net";
import type { Logger } from "../../core/logger";
import { AUTH_TOKEN_HEADER, LONG_POLL_HEADER, PUBLIC_KEY_HEADER } from "../../core/constants";
import { formatAddress, parseAddress } from "../../core/address";
import { ConnectionError, FlwrError, InvalidConfigError, errorMessage } from "../../core/errors";
import { FLEET_REQUEST_NAMES } from "../../core/wire/canonical";
import { FLEET_REST_PATHS, type FleetRestMethod, PROTOBUF_CONTENT_TYPE } from "../../core/wire/fleet-rest";
import {
  CreateNodeRequest,
  CreateNodeResponse,
  DeleteNodeRequest,
  DeleteNodeResponse,
  PingRequest,
  PingResponse,
  PullTaskInsRequest,
  PullTaskInsResponse,
  PushTaskResRequest,
  PushTaskResResponse,
} from "../../proto/flwr/proto/fleet";
import { GetRunRequest, GetRunResponse } from "../../proto/flwr/proto/run";
import type { State } from "../../state/state";
import type { FleetAuthenticator } from "../../auth/server-auth";
import type { ServerTlsMaterial } from "../../transport/tls";
import { type LongPollHub, optedInWaitMs } from "../long-poll";
import * as fleet from "./fleet-handler";
import { BROWSER_CLIENT_HEADERS, type StaticFile } from "./browser-client";
import type { PingIntervalBounds } from "../../core/ping-interval";

export interface RestFleetServerOptions {
  /** HOST:PORT to listen on (port 0 = any free port). */
  address: string;
  /** HTTPS with the SuperLink's certificate; undefined = plain HTTP (--insecure). */
  tls?: ServerTlsMaterial;
  state: State;
  hub: LongPollHub;
  /** Longest wait of an opted-in empty PullTaskIns. */
  longPollMs: number;
  /** Accepted ping_interval range (default DEFAULT_PING_INTERVAL_BOUNDS). */
  pingIntervalBounds?: PingIntervalBounds;
  /** Node authentication; undefined = off (Flower 1.10's REST behaviour). */
  authenticator?: FleetAuthenticator;
  /** Largest accepted request body in bytes. */
  maxBodyBytes: number;
  /** Browser origins allowed to call the API (exact `scheme://host[:port]`, or "*"). */
  corsOrigins: readonly string[];
  /** Files answered to GET/HEAD by path (the browser SuperNode, browser-client.ts); none by default. */
  staticFiles?: ReadonlyMap<string, StaticFile>;
  logger: Logger;
  /**
   * Called once per answered request with the gRPC method path ("/flwr.proto.Fleet/Ping"), the
   * gRPC status code that matches the HTTP outcome, on success the messages, and the seconds
   * since the request arrived (for metrics).
   */
  onCall?: (path: string, code: number, request?: object, response?: object, durationSeconds?: number) => void;
}

export interface RunningRestFleetServer {
  port: number;
  /** HOST:PORT with the bound port. */
  address: string;
  /** Stops accepting, lets requests in flight finish for up to `graceMs`, then drops connections. */
  close(graceMs?: number): Promise<void>;
}

/** A request refused with an HTTP status and a short plain-text reason. */
class HttpFailure extends Error {
  constructor(
    readonly status: number,
    message: string,
  ) {
    super(message);
  }
}

interface Codec<Req, Res> {
  decode(bytes: Uint8Array): Req;
  encode(response: Res): { finish(): Uint8Array };
}

const CODECS: { [M in FleetRestMethod]: Codec<object, never> } = {
  createNode: {
    decode: (b: Uint8Array) => CreateNodeRequest.decode(b),
    encode: (r: CreateNodeResponse) => CreateNodeResponse.encode(r),
  },
  deleteNode: {
    decode: (b: Uint8Array) => DeleteNodeRequest.decode(b),
    encode: (r: DeleteNodeResponse) => DeleteNodeResponse.encode(r),
  },
  ping: { decode: (b: Uint8Array) => PingRequest.decode(b), encode: (r: PingResponse) => PingResponse.encode(r) },
  pullTaskIns: {
    decode: (b: Uint8Array) => PullTaskInsRequest.decode(b),
    encode: (r: PullTaskInsResponse) => PullTaskInsResponse.encode(r),
  },
  pushTaskRes: {
    decode: (b: Uint8Array) => PushTaskResRequest.decode(b),
    encode: (r: PushTaskResResponse) => PushTaskResResponse.encode(r),
  },
  getRun: {
    decode: (b: Uint8Array) => GetRunRequest.decode(b),
    encode: (r: GetRunResponse) => GetRunResponse.encode(r),
  },
};

/** gRPC method path of each REST route, for metrics. */
const GRPC_PATHS: { [M in FleetRestMethod]: string } = {
  createNode: "/flwr.proto.Fleet/CreateNode",
  deleteNode: "/flwr.proto.Fleet/DeleteNode",
  pullTaskIns: "/flwr.proto.Fleet/PullTaskIns",
  pushTaskRes: "/flwr.proto.Fleet/PushTaskRes",
  ping: "/flwr.proto.Fleet/Ping",
  getRun: "/flwr.proto.Fleet/GetRun",
};

/** The gRPC status code that says what an HTTP answer of this server says. */
function grpcCodeOf(httpStatus: number): number {
  if (httpStatus === 200) return 0;
  if (httpStatus === 401 || httpStatus === 403) return 16;
  if (httpStatus === 400 || httpStatus === 413) return 3;
  if (httpStatus === 404) return 5;
  return 2;
}

const METHOD_BY_PATH = new Map<string, FleetRestMethod>(
  (Object.entries(FLEET_REST_PATHS) as Array<[FleetRestMethod, string]>).map(([method, path]) => [path, method]),
);

/** Request headers a browser may send (preflight answer). */
const ALLOWED_REQUEST_HEADERS = ["content-type", "accept", PUBLIC_KEY_HEADER, AUTH_TOKEN_HEADER, LONG_POLL_HEADER].join(
  ", ",
);
/** Time to receive a request's headers, and the whole request. */
const HEADERS_TIMEOUT_MS = 30_000;
const REQUEST_TIMEOUT_MS = 900_000;
/** How long the rest of a refused upload is read and dropped before the connection is closed. */
const REFUSED_BODY_DRAIN_MS = 2_000;
/** How long a browser may cache a preflight answer, in seconds. */
const PREFLIGHT_MAX_AGE_S = 600;

function header(req: http.IncomingMessage, name: string): string | undefined {
  const value = req.headers[name];
  return Array.isArray(value) ? value[0] : value;
}

/** The media type without parameters, lower-cased ("application/protobuf; x=y" -> "application/protobuf"). */
function mediaType(value: string | undefined): string | undefined {
  return value?.split(";")[0]?.trim().toLowerCase();
}

/** Checks the allow-list entries: exact origins (`scheme://host[:port]`) or "*". */
export function checkCorsOrigins(origins: readonly string[]): void {
  for (const origin of origins) {
    if (origin === "*") continue;
    let parsed: URL;
    try {
      parsed = new URL(origin);
    } catch {
      throw new InvalidConfigError(
        `--rest-cors-origins: "${origin}" is not an origin (expected scheme://host[:port] or *)`,
      );
    }
    if (parsed.origin !== origin) {
      throw new InvalidConfigError(
        `--rest-cors-origins: "${origin}" is not an origin; did you mean "${parsed.origin}" (no path, no trailing slash)?`,
      );
    }
  }
}

/** Starts the REST Fleet API. Rejects with ConnectionError when the address cannot be bound. */
export async function startRestFleetServer(options: RestFleetServerOptions): Promise<RunningRestFleetServer> {
  const { state, hub, longPollMs, authenticator, maxBodyBytes, logger, onCall } = options;
  const { host, port } = parseAddress(options.address);
  checkCorsOrigins(options.corsOrigins);
  const anyOrigin = options.corsOrigins.includes("*");
  const origins = new Set(options.corsOrigins);
  const allowedOrigin = (origin: string | undefined): boolean =>
    origin !== undefined && (anyOrigin || origins.has(origin));

  // Arrival time of each request, for the latency histogram (src/superlink/metrics.ts).
  const arrivedAt = new WeakMap<http.IncomingMessage, number>();
  const called = (req: http.IncomingMessage, path: string, code: number, request?: object, response?: object): void => {
    const t0 = arrivedAt.get(req);
    onCall?.(path, code, request, response, t0 === undefined ? undefined : (performance.now() - t0) / 1000);
  };
  const handle = (req: http.IncomingMessage, res: http.ServerResponse): void => {
    arrivedAt.set(req, performance.now());
    const origin = header(req, "origin");
    if (allowedOrigin(origin)) {
      res.setHeader("access-control-allow-origin", anyOrigin ? "*" : origin!);
      res.setHeader("access-control-expose-headers", PUBLIC_KEY_HEADER);
      if (!anyOrigin) res.setHeader("vary", "Origin");
    }
    const path = (req.url ?? "").split("?")[0]!.replace(/^\/{2,}/, "/");
    const method = METHOD_BY_PATH.get(path);
    const file = options.staticFiles?.get(path);
    if (file !== undefined && (req.method === "GET" || req.method === "HEAD")) {
      res.writeHead(200, {
        ...BROWSER_CLIENT_HEADERS,
        "content-type": file.contentType,
        "content-length": String(file.body.length),
      });
      res.end(req.method === "HEAD" ? undefined : file.body);
      req.resume();
      return;
    }
    if (req.method === "OPTIONS") {
      answerPreflight(req, res, origin, method !== undefined);
      return;
    }
    const fail = (failure: HttpFailure): void => {
      if (method !== undefined && req.method === "POST") called(req, GRPC_PATHS[method], grpcCodeOf(failure.status));
      logger.debug(
        { event: "fleet.rest-refused", path, status: failure.status, reason: failure.message },
        `REST ${path}: ${failure.message}`,
      );
      // A refused body is not read into memory: it is discarded for a moment (a reset right away
      // could destroy the answer in the client's receive buffer), then the connection is dropped.
      if (!req.complete) {
        res.setHeader("connection", "close");
        res.once("finish", () => {
          req.resume();
          setTimeout(() => req.destroy(), REFUSED_BODY_DRAIN_MS).unref();
        });
      }
      reply(res, failure.status, Buffer.from(`${failure.message}\n`), "text/plain; charset=utf-8");
    };
    if (method === undefined) {
      fail(new HttpFailure(404, `Not found: no Fleet API route ${path}`));
      return;
    }
    if (req.method !== "POST") {
      res.setHeader("allow", "POST, OPTIONS");
      fail(new HttpFailure(405, `Method not allowed: ${path} takes POST`));
      return;
    }
    try {
      checkHeaders(req);
      if (authenticator !== undefined) {
        const key = authenticator.checkKeyHeader(header(req, PUBLIC_KEY_HEADER));
        if (!key.ok) {
          authenticator.logDenied(`REST ${path}`, key, header(req, PUBLIC_KEY_HEADER));
          throw new HttpFailure(401, "Access denied");
        }
        if (method !== "createNode" && !header(req, AUTH_TOKEN_HEADER)) {
          authenticator.logDenied(
            `REST ${path}`,
            { ok: false, reason: "no auth-token header" },
            header(req, PUBLIC_KEY_HEADER),
          );
          throw new HttpFailure(401, "Access denied");
        }
      }
      checkDeclaredLength(req, maxBodyBytes);
    } catch (err) {
      fail(err as HttpFailure);
      return;
    }
    readBody(req, maxBodyBytes).then(
      (body) => serve(method, req, res, body).catch((err: unknown) => answerError(res, path, err, fail)),
      (err: unknown) => (err instanceof HttpFailure ? fail(err) : req.destroy()),
    );
  };

  const answerPreflight = (
    req: http.IncomingMessage,
    res: http.ServerResponse,
    origin: string | undefined,
    known: boolean,
  ): void => {
    if (!allowedOrigin(origin)) {
      reply(res, 403, Buffer.from("CORS: origin not allowed\n"), "text/plain; charset=utf-8");
      return;
    }
    if (!known) {
      reply(res, 404, Buffer.from("Not found\n"), "text/plain; charset=utf-8");
      return;
    }
    res.setHeader("access-control-allow-methods", "POST");
    res.setHeader("access-control-allow-headers", ALLOWED_REQUEST_HEADERS);
    res.setHeader("access-control-max-age", String(PREFLIGHT_MAX_AGE_S));
    res.writeHead(204).end();
    req.resume();
  };

  const serve = async (
    method: FleetRestMethod,
    req: http.IncomingMessage,
    res: http.ServerResponse,
    body: Buffer,
  ): Promise<void> => {
    let request: object;
    try {
      request = CODECS[method].decode(body);
    } catch (err) {
      throw new HttpFailure(400, `Malformed ${FLEET_REQUEST_NAMES[method]}: ${errorMessage(err)}`);
    }
    const headers: Record<string, string> = {};
    if (authenticator !== undefined) {
      const name = FLEET_REQUEST_NAMES[method];
      const publicKey = header(req, PUBLIC_KEY_HEADER);
      const verdict = await authenticator.authenticate(
        name,
        request,
        { publicKey, authToken: header(req, AUTH_TOKEN_HEADER) },
        body,
      );
      if (!verdict.ok) {
        authenticator.logDenied(`REST ${FLEET_REST_PATHS[method]}`, verdict, publicKey);
        throw new HttpFailure(403, "Access denied");
      }
      if (method === "createNode") {
        const id = await authenticator.registerNode(verdict.publicKeyPem, (request as CreateNodeRequest).pingInterval);
        headers[PUBLIC_KEY_HEADER] = authenticator.serverPublicKeyHeader;
        const created = CreateNodeResponse.fromPartial({ node: { nodeId: id, anonymous: false } });
        reply(res, 200, encode(method, created), PROTOBUF_CONTENT_TYPE, headers);
        called(req, GRPC_PATHS[method], 0, request, created);
        return;
      }
    }
    let response: object;
    switch (method) {
      case "createNode":
        response = await fleet.createNode(request as CreateNodeRequest, state, options.pingIntervalBounds);
        break;
      case "deleteNode":
        response = await fleet.deleteNode(request as DeleteNodeRequest, state);
        break;
      case "ping":
        response = await fleet.ping(request as PingRequest, state, options.pingIntervalBounds);
        break;
      case "pullTaskIns": {
        // The client went away: stop waiting without taking a task.
        const gone = new AbortController();
        const onClose = (): void => {
          if (!res.writableEnded) gone.abort();
        };
        res.once("close", onClose);
        try {
          const maxWaitMs = optedInWaitMs(header(req, LONG_POLL_HEADER), longPollMs);
          response = await fleet.pullTaskInsLongPoll(request as PullTaskInsRequest, state, {
            hub,
            maxWaitMs,
            signal: gone.signal,
          });
        } finally {
          res.off("close", onClose);
        }
        if (gone.signal.aborted) {
          called(req, GRPC_PATHS[method], 1);
          return;
        }
        break;
      }
      case "pushTaskRes":
        response = await fleet.pushTaskRes(request as PushTaskResRequest, state, { logger });
        break;
      case "getRun":
        response = await fleet.getRun(request as GetRunRequest, state);
        break;
    }
    reply(res, 200, encode(method, response), PROTOBUF_CONTENT_TYPE, headers);
    called(req, GRPC_PATHS[method], 0, request, response);
  };

  const answerError = (res: http.ServerResponse, path: string, err: unknown, fail: (f: HttpFailure) => void): void => {
    if (res.headersSent) {
      res.destroy();
      return;
    }
    if (err instanceof HttpFailure) {
      fail(err);
      return;
    }
    if (FlwrError.isFlwrError(err)) {
      logger.warn({ rpc: `REST ${path}`, code: err.code }, `REST ${path} failed: ${err.message}`);
      const status =
        err.code === "FLWR_MALFORMED_MESSAGE"
          ? 400
          : err.code === "FLWR_NOT_FOUND"
            ? 404
            : err.code === "FLWR_AUTHENTICATION_FAILED"
              ? 403
              : 500;
      fail(new HttpFailure(status, status === 403 ? "Access denied" : err.message));
      return;
    }
    logger.error({ rpc: `REST ${path}`, err }, `REST ${path} failed with an unexpected error`);
    fail(new HttpFailure(500, "Internal server error"));
  };

  const server: http.Server = options.tls
    ? https.createServer({ key: options.tls.key, cert: options.tls.cert }, handle)
    : http.createServer(handle);
  // Headers must arrive within 30 s and a whole request (up to the body cap) within 15 min, so a
  // trickling client cannot hold a connection for ever. A long poll waits after the request was
  // read, so it is not cut short by either.
  server.requestTimeout = REQUEST_TIMEOUT_MS;
  server.headersTimeout = HEADERS_TIMEOUT_MS;
  // Idle keep-alive connections outlive a SuperNode's ping interval, so a client seldom reuses a
  // socket the server is just closing (that costs it a failed call and a retry).
  server.keepAliveTimeout = 65_000;
  const sockets = new Set<Socket>();
  server.on("connection", (socket: Socket) => {
    sockets.add(socket);
    socket.once("close", () => sockets.delete(socket));
  });
  await new Promise<void>((resolve, reject) => {
    const onError = (err: Error): void => {
      reject(
        new ConnectionError(`Cannot start the REST Fleet API on ${options.address}: ${errorMessage(err)}`, {
          cause: err,
        }),
      );
    };
    server.once("error", onError);
    server.listen(port, host, () => {
      server.off("error", onError);
      resolve();
    });
  });
  server.on("error", (err) => logger.error({ err }, "REST Fleet API server error"));
  server.on("clientError", (err, socket) => {
    logger.debug({ err: errorMessage(err) }, "REST Fleet API: bad request from a client");
    socket.destroy();
  });
  const bound = server.address();
  const boundPort = typeof bound === "object" && bound !== null ? bound.port : port;

  let closing: Promise<void> | undefined;
  return {
    port: boundPort,
    address: formatAddress({ host, port: boundPort }),
    close(graceMs = 0) {
      closing ??= new Promise<void>((resolve) => {
        server.close(() => resolve());
        server.closeIdleConnections();
        const timer = setTimeout(
          () => {
            for (const socket of sockets) socket.destroy();
          },
          Math.max(0, graceMs),
        );
        timer.unref();
      });
      return closing;
    },
  };
}

function encode(method: FleetRestMethod, response: object): Buffer {
  const bytes = CODECS[method].encode(response as never).finish();
  return Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength);
}

function reply(
  res: http.ServerResponse,
  status: number,
  body: Buffer,
  contentType: string,
  headers: Record<string, string> = {},
): void {
  res.writeHead(status, { ...headers, "content-type": contentType, "content-length": String(body.length) });
  res.end(body);
}

/** Flower's header rules (400). */
function checkHeaders(req: http.IncomingMessage): void {
  const contentType = header(req, "content-type");
  if (contentType === undefined) throw new HttpFailure(400, "Missing header `Content-Type`");
  if (mediaType(contentType) !== PROTOBUF_CONTENT_TYPE) throw new HttpFailure(400, "Unsupported `Content-Type`");
  const accept = header(req, "accept");
  if (accept === undefined) throw new HttpFailure(400, "Missing header `Accept`");
  if (mediaType(accept) !== PROTOBUF_CONTENT_TYPE) throw new HttpFailure(400, "Unsupported `Accept`");
}

/** The body cap on an announced Content-Length (413), before any of the body is read. */
function checkDeclaredLength(req: http.IncomingMessage, maxBodyBytes: number): void {
  const length = header(req, "content-length");
  if (length !== undefined && Number(length) > maxBodyBytes) {
    throw new HttpFailure(413, `Request body of ${length} bytes exceeds the limit of ${maxBodyBytes} bytes`);
  }
}

/** The whole body, or HttpFailure 413 as soon as it grows past `maxBytes`. */
function readBody(req: http.IncomingMessage, maxBytes: number): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    let size = 0;
    const onData = (chunk: Buffer): void => {
      size += chunk.length;
      if (size > maxBytes) {
        cleanup();
        req.pause();
        reject(new HttpFailure(413, `Request body exceeds the limit of ${maxBytes} bytes`));
        return;
      }
      chunks.push(chunk);
    };
    const onEnd = (): void => {
      cleanup();
      resolve(chunks.length === 1 ? chunks[0]! : Buffer.concat(chunks, size));
    };
    const onError = (err: Error): void => {
      cleanup();
      reject(err);
    };
    const cleanup = (): void => {
      req.off("data", onData);
      req.off("end", onEnd);
      req.off("error", onError);
    };
    req.on("data", onData);
    req.once("end", onEnd);
    req.once("error", onError);
  });
}
