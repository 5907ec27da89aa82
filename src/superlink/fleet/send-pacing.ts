/**
 * Pacing of large PullTaskIns answers (flwr-ts). A broadcast stored once (docs/protocol.md,
 * "Shared content") is pulled by every node at the same moment; sent to all of them at once, the
 * nodes would all finish receiving, training and uploading at the same moment too, and the
 * SuperLink would hold every node's result together. Letting only a few large answers be on the
 * wire at a time sends the same bytes in about the same total time, staggered, so results arrive
 * (and are pulled and freed) one after another.
 *
 * A permit is taken before a large answer is written and given back when its status is sent (the
 * message has been written) or the call ends, and after `maxHoldMs` at the latest, so a node
 * that reads slowly delays others by at most that long. Nothing is refused.
 */
import * as grpc from "@grpc/grpc-js";
import { messagePayloadBytes } from "../memory-reclaim";

export interface SendPacingOptions {
  /** Methods whose answers are paced (full paths). */
  paths: ReadonlySet<string>;
  /** Answers with at least this many tensor bytes are paced. */
  minPayloadBytes: number;
  /** Large answers on the wire at once. */
  maxConcurrent: number;
  /** A permit is given back after this long even if the answer is still being written. */
  maxHoldMs: number;
}

/**
 * Defaults: one large answer at a time (a node's download then runs at the full speed of the
 * SuperLink's share of the CPU, and the nodes' uploads overlap least), answers of 8 MiB and
 * more, held 10 s at most.
 */
export const DEFAULT_SEND_PACING: Omit<SendPacingOptions, "paths"> = {
  minPayloadBytes: 8 * 1024 * 1024,
  maxConcurrent: 1,
  maxHoldMs: 10_000,
};

/** A counting semaphore whose permits give themselves back after `maxHoldMs`. */
class Permits {
  private inUse = 0;
  private readonly waiting: Array<() => void> = [];

  constructor(
    private readonly max: number,
    private readonly maxHoldMs: number,
  ) {}

  /** Resolves with the release function once a permit is free. */
  acquire(): Promise<() => void> {
    return new Promise((resolve) => {
      const grant = (): void => {
        this.inUse++;
        let released = false;
        const release = (): void => {
          if (released) return;
          released = true;
          clearTimeout(timer);
          this.inUse--;
          this.waiting.shift()?.();
        };
        const timer = setTimeout(release, this.maxHoldMs);
        timer.unref();
        resolve(release);
      };
      if (this.inUse < this.max) grant();
      else this.waiting.push(grant);
    });
  }
}

/** A server interceptor pacing the large answers of `options.paths`. */
export function sendPacingInterceptor(options: SendPacingOptions): grpc.ServerInterceptor {
  const permits = new Permits(Math.max(1, options.maxConcurrent), options.maxHoldMs);
  return (method, call) => {
    if (!options.paths.has(method.path)) return new grpc.ServerInterceptingCall(call);
    let release: (() => void) | undefined;
    let ended = false;
    const end = (): void => {
      ended = true;
      release?.();
    };
    const listener = new grpc.ServerListenerBuilder().withOnCancel(end).build();
    const responder = new grpc.ResponderBuilder()
      .withStart((next) => {
        next(listener);
      })
      .withSendMessage((message, next) => {
        if (messagePayloadBytes(message) < options.minPayloadBytes) {
          next(message);
          return;
        }
        void permits.acquire().then((r) => {
          release = r;
          if (ended) r();
          next(message);
        });
      })
      .withSendStatus((status, next) => {
        end();
        next(status);
      })
      .build();
    return new grpc.ServerInterceptingCall(call, responder);
  };
}
