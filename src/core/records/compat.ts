/**
 * Legacy types (FitIns, FitRes, ...) <-> RecordSet with the exact record names Flower 1.10 uses
 * (`flwr/common/recordset_compat.py`, docs/protocol.md, "Legacy records"), so a Python ServerApp or SuperNode reads what
 * we write and vice versa.
 *
 * Value typing. Python tells int from float by type; JS cannot, so legacy config and metric
 * values map by JS type: number -> double, bigint -> sint64 (booleans, strings and bytes as
 * themselves). The fixed fields are typed by name: `num_examples` and status `code` are always
 * sint64, `loss` is always double.
 *
 * Reading back. Legacy dicts are `Record<string, Scalar>`: a sint64 comes back as a `number`
 * when it is a safe integer (so a Python `{"epochs": 1}` reads as `1`, not `1n`) and stays a
 * `bigint` otherwise; list values are refused with MalformedMessageError (Flower raises
 * TypeError). A missing record is also a MalformedMessageError naming the record.
 */
import { MalformedMessageError } from "../errors";
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
import { RecordSet, type ConfigsRecord, type ConfigsValue, type MetricsRecord, type ParametersRecord } from "./types";

/** The key Flower uses for a ParametersRecord built from zero tensors. */
export const EMPTY_TENSOR_KEY = "_empty";

// ---------------------------------------------------------------------------------------------
// Parameters

/**
 * Legacy Parameters -> ParametersRecord: keys "0", "1", ... in tensor order, each entry
 * `{dtype: "", shape: [], stype: tensorType, data}` (the bytes are shared, not copied); zero
 * tensors give the single key "_empty" with empty data.
 */
export function parametersToParametersRecord(p: Parameters): ParametersRecord {
  const record: ParametersRecord = new Map();
  p.tensors.forEach((data, index) => {
    record.set(String(index), { dtype: "", shape: [], stype: p.tensorType, data });
  });
  if (p.tensors.length === 0) {
    record.set(EMPTY_TENSOR_KEY, { dtype: "", shape: [], stype: p.tensorType, data: new Uint8Array(0) });
  }
  return record;
}

/**
 * ParametersRecord -> legacy Parameters: data in key order, skipping "_empty"; tensorType is
 * the first non-empty stype, as Flower takes it.
 */
export function parametersRecordToParameters(record: ParametersRecord): Parameters {
  const out: Parameters = { tensors: [], tensorType: "" };
  for (const [key, entry] of record) {
    if (key !== EMPTY_TENSOR_KEY) out.tensors.push(entry.data);
    if (out.tensorType === "") out.tensorType = entry.stype;
  }
  return out;
}

// ---------------------------------------------------------------------------------------------
// Helpers

function copyToRecord(dict: Record<string, Scalar>): ConfigsRecord {
  const out: ConfigsRecord = {};
  for (const [key, value] of Object.entries(dict)) {
    Object.defineProperty(out, key, { value, enumerable: true, writable: true, configurable: true });
  }
  return out;
}

/** A legacy value read from a record: safe-integer sint64 -> number; lists refused. */
function toScalar(where: string, value: ConfigsValue): Scalar {
  if (Array.isArray(value)) {
    throw new MalformedMessageError(`${where}: list values cannot become a legacy Scalar`);
  }
  // A bigint converts exactly whenever the result is a safe integer.
  if (typeof value === "bigint" && Number.isSafeInteger(Number(value))) return Number(value);
  return value as Scalar;
}

function recordToScalars(name: string, record: ConfigsRecord): Record<string, Scalar> {
  const out: Record<string, Scalar> = {};
  for (const [key, value] of Object.entries(record)) {
    const scalar = toScalar(`ConfigsRecord "${name}" key "${key}"`, value);
    Object.defineProperty(out, key, { value: scalar, enumerable: true, writable: true, configurable: true });
  }
  return out;
}

function requireParameters(rs: RecordSet, name: string): ParametersRecord {
  const record = rs.parametersRecords.get(name);
  if (record === undefined) throw new MalformedMessageError(`RecordSet has no ParametersRecord "${name}"`);
  return record;
}

function requireMetrics(rs: RecordSet, name: string): MetricsRecord {
  const record = rs.metricsRecords.get(name);
  if (record === undefined) throw new MalformedMessageError(`RecordSet has no MetricsRecord "${name}"`);
  return record;
}

function requireConfigs(rs: RecordSet, name: string): ConfigsRecord {
  const record = rs.configsRecords.get(name);
  if (record === undefined) throw new MalformedMessageError(`RecordSet has no ConfigsRecord "${name}"`);
  return record;
}

