/**
 * Legacy types <-> RecordSet with Flower's exact record names (docs/protocol.md, "Legacy records"), and the decode of the
 * real upb-produced 511-byte PushTaskResRequest (test/core/spec-vectors.ts) back into a FitRes.
 */
import { MalformedMessageError } from "../../src/core/errors";
import {
  EMPTY_TENSOR_KEY,
  evaluateInsToRecordSet,
  evaluateResToRecordSet,
  fitInsToRecordSet,
  fitResToRecordSet,
  getParametersInsToRecordSet,
  getParametersResToRecordSet,
  getPropertiesInsToRecordSet,
  getPropertiesResToRecordSet,
  parametersRecordToParameters,
  parametersToParametersRecord,
  recordSetToEvaluateIns,
  recordSetToEvaluateRes,
  recordSetToFitIns,
  recordSetToFitRes,
  recordSetToGetParametersIns,
  recordSetToGetParametersRes,
  recordSetToGetPropertiesIns,
  recordSetToGetPropertiesRes,
} from "../../src/core/records/compat";
import type { FitRes, Parameters } from "../../src/core/records/legacy-types";
import { ndarraysToParameters, parametersToNdarrays } from "../../src/core/records/parameters";
import { messageFromTaskRes, recordSetFromProto, recordSetToProto } from "../../src/core/records/serde";
import { RecordSet } from "../../src/core/records/types";
import { PushTaskResRequest } from "../../src/proto/flwr/proto/fleet";
import { RecordSet as ProtoRecordSet } from "../../src/proto/flwr/proto/recordset";
import { SPEC_PUSH_TASK_RES_HEX } from "./spec-vectors";

const params = (...tensors: number[][]): Parameters => ({
  tensors: tensors.map((t) => new Uint8Array(t)),
  tensorType: "numpy.ndarray",
});

/** Through real protobuf bytes, as the other side would receive it. */
function throughWire(rs: RecordSet): RecordSet {
  return recordSetFromProto(ProtoRecordSet.decode(ProtoRecordSet.encode(recordSetToProto(rs)).finish()));
}

describe("Parameters <-> ParametersRecord", () => {
  test("tensors become keys 0, 1, ... with dtype '', shape [] and stype = tensorType", () => {
    const p = params([1, 2], [3]);
    const record = parametersToParametersRecord(p);
    expect([...record.keys()]).toEqual(["0", "1"]);
    expect(record.get("0")).toEqual({ dtype: "", shape: [], stype: "numpy.ndarray", data: p.tensors[0] });
    expect(record.get("1")!.data).toBe(p.tensors[1]);
    expect(parametersRecordToParameters(record)).toEqual(p);
  });

  test("zero tensors become the single key _empty, and read back as zero tensors", () => {
    const record = parametersToParametersRecord({ tensors: [], tensorType: "numpy.ndarray" });
    expect([...record.keys()]).toEqual([EMPTY_TENSOR_KEY]);
    expect(record.get("_empty")).toEqual({ dtype: "", shape: [], stype: "numpy.ndarray", data: new Uint8Array() });
    expect(parametersRecordToParameters(record)).toEqual({ tensors: [], tensorType: "numpy.ndarray" });
  });

  test("reading keeps key order and takes tensorType from the first non-empty stype", () => {
    const record = new Map([
      ["b", { dtype: "", shape: [], stype: "", data: new Uint8Array([2]) }],
      ["a", { dtype: "", shape: [], stype: "t1", data: new Uint8Array([1]) }],
      ["c", { dtype: "", shape: [], stype: "t2", data: new Uint8Array([3]) }],
    ]);
    const p = parametersRecordToParameters(record);
    expect(p.tensors.map((t) => [...t])).toEqual([[2], [1], [3]]);
    expect(p.tensorType).toBe("t1");
  });
});

