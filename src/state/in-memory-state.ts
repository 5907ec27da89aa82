/**
 * The default SuperLink state (`--database :flwr-in-memory-state:`): plain Maps in this process,
 * gone when it exits. Reference semantics for the State contract (spec §2), with Flower 1.10's
 * in-memory bugs fixed: DeleteNode drops the public-key mapping, pulling results never throws
 * on a malformed ancestry or a deleted consumer, and id collisions are redrawn.
 */
import { NotFoundError } from "../core/errors";
import type { TaskIns, TaskRes } from "../proto/flwr/proto/task";
import type { Scalar } from "../proto/flwr/proto/transport";
import { randomId, uuid4 } from "./ids";
import type { RunRecord, State, StateEvents, StateLogger, StateOptions } from "./state";
import {
  StateEventHub,
  checkLimit,
  checkPingInterval,
  copyConfig,
  copyTaskMessage,
  isoTimestamp,
  makeNodeUnavailableTaskRes,
  normalizeTaskId,
  systemNow,
} from "./state-support";
import { validateTaskInsOrRes } from "./validator";

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
  /** Key into `undeliveredByConsumer`. */
  consumerKey: string;
}

interface StoredTaskRes {
  seq: number;
  message: TaskRes;
  /** Normalized `ancestry[0]`: the TaskIns this answers. */
  replyTo: string;
}

const ANONYMOUS_CONSUMER = "anonymous";
const consumerKeyOf = (nodeId: bigint): string => `node:${nodeId}`;
const publicKeyIndex = (key: Uint8Array): string => Buffer.from(key).toString("hex");

/**
 * Map-based State. Every method is synchronous, so each one is atomic under Node's single
 * thread. Stored and returned TaskIns/TaskRes are envelope copies: callers may mutate what they
 * pass in or get back without touching the store (RecordSets are shared, never mutated here).
 */
export class InMemoryState implements State {
  private readonly now: () => number;
  private readonly logger: StateLogger | undefined;
  private readonly events: StateEventHub;

  private readonly runs = new Map<bigint, RunRecord>();
  private readonly nodes = new Map<bigint, StoredNode>();
  private readonly nodeIdByPublicKey = new Map<string, bigint>();
  /** Insertion order is FIFO order. */
  private readonly taskIns = new Map<string, StoredTaskIns>();
  /** Consumer key -> ids of its undelivered TaskIns, in FIFO order. */
  private readonly undeliveredByConsumer = new Map<string, Set<string>>();
  private readonly taskRes = new Map<string, StoredTaskRes>();
  /** TaskIns id -> ids of every stored TaskRes answering it. */
  private readonly repliesByTaskIns = new Map<string, Set<string>>();
  private nextSeq = 0;

  constructor(options: StateOptions = {}) {
    this.now = options.now ?? systemNow;
    this.logger = options.logger;
    this.events = new StateEventHub(this.logger);
  }

  storeTaskIns(taskIns: TaskIns): string | undefined {
    const errors = validateTaskInsOrRes(taskIns, "ins");
    if (errors.length > 0) {
      this.logger?.warn({ errors }, "TaskIns rejected: invalid");
      return undefined;
    }
    if (!this.runs.has(taskIns.runId)) {
      this.logger?.warn({ runId: String(taskIns.runId) }, "TaskIns rejected: unknown run_id");
      return undefined;
    }
    const message = copyTaskMessage(taskIns);
    message.taskId = this.freshTaskId();
    const consumer = message.task!.consumer!;
    const consumerKey = consumer.anonymous ? ANONYMOUS_CONSUMER : consumerKeyOf(consumer.nodeId);
    this.taskIns.set(message.taskId, { seq: this.nextSeq++, message, consumerKey });
    let queue = this.undeliveredByConsumer.get(consumerKey);
    if (queue === undefined) this.undeliveredByConsumer.set(consumerKey, (queue = new Set()));
    queue.add(message.taskId);
    this.events.taskInsStored(consumer.nodeId, consumer.anonymous);
    return message.taskId;
  }

