/**
 * The server half of Flower 1.10's legacy grpc-bidi transport (`FlowerService.Join`, a
 * bidirectional stream per client), as `flwr.server.start_server` serves it:
 *
 *  - every Join stream is one client: a `GrpcBidiClientProxy` with a fresh random cid (32 hex
 *    digits, Flower's `uuid4().hex`: behind a proxy many clients share one peer address) is
 *    registered with the ClientManager, and unregistered when the stream ends for any reason;
 *  - the stream is strictly alternating, as Flower's `GrpcBridge`: the server writes one
 *    ServerMessage, the client answers with exactly one ClientMessage; the server speaks first;
 *  - a per-call timeout (the round timeout) that passes ends the stream with DEADLINE_EXCEEDED
 *    "Timeout of Nsec was exceeded." and unregisters the client, as Flower does;
 *  - a client that half-closes its side ends the stream with OK (Flower: StopIteration).
 *
 * flwr-ts choices: a ClientMessage that arrives while no instruction is outstanding, or that
 * does not answer the instruction (e.g. fit_res for evaluate_ins), ends that client's stream
 * with INVALID_ARGUMENT instead of being taken as the next reply; at most `maxClients` streams
 * are open at once (Flower: 1000 worker threads), further Joins get RESOURCE_EXHAUSTED.
 */
import { randomUUID } from "node:crypto";
import * as grpc from "@grpc/grpc-js";
import { ConnectionError, MalformedMessageError, TimeoutError, errorMessage } from "../core/errors";
import { type Logger, silentLogger } from "../core/logger";
import {
  type DisconnectReason,
  clientMessageKind,
  clientMessageToDisconnectRes,
  clientMessageToEvaluateRes,
  clientMessageToFitRes,
  clientMessageToGetParametersRes,
  clientMessageToGetPropertiesRes,
  evaluateInsToServerMessage,
  fitInsToServerMessage,
  getParametersInsToServerMessage,
  getPropertiesInsToServerMessage,
  reconnectInsToServerMessage,
  serverMessageKind,
} from "../core/records/legacy-serde";
import type {
  EvaluateIns,
  EvaluateRes,
  FitIns,
  FitRes,
  GetParametersIns,
  GetParametersRes,
  GetPropertiesIns,
  GetPropertiesRes,
} from "../core/records/legacy-types";
import { type ClientMessage, FlowerServiceService, type ServerMessage } from "../proto/flwr/proto/transport";
import type { ClientManager } from "../server/client-manager";
import type { ClientCallOptions, ClientProxy } from "../server/client-proxy";
import type { ServiceRegistration } from "../transport/grpc-server";

/** Flower's `max_concurrent_workers` default: at most this many Join streams at once. */
const DEFAULT_MAX_BIDI_CLIENTS = 1000;

type JoinCall = grpc.ServerDuplexStream<ClientMessage, ServerMessage>;

/** Which reply answers which instruction. */
const REPLY_KIND = {
  reconnectIns: "disconnectRes",
  getPropertiesIns: "getPropertiesRes",
  getParametersIns: "getParametersRes",
  fitIns: "fitRes",
  evaluateIns: "evaluateRes",
} as const;

interface PendingRequest {
  expected: string;
  resolve: (msg: ClientMessage) => void;
  reject: (err: Error) => void;
  cleanup: () => void;
}

/**
 * One client's Join stream (Flower's `GrpcBridge`): `request` writes one instruction and
 * resolves with the client's one reply. Once the stream has ended, every request rejects with
 * ConnectionError (Flower's `GrpcBridgeClosed`).
 */
export class GrpcBridge {
  private pending: PendingRequest | undefined;
  private closedWith: Error | undefined;
  private readonly closeListeners = new Set<() => void>();

  constructor(private readonly call: JoinCall) {
    call.on("data", (msg: ClientMessage) => this.onClientMessage(msg));
    // The client half-closed: nothing more can come, finish the stream (Flower: StopIteration).
    call.on("end", () => this.end("the client closed its side of the stream"));
    call.on("cancelled", () => this.terminate(new ConnectionError("the client cancelled the stream")));
    call.on("error", (err: unknown) => this.terminate(new ConnectionError(`stream error: ${errorMessage(err)}`)));
    call.on("close", () => this.terminate(new ConnectionError("the stream closed")));
  }

