/**
 * The default SuperLink state (`--database :flwr-in-memory-state:`): plain Maps in this process,
 * gone when it exits. Reference semantics for the State contract (docs/protocol.md, "State"), with Flower 1.10's
 * in-memory bugs fixed: DeleteNode drops the public-key mapping, pulling results never throws
 * on a malformed ancestry or a deleted consumer, and id collisions are redrawn.
 */
import { NODE_UNAVAILABLE_REASON } from "../core/constants";
import { NotFoundError } from "../core/errors";
import type { TaskIns, TaskRes } from "../proto/flwr/proto/task";
import type { Scalar } from "../proto/flwr/proto/transport";
import { type ContentMemory, type ContentSpillOptions, SharedContentStore } from "./content-spill";
import { randomId, uuid4 } from "./ids";
import type {
  PurgeOptions,
  PurgeResult,
  RunRecord,
  SharedContent,
  StateEvents,
  StateLogger,
  StateOptions,
  SyncState,
} from "./state";
import {
  StateEventHub,
  StorageUsage,
  TASK_EXPIRED_REASON,
  expiresAt,
  taskBytes,
  checkLease,
  checkLimit,
  checkPingInterval,
  copyConfig,
  copyTaskMessage,
  isoTimestamp,
  leaseSeconds,
  makeNodeUnavailableTaskRes,
  RESULT_LEASE_SECONDS,
  normalizeTaskId,
  refuseTaskRes,
  systemNow,
  arrivedExpired,
  isValidTask,
  sharedTaskBytes,
} from "./state-support";

/** Attempts at drawing an unused random id before giving up (a collision is ~2^-64 likely). */
const MAX_ID_ATTEMPTS = 16;

interface StoredNode {
  onlineUntil: number;
  pingInterval: number;
  publicKey?: Uint8Array;
}

interface StoredTaskIns {
  seq: number;
  message: TaskIns;
  /** Charged against the storage limits. */
  bytes: number;
  /** Key into `undeliveredByConsumer` and `leasedByConsumer`. */
  consumerKey: string;
  /** State-clock time of the last delivery. */
  deliveredAtSeconds?: number;
  /**
   * Key into `sharedContents` when the RecordSet is shared content; `message` then has no
   * recordset (a delivery takes the content's, which may have been spilled to disk).
   */
  contentKey?: string;
}

interface StoredTaskRes {
  seq: number;
  message: TaskRes;
  bytes: number;
  /** State-clock time of the last delivery. */
  deliveredAtSeconds?: number;
  /** Normalized `ancestry[0]`: the TaskIns this answers. */
  replyTo: string;
}

const ANONYMOUS_CONSUMER = "anonymous";

/** Adds `id` to the set under `key`, creating it. */
function setAdd(map: Map<string, Set<string>>, key: string, id: string): void {
  let set = map.get(key);
  if (set === undefined) map.set(key, (set = new Set()));
  set.add(id);
}

/** Removes `id` from the set under `key`, dropping the set when it empties. */
function setRemove(map: Map<string, Set<string>>, key: string, id: string): void {
  const set = map.get(key);
  if (set === undefined) return;
  set.delete(id);
  if (set.size === 0) map.delete(key);
}
const consumerKeyOf = (nodeId: bigint): string => `node:${nodeId}`;
const contentKeyOf = (runId: bigint, digest: string): string => `${runId}:${digest}`;
const publicKeyIndex = (key: Uint8Array): string => Buffer.from(key).toString("hex");

/** Options of the in-memory backend. */
export interface InMemoryStateOptions extends StateOptions {
  /** How delivered shared contents leave memory (src/state/content-spill.ts). */
  contentSpill?: ContentSpillOptions;
}

/**
 * Map-based State. Every method is synchronous, so each one is atomic under Node's single
 * thread. Stored and returned TaskIns/TaskRes are envelope copies: callers may mutate what they
 * pass in or get back without touching the store (RecordSets are shared, never mutated here).
 */
export class InMemoryState implements SyncState {
  readonly kind = "memory";
  private readonly now: () => number;
  private readonly logger: StateLogger | undefined;
  private readonly events: StateEventHub;

