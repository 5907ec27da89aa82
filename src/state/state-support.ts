/**
 * Pieces both state backends share: the clock, Flower's `delivered_at` format, the
 * NODE_UNAVAILABLE reply, envelope copies, and the change-notification hub.
 */
import { createHash } from "node:crypto";
import { ErrorCode, NODE_UNAVAILABLE_REASON } from "../core/constants";
import { MalformedMessageError, ResourceExhaustedError, errorMessage } from "../core/errors";
import { encodeMessageChunks } from "../core/wire/chunked-writer";
import { RecordSet } from "../proto/flwr/proto/recordset";
import type { Task, TaskIns, TaskRes } from "../proto/flwr/proto/task";
import type { Scalar } from "../proto/flwr/proto/transport";
import { uuid4 } from "./ids";
import { validateTaskInsOrRes } from "./validator";
import type { StateEvents, StateLimits, StateLogger } from "./state";

/**
 * Bytes a stored task is charged beyond its RecordSet: the envelope and index entries, so that
 * 200 000 empty TaskIns are not free. Roughly what one costs in memory.
 */
export const TASK_OVERHEAD_BYTES = 512;

/**
 * Reason of the error reply for a TaskIns that expired unanswered (code 3, which later Flower
 * versions call MESSAGE_UNAVAILABLE).
 */
export const TASK_EXPIRED_REASON =
  "Error: Message Unavailable - The message expired (its TTL passed) before a reply arrived.";

/** The bytes a task is charged against the storage limits: encoded RecordSet + overhead. */
export function taskBytes(message: TaskIns | TaskRes): number {
  const task = message.task;
  const recordset = task?.recordset === undefined ? 0 : encodeMessageChunks(RecordSet, task.recordset).length;
  return recordset + (task?.error?.reason.length ?? 0) + TASK_OVERHEAD_BYTES;
}

/** The bytes a TaskIns whose RecordSet is shared content is charged: its envelope only. */
export function sharedTaskBytes(): number {
  return TASK_OVERHEAD_BYTES;
}

/** Lowercase hex SHA-256 of shared content (the SuperLink's own digest of the bytes). */
export function contentDigest(encoded: Uint8Array): string {
  return createHash("sha256").update(encoded).digest("hex");
}

/** The same bytes as a Buffer, without a copy (what the database drivers bind). */
export function asBuffer(bytes: Uint8Array): Buffer {
  return Buffer.isBuffer(bytes) ? bytes : Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength);
}

/** Unix seconds at which a task expires: `created_at + ttl`. */
export function expiresAt(task: Task | undefined): number {
  return (task?.createdAt ?? 0) + (task?.ttl ?? 0);
}

/**
 * Byte and run accounting for the storage limits, kept by each backend in this process (SQLite
 * rebuilds it from the file on open). Throws ResourceExhaustedError naming the limit.
 */
export class StorageUsage {
  private readonly byRun = new Map<bigint, { bytes: number; tasks: number }>();
  private total = 0;

  constructor(private readonly limits: StateLimits) {}

  bytes(runId?: bigint): number {
    return runId === undefined ? this.total : (this.byRun.get(runId)?.bytes ?? 0);
  }

  tasks(runId: bigint): number {
    return this.byRun.get(runId)?.tasks ?? 0;
  }

  check(bytesByRun: Map<bigint, number>): void {
    let added = 0;
    for (const [runId, bytes] of bytesByRun) {
      added += bytes;
      const max = this.limits.maxRunBytes;
      if (max !== undefined && this.bytes(runId) + bytes > max) {
        throw new ResourceExhaustedError(
          `Run ${runId} would hold ${this.bytes(runId) + bytes} bytes of tasks, more than its limit of ${max} ` +
            "(--max-run-bytes); pull results to free space",
        );
      }
    }
    const maxTotal = this.limits.maxStoredBytes;
    if (maxTotal !== undefined && this.total + added > maxTotal) {
      throw new ResourceExhaustedError(
        `The SuperLink would hold ${this.total + added} bytes of tasks, more than its limit of ${maxTotal} (--max-stored-bytes)`,
      );
    }
  }

  checkRuns(stored: number): void {
    const max = this.limits.maxRuns;
    if (max !== undefined && stored >= max) {
      throw new ResourceExhaustedError(
        `${stored} runs are stored, the limit (--max-runs) is ${max}; try again once idle runs were purged`,
      );
    }
  }

