/**
 * The SuperLink's state: runs, nodes, task instructions (TaskIns) and results (TaskRes).
 * One interface, three backends (`in-memory-state.ts`, `sqlite-state.ts`, `postgres-state.ts`),
 * one conformance suite (`test/state/state.conformance.ts`). Semantics follow Flower 1.10's
 * in-memory state (docs/protocol.md, "State") with its bugs fixed; each method says what is
 * promised.
 *
 * Methods return Promises because PostgreSQL is a network database shared by several SuperLink
 * replicas. The in-process backends stay synchronous inside (`SyncState`, wrapped by
 * `promisedState` in sync-state.ts), so their read-modify-writes stay atomic under Node's one
 * thread; PostgreSQL makes each one a transaction. Errors are rejections, never synchronous
 * throws.
 */
import type { RecordSet } from "../proto/flwr/proto/recordset";
import type { TaskIns, TaskRes } from "../proto/flwr/proto/task";
import type { Scalar } from "../proto/flwr/proto/transport";
import type { Logger } from "../core/logger";

/** `Run` as stored. `overrideConfig` keeps the wire form so ints and floats stay distinct. */
export interface RunRecord {
  runId: bigint;
  fabId: string;
  fabVersion: string;
  overrideConfig: Map<string, Scalar>;
}

/**
 * A RecordSet that several TaskIns of one run share (flwr-ts, docs/protocol.md, "Shared content"):
 * stored once per run and digest, counted once against the byte limits, and deleted with the
 * last stored TaskIns that references it.
 */
export interface SharedContent {
  /** Lowercase hex SHA-256 of `encoded`, computed by the SuperLink (never taken from a client). */
  digest: string;
  /** The encoded RecordSet, as received. */
  encoded: Uint8Array;
  /** `encoded`, decoded. */
  recordset: RecordSet;
}

/** Notified after state changes, so long-polling RPCs can wake up instead of sleeping. */
export interface StateEvents {
  /** TaskIns became available for `consumerNodeId` (0n = anonymous consumer). */
  onTaskInsStored?(consumerNodeId: bigint, anonymous: boolean): void;
  /** A TaskRes answering TaskIns `taskInsId` was stored. */
  onTaskResStored?(taskInsId: string): void;
}

/** Logging the state does on its own (rejected tasks, failing listeners); a pino logger fits. */
export type StateLogger = Pick<Logger, "warn" | "error" | "debug">;

/**
 * Storage limits (flwr-ts; Flower 1.10 has none). Bytes are counted per stored TaskIns/TaskRes
 * as its encoded RecordSet plus TASK_OVERHEAD_BYTES (state-support.ts), so many tiny tasks count
 * too. Absent = no limit.
 */
export interface StateLimits {
  /** Most bytes of stored TaskIns + TaskRes of one run. */
  maxRunBytes?: number;
  /** Most bytes of stored TaskIns + TaskRes over all runs. */
  maxStoredBytes?: number;
  /** Most runs stored at once (idle runs are removed by `purge`). */
  maxRuns?: number;
}

/** What `purge` removes. */
export interface PurgeOptions {
  /**
   * An expired TaskIns (`created_at + ttl <= now`) is kept this many seconds longer, so the
   * ServerApp's next pull still gets its expiry error reply; then it goes with its replies.
   */
  expiredGraceSeconds: number;
  /** A run with no stored tasks and no task stored for it in this many seconds is deleted. */
  runIdleSeconds: number;
}

/** How much one `purge` removed. */
export interface PurgeResult {
  taskIns: number;
  taskRes: number;
  runs: number;
}

/** Options shared by both backends. */
export interface StateOptions {
  /** Storage limits; default none. */
  limits?: StateLimits;
  /**
   * Wall clock in Unix seconds (default `Date.now() / 1000`). Drives node liveness,
   * `delivered_at` and synthesized error replies; tests inject a fake one to move time.
   */
  now?: () => number;
  /** Where rejected tasks and listener failures are reported. Default: nothing is logged. */
  logger?: StateLogger;
  /**
   * Delivery lease, in seconds: a TaskIns delivered this long ago and still unanswered (and not
   * expired) is offered again. Default: per task, half its TTL, within
   * [DEFAULT_MIN_LEASE_SECONDS, DEFAULT_MAX_LEASE_SECONDS] (see docs/delivery.md).
   */
  taskLeaseSeconds?: number;
}

