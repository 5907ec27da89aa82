/**
 * Domain <-> wire conversions (serde.ts), checked on the proto objects and through real
 * protobuf bytes with the generated encoder/decoder.
 */
import { MalformedMessageError } from "../../src/core/errors";
import {
  createReply,
  messageFromTaskIns,
  messageFromTaskRes,
  messageToTaskIns,
  messageToTaskRes,
  recordSetFromProto,
  recordSetToProto,
  recordToScalarMap,
  scalarMapToRecord,
} from "../../src/core/records/serde";
import { RecordSet, type Message, type Metadata } from "../../src/core/records/types";
import { PullTaskInsResponse, PushTaskResRequest } from "../../src/proto/flwr/proto/fleet";
import { ParametersRecord, RecordSet as ProtoRecordSet } from "../../src/proto/flwr/proto/recordset";
import { TaskIns, TaskRes } from "../../src/proto/flwr/proto/task";
import { Scalar } from "../../src/proto/flwr/proto/transport";

const NODE_ID = -5555555555555555555n;
const RUN_ID = 1234567890123456789n;

function metadata(overrides: Partial<Metadata> = {}): Metadata {
  return {
    runId: RUN_ID,
    messageId: "",
    srcNodeId: 0n,
    dstNodeId: NODE_ID,
    replyToMessage: "",
    groupId: "3",
    ttl: 3600,
    messageType: "train",
    createdAt: 1720000000.5,
    ...overrides,
  };
}

/** Encodes and decodes with the generated code, as a real peer would see it. */
function throughWire(rs: RecordSet): RecordSet {
  const bytes = ProtoRecordSet.encode(recordSetToProto(rs)).finish();
  return recordSetFromProto(ProtoRecordSet.decode(bytes));
}

describe("recordSetToProto", () => {
  test("MetricsRecord values are typed as Flower types them", () => {
    const rs = new RecordSet();
    rs.metricsRecords.set("m", {
      d: 0.5,
      i: 7n,
      t: true,
      f: false,
      dl: [1, 2.5],
      il: [1n, -2n],
      bl: [true, false],
      empty: [],
      nan: Number.NaN,
    } as never);
    const data = recordSetToProto(rs).metrics.get("m")!.data;
    expect(data.get("d")).toEqual({ double: 0.5 });
    expect(data.get("i")).toEqual({ sint64: 7n });
    expect(data.get("t")).toEqual({ sint64: 1n });
    expect(data.get("f")).toEqual({ sint64: 0n });
    expect(data.get("dl")).toEqual({ doubleList: { vals: [1, 2.5] } });
    expect(data.get("il")).toEqual({ sint64List: { vals: [1n, -2n] } });
    expect(data.get("bl")).toEqual({ sint64List: { vals: [1n, 0n] } });
    expect(data.get("empty")).toEqual({ doubleList: { vals: [] } });
    expect(data.get("nan")!.double).toBeNaN();
  });

  test("ConfigsRecord values are typed as Flower types them", () => {
    const rs = new RecordSet();
    const bytes = new Uint8Array([1, 2]);
    rs.configsRecords.set("c", {
      d: 1,
      i: -1n,
      b: false,
      s: "",
      y: bytes,
      dl: [0.25],
      il: [0n],
      bl: [true],
      sl: ["a", ""],
      yl: [bytes],
      empty: [],
    });
    const data = recordSetToProto(rs).configs.get("c")!.data;
    expect(data.get("d")).toEqual({ double: 1 });
    expect(data.get("i")).toEqual({ sint64: -1n });
    expect(data.get("b")).toEqual({ bool: false });
    expect(data.get("s")).toEqual({ string: "" });
    expect([...data.get("y")!.bytes!]).toEqual([1, 2]);
    expect(data.get("dl")).toEqual({ doubleList: { vals: [0.25] } });
    expect(data.get("il")).toEqual({ sint64List: { vals: [0n] } });
    expect(data.get("bl")).toEqual({ boolList: { vals: [true] } });
    expect(data.get("sl")).toEqual({ stringList: { vals: ["a", ""] } });
    expect(data.get("yl")!.bytesList!.vals.map((v) => [...v])).toEqual([[1, 2]]);
    expect(data.get("empty")).toEqual({ boolList: { vals: [] } });
  });

  const refusals: Array<[string, (rs: RecordSet) => void, RegExp]> = [
    ["mixed metrics list", (rs) => rs.metricsRecords.set("m", { x: [1, 2n] as never }), /MetricsRecord "m" key "x"/],
    ["string metric", (rs) => rs.metricsRecords.set("m", { x: "s" as never }), /not allowed in a MetricsRecord/],
    ["mixed configs list", (rs) => rs.configsRecords.set("c", { x: ["a", 1] as never }), /ConfigsRecord "c" key "x"/],
    ["null config", (rs) => rs.configsRecords.set("c", { x: null as never }), /null is not allowed/],
    ["nested list", (rs) => rs.configsRecords.set("c", { x: [[1]] as never }), /not allowed in a ConfigsRecord/],
    ["int64 overflow", (rs) => rs.metricsRecords.set("m", { x: 2n ** 63n }), /signed 64-bit/],
    ["int64 overflow in a list", (rs) => rs.configsRecords.set("c", { x: [-(2n ** 63n) - 1n] }), /signed 64-bit/],
    ["record not a Map", (rs) => rs.parametersRecords.set("p", {} as never), /must be a Map/],
    [
      "non-int32 shape",
      (rs) =>
        rs.parametersRecords.set(
          "p",
          new Map([["0", { dtype: "", shape: [2 ** 31], stype: "", data: new Uint8Array() }]]),
        ),
      /not a list of int32/,
    ],
  ];

  test.each(refusals)("refuses %s with MalformedMessageError naming the problem", (_name, fill, message) => {
    const rs = new RecordSet();
    fill(rs);
    expect(() => recordSetToProto(rs)).toThrow(MalformedMessageError);
    expect(() => recordSetToProto(rs)).toThrow(message);
  });

  test("ParametersRecord keeps its order and shares the data bytes", () => {
    const data = new Uint8Array([5, 6, 7]);
    const rs = new RecordSet();
    rs.parametersRecords.set(
      "p",
      new Map([
        ["z", { dtype: "float32", shape: [3, 1], stype: "numpy.ndarray", data }],
        ["a", { dtype: "", shape: [], stype: "", data: new Uint8Array() }],
      ]),
    );
    const proto = recordSetToProto(rs).parameters.get("p")!;
    expect(proto.dataKeys).toEqual(["z", "a"]);
    expect(proto.dataValues[0]).toMatchObject({ dtype: "float32", shape: [3, 1], stype: "numpy.ndarray" });
    expect(proto.dataValues[0]!.data.buffer).toBe(data.buffer);
  });
});

