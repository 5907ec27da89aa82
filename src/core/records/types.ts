/**
 * Domain types of Flower's Message API: RecordSet, Message, Context, and the NumPy-style arrays
 * that apps work with. These are what ClientApps and ServerApps see; `serde.ts` converts them
 * to and from the wire types in `src/proto`.
 *
 * Integers and floats are kept apart explicitly, because Flower's wire format is typed:
 * a JS `number` is sent as a double, a `bigint` as a sint64.
 */

/** One tensor as it travels in a ParametersRecord (`flwr.proto.Array`). */
export interface ArrayRecordEntry {
  /** Flower leaves this "" for legacy parameters; the dtype then lives in the .npy header. */
  dtype: string;
  shape: number[];
  /** Serialization type, "numpy.ndarray" for .npy bytes. */
  stype: string;
  data: Uint8Array;
}

/** Ordered: Flower keeps tensors as parallel key/value lists and their order is meaningful. */
export type ParametersRecord = Map<string, ArrayRecordEntry>;

type MetricsScalar = number | bigint;
export type MetricsValue = MetricsScalar | number[] | bigint[];
/** Metric name -> value. A plain object; key order carries no meaning. */
export type MetricsRecord = Record<string, MetricsValue>;

export type ConfigsScalar = number | bigint | boolean | string | Uint8Array;
export type ConfigsValue = ConfigsScalar | number[] | bigint[] | boolean[] | string[] | Uint8Array[];
/** Config name -> value. A plain object; key order carries no meaning. */
export type ConfigsRecord = Record<string, ConfigsValue>;

/** The content of a Message: three named collections of records. */
export class RecordSet {
  readonly parametersRecords: Map<string, ParametersRecord>;
  readonly metricsRecords: Map<string, MetricsRecord>;
  readonly configsRecords: Map<string, ConfigsRecord>;

  constructor(init?: {
    parametersRecords?: Map<string, ParametersRecord>;
    metricsRecords?: Map<string, MetricsRecord>;
    configsRecords?: Map<string, ConfigsRecord>;
  }) {
    this.parametersRecords = init?.parametersRecords ?? new Map<string, ParametersRecord>();
    this.metricsRecords = init?.metricsRecords ?? new Map<string, MetricsRecord>();
    this.configsRecords = init?.configsRecords ?? new Map<string, ConfigsRecord>();
  }
}

/** `flwr.proto.Error` as apps see it. */
export interface MessageError {
  code: number;
  reason: string;
}

export interface Metadata {
  runId: bigint;
  messageId: string;
  srcNodeId: bigint;
  dstNodeId: bigint;
  replyToMessage: string;
  groupId: string;
  /** Seconds. */
  ttl: number;
  messageType: string;
  /** Unix seconds (float). */
  createdAt: number;
}

/** A message between ServerApp and ClientApp: metadata plus content or error, never both. */
export interface Message {
  metadata: Metadata;
  content?: RecordSet;
  error?: MessageError;
}

/** Run-scoped context handed to apps (Flower's `Context`). */
export interface Context {
  nodeId: bigint;
  nodeConfig: Record<string, ConfigsScalar>;
  /** Persists across messages of one run on one node. */
  state: RecordSet;
  runConfig: Record<string, ConfigsScalar>;
}

/** Element types the .npy codec supports (numpy `descr` in parentheses). */
export type DType =
  | "float32" // <f4
  | "float64" // <f8
  | "int8" // |i1
  | "uint8" // |u1
  | "int16" // <i2
  | "int32" // <i4
  | "int64" // <i8
  | "bool"; // |b1

export type TypedArrayFor<D extends DType> = D extends "float32"
  ? Float32Array
  : D extends "float64"
    ? Float64Array
    : D extends "int8"
      ? Int8Array
      : D extends "uint8" | "bool"
        ? Uint8Array
        : D extends "int16"
          ? Int16Array
          : D extends "int32"
            ? Int32Array
            : BigInt64Array;

/** A dense C-order array, the TypeScript stand-in for a numpy ndarray. */
export interface NDArray<D extends DType = DType> {
  dtype: D;
  shape: number[];
  data: TypedArrayFor<D>;
}

export type NDArrays = NDArray[];
