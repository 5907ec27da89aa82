/**
 * The SuperLink's state: runs, nodes, task instructions (TaskIns) and results (TaskRes).
 * One interface, two backends (`in-memory-state.ts`, `sqlite-state.ts`), one conformance suite
 * (`test/state/state.conformance.ts`). Semantics follow Flower 1.10's in-memory state
 * (`../shared/flower-wire-spec.md` §2) with its bugs fixed; each method says what is promised.
 *
 * All methods are synchronous: both backends are in-process (better-sqlite3 is synchronous),
 * and a synchronous store keeps every read-modify-write atomic under Node's single thread.
 */
import type { TaskIns, TaskRes } from "../proto/flwr/proto/task";
import type { Scalar } from "../proto/flwr/proto/transport";

/** `Run` as stored. `overrideConfig` keeps the wire form so ints and floats stay distinct. */
export interface RunRecord {
  runId: bigint;
  fabId: string;
  fabVersion: string;
  overrideConfig: Map<string, Scalar>;
}

export interface NodeRecord {
  nodeId: bigint;
  /** Unix seconds; the node counts as online while `onlineUntil > now`. */
  onlineUntil: number;
  pingInterval: number;
  /** Canonical PEM bytes of the node's public key when authentication is on. */
  publicKey?: Uint8Array;
}

/** Notified after state changes, so long-polling RPCs can wake up instead of sleeping. */
export interface StateEvents {
  /** TaskIns became available for `consumerNodeId` (0n = anonymous consumer). */
  onTaskInsStored?(consumerNodeId: bigint, anonymous: boolean): void;
  /** A TaskRes answering TaskIns `taskInsId` was stored. */
  onTaskResStored?(taskInsId: string): void;
}

export interface State {
  /**
   * Validates (spec §3.3) and stores a TaskIns. Assigns and returns a fresh uuid4 task_id.
   * Returns undefined when validation fails or the run does not exist (nothing is stored).
   * Does not check that the consumer node exists. Sets no `pushed_at` (the caller does).
   */
  storeTaskIns(taskIns: TaskIns): string | undefined;

  /**
   * Returns up to `limit` (>= 1) undelivered TaskIns for `nodeId`, FIFO, and marks each one
   * delivered (`delivered_at` = ISO-8601 now) before returning it: delivery is at most once.
   * `nodeId` undefined means an anonymous caller: TaskIns whose consumer is anonymous node 0.
   */
  getTaskIns(nodeId: bigint | undefined, limit: number): TaskIns[];

  /**
   * Validates and stores a TaskRes; assigns and returns a fresh uuid4 task_id, or undefined when
   * validation fails or the run does not exist.
   */
  storeTaskRes(taskRes: TaskRes): string | undefined;

  /**
   * Returns undelivered TaskRes whose `ancestry[0]` is in `taskIds`, marking them delivered.
   * For each requested TaskIns that has no reply and whose consumer node is offline (or gone),
   * first synthesizes and stores an error TaskRes (code 3, NODE_UNAVAILABLE) as spec §2.6.
   * `limit` undefined = no limit. Malformed stored ancestry never breaks other pulls.
   */
  getTaskRes(taskIds: Set<string>, limit?: number): TaskRes[];

  /** Deletes each TaskIns in `taskIds` and its TaskRes, but only when a delivered TaskRes exists. */
  deleteTasks(taskIds: Set<string>): void;

  /** Number of stored TaskIns (delivered or not). */
  numTaskIns(): number;
  /** Number of stored TaskRes (delivered or not). */
  numTaskRes(): number;

  /**
   * Creates a node with a fresh random non-zero signed 64-bit id, online for `pingInterval`
   * seconds. With `publicKey`, records key -> node. Returns 0n on failure (key already mapped).
   */
  createNode(pingInterval: number, publicKey?: Uint8Array): bigint;

  /**
   * Deletes the node and its public-key mapping (Flower 1.10 leaked the mapping, which left a
   * reconnecting node dead; we fix that). Throws NotFoundError for an unknown node.
   */
  deleteNode(nodeId: bigint): void;

  /** All online nodes if the run exists, else the empty set. Nodes are not filtered by run. */
  getNodes(runId: bigint): Set<bigint>;

  /** The node id mapped to this canonical public key, if any. */
  getNodeId(publicKey: Uint8Array): bigint | undefined;

  /** Extends the node's liveness to now + pingInterval. False for an unknown node. */
  acknowledgePing(nodeId: bigint, pingInterval: number): boolean;

  /** Creates a run with a fresh random non-zero id and returns it (0n on failure). */
  createRun(fabId: string, fabVersion: string, overrideConfig: Map<string, Scalar>): bigint;

  /** The run, or undefined for an unknown id (never throws). */
  getRun(runId: bigint): RunRecord | undefined;

  /** Subscribes to change notifications. Returns an unsubscribe function. */
  subscribe(events: StateEvents): () => void;

  /** Releases resources (closes the database). Further calls are undefined behaviour. */
  close(): void;
}