function requireConfigsScalars(rs: RecordSet, name: string): Record<string, Scalar> {
  return recordToScalars(name, requireConfigs(rs, name));
}

/** An integer that Flower stores as sint64 (`num_examples`, status `code`). */
function toSint64(where: string, value: number): bigint {
  if (!Number.isSafeInteger(value)) throw new MalformedMessageError(`${where} must be an integer, got ${value}`);
  return BigInt(value);
}

/** Reads a number field written by either side: sint64 (bigint) or double (number). */
function readNumber(where: string, value: unknown, integer: boolean): number {
  if (typeof value === "bigint") {
    const n = Number(value);
    if (!Number.isSafeInteger(n)) throw new MalformedMessageError(`${where} ${value} is out of range`);
    return n;
  }
  if (typeof value === "number" && (!integer || Number.isInteger(value))) return value;
  throw new MalformedMessageError(`${where} must be ${integer ? "an integer" : "a number"}, got ${String(value)}`);
}

function metricOf(rs: RecordSet, name: string, key: string, integer: boolean): number {
  const record = requireMetrics(rs, name);
  if (!Object.prototype.hasOwnProperty.call(record, key)) {
    throw new MalformedMessageError(`MetricsRecord "${name}" has no "${key}"`);
  }
  return readNumber(`MetricsRecord "${name}" key "${key}"`, record[key], integer);
}

function embedStatus(rs: RecordSet, prefix: string, status: Status): void {
  rs.configsRecords.set(`${prefix}.status`, {
    code: toSint64(`${prefix}.status code`, status.code),
    message: status.message,
  });
}

function extractStatus(rs: RecordSet, prefix: string): Status {
  const name = `${prefix}.status`;
  const record = requireConfigs(rs, name);
  const message = record["message"];
  if (typeof message !== "string") {
    throw new MalformedMessageError(`ConfigsRecord "${name}" key "message" must be a string`);
  }
  return { code: readNumber(`ConfigsRecord "${name}" key "code"`, record["code"], true), message };
}

function singleMetric(key: string, value: bigint | number): MetricsRecord {
  const out: MetricsRecord = {};
  out[key] = value;
  return out;
}

// ---------------------------------------------------------------------------------------------
// Fit

/** FitIns -> `P["fitins.parameters"]`, `C["fitins.config"]`. */
export function fitInsToRecordSet(ins: FitIns): RecordSet {
  const rs = new RecordSet();
  rs.parametersRecords.set("fitins.parameters", parametersToParametersRecord(ins.parameters));
  rs.configsRecords.set("fitins.config", copyToRecord(ins.config));
  return rs;
}

/** RecordSet -> FitIns; throws MalformedMessageError if a record is missing or holds a list. */
export function recordSetToFitIns(rs: RecordSet): FitIns {
  return {
    parameters: parametersRecordToParameters(requireParameters(rs, "fitins.parameters")),
    config: requireConfigsScalars(rs, "fitins.config"),
  };
}

/**
 * FitRes -> `P["fitres.parameters"]`, `M["fitres.num_examples"] = {num_examples: sint64}`,
 * `C["fitres.metrics"]`, `C["fitres.status"] = {code: sint64, message}`.
 */
export function fitResToRecordSet(res: FitRes): RecordSet {
  const rs = new RecordSet();
  rs.configsRecords.set("fitres.metrics", copyToRecord(res.metrics));
  rs.metricsRecords.set("fitres.num_examples", singleMetric("num_examples", toSint64("num_examples", res.numExamples)));
  rs.parametersRecords.set("fitres.parameters", parametersToParametersRecord(res.parameters));
  embedStatus(rs, "fitres", res.status);
  return rs;
}

/** RecordSet -> FitRes; throws MalformedMessageError if a record or field is missing or mistyped. */
export function recordSetToFitRes(rs: RecordSet): FitRes {
  return {
    status: extractStatus(rs, "fitres"),
    parameters: parametersRecordToParameters(requireParameters(rs, "fitres.parameters")),
    numExamples: metricOf(rs, "fitres.num_examples", "num_examples", true),
    metrics: requireConfigsScalars(rs, "fitres.metrics"),
  };
}

// ---------------------------------------------------------------------------------------------
// Evaluate

/** EvaluateIns -> `P["evaluateins.parameters"]`, `C["evaluateins.config"]`. */
export function evaluateInsToRecordSet(ins: EvaluateIns): RecordSet {
  const rs = new RecordSet();
  rs.parametersRecords.set("evaluateins.parameters", parametersToParametersRecord(ins.parameters));
  rs.configsRecords.set("evaluateins.config", copyToRecord(ins.config));
  return rs;
}

