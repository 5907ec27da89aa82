/**
 * Long polling (a flwr-ts feature, not in Flower): an empty PullTaskIns / PullTaskRes may wait
 * briefly for the State to report new work instead of answering "nothing" at once. Python peers
 * never set deadlines on these calls and simply see a slower empty answer.
 *
 * Every wait ends exactly once — notified, timed out, aborted (client went away), closing
 * (SuperLink shutting down), or rejected (node revoked) — and removes its timer, its abort
 * listener and its registrations, so cancelled calls leak nothing.
 */
import type { State } from "../state/state";

/** Why a wait ended. "aborted": the caller's signal fired; "closing": the hub is shutting down. */
export type WaitOutcome = "notified" | "timeout" | "aborted" | "closing";

interface Waiter {
  settle(outcome: WaitOutcome): void;
  fail(err: Error): void;
}

const ANONYMOUS_KEY = "anonymous";

function nodeKey(nodeId: bigint | undefined): string {
  return nodeId === undefined ? ANONYMOUS_KEY : nodeId.toString();
}

/**
 * How long a Fleet pull may wait: the time the client asked for with LONG_POLL_HEADER, capped at
 * the SuperLink's `longPollMs`; 0 (Flower's immediate answer) without a valid header.
 */
export function optedInWaitMs(header: string | undefined, longPollMs: number): number {
  if (header === undefined || !/^\d{1,9}$/.test(header.trim())) return 0;
  return Math.min(Number(header.trim()), longPollMs);
}

/** Waiting rooms keyed by consumer node (TaskIns) and by TaskIns id (TaskRes), fed by State events. */
export class LongPollHub {
  private closing = false;
  private readonly byNode = new Map<string, Set<Waiter>>();
  private readonly byTask = new Map<string, Set<Waiter>>();
  private readonly all = new Set<Waiter>();
  private readonly unsubscribe: () => void;

  constructor(state: Pick<State, "subscribe">) {
    this.unsubscribe = state.subscribe({
      onTaskInsStored: (consumerNodeId, anonymous) =>
        this.wake(this.byNode, anonymous ? ANONYMOUS_KEY : consumerNodeId.toString()),
      onTaskResStored: (taskInsId) => this.wake(this.byTask, taskInsId),
    });
  }

  /** Number of calls currently waiting (for tests and metrics). */
  get waiting(): number {
    return this.all.size;
  }

  /** True once close() was called: waits end at once with "closing". */
  get isClosing(): boolean {
    return this.closing;
  }

  /**
   * Waits until a TaskIns for `nodeId` (undefined = anonymous consumer) is stored, `timeoutMs`
   * passes, or `signal` aborts. Rejects with `revokeNode`'s error if the node is revoked meanwhile.
   */
  waitForTaskIns(nodeId: bigint | undefined, timeoutMs: number, signal?: AbortSignal): Promise<WaitOutcome> {
    return this.wait([[this.byNode, nodeKey(nodeId)]], timeoutMs, signal);
  }

  /** Waits until a TaskRes answering any of `taskInsIds` is stored, `timeoutMs` passes, or `signal` aborts. */
  waitForTaskRes(taskInsIds: Iterable<string>, timeoutMs: number, signal?: AbortSignal): Promise<WaitOutcome> {
    const keys: Array<[Map<string, Set<Waiter>>, string]> = [];
    for (const id of taskInsIds) keys.push([this.byTask, id]);
    return this.wait(keys, timeoutMs, signal);
  }

  /** Ends every TaskIns wait of `nodeId` at once by rejecting it with `error`. Returns how many. */
  revokeNode(nodeId: bigint, error: Error): number {
    const waiters = this.byNode.get(nodeKey(nodeId));
    if (!waiters) return 0;
    const list = [...waiters];
    for (const w of list) w.fail(error);
    return list.length;
  }

  /** Ends all waits with "closing"; later waits return "closing" immediately. Idempotent. */
  close(): void {
    if (this.closing) return;
    this.closing = true;
    this.unsubscribe();
    for (const w of [...this.all]) w.settle("closing");
  }

  private wake(map: Map<string, Set<Waiter>>, key: string): void {
    const waiters = map.get(key);
    if (!waiters) return;
    for (const w of [...waiters]) w.settle("notified");
  }

  private wait(
    keys: Array<[Map<string, Set<Waiter>>, string]>,
    timeoutMs: number,
    signal: AbortSignal | undefined,
  ): Promise<WaitOutcome> {
    if (this.closing) return Promise.resolve("closing");
    if (signal?.aborted) return Promise.resolve("aborted");
    if (!(timeoutMs > 0) || keys.length === 0) return Promise.resolve("timeout");
    return new Promise<WaitOutcome>((resolve, reject) => {
      let done = false;
      const cleanup = (): void => {
        done = true;
        clearTimeout(timer);
        signal?.removeEventListener("abort", onAbort);
        this.all.delete(waiter);
        for (const [map, key] of keys) {
          const set = map.get(key);
          if (!set) continue;
          set.delete(waiter);
          if (set.size === 0) map.delete(key);
        }
      };
      const waiter: Waiter = {
        settle: (outcome) => {
          if (done) return;
          cleanup();
          resolve(outcome);
        },
        fail: (err) => {
          if (done) return;
          cleanup();
          reject(err);
        },
      };
      const onAbort = (): void => waiter.settle("aborted");
      // unref: a pending long-poll must never keep the process alive on its own.
      const timer = setTimeout(() => waiter.settle("timeout"), timeoutMs);
      timer.unref();
      signal?.addEventListener("abort", onAbort, { once: true });
      this.all.add(waiter);
      for (const [map, key] of keys) {
        let set = map.get(key);
        if (!set) map.set(key, (set = new Set()));
        set.add(waiter);
      }
    });
  }
}
