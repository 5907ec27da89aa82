/**
 * What the SuperNode needs from a connection to the SuperLink's Fleet API, whatever carries it:
 * FleetConnection (grpc-rere) and RestFleetConnection (Flower's REST routes) implement it.
 *
 * Failures are reported in gRPC's vocabulary for both, so one retry policy (src/transport/retry.ts) serves
 * both: a gRPC ServiceError, or a FleetCallError with the gRPC status code that matches the
 * HTTP outcome. This file imports nothing from Node or grpc-js, so a browser build can use it.
 */
import type { PullTaskInsResponse, PushTaskResResponse } from "../proto/flwr/proto/fleet";
import type { Node } from "../proto/flwr/proto/node";
import type { Run } from "../proto/flwr/proto/run";
import type { TaskRes } from "../proto/flwr/proto/task";

/** Per-call controls. */
export interface CallControl {
  /** Aborting cancels the call (it then fails with CANCELLED). */
  signal?: AbortSignal;
  /** Deadline relative to the start of the call, in ms; none by default (as Flower). */
  deadlineMs?: number;
  /**
   * PullTaskIns only: let a flwr-ts SuperLink hold an empty answer open for up to this long
   * (sent as LONG_POLL_HEADER; Flower's SuperLink ignores it). Without it: an immediate answer.
   */
  longPollMs?: number;
}

export interface FleetTransport {
  /** What this connection talks to (HOST:PORT or a URL), for messages. */
  readonly target: string;
  /** Whether requests carry node-authentication headers. */
  readonly authenticated: boolean;
  /** Registers this node (with authentication, also derives the shared MAC key). */
  createNode(pingInterval: number, control?: CallControl): Promise<Node>;
  deleteNode(node: Node, control?: CallControl): Promise<void>;
  /** False: the SuperLink does not know this node (any more). */
  ping(node: Node, pingInterval: number, control?: CallControl): Promise<boolean>;
  pullTaskIns(node: Node, control?: CallControl): Promise<PullTaskInsResponse>;
  pushTaskRes(taskRes: TaskRes, control?: CallControl): Promise<PushTaskResResponse>;
  /** Undefined when the SuperLink does not know the run. */
  getRun(runId: bigint, control?: CallControl): Promise<Run | undefined>;
  /** Cancels calls in flight and releases the connection. Idempotent. */
  close(): void;
}

/** gRPC status codes (the numbers of grpc-js's `status`), for transports that are not gRPC. */
export const CallStatus = {
  CANCELLED: 1,
  UNKNOWN: 2,
  INVALID_ARGUMENT: 3,
  DEADLINE_EXCEEDED: 4,
  NOT_FOUND: 5,
  UNIMPLEMENTED: 12,
  INTERNAL: 13,
  UNAVAILABLE: 14,
  UNAUTHENTICATED: 16,
} as const;

/**
 * A failed call of a non-gRPC transport, shaped like grpc-js's ServiceError (`code`, `details`)
 * so that the same classification applies. `httpStatus` is set when the server answered.
 */
export class FleetCallError extends Error {
  constructor(
    readonly code: number,
    readonly details: string,
    readonly httpStatus?: number,
    options?: { cause?: unknown },
  ) {
    super(details, options);
    this.name = "FleetCallError";
  }
}

/** The gRPC status that says the same as an HTTP error status of the REST Fleet API. */
export function statusForHttp(httpStatus: number): number {
  if (httpStatus === 401 || httpStatus === 403) return CallStatus.UNAUTHENTICATED;
  // 413: a body over the SuperLink's cap; retrying the same body cannot help.
  if (httpStatus === 400 || httpStatus === 413 || httpStatus === 422) return CallStatus.INVALID_ARGUMENT;
  if (httpStatus === 404) return CallStatus.NOT_FOUND;
  if (httpStatus === 405 || httpStatus === 501) return CallStatus.UNIMPLEMENTED;
  if (httpStatus === 408 || httpStatus === 504) return CallStatus.DEADLINE_EXCEEDED;
  if (httpStatus === 500) return CallStatus.INTERNAL;
  return CallStatus.UNAVAILABLE;
}
