/**
 * What a grpc-js server holds for peers that have not proved who they are yet.
 *
 * A `ReceiveGuard` is a server interceptor that must come first in the server's `interceptors`
 * (grpc-js hands the first one its own base call, whose stream and decoder the guard needs). Per
 * call it:
 * - lowers the receive limit of the methods given a smaller one (`maxRequestBytes`), before any
 *   byte of the request is read: an oversized header ends the call at once;
 * - charges the message memory of every call that has not authenticated to a budget per
 *   connection and one over all connections; a call that would go over ends RESOURCE_EXHAUSTED,
 *   with one log line (at most one a second, with a count of the ones left out);
 * - inflates a compressed request from such a call to at most `unauthenticatedInflatedBytes`
 *   (charged to the same budget), off the event loop;
 * - resets the stream (RST_STREAM NO_ERROR, after the status) when a call ends before the peer
 *   finished sending, so the rest of its request is never read;
 * - with a `largeMessageAdmission`, pauses the stream of a large request message until that
 *   admission lets it in (src/transport/receive-admission.ts), for every call or only for the
 *   authenticated ones (`largeMessageAdmissionAuthenticatedOnly`).
 * What "authenticated" means is the caller's: `markAuthenticated(metadata)` says the call with
 * that metadata proved the identity its `identityHeader` names; its memory stops counting, and
 * later calls on the same connection naming the same identity are not budgeted (a TLS connection
 * cannot be taken over, so the same peer sends them). Without such a caller, every call counts.
 *
 * This reaches into grpc-js internals of each call (BaseServerInterceptingCall's stream, decoder,
 * receive limit, decompressMessage and sendStatus), reviewed for one grpc-js version: the
 * RECEIVE_GUARD extension (src/transport/grpc-extensions.ts, docs/grpc-extensions.md) checks
 * them, and a guard cannot be made unless it is active. If a call still lacks them (the guard
 * is not the first interceptor), the guard logs once and lets calls through unguarded.
 */
import * as grpc from "@grpc/grpc-js";
import { constants as http2Constants, type ServerHttp2Session, type ServerHttp2Stream } from "node:http2";
import * as zlib from "node:zlib";
import { type Logger, silentLogger } from "../core/logger";
import {
  GRPC_FRAME_HEADER_BYTES,
  type ReceiveAccount,
  setDecoderAccount,
  setDecoderLargeMessageWatch,
} from "./grpc-zero-copy";
import type { AdmissionTicket, ReceiveAdmission } from "./receive-admission";
import { type GrpcExtension, requireGrpcExtensions, requireGrpcInternal, requireMethod } from "./grpc-internals";

/**
 * The guard's use of per-call internals: nothing is replaced process-wide (the guard swaps
 * `decompressMessage` and `sendStatus` on the calls it guards only), so applying it only marks it
 * active once the prototype has what the guard calls. Budgets need the incremental decoder.
 */
export const RECEIVE_GUARD: GrpcExtension = {
  name: "receive-guard",
  requires: ["incremental-decoder"],
  prepare() {
    const what = "build/src/server-interceptors BaseServerInterceptingCall";
    const proto = requireGrpcInternal(
      what,
      // eslint-disable-next-line @typescript-eslint/no-require-imports -- a literal require of one reviewed build file (docs/grpc-extensions.md)
      () => require("@grpc/grpc-js/build/src/server-interceptors"),
      (mod) => (mod["BaseServerInterceptingCall"] as { prototype?: object } | undefined)?.prototype,
    );
    for (const key of ["decompressMessage", "sendStatus"]) requireMethod(what, proto, key);
    return () => undefined;
  },
};

export interface ReceiveGuardOptions {
  /** Largest request message in bytes, by method path; other methods keep the server's limit. */
  maxRequestBytes?: ReadonlyMap<string, number>;
  /** Most request bytes held at once for calls not yet authenticated, per connection. */
  unauthenticatedBytesPerConnection: number;
  /** The same, over all connections together. */
  unauthenticatedBytesTotal: number;
  /** Largest inflated size of a compressed request from a call not yet authenticated (default 64 KiB). */
  unauthenticatedInflatedBytes?: number;
  /** Metadata header naming the identity a call authenticates as (e.g. "public-key"). */
  identityHeader: string;
  /** Large request messages are read only when this lets them in. */
  largeMessageAdmission?: ReceiveAdmission;
  /**
   * Only calls that count as authenticated when their message starts ask the admission; the
   * others are read at once, under the unauthenticated budgets (default false: every call asks).
   * With node authentication this keeps a peer that proved nothing from taking the budget by
   * declaring a large message and sending none of it.
   */
  largeMessageAdmissionAuthenticatedOnly?: boolean;
  logger?: Logger;
}

