/**
 * The SuperNode's ping loop: announces liveness (interval 30 s announced, next ping after
 * 17.5-22.5 s, 5 s deadline, as Flower's heartbeat; the first one an interval after registering, not
 * at once as Flower's) and retries without limit. A SuperLink that
 * answers `success=false` (or, with authentication, UNAUTHENTICATED) has forgotten the node: it
 * restarted with in-memory state or deleted the node. The node then registers again instead of
 * dying as Flower 1.10 does.
 */
import { PING_BASE_MULTIPLIER, PING_CALL_TIMEOUT, PING_RANDOM_RANGE } from "../core/constants";
import type { Node } from "../proto/flwr/proto/node";
import { type RetryInvoker, abortableSleep } from "../transport/retry";
import { GrpcStatus, isCallFailure as isServiceError } from "../transport/call-errors";
import type { FleetTransport } from "./fleet-transport";
import { type Registration, Stopped, isRefusal } from "./registration";

export interface PingLoopOptions {
  connection: FleetTransport;
  registration: Registration;
  /** Retries a failing ping; no give-up limits (the task loop's limits end the node). */
  retry: RetryInvoker;
  /** Announced ping interval, in seconds. */
  intervalSeconds: number;
  /** Uniform in [0, 1), for the jitter of the next ping. */
  random: () => number;
  /** Aborted when the node stops. */
  stopSignal: AbortSignal;
}

export class PingLoop {
  private wakeUp: (() => void) | undefined;

  constructor(private readonly options: PingLoopOptions) {}

  /** A call, not a property: the signal changes across the awaits below. */
  private stopping(): boolean {
    return this.options.stopSignal.aborted;
  }

  /** Ends the current wait so the next ping goes out now (e.g. after a reconnection). */
  wake(): void {
    this.wakeUp?.();
  }

  /** Pings until the node stops; rejects only on a failure retrying cannot fix. */
  async run(): Promise<void> {
    const { connection, registration, intervalSeconds: interval, stopSignal: signal } = this.options;
    // No Ping right after CreateNode: CreateNode announced the interval and the node's first
    // MAC-checked call (the first pull) proves its key, which brings it online on our SuperLink
    // (Flower's SuperLink counts CreateNode itself). wake() still pings at once after a reconnection.
    await this.waitUntilNextPing(interval);
    while (!this.stopping()) {
      let node: Node;
      try {
        node = await registration.awaitNode();
      } catch (err) {
        if (err instanceof Stopped) return;
        throw err;
      }
      let known: boolean;
      try {
        known = await this.options.retry.invoke(
          "Ping",
          () => connection.ping(node, interval, { signal, deadlineMs: PING_CALL_TIMEOUT * 1000 }),
          {
            signal,
            // A ping that hit its deadline already waited 5 s (as Flower's heartbeat).
            adjustWaitMs: (waitMs, err) =>
              isServiceError(err) && err.code === GrpcStatus.DEADLINE_EXCEEDED
                ? Math.max(waitMs - PING_CALL_TIMEOUT * 1000, 0)
                : waitMs,
          },
        );
      } catch (err) {
        if (this.stopping()) return;
        if (!isRefusal(err)) throw err;
        known = false;
      }
      if (!known) {
        if (registration.node === node) {
          try {
            await registration.reregister(node, "Ping was answered with success=false");
          } catch (err) {
            if (err instanceof Stopped || this.stopping()) return;
            throw err;
          }
        }
        continue;
      }
      await this.waitUntilNextPing(interval);
    }
  }

  /** Sleeps (interval - 5 s) * (0.8 +- 0.1) as Flower does; wake() ends the sleep early. */
  private async waitUntilNextPing(interval: number): Promise<void> {
    const base = Math.max(interval - PING_CALL_TIMEOUT, interval / 2);
    const factor = PING_BASE_MULTIPLIER + (this.options.random() * 2 - 1) * PING_RANDOM_RANGE;
    const wake = new AbortController();
    this.wakeUp = () => {
      wake.abort();
    };
    const stopSignal = this.options.stopSignal;
    const stop = (): void => {
      wake.abort();
    };
    stopSignal.addEventListener("abort", stop, { once: true });
    try {
      await abortableSleep(base * factor * 1000, wake.signal);
    } catch {
      // woken early: ping now
    } finally {
      stopSignal.removeEventListener("abort", stop);
      this.wakeUp = undefined;
    }
  }
}
