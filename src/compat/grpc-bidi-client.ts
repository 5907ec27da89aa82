/**
 * The client half of Flower 1.10's legacy grpc-bidi transport (`flwr/client/grpc_client` and
 * the grpc-bidi branch of `start_client`): one `FlowerService.Join` stream, on which the server
 * sends instructions and the client answers each with exactly one reply.
 *
 * Each instruction goes through the ClientApp exactly as Flower does it: ServerMessage -> legacy
 * Ins -> RecordSet -> Message (run 0, node -1) -> app -> RecordSet -> legacy Res -> ClientMessage.
 * When it ends:
 *  - `ReconnectIns` with 0 seconds (what start_server sends after its last round): answer
 *    DisconnectRes (reason RECONNECT, as Flower), close, resolve ("Disconnect and shut down");
 *    with N > 0 seconds: close, wait N s, join again;
 *  - the server ends the stream (status OK): resolve, as Flower's client does on StopIteration;
 *  - the client code throws: reject with that error (Flower re-raises and the process dies);
 *  - `signal` aborts: cancel the stream and resolve.
 *
 * flwr-ts choices: a connection that cannot be made or breaks (UNAVAILABLE, CANCELLED, ...) is
 * joined again with the SuperNode's backoff, within `maxRetries` / `maxWaitTime` (Flower 1.10's
 * grpc-bidi client raises at once); TLS set up wrong and a server without FlowerService are
 * rejected at once with InvalidConfigError.
 */
import { randomUUID } from "node:crypto";
import * as grpc from "@grpc/grpc-js";
import type { ClientApp } from "../client/client-app";
import { formatAddress, parseAddress } from "../core/address";
import { DEFAULT_TTL, MessageType } from "../core/constants";
import { InvalidConfigError, MalformedMessageError, errorMessage } from "../core/errors";
import { type Logger, silentLogger } from "../core/logger";
import {
  evaluateInsToRecordSet,
  fitInsToRecordSet,
  getParametersInsToRecordSet,
  getPropertiesInsToRecordSet,
  recordSetToEvaluateRes,
  recordSetToFitRes,
  recordSetToGetParametersRes,
  recordSetToGetPropertiesRes,
} from "../core/records/compat";
import {
  type LegacyInstruction,
  disconnectResToClientMessage,
  evaluateResToClientMessage,
  fitResToClientMessage,
  getParametersResToClientMessage,
  getPropertiesResToClientMessage,
  serverMessageToInstruction,
} from "../core/records/legacy-serde";
import { type ConfigsScalar, type Context, type Message, RecordSet } from "../core/records/types";
import { type ClientMessage, FlowerServiceClient, type ServerMessage } from "../proto/flwr/proto/transport";
import { type Classification, RetryInvoker, abortableSleep, describeFailure } from "../transport/retry";
import { createClient } from "../transport/channel";
import {
  cleanDetails,
  fromServiceError,
  isCertificateFailure,
  isServiceError,
  tlsSetupError,
} from "../transport/status";
import { channelCredentials } from "../transport/tls";

/** Flower's node id for a grpc-bidi client, which has none. */
const BIDI_NODE_ID = -1n;
/** After answering ReconnectIns, how long to wait for the server to end the stream before cancelling it. */
const RECONNECT_LINGER_MS = 1_000;

export interface GrpcBidiClientOptions {
  /** HOST:PORT of a grpc-bidi server (Flower's start_server, or ours). */
  serverAddress: string;
  rootCertificates?: Buffer;
  insecure: boolean;
  app: ClientApp;
  /** `context.nodeConfig` for the app. */
  nodeConfig?: Record<string, ConfigsScalar>;
  maxRetries?: number;
  maxWaitTimeMs?: number;
  logger?: Logger;
  signal?: AbortSignal;
  /** Called once, when the first stream is open (the server has answered the Join). */
  onConnected?: () => void;
}

/** How one stream ended; "broken" says whether instructions had arrived on it. */
type StreamEnd =
  | { kind: "shutdown" }
  | { kind: "reconnect"; seconds: number }
  | { kind: "broken"; error: unknown; afterInstructions: boolean };

