/**
 * Deterministic protobuf encoding of the Fleet API requests, byte for byte what Python
 * protobuf 4.25 (upb) produces with `SerializeToString(deterministic=True)`: the input of the
 * SuperNode authentication HMAC (docs/protocol.md, "Headers and MAC", "Canonical encoding").
 *
 * Rules (docs/protocol.md, "Canonical encoding"): fields in ascending number order; implicit-presence scalars omitted when
 * their bit pattern is zero (so -0.0 IS written); set submessages always written, even empty;
 * oneof members always written once selected, even when zero/empty; repeated numerics packed
 * (omitted when empty); map entries always carry key and value; map keys sorted by UTF-8 bytes
 * with, in "upb" order, a longer key before any key that is its proper prefix ("ab" < "a"),
 * and in "lexicographic" order (Python's C++ and pure-Python backends) the shorter first.
 *
 * Input is the ts-proto object of the request. ts-proto drops unknown fields when decoding, so
 * a re-encoding cannot reproduce them; a verifier should also try the raw received bytes.
 * A record value or Scalar with more than one oneof member set (possible only with a decoded
 * message that repeated the oneof) has no single upb encoding and is refused with
 * MalformedMessageError.
 *
 * It writes through ChunkedWriter, so a 100 MB tensor is copied once (canonicalEncode), or not
 * at all (canonicalEncodeChunks), instead of once per nesting level. This module is pure: no
 * gRPC, no I/O.
 */
import { WireType } from "@bufbuild/protobuf/wire";
import { ChunkedWriter, type EncodedChunks } from "./chunked-writer";
import { MalformedMessageError } from "../errors";
import type { Error as ProtoError } from "../../proto/flwr/proto/error";
import type {
  CreateNodeRequest,
  DeleteNodeRequest,
  PingRequest,
  PullTaskInsRequest,
  PushTaskResRequest,
} from "../../proto/flwr/proto/fleet";
import type { Node } from "../../proto/flwr/proto/node";
import type {
  Array as ProtoArray,
  ConfigsRecord,
  ConfigsRecordValue,
  MetricsRecord,
  MetricsRecordValue,
  ParametersRecord,
  RecordSet,
} from "../../proto/flwr/proto/recordset";
import type { FleetService } from "../../proto/flwr/proto/fleet";
import type { GetRunRequest } from "../../proto/flwr/proto/run";
import type { Task, TaskRes } from "../../proto/flwr/proto/task";

/** How map keys are ordered: "upb" (Python protobuf 4.25 default) or plain byte order. */
export type MapOrder = "upb" | "lexicographic";

/** The Fleet requests that carry an `auth-token` (CreateNode is also accepted). */
export type FleetRequestName =
  | "CreateNodeRequest"
  | "DeleteNodeRequest"
  | "PingRequest"
  | "PullTaskInsRequest"
  | "PushTaskResRequest"
  | "GetRunRequest";

/** Fleet RPC (method name as in the generated FleetService) -> the request message it carries. */
export const FLEET_REQUEST_NAMES = {
  createNode: "CreateNodeRequest",
  deleteNode: "DeleteNodeRequest",
  ping: "PingRequest",
  pullTaskIns: "PullTaskInsRequest",
  pushTaskRes: "PushTaskResRequest",
  getRun: "GetRunRequest",
} as const satisfies Record<keyof typeof FleetService, FleetRequestName>;

interface EncodeContext {
  readonly order: MapOrder;
  /** Set when some map held two keys where one is a proper prefix of the other. */
  prefixRelated: boolean;
}

type Encoder<T> = (w: ChunkedWriter, message: T, ctx: EncodeContext) => void;

// ---------------------------------------------------------------------------------------------
// Field writers

function stringField(w: ChunkedWriter, field: number, value: string | undefined): void {
  if (value !== undefined && value !== "") w.tag(field, WireType.LengthDelimited).string(value);
}

function bytesField(w: ChunkedWriter, field: number, value: Uint8Array | undefined): void {
  if (value !== undefined && value.length > 0) w.tag(field, WireType.LengthDelimited).bytes(value);
}

function doubleField(w: ChunkedWriter, field: number, value: number | undefined): void {
  // Object.is keeps -0.0, whose bit pattern is not zero.
  if (value !== undefined && !Object.is(value, 0)) w.tag(field, WireType.Bit64).double(value);
}