/** Default of `unauthenticatedInflatedBytes`: the size of the largest small request. */
const DEFAULT_UNAUTHENTICATED_INFLATED_BYTES = 64 * 1024;

/** What the guard uses of grpc-js 1.14's BaseServerInterceptingCall. */
interface BaseCall {
  stream: ServerHttp2Stream;
  decoder: { maxReadMessageLength: number };
  maxReceiveMessageSize: number;
  receivedHalfClose: boolean;
  wantTrailers: boolean;
  sendStatus(status: Partial<grpc.StatusObject>): void;
  decompressMessage(message: Buffer, encoding: string): Buffer | Promise<Buffer>;
}

function asBaseCall(call: unknown): BaseCall | undefined {
  const c = call as Partial<BaseCall> | null;
  if (
    c === null ||
    typeof c !== "object" ||
    typeof c.stream?.close !== "function" ||
    typeof c.decoder?.maxReadMessageLength !== "number" ||
    typeof c.maxReceiveMessageSize !== "number" ||
    typeof c.receivedHalfClose !== "boolean" ||
    typeof c.sendStatus !== "function" ||
    typeof c.decompressMessage !== "function"
  ) {
    return undefined;
  }
  return c as BaseCall;
}

interface ConnectionState {
  /** Bytes held for this connection's calls that have not authenticated. */
  held: number;
  /** Identities (identity header values) proven on this connection. */
  authenticated: Set<string>;
}

/** Why a reservation was refused, for the log line. */
type Scope = "connection" | "total";

class CallAccount implements ReceiveAccount {
  held = 0;
  closed = false;

  constructor(
    private readonly guard: ReceiveGuard,
    private readonly connection: ConnectionState,
    private readonly path: string,
    /** The peer's address, for the refusal line only (reading it costs a getpeername per call). */
    private readonly peer: () => string,
  ) {}

  reserve(bytes: number): void {
    if (this.closed) return;
    const scope = this.guard.refusal(this.connection, bytes);
    if (scope !== undefined) {
      this.guard.reportRefusal(scope, this.path, this.peer(), this.held + bytes);
      throw new Error(
        scope === "connection"
          ? `Request refused: more than ${this.guard.perConnection} bytes in flight on this connection before authentication`
          : "Request refused: the server holds too many bytes from unauthenticated peers",
      );
    }
    this.connection.held += bytes;
    this.guard.total += bytes;
    this.held += bytes;
  }

  /** Stops counting: the call ended or authenticated. Idempotent. */
  release(): void {
    if (this.closed) return;
    this.closed = true;
    this.connection.held -= this.held;
    this.guard.total -= this.held;
    this.held = 0;
  }
}

interface GuardedCall {
  connection: ConnectionState;
  identity: string | undefined;
  account: CallAccount | undefined;
}

/** Constructing one throws InvalidConfigError unless the incremental-decoder and receive-guard extensions are active. */
export class ReceiveGuard {
  readonly perConnection: number;
  readonly totalLimit: number;
  /** Bytes held now for calls not yet authenticated, over all connections. */
  total = 0;
  private readonly maxRequestBytes: ReadonlyMap<string, number>;
  private readonly inflatedLimit: number;
  private readonly identityHeader: string;
  /** Admission of large request messages, if any. */
  readonly admission: ReceiveAdmission | undefined;
  private readonly admissionAuthenticatedOnly: boolean;
  private readonly logger: Logger;
  private readonly connections = new WeakMap<ServerHttp2Session, ConnectionState>();
  private readonly calls = new WeakMap<grpc.Metadata, GuardedCall>();
  private warnedUnguarded = false;
  private lastReportMs = -Infinity;
  private unreported = 0;

  constructor(options: ReceiveGuardOptions) {
    for (const [name, value] of [
      ["unauthenticatedBytesPerConnection", options.unauthenticatedBytesPerConnection],
      ["unauthenticatedBytesTotal", options.unauthenticatedBytesTotal],
    ] as const) {
      if (!Number.isSafeInteger(value) || value < 1)
        throw new RangeError(`${name} must be a positive integer, got ${value}`);
    }
    this.perConnection = options.unauthenticatedBytesPerConnection;
    this.totalLimit = options.unauthenticatedBytesTotal;
    this.maxRequestBytes = options.maxRequestBytes ?? new Map();
    this.inflatedLimit = Math.max(1, options.unauthenticatedInflatedBytes ?? DEFAULT_UNAUTHENTICATED_INFLATED_BYTES);
    this.identityHeader = options.identityHeader;
    this.admission = options.largeMessageAdmission;
    this.admissionAuthenticatedOnly = options.largeMessageAdmissionAuthenticatedOnly ?? false;
    this.logger = options.logger ?? silentLogger();
    requireGrpcExtensions(["incremental-decoder", "receive-guard"], "A ReceiveGuard");
  }