describe("recordSetFromProto", () => {
  test("every value kind survives real protobuf bytes, with NaN, -0 and int64 extremes", () => {
    const rs = new RecordSet();
    rs.parametersRecords.set(
      "p",
      new Map([
        ["2", { dtype: "int8", shape: [2], stype: "numpy.ndarray", data: new Uint8Array([1, 255]) }],
        ["1", { dtype: "", shape: [], stype: "x", data: new Uint8Array() }],
      ]),
    );
    rs.metricsRecords.set("m", {
      d: -0,
      nan: Number.NaN,
      inf: Number.POSITIVE_INFINITY,
      min: -(2n ** 63n),
      max: 2n ** 63n - 1n,
      zero: 0,
      dl: [0, 1],
      il: [],
    });
    rs.configsRecords.set("c", {
      b: false,
      s: "",
      y: new Uint8Array(),
      sl: ["", "ü"],
      yl: [new Uint8Array([0])],
      bl: [false],
      z: 0n,
    });
    rs.configsRecords.set("empty", {});
    const back = throughWire(rs);
    expect(back).toEqual(rs);
    expect([...back.parametersRecords.get("p")!.keys()]).toEqual(["2", "1"]);
    expect(Object.is(back.metricsRecords.get("m")!["d"], -0)).toBe(true);
    // [] in a MetricsRecord becomes a double_list and reads back as an empty number list.
    expect(back.metricsRecords.get("m")!["il"]).toEqual([]);
    expect(back.configsRecords.get("empty")).toEqual({});
  });

  test("decoded bytes are plain Uint8Array views, not Buffers", () => {
    const rs = new RecordSet();
    rs.configsRecords.set("c", { y: new Uint8Array([1]) });
    const y = throughWire(rs).configsRecords.get("c")!["y"];
    expect(y).toBeInstanceOf(Uint8Array);
    expect(Buffer.isBuffer(y)).toBe(false);
  });

  test("a key named __proto__ stays an ordinary own property", () => {
    const proto = ProtoRecordSet.fromPartial({
      configs: new Map([["c", { data: new Map([["__proto__", { string: "x" }]]) }]]),
    });
    const record = recordSetFromProto(proto).configsRecords.get("c")!;
    expect(Object.keys(record)).toEqual(["__proto__"]);
    expect(Object.getPrototypeOf(record)).toBe(Object.prototype);
  });

  test("values without a oneof member, and inconsistent ParametersRecords, are refused", () => {
    const cases: ProtoRecordSet[] = [
      ProtoRecordSet.fromPartial({ metrics: new Map([["m", { data: new Map([["x", {}]]) }]]) }),
      ProtoRecordSet.fromPartial({ configs: new Map([["c", { data: new Map([["x", {}]]) }]]) }),
      ProtoRecordSet.fromPartial({ configs: new Map([["c", { data: new Map([["x", { bool: true, double: 1 }]]) }]]) }),
      ProtoRecordSet.fromPartial({
        parameters: new Map([["p", ParametersRecord.fromPartial({ dataKeys: ["a", "b"], dataValues: [{}] })]]),
      }),
      ProtoRecordSet.fromPartial({
        parameters: new Map([["p", ParametersRecord.fromPartial({ dataKeys: ["a", "a"], dataValues: [{}, {}] })]]),
      }),
    ];
    for (const proto of cases) expect(() => recordSetFromProto(proto)).toThrow(MalformedMessageError);
  });
});