function sint64Field(w: ChunkedWriter, field: number, value: bigint | undefined): void {
  if (value !== undefined && value !== 0n) w.tag(field, WireType.Varint).sint64(value);
}

function boolField(w: ChunkedWriter, field: number, value: boolean | undefined): void {
  if (value === true) w.tag(field, WireType.Varint).bool(true);
}

function messageField<T>(
  w: ChunkedWriter,
  field: number,
  value: T | undefined,
  encode: Encoder<T>,
  ctx: EncodeContext,
): void {
  if (value === undefined) return;
  w.tag(field, WireType.LengthDelimited).fork();
  encode(w, value, ctx);
  w.join();
}

function repeatedString(w: ChunkedWriter, field: number, values: readonly string[] | undefined): void {
  for (const value of values ?? []) w.tag(field, WireType.LengthDelimited).string(value);
}

function repeatedBytes(w: ChunkedWriter, field: number, values: readonly Uint8Array[] | undefined): void {
  for (const value of values ?? []) w.tag(field, WireType.LengthDelimited).bytes(value);
}

function packed<T>(w: ChunkedWriter, field: number, values: readonly T[] | undefined, write: (v: T) => void): void {
  if (values === undefined || values.length === 0) return;
  w.tag(field, WireType.LengthDelimited).fork();
  for (const value of values) write(value);
  w.join();
}

const utf8 = new TextEncoder();

function compareKeys(a: Uint8Array, b: Uint8Array, order: MapOrder): number {
  const common = Math.min(a.length, b.length);
  for (let i = 0; i < common; i++) {
    if (a[i] !== b[i]) return a[i]! - b[i]!;
  }
  // Equal over the common length: one is a prefix of the other (keys of one map are distinct).
  return order === "upb" ? b.length - a.length : a.length - b.length;
}

function isProperPrefix(a: Uint8Array, b: Uint8Array): boolean {
  if (a.length >= b.length) return false;
  for (let i = 0; i < a.length; i++) if (a[i] !== b[i]) return false;
  return true;
}

/** Writes a `map<string, V>` field as sorted `{1: key, 2: value}` entries, both always present. */
function mapField<V>(
  w: ChunkedWriter,
  field: number,
  map: ReadonlyMap<string, V> | undefined,
  writeValue: (w: ChunkedWriter, value: V) => void,
  ctx: EncodeContext,
): void {
  if (map === undefined || map.size === 0) return;
  const entries = [...map].map(([key, value]) => ({ bytes: utf8.encode(key), value }));
  entries.sort((x, y) => compareKeys(x.bytes, y.bytes, ctx.order));
  if (!ctx.prefixRelated) {
    // In byte order, the key right after a proper prefix p also starts with p, so checking
    // neighbours finds every prefix-related pair.
    const lex =
      ctx.order === "lexicographic"
        ? entries
        : [...entries].sort((x, y) => compareKeys(x.bytes, y.bytes, "lexicographic"));
    for (let i = 0; i + 1 < lex.length && !ctx.prefixRelated; i++) {
      ctx.prefixRelated = isProperPrefix(lex[i]!.bytes, lex[i + 1]!.bytes);
    }
  }
  for (const entry of entries) {
    w.tag(field, WireType.LengthDelimited).fork();
    w.tag(1, WireType.LengthDelimited).bytes(entry.bytes);
    writeValue(w, entry.value);
    w.join();
  }
}

function mapMessageValue<V>(encode: Encoder<V>, ctx: EncodeContext): (w: ChunkedWriter, value: V) => void {
  return (w, value) => {
    w.tag(2, WireType.LengthDelimited).fork();
    if (value !== undefined) encode(w, value, ctx);
    w.join();
  };
}

/** The oneof members set on a value; more than one has no single upb encoding. */
function selectedMember(what: string, value: object): string | undefined {
  const set = Object.entries(value).filter(([, v]) => v !== undefined);
  if (set.length > 1) {
    throw new MalformedMessageError(
      `${what} has ${set.length} oneof members set (${set.map(([k]) => k).join(", ")}); expected at most one`,
    );
  }
  return set[0]?.[0];
}

// ---------------------------------------------------------------------------------------------
// Messages

