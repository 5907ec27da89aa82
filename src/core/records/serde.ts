/**
 * Conversions between the domain types apps see (RecordSet, Message; `types.ts`) and the wire
 * types generated from Flower's protos (`src/proto`), following Flower 1.10's
 * `flwr/common/serde.py` field for field (docs/protocol.md, "Encoding", "Messages and replies", "Driver", "Legacy records").
 *
 * Typing rules (Flower decides by Python type; we decide by JS type):
 * - MetricsRecord: number -> double, bigint -> sint64, boolean -> sint64 (Python's bool is an
 *   int), number[] -> double_list, bigint[] / boolean[] -> sint64_list, [] -> double_list.
 * - ConfigsRecord: number -> double, bigint -> sint64, boolean -> bool, string -> string,
 *   Uint8Array -> bytes, each list to its *_list, [] -> bool_list.
 * - Mixed-type lists and other value types are refused with MalformedMessageError, as Flower
 *   raises TypeError. NaN and infinities are valid doubles and are kept.
 * - Reading: double -> number, sint64 -> bigint, bool -> boolean, bytes -> Uint8Array (a view
 *   into the decoded message, not a copy). A value with no oneof member set is refused.
 */
import { MalformedMessageError } from "../errors";
import type { Error as ProtoError } from "../../proto/flwr/proto/error";
import type { Node } from "../../proto/flwr/proto/node";
import type {
  Array as ProtoArray,
  ConfigsRecordValue,
  MetricsRecordValue,
  ParametersRecord as ProtoParametersRecord,
  RecordSet as ProtoRecordSet,
} from "../../proto/flwr/proto/recordset";
import type { Task, TaskIns, TaskRes } from "../../proto/flwr/proto/task";
import type { Scalar } from "../../proto/flwr/proto/transport";
import {
  RecordSet,
  type ArrayRecordEntry,
  type ConfigsRecord,
  type ConfigsScalar,
  type ConfigsValue,
  type Message,
  type MessageError,
  type Metadata,
  type MetricsRecord,
  type MetricsValue,
  type ParametersRecord,
} from "./types";

// ---------------------------------------------------------------------------------------------
// Small helpers

const INT32_MIN = -(2 ** 31);
const INT32_MAX = 2 ** 31 - 1;

function isInt64(value: bigint): boolean {
  return BigInt.asIntN(64, value) === value;
}

function checkInt64(value: bigint, what: string): bigint {
  if (!isInt64(value)) throw new MalformedMessageError(`${what} ${value} does not fit in a signed 64-bit integer`);
  return value;
}

/** ts-proto types bytes as Buffer; wrap without copying. */
function toBuffer(data: Uint8Array): Buffer {
  return Buffer.isBuffer(data) ? data : Buffer.from(data.buffer, data.byteOffset, data.byteLength);
}

/** A plain Uint8Array view of decoded bytes (no copy), so callers never depend on Buffer. */
function fromBuffer(data: Uint8Array): Uint8Array {
  return new Uint8Array(data.buffer, data.byteOffset, data.byteLength);
}

/** Sets an own enumerable property, even for keys such as "__proto__" that arrive from the wire. */
function setOwn<T>(target: Record<string, T>, key: string, value: T): void {
  Object.defineProperty(target, key, { value, enumerable: true, writable: true, configurable: true });
}

function describe(value: unknown): string {
  if (value === null) return "null";
  if (Array.isArray(value)) return "a list of mixed or unsupported types";
  if (typeof value === "object") return value.constructor?.name ?? "object";
  return typeof value;
}

function isBytes(value: unknown): value is Uint8Array {
  return value instanceof Uint8Array;
}

/** Which oneof members of a decoded record value are set (a well-formed value has exactly one). */
function setMembers(value: object): string[] {
  return Object.entries(value)
    .filter(([, v]) => v !== undefined)
    .map(([k]) => k);
}

// ---------------------------------------------------------------------------------------------
// Record values