describe("Message <-> TaskIns / TaskRes", () => {
  test('messageToTaskIns follows the driver\'s layout (docs/protocol.md, "Driver")', () => {
    const content = new RecordSet();
    const t = messageToTaskIns({ metadata: metadata({ messageId: "ignored" }), content });
    expect(t).toEqual({
      taskId: "",
      groupId: "3",
      runId: RUN_ID,
      task: {
        producer: { nodeId: 0n, anonymous: true },
        consumer: { nodeId: NODE_ID, anonymous: false },
        createdAt: 1720000000.5,
        deliveredAt: "",
        pushedAt: 0,
        ttl: 3600,
        ancestry: [],
        taskType: "train",
        recordset: { parameters: new Map(), metrics: new Map(), configs: new Map() },
        error: undefined,
      },
    });
    // The empty RecordSet is present on the wire (tag 9, length 0), or a SuperNode drops it.
    const bytes = TaskIns.encode(t).finish();
    expect(TaskIns.decode(bytes).task!.recordset).toBeDefined();
  });

  test('messageToTaskRes follows the SuperNode\'s layout (docs/protocol.md, "Messages and replies")', () => {
    const md = metadata({ srcNodeId: NODE_ID, dstNodeId: 0n, replyToMessage: "abc", ttl: 10.5 });
    const t = messageToTaskRes({ metadata: md, error: { code: 2, reason: "boom" } });
    expect(t.taskId).toBe("");
    expect(t.task!.producer).toEqual({ nodeId: NODE_ID, anonymous: false });
    expect(t.task!.consumer).toEqual({ nodeId: 0n, anonymous: true });
    expect(t.task!.ancestry).toEqual(["abc"]);
    expect(t.task!.recordset).toBeUndefined();
    expect(t.task!.error).toEqual({ code: 2n, reason: "boom" });
    expect(t.task!.pushedAt).toBe(0);
    expect(t.task!.deliveredAt).toBe("");
  });

  test("a message with both or neither of content and error is refused", () => {
    const both: Message = { metadata: metadata(), content: new RecordSet(), error: { code: 0, reason: "" } };
    const neither: Message = { metadata: metadata() };
    for (const m of [both, neither]) {
      expect(() => messageToTaskIns(m)).toThrow(MalformedMessageError);
      expect(() => messageToTaskRes(m)).toThrow(MalformedMessageError);
    }
  });

  test("out-of-range ids are refused before encoding", () => {
    const m: Message = { metadata: metadata({ runId: 2n ** 63n }), content: new RecordSet() };
    expect(() => messageToTaskIns(m)).toThrow(/run_id/);
  });

  test('messageFromTaskIns maps every metadata field (docs/protocol.md, "Messages and replies") through real bytes', () => {
    const rs = new RecordSet();
    rs.configsRecords.set("fitins.config", { epochs: 1n });
    const sent = messageToTaskIns({ metadata: metadata({ replyToMessage: "r" }), content: rs });
    // The SuperLink assigns the task id before a SuperNode pulls it.
    const pulled = PullTaskInsResponse.decode(
      PullTaskInsResponse.encode({ reconnect: undefined, taskInsList: [{ ...sent, taskId: "tid-1" }] }).finish(),
    ).taskInsList[0]!;
    const m = messageFromTaskIns(pulled);
    expect(m.metadata).toEqual(
      metadata({ messageId: "tid-1", srcNodeId: 0n, dstNodeId: NODE_ID, replyToMessage: "r" }),
    );
    expect(m.content).toEqual(rs);
    expect(m.error).toBeUndefined();
  });

  test("messageFromTaskRes reads an error result", () => {
    const res = TaskRes.fromPartial({
      taskId: "t",
      groupId: "",
      runId: 1n,
      task: { producer: { nodeId: 5n }, error: { code: 3n, reason: "Node Unavailable" }, ancestry: ["x", "y"] },
    });
    const m = messageFromTaskRes(res);
    expect(m.error).toEqual({ code: 3, reason: "Node Unavailable" });
    expect(m.content).toBeUndefined();
    expect(m.metadata.srcNodeId).toBe(5n);
    expect(m.metadata.dstNodeId).toBe(0n);
    expect(m.metadata.replyToMessage).toBe("x");
  });

  test("a task that is missing, or carries both or neither payload, is refused", () => {
    expect(() => messageFromTaskIns(TaskIns.fromPartial({ taskId: "t" }))).toThrow(/has no task/);
    expect(() => messageFromTaskIns(TaskIns.fromPartial({ task: {} }))).toThrow(/exactly one/);
    expect(() => messageFromTaskRes(TaskRes.fromPartial({ task: { recordset: {}, error: {} } }))).toThrow(
      /exactly one/,
    );
  });

  test("a reply round-trips: TaskIns -> Message -> createReply -> TaskRes -> bytes -> Message", () => {
    const incoming = messageFromTaskIns({
      ...messageToTaskIns({ metadata: metadata(), content: new RecordSet() }),
      taskId: "in-1",
    });
    const content = new RecordSet();
    content.metricsRecords.set("m", { acc: 0.75 });
    const reply = createReply(incoming, content, 1720000010.5);
    const wire = PushTaskResRequest.encode({ taskResList: [messageToTaskRes(reply)] }).finish();
    const back = messageFromTaskRes(PushTaskResRequest.decode(wire).taskResList[0]!);
    expect(back.metadata).toEqual({ ...reply.metadata, messageId: "" });
    expect(back.content).toEqual(content);
  });
});