describe('exact record names and value types (docs/protocol.md, "Legacy records")', () => {
  test("FitIns", () => {
    const rs = fitInsToRecordSet({ parameters: params([1]), config: { lr: 0.1, epochs: 2n, tag: "x" } });
    expect([...rs.parametersRecords.keys()]).toEqual(["fitins.parameters"]);
    expect([...rs.configsRecords.keys()]).toEqual(["fitins.config"]);
    expect(rs.metricsRecords.size).toBe(0);
    // sint64 reads back as a number when it is a safe integer.
    expect(recordSetToFitIns(throughWire(rs))).toEqual({
      parameters: params([1]),
      config: { lr: 0.1, epochs: 2, tag: "x" },
    });
  });

  test("FitRes: num_examples and code are sint64, metrics and status are ConfigsRecords", () => {
    const res: FitRes = {
      status: { code: 0, message: "Success" },
      parameters: params([9, 9]),
      numExamples: 50000,
      metrics: { acc: 0.5, n: 3n, ok: true },
    };
    const rs = fitResToRecordSet(res);
    expect([...rs.parametersRecords.keys()]).toEqual(["fitres.parameters"]);
    expect(rs.metricsRecords.get("fitres.num_examples")).toEqual({ num_examples: 50000n });
    expect(rs.configsRecords.get("fitres.metrics")).toEqual({ acc: 0.5, n: 3n, ok: true });
    expect(rs.configsRecords.get("fitres.status")).toEqual({ code: 0n, message: "Success" });
    const proto = recordSetToProto(rs);
    expect(proto.metrics.get("fitres.num_examples")!.data.get("num_examples")).toEqual({ sint64: 50000n });
    expect(proto.configs.get("fitres.status")!.data.get("code")).toEqual({ sint64: 0n });
    expect(recordSetToFitRes(throughWire(rs))).toEqual({ ...res, metrics: { acc: 0.5, n: 3, ok: true } });
  });

  test("EvaluateIns and EvaluateRes: loss is a double", () => {
    const ins = { parameters: params(), config: {} };
    const insRs = evaluateInsToRecordSet(ins);
    expect([...insRs.parametersRecords.keys()]).toEqual(["evaluateins.parameters"]);
    expect([...insRs.configsRecords.keys()]).toEqual(["evaluateins.config"]);
    expect(recordSetToEvaluateIns(throughWire(insRs))).toEqual(ins);

    const res = { status: { code: 4, message: "nope" }, loss: 2, numExamples: 10, metrics: { m: "s" } };
    const rs = evaluateResToRecordSet(res);
    expect(rs.metricsRecords.get("evaluateres.loss")).toEqual({ loss: 2 });
    expect(recordSetToProto(rs).metrics.get("evaluateres.loss")!.data.get("loss")).toEqual({ double: 2 });
    expect(rs.metricsRecords.get("evaluateres.num_examples")).toEqual({ num_examples: 10n });
    expect([...rs.configsRecords.keys()].sort()).toEqual(["evaluateres.metrics", "evaluateres.status"]);
    expect(recordSetToEvaluateRes(throughWire(rs))).toEqual(res);
  });

  test("EvaluateRes written by Python with an int loss (sint64) reads as a number", () => {
    const rs = evaluateResToRecordSet({ status: { code: 0, message: "" }, loss: 1, numExamples: 1, metrics: {} });
    rs.metricsRecords.set("evaluateres.loss", { loss: 3n });
    expect(recordSetToEvaluateRes(rs).loss).toBe(3);
  });

  test("GetParametersIns/Res and GetPropertiesIns/Res", () => {
    const gpIns = getParametersInsToRecordSet({ config: { a: 1 } });
    expect([...gpIns.configsRecords.keys()]).toEqual(["getparametersins.config"]);
    expect(recordSetToGetParametersIns(throughWire(gpIns))).toEqual({ config: { a: 1 } });

    const gpRes = { status: { code: 2, message: "Client does not implement `get_parameters`" }, parameters: params() };
    const gpResRs = getParametersResToRecordSet({ ...gpRes, parameters: { tensors: [], tensorType: "" } });
    expect([...gpResRs.parametersRecords.keys()]).toEqual(["getparametersres.parameters"]);
    expect([...gpResRs.configsRecords.keys()]).toEqual(["getparametersres.status"]);
    expect(recordSetToGetParametersRes(throughWire(gpResRs))).toEqual({
      status: gpRes.status,
      parameters: { tensors: [], tensorType: "" },
    });

    const propIns = getPropertiesInsToRecordSet({ config: { q: "x" } });
    expect([...propIns.configsRecords.keys()]).toEqual(["getpropertiesins.config"]);
    expect(recordSetToGetPropertiesIns(throughWire(propIns))).toEqual({ config: { q: "x" } });

    const propRes = { status: { code: 0, message: "Success" }, properties: { cores: 8n, gpu: false } };
    const propResRs = getPropertiesResToRecordSet(propRes);
    expect([...propResRs.configsRecords.keys()]).toEqual(["getpropertiesres.properties", "getpropertiesres.status"]);
    expect(recordSetToGetPropertiesRes(throughWire(propResRs))).toEqual({
      status: propRes.status,
      properties: { cores: 8, gpu: false },
    });
  });
});

