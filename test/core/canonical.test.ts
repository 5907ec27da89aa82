/**
 * The deterministic encoder against the upb-produced vectors (test/core/spec-vectors.ts), and its
 * rules (docs/protocol.md, "Canonical encoding") checked byte by byte and by decoding with the generated ts-proto code.
 */
import { createHmac } from "node:crypto";
import { MalformedMessageError } from "../../src/core/errors";
import { fitResToRecordSet } from "../../src/core/records/compat";
import { ndarraysToParameters } from "../../src/core/records/parameters";
import { messageToTaskRes } from "../../src/core/records/serde";
import { canonicalEncode, hasPrefixRelatedMapKeys, type MapOrder } from "../../src/core/wire/canonical";
import {
  CreateNodeRequest,
  DeleteNodeRequest,
  PingRequest,
  PullTaskInsRequest,
  PushTaskResRequest,
} from "../../src/proto/flwr/proto/fleet";
import { ParametersRecord, type ConfigsRecordValue } from "../../src/proto/flwr/proto/recordset";
import { GetRunRequest } from "../../src/proto/flwr/proto/run";
import type { TaskRes } from "../../src/proto/flwr/proto/task";
import { SPEC_PUSH_TASK_RES_HEX, SPEC_PUSH_TASK_RES_TOKEN, SPEC_HMAC_KEY } from "./spec-vectors";

const NODE_ID = -5555555555555555555n;
const RUN_ID = 1234567890123456789n;

const hex = (b: Uint8Array): string => Buffer.from(b).toString("hex");