/** RecordSet -> EvaluateIns; throws MalformedMessageError if a record is missing or holds a list. */
export function recordSetToEvaluateIns(rs: RecordSet): EvaluateIns {
  return {
    parameters: parametersRecordToParameters(requireParameters(rs, "evaluateins.parameters")),
    config: requireConfigsScalars(rs, "evaluateins.config"),
  };
}

/**
 * EvaluateRes -> `M["evaluateres.loss"] = {loss: double}`,
 * `M["evaluateres.num_examples"] = {num_examples: sint64}`, `C["evaluateres.metrics"]`,
 * `C["evaluateres.status"]`.
 */
export function evaluateResToRecordSet(res: EvaluateRes): RecordSet {
  if (typeof res.loss !== "number") throw new MalformedMessageError(`EvaluateRes.loss must be a number`);
  const rs = new RecordSet();
  rs.metricsRecords.set("evaluateres.loss", singleMetric("loss", res.loss));
  rs.metricsRecords.set(
    "evaluateres.num_examples",
    singleMetric("num_examples", toSint64("num_examples", res.numExamples)),
  );
  rs.configsRecords.set("evaluateres.metrics", copyToRecord(res.metrics));
  embedStatus(rs, "evaluateres", res.status);
  return rs;
}

/** RecordSet -> EvaluateRes (a sint64 loss from a Python int is accepted and read as a number). */
export function recordSetToEvaluateRes(rs: RecordSet): EvaluateRes {
  return {
    status: extractStatus(rs, "evaluateres"),
    loss: metricOf(rs, "evaluateres.loss", "loss", false),
    numExamples: metricOf(rs, "evaluateres.num_examples", "num_examples", true),
    metrics: requireConfigsScalars(rs, "evaluateres.metrics"),
  };
}

// ---------------------------------------------------------------------------------------------
// GetParameters

/** GetParametersIns -> `C["getparametersins.config"]`. */
export function getParametersInsToRecordSet(ins: GetParametersIns): RecordSet {
  const rs = new RecordSet();
  rs.configsRecords.set("getparametersins.config", copyToRecord(ins.config));
  return rs;
}

/** RecordSet -> GetParametersIns. */
export function recordSetToGetParametersIns(rs: RecordSet): GetParametersIns {
  return { config: requireConfigsScalars(rs, "getparametersins.config") };
}

/** GetParametersRes -> `P["getparametersres.parameters"]`, `C["getparametersres.status"]`. */
export function getParametersResToRecordSet(res: GetParametersRes): RecordSet {
  const rs = new RecordSet();
  rs.parametersRecords.set("getparametersres.parameters", parametersToParametersRecord(res.parameters));
  embedStatus(rs, "getparametersres", res.status);
  return rs;
}

/** RecordSet -> GetParametersRes. */
export function recordSetToGetParametersRes(rs: RecordSet): GetParametersRes {
  return {
    status: extractStatus(rs, "getparametersres"),
    parameters: parametersRecordToParameters(requireParameters(rs, "getparametersres.parameters")),
  };
}

// ---------------------------------------------------------------------------------------------
// GetProperties

/** GetPropertiesIns -> `C["getpropertiesins.config"]`. */
export function getPropertiesInsToRecordSet(ins: GetPropertiesIns): RecordSet {
  const rs = new RecordSet();
  rs.configsRecords.set("getpropertiesins.config", copyToRecord(ins.config));
  return rs;
}

/** RecordSet -> GetPropertiesIns. */
export function recordSetToGetPropertiesIns(rs: RecordSet): GetPropertiesIns {
  return { config: requireConfigsScalars(rs, "getpropertiesins.config") };
}

/** GetPropertiesRes -> `C["getpropertiesres.properties"]`, `C["getpropertiesres.status"]`. */
export function getPropertiesResToRecordSet(res: GetPropertiesRes): RecordSet {
  const rs = new RecordSet();
  rs.configsRecords.set("getpropertiesres.properties", copyToRecord(res.properties));
  embedStatus(rs, "getpropertiesres", res.status);
  return rs;
}

/** RecordSet -> GetPropertiesRes. */
export function recordSetToGetPropertiesRes(rs: RecordSet): GetPropertiesRes {
  return {
    status: extractStatus(rs, "getpropertiesres"),
    properties: requireConfigsScalars(rs, "getpropertiesres.properties"),
  };
}
