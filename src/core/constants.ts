/**
 * Protocol and default values shared by the three daemons. Values that must match Flower 1.10
 * say so; values that are ours (latency, shutdown) are marked as flwr-ts choices.
 */

/** Default Driver API address (ServerApp -> SuperLink). Flower 1.10. */
export const DEFAULT_DRIVER_API_ADDRESS = "0.0.0.0:9091";
/** Default Fleet API address (SuperNode -> SuperLink). Flower 1.10. */
export const DEFAULT_FLEET_API_ADDRESS = "0.0.0.0:9092";

/** The `--database` value that selects the in-memory state. Flower 1.10. */
export const IN_MEMORY_DATABASE = ":flwr-in-memory-state:";

/** gRPC send/receive limit on every server and channel: 512 MiB. Flower 1.10. */
export const GRPC_MAX_MESSAGE_LENGTH = 536_870_912;

/** Ping interval a SuperNode announces, in seconds. Flower 1.10. */
export const PING_DEFAULT_INTERVAL = 30;
/** Deadline of one Ping call, in seconds. Flower 1.10. */
export const PING_CALL_TIMEOUT = 5;
/** Next ping after (interval - call timeout) * (0.8 +- 0.1). Flower 1.10. */
export const PING_BASE_MULTIPLIER = 0.8;
export const PING_RANDOM_RANGE = 0.1;

/** Default message TTL in seconds. Flower 1.10. */
export const DEFAULT_TTL = 3600;
/** The validator rejects task timestamps before 2024-03-27T00:00:00Z. Flower 1.10. */
export const MIN_TASK_TIMESTAMP = 1711497600.0;

/** `PushTaskResResponse.reconnect.reconnect` as Flower sends it (clients ignore it). */
export const PUSH_TASK_RES_RECONNECT_SECONDS = 5n;

/**
 * flwr-ts: how long an empty PullTaskIns / PullTaskRes may be held open waiting for work.
 * Flower peers poll every 1-3 s regardless; holding a pull briefly lets our own peers see new
 * work within milliseconds without busy polling. Kept well under any client deadline.
 */
export const DEFAULT_LONG_POLL_MS = 2_000;

/**
 * flwr-ts: how long an empty PullTaskIns of a SuperNode that opts in (LONG_POLL_HEADER, ours)
 * may be held. A held pull answers the moment a TaskIns for its node is stored, so the length
 * costs no latency; it only sets how often an idle node asks again: 30 s instead of 2 s took
 * the SuperLink from 34% to 13% of a core with 1000 idle nodes (bench idle). Kept under our
 * SuperNode's 60 s pull deadline and the 60 s idle-connection timeout (a held call is not idle).
 */
export const DEFAULT_FLEET_LONG_POLL_MS = 30_000;

/**
 * flwr-ts: request header (gRPC metadata or HTTP) with which a SuperNode opts in to long polling
 * of its PullTaskIns, valued with the longest wait it accepts in ms. Without it the SuperLink
 * answers at once, as Flower: a Python SuperNode's SIGINT handler raises inside a pending pull,
 * and grpc's channel cleanup then waits for that call, so holding its pulls open can hang it.
 * Not covered by the auth MAC (which is over the request body), and ignored by Flower.
 */
export const LONG_POLL_HEADER = "flwr-ts-long-poll-ms";

/** flwr-ts: grace period for in-flight RPCs on SIGINT/SIGTERM before forcing shutdown. */
export const DEFAULT_SHUTDOWN_GRACE_MS = 5_000;

/** Metadata keys of SuperNode authentication. Flower 1.10. */
export const PUBLIC_KEY_HEADER = "public-key";
export const AUTH_TOKEN_HEADER = "auth-token";

/** Message types. Flower 1.10 (`MessageType`, `MessageTypeLegacy`). */
export const MessageType = {
  TRAIN: "train",
  EVALUATE: "evaluate",
  QUERY: "query",
  GET_PARAMETERS: "get_parameters",
  GET_PROPERTIES: "get_properties",
  RECONNECT: "reconnect",
} as const;

/** Error codes carried in `Task.error.code`. Flower 1.10 (`ErrorCode`). */
export const ErrorCode = {
  UNKNOWN: 0,
  LOAD_CLIENT_APP_EXCEPTION: 1,
  CLIENT_APP_RAISED_EXCEPTION: 2,
  NODE_UNAVAILABLE: 3,
} as const;

/** Reason text of the error TaskRes synthesized for an offline node. Flower 1.10. */
export const NODE_UNAVAILABLE_REASON =
  "Error: Node Unavailable - The destination node is currently unavailable. " +
  "It exceeds the time limit specified in its last ping.";

/** Legacy status codes (`Code` enum in transport.proto) used inside RecordSets. */
export const StatusCode = {
  OK: 0,
  GET_PROPERTIES_NOT_IMPLEMENTED: 1,
  GET_PARAMETERS_NOT_IMPLEMENTED: 2,
  FIT_NOT_IMPLEMENTED: 3,
  EVALUATE_NOT_IMPLEMENTED: 4,
} as const;
