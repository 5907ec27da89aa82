/**
 * Structural validation of TaskIns/TaskRes (Flower 1.10 `flwr/server/utils/validator.py`,
 * docs/protocol.md, "Validation"). Used by the Driver servicer before PushTaskIns and by both state backends.
 */
import { MIN_TASK_TIMESTAMP } from "../core/constants";
import type { Node } from "../proto/flwr/proto/node";
import type { Task, TaskIns, TaskRes } from "../proto/flwr/proto/task";

/** What Python reads from an unset `Node` submessage. */
const UNSET_NODE: Node = { nodeId: 0n, anonymous: false };

/**
 * Returns one message per broken rule, in Flower's order and wording; empty means valid.
 * `kind` says which rule set applies (the two messages have identical shapes on the wire).
 *
 * Like Python, an absent `task` (or `producer`/`consumer`) is reported and then read as its
 * default value, so it also trips the rules about the default's fields. Unlike Python, NaN
 * timestamps and TTLs are rejected (Python's `<` comparisons let NaN through).
 */
export function validateTaskInsOrRes(t: TaskIns | TaskRes, kind: "ins" | "res"): string[] {
  const errors: string[] = [];
  if (t.taskId !== "") errors.push("non-empty `task_id`");
  if (t.task === undefined) errors.push("`task` does not set field `task`");
  const task: Partial<Task> = t.task ?? {};

  const createdAt = task.createdAt ?? 0;
  if (!(createdAt >= MIN_TASK_TIMESTAMP)) {
    errors.push(
      "`created_at` must be a float that records the unix timestamp in seconds when the message was created.",
    );
  }
  if ((task.deliveredAt ?? "") !== "") errors.push("`delivered_at` must be an empty str");
  if (!((task.ttl ?? 0) > 0)) errors.push("`ttl` must be higher than zero");
  if (!((task.pushedAt ?? 0) >= MIN_TASK_TIMESTAMP)) errors.push("`pushed_at` is not a recent timestamp");

  if (task.producer === undefined) errors.push("`producer` does not set field `producer`");
  const producer = task.producer ?? UNSET_NODE;
  if (kind === "ins") {
    if (producer.nodeId !== 0n) errors.push("`producer.node_id` is not 0");
    if (!producer.anonymous) errors.push("`producer` is not anonymous");
  } else {
    checkAnonymity(producer, "producer", "producers", errors);
  }

  if (task.consumer === undefined) errors.push("`consumer` does not set field `consumer`");
  checkAnonymity(task.consumer ?? UNSET_NODE, "consumer", "consumers", errors);

  if ((task.taskType ?? "") === "") errors.push("`task_type` MUST be set");
  if ((task.recordset !== undefined) === (task.error !== undefined)) {
    errors.push("Either `recordset` or `error` MUST be set");
  }

  const ancestryLength = task.ancestry?.length ?? 0;
  if (kind === "ins" && ancestryLength !== 0) errors.push("`ancestry` is not empty");
  if (kind === "res" && ancestryLength === 0) errors.push("`ancestry` is empty");
  return errors;
}

/** An anonymous node must have id 0; a named one must not. */
function checkAnonymity(node: Node, role: string, plural: string, errors: string[]): void {
  if (node.anonymous && node.nodeId !== 0n) errors.push(`anonymous ${plural} MUST NOT set a \`node_id\``);
  if (!node.anonymous && node.nodeId === 0n) errors.push(`non-anonymous ${role} MUST provide a \`node_id\``);
}
