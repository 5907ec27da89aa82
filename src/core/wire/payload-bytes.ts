/**
 * Tensor bytes a task carries: the sum of its RecordSet's array data (what dominates the encoded
 * size of a large TaskIns or TaskRes). Used to decide which messages count as large.
 */
import type { RecordSet } from "../../proto/flwr/proto/recordset";
import type { Task } from "../../proto/flwr/proto/task";
import { deferredSourceOf } from "./deferred-recordset";

/** Tensor bytes of one TaskIns or TaskRes (a deferred RecordSet is not read for it). */
export function taskPayloadBytes(taskInsOrRes: { task?: Task | undefined }): number {
  const deferred = deferredSourceOf(taskInsOrRes.task?.recordset);
  if (deferred !== undefined) return deferred.payloadBytes;
  const recordset = taskInsOrRes.task?.recordset;
  return recordset === undefined ? 0 : recordSetPayloadBytes(recordset);
}

/** Tensor bytes of a RecordSet: its parameter records' array data. */
export function recordSetPayloadBytes(recordset: RecordSet): number {
  let total = 0;
  for (const record of recordset.parameters.values()) {
    for (const array of record.dataValues) total += array.data.length;
  }
  return total;
}

/** Tensor bytes of a list of TaskIns or TaskRes. */
export function tasksPayloadBytes(list: ReadonlyArray<{ task?: Task | undefined }>): number {
  let total = 0;
  for (const item of list) total += taskPayloadBytes(item);
  return total;
}