const encodeNode: Encoder<Node> = (w, m) => {
  sint64Field(w, 1, m.nodeId);
  boolField(w, 2, m.anonymous);
};

const encodeError: Encoder<ProtoError> = (w, m) => {
  sint64Field(w, 1, m.code);
  stringField(w, 2, m.reason);
};

const encodeDoubleList: Encoder<{ vals: number[] }> = (w, m) => packed(w, 1, m.vals, (v) => w.double(v));
const encodeSint64List: Encoder<{ vals: bigint[] }> = (w, m) => packed(w, 1, m.vals, (v) => w.sint64(v));
const encodeBoolList: Encoder<{ vals: boolean[] }> = (w, m) => packed(w, 1, m.vals, (v) => w.bool(v));
const encodeStringList: Encoder<{ vals: string[] }> = (w, m) => repeatedString(w, 1, m.vals);
const encodeBytesList: Encoder<{ vals: Uint8Array[] }> = (w, m) => repeatedBytes(w, 1, m.vals);

const encodeArray: Encoder<ProtoArray> = (w, m) => {
  stringField(w, 1, m.dtype);
  packed(w, 2, m.shape, (v) => w.int32(v));
  stringField(w, 3, m.stype);
  bytesField(w, 4, m.data);
};

const encodeParametersRecord: Encoder<ParametersRecord> = (w, m, ctx) => {
  repeatedString(w, 1, m.dataKeys);
  for (const value of m.dataValues ?? []) messageField(w, 2, value, encodeArray, ctx);
};

const encodeMetricsRecordValue: Encoder<MetricsRecordValue> = (w, m, ctx) => {
  switch (selectedMember("MetricsRecordValue", m)) {
    case "double":
      w.tag(1, WireType.Bit64).double(m.double!);
      break;
    case "sint64":
      w.tag(2, WireType.Varint).sint64(m.sint64!);
      break;
    case "doubleList":
      messageField(w, 21, m.doubleList, encodeDoubleList, ctx);
      break;
    case "sint64List":
      messageField(w, 22, m.sint64List, encodeSint64List, ctx);
      break;
  }
};

const encodeConfigsRecordValue: Encoder<ConfigsRecordValue> = (w, m, ctx) => {
  switch (selectedMember("ConfigsRecordValue", m)) {
    case "double":
      w.tag(1, WireType.Bit64).double(m.double!);
      break;
    case "sint64":
      w.tag(2, WireType.Varint).sint64(m.sint64!);
      break;
    case "bool":
      w.tag(3, WireType.Varint).bool(m.bool!);
      break;
    case "string":
      w.tag(4, WireType.LengthDelimited).string(m.string!);
      break;
    case "bytes":
      w.tag(5, WireType.LengthDelimited).bytes(m.bytes!);
      break;
    case "doubleList":
      messageField(w, 21, m.doubleList, encodeDoubleList, ctx);
      break;
    case "sint64List":
      messageField(w, 22, m.sint64List, encodeSint64List, ctx);
      break;
    case "boolList":
      messageField(w, 23, m.boolList, encodeBoolList, ctx);
      break;
    case "stringList":
      messageField(w, 24, m.stringList, encodeStringList, ctx);
      break;
    case "bytesList":
      messageField(w, 25, m.bytesList, encodeBytesList, ctx);
      break;
  }
};

const encodeMetricsRecord: Encoder<MetricsRecord> = (w, m, ctx) =>
  mapField(w, 1, m.data, mapMessageValue(encodeMetricsRecordValue, ctx), ctx);

const encodeConfigsRecord: Encoder<ConfigsRecord> = (w, m, ctx) =>
  mapField(w, 1, m.data, mapMessageValue(encodeConfigsRecordValue, ctx), ctx);

const encodeRecordSet: Encoder<RecordSet> = (w, m, ctx) => {
  mapField(w, 1, m.parameters, mapMessageValue(encodeParametersRecord, ctx), ctx);
  mapField(w, 2, m.metrics, mapMessageValue(encodeMetricsRecord, ctx), ctx);
  mapField(w, 3, m.configs, mapMessageValue(encodeConfigsRecord, ctx), ctx);
};