  private readonly runs = new Map<bigint, RunRecord>();
  /** Run id -> when a task was last stored for it (or it was created). */
  private readonly runActivity = new Map<bigint, number>();
  private readonly usage: StorageUsage;
  private readonly nodes = new Map<bigint, StoredNode>();
  private readonly nodeIdByPublicKey = new Map<string, bigint>();
  /** Insertion order is FIFO order. */
  private readonly taskIns = new Map<string, StoredTaskIns>();
  /** Consumer key -> ids of its undelivered TaskIns, in FIFO order. */
  private readonly undeliveredByConsumer = new Map<string, Set<string>>();
  /** Consumer key -> ids of its delivered TaskIns that have no TaskRes yet (may be re-offered). */
  private readonly leasedByConsumer = new Map<string, Set<string>>();
  private readonly taskLeaseSeconds: number | undefined;
  private readonly taskRes = new Map<string, StoredTaskRes>();
  /** TaskIns id -> ids of every stored TaskRes answering it. */
  private readonly repliesByTaskIns = new Map<string, Set<string>>();
  /** Run and digest (contentKeyOf) -> shared content referenced by stored TaskIns. */
  private readonly sharedContents: SharedContentStore;
  private nextSeq = 0;

  constructor(options: InMemoryStateOptions = {}) {
    this.now = options.now ?? systemNow;
    this.logger = options.logger;
    this.sharedContents = new SharedContentStore(options.contentSpill ?? {}, this.logger);
    this.events = new StateEventHub(this.logger);
    this.usage = new StorageUsage(options.limits ?? {});
    checkLease(options.taskLeaseSeconds);
    this.taskLeaseSeconds = options.taskLeaseSeconds;
  }

  storeTaskIns(taskIns: TaskIns, shared?: SharedContent): string | undefined {
    if (!isValidTask(taskIns, "ins", this.logger)) return undefined;
    if (!this.runs.has(taskIns.runId)) {
      this.logger?.warn({ runId: String(taskIns.runId) }, "TaskIns rejected: unknown run_id");
      return undefined;
    }
    const now = this.now();
    if (arrivedExpired(taskIns, now, this.logger)) return undefined;
    const contentKey = shared === undefined ? undefined : contentKeyOf(taskIns.runId, shared.digest);
    const bytes = shared === undefined ? taskBytes(taskIns) : sharedTaskBytes();
    const contentBytes =
      shared !== undefined && contentKey !== undefined && !this.sharedContents.has(contentKey)
        ? shared.encoded.length
        : 0;
    this.usage.check(new Map([[taskIns.runId, bytes + contentBytes]]));
    const message = copyTaskMessage(taskIns);
    message.taskId = this.freshTaskId();
    const consumer = message.task!.consumer!;
    const consumerKey = consumer.anonymous ? ANONYMOUS_CONSUMER : consumerKeyOf(consumer.nodeId);
    const stored: StoredTaskIns = { seq: this.nextSeq++, message, bytes, consumerKey };
    if (shared !== undefined && contentKey !== undefined) {
      stored.contentKey = contentKey;
      if (this.sharedContents.addRef(contentKey, shared)) this.usage.add(message.runId, contentBytes, 0);
      // Deliveries take the one stored content's RecordSet (getTaskIns).
      message.task!.recordset = undefined;
    }
    this.taskIns.set(message.taskId, stored);
    this.usage.add(message.runId, bytes);
    this.runActivity.set(message.runId, now);
    let queue = this.undeliveredByConsumer.get(consumerKey);
    if (queue === undefined) this.undeliveredByConsumer.set(consumerKey, (queue = new Set()));
    queue.add(message.taskId);
    this.events.taskInsStored(consumer.nodeId, consumer.anonymous);
    return message.taskId;
  }

  getTaskIns(nodeId: bigint | undefined, limit: number): TaskIns[] {
    checkLimit(limit);
    const consumerKey = nodeId === undefined ? ANONYMOUS_CONSUMER : consumerKeyOf(nodeId);
    const now = this.now();
    const candidates: StoredTaskIns[] = [];
    for (const taskId of this.undeliveredByConsumer.get(consumerKey) ?? []) {
      if (candidates.length >= limit) break;
      const stored = this.taskIns.get(taskId)!;
      // Expired: never delivered (purge removes it later).
      if (expiresAt(stored.message.task) <= now) continue;
      candidates.push(stored);
    }
    // Delivered, unanswered, unexpired TaskIns whose lease ran out: their delivery may be lost.
    for (const taskId of this.leasedByConsumer.get(consumerKey) ?? []) {
      const stored = this.taskIns.get(taskId)!;
      const task = stored.message.task!;
      if (now - (stored.deliveredAtSeconds ?? now) < leaseSeconds(task.ttl, this.taskLeaseSeconds)) continue;
      if (task.createdAt + task.ttl <= now) continue;
      candidates.push(stored);
    }
    candidates.sort((a, b) => a.seq - b.seq);
    const deliveredAt = isoTimestamp(now);
    const result: TaskIns[] = [];
    const firstDeliveries: string[] = [];
    for (const stored of candidates.slice(0, limit)) {
      const taskId = stored.message.taskId;
      const copy = copyTaskMessage(stored.message);
      if (stored.contentKey !== undefined) {
        const recordset = this.sharedContents.deliveryRecordSet(stored.contentKey);
        // Unreadable spill file (logged): not delivered now, still leased (content-spill.ts).
        if (recordset === undefined) continue;
        copy.task!.recordset = recordset;
        if (stored.deliveredAtSeconds === undefined) firstDeliveries.push(stored.contentKey);
      }
      setRemove(this.undeliveredByConsumer, consumerKey, taskId);
      setAdd(this.leasedByConsumer, consumerKey, taskId);
      stored.message.task!.deliveredAt = deliveredAt;
      copy.task!.deliveredAt = deliveredAt;
      stored.deliveredAtSeconds = now;
      result.push(copy);
    }
    // After the answer holds its RecordSets: a content whose TaskIns are all delivered is spilled.
    for (const contentKey of firstDeliveries) this.sharedContents.delivered(contentKey);
    return result;
  }