/** base64url with '=' padding, as Flower writes auth tokens. */
function authToken(key: string, bytes: Uint8Array): string {
  return createHmac("sha256", Buffer.from(key, "ascii"))
    .update(bytes)
    .digest("base64")
    .replace(/\+/g, "-")
    .replace(/\//g, "_");
}

/** Tag + varint length + body, for building expected bytes by hand. */
function ld(tagHex: string, bodyHex: string): string {
  let n = bodyHex.length / 2;
  let len = "";
  do {
    let byte = n & 0x7f;
    n >>>= 7;
    if (n !== 0) byte |= 0x80;
    len += byte.toString(16).padStart(2, "0");
  } while (n !== 0);
  return tagHex + len + bodyHex;
}

/** A PushTaskResRequest whose only content is one ConfigsRecord named "c". */
function pushWithConfigs(data: Map<string, ConfigsRecordValue>): PushTaskResRequest {
  return PushTaskResRequest.fromPartial({
    taskResList: [{ task: { recordset: { configs: new Map([["c", { data }]]) } } }],
  });
}

/** Expected bytes of pushWithConfigs for a given ConfigsRecord encoding. */
function expectedPushWithConfigs(configsRecordHex: string): string {
  const entry = ld("1a", ld("0a", "63") + ld("12", configsRecordHex));
  return ld("0a", ld("22", ld("4a", entry)));
}

describe("upb vectors (test/core/spec-vectors.ts)", () => {
  test("PingRequest, PullTaskInsRequest and GetRunRequest encode as upb does, with the vectors' tokens", () => {
    const key = SPEC_HMAC_KEY;
    const ping = canonicalEncode(
      "PingRequest",
      PingRequest.fromPartial({ node: { nodeId: NODE_ID }, pingInterval: 30 }),
    );
    expect(hex(ping)).toBe("0a0b08c5e3b1adfb95a6999a01110000000000003e40");
    expect(authToken(key, ping)).toBe("8FGlk0sFj_PI_izTh0gyy6Wxy4xaBs2V4IZR1mpaRrk=");

    const pull = canonicalEncode("PullTaskInsRequest", PullTaskInsRequest.fromPartial({ node: { nodeId: NODE_ID } }));
    expect(hex(pull)).toBe("0a0b08c5e3b1adfb95a6999a01");
    expect(authToken(key, pull)).toBe("CfPrlWmiLorjy-NTcGetvdqw5Zqe-WsaTm0l67bW8b4=");

    const getRun = canonicalEncode("GetRunRequest", GetRunRequest.fromPartial({ runId: RUN_ID }));
    expect(hex(getRun)).toBe("08aa84ccde8fbd88a222");
    expect(authToken(key, getRun)).toBe("Ok0arpDUN5kEKdjj_zFC9K4I-MwMPxvQR38kAFBg7cg=");
  });

  test("ConfigsRecord {a:1, b:3, ab:2} orders its keys ab, a, b (upb v25.2)", () => {
    const data = new Map<string, ConfigsRecordValue>([
      ["a", { sint64: 1n }],
      ["b", { sint64: 3n }],
      ["ab", { sint64: 2n }],
    ]);
    const upbRecord = "0a080a02616212021004" + "0a070a016112021002" + "0a070a016212021006";
    expect(hex(canonicalEncode("PushTaskResRequest", pushWithConfigs(data)))).toBe(expectedPushWithConfigs(upbRecord));
    const lexRecord = "0a070a016112021002" + "0a080a02616212021004" + "0a070a016212021006";
    expect(hex(canonicalEncode("PushTaskResRequest", pushWithConfigs(data), "lexicographic"))).toBe(
      expectedPushWithConfigs(lexRecord),
    );
  });

  test("the 511-byte PushTaskResRequest, built from its described content, matches upb and its token", () => {
    const message = {
      metadata: {
        runId: RUN_ID,
        messageId: "",
        srcNodeId: NODE_ID,
        dstNodeId: 0n,
        replyToMessage: "4f1c2b4e-9c7e-4a59-9a8e-2b1d0c3e4f5a",
        groupId: "1",
        ttl: 3599.25,
        messageType: "train",
        createdAt: 1720000000.5,
      },
      content: fitResToRecordSet({
        status: { code: 0, message: "Success" },
        parameters: ndarraysToParameters([{ dtype: "float32", shape: [2], data: new Float32Array([1.5, -2.0]) }]),
        numExamples: 50000,
        metrics: { train_accuracy: 0.5, train_loss: 1.25, val_accuracy: 0.25, val_loss: 2.0 },
      }),
    };
    const request: PushTaskResRequest = { taskResList: [messageToTaskRes(message)] };
    const bytes = canonicalEncode("PushTaskResRequest", request);
    expect(bytes.length).toBe(511);
    expect(hex(bytes)).toBe(SPEC_PUSH_TASK_RES_HEX);
    expect(authToken(SPEC_HMAC_KEY, bytes)).toBe(SPEC_PUSH_TASK_RES_TOKEN);
    expect(hasPrefixRelatedMapKeys("PushTaskResRequest", request)).toBe(false);
    expect(hex(canonicalEncode("PushTaskResRequest", request, "lexicographic"))).toBe(SPEC_PUSH_TASK_RES_HEX);
  });

  test("re-encoding the decoded 511-byte request reproduces it exactly", () => {
    const decoded = PushTaskResRequest.decode(Buffer.from(SPEC_PUSH_TASK_RES_HEX, "hex"));
    expect(hex(canonicalEncode("PushTaskResRequest", decoded))).toBe(SPEC_PUSH_TASK_RES_HEX);
  });
});

describe('encoding rules (docs/protocol.md, "Canonical encoding")', () => {
  const encodeConfigs = (data: Map<string, ConfigsRecordValue>, order: MapOrder = "upb"): string =>
    hex(canonicalEncode("PushTaskResRequest", pushWithConfigs(data), order));

  test("implicit scalars are omitted at zero, but -0.0 is written", () => {
    expect(hex(canonicalEncode("CreateNodeRequest", CreateNodeRequest.fromPartial({ pingInterval: 0 })))).toBe("");
    expect(hex(canonicalEncode("CreateNodeRequest", { pingInterval: -0 }))).toBe("090000000000000080");
    expect(hex(canonicalEncode("CreateNodeRequest", { pingInterval: Number.NaN }))).toBe("09000000000000f87f");
    expect(hex(canonicalEncode("GetRunRequest", { runId: 0n }))).toBe("");
    // node_id 0 and anonymous false are omitted, but the (empty) set Node is still written.
    expect(hex(canonicalEncode("DeleteNodeRequest", DeleteNodeRequest.fromPartial({ node: {} })))).toBe("0a00");
    expect(hex(canonicalEncode("DeleteNodeRequest", { node: undefined }))).toBe("");
  });

  test("an empty RecordSet, once set, is written as an empty submessage", () => {
    const request = PushTaskResRequest.fromPartial({ taskResList: [{ task: { recordset: {} } }] });
    expect(hex(canonicalEncode("PushTaskResRequest", request))).toBe(ld("0a", ld("22", "4a00")));
  });

  test("oneof members are written even when zero or empty; empty packed lists are omitted", () => {
    const cases: Array<[ConfigsRecordValue, string]> = [
      [{ double: 0 }, "090000000000000000"],
      [{ sint64: 0n }, "1000"],
      [{ bool: false }, "1800"],
      [{ string: "" }, "2200"],
      [{ bytes: Buffer.alloc(0) }, "2a00"],
      [{ doubleList: { vals: [] } }, "aa0100"],
      [{ sint64List: { vals: [] } }, "b20100"],
      [{ boolList: { vals: [] } }, "ba0100"],
      [{ stringList: { vals: [] } }, "c20100"],
      [{ bytesList: { vals: [] } }, "ca0100"],
      [{ boolList: { vals: [true, false] } }, "ba0104" + "0a020100"],
      [{ sint64List: { vals: [-1n, 1n] } }, "b20104" + "0a020102"],
      [{ stringList: { vals: ["", "x"] } }, "c20105" + "0a00" + "0a0178"],
    ];
    for (const [value, valueHex] of cases) {
      const record = ld("0a", ld("0a", "6b") + ld("12", valueHex));
      expect(encodeConfigs(new Map([["k", value]]))).toBe(expectedPushWithConfigs(record));
    }
  });

  test("map entries always carry key and value, even when both are empty", () => {
    // Key "" and a value with no member selected: `0a 00` then `12 00`.
    const record = ld("0a", "0a00" + "1200");
    expect(encodeConfigs(new Map([["", {}]]))).toBe(expectedPushWithConfigs(record));
  });

  test("upb puts a longer key before its prefix; lexicographic puts it after", () => {
    const data = new Map<string, ConfigsRecordValue>(
      ["b", "", "z", "a", "ab"].map((k) => [k, { bool: true }] as [string, ConfigsRecordValue]),
    );
    const order = (encoded: string): string[] => {
      const decoded = PushTaskResRequest.decode(Buffer.from(encoded, "hex"));
      return [...decoded.taskResList[0]!.task!.recordset!.configs.get("c")!.data.keys()];
    };
    expect(order(encodeConfigs(data))).toEqual(["ab", "a", "b", "z", ""]);
    expect(order(encodeConfigs(data, "lexicographic"))).toEqual(["", "a", "ab", "b", "z"]);
  });

  test("keys compare as unsigned UTF-8 bytes, not UTF-16 code units", () => {
    // U+FF5E (ef bd 9e) sorts before U+1F600 (f0 9f 98 80) in UTF-8 but after it in UTF-16.
    const data = new Map<string, ConfigsRecordValue>([
      ["\u{1F600}", { sint64: 1n }],
      ["\uFF5E", { sint64: 2n }],
    ]);
    const decoded = PushTaskResRequest.decode(Buffer.from(encodeConfigs(data), "hex"));
    expect([...decoded.taskResList[0]!.task!.recordset!.configs.get("c")!.data.keys()]).toEqual([
      "\uFF5E",
      "\u{1F600}",
    ]);
  });

  test("a negative int32 shape is a 10-byte varint; shape is packed", () => {
    const request = PushTaskResRequest.fromPartial({
      taskResList: [
        {
          task: {
            recordset: {
              parameters: new Map([
                ["p", ParametersRecord.fromPartial({ dataKeys: ["0"], dataValues: [{ shape: [-1, 2] }] })],
              ]),
            },
          },
        },
      ],
    });
    // Array.shape (field 2): 0xffffffff_ffffffff_ff01 is -1 as int32, then 2.
    const array = ld("12", "ffffffffffffffffff0102");
    const record = ld("0a", "30") + ld("12", array);
    const entry = ld("0a", ld("0a", "70") + ld("12", record));
    expect(hex(canonicalEncode("PushTaskResRequest", request))).toBe(ld("0a", ld("22", ld("4a", entry))));
  });

  test("fields are written in ascending field-number order, whatever the object key order", () => {
    const taskRes: TaskRes = {
      task: {
        error: { code: 3n, reason: "r" },
        ancestry: ["x"],
        ttl: 1,
        consumer: { nodeId: 0n, anonymous: true },
        producer: { nodeId: 1n, anonymous: false },
        createdAt: 2,
        deliveredAt: "d",
        pushedAt: 3,
        taskType: "t",
        recordset: undefined,
      },
      runId: 5n,
      groupId: "g",
      taskId: "i",
    };
    const bytes = canonicalEncode("PushTaskResRequest", { taskResList: [taskRes] });
    const fieldNumbers: number[] = [];
    // Walk the Task's top-level tags.
    const task = PushTaskResRequest.decode(bytes).taskResList[0]!;
    expect(task).toEqual(taskRes);
    const body = Buffer.from(bytes).subarray(2);
    let pos = 0;
    while (pos < body.length) {
      const tag = body[pos]!;
      const field = tag >> 3;
      fieldNumbers.push(field);
      pos++;
      if ((tag & 7) === 2) {
        const len = body[pos]!;
        pos += 1 + len;
      } else if ((tag & 7) === 0) {
        while (body[pos]! & 0x80) pos++;
        pos++;
      } else pos += 8;
    }
    expect(fieldNumbers).toEqual([1, 2, 3, 4]);
  });

  test("repeated strings are one record per element, in order", () => {
    const bytes = canonicalEncode("PullTaskInsRequest", { node: undefined, taskIds: ["b", "", "a"] });
    expect(hex(bytes)).toBe("120162" + "1200" + "120161");
  });
});

describe("round trips with the generated decoder", () => {
  const rich = (): PushTaskResRequest =>
    PushTaskResRequest.fromPartial({
      taskResList: [
        {
          taskId: "",
          groupId: "7",
          runId: -(2n ** 63n),
          task: {
            producer: { nodeId: 2n ** 63n - 1n, anonymous: false },
            consumer: { nodeId: 0n, anonymous: true },
            createdAt: 1720000000.125,
            ttl: -0,
            ancestry: ["a-b"],
            taskType: "evaluate",
            recordset: {
              parameters: new Map([
                [
                  "w",
                  ParametersRecord.fromPartial({
                    dataKeys: ["z", "a", "_empty"],
                    dataValues: [
                      { dtype: "float32", shape: [2, 3], stype: "numpy.ndarray", data: Buffer.from([1, 2, 3]) },
                      { dtype: "", shape: [], stype: "", data: Buffer.alloc(0) },
                      {},
                    ],
                  }),
                ],
              ]),
              metrics: new Map([
                [
                  "m",
                  {
                    data: new Map([
                      ["nan", { double: Number.NaN }],
                      ["inf", { double: Number.NEGATIVE_INFINITY }],
                      ["big", { sint64: -(2n ** 63n) }],
                      ["dl", { doubleList: { vals: [0, -0, 1.5] } }],
                      ["sl", { sint64List: { vals: [2n ** 63n - 1n, 0n] } }],
                    ]),
                  },
                ],
              ]),
              configs: new Map([
                [
                  "c",
                  {
                    data: new Map<string, ConfigsRecordValue>([
                      ["s", { string: "héllo ✓" }],
                      ["b", { bytes: Buffer.from([0, 255]) }],
                      ["bl", { bytesList: { vals: [Buffer.alloc(0), Buffer.from([9])] } }],
                      ["f", { bool: false }],
                    ]),
                  },
                ],
              ]),
            },
          },
        },
      ],
    });

  test.each<MapOrder>(["upb", "lexicographic"])("encode -> decode -> encode is stable (%s order)", (order) => {
    const original = rich();
    const bytes = canonicalEncode("PushTaskResRequest", original, order);
    const decoded = PushTaskResRequest.decode(bytes);
    expect(decoded).toEqual(original);
    expect(hex(canonicalEncode("PushTaskResRequest", decoded, order))).toBe(hex(bytes));
  });

  test("other Fleet requests round-trip through the generated decoders", () => {
    const ping = PingRequest.fromPartial({ node: { nodeId: -1n, anonymous: true }, pingInterval: 12.5 });
    expect(PingRequest.decode(canonicalEncode("PingRequest", ping))).toEqual(ping);
    const pull = PullTaskInsRequest.fromPartial({ node: { nodeId: 9n }, taskIds: ["x", "y"] });
    expect(PullTaskInsRequest.decode(canonicalEncode("PullTaskInsRequest", pull))).toEqual(pull);
    const create = CreateNodeRequest.fromPartial({ pingInterval: 30 });
    expect(CreateNodeRequest.decode(canonicalEncode("CreateNodeRequest", create))).toEqual(create);
    const del = DeleteNodeRequest.fromPartial({ node: { nodeId: 2n ** 62n } });
    expect(DeleteNodeRequest.decode(canonicalEncode("DeleteNodeRequest", del))).toEqual(del);
  });

  test("for requests without maps or oneofs, ts-proto's own encoding agrees byte for byte", () => {
    const ping = PingRequest.fromPartial({ node: { nodeId: NODE_ID }, pingInterval: 30 });
    expect(hex(PingRequest.encode(ping).finish())).toBe(hex(canonicalEncode("PingRequest", ping)));
    const getRun = GetRunRequest.fromPartial({ runId: RUN_ID });
    expect(hex(GetRunRequest.encode(getRun).finish())).toBe(hex(canonicalEncode("GetRunRequest", getRun)));
  });

  test("large bytes values (written by reference) encode as ts-proto does and decode intact", () => {
    // Sizes around the 1024-byte reference threshold and the 1-, 2-, 3- and 4-byte length prefixes.
    const sizes = [1023, 1024, 1025, 16_384, 70_000, 3_000_000];
    const tensor = (n: number, seed: number): Buffer => {
      const b = Buffer.allocUnsafe(n);
      for (let i = 0; i < n; i++) b[i] = (i * 31 + seed) & 0xff;
      return b;
    };
    const request = PushTaskResRequest.fromPartial({
      taskResList: [
        {
          groupId: "1",
          runId: RUN_ID,
          task: {
            producer: { nodeId: NODE_ID },
            consumer: { nodeId: 0n, anonymous: true },
            ancestry: ["x"],
            taskType: "train",
            recordset: {
              parameters: new Map([
                [
                  "p",
                  ParametersRecord.fromPartial({
                    dataKeys: sizes.map(String),
                    dataValues: sizes.map((n, i) => ({ dtype: "uint8", shape: [n], stype: "raw", data: tensor(n, i) })),
                  }),
                ],
              ]),
              configs: new Map([
                ["c", { data: new Map<string, ConfigsRecordValue>([["blob", { bytes: tensor(5000, 9) }]]) }],
              ]),
            },
          },
        },
      ],
    });
    const bytes = canonicalEncode("PushTaskResRequest", request);
    expect(Buffer.from(bytes).equals(Buffer.from(PushTaskResRequest.encode(request).finish()))).toBe(true);
    // Buffer.equals, not toEqual: jest compares megabytes one element at a time.
    const decoded = PushTaskResRequest.decode(bytes);
    const values = decoded.taskResList[0]!.task!.recordset!.parameters.get("p")!.dataValues;
    expect(values.map((v) => v.data.length)).toEqual(sizes);
    values.forEach((v, i) => expect(v.data.equals(tensor(sizes[i]!, i))).toBe(true));
    expect(Buffer.from(canonicalEncode("PushTaskResRequest", decoded)).equals(Buffer.from(bytes))).toBe(true);
  });

  test('the rich request\'s map keys "b" and "bl" are reported as prefix-related', () => {
    expect(hasPrefixRelatedMapKeys("PushTaskResRequest", rich())).toBe(true);
  });
});

describe("upb versus lexicographic order", () => {
  const withMetrics = (keys: string[]): PushTaskResRequest =>
    PushTaskResRequest.fromPartial({
      taskResList: [
        {
          task: {
            recordset: {
              configs: new Map([["fitres.metrics", { data: new Map(keys.map((k) => [k, { double: 1 }])) }]]),
            },
          },
        },
      ],
    });

  test("orders agree, and the flag is false, when no keys are prefix-related", () => {
    const request = withMetrics(["val_loss", "loss_x", "accuracy", "train_loss"]);
    expect(hasPrefixRelatedMapKeys("PushTaskResRequest", request)).toBe(false);
    expect(hex(canonicalEncode("PushTaskResRequest", request, "lexicographic"))).toBe(
      hex(canonicalEncode("PushTaskResRequest", request, "upb")),
    );
  });

  test("orders differ, and the flag is true, for keys like loss / loss_avg", () => {
    const request = withMetrics(["loss_avg", "loss", "accuracy"]);
    expect(hasPrefixRelatedMapKeys("PushTaskResRequest", request)).toBe(true);
    const upb = canonicalEncode("PushTaskResRequest", request, "upb");
    const lex = canonicalEncode("PushTaskResRequest", request, "lexicographic");
    expect(hex(upb)).not.toBe(hex(lex));
    expect(upb.length).toBe(lex.length);
    // Same content either way.
    expect(PushTaskResRequest.decode(upb)).toEqual(PushTaskResRequest.decode(lex));
  });

  test("the flag finds a prefix pair that is not adjacent in insertion order, in any map", () => {
    const request = PushTaskResRequest.fromPartial({
      taskResList: [
        { task: { recordset: { parameters: new Map([["p", ParametersRecord.fromPartial({})]]) } } },
        {
          task: {
            recordset: {
              metrics: new Map([
                [
                  "m",
                  {
                    data: new Map([
                      ["aa", { double: 1 }],
                      ["b", { double: 1 }],
                      ["a", { double: 1 }],
                    ]),
                  },
                ],
              ]),
            },
          },
        },
      ],
    });
    expect(hasPrefixRelatedMapKeys("PushTaskResRequest", request)).toBe(true);
    expect(hasPrefixRelatedMapKeys("PingRequest", PingRequest.fromPartial({}))).toBe(false);
  });
});

describe("refusals", () => {
  test("a record value with two oneof members set is refused", () => {
    const request = pushWithConfigs(new Map([["k", { double: 1, string: "x" }]]));
    expect(() => canonicalEncode("PushTaskResRequest", request)).toThrow(MalformedMessageError);
    expect(() => canonicalEncode("PushTaskResRequest", request)).toThrow(/2 oneof members set \(double, string\)/);
  });

  test("a sint64 outside 64 bits is refused with MalformedMessageError", () => {
    expect(() => canonicalEncode("GetRunRequest", { runId: 2n ** 64n })).toThrow(MalformedMessageError);
  });

  test("an unknown request name or order is refused", () => {
    expect(() => canonicalEncode("PullTaskResRequest" as never, {})).toThrow(/unknown request type/);
    expect(() => canonicalEncode("GetRunRequest", {}, "sorted" as never)).toThrow(/unknown map order/);
  });
});