function metricsValueToProto(where: string, value: unknown): MetricsRecordValue {
  if (typeof value === "number") return { double: value };
  if (typeof value === "bigint") return { sint64: checkInt64(value, where) };
  if (typeof value === "boolean") return { sint64: value ? 1n : 0n };
  if (Array.isArray(value)) {
    if (value.every((v) => typeof v === "number")) return { doubleList: { vals: [...value] } };
    if (value.every((v) => typeof v === "bigint")) {
      return { sint64List: { vals: value.map((v) => checkInt64(v, where)) } };
    }
    if (value.every((v) => typeof v === "boolean")) {
      return { sint64List: { vals: value.map((v) => (v ? 1n : 0n)) } };
    }
  }
  throw new MalformedMessageError(
    `${where}: ${describe(value)} is not allowed in a MetricsRecord (number, bigint, boolean or a list of one of them)`,
  );
}

function configsValueToProto(where: string, value: unknown): ConfigsRecordValue {
  if (typeof value === "number") return { double: value };
  if (typeof value === "bigint") return { sint64: checkInt64(value, where) };
  if (typeof value === "boolean") return { bool: value };
  if (typeof value === "string") return { string: value };
  if (isBytes(value)) return { bytes: toBuffer(value) };
  if (Array.isArray(value)) {
    // Flower tries bool first, so an empty list becomes a bool_list.
    if (value.every((v) => typeof v === "boolean")) return { boolList: { vals: [...value] } };
    if (value.every((v) => typeof v === "number")) return { doubleList: { vals: [...value] } };
    if (value.every((v) => typeof v === "bigint")) {
      return { sint64List: { vals: value.map((v) => checkInt64(v, where)) } };
    }
    if (value.every((v) => typeof v === "string")) return { stringList: { vals: [...value] } };
    if (value.every(isBytes)) return { bytesList: { vals: value.map(toBuffer) } };
  }
  throw new MalformedMessageError(
    `${where}: ${describe(value)} is not allowed in a ConfigsRecord ` +
      "(number, bigint, boolean, string, Uint8Array or a list of one of them)",
  );
}

function metricsValueFromProto(where: string, value: MetricsRecordValue | undefined): MetricsValue {
  const members = value === undefined ? [] : setMembers(value);
  if (value === undefined || members.length !== 1) {
    throw new MalformedMessageError(`${where}: expected exactly one value kind, found ${members.length}`);
  }
  if (value.double !== undefined) return value.double;
  if (value.sint64 !== undefined) return value.sint64;
  if (value.doubleList !== undefined) return [...value.doubleList.vals];
  if (value.sint64List !== undefined) return [...value.sint64List.vals];
  throw new MalformedMessageError(`${where}: unknown value kind ${members.join("")}`);
}

function configsValueFromProto(where: string, value: ConfigsRecordValue | undefined): ConfigsValue {
  const members = value === undefined ? [] : setMembers(value);
  if (value === undefined || members.length !== 1) {
    throw new MalformedMessageError(`${where}: expected exactly one value kind, found ${members.length}`);
  }
  if (value.double !== undefined) return value.double;
  if (value.sint64 !== undefined) return value.sint64;
  if (value.bool !== undefined) return value.bool;
  if (value.string !== undefined) return value.string;
  if (value.bytes !== undefined) return fromBuffer(value.bytes);
  if (value.doubleList !== undefined) return [...value.doubleList.vals];
  if (value.sint64List !== undefined) return [...value.sint64List.vals];
  if (value.boolList !== undefined) return [...value.boolList.vals];
  if (value.stringList !== undefined) return [...value.stringList.vals];
  if (value.bytesList !== undefined) return value.bytesList.vals.map(fromBuffer);
  throw new MalformedMessageError(`${where}: unknown value kind ${members.join("")}`);
}

// ---------------------------------------------------------------------------------------------
// Records

function arrayToProto(where: string, entry: ArrayRecordEntry): ProtoArray {
  if (typeof entry !== "object" || entry === null || !isBytes(entry.data)) {
    throw new MalformedMessageError(`${where}: expected {dtype, shape, stype, data: Uint8Array}`);
  }
  for (const dim of entry.shape) {
    if (!Number.isInteger(dim) || dim < INT32_MIN || dim > INT32_MAX) {
      throw new MalformedMessageError(`${where}: shape ${JSON.stringify(entry.shape)} is not a list of int32`);
    }
  }
  return { dtype: entry.dtype, shape: [...entry.shape], stype: entry.stype, data: toBuffer(entry.data) };
}

