/**
 * RecordSets whose encoding is not in memory: the SuperLink's in-memory state hands out a
 * delivered broadcast that it spilled to disk (src/state/content-spill.ts) as one of these.
 *
 * Such a RecordSet is an ordinary RecordSet to every reader: its first property access decodes
 * the whole encoding (read back from disk) and keeps it. Two readers know better and never touch
 * its properties: the gRPC Fleet API writes a PullTaskIns answer carrying one as chunks whose
 * RecordSet bytes are read from disk one send batch at a time
 * (`encodePullTaskInsResponseChunks`, src/transport/grpc-zero-copy.ts `writeInBatches`), so an
 * answer waiting for its turn, or being written, does not hold the 100 MB; and payload sizing
 * (payload-bytes.ts) takes its tensor byte count from here. The bytes written are exactly those
 * of `PullTaskInsResponse.encode(message)`.
 */
import type { BinaryWriter } from "@bufbuild/protobuf/wire";
import { PullTaskInsResponse } from "../../proto/flwr/proto/fleet";
import type { RecordSet } from "../../proto/flwr/proto/recordset";
import { Task, TaskIns } from "../../proto/flwr/proto/task";
import { ChunkedWriter, type DeferredBytes, type EncodedChunks, encodeMessageChunks } from "./chunked-writer";

/** Where a deferred RecordSet's encoding is. */
export interface DeferredRecordSetSource extends DeferredBytes {
  /** Tensor bytes of the RecordSet (what payload-bytes.ts counts). */
  payloadBytes: number;
  /** The RecordSet, decoded (read back whole). Throws when it cannot be read. */
  load(): RecordSet;
}

const sources = new WeakMap<object, DeferredRecordSetSource>();

/** A RecordSet that reads itself from `source` on first use (see the top of this file). */
export function deferredRecordSet(source: DeferredRecordSetSource): RecordSet {
  let loaded: RecordSet | undefined;
  const get = (): RecordSet => (loaded ??= source.load());
  const recordset: RecordSet = {
    get parameters() {
      return get().parameters;
    },
    get metrics() {
      return get().metrics;
    },
    get configs() {
      return get().configs;
    },
  };
  sources.set(recordset, source);
  return recordset;
}

/** The source of a RecordSet made by `deferredRecordSet`, else undefined. */
export function deferredSourceOf(recordset: RecordSet | undefined): DeferredRecordSetSource | undefined {
  return recordset === undefined ? undefined : sources.get(recordset);
}

/** Wire tags (field number << 3 | 2) of the length-delimited fields written around a deferred RecordSet. */
const TASK_INS_LIST_TAG = (2 << 3) | 2;
const TASK_TAG = (4 << 3) | 2;
const RECORDSET_TAG = (9 << 3) | 2;

/**
 * `encodeMessageChunks(PullTaskInsResponse, message)`, with the bytes of every deferred RecordSet
 * as a deferred chunk instead of encoded from its (not loaded) properties. Field order is the
 * generated encoder's: `task` is the last field of TaskIns, and `recordset` is the last field of a
 * Task without `error` (a Task with both is encoded as usual, loading it).
 */
export function encodePullTaskInsResponseChunks(message: PullTaskInsResponse): EncodedChunks {
  if (!message.taskInsList.some((t) => deferredSourceOf(t.task?.recordset) !== undefined))
    return encodeMessageChunks(PullTaskInsResponse, message);
  const writer = new ChunkedWriter();
  const w = writer as unknown as BinaryWriter;
  PullTaskInsResponse.encode({ ...message, taskInsList: [] }, w);
  for (const taskIns of message.taskInsList) {
    const task = taskIns.task;
    const source = deferredSourceOf(task?.recordset);
    if (task === undefined || source === undefined || task.error !== undefined) {
      TaskIns.encode(taskIns, w.uint32(TASK_INS_LIST_TAG).fork()).join();
      continue;
    }
    writer.uint32(TASK_INS_LIST_TAG).fork();
    TaskIns.encode({ ...taskIns, task: undefined }, w);
    writer.uint32(TASK_TAG).fork();
    Task.encode({ ...task, recordset: undefined }, w);
    writer.uint32(RECORDSET_TAG).deferredBytes(source);
    writer.join();
    writer.join();
  }
  return writer.finishChunks();
}