  /** The interceptor; it must be the first of the server's interceptors. */
  interceptor(): grpc.ServerInterceptor {
    return (method, call) => {
      const base = asBaseCall(call);
      if (base === undefined) {
        if (!this.warnedUnguarded) {
          this.warnedUnguarded = true;
          this.logger.error(
            { event: "transport.receive-guard-inactive" },
            "Receive limits are off: the ReceiveGuard is not the first interceptor, or grpc-js changed its internals",
          );
        }
        return new grpc.ServerInterceptingCall(call);
      }
      const limit = this.maxRequestBytes.get(method.path);
      if (limit !== undefined) {
        if (base.maxReceiveMessageSize === -1 || limit < base.maxReceiveMessageSize) base.maxReceiveMessageSize = limit;
        if (base.decoder.maxReadMessageLength === -1 || limit < base.decoder.maxReadMessageLength)
          base.decoder.maxReadMessageLength = limit;
      }
      // A streaming request (grpc-bidi's Join) ends by the server's status while the peer is still
      // open by design; resetting it could overtake the status, which the peer must see.
      if (!method.requestStream) resetWhenEndedEarly(base);
      // Set from the metadata, which arrives before any message.
      let budgeted = true;
      if (this.admission !== undefined) {
        const authenticatedOnly = this.admissionAuthenticatedOnly;
        admitLargeMessages(base, this.admission, () => !authenticatedOnly || !budgeted);
      }
      const listener = new grpc.ServerListenerBuilder()
        .withOnReceiveMetadata((metadata, next) => {
          budgeted = this.admit(base, method.path, metadata);
          next(metadata);
        })
        .build();
      return new grpc.ServerInterceptingCall(call, { start: (next) => next(listener) });
    };
  }

  /**
   * The call whose request carried `metadata` proved the identity in its identity header: its
   * bytes stop counting, and its connection is trusted for that identity from now on.
   */
  markAuthenticated(metadata: grpc.Metadata): void {
    const guarded = this.calls.get(metadata);
    if (guarded === undefined) return;
    guarded.account?.release();
    if (guarded.identity !== undefined) guarded.connection.authenticated.add(guarded.identity);
  }

  /** Which limit `bytes` more would exceed, if any (for CallAccount). */
  refusal(connection: ConnectionState, bytes: number): Scope | undefined {
    if (connection.held + bytes > this.perConnection) return "connection";
    if (this.total + bytes > this.totalLimit) return "total";
    return undefined;
  }

  /** One warn line per second at most; the lines left out are counted in the next one. */
  reportRefusal(scope: Scope, path: string, peer: string, callBytes: number): void {
    const now = Date.now();
    if (now - this.lastReportMs < 1000) {
      this.unreported++;
      return;
    }
    this.lastReportMs = now;
    const limit = scope === "connection" ? this.perConnection : this.totalLimit;
    this.logger.warn(
      {
        event: "transport.receive-budget-exceeded",
        scope,
        method: path,
        peer,
        callBytes,
        limit,
        heldTotal: this.total,
        notLogged: this.unreported,
      },
      `${path} from ${peer} refused with RESOURCE_EXHAUSTED: unauthenticated bytes over the ${scope} limit of ${limit}`,
    );
    this.unreported = 0;
  }

  /** Starts counting the call's bytes unless its connection proved its identity; true if counted. */
  private admit(base: BaseCall, path: string, metadata: grpc.Metadata): boolean {
    const session = base.stream.session as ServerHttp2Session | undefined;
    if (session === undefined) return true;
    let connection = this.connections.get(session);
    if (connection === undefined) {
      connection = { held: 0, authenticated: new Set() };
      this.connections.set(session, connection);
    }
    const value = metadata.get(this.identityHeader)[0];
    const identity = value === undefined ? undefined : typeof value === "string" ? value : value.toString("latin1");
    if (identity !== undefined && connection.authenticated.has(identity)) {
      this.calls.set(metadata, { connection, identity, account: undefined });
      return false;
    }
    const peer = (): string => {
      const socket = session.socket as ServerHttp2Session["socket"] | undefined;
      return `${socket?.remoteAddress ?? "unknown"}:${socket?.remotePort ?? ""}`;
    };
    const account = new CallAccount(this, connection, path, peer);
    this.calls.set(metadata, { connection, identity, account });
    setDecoderAccount(base.decoder, account);
    base.stream.once("close", () => account.release());
    this.inflateBounded(base, account);
    return true;
  }