function parametersRecordToProto(name: string, record: ParametersRecord): ProtoParametersRecord {
  if (!(record instanceof Map)) {
    throw new MalformedMessageError(`ParametersRecord "${name}" must be a Map (its order is meaningful)`);
  }
  const out: ProtoParametersRecord = { dataKeys: [], dataValues: [] };
  for (const [key, entry] of record) {
    out.dataKeys.push(key);
    out.dataValues.push(arrayToProto(`ParametersRecord "${name}" key "${key}"`, entry));
  }
  return out;
}

function parametersRecordFromProto(name: string, record: ProtoParametersRecord): ParametersRecord {
  const where = `ParametersRecord "${name}"`;
  if (record.dataKeys.length !== record.dataValues.length) {
    throw new MalformedMessageError(`${where}: ${record.dataKeys.length} keys but ${record.dataValues.length} arrays`);
  }
  const out: ParametersRecord = new Map();
  record.dataKeys.forEach((key, i) => {
    if (out.has(key)) throw new MalformedMessageError(`${where}: duplicate key "${key}"`);
    const a = record.dataValues[i]!;
    out.set(key, { dtype: a.dtype, shape: [...a.shape], stype: a.stype, data: fromBuffer(a.data) });
  });
  return out;
}

function checkRecordObject(kind: string, name: string, record: unknown): asserts record is Record<string, unknown> {
  if (typeof record !== "object" || record === null || Array.isArray(record) || record instanceof Map) {
    throw new MalformedMessageError(`${kind} "${name}" must be a plain object of name -> value`);
  }
}

function checkRecordMap(kind: string, map: unknown): asserts map is Map<string, unknown> {
  if (!(map instanceof Map)) throw new MalformedMessageError(`RecordSet.${kind} must be a Map`);
}

/** Domain RecordSet -> `flwr.proto.RecordSet`. Throws MalformedMessageError on unsupported values. */
export function recordSetToProto(rs: RecordSet): ProtoRecordSet {
  checkRecordMap("parametersRecords", rs.parametersRecords);
  checkRecordMap("metricsRecords", rs.metricsRecords);
  checkRecordMap("configsRecords", rs.configsRecords);
  const out: ProtoRecordSet = { parameters: new Map(), metrics: new Map(), configs: new Map() };
  for (const [name, record] of rs.parametersRecords) out.parameters.set(name, parametersRecordToProto(name, record));
  for (const [name, record] of rs.metricsRecords) {
    checkRecordObject("MetricsRecord", name, record);
    const data = new Map<string, MetricsRecordValue>();
    for (const [key, value] of Object.entries(record)) {
      data.set(key, metricsValueToProto(`MetricsRecord "${name}" key "${key}"`, value));
    }
    out.metrics.set(name, { data });
  }
  for (const [name, record] of rs.configsRecords) {
    checkRecordObject("ConfigsRecord", name, record);
    const data = new Map<string, ConfigsRecordValue>();
    for (const [key, value] of Object.entries(record)) {
      data.set(key, configsValueToProto(`ConfigsRecord "${name}" key "${key}"`, value));
    }
    out.configs.set(name, { data });
  }
  return out;
}

/**
 * `flwr.proto.RecordSet` -> domain RecordSet. ParametersRecord order is kept. Throws
 * MalformedMessageError for a value with no (or several) oneof members, or a ParametersRecord
 * whose key and array lists differ in length or repeat a key.
 */
export function recordSetFromProto(p: ProtoRecordSet): RecordSet {
  const rs = new RecordSet();
  for (const [name, record] of p.parameters) rs.parametersRecords.set(name, parametersRecordFromProto(name, record));
  for (const [name, record] of p.metrics) {
    const out: MetricsRecord = {};
    for (const [key, value] of record.data) {
      setOwn(out, key, metricsValueFromProto(`MetricsRecord "${name}" key "${key}"`, value));
    }
    rs.metricsRecords.set(name, out);
  }
  for (const [name, record] of p.configs) {
    const out: ConfigsRecord = {};
    for (const [key, value] of record.data) {
      setOwn(out, key, configsValueFromProto(`ConfigsRecord "${name}" key "${key}"`, value));
    }
    rs.configsRecords.set(name, out);
  }
  return rs;
}