  get closed(): boolean {
    return this.closedWith !== undefined;
  }

  /** Called once when the stream ends (the client is then unregistered). */
  onClose(listener: () => void): void {
    if (this.closed) listener();
    else this.closeListeners.add(listener);
  }

  /**
   * Sends `msg` and waits for the reply. `timeoutSeconds` passing ends the stream with
   * DEADLINE_EXCEEDED (TimeoutError); `signal` aborting ends it with CANCELLED.
   */
  request(msg: ServerMessage, opts: { timeoutSeconds?: number; signal?: AbortSignal } = {}): Promise<ClientMessage> {
    if (this.closedWith !== undefined) return Promise.reject(this.closedWith);
    if (this.pending !== undefined) {
      return Promise.reject(new MalformedMessageError("GrpcBridge: an instruction is already waiting for its reply"));
    }
    const kind = serverMessageKind(msg);
    if (kind === undefined) return Promise.reject(new MalformedMessageError("GrpcBridge: empty ServerMessage"));
    const { timeoutSeconds, signal } = opts;
    signal?.throwIfAborted();
    return new Promise<ClientMessage>((resolve, reject) => {
      let timer: NodeJS.Timeout | undefined;
      const onAbort = (): void => {
        this.fail(grpc.status.CANCELLED, "The server stopped waiting for this client", signal!.reason as Error);
      };
      const cleanup = (): void => {
        clearTimeout(timer);
        signal?.removeEventListener("abort", onAbort);
        this.pending = undefined;
      };
      this.pending = { expected: REPLY_KIND[kind], resolve, reject, cleanup };
      if (timeoutSeconds !== undefined) {
        timer = setTimeout(() => {
          const details = `Timeout of ${timeoutSeconds}sec was exceeded.`;
          this.fail(grpc.status.DEADLINE_EXCEEDED, details, new TimeoutError(details));
        }, timeoutSeconds * 1000);
      }
      signal?.addEventListener("abort", onAbort, { once: true });
      this.call.write(msg);
    });
  }

  /** Ends the stream with OK (the client sees the end of the stream). Idempotent. */
  end(why = "the server ended the stream"): void {
    if (this.closed) return;
    this.terminate(new ConnectionError(why));
    this.call.end();
  }

  private onClientMessage(msg: ClientMessage): void {
    const pending = this.pending;
    const kind = clientMessageKind(msg) ?? "an empty message";
    if (pending === undefined) {
      this.fail(
        grpc.status.INVALID_ARGUMENT,
        `Unexpected ClientMessage (${kind}): no instruction is waiting for a reply`,
      );
      return;
    }
    if (kind !== pending.expected) {
      this.fail(grpc.status.INVALID_ARGUMENT, `Expected a ClientMessage with ${pending.expected}, got ${kind}`);
      return;
    }
    pending.cleanup();
    pending.resolve(msg);
  }

  /** Ends the stream with an error status; the waiting request rejects with `error`. */
  private fail(code: grpc.status, details: string, error?: Error): void {
    if (this.closed) return;
    this.terminate(error ?? new MalformedMessageError(details));
    this.call.emit("error", { code, details });
  }

  private terminate(reason: Error): void {
    if (this.closedWith !== undefined) return;
    this.closedWith = reason;
    const pending = this.pending;
    if (pending !== undefined) {
      pending.cleanup();
      pending.reject(reason);
    }
    for (const listener of [...this.closeListeners]) listener();
    this.closeListeners.clear();
  }
}

/** A grpc-bidi client as the legacy loop sees it (Flower's `GrpcClientProxy`). */
export class GrpcBidiClientProxy implements ClientProxy {
  constructor(
    readonly cid: string,
    readonly bridge: GrpcBridge,
  ) {}

  async getProperties(ins: GetPropertiesIns, opts: ClientCallOptions = {}): Promise<GetPropertiesRes> {
    return clientMessageToGetPropertiesRes(
      await this.bridge.request(getPropertiesInsToServerMessage(ins), callOpts(opts)),
    );
  }

