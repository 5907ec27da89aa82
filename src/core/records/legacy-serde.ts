/**
 * Legacy types (FitIns, FitRes, ...) <-> the grpc-bidi wire messages of transport.proto
 * (`ServerMessage` / `ClientMessage`), as Flower 1.10's `flwr/common/serde.py` does it.
 *
 * - Scalars map by JS type, as in compat.ts: number -> double, bigint -> sint64, boolean, string,
 *   bytes. Read back, a sint64 becomes a `number` when it is a safe integer (so Python's
 *   `{"epochs": 1}` reads as `1`) and stays a `bigint` otherwise.
 * - Status codes other than the four *_NOT_IMPLEMENTED ones are sent as OK, as Flower's
 *   `status_to_proto` does.
 * - A result whose status is its *_NOT_IMPLEMENTED code carries only the status (Flower).
 * - `EvaluateRes.loss` is a 32-bit float on the wire: 0.1 arrives as 0.10000000149011612.
 */
import { StatusCode } from "../constants";
import { MalformedMessageError } from "../errors";
import {
  type ClientMessage,
  type ClientMessage_EvaluateRes,
  type ClientMessage_FitRes,
  type ClientMessage_GetParametersRes,
  type ClientMessage_GetPropertiesRes,
  Code,
  type Parameters as ProtoParameters,
  Reason,
  type Scalar as ProtoScalar,
  type ServerMessage,
  type Status as ProtoStatus,
} from "../../proto/flwr/proto/transport";
import type {
  EvaluateIns,
  EvaluateRes,
  FitIns,
  FitRes,
  GetParametersIns,
  GetParametersRes,
  GetPropertiesIns,
  GetPropertiesRes,
  Parameters,
  Scalar,
  Status,
} from "./legacy-types";

/** Flower's `DisconnectRes.reason` names, by wire value. */
export type DisconnectReason = "UNKNOWN" | "RECONNECT" | "POWER_DISCONNECTED" | "WIFI_UNAVAILABLE" | "ACK";

/** The instruction kinds a ServerMessage can carry (its `msg` oneof). */
export type ServerMessageKind = "reconnectIns" | "getPropertiesIns" | "getParametersIns" | "fitIns" | "evaluateIns";
/** The reply kinds a ClientMessage can carry (its `msg` oneof). */
export type ClientMessageKind = "disconnectRes" | "getPropertiesRes" | "getParametersRes" | "fitRes" | "evaluateRes";

const SERVER_KINDS: readonly ServerMessageKind[] = [
  "reconnectIns",
  "getPropertiesIns",
  "getParametersIns",
  "fitIns",
  "evaluateIns",
];
const CLIENT_KINDS: readonly ClientMessageKind[] = [
  "disconnectRes",
  "getPropertiesRes",
  "getParametersRes",
  "fitRes",
  "evaluateRes",
];

/** Which field of the `msg` oneof is set; undefined for an empty message. */
export function serverMessageKind(msg: ServerMessage): ServerMessageKind | undefined {
  return SERVER_KINDS.find((k) => msg[k] !== undefined);
}

/** Which field of the `msg` oneof is set; undefined for an empty message. */
export function clientMessageKind(msg: ClientMessage): ClientMessageKind | undefined {
  return CLIENT_KINDS.find((k) => msg[k] !== undefined);
}

// ---------------------------------------------------------------------------------------------
// Scalars, dicts, parameters, status

function scalarToProto(where: string, value: Scalar): ProtoScalar {
  if (typeof value === "boolean") return { bool: value };
  if (typeof value === "number") return { double: value };
  if (typeof value === "bigint") return { sint64: value };
  if (typeof value === "string") return { string: value };
  if (value instanceof Uint8Array) return { bytes: Buffer.from(value.buffer, value.byteOffset, value.byteLength) };
  throw new MalformedMessageError(
    `${where}: a legacy Scalar is a boolean, number, bigint, string or bytes, got ${typeof value}`,
  );
}

function scalarFromProto(where: string, p: ProtoScalar | undefined): Scalar {
  if (p === undefined) throw new MalformedMessageError(`${where}: missing value`);
  if (p.double !== undefined) return p.double;
  if (p.sint64 !== undefined) return Number.isSafeInteger(Number(p.sint64)) ? Number(p.sint64) : p.sint64;
  if (p.bool !== undefined) return p.bool;
  if (p.string !== undefined) return p.string;
  if (p.bytes !== undefined) return new Uint8Array(p.bytes.buffer, p.bytes.byteOffset, p.bytes.byteLength);
  throw new MalformedMessageError(`${where}: Scalar with no value set`);
}

function scalarDictToProto(where: string, dict: Record<string, Scalar>): Map<string, ProtoScalar> {
  const out = new Map<string, ProtoScalar>();
  for (const [key, value] of Object.entries(dict)) out.set(key, scalarToProto(`${where} "${key}"`, value));
  return out;
}