/**
 * Errors ("throws" below means the Promise rejects): database failures surface as StateError; the typed errors named below are part of
 * the contract; anything else is a bug. Returned messages and records are copies that the
 * caller may mutate (RecordSets excepted: they may be shared with the store and must be treated
 * as read-only).
 */
export interface State {
  /** Which backend this is (for logs and tests). */
  readonly kind: "memory" | "sqlite" | "postgresql";

  /**
   * Validates (docs/protocol.md, "Validation") and stores a TaskIns. Assigns and returns a fresh uuid4 task_id.
   * Returns undefined when validation fails, the run does not exist, or the TaskIns has already
   * expired (`created_at + ttl <= now`); nothing is stored then. Throws ResourceExhaustedError
   * (nothing stored) when it would break a byte limit. Does not check that the consumer node
   * exists. Sets no `pushed_at` (the caller does). The argument is not modified; the state
   * keeps its own copy. Notifies `onTaskInsStored`.
   *
   * With `shared`, the TaskIns's recordset is that content (the caller sets
   * `task.recordset = shared.recordset`, so validation sees it): the content is stored once per run
   * and digest (if already stored, the stored copy is used), charged `encoded.length` bytes once,
   * and the TaskIns only its envelope (TASK_OVERHEAD_BYTES). A pull returns the same RecordSet as
   * without sharing. The content is deleted with the last stored TaskIns that references it.
   */
  storeTaskIns(taskIns: TaskIns, shared?: SharedContent): Promise<string | undefined>;

  /**
   * The shared content of run `runId` with this digest (lowercase hex) while a stored TaskIns
   * references it, else undefined.
   */
  sharedContent(runId: bigint, digest: string): Promise<SharedContent | undefined>;

  /** Number of stored shared contents (over all runs). */
  numSharedContents(): Promise<number>;

  /**
   * Returns up to `limit` (>= 1) unexpired TaskIns for `nodeId`, FIFO, and marks each one delivered
   * (`delivered_at` = ISO-8601 now) before returning it. A TaskIns is returned when it was never
   * delivered, or when its lease (`StateOptions.taskLeaseSeconds`) has passed since its last
   * delivery while it still has no TaskRes and its TTL has not run out: delivery is at least
   * once, so a TaskIns whose delivery was lost (a crash between commit and answer) is not lost.
   * `nodeId` undefined means an anonymous caller: TaskIns whose consumer is anonymous node 0.
   * `delivered_at` is Python's `isoformat()` of the state clock. A limit < 1 throws RangeError.
   */
  getTaskIns(nodeId: bigint | undefined, limit: number): Promise<TaskIns[]>;

  /**
   * Validates and stores a TaskRes; assigns and returns a fresh uuid4 task_id. One result per
   * task (unlike Flower 1.10): a TaskRes for a TaskIns that already has one (delivered or not,
   * real or synthesized) stores nothing and returns the id of the stored one, so an honest
   * re-push is answered as the first push was, and a replay changes nothing. Returns undefined
   * (nothing stored, a warning logged) when validation fails, the run does not exist, or
   * `ancestry[0]` names no stored TaskIns of that run (unknown, completed or purged), an expired
   * one, or one whose named consumer is not the producer. Throws ResourceExhaustedError when it
   * would break a byte limit. The argument is not modified. Notifies `onTaskResStored(ancestry[0])`
   * only when something was stored.
   */
  storeTaskRes(taskRes: TaskRes): Promise<string | undefined>;

  /**
   * Returns undelivered TaskRes whose `ancestry[0]` is in `taskIds` (compared in lowercase),
   * oldest first, marking them delivered; also delivered ones still stored RESULT_LEASE_SECONDS
   * after their delivery (asked for again: the answer carrying them was lost). Then, for each requested TaskIns that has no reply at
   * all (delivered or not) and whose named consumer node is offline, deleted or unknown, it
   * synthesizes, stores and returns an error TaskRes (code 3, NODE_UNAVAILABLE, fields as in docs/protocol.md, "State")
   * in TaskIns order, notifying `onTaskResStored`. A TaskIns that expired unanswered gets the
   * same reply with TASK_EXPIRED_REASON (anonymous consumers too); otherwise anonymous-consumer
   * TaskIns never get one.
   * So each TaskIns gets at most one synthesized reply and only requested ids get one.
   * `limit` (>= 1, else RangeError) caps the total; undefined = no limit. Never throws because
   * of stored data: a malformed ancestry is just a string that matches nothing requested.
   */
  getTaskRes(taskIds: Set<string>, limit?: number): Promise<TaskRes[]>;