  async getParameters(ins: GetParametersIns, opts: ClientCallOptions = {}): Promise<GetParametersRes> {
    return clientMessageToGetParametersRes(
      await this.bridge.request(getParametersInsToServerMessage(ins), callOpts(opts)),
    );
  }

  async fit(ins: FitIns, opts: ClientCallOptions = {}): Promise<FitRes> {
    return clientMessageToFitRes(await this.bridge.request(fitInsToServerMessage(ins), callOpts(opts)));
  }

  async evaluate(ins: EvaluateIns, opts: ClientCallOptions = {}): Promise<EvaluateRes> {
    return clientMessageToEvaluateRes(await this.bridge.request(evaluateInsToServerMessage(ins), callOpts(opts)));
  }

  /**
   * Flower's `reconnect`: ReconnectIns with `seconds` (undefined = disconnect for good), resolves
   * with the client's DisconnectRes reason.
   */
  async reconnect(seconds: number | undefined, opts: ClientCallOptions = {}): Promise<{ reason: DisconnectReason }> {
    return clientMessageToDisconnectRes(
      await this.bridge.request(reconnectInsToServerMessage(seconds), callOpts(opts)),
    );
  }
}

function callOpts(opts: ClientCallOptions): { timeoutSeconds?: number; signal?: AbortSignal } {
  return {
    ...(opts.timeoutSeconds !== undefined ? { timeoutSeconds: opts.timeoutSeconds } : {}),
    ...(opts.signal !== undefined ? { signal: opts.signal } : {}),
  };
}

export interface FlowerServiceOptions {
  clientManager: ClientManager;
  logger?: Logger;
  /** Open Join streams allowed at once. Default DEFAULT_MAX_BIDI_CLIENTS. */
  maxClients?: number;
}

/** The FlowerService to add to a gRPC server, and control over its open streams. */
export interface FlowerServiceHandle {
  registration: ServiceRegistration;
  /** Clients whose stream is open. */
  clients(): GrpcBidiClientProxy[];
  /** Ends every open stream with OK (clients see the end of the stream). */
  endAll(): void;
}

/** Flower's `FlowerServiceServicer`: one GrpcBidiClientProxy per Join stream. */
export function createFlowerService(options: FlowerServiceOptions): FlowerServiceHandle {
  const { clientManager } = options;
  const logger = options.logger ?? silentLogger();
  const maxClients = options.maxClients ?? DEFAULT_MAX_BIDI_CLIENTS;
  const open = new Set<GrpcBidiClientProxy>();

  const join = (call: JoinCall): void => {
    const peer = call.getPeer();
    if (open.size >= maxClients) {
      logger.warn(
        { event: "server.bidi-refused", peer, open: open.size },
        `Refused a grpc-bidi client from ${peer}: ${open.size} already connected`,
      );
      call.emit("error", {
        code: grpc.status.RESOURCE_EXHAUSTED,
        details: `At most ${maxClients} clients can be connected`,
      });
      return;
    }
    const cid = randomUUID().replace(/-/g, "");
    const bridge = new GrpcBridge(call);
    const proxy = new GrpcBidiClientProxy(cid, bridge);
    if (!clientManager.register(proxy)) {
      // Flower's Join returns at once when registration fails.
      bridge.end("the client could not be registered");
      return;
    }
    open.add(proxy);
    // Headers now, not with the first instruction: the client learns at once that it joined.
    call.sendMetadata(new grpc.Metadata());
    logger.info({ event: "server.bidi-client-joined", cid, peer }, `grpc-bidi client ${cid} connected from ${peer}`);
    bridge.onClose(() => {
      open.delete(proxy);
      clientManager.unregister(proxy);
      logger.info({ event: "server.bidi-client-left", cid, peer }, `grpc-bidi client ${cid} disconnected`);
    });
  };

  return {
    registration: {
      definition: FlowerServiceService,
      implementation: { join },
    },
    clients: () => [...open],
    endAll: () => {
      for (const proxy of [...open]) proxy.bridge.end();
    },
  };
}