const encodeTask: Encoder<Task> = (w, m, ctx) => {
  messageField(w, 1, m.producer, encodeNode, ctx);
  messageField(w, 2, m.consumer, encodeNode, ctx);
  doubleField(w, 3, m.createdAt);
  stringField(w, 4, m.deliveredAt);
  doubleField(w, 5, m.pushedAt);
  doubleField(w, 6, m.ttl);
  repeatedString(w, 7, m.ancestry);
  stringField(w, 8, m.taskType);
  messageField(w, 9, m.recordset, encodeRecordSet, ctx);
  messageField(w, 10, m.error, encodeError, ctx);
};

const encodeTaskRes: Encoder<TaskRes> = (w, m, ctx) => {
  stringField(w, 1, m.taskId);
  stringField(w, 2, m.groupId);
  sint64Field(w, 3, m.runId);
  messageField(w, 4, m.task, encodeTask, ctx);
};

function encodeRequest(w: ChunkedWriter, name: FleetRequestName, message: object, ctx: EncodeContext): void {
  switch (name) {
    case "CreateNodeRequest":
      doubleField(w, 1, (message as CreateNodeRequest).pingInterval);
      return;
    case "DeleteNodeRequest":
      messageField(w, 1, (message as DeleteNodeRequest).node, encodeNode, ctx);
      return;
    case "PingRequest": {
      const m = message as PingRequest;
      messageField(w, 1, m.node, encodeNode, ctx);
      doubleField(w, 2, m.pingInterval);
      return;
    }
    case "PullTaskInsRequest": {
      const m = message as PullTaskInsRequest;
      messageField(w, 1, m.node, encodeNode, ctx);
      repeatedString(w, 2, m.taskIds);
      return;
    }
    case "PushTaskResRequest":
      for (const taskRes of (message as PushTaskResRequest).taskResList ?? []) {
        messageField(w, 1, taskRes, encodeTaskRes, ctx);
      }
      return;
    case "GetRunRequest":
      sint64Field(w, 1, (message as GetRunRequest).runId);
      return;
    default:
      throw new MalformedMessageError(`canonicalEncode: unknown request type ${String(name)}`);
  }
}

interface Encoded {
  /** Holds the encoding: finish it once, as bytes or as chunks. */
  writer: ChunkedWriter;
  prefixRelated: boolean;
}

function encode(name: FleetRequestName, message: object, order: MapOrder): Encoded {
  if (order !== "upb" && order !== "lexicographic") {
    throw new MalformedMessageError(`canonicalEncode: unknown map order ${String(order)}`);
  }
  const ctx: EncodeContext = { order, prefixRelated: false };
  const w = new ChunkedWriter();
  try {
    encodeRequest(w, name, message, ctx);
  } catch (cause) {
    if (cause instanceof MalformedMessageError) throw cause;
    // e.g. a sint64 outside the 64-bit range.
    const why = cause instanceof Error ? cause.message : String(cause);
    throw new MalformedMessageError(`canonicalEncode(${name}): ${why}`, { cause });
  }
  return { writer: w, prefixRelated: ctx.prefixRelated };
}

/**
 * The deterministic serialization of a Fleet request (the ts-proto object), identical to
 * upb's `SerializeToString(deterministic=True)` for order "upb", and to Python's C++ /
 * pure-Python backends for order "lexicographic". The two differ only when some map holds
 * prefix-related keys (see hasPrefixRelatedMapKeys). Throws MalformedMessageError for values
 * that cannot be encoded (out-of-range integers, several oneof members set).
 */
export function canonicalEncode(name: FleetRequestName, message: object, order: MapOrder = "upb"): Uint8Array {
  return encode(name, message, order).writer.finish();
}

/**
 * `canonicalEncode` as chunks that reference the request's large `bytes` values instead of
 * copying them (see ChunkedWriter.finishChunks): for MACs and sends of large requests.
 */
export function canonicalEncodeChunks(name: FleetRequestName, message: object, order: MapOrder = "upb"): EncodedChunks {
  return encode(name, message, order).writer.finishChunks();
}

/**
 * True when some map in the request (RecordSet maps, record data maps) holds two keys where
 * one is a proper prefix of the other, i.e. exactly when the "upb" and "lexicographic"
 * encodings differ and a verifier or sender should try both. Costs one encoding pass.
 */
export function hasPrefixRelatedMapKeys(name: FleetRequestName, message: object): boolean {
  return encode(name, message, "lexicographic").prefixRelated;
}
