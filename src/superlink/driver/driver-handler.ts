/**
 * Driver API rules (docs/protocol.md, "Driver API") as plain functions over the State interface: no gRPC here.
 * Behaviour is Flower 1.10's, except that bad input is a typed MalformedMessageError
 * (gRPC INVALID_ARGUMENT with a message naming what is wrong) instead of an UNKNOWN crash.
 */
import { type Logger, truncateEcho } from "../../core/logger";
import { MalformedMessageError, ResourceExhaustedError } from "../../core/errors";
import type {
  CreateRunRequest,
  CreateRunResponse,
  GetNodesRequest,
  GetNodesResponse,
  PullTaskResRequest,
  PullTaskResResponse,
  PushTaskInsRequest,
  PushTaskInsResponse,
} from "../../proto/flwr/proto/driver";
import type { TaskRes } from "../../proto/flwr/proto/task";
import type { State } from "../../state/state";
import { taskBytes } from "../../state/state-support";
import { validateTaskInsOrRes } from "../../state/validator";
import { type LongPollOptions, unixNow } from "../run-info";

export { getRun } from "../run-info";

/** flwr-ts: while a PullTaskRes waits, results are re-checked this often so that an error for a
 * node that went offline (synthesized by State.getTaskRes) is delivered without delay. */
export const PULL_TASK_RES_RECHECK_MS = 250;

/**
 * flwr-ts: most TaskIns one PushTaskIns may carry (`--max-task-ins-per-push`). Storing 200 000
 * tiny TaskIns took 1.5 s of the event loop; 10 000 is well above one per node per round.
 */
export const DEFAULT_MAX_TASK_INS_PER_PUSH = 10_000;

/** Creates a run. Empty fab id/version are accepted (flower-server-app sends them). */
export async function createRun(request: CreateRunRequest, state: State): Promise<CreateRunResponse> {
  return { runId: await state.createRun(request.fabId, request.fabVersion, request.overrideConfig) };
}

/** Every online node if the run exists, else none. Nodes are not filtered by run (Flower 1.10). */
export async function getNodes(request: GetNodesRequest, state: State): Promise<GetNodesResponse> {
  const ids = await state.getNodes(request.runId);
  return { nodes: [...ids].map((nodeId) => ({ nodeId, anonymous: false })) };
}

/**
 * Stamps `pushed_at` on every TaskIns, validates them all, then stores them in order.
 * Any invalid item fails the whole request (nothing stored) with a MalformedMessageError listing
 * every problem by index. `task_ids` (field 2) is aligned with the input; an item that could
 * not be stored (unknown run) gets "" as in Flower, and a warning is logged.
 */
export async function pushTaskIns(
  request: PushTaskInsRequest,
  state: State,
  opts: { logger?: Logger; now?: () => number; maxTaskInsPerPush?: number } = {},
): Promise<PushTaskInsResponse> {
  const list = request.taskInsList;
  if (list.length === 0) {
    throw new MalformedMessageError("Malformed PushTaskInsRequest: `task_ins_list` must not be empty");
  }
  const maxPerPush = opts.maxTaskInsPerPush ?? DEFAULT_MAX_TASK_INS_PER_PUSH;
  if (list.length > maxPerPush) throw tooManyTaskIns(list.length, maxPerPush);
  const pushedAt = (opts.now ?? unixNow)();
  for (const taskIns of list) if (taskIns.task !== undefined) taskIns.task.pushedAt = pushedAt;

  const problems: string[] = [];
  list.forEach((taskIns, i) => {
    const errors = validateTaskInsOrRes(taskIns, "ins");
    if (errors.length > 0)
      problems.push(list.length === 1 ? errors.join(", ") : `task_ins_list[${i}]: ${errors.join(", ")}`);
  });
  if (problems.length > 0) {
    throw new MalformedMessageError(`Malformed PushTaskInsRequest: ${problems.join("; ")}`);
  }
  // All or nothing: a request that would break a byte limit stores none of its TaskIns.
  const bytesByRun = new Map<bigint, number>();
  for (const taskIns of list) bytesByRun.set(taskIns.runId, (bytesByRun.get(taskIns.runId) ?? 0) + taskBytes(taskIns));
  await state.checkStorage(bytesByRun);

  // In order, one at a time: TaskIns keep their FIFO order per node.
  const taskIds: string[] = [];
  for (const taskIns of list) {
    const taskId = await state.storeTaskIns(taskIns);
    if (taskId === undefined) {
      opts.logger?.warn(
        { event: "driver.push-task-ins.not-stored", runId: taskIns.runId.toString() },
        `PushTaskIns: TaskIns not stored because run ${taskIns.runId} does not exist or it has already expired (answered "" as Flower does)`,
      );
    }
    taskIds.push(taskId ?? "");
  }
  return { taskIds };
}

