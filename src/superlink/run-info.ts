/** GetRun, identical on the Fleet and the Driver API (docs/protocol.md, "Fleet API", "Driver API"). */
import type { GetRunRequest, GetRunResponse } from "../proto/flwr/proto/run";
import type { State } from "../state/state";
import type { LongPollHub } from "./long-poll";

/**
 * The run as stored, or an empty response (no `run` field) for an unknown id — what Flower's
 * in-memory state answers; its SQLite backend crashed with UNKNOWN instead.
 */
export function getRun(request: GetRunRequest, state: State): GetRunResponse {
  const run = state.getRun(request.runId);
  if (run === undefined) return { run: undefined };
  return {
    run: {
      runId: run.runId,
      fabId: run.fabId,
      fabVersion: run.fabVersion,
      overrideConfig: new Map(run.overrideConfig),
    },
  };
}

/** How a pull may wait for work (see long-poll.ts). `maxWaitMs <= 0` = answer at once. */
export interface LongPollOptions {
  hub: LongPollHub;
  maxWaitMs: number;
  /** Fires when the client cancels the call: the pull then stops without taking any task. */
  signal?: AbortSignal;
}

/** Current Unix time in seconds, as Flower's `time.time()`. */
export function unixNow(): number {
  return Date.now() / 1000;
}