  /** Counts `tasks` stored tasks (default one) of `bytes` bytes in total. */
  add(runId: bigint, bytes: number, tasks = 1): void {
    const entry = this.byRun.get(runId) ?? { bytes: 0, tasks: 0 };
    entry.bytes += bytes;
    entry.tasks += tasks;
    this.byRun.set(runId, entry);
    this.total += bytes;
  }

  /** Uncounts `tasks` stored tasks (default one; 0 for shared content) of `bytes` bytes. */
  remove(runId: bigint, bytes: number, tasks = 1): void {
    const entry = this.byRun.get(runId);
    if (entry === undefined) return;
    entry.bytes -= bytes;
    entry.tasks -= tasks;
    this.total -= bytes;
    // Shared content may be uncounted after its last TaskIns: keep the entry until both are 0.
    if (entry.tasks <= 0 && entry.bytes <= 0) this.byRun.delete(runId);
  }
}

/** The default clock: wall time in Unix seconds. */
export function systemNow(): number {
  return Date.now() / 1000;
}

/**
 * Unix seconds as Python's `datetime.now(timezone.utc).isoformat()` prints them:
 * `2024-07-08T10:11:12.123456+00:00`, with the fraction left out when it is zero.
 */
export function isoTimestamp(unixSeconds: number): string {
  const micros = Math.round(unixSeconds * 1e6);
  const seconds = Math.floor(micros / 1e6);
  const fraction = micros - seconds * 1e6;
  const base = new Date(seconds * 1000).toISOString().slice(0, 19);
  return fraction === 0 ? `${base}+00:00` : `${base}.${String(fraction).padStart(6, "0")}+00:00`;
}

/**
 * Task ids are compared in lowercase, as Python compares parsed UUIDs; ancestry written by
 * peers in uppercase still matches the lowercase id the SuperLink handed out.
 */
export function normalizeTaskId(id: string): string {
  return id.toLowerCase();
}

/** Rejects a NaN ping interval, which would make the node's liveness undefined. */
export function checkPingInterval(pingInterval: number): void {
  if (Number.isNaN(pingInterval)) throw new MalformedMessageError("ping_interval must be a number, got NaN");
}

/**
 * Why a (validated) TaskRes must not be stored as a reply to `taskIns` (undefined: it may be):
 * one result per task, from the node the task was for, while the task lives.
 */
export function refuseTaskRes(taskRes: TaskRes, taskIns: TaskIns | undefined, now: number): string | undefined {
  const replyTo = taskRes.task!.ancestry[0]!;
  if (taskIns === undefined) return `ancestry[0] ${replyTo} names no stored TaskIns (unknown, completed or purged)`;
  if (taskIns.runId !== taskRes.runId) return `run ${taskRes.runId} is not the run of TaskIns ${replyTo}`;
  const consumer = taskIns.task!.consumer!;
  const producer = taskRes.task!.producer!;
  if (!consumer.anonymous && (producer.anonymous || producer.nodeId !== consumer.nodeId)) {
    return `producer node ${producer.nodeId} is not node ${consumer.nodeId}, the consumer of TaskIns ${replyTo}`;
  }
  if (expiresAt(taskIns.task) <= now) return `TaskIns ${replyTo} has expired`;
  return undefined;
}

/** Bounds of the default delivery lease (seconds). */
export const DEFAULT_MAX_LEASE_SECONDS = 60;
export const DEFAULT_MIN_LEASE_SECONDS = 5;

/**
 * The delivery lease of a task with `ttl` seconds: the configured one, else half the TTL (so a
 * lost delivery is re-offered with half the TTL left to run it) within
 * [DEFAULT_MIN_LEASE_SECONDS, DEFAULT_MAX_LEASE_SECONDS]. The SQLite state computes the same
 * in SQL (sqlite-state.ts, LEASE_SQL).
 */
export function leaseSeconds(ttl: number, configured: number | undefined): number {
  if (configured !== undefined) return configured;
  return Math.min(DEFAULT_MAX_LEASE_SECONDS, Math.max(DEFAULT_MIN_LEASE_SECONDS, ttl / 2));
}

/**
 * A delivered TaskRes still stored this long after its delivery is offered again when its
 * TaskIns is asked for again: a Driver asks again only for results it did not get, so the answer
 * carrying it was lost. Short, because a result is re-offered only on request.
 */
export const RESULT_LEASE_SECONDS = 2;

/** Rejects a lease that is not a non-negative finite number of seconds. */
export function checkLease(lease: number | undefined): void {
  if (lease !== undefined && !(Number.isFinite(lease) && lease >= 0)) {
    throw new RangeError(`taskLeaseSeconds must be a non-negative number, got ${lease}`);
  }
}