  storeTaskRes(taskRes: TaskRes): string | undefined {
    if (!isValidTask(taskRes, "res", this.logger)) return undefined;
    if (!this.runs.has(taskRes.runId)) {
      this.logger?.warn({ runId: String(taskRes.runId) }, "TaskRes rejected: unknown run_id");
      return undefined;
    }
    const replyTo = normalizeTaskId(taskRes.task!.ancestry[0]!);
    const ins = this.taskIns.get(replyTo);
    const refusal = refuseTaskRes(taskRes, ins?.message, this.now());
    if (refusal !== undefined) {
      this.logger?.warn({ runId: String(taskRes.runId), taskInsId: replyTo }, `TaskRes rejected: ${refusal}`);
      return undefined;
    }
    const existing = this.repliesByTaskIns.get(replyTo);
    if (existing !== undefined && existing.size > 0) {
      const [firstId] = existing;
      this.logger?.warn(
        { event: "state.task-res-duplicate", taskInsId: replyTo },
        `TaskRes ignored: TaskIns ${replyTo} already has a result (a re-push or a replay); nothing stored`,
      );
      return firstId;
    }
    const bytes = taskBytes(taskRes);
    this.usage.check(new Map([[taskRes.runId, bytes]]));
    const message = copyTaskMessage(taskRes);
    message.taskId = this.freshTaskId();
    this.addTaskRes(message, bytes);
    this.runActivity.set(message.runId, this.now());
    this.events.taskResStored(replyTo);
    return message.taskId;
  }

  getTaskRes(taskIds: Set<string>, limit?: number): TaskRes[] {
    if (limit !== undefined) checkLimit(limit);
    const max = limit ?? Infinity;
    const requested = new Set([...taskIds].map(normalizeTaskId));

    // 1. Undelivered replies to the requested TaskIns (and delivered ones whose lease ran out:
    // the answer carrying them may be lost), oldest first.
    const now = this.now();
    const replies: StoredTaskRes[] = [];
    for (const taskInsId of requested) {
      for (const resId of this.repliesByTaskIns.get(taskInsId) ?? []) {
        const stored = this.taskRes.get(resId)!;
        const task = stored.message.task!;
        if (task.deliveredAt === "" || now - (stored.deliveredAtSeconds ?? now) >= RESULT_LEASE_SECONDS) {
          replies.push(stored);
        }
      }
    }
    replies.sort((a, b) => a.seq - b.seq);
    const picked = replies.slice(0, max);
    for (const stored of picked) stored.deliveredAtSeconds = now;
    const result = picked.map((r) => r.message);

    // 2. Requested TaskIns without any reply whose consumer node is offline or gone.
    const orphans: Array<[StoredTaskIns, string]> = [];
    for (const taskInsId of requested) {
      if ((this.repliesByTaskIns.get(taskInsId)?.size ?? 0) > 0) continue;
      const stored = this.taskIns.get(taskInsId);
      if (stored === undefined) continue;
      const reason = this.orphanReason(stored.message, now);
      if (reason !== undefined) orphans.push([stored, reason]);
    }
    orphans.sort((a, b) => a[0].seq - b[0].seq);
    const synthesizedFor: string[] = [];
    for (const [stored, reason] of orphans) {
      if (result.length >= max) break;
      const errorRes = makeNodeUnavailableTaskRes(stored.message, now, reason);
      this.addTaskRes(errorRes, taskBytes(errorRes)).deliveredAtSeconds = now;
      result.push(errorRes);
      synthesizedFor.push(stored.message.taskId);
    }

    // 3. Mark everything returned as delivered.
    const deliveredAt = isoTimestamp(now);
    for (const message of result) message.task!.deliveredAt = deliveredAt;
    for (const taskInsId of synthesizedFor) this.events.taskResStored(taskInsId);
    return result.map((m) => copyTaskMessage(m));
  }