  /**
   * A compressed request from a call that has not authenticated is inflated to at most
   * `inflatedLimit` bytes (charged to the call's account), on zlib's thread pool.
   */
  private inflateBounded(base: BaseCall, account: CallAccount): void {
    // eslint-disable-next-line @typescript-eslint/unbound-method -- called with .call(this, ...)
    const original = base.decompressMessage;
    const inflatedLimit = this.inflatedLimit;
    base.decompressMessage = function decompressMessage(
      this: BaseCall,
      message: Buffer,
      encoding: string,
    ): Buffer | Promise<Buffer> {
      if (account.closed || (encoding !== "gzip" && encoding !== "deflate"))
        return original.call(this, message, encoding);
      const limit =
        this.maxReceiveMessageSize === -1 ? inflatedLimit : Math.min(inflatedLimit, this.maxReceiveMessageSize);
      return new Promise<Buffer>((resolve, reject) => {
        const done = (err: Error | null, inflated: Buffer): void => {
          if (err !== null) {
            const tooLarge = (err as NodeJS.ErrnoException).code === "ERR_BUFFER_TOO_LARGE";
            // eslint-disable-next-line @typescript-eslint/prefer-promise-reject-errors -- grpc-js's decompressMessage rejects with a status object
            reject(
              tooLarge
                ? {
                    code: grpc.status.RESOURCE_EXHAUSTED,
                    details: `Received message that decompresses to a size larger than ${limit}`,
                  }
                : { code: grpc.status.INTERNAL, details: "Failed to decompress message" },
            );
            return;
          }
          try {
            account.reserve(inflated.length);
          } catch (e) {
            // eslint-disable-next-line @typescript-eslint/prefer-promise-reject-errors -- as above
            reject({ code: grpc.status.RESOURCE_EXHAUSTED, details: (e as Error).message });
            return;
          }
          resolve(inflated);
        };
        const body = message.subarray(GRPC_FRAME_HEADER_BYTES);
        if (encoding === "gzip") zlib.gunzip(body, { maxOutputLength: limit }, done);
        else zlib.inflate(body, { maxOutputLength: limit }, done);
      });
    };
  }
}

/**
 * Each large request message of the call asks `admission` first (when `asks()` says so as the
 * message starts); while it waits, the stream is
 * paused (nghttp2 then stops returning stream window to the peer, and the connection's other
 * streams go on). A call that ends gives its claim back.
 */
function admitLargeMessages(base: BaseCall, admission: ReceiveAdmission, asks: () => boolean): void {
  const stream = base.stream;
  let ticket: AdmissionTicket | undefined;
  setDecoderLargeMessageWatch(base.decoder, {
    minBytes: admission.minMessageBytes,
    started(declaredBytes) {
      if (!asks()) return;
      ticket = admission.request(declaredBytes, () => {
        if (!stream.destroyed) stream.resume();
      });
      if (!ticket.admitted) stream.pause();
    },
    received(message) {
      ticket?.received(message.buffer as ArrayBuffer);
      ticket = undefined;
    },
  });
  stream.once("close", () => ticket?.cancel());
}

/**
 * After a status sent before the peer finished its request, the stream is reset with NO_ERROR
 * (gRPC over HTTP/2 allows it once the status is out): the peer stops sending, and nothing more
 * of its request is read. grpc-js alone leaves the stream open and reads and drops the rest.
 */
function resetWhenEndedEarly(base: BaseCall): void {
  // eslint-disable-next-line @typescript-eslint/unbound-method -- called with .call(this, ...)
  const original = base.sendStatus;
  let done = false;
  base.sendStatus = function sendStatus(this: BaseCall, status: Partial<grpc.StatusObject>): void {
    const early = !done && !this.receivedHalfClose && !this.stream.destroyed;
    original.call(this, status);
    if (!early) return;
    done = true;
    const stream = this.stream;
    const reset = (): void => {
      if (!stream.destroyed && !stream.closed) stream.close(http2Constants.NGHTTP2_NO_ERROR);
    };
    // With response headers sent, the status goes out as trailers once grpc-js's own
    // 'wantTrailers' listener (registered just now, so called first) sends them.
    if (this.wantTrailers) stream.once("wantTrailers", reset);
    else reset();
  };
}