function scalarDictFromProto(where: string, map: Map<string, ProtoScalar>): Record<string, Scalar> {
  const out: Record<string, Scalar> = {};
  for (const [key, value] of map) {
    // defineProperty: a key like "__proto__" stays an ordinary entry.
    Object.defineProperty(out, key, {
      value: scalarFromProto(`${where} "${key}"`, value),
      enumerable: true,
      writable: true,
      configurable: true,
    });
  }
  return out;
}

function parametersToProto(p: Parameters): ProtoParameters {
  return {
    tensors: p.tensors.map((t) => Buffer.from(t.buffer, t.byteOffset, t.byteLength)),
    tensorType: p.tensorType,
  };
}

function parametersFromProto(p: ProtoParameters | undefined): Parameters {
  if (p === undefined) return { tensors: [], tensorType: "" };
  return {
    tensors: p.tensors.map((t) => new Uint8Array(t.buffer, t.byteOffset, t.byteLength)),
    tensorType: p.tensorType,
  };
}

const NOT_IMPLEMENTED_CODES: ReadonlySet<number> = new Set([
  StatusCode.GET_PROPERTIES_NOT_IMPLEMENTED,
  StatusCode.GET_PARAMETERS_NOT_IMPLEMENTED,
  StatusCode.FIT_NOT_IMPLEMENTED,
  StatusCode.EVALUATE_NOT_IMPLEMENTED,
]);

export function statusToProto(status: Status): ProtoStatus {
  return { code: NOT_IMPLEMENTED_CODES.has(status.code) ? status.code : Code.OK, message: status.message };
}

function statusFromProto(p: ProtoStatus | undefined): Status {
  if (p === undefined) return { code: StatusCode.OK, message: "" };
  return { code: NOT_IMPLEMENTED_CODES.has(p.code) ? p.code : StatusCode.OK, message: p.message };
}

function toInt64(where: string, value: number): bigint {
  if (!Number.isSafeInteger(value)) throw new MalformedMessageError(`${where} must be an integer, got ${value}`);
  return BigInt(value);
}

function fromInt64(where: string, value: bigint): number {
  const n = Number(value);
  if (!Number.isSafeInteger(n)) throw new MalformedMessageError(`${where} ${value} is out of range`);
  return n;
}

// ---------------------------------------------------------------------------------------------
// Server -> client instructions

export function getPropertiesInsToServerMessage(ins: GetPropertiesIns): ServerMessage {
  return { getPropertiesIns: { config: scalarDictToProto("GetPropertiesIns.config", ins.config) } };
}

export function getParametersInsToServerMessage(ins: GetParametersIns): ServerMessage {
  return { getParametersIns: { config: scalarDictToProto("GetParametersIns.config", ins.config) } };
}

export function fitInsToServerMessage(ins: FitIns): ServerMessage {
  return {
    fitIns: { parameters: parametersToProto(ins.parameters), config: scalarDictToProto("FitIns.config", ins.config) },
  };
}

export function evaluateInsToServerMessage(ins: EvaluateIns): ServerMessage {
  return {
    evaluateIns: {
      parameters: parametersToProto(ins.parameters),
      config: scalarDictToProto("EvaluateIns.config", ins.config),
    },
  };
}

/** Flower's `ReconnectIns(seconds=None)` is sent as 0, which a client reads as "shut down". */
export function reconnectInsToServerMessage(seconds: number | undefined): ServerMessage {
  return { reconnectIns: { seconds: seconds === undefined ? 0n : toInt64("ReconnectIns.seconds", seconds) } };
}

/** The legacy instruction a ServerMessage carries. */
export type LegacyInstruction =
  | { kind: "getPropertiesIns"; ins: GetPropertiesIns }
  | { kind: "getParametersIns"; ins: GetParametersIns }
  | { kind: "fitIns"; ins: FitIns }
  | { kind: "evaluateIns"; ins: EvaluateIns }
  | { kind: "reconnectIns"; seconds: number };

/** Decodes a ServerMessage; MalformedMessageError for an empty one (Flower raises ValueError). */
export function serverMessageToInstruction(msg: ServerMessage): LegacyInstruction {
  if (msg.reconnectIns)
    return { kind: "reconnectIns", seconds: fromInt64("ReconnectIns.seconds", msg.reconnectIns.seconds) };
  if (msg.getPropertiesIns) {
    const config = scalarDictFromProto("GetPropertiesIns.config", msg.getPropertiesIns.config);
    return { kind: "getPropertiesIns", ins: { config } };
  }
  if (msg.getParametersIns) {
    const config = scalarDictFromProto("GetParametersIns.config", msg.getParametersIns.config);
    return { kind: "getParametersIns", ins: { config } };
  }
  if (msg.fitIns) {
    return {
      kind: "fitIns",
      ins: {
        parameters: parametersFromProto(msg.fitIns.parameters),
        config: scalarDictFromProto("FitIns.config", msg.fitIns.config),
      },
    };
  }
  if (msg.evaluateIns) {
    return {
      kind: "evaluateIns",
      ins: {
        parameters: parametersFromProto(msg.evaluateIns.parameters),
        config: scalarDictFromProto("EvaluateIns.config", msg.evaluateIns.config),
      },
    };
  }
  throw new MalformedMessageError("Unsupported instruction in ServerMessage, cannot deserialize from ProtoBuf");
}