/** The refusal of a PushTaskIns carrying `count` > `max` TaskIns. */
export function tooManyTaskIns(count: number, max: number): ResourceExhaustedError {
  return new ResourceExhaustedError(
    `PushTaskIns carries ${count > max + 1 ? `more than ${max}` : count} TaskIns, more than the limit of ${max} per ` +
      "request (--max-task-ins-per-push); split the push",
  );
}

const HEX32 = /^[0-9a-fA-F]{32}$/;
const MAX_BAD_IDS_LISTED = 3;
const MAX_BAD_ID_CHARS = 60;

/**
 * Parses a task id the way Python's `uuid.UUID(str)` does (optional `urn:uuid:` prefix, braces,
 * hyphens anywhere, any case) and returns its canonical lowercase 8-4-4-4-12 form, or undefined.
 */
export function canonicalUuid(text: string): string | undefined {
  const hex = text
    .replaceAll("urn:", "")
    .replaceAll("uuid:", "")
    .replace(/^[{}]+|[{}]+$/g, "")
    .replace(/-/g, "");
  if (!HEX32.test(hex)) return undefined;
  const h = hex.toLowerCase();
  return `${h.slice(0, 8)}-${h.slice(8, 12)}-${h.slice(12, 16)}-${h.slice(16, 20)}-${h.slice(20)}`;
}

/** The requested TaskIns ids, canonicalized; MalformedMessageError listing every bad one. */
function parseTaskIds(taskIds: readonly string[]): Set<string> {
  const ids = new Set<string>();
  const bad: string[] = [];
  let badCount = 0;
  for (const text of taskIds) {
    const id = canonicalUuid(text);
    if (id !== undefined) ids.add(id);
    // The message echoes caller input: a few ids, each cut short (truncateEcho), not all of them.
    else if (++badCount <= MAX_BAD_IDS_LISTED) bad.push(JSON.stringify(truncateEcho(text, MAX_BAD_ID_CHARS)));
  }
  if (badCount > 0) {
    const more = badCount > bad.length ? ` and ${badCount - bad.length} more` : "";
    throw new MalformedMessageError(`Malformed PullTaskResRequest: task_ids are not UUIDs: ${bad.join(", ")}${more}`);
  }
  return ids;
}

/** A PullTaskRes answer plus the ids whose delivered pairs to delete once it reached the client. */
export interface PullTaskResResult {
  response: PullTaskResResponse;
  /** Pass to State.deleteTasks after the call completed with OK (Flower's on_rpc_done). */
  taskIds: Set<string>;
  /** True when the client cancelled while waiting; nothing was taken from State. */
  aborted: boolean;
}

/**
 * Every undelivered TaskRes answering the requested TaskIns (marking them delivered), with
 * error results synthesized for offline consumers (State.getTaskRes). The `node` field is
 * ignored, as in Flower. Does not delete anything: see PullTaskResResult.taskIds.
 */
export async function pullTaskRes(
  request: PullTaskResRequest,
  state: State,
  limit?: number,
): Promise<PullTaskResResult> {
  const taskIds = parseTaskIds(request.taskIds);
  return {
    response: { taskResList: taskIds.size > 0 ? await state.getTaskRes(taskIds, limit) : [] },
    taskIds,
    aborted: false,
  };
}

/**
 * pullTaskRes that, when no result is there yet, waits until a result for one of the requested
 * ids is stored or `maxWaitMs` passes, re-checking every PULL_TASK_RES_RECHECK_MS so results
 * synthesized for nodes that went offline are picked up. A cancelled call takes nothing.
 */
export async function pullTaskResLongPoll(
  request: PullTaskResRequest,
  state: State,
  poll: LongPollOptions,
  recheckMs: number = PULL_TASK_RES_RECHECK_MS,
  limit?: number,
): Promise<PullTaskResResult> {
  const result = await pullTaskRes(request, state, limit);
  const { taskIds } = result;
  if (result.response.taskResList.length > 0 || taskIds.size === 0 || poll.maxWaitMs <= 0) return result;
  const deadline = Date.now() + poll.maxWaitMs;
  let found: TaskRes[] = [];
  for (;;) {
    const remaining = deadline - Date.now();
    if (remaining <= 0) break;
    const outcome = await poll.hub.waitForTaskRes(taskIds, Math.min(remaining, recheckMs), poll.signal);
    if (outcome === "aborted") return { response: { taskResList: [] }, taskIds, aborted: true };
    found = await state.getTaskRes(taskIds, limit);
    if (found.length > 0 || outcome === "closing") break;
  }
  return { response: { taskResList: found }, taskIds, aborted: false };
}