  deleteTasks(taskIds: Set<string>): void {
    for (const taskInsId of new Set([...taskIds].map(normalizeTaskId))) {
      const replyIds = this.repliesByTaskIns.get(taskInsId);
      if (replyIds === undefined) continue;
      const delivered = [...replyIds].filter((id) => this.taskRes.get(id)!.message.task!.deliveredAt !== "");
      if (delivered.length === 0) continue;
      for (const resId of delivered) this.removeTaskRes(resId);
      this.removeTaskIns(taskInsId);
    }
  }

  sharedContent(runId: bigint, digest: string): SharedContent | undefined {
    return this.sharedContents.content(contentKeyOf(runId, digest));
  }

  numSharedContents(): number {
    return this.sharedContents.size;
  }

  checkStorage(bytesByRun: Map<bigint, number>): void {
    this.usage.check(bytesByRun);
  }

  storedBytes(runId?: bigint): number {
    return this.usage.bytes(runId);
  }

  purge(options: PurgeOptions): PurgeResult {
    const now = this.now();
    const removed = { taskIns: 0, taskRes: 0, runs: 0 };
    for (const [taskInsId, stored] of [...this.taskIns]) {
      if (expiresAt(stored.message.task) + options.expiredGraceSeconds > now) continue;
      for (const resId of [...(this.repliesByTaskIns.get(taskInsId) ?? [])]) {
        this.removeTaskRes(resId);
        removed.taskRes++;
      }
      this.removeTaskIns(taskInsId);
      removed.taskIns++;
    }
    for (const [resId, stored] of [...this.taskRes]) {
      if (this.taskIns.has(stored.replyTo)) continue;
      if (expiresAt(stored.message.task) + options.expiredGraceSeconds > now) continue;
      this.removeTaskRes(resId);
      removed.taskRes++;
    }
    for (const runId of [...this.runs.keys()]) {
      if (this.usage.tasks(runId) > 0) continue;
      if ((this.runActivity.get(runId) ?? 0) + options.runIdleSeconds > now) continue;
      this.runs.delete(runId);
      this.runActivity.delete(runId);
      removed.runs++;
    }
    return removed;
  }

  numTaskIns(): number {
    return this.taskIns.size;
  }

  numTaskRes(): number {
    return this.taskRes.size;
  }

  createNode(pingInterval: number, publicKey?: Uint8Array): bigint {
    checkPingInterval(pingInterval);
    if (publicKey !== undefined && this.nodeIdByPublicKey.has(publicKeyIndex(publicKey))) {
      this.logger?.error("node registration failed: public key already mapped to a node");
      return 0n;
    }
    const nodeId = this.drawUnusedId((id) => this.nodes.has(id));
    if (nodeId === 0n) {
      this.logger?.error("node registration failed: no unused node id drawn");
      return 0n;
    }
    const node: StoredNode = { onlineUntil: this.now() + pingInterval, pingInterval };
    if (publicKey !== undefined) {
      node.publicKey = Uint8Array.from(publicKey);
      this.nodeIdByPublicKey.set(publicKeyIndex(publicKey), nodeId);
    }
    this.nodes.set(nodeId, node);
    return nodeId;
  }

  deleteNode(nodeId: bigint): void {
    const node = this.nodes.get(nodeId);
    if (node === undefined) throw new NotFoundError(`Node ${nodeId} not found`);
    if (node.publicKey !== undefined) this.nodeIdByPublicKey.delete(publicKeyIndex(node.publicKey));
    this.nodes.delete(nodeId);
  }

  getNodes(runId: bigint): Set<bigint> {
    if (!this.runs.has(runId)) return new Set();
    const now = this.now();
    const online = new Set<bigint>();
    for (const [nodeId, node] of this.nodes) if (node.onlineUntil > now) online.add(nodeId);
    return online;
  }

  getNodeId(publicKey: Uint8Array): bigint | undefined {
    return this.nodeIdByPublicKey.get(publicKeyIndex(publicKey));
  }