describe("reading legacy values back", () => {
  test("a sint64 beyond 2^53 stays a bigint", () => {
    const rs = fitInsToRecordSet({ parameters: params(), config: { big: 2n ** 60n, neg: -(2n ** 53n) + 1n } });
    expect(recordSetToFitIns(throughWire(rs)).config).toEqual({ big: 2n ** 60n, neg: -(2 ** 53) + 1 });
  });

  test("list values are refused, naming the record and key", () => {
    const rs = fitInsToRecordSet({ parameters: params(), config: {} });
    rs.configsRecords.set("fitins.config", { lrs: [0.1, 0.2] });
    expect(() => recordSetToFitIns(rs)).toThrow(MalformedMessageError);
    expect(() => recordSetToFitIns(rs)).toThrow(/ConfigsRecord "fitins.config" key "lrs"/);
  });

  test("missing records and fields are refused, naming them", () => {
    expect(() => recordSetToFitIns(new RecordSet())).toThrow(/no ParametersRecord "fitins.parameters"/);
    const res = fitResToRecordSet({
      status: { code: 0, message: "" },
      parameters: params(),
      numExamples: 1,
      metrics: {},
    });
    res.metricsRecords.set("fitres.num_examples", {});
    expect(() => recordSetToFitRes(res)).toThrow(/MetricsRecord "fitres.num_examples" has no "num_examples"/);
    res.metricsRecords.set("fitres.num_examples", { num_examples: 1.5 });
    expect(() => recordSetToFitRes(res)).toThrow(/must be an integer/);
    res.metricsRecords.delete("fitres.num_examples");
    expect(() => recordSetToFitRes(res)).toThrow(/no MetricsRecord "fitres.num_examples"/);
    const status = getPropertiesResToRecordSet({ status: { code: 0, message: "" }, properties: {} });
    status.configsRecords.set("getpropertiesres.status", { code: 0n, message: 5n });
    expect(() => recordSetToGetPropertiesRes(status)).toThrow(/"message" must be a string/);
    expect(() => recordSetToGetParametersIns(new RecordSet())).toThrow(/no ConfigsRecord "getparametersins.config"/);
  });

  test("non-integer num_examples or status code are refused when writing", () => {
    const base = { status: { code: 0, message: "" }, parameters: params(), numExamples: 1, metrics: {} };
    expect(() => fitResToRecordSet({ ...base, numExamples: 2.5 })).toThrow(MalformedMessageError);
    expect(() => fitResToRecordSet({ ...base, status: { code: 0.5, message: "" } })).toThrow(MalformedMessageError);
  });
});

describe("the 511-byte PushTaskResRequest (upb output) decodes to the FitRes it describes", () => {
  test("decode -> messageFromTaskRes -> recordSetToFitRes -> parametersToNdarrays", () => {
    const request = PushTaskResRequest.decode(Buffer.from(SPEC_PUSH_TASK_RES_HEX, "hex"));
    expect(request.taskResList).toHaveLength(1);
    const message = messageFromTaskRes(request.taskResList[0]!);
    expect(message.metadata).toEqual({
      runId: 1234567890123456789n,
      messageId: "",
      srcNodeId: -5555555555555555555n,
      dstNodeId: 0n,
      replyToMessage: "4f1c2b4e-9c7e-4a59-9a8e-2b1d0c3e4f5a",
      groupId: "1",
      ttl: 3599.25,
      messageType: "train",
      createdAt: 1720000000.5,
    });
    const fitRes = recordSetToFitRes(message.content!);
    expect(fitRes.numExamples).toBe(50000);
    expect(fitRes.status).toEqual({ code: 0, message: "Success" });
    expect(fitRes.metrics).toEqual({ train_accuracy: 0.5, train_loss: 1.25, val_accuracy: 0.25, val_loss: 2.0 });
    expect(fitRes.parameters.tensorType).toBe("numpy.ndarray");
    const arrays = parametersToNdarrays(fitRes.parameters);
    expect(arrays).toEqual([{ dtype: "float32", shape: [2], data: new Float32Array([1.5, -2]) }]);
    // And writing it back with our own legacy helpers gives the same parameters bytes.
    expect(ndarraysToParameters(arrays)).toEqual({
      tensors: [new Uint8Array(fitRes.parameters.tensors[0]!)],
      tensorType: "numpy.ndarray",
    });
  });
});
