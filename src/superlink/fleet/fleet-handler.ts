/**
 * Fleet API rules (docs/protocol.md, "Fleet API") as plain functions over the State interface: no gRPC here.
 * Behaviour is Flower 1.10's, with its crashes turned into typed errors:
 * - DeleteNode of an unknown node -> NotFoundError (Flower: UNKNOWN from a ValueError);
 * - PushTaskRes with an empty list -> MalformedMessageError (Flower: UNKNOWN from IndexError).
 * With authentication on, CreateNode never reaches this file (src/auth handles it).
 */
import { type Logger, truncateEcho } from "../../core/logger";
import { MalformedMessageError } from "../../core/errors";
import { PUSH_TASK_RES_RECONNECT_SECONDS } from "../../core/constants";
import { type PingIntervalBounds, boundedPingInterval } from "../../core/ping-interval";
import type {
  CreateNodeRequest,
  CreateNodeResponse,
  DeleteNodeRequest,
  DeleteNodeResponse,
  PingRequest,
  PingResponse,
  PullTaskInsRequest,
  PullTaskInsResponse,
  PushTaskResRequest,
  PushTaskResResponse,
} from "../../proto/flwr/proto/fleet";
import type { State } from "../../state/state";
import { validateTaskInsOrRes } from "../../state/validator";
import { type LongPollOptions, unixNow } from "../run-info";

export { getRun } from "../run-info";

/** Registers a node that is online for `ping_interval` (bounded) seconds. Id 0 means "could not create". */
export function createNode(request: CreateNodeRequest, state: State, bounds?: PingIntervalBounds): CreateNodeResponse {
  const nodeId = state.createNode(boundedPingInterval(request.pingInterval, bounds));
  return { node: { nodeId, anonymous: false } };
}

/**
 * Deletes the node (and its public-key mapping). Anonymous nodes and node 0 are a no-op, as in
 * Flower. Throws NotFoundError (gRPC NOT_FOUND) for an unknown node.
 */
export function deleteNode(request: DeleteNodeRequest, state: State): DeleteNodeResponse {
  const node = request.node;
  if (node === undefined || node.anonymous || node.nodeId === 0n) return {};
  state.deleteNode(node.nodeId);
  return {};
}

/** Extends the node's liveness by the bounded interval; `success` is false for an unknown node. */
export function ping(request: PingRequest, state: State, bounds?: PingIntervalBounds): PingResponse {
  const nodeId = request.node?.nodeId ?? 0n;
  return { success: state.acknowledgePing(nodeId, boundedPingInterval(request.pingInterval, bounds)) };
}

/** The id State uses for the caller: undefined for an anonymous node (docs/protocol.md, "State"). */
function consumerOf(request: PullTaskInsRequest): bigint | undefined {
  const node = request.node;
  if (node === undefined || node.anonymous) return undefined;
  return node.nodeId;
}

/**
 * At most one undelivered TaskIns for the calling node, marked delivered. `task_ids` in the
 * request is ignored, as in Flower. `reconnect` is never set.
 */
export function pullTaskIns(request: PullTaskInsRequest, state: State): PullTaskInsResponse {
  return { reconnect: undefined, taskInsList: state.getTaskIns(consumerOf(request), 1) };
}

/**
 * pullTaskIns that, when nothing is waiting, holds the call until a TaskIns for this node is
 * stored (or `maxWaitMs` passes), then looks once more. If the client cancels meanwhile, no
 * task is taken (it stays undelivered for the next pull). Rejects with the hub's error when the
 * node is revoked while waiting.
 */
export async function pullTaskInsLongPoll(
  request: PullTaskInsRequest,
  state: State,
  poll: LongPollOptions,
): Promise<PullTaskInsResponse> {
  const first = pullTaskIns(request, state);
  if (first.taskInsList.length > 0 || poll.maxWaitMs <= 0) return first;
  const outcome = await poll.hub.waitForTaskIns(consumerOf(request), poll.maxWaitMs, poll.signal);
  if (outcome === "aborted") return first;
  return pullTaskIns(request, state);
}

/**
 * Stores `task_res_list[0]` (only the first, as Flower) with `pushed_at` = now. Answers
 * `{reconnect: 5, results: {<task_id>: 0}}`. One result per task: a re-push or replay of a result
 * for a TaskIns that already has one stores nothing and is answered with the stored result's id
 * (status OK), so a SuperNode that lost the first answer carries on. A result that fails
 * validation, names an unknown run, or answers no stored TaskIns of this node (unknown,
 * completed, expired, or addressed to another node) is dropped and answered with the key "None"
 * and status OK, exactly as Flower answers dropped results (its peers retry any error status
 * forever, so refusing with an error would wedge a Python SuperNode) — with a warning that says
 * why. A storage limit is RESOURCE_EXHAUSTED (retried with backoff by SuperNodes).
 */
export function pushTaskRes(
  request: PushTaskResRequest,
  state: State,
  opts: { logger?: Logger; now?: () => number } = {},
): PushTaskResResponse {
  const taskRes = request.taskResList[0];
  if (taskRes === undefined) {
    throw new MalformedMessageError("Malformed PushTaskResRequest: `task_res_list` must not be empty");
  }
  if (taskRes.task !== undefined) taskRes.task.pushedAt = (opts.now ?? unixNow)();
  const taskId = state.storeTaskRes(taskRes);
  if (taskId === undefined) {
    const errors = validateTaskInsOrRes(taskRes, "res");
    const reason =
      errors.length > 0
        ? errors.join(", ")
        : `run ${taskRes.runId} does not exist, or the result answers no stored TaskIns for this node (see the state warning)`;
    opts.logger?.warn(
      {
        event: "fleet.push-task-res.dropped",
        runId: taskRes.runId.toString(),
        producerNodeId: (taskRes.task?.producer?.nodeId ?? 0n).toString(),
        // Caller input: a few ids, each cut short.
        ancestry: (taskRes.task?.ancestry ?? []).slice(0, 3).map((id) => truncateEcho(id, 60)),
        reason,
      },
      `PushTaskRes: result not stored (answered "None" as Flower does): ${reason}`,
    );
  }
  if (request.taskResList.length > 1) {
    opts.logger?.warn(
      { event: "fleet.push-task-res.extra-ignored", ignored: request.taskResList.length - 1 },
      "PushTaskRes: only the first TaskRes of a request is stored (Flower 1.10 behaviour); the rest were ignored",
    );
  }
  return {
    reconnect: { reconnect: PUSH_TASK_RES_RECONNECT_SECONDS },
    results: new Map([[taskId ?? "None", 0]]),
  };
}
