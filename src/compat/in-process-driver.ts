/**
 * A Driver that talks to the SuperLink's State directly, for `startServer`, where the strategy
 * loop runs in the same process as the SuperLink. It applies the Driver API's rules through the
 * same handler functions the gRPC servicer uses (pushed_at, validation, NODE_UNAVAILABLE
 * replies for offline nodes, deleting delivered pairs), so behaviour matches a ServerApp
 * connected over gRPC, without a loopback channel or a TLS hostname check against ourselves.
 */
import { NotFoundError } from "../core/errors";
import { type Logger, silentLogger } from "../core/logger";
import { scalarMapToRecord } from "../core/records/serde";
import type { Message, RecordSet } from "../core/records/types";
import {
  type Driver,
  type RunInfo,
  type SendAndReceiveOptions,
  buildDriverMessage,
  replyFromTaskRes,
  taskInsForPush,
} from "../server/driver";
import type { State } from "../state/state";
import * as driverApi from "../superlink/driver/driver-handler";

/**
 * While waiting for replies, results are re-checked this often even without a notification:
 * State synthesizes NODE_UNAVAILABLE replies for nodes that went offline only when asked.
 */
const REPLY_RECHECK_MS = 250;

export interface InProcessDriverOptions {
  logger?: Logger;
  /** See REPLY_RECHECK_MS. */
  recheckMs?: number;
}

/** Driver over a State in this process, for one existing run. Close it before the State. */
export class InProcessDriver implements Driver {
  private readonly logger: Logger;
  private readonly recheckMs: number;
  private readonly wakers = new Set<() => void>();
  private readonly unsubscribe: () => void;
  private closed = false;

  /** Rejects with NotFoundError when the State does not know `runId`. */
  static async open(state: State, runId: bigint, options: InProcessDriverOptions = {}): Promise<InProcessDriver> {
    if ((await state.getRun(runId)) === undefined) throw new NotFoundError(`Cannot find the run with ID: ${runId}`);
    return new InProcessDriver(state, runId, options);
  }

  private constructor(
    private readonly state: State,
    readonly runId: bigint,
    options: InProcessDriverOptions,
  ) {
    this.logger = options.logger ?? silentLogger();
    this.recheckMs = options.recheckMs ?? REPLY_RECHECK_MS;
    // Any stored result wakes every waiter; each re-checks its own ids (cheap at this scale).
    this.unsubscribe = state.subscribe({ onTaskResStored: () => this.wakeAll() });
  }

  async run(): Promise<RunInfo> {
    const run = await this.state.getRun(this.runId);
    if (run === undefined) throw new NotFoundError(`Cannot find the run with ID: ${this.runId}`);
    return {
      runId: run.runId,
      fabId: run.fabId,
      fabVersion: run.fabVersion,
      overrideConfig: scalarMapToRecord(run.overrideConfig),
    };
  }

  async getNodeIds(): Promise<bigint[]> {
    return (await driverApi.getNodes({ runId: this.runId }, this.state)).nodes.map((n) => n.nodeId);
  }

  createMessage(content: RecordSet, messageType: string, dstNodeId: bigint, groupId: string, ttl?: number): Message {
    return buildDriverMessage(this.runId, content, messageType, dstNodeId, groupId, ttl);
  }

  async pushMessages(msgs: Message[]): Promise<string[]> {
    if (msgs.length === 0) return [];
    const taskInsList = taskInsForPush(this.runId, msgs);
    return (await driverApi.pushTaskIns({ taskInsList }, this.state, { logger: this.logger })).taskIds;
  }

  async pullMessages(ids: string[]): Promise<Message[]> {
    return await this.take(ids);
  }

  async sendAndReceive(msgs: Message[], opts: SendAndReceiveOptions = {}): Promise<Message[]> {
    const { signal } = opts;
    signal?.throwIfAborted();
    const pending = new Set((await this.pushMessages(msgs)).filter((id) => id !== ""));
    const deadline = opts.timeoutMs === undefined ? undefined : Date.now() + opts.timeoutMs;
    const replies: Message[] = [];
    while (pending.size > 0 && !this.closed) {
      for (const m of await this.take([...pending])) {
        pending.delete(m.metadata.replyToMessage);
        replies.push(m);
      }
      if (pending.size === 0) break;
      const remaining = deadline === undefined ? this.recheckMs : deadline - Date.now();
      if (remaining <= 0) break;
      await this.waitForResult(Math.min(remaining, this.recheckMs), signal);
    }
    return replies;
  }

  close(): void {
    if (this.closed) return;
    this.closed = true;
    this.unsubscribe();
    this.wakeAll();
  }

  /** One PullTaskRes: the available replies, whose delivered pairs are then deleted. */
  private async take(ids: string[]): Promise<Message[]> {
    if (ids.length === 0) return [];
    const { response, taskIds } = await driverApi.pullTaskRes({ node: undefined, taskIds: ids }, this.state);
    await this.state.deleteTasks(taskIds);
    const messages: Message[] = [];
    for (const taskRes of response.taskResList) {
      const message = replyFromTaskRes(taskRes, this.logger, "server.malformed-reply");
      if (message !== undefined) messages.push(message);
    }
    return messages;
  }

  private wakeAll(): void {
    for (const wake of [...this.wakers]) wake();
  }

  /** Resolves when a result is stored, after `ms`, or on close; rejects if `signal` aborts. */
  private waitForResult(ms: number, signal?: AbortSignal): Promise<void> {
    if (this.closed) return Promise.resolve();
    return new Promise<void>((resolve, reject) => {
      const finish = (): void => {
        clearTimeout(timer);
        this.wakers.delete(wake);
        signal?.removeEventListener("abort", onAbort);
      };
      const wake = (): void => {
        finish();
        resolve();
      };
      const onAbort = (): void => {
        finish();
        reject(signal!.reason);
      };
      const timer = setTimeout(wake, ms);
      this.wakers.add(wake);
      if (signal?.aborted) onAbort();
      else signal?.addEventListener("abort", onAbort, { once: true });
    });
  }
}