// ---------------------------------------------------------------------------------------------
// Messages <-> tasks

function errorToProto(error: MessageError): ProtoError {
  if (!Number.isSafeInteger(error.code)) {
    throw new MalformedMessageError(`Message error code ${error.code} is not an integer`);
  }
  return { code: BigInt(error.code), reason: error.reason ?? "" };
}

function contentToTaskFields(m: Message): Pick<Task, "recordset" | "error"> {
  const hasContent = m.content !== undefined;
  const hasError = m.error !== undefined;
  if (hasContent === hasError) {
    throw new MalformedMessageError("A Message must carry exactly one of content and error");
  }
  return {
    recordset: m.content !== undefined ? recordSetToProto(m.content) : undefined,
    error: m.error !== undefined ? errorToProto(m.error) : undefined,
  };
}

function checkMetadataIds(md: Metadata): void {
  checkInt64(md.runId, "run_id");
  checkInt64(md.srcNodeId, "src_node_id");
  checkInt64(md.dstNodeId, "dst_node_id");
}

function buildTask(m: Message, producer: Node, consumer: Node): Task {
  const md = m.metadata;
  return {
    producer,
    consumer,
    createdAt: md.createdAt,
    deliveredAt: "",
    pushedAt: 0,
    ttl: md.ttl,
    ancestry: md.replyToMessage !== "" ? [md.replyToMessage] : [],
    taskType: md.messageType,
    ...contentToTaskFields(m),
  };
}

/**
 * Message -> TaskIns as the ServerApp's driver sends it (`serde.message_to_taskins`):
 * task_id "", producer {0, anonymous}, consumer {dst, not anonymous}, ancestry [reply_to] or [],
 * and exactly one of recordset / error. Throws MalformedMessageError for a message with both or
 * neither, or with out-of-range ids or values.
 */
export function messageToTaskIns(m: Message): TaskIns {
  checkMetadataIds(m.metadata);
  return {
    taskId: "",
    groupId: m.metadata.groupId,
    runId: m.metadata.runId,
    task: buildTask(m, { nodeId: 0n, anonymous: true }, { nodeId: m.metadata.dstNodeId, anonymous: false }),
  };
}

/**
 * Message -> TaskRes as a SuperNode sends it (`serde.message_to_taskres`): task_id "",
 * producer {src (own node), not anonymous}, consumer {0, anonymous}, ancestry [reply_to] or [],
 * exactly one of recordset / error; pushed_at and delivered_at unset.
 */
export function messageToTaskRes(m: Message): TaskRes {
  checkMetadataIds(m.metadata);
  return {
    taskId: "",
    groupId: m.metadata.groupId,
    runId: m.metadata.runId,
    task: buildTask(m, { nodeId: m.metadata.srcNodeId, anonymous: false }, { nodeId: 0n, anonymous: true }),
  };
}

function messageFromTask(
  kind: string,
  taskId: string,
  groupId: string,
  runId: bigint,
  task: Task | undefined,
): Message {
  if (task === undefined) throw new MalformedMessageError(`${kind} ${taskId || "(no id)"} has no task`);
  const hasContent = task.recordset !== undefined;
  const hasError = task.error !== undefined;
  if (hasContent === hasError) {
    throw new MalformedMessageError(`${kind} ${taskId || "(no id)"} must carry exactly one of recordset and error`);
  }
  const metadata: Metadata = {
    runId,
    messageId: taskId,
    // An unset producer/consumer reads as node 0, as Python's default submessage does.
    srcNodeId: task.producer?.nodeId ?? 0n,
    dstNodeId: task.consumer?.nodeId ?? 0n,
    replyToMessage: task.ancestry[0] ?? "",
    groupId,
    ttl: task.ttl,
    messageType: task.taskType,
    createdAt: task.createdAt,
  };
  if (task.recordset !== undefined) return { metadata, content: recordSetFromProto(task.recordset) };
  return { metadata, error: { code: Number(task.error!.code), reason: task.error!.reason } };
}