  /**
   * For each id in `taskIds` that has a delivered TaskRes: deletes the TaskIns and its delivered
   * TaskRes. Undelivered TaskRes are kept (they can still be pulled). Unknown ids are ignored.
   */
  deleteTasks(taskIds: Set<string>): Promise<void>;

  /** Number of stored TaskIns (delivered or not). */
  numTaskIns(): Promise<number>;
  /** Number of stored TaskRes (delivered or not). */
  numTaskRes(): Promise<number>;

  /**
   * Creates a node with a fresh random non-zero signed 64-bit id, online for `pingInterval`
   * seconds. With `publicKey`, records key -> node. Returns 0n on failure (key already mapped,
   * which is the caller's cue to reuse `getNodeId(key)`). A NaN interval throws
   * MalformedMessageError. An id collision is redrawn.
   */
  createNode(pingInterval: number, publicKey?: Uint8Array): Promise<bigint>;

  /**
   * Deletes the node and its public-key mapping (Flower 1.10 leaked the mapping, which left a
   * reconnecting node dead; we fix that). Throws NotFoundError for an unknown node.
   */
  deleteNode(nodeId: bigint): Promise<void>;

  /**
   * All online nodes (`onlineUntil > now`) if the run exists, else the empty set. Nodes are not
   * filtered by run. Offline nodes are kept (a ping brings them back), just not listed.
   */
  getNodes(runId: bigint): Promise<Set<bigint>>;

  /** The node id mapped to this canonical public key (compared by bytes), if any, online or not. */
  getNodeId(publicKey: Uint8Array): Promise<bigint | undefined>;

  /**
   * Extends the node's liveness to now + pingInterval. False for an unknown node. A NaN
   * interval throws MalformedMessageError.
   */
  acknowledgePing(nodeId: bigint, pingInterval: number): Promise<boolean>;

  /**
   * Creates a run with a fresh random non-zero id and returns it (0n on failure). Throws
   * ResourceExhaustedError when `limits.maxRuns` runs are stored.
   */
  createRun(fabId: string, fabVersion: string, overrideConfig: Map<string, Scalar>): Promise<bigint>;

  /** The run, or undefined for an unknown id (never throws). */
  getRun(runId: bigint): Promise<RunRecord | undefined>;

  /**
   * Throws ResourceExhaustedError, naming the limit, if storing `bytesByRun` more (bytes as
   * counted by `taskBytes`) would break a byte limit. Lets a caller refuse a whole batch up front.
   */
  checkStorage(bytesByRun: Map<bigint, number>): Promise<void>;

  /** Bytes of stored TaskIns + TaskRes (shared content once) of one run, or of all runs when `runId` is undefined. */
  storedBytes(runId?: bigint): Promise<number>;

  /**
   * Deletes TaskIns expired more than `expiredGraceSeconds` ago with all their replies, TaskRes
   * whose own TTL passed that long ago and whose TaskIns is gone, and runs idle for
   * `runIdleSeconds` (no stored task, none stored for that long). Returns what was removed.
   */
  purge(options: PurgeOptions): Promise<PurgeResult>;

  /**
   * Subscribes to change notifications. A change made through this State object is notified
   * before its Promise resolves; PostgreSQL also notifies changes made by other replicas (LISTEN/
   * NOTIFY), a moment after they commit. A listener may call back into the state; one that
   * throws is logged and changes nothing. Returns an unsubscribe function.
   */
  subscribe(events: StateEvents): () => void;

  /**
   * Releases resources (closes the database). Idempotent. Other calls afterwards are a caller
   * bug (SQLite: StateError).
   */
  close(): Promise<void>;
}

/**
 * The synchronous form of State that the in-process backends (memory, SQLite) implement;
 * `promisedState` (sync-state.ts) turns one into a State.
 */
export type SyncState = {
  [K in keyof State]: State[K] extends (...args: infer A) => Promise<infer R> ? (...args: A) => R : State[K];
};