  acknowledgePing(nodeId: bigint, pingInterval: number): boolean {
    checkPingInterval(pingInterval);
    const node = this.nodes.get(nodeId);
    if (node === undefined) return false;
    node.onlineUntil = this.now() + pingInterval;
    node.pingInterval = pingInterval;
    return true;
  }

  createRun(fabId: string, fabVersion: string, overrideConfig: Map<string, Scalar>): bigint {
    this.usage.checkRuns(this.runs.size);
    const runId = this.drawUnusedId((id) => this.runs.has(id));
    if (runId === 0n) {
      this.logger?.error("run creation failed: no unused run id drawn");
      return 0n;
    }
    this.runs.set(runId, { runId, fabId, fabVersion, overrideConfig: copyConfig(overrideConfig) });
    this.runActivity.set(runId, this.now());
    return runId;
  }

  getRun(runId: bigint): RunRecord | undefined {
    const run = this.runs.get(runId);
    return run === undefined ? undefined : { ...run, overrideConfig: copyConfig(run.overrideConfig) };
  }

  subscribe(events: StateEvents): () => void {
    return this.events.subscribe(events);
  }

  close(): void {
    // The data lives as long as this object; only spill files are released.
    this.sharedContents.close();
  }

  /** What the shared contents hold in memory and on disk (tests, diagnostics). */
  contentMemory(): ContentMemory {
    return this.sharedContents.memory();
  }

  /** Resolves once no shared content is being written to its spill file (tests). */
  contentSpillsSettled(): Promise<void> {
    return this.sharedContents.settled();
  }

  /**
   * Stores a TaskRes (already carrying its id) and indexes it; the TaskIns it answers is no
   * longer leased out (it will not be offered again).
   */
  private addTaskRes(message: TaskRes, bytes: number): StoredTaskRes {
    const replyTo = normalizeTaskId(message.task!.ancestry[0]!);
    const stored: StoredTaskRes = { seq: this.nextSeq++, message, bytes, replyTo };
    this.taskRes.set(message.taskId, stored);
    this.usage.add(message.runId, bytes);
    let replies = this.repliesByTaskIns.get(replyTo);
    if (replies === undefined) this.repliesByTaskIns.set(replyTo, (replies = new Set()));
    replies.add(message.taskId);
    const ins = this.taskIns.get(replyTo);
    if (ins !== undefined) setRemove(this.leasedByConsumer, ins.consumerKey, replyTo);
    return stored;
  }

  private removeTaskRes(resId: string): void {
    const stored = this.taskRes.get(resId);
    if (stored === undefined) return;
    this.taskRes.delete(resId);
    this.usage.remove(stored.message.runId, stored.bytes);
    const replies = this.repliesByTaskIns.get(stored.replyTo);
    replies?.delete(resId);
    if (replies?.size === 0) this.repliesByTaskIns.delete(stored.replyTo);
  }

  private removeTaskIns(taskInsId: string): void {
    const ins = this.taskIns.get(taskInsId);
    if (ins === undefined) return;
    this.taskIns.delete(taskInsId);
    this.usage.remove(ins.message.runId, ins.bytes);
    if (ins.contentKey !== undefined) {
      const freed = this.sharedContents.removeRef(ins.contentKey, ins.deliveredAtSeconds === undefined);
      if (freed > 0) this.usage.remove(ins.message.runId, freed, 0);
    }
    setRemove(this.undeliveredByConsumer, ins.consumerKey, taskInsId);
    setRemove(this.leasedByConsumer, ins.consumerKey, taskInsId);
  }

  /** Why an unanswered TaskIns gets a synthesized error reply now, or undefined. */
  private orphanReason(taskIns: TaskIns, now: number): string | undefined {
    const consumer = taskIns.task!.consumer!;
    // Anonymous TaskIns are for whichever node pulls them; there is no one node to be offline.
    if (!consumer.anonymous) {
      const node = this.nodes.get(consumer.nodeId);
      if (node === undefined || !(node.onlineUntil > now)) return NODE_UNAVAILABLE_REASON;
    }
    return expiresAt(taskIns.task) <= now ? TASK_EXPIRED_REASON : undefined;
  }

  private freshTaskId(): string {
    let id = uuid4();
    while (this.taskIns.has(id) || this.taskRes.has(id)) id = uuid4();
    return id;
  }

  /** A random non-zero id for which `taken` is false, or 0n after too many collisions. */
  private drawUnusedId(taken: (id: bigint) => boolean): bigint {
    for (let attempt = 0; attempt < MAX_ID_ATTEMPTS; attempt++) {
      const id = randomId();
      if (!taken(id)) return id;
    }
    return 0n;
  }
}