// ---------------------------------------------------------------------------------------------
// Client -> server replies

export function getPropertiesResToClientMessage(res: GetPropertiesRes): ClientMessage {
  const getPropertiesRes: ClientMessage_GetPropertiesRes = { status: statusToProto(res.status), properties: new Map() };
  if (res.status.code !== StatusCode.GET_PROPERTIES_NOT_IMPLEMENTED) {
    getPropertiesRes.properties = scalarDictToProto("GetPropertiesRes.properties", res.properties);
  }
  return { getPropertiesRes };
}

export function getParametersResToClientMessage(res: GetParametersRes): ClientMessage {
  const getParametersRes: ClientMessage_GetParametersRes = { status: statusToProto(res.status), parameters: undefined };
  if (res.status.code !== StatusCode.GET_PARAMETERS_NOT_IMPLEMENTED) {
    getParametersRes.parameters = parametersToProto(res.parameters);
  }
  return { getParametersRes };
}

export function fitResToClientMessage(res: FitRes): ClientMessage {
  const fitRes: ClientMessage_FitRes = {
    status: statusToProto(res.status),
    parameters: undefined,
    numExamples: 0n,
    metrics: new Map(),
  };
  if (res.status.code !== StatusCode.FIT_NOT_IMPLEMENTED) {
    fitRes.parameters = parametersToProto(res.parameters);
    fitRes.numExamples = toInt64("FitRes.num_examples", res.numExamples);
    fitRes.metrics = scalarDictToProto("FitRes.metrics", res.metrics);
  }
  return { fitRes };
}

export function evaluateResToClientMessage(res: EvaluateRes): ClientMessage {
  const evaluateRes: ClientMessage_EvaluateRes = {
    status: statusToProto(res.status),
    loss: 0,
    numExamples: 0n,
    metrics: new Map(),
  };
  if (res.status.code !== StatusCode.EVALUATE_NOT_IMPLEMENTED) {
    evaluateRes.loss = res.loss;
    evaluateRes.numExamples = toInt64("EvaluateRes.num_examples", res.numExamples);
    evaluateRes.metrics = scalarDictToProto("EvaluateRes.metrics", res.metrics);
  }
  return { evaluateRes };
}

export function disconnectResToClientMessage(reason: DisconnectReason): ClientMessage {
  return { disconnectRes: { reason: Reason[reason] } };
}

function expectReply<K extends ClientMessageKind>(msg: ClientMessage, kind: K): NonNullable<ClientMessage[K]> {
  const value = msg[kind];
  if (value === undefined) {
    throw new MalformedMessageError(
      `Expected a ClientMessage with ${kind}, got ${clientMessageKind(msg) ?? "an empty message"}`,
    );
  }
  return value;
}

export function clientMessageToGetPropertiesRes(msg: ClientMessage): GetPropertiesRes {
  const res = expectReply(msg, "getPropertiesRes");
  return {
    status: statusFromProto(res.status),
    properties: scalarDictFromProto("GetPropertiesRes.properties", res.properties),
  };
}

export function clientMessageToGetParametersRes(msg: ClientMessage): GetParametersRes {
  const res = expectReply(msg, "getParametersRes");
  return { status: statusFromProto(res.status), parameters: parametersFromProto(res.parameters) };
}

export function clientMessageToFitRes(msg: ClientMessage): FitRes {
  const res = expectReply(msg, "fitRes");
  return {
    status: statusFromProto(res.status),
    parameters: parametersFromProto(res.parameters),
    numExamples: fromInt64("FitRes.num_examples", res.numExamples),
    metrics: scalarDictFromProto("FitRes.metrics", res.metrics),
  };
}

export function clientMessageToEvaluateRes(msg: ClientMessage): EvaluateRes {
  const res = expectReply(msg, "evaluateRes");
  return {
    status: statusFromProto(res.status),
    loss: res.loss,
    numExamples: fromInt64("EvaluateRes.num_examples", res.numExamples),
    metrics: scalarDictFromProto("EvaluateRes.metrics", res.metrics),
  };
}

/** Flower's `disconnect_res_from_proto`: ACK (and unknown values) read as "UNKNOWN". */
export function clientMessageToDisconnectRes(msg: ClientMessage): { reason: DisconnectReason } {
  const res = expectReply(msg, "disconnectRes");
  switch (res.reason) {
    case Reason.RECONNECT:
      return { reason: "RECONNECT" };
    case Reason.POWER_DISCONNECTED:
      return { reason: "POWER_DISCONNECTED" };
    case Reason.WIFI_UNAVAILABLE:
      return { reason: "WIFI_UNAVAILABLE" };
    default:
      return { reason: "UNKNOWN" };
  }
}
