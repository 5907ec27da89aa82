/**
 * The one adapter between grpc-js unary calls and the pure handlers: logs one debug line per
 * RPC, turns client cancellation into an AbortSignal, maps thrown errors with toServiceError
 * (the single error-to-status boundary), and never lets a handler failure escape. Input echoed
 * into log lines is truncated; internal failures are logged with the incident id the caller got.
 */
import * as grpc from "@grpc/grpc-js";
import { boundedError, type Logger, MAX_LOGGED_ERROR_CHARS, truncateEcho } from "../core/logger";
import { FlwrError, errorMessage } from "../core/errors";
import { toServiceError } from "../transport/status";

/**
 * Our own failures (state errors) may say more than a caller's echo, but are still bounded:
 * SQLite messages can quote parts of a statement's input.
 */

/** What a handler answers: the response, and optionally work to do once it was handed to gRPC. */
export interface UnaryReply<Res> {
  response: Res;
  /** Runs after the response was passed to grpc-js, unless the client had already cancelled. */
  afterSent?: (() => void) | undefined;
}

export interface UnaryContext<Req> {
  request: Req;
  call: grpc.ServerUnaryCall<Req, unknown>;
  /** Aborts when the client cancels (or its deadline passes) before we answered. */
  signal: AbortSignal;
}

/** Builds a grpc-js unary handler around `run`. `rpc` names the method in logs ("Fleet.Ping"). */
export function serveUnary<Req, Res>(
  logger: Logger,
  rpc: string,
  run: (ctx: UnaryContext<Req>) => UnaryReply<Res> | Promise<UnaryReply<Res>>,
): grpc.handleUnaryCall<Req, Res> {
  return (call, callback) => {
    logger.debug({ rpc, peer: call.getPeer() }, rpc);
    const controller = new AbortController();
    // grpc-js emits "cancelled" on client cancellation, deadline expiry, and also after a
    // normal completion; the listener is removed before we answer, so it only sees the former.
    const onCancelled = (): void => controller.abort();
    call.once("cancelled", onCancelled);
    const finish = (err: unknown, reply?: UnaryReply<Res>): void => {
      call.removeListener("cancelled", onCancelled);
      if (controller.signal.aborted) {
        logger.debug({ rpc }, `${rpc}: client cancelled before the answer`);
        return;
      }
      if (reply === undefined) {
        const status = toServiceError(err, (incidentId, failure) => {
          logger.error(
            {
              rpc,
              incidentId,
              ...(FlwrError.isFlwrError(failure) ? { code: failure.code } : {}),
              err: boundedError(failure),
            },
            `${rpc} failed (incident ${incidentId}): ${truncateEcho(errorMessage(failure), MAX_LOGGED_ERROR_CHARS)}`,
          );
        });
        if (status.code !== grpc.status.INTERNAL && FlwrError.isFlwrError(err)) {
          logger.warn({ rpc, code: err.code }, `${rpc} failed: ${truncateEcho(err.message)}`);
        }
        callback(status);
        return;
      }
      callback(null, reply.response);
      const afterSent = reply.afterSent;
      if (afterSent) {
        setImmediate(() => {
          try {
            afterSent();
          } catch (e) {
            logger.error({ rpc, err: e }, `${rpc}: post-response step failed`);
          }
        });
      }
    };
    let pending: UnaryReply<Res> | Promise<UnaryReply<Res>>;
    try {
      pending = run({ request: call.request, call: call, signal: controller.signal });
    } catch (err) {
      finish(err);
      return;
    }
    if (pending instanceof Promise) {
      pending.then(
        (reply) => finish(undefined, reply),
        (err: unknown) => finish(err),
      );
    } else {
      finish(undefined, pending);
    }
  };
}

/** What the log keeps of an internal failure: its type, message and stack, each bounded. */
/** Shorthand for handlers that just compute a response. */
export function reply<Res>(response: Res): UnaryReply<Res> {
  return { response };
}

/** Margin left before a client's deadline so a long-poll answers instead of being cut off. */
const DEADLINE_MARGIN_MS = 200;

/** How long a pull may wait: `longPollMs`, shortened to end before the call's deadline. */
export function maxWaitFor(call: { getDeadline(): grpc.Deadline }, longPollMs: number): number {
  const deadline = call.getDeadline();
  const deadlineMs = deadline instanceof Date ? deadline.getTime() : deadline;
  if (!Number.isFinite(deadlineMs)) return longPollMs;
  return Math.max(0, Math.min(longPollMs, deadlineMs - Date.now() - DEADLINE_MARGIN_MS));
}