/** Flower asserts `limit >= 1`; a smaller one is a caller bug. */
export function checkLimit(limit: number): void {
  if (!(Number.isInteger(limit) && limit >= 1)) throw new RangeError(`limit must be an integer >= 1, got ${limit}`);
}

/** A copy of a run config, so callers cannot mutate stored runs. */
export function copyConfig(config: Map<string, Scalar>): Map<string, Scalar> {
  return new Map([...config].map(([k, v]) => [k, { ...v }]));
}
/**
 * A copy of a task message's envelope (ids, Task fields, nodes, ancestry, error) sharing the
 * RecordSet: state mutates only the envelope (`task_id`, `delivered_at`), and copying model
 * weights on every store and pull would cost more than it protects.
 */
export function copyTaskMessage<T extends TaskIns | TaskRes>(message: T): T {
  return { ...message, task: message.task === undefined ? undefined : copyTask(message.task) };
}

function copyTask(task: Task): Task {
  return {
    ...task,
    producer: task.producer === undefined ? undefined : { ...task.producer },
    consumer: task.consumer === undefined ? undefined : { ...task.consumer },
    ancestry: [...task.ancestry],
    error: task.error === undefined ? undefined : { ...task.error },
  };
}

/**
 * The error reply standing in for a TaskIns whose consumer node is offline or gone
 * (Flower's `make_node_unavailable_taskres`, docs/protocol.md, "State"). Bypasses the validator on
 * purpose: its consumer is the Driver, node 0, marked non-anonymous exactly as Flower does.
 */
export function makeNodeUnavailableTaskRes(taskIns: TaskIns, now: number, reason = NODE_UNAVAILABLE_REASON): TaskRes {
  const task = taskIns.task;
  const ttlLeft = (task?.ttl ?? 0) - (now - (task?.createdAt ?? 0));
  return {
    taskId: uuid4(),
    groupId: taskIns.groupId,
    runId: taskIns.runId,
    task: {
      producer: { nodeId: task?.consumer?.nodeId ?? 0n, anonymous: false },
      consumer: { nodeId: task?.producer?.nodeId ?? 0n, anonymous: false },
      createdAt: now,
      deliveredAt: "",
      pushedAt: 0,
      ttl: ttlLeft > 0 ? ttlLeft : 0,
      ancestry: [taskIns.taskId],
      taskType: task?.taskType ?? "",
      recordset: undefined,
      error: { code: BigInt(ErrorCode.NODE_UNAVAILABLE), reason },
    },
  };
}

/**
 * Fan-out of state change notifications. Listeners run synchronously after the change is
 * complete (and committed, for SQLite); a throwing listener is logged and never undoes or
 * blocks the change, nor the other listeners.
 */
export class StateEventHub {
  private readonly listeners = new Set<{ events: StateEvents }>();

  constructor(private readonly logger: StateLogger | undefined) {}

  subscribe(events: StateEvents): () => void {
    // Wrapped, so the same object subscribed twice gets two independent subscriptions.
    const entry = { events };
    this.listeners.add(entry);
    return () => {
      this.listeners.delete(entry);
    };
  }

  taskInsStored(consumerNodeId: bigint, anonymous: boolean): void {
    for (const l of [...this.listeners]) this.call(() => l.events.onTaskInsStored?.(consumerNodeId, anonymous));
  }

  taskResStored(taskInsId: string): void {
    for (const l of [...this.listeners]) this.call(() => l.events.onTaskResStored?.(taskInsId));
  }

  private call(fn: () => void): void {
    try {
      fn();
    } catch (err) {
      this.logger?.warn({ err }, `state event listener failed: ${errorMessage(err)}`);
    }
  }
}

/**
 * The checks every backend makes before storing a TaskIns or TaskRes: false (with a warning)
 * when it fails validation (docs/protocol.md, "Validation").
 */
export function isValidTask(task: TaskIns | TaskRes, kind: "ins" | "res", logger: StateLogger | undefined): boolean {
  const errors = validateTaskInsOrRes(task, kind);
  if (errors.length === 0) return true;
  logger?.warn({ errors }, `${kind === "ins" ? "TaskIns" : "TaskRes"} rejected: invalid`);
  return false;
}

/** True (with a warning) when a TaskIns arrives already expired (`created_at + ttl <= now`). */
export function arrivedExpired(taskIns: TaskIns, now: number, logger: StateLogger | undefined): boolean {
  if (expiresAt(taskIns.task) > now) return false;
  logger?.warn({ runId: String(taskIns.runId) }, "TaskIns rejected: already expired (created_at + ttl is past)");
  return true;
}
