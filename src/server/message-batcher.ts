/**
 * Round trips of many concurrent one-message calls (the legacy loop's DriverClientProxy, one per
 * client) shared over one Driver: the messages asked for in the same turn of the event loop go
 * out in one pushMessages (so 1,000 clients cost a few PushTaskIns, not 1,000 sent one after
 * another), and one pull loop asks for the replies of every message still waiting, handing each
 * reply to its caller the moment it arrives. Timeouts and abort signals stay per call.
 */
import type { Message } from "../core/records/types";
import type { Driver } from "./driver";

/** Most messages in one pushMessages (the SuperLink's --max-task-ins-per-push defaults to 10,000). */
const MAX_MESSAGES_PER_PUSH = 1000;
/** An empty pull that returns faster than this was not held open (a SuperLink that does not long-poll). */
const FAST_PULL_MS = 100;
/** Sleep after such a fast empty pull. */
const POLL_INTERVAL_MS = 200;

export interface BatchedCallOptions {
  /** Stop waiting after this long: the call resolves undefined. Default: no limit. */
  timeoutMs?: number | undefined;
  /** Rejects the call with the abort reason. */
  signal?: AbortSignal | undefined;
}

interface Waiter {
  resolve(reply: Message | undefined): void;
  reject(err: unknown): void;
  /** Once pushed: the message id, so an early end (timeout, abort) stops waiting for it. */
  setId(id: string): void;
}

interface Queued {
  message: Message;
  waiter: Waiter;
}

export class MessageBatcher {
  private queue: Queued[] = [];
  private flushScheduled = false;
  /** Message id -> its caller, for every pushed message without a reply yet. */
  private readonly pending = new Map<string, Waiter>();
  private pulling = false;
  /** One abort listener per signal (a round's 1,000 calls share one), not one per call. */
  private readonly bySignal = new Map<AbortSignal, { waiters: Set<Waiter>; onAbort: () => void }>();

  constructor(private readonly driver: Driver) {}

  private watch(signal: AbortSignal, waiter: Waiter): void {
    let entry = this.bySignal.get(signal);
    if (entry === undefined) {
      const waiters = new Set<Waiter>();
      const onAbort = (): void => {
        for (const w of [...waiters]) w.reject(signal.reason);
      };
      entry = { waiters, onAbort };
      this.bySignal.set(signal, entry);
      signal.addEventListener("abort", onAbort, { once: true });
    }
    entry.waiters.add(waiter);
  }

  private unwatch(signal: AbortSignal, waiter: Waiter): void {
    const entry = this.bySignal.get(signal);
    if (entry === undefined) return;
    entry.waiters.delete(waiter);
    if (entry.waiters.size > 0) return;
    signal.removeEventListener("abort", entry.onAbort);
    this.bySignal.delete(signal);
  }

  /**
   * Sends `message` (made by the driver's createMessage) and resolves with its reply; undefined
   * if the SuperLink did not store it or `timeoutMs` passed first. Rejects when the push or a
   * pull fails, or with the signal's reason.
   */
  sendAndReceive(message: Message, opts: BatchedCallOptions = {}): Promise<Message | undefined> {
    const { signal, timeoutMs } = opts;
    if (signal?.aborted) return Promise.reject(signal.reason as Error);
    return new Promise<Message | undefined>((resolve, reject) => {
      let done = false;
      let id: string | undefined;
      const finish = (): boolean => {
        if (done) return false;
        done = true;
        clearTimeout(timer);
        if (signal !== undefined) this.unwatch(signal, waiter);
        if (id !== undefined) this.pending.delete(id);
        return true;
      };
      const waiter: Waiter = {
        resolve: (reply) => {
          if (finish()) resolve(reply);
        },
        reject: (err) => {
          if (finish()) reject(err);
        },
        setId: (messageId) => {
          id = messageId;
        },
      };
      const timer = timeoutMs === undefined ? undefined : setTimeout(() => waiter.resolve(undefined), timeoutMs);
      if (signal !== undefined) this.watch(signal, waiter);
      this.queue.push({ message, waiter });
      if (!this.flushScheduled) {
        this.flushScheduled = true;
        setImmediate(() => void this.flush());
      }
    });
  }

  /**
   * Pushes everything queued, in chunks, then starts the pull loop. Ids pushed while a pull is
   * held open join the next pull (our SuperLink holds an empty PullTaskRes up to --long-poll-ms).
   */
  private async flush(): Promise<void> {
    this.flushScheduled = false;
    const queued = this.queue;
    this.queue = [];
    try {
      for (let k = 0; k < queued.length; k += MAX_MESSAGES_PER_PUSH) {
        const chunk = queued.slice(k, k + MAX_MESSAGES_PER_PUSH);
        let ids: string[];
        try {
          ids = await this.driver.pushMessages(chunk.map((q) => q.message));
        } catch (err) {
          for (const q of queued.slice(k)) q.waiter.reject(err);
          return;
        }
        chunk.forEach((q, i) => {
          const id = (ids[i] ?? "").toLowerCase();
          if (id === "") {
            q.waiter.resolve(undefined); // not stored
          } else {
            q.waiter.setId(id);
            this.pending.set(id, q.waiter);
          }
        });
      }
    } finally {
      this.startPulling();
    }
  }

  private startPulling(): void {
    if (this.pulling || this.pending.size === 0) return;
    this.pulling = true;
    void this.pullLoop().finally(() => {
      this.pulling = false;
      // A push that finished while the loop was ending.
      this.startPulling();
    });
  }

  private async pullLoop(): Promise<void> {
    while (this.pending.size > 0) {
      const started = Date.now();
      const delivered = await this.pullAndDeliver();
      if (delivered === undefined) return;
      if (delivered === 0 && this.pending.size > 0 && Date.now() - started < FAST_PULL_MS) {
        await new Promise((r) => setTimeout(r, POLL_INTERVAL_MS));
      }
    }
  }

  /**
   * One pull, its replies handed to their callers; the number of replies, undefined when the
   * pull failed (every waiter rejected). Its own call so that no reply stays referenced from
   * the loop's suspended frame during the next pull: a suspended async function keeps its
   * registers, and with them the last reply it iterated over (a whole 100 MB result, held for
   * as long as the next result takes to arrive).
   */
  private async pullAndDeliver(): Promise<number | undefined> {
    let replies: Message[];
    try {
      replies = await this.driver.pullMessages([...this.pending.keys()]);
    } catch (err) {
      for (const waiter of [...this.pending.values()]) waiter.reject(err);
      return undefined;
    }
    for (const reply of replies) this.pending.get(reply.metadata.replyToMessage.toLowerCase())?.resolve(reply);
    return replies.length;
  }
}

const batchers = new WeakMap<Driver, MessageBatcher>();

/** The one batcher of `driver`. */
export function batcherFor(driver: Driver): MessageBatcher {
  let batcher = batchers.get(driver);
  if (batcher === undefined) {
    batcher = new MessageBatcher(driver);
    batchers.set(driver, batcher);
  }
  return batcher;
}