/**
 * TaskIns -> Message (`serde.message_from_taskins`, docs/protocol.md, "Messages and replies"): message_id = task_id,
 * src/dst = producer/consumer, reply_to = ancestry[0] or "", created_at and ttl from the task.
 * Throws MalformedMessageError when the task is missing or carries both or neither of
 * recordset and error.
 */
export function messageFromTaskIns(t: TaskIns): Message {
  return messageFromTask("TaskIns", t.taskId, t.groupId, t.runId, t.task);
}

/** TaskRes -> Message (`serde.message_from_taskres`); same mapping and errors as messageFromTaskIns. */
export function messageFromTaskRes(t: TaskRes): Message {
  return messageFromTask("TaskRes", t.taskId, t.groupId, t.runId, t.task);
}

/**
 * Builds the reply to `incoming` as Flower's `Message.create_reply` / `create_error_reply`
 * (docs/protocol.md, "Messages and replies"): same run, group and type; src/dst swapped; reply_to = incoming message_id;
 * message_id ""; created_at = now (Unix seconds); ttl = in.ttl - (now - in.createdAt).
 * `content` is either the reply RecordSet or an error.
 */
export function createReply(
  incoming: Message,
  content: RecordSet | MessageError,
  nowSeconds: number = Date.now() / 1000,
): Message {
  const md = incoming.metadata;
  const metadata: Metadata = {
    runId: md.runId,
    messageId: "",
    srcNodeId: md.dstNodeId,
    dstNodeId: md.srcNodeId,
    replyToMessage: md.messageId,
    groupId: md.groupId,
    ttl: md.ttl - (nowSeconds - md.createdAt),
    messageType: md.messageType,
    createdAt: nowSeconds,
  };
  // Duck-typed: an app may build its RecordSet with another loaded copy of this package.
  const isRecordSet =
    content instanceof RecordSet || (typeof content === "object" && content !== null && "parametersRecords" in content);
  return isRecordSet ? { metadata, content: content } : { metadata, error: { ...content } };
}

// ---------------------------------------------------------------------------------------------
// Scalars (Run.override_config, CreateRunRequest.override_config)

/**
 * `map<string, Scalar>` -> plain object: bool -> boolean, double -> number, sint64 -> bigint,
 * string -> string, bytes -> Uint8Array. Throws MalformedMessageError for a Scalar with no
 * (or several) members set.
 */
export function scalarMapToRecord(map: Map<string, Scalar>): Record<string, ConfigsScalar> {
  const out: Record<string, ConfigsScalar> = {};
  for (const [key, scalar] of map) {
    const members = scalar === undefined ? [] : setMembers(scalar);
    if (scalar === undefined || members.length !== 1) {
      throw new MalformedMessageError(`Scalar "${key}": expected exactly one value kind, found ${members.length}`);
    }
    let value: ConfigsScalar;
    if (scalar.bool !== undefined) value = scalar.bool;
    else if (scalar.double !== undefined) value = scalar.double;
    else if (scalar.sint64 !== undefined) value = scalar.sint64;
    else if (scalar.string !== undefined) value = scalar.string;
    else value = fromBuffer(scalar.bytes!);
    setOwn(out, key, value);
  }
  return out;
}

/**
 * Plain object -> `map<string, Scalar>`: boolean -> bool, number -> double, bigint -> sint64,
 * string -> string, Uint8Array -> bytes. Throws MalformedMessageError for any other value.
 */
export function recordToScalarMap(record: Record<string, ConfigsScalar>): Map<string, Scalar> {
  const out = new Map<string, Scalar>();
  for (const [key, value] of Object.entries(record)) {
    let scalar: Scalar;
    if (typeof value === "boolean") scalar = { bool: value };
    else if (typeof value === "number") scalar = { double: value };
    else if (typeof value === "bigint") scalar = { sint64: checkInt64(value, `Scalar "${key}"`) };
    else if (typeof value === "string") scalar = { string: value };
    else if (isBytes(value)) scalar = { bytes: toBuffer(value) };
    else {
      throw new MalformedMessageError(
        `Scalar "${key}": ${describe(value)} is not allowed (boolean, number, bigint, string or Uint8Array)`,
      );
    }
    out.set(key, scalar);
  }
  return out;
}