  getTaskIns(nodeId: bigint | undefined, limit: number): TaskIns[] {
    checkLimit(limit);
    const consumerKey = nodeId === undefined ? ANONYMOUS_CONSUMER : consumerKeyOf(nodeId);
    const queue = this.undeliveredByConsumer.get(consumerKey);
    if (queue === undefined) return [];
    const deliveredAt = isoTimestamp(this.now());
    const result: TaskIns[] = [];
    for (const taskId of queue) {
      if (result.length >= limit) break;
      queue.delete(taskId);
      const stored = this.taskIns.get(taskId)!;
      stored.message.task!.deliveredAt = deliveredAt;
      result.push(copyTaskMessage(stored.message));
    }
    if (queue.size === 0) this.undeliveredByConsumer.delete(consumerKey);
    return result;
  }

  storeTaskRes(taskRes: TaskRes): string | undefined {
    const errors = validateTaskInsOrRes(taskRes, "res");
    if (errors.length > 0) {
      this.logger?.warn({ errors }, "TaskRes rejected: invalid");
      return undefined;
    }
    if (!this.runs.has(taskRes.runId)) {
      this.logger?.warn({ runId: String(taskRes.runId) }, "TaskRes rejected: unknown run_id");
      return undefined;
    }
    const message = copyTaskMessage(taskRes);
    message.taskId = this.freshTaskId();
    const replyTo = this.addTaskRes(message);
    this.events.taskResStored(replyTo);
    return message.taskId;
  }

  getTaskRes(taskIds: Set<string>, limit?: number): TaskRes[] {
    if (limit !== undefined) checkLimit(limit);
    const max = limit ?? Infinity;
    const requested = new Set([...taskIds].map(normalizeTaskId));

    // 1. Undelivered replies to the requested TaskIns, oldest first.
    const replies: StoredTaskRes[] = [];
    for (const taskInsId of requested) {
      for (const resId of this.repliesByTaskIns.get(taskInsId) ?? []) {
        const stored = this.taskRes.get(resId)!;
        if (stored.message.task!.deliveredAt === "") replies.push(stored);
      }
    }
    replies.sort((a, b) => a.seq - b.seq);
    const result = replies.slice(0, max).map((r) => r.message);

    // 2. Requested TaskIns without any reply whose consumer node is offline or gone.
    const now = this.now();
    const orphans: StoredTaskIns[] = [];
    for (const taskInsId of requested) {
      if ((this.repliesByTaskIns.get(taskInsId)?.size ?? 0) > 0) continue;
      const stored = this.taskIns.get(taskInsId);
      if (stored === undefined) continue;
      const consumer = stored.message.task!.consumer!;
      // Anonymous TaskIns are for whichever node pulls them; there is no one node to be offline.
      if (consumer.anonymous) continue;
      const node = this.nodes.get(consumer.nodeId);
      if (node === undefined || !(node.onlineUntil > now)) orphans.push(stored);
    }
    orphans.sort((a, b) => a.seq - b.seq);
    const synthesizedFor: string[] = [];
    for (const stored of orphans) {
      if (result.length >= max) break;
      const errorRes = makeNodeUnavailableTaskRes(stored.message, now);
      this.addTaskRes(errorRes);
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
      for (const resId of delivered) {
        this.taskRes.delete(resId);
        replyIds.delete(resId);
      }
      if (replyIds.size === 0) this.repliesByTaskIns.delete(taskInsId);
      const ins = this.taskIns.get(taskInsId);
      if (ins !== undefined) {
        this.taskIns.delete(taskInsId);
        const queue = this.undeliveredByConsumer.get(ins.consumerKey);
        queue?.delete(taskInsId);
        if (queue?.size === 0) this.undeliveredByConsumer.delete(ins.consumerKey);
      }
    }
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
    const runId = this.drawUnusedId((id) => this.runs.has(id));
    if (runId === 0n) {
      this.logger?.error("run creation failed: no unused run id drawn");
      return 0n;
    }
    this.runs.set(runId, { runId, fabId, fabVersion, overrideConfig: copyConfig(overrideConfig) });
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
    // Nothing to release; the data lives as long as this object.
  }

  /** Stores a TaskRes (already carrying its id) and indexes it; returns the TaskIns it answers. */
  private addTaskRes(message: TaskRes): string {
    const replyTo = normalizeTaskId(message.task!.ancestry[0]!);
    this.taskRes.set(message.taskId, { seq: this.nextSeq++, message, replyTo });
    let replies = this.repliesByTaskIns.get(replyTo);
    if (replies === undefined) this.repliesByTaskIns.set(replyTo, (replies = new Set()));
    replies.add(message.taskId);
    return replyTo;
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
