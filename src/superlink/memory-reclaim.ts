/**
 * Prompt release of large messages the SuperLink is done with (flwr-ts).
 *
 * Received messages live in resizable ArrayBuffers (src/transport/grpc-zero-copy.ts, the
 * incremental decoder), whose memory V8 does not count as external memory: a 100 MB result that
 * became garbage puts no pressure on the collector, and with a JavaScript heap of a few MB a
 * major collection may not come for a whole round. The SuperLink then held every result and
 * instruction of the round in its RSS long after they were pulled and deleted. So once a
 * PullTaskRes answer carrying large results has been written (its results and their
 * instructions are then deleted from the state), a major collection is asked for when at least
 * `minBytes` were released since the last one, or at once when `collectNow()` says so (large
 * uploads wait for memory to be freed: src/transport/receive-admission.ts). A collection of the
 * SuperLink's small heap takes a few milliseconds.
 */
import * as grpc from "@grpc/grpc-js";
import { tasksPayloadBytes } from "../core/wire/payload-bytes";
import type { Task } from "../proto/flwr/proto/task";
import { collectGarbageOnce } from "../core/garbage-collection";

/** Released bytes that make a collection worth it (two 100 MB results are 200 MB). */
const DEFAULT_RECLAIM_MIN_BYTES = 64 * 1024 * 1024;

/** Tensor bytes of a task-carrying message (`taskInsList` / `taskResList`). */
export function messagePayloadBytes(message: unknown): number {
  const m = message as { taskInsList?: unknown; taskResList?: unknown } | null;
  const list = m?.taskInsList ?? m?.taskResList;
  return Array.isArray(list) ? tasksPayloadBytes(list as Array<{ task?: Task }>) : 0;
}

/**
 * A server interceptor that, after the answer of one of `paths` was written, counts its payload
 * as released and collects garbage once `minBytes` were released.
 */
export function reclaimAfterSendInterceptor(
  paths: ReadonlySet<string>,
  minBytes = DEFAULT_RECLAIM_MIN_BYTES,
  collectNow: () => boolean = () => false,
): grpc.ServerInterceptor {
  let released = 0;
  return (method, call) => {
    if (!paths.has(method.path)) return new grpc.ServerInterceptingCall(call);
    let bytes = 0;
    const responder = new grpc.ResponderBuilder()
      .withSendMessage((message, next) => {
        bytes = messagePayloadBytes(message);
        next(message);
      })
      .withSendStatus((status, next) => {
        next(status);
        released += bytes;
        if (released < minBytes && !(bytes > 0 && collectNow())) return;
        released = 0;
        // After the state deleted the pulled pairs (they go right after the answer is handed over).
        setImmediate(collectGarbageOnce);
      })
      .build();
    return new grpc.ServerInterceptingCall(call, responder);
  };
}