describe("createReply", () => {
  const incoming: Message = {
    metadata: metadata({ messageId: "m-1", srcNodeId: 0n, dstNodeId: NODE_ID, ttl: 100, createdAt: 1000 }),
    content: new RecordSet(),
  };

  test("swaps src/dst, links reply_to, clears message_id and spends the elapsed time from the ttl", () => {
    const content = new RecordSet();
    const reply = createReply(incoming, content, 1012.5);
    expect(reply.metadata).toEqual({
      runId: RUN_ID,
      messageId: "",
      srcNodeId: NODE_ID,
      dstNodeId: 0n,
      replyToMessage: "m-1",
      groupId: "3",
      ttl: 87.5,
      messageType: "train",
      createdAt: 1012.5,
    });
    expect(reply.content).toBe(content);
    expect(reply.error).toBeUndefined();
  });

  test("builds an error reply from a MessageError", () => {
    const reply = createReply(incoming, { code: 2, reason: "<class 'Error'>:<'x'>" }, 1001);
    expect(reply.error).toEqual({ code: 2, reason: "<class 'Error'>:<'x'>" });
    expect(reply.content).toBeUndefined();
    expect(reply.metadata.ttl).toBe(99);
  });

  test("defaults to the current clock", () => {
    const before = Date.now() / 1000;
    const reply = createReply(incoming, new RecordSet());
    const after = Date.now() / 1000;
    expect(reply.metadata.createdAt).toBeGreaterThanOrEqual(before);
    expect(reply.metadata.createdAt).toBeLessThanOrEqual(after);
    expect(reply.metadata.ttl).toBeCloseTo(100 - (reply.metadata.createdAt - 1000), 6);
  });
});

describe("Scalar maps (override_config)", () => {
  test("map<string, Scalar> <-> plain object, through real bytes", () => {
    const record = { lr: 0.1, epochs: 3n, verbose: true, name: "x", blob: new Uint8Array([7]) };
    const map = recordToScalarMap(record);
    expect(map.get("lr")).toEqual({ double: 0.1 });
    expect(map.get("epochs")).toEqual({ sint64: 3n });
    expect(map.get("verbose")).toEqual({ bool: true });
    expect(map.get("name")).toEqual({ string: "x" });
    const decoded = new Map([...map].map(([k, v]) => [k, Scalar.decode(Scalar.encode(v).finish())] as const));
    expect(scalarMapToRecord(decoded)).toEqual(record);
  });

  test("false, 0 and empty string survive (oneof members are always written)", () => {
    const map = recordToScalarMap({ f: false, z: 0, e: "" });
    const decoded = new Map([...map].map(([k, v]) => [k, Scalar.decode(Scalar.encode(v).finish())] as const));
    expect(scalarMapToRecord(decoded)).toEqual({ f: false, z: 0, e: "" });
  });

  test("unset or unsupported scalars are refused", () => {
    expect(() => scalarMapToRecord(new Map([["k", Scalar.fromPartial({})]]))).toThrow(MalformedMessageError);
    expect(() => recordToScalarMap({ k: [1] as never })).toThrow(MalformedMessageError);
    expect(() => recordToScalarMap({ k: 2n ** 64n })).toThrow(/signed 64-bit/);
  });
});