/** Connects and serves `app` until the server disconnects this client; see the module comment. */
export async function runGrpcBidiClient(options: GrpcBidiClientOptions): Promise<void> {
  const target = formatAddress(parseAddress(options.serverAddress));
  const credentials = channelCredentials({
    ...(options.rootCertificates !== undefined ? { rootCertificates: options.rootCertificates } : {}),
    insecure: options.insecure,
  });
  const logger = options.logger ?? silentLogger();
  const { signal } = options;
  const invoker = new RetryInvoker(
    {
      ...(options.maxRetries !== undefined ? { maxRetries: options.maxRetries } : {}),
      ...(options.maxWaitTimeMs !== undefined ? { maxWaitTimeMs: options.maxWaitTimeMs } : {}),
    },
    {
      classify: (err) => classifyJoinError(err, target),
      onBackoff: (s) =>
        logger.warn(
          {
            event: "client.join-retry",
            tries: s.tries,
            waitMs: Math.round(s.waitMs ?? 0),
            err: describeFailure(s.error),
          },
          `Connection attempt failed, retrying in ${((s.waitMs ?? 0) / 1000).toFixed(2)} seconds (${describeFailure(s.error)})`,
        ),
      onGiveUp: (s) =>
        logger.warn(
          { event: "client.join-give-up", tries: s.tries },
          `Giving up reconnection after ${(s.elapsedMs / 1000).toFixed(2)} seconds and ${s.tries} tries.`,
        ),
    },
  );
  // One context for the whole run (Flower's NodeState for run 0), kept across reconnects.
  const context: Context = {
    nodeId: BIDI_NODE_ID,
    nodeConfig: { ...options.nodeConfig },
    state: new RecordSet(),
    runConfig: {},
  };
  let connected = false;
  const session = new BidiSession(options.app, context, logger, () => {
    if (connected) return;
    connected = true;
    options.onConnected?.();
  });

  for (;;) {
    if (signal?.aborted) return;
    let end: StreamEnd;
    try {
      // A stream that breaks before any instruction arrived counts as a failed try; one that
      // broke after working starts a fresh retry budget (the loop calls invoke again).
      end = await invoker.invoke(
        "Join",
        async () => {
          const outcome = await session.run(target, credentials, signal);
          if (outcome.kind === "broken" && !outcome.afterInstructions) throw outcome.error;
          return outcome;
        },
        signal ? { signal } : {},
      );
    } catch (err) {
      if (signal?.aborted) return;
      throw err;
    }
    if (end.kind === "shutdown") {
      logger.info({ event: "client.shutdown" }, "Disconnect and shut down");
      return;
    }
    if (end.kind === "broken") {
      // After a working stream, only a failure retrying can fix is joined again.
      const verdict = classifyJoinError(end.error, target);
      if (verdict.kind === "fatal") throw verdict.error;
      logger.warn(
        { event: "client.stream-broken", err: describeFailure(end.error) },
        `The stream broke (${describeFailure(end.error)}); joining again`,
      );
      continue;
    }
    logger.info(
      { event: "client.reconnect", seconds: end.seconds },
      `Disconnect, then re-establish connection after ${end.seconds} second(s)`,
    );
    try {
      await abortableSleep(end.seconds * 1000, signal);
    } catch {
      return;
    }
  }
}

/** Runs one stream after another with the same app and context. */
class BidiSession {
  constructor(
    private readonly app: ClientApp,
    private readonly context: Context,
    private readonly logger: Logger,
    private readonly onFirstContact: () => void,
  ) {}

  /** One Join stream, from open to end. Rejects only with a fatal error (client code, bad message). */
  run(target: string, credentials: grpc.ChannelCredentials, signal: AbortSignal | undefined): Promise<StreamEnd> {
    const client = createClient(FlowerServiceClient, target, credentials);
    const call = client.join();
    let instructions = 0;
    let settled = false;
    let reconnectSeconds: number | undefined;
    let lingerTimer: NodeJS.Timeout | undefined;

    return new Promise((resolve, reject) => {
      const finish = (outcome: () => void): void => {
        if (settled) return;
        settled = true;
        clearTimeout(lingerTimer);
        signal?.removeEventListener("abort", onAbort);
        call.cancel();
        client.close();
        outcome();
      };
      const onAbort = (): void => finish(() => resolve({ kind: "shutdown" }));
      signal?.addEventListener("abort", onAbort, { once: true });

      call.on("metadata", () => this.onFirstContact());
      call.on("data", (msg: ServerMessage) => {
        this.onFirstContact();
        instructions += 1;
        // One instruction at a time, as the protocol alternates; the stream waits meanwhile.
        call.pause();
        this.handle(msg).then(
          (reply) => {
            if (settled) return;
            if (reply.reconnectSeconds !== undefined) {
              reconnectSeconds = reply.reconnectSeconds;
              // Answer, close our side, and give the server a moment to end the stream.
              call.write(reply.message, () => call.end());
              lingerTimer = setTimeout(
                () => finish(() => resolve(endAfterReconnect(reconnectSeconds!))),
                RECONNECT_LINGER_MS,
              );
              return;
            }
            call.write(reply.message);
            this.logger.info({ event: "client.sent-reply" }, "Sent reply");
            call.resume();
          },
          (err: unknown) => finish(() => reject(err)),
        );
      });
      call.on("error", (err: unknown) => {
        if (reconnectSeconds !== undefined) finish(() => resolve(endAfterReconnect(reconnectSeconds!)));
        else finish(() => resolve({ kind: "broken", error: err, afterInstructions: instructions > 0 }));
      });
      call.on("status", (status: grpc.StatusObject) => {
        if (status.code !== grpc.status.OK) return; // "error" reports it
        // The server ended the stream: Flower's client shuts down (StopIteration).
        finish(() =>
          resolve(reconnectSeconds !== undefined ? endAfterReconnect(reconnectSeconds) : { kind: "shutdown" }),
        );
      });
      if (signal?.aborted) onAbort();
    });
  }

  /** Runs one instruction through the app; the reply to send, and whether to leave afterwards. */
  private async handle(msg: ServerMessage): Promise<{ message: ClientMessage; reconnectSeconds?: number }> {
    const instruction = serverMessageToInstruction(msg);
    if (instruction.kind === "reconnectIns") {
      this.logger.info({ event: "client.received", messageType: MessageType.RECONNECT }, "Received: reconnect message");
      // Flower's client always answers RECONNECT: the seconds field is never "unset" on the wire.
      return { message: disconnectResToClientMessage("RECONNECT"), reconnectSeconds: instruction.seconds };
    }
    const message = instructionMessage(instruction);
    this.logger.info(
      { event: "client.received", messageType: message.metadata.messageType, messageId: message.metadata.messageId },
      `Received: ${message.metadata.messageType} message ${message.metadata.messageId}`,
    );
    let reply: Message;
    try {
      reply = await this.app.call(message, this.context);
    } catch (err) {
      this.logger.error({ event: "client.raised", err }, `Client raised an exception: ${errorMessage(err)}`);
      throw err;
    }
    const content = reply.content;
    if (content === undefined) throw new MalformedMessageError("The ClientApp's reply has no content");
    switch (instruction.kind) {
      case "getPropertiesIns":
        return { message: getPropertiesResToClientMessage(recordSetToGetPropertiesRes(content)) };
      case "getParametersIns":
        return { message: getParametersResToClientMessage(recordSetToGetParametersRes(content)) };
      case "fitIns":
        return { message: fitResToClientMessage(recordSetToFitRes(content)) };
      case "evaluateIns":
        return { message: evaluateResToClientMessage(recordSetToEvaluateRes(content)) };
    }
  }
}

function endAfterReconnect(seconds: number): StreamEnd {
  return seconds > 0 ? { kind: "reconnect", seconds } : { kind: "shutdown" };
}

/** The Message the ClientApp gets for an instruction (Flower's grpc_connection `receive`). */
function instructionMessage(instruction: Exclude<LegacyInstruction, { kind: "reconnectIns" }>): Message {
  let content: RecordSet;
  let messageType: string;
  switch (instruction.kind) {
    case "getPropertiesIns":
      content = getPropertiesInsToRecordSet(instruction.ins);
      messageType = MessageType.GET_PROPERTIES;
      break;
    case "getParametersIns":
      content = getParametersInsToRecordSet(instruction.ins);
      messageType = MessageType.GET_PARAMETERS;
      break;
    case "fitIns":
      content = fitInsToRecordSet(instruction.ins);
      messageType = MessageType.TRAIN;
      break;
    case "evaluateIns":
      content = evaluateInsToRecordSet(instruction.ins);
      messageType = MessageType.EVALUATE;
      break;
  }
  return {
    metadata: {
      runId: 0n,
      messageId: randomUUID(),
      srcNodeId: 0n,
      dstNodeId: 0n,
      replyToMessage: "",
      groupId: "",
      ttl: DEFAULT_TTL,
      messageType,
      createdAt: Date.now() / 1000,
    },
    content,
  };
}

/**
 * Retry or stop. Retryable: connection failures (UNAVAILABLE) and a stream ended by the peer
 * going away (CANCELLED, UNKNOWN, INTERNAL, ABORTED, RESOURCE_EXHAUSTED, DEADLINE_EXCEEDED).
 * Fatal: TLS set up wrong, a server without FlowerService (UNIMPLEMENTED), other statuses, and
 * every non-gRPC error (the client code threw, a malformed instruction).
 */
function classifyJoinError(err: unknown, target: string): Classification {
  if (!isServiceError(err)) return { kind: "fatal", error: err };
  const details = cleanDetails(err.details) || grpc.status[err.code] || String(err.code);
  switch (err.code) {
    case grpc.status.UNAVAILABLE: {
      const tlsError = tlsSetupError(err, `the server at ${target}`, "pass `insecure: true` to startClient");
      if (tlsError === undefined) return { kind: "retryable" };
      if (!isCertificateFailure(err)) return { kind: "fatal", error: tlsError };
      return {
        kind: "fatal",
        error: new InvalidConfigError(
          `TLS certificate verification of the server at ${target} failed (${details}). Pass the CA certificate ` +
            "that signed the server's certificate as `rootCertificates`, and connect with a host name or IP " +
            "address that the certificate names.",
          { cause: err },
        ),
      };
    }
    case grpc.status.CANCELLED:
    case grpc.status.UNKNOWN:
    case grpc.status.INTERNAL:
    case grpc.status.ABORTED:
    case grpc.status.RESOURCE_EXHAUSTED:
    case grpc.status.DEADLINE_EXCEEDED:
      return { kind: "retryable" };
    case grpc.status.UNIMPLEMENTED:
      return {
        kind: "fatal",
        error: new InvalidConfigError(
          `The server at ${target} does not implement FlowerService.Join, the grpc-bidi transport of Flower's ` +
            `start_server (${details}). A SuperLink's Fleet API (flower-superlink, default port 9092) speaks ` +
            'grpc-rere: use `transport: "grpc-rere"`.',
          { cause: err },
        ),
      };
    default:
      return { kind: "fatal", error: fromServiceError(err, "Join") };
  }
}
