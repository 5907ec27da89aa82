/**
 * encodeMessage / ChunkedWriter must give exactly the bytes of the generated encoder
 * (`Buffer.from(X.encode(m).finish())`) for every message shape the task RPCs carry.
 */
import { PullTaskResResponse, PushTaskInsRequest, DriverService } from "../../src/proto/flwr/proto/driver";
import { PullTaskInsResponse, PushTaskResRequest, FleetService } from "../../src/proto/flwr/proto/fleet";
import { RecordSet } from "../../src/proto/flwr/proto/recordset";
import { TaskIns, TaskRes } from "../../src/proto/flwr/proto/task";
import {
  ChunkedWriter,
  HEADROOM_BYTES,
  encodeMessage,
  encodeMessageChunks,
  withHeadroom,
} from "../../src/core/wire/chunked-writer";
import { withChunkedSerializers } from "../../src/transport/chunked-serializers";
import { requestBytes } from "../../src/transport/grpc-zero-copy";
import { bytesOf, prng } from "../helpers/random-bytes";

// Sizes around the 1-byte/2-byte/3-byte length-prefix edges and the reference threshold.
const SIZES = [0, 1, 127, 128, 1023, 1024, 1025, 16383, 16384, 70_000];

function randomRecordSet(rand: () => number): RecordSet {
  const pick = <T>(xs: T[]): T => xs[Math.floor(rand() * xs.length)]!;
  const parameters = new Map<
    string,
    { dataKeys: string[]; dataValues: Array<{ dtype: string; shape: number[]; stype: string; data: Buffer }> }
  >();
  const nParams = Math.floor(rand() * 3);
  for (let p = 0; p < nParams; p++) {
    const n = Math.floor(rand() * 4);
    const keys: string[] = [];
    const values = [];
    for (let i = 0; i < n; i++) {
      keys.push(i === 0 ? "" : `w${i}-é`);
      values.push({
        dtype: pick(["", "float32", "int64"]),
        shape: pick([[], [3], [2, 300], [-1, 0]]),
        stype: pick(["", "numpy.ndarray"]),
        data: bytesOf(rand, pick(SIZES)),
      });
    }
    parameters.set(p === 0 ? "" : `params-${p}`, { dataKeys: keys, dataValues: values });
  }
  const metricChoices = [
    { double: -0 },
    { double: 0 },
    { double: 1.5e300 },
    { double: NaN },
    { sint64: -9_223_372_036_854_775_808n },
    { sint64: 0n },
    { sint64: 9_223_372_036_854_775_807n },
    { doubleList: { vals: [] } },
    { doubleList: { vals: [1, -2.5, Infinity] } },
    { sint64List: { vals: [-1n, 0n, 1n << 62n] } },
  ];
  const configChoices = [
    ...metricChoices,
    { bool: false },
    { bool: true },
    { string: "" },
    { string: "ünïcødé ✓ " + "x".repeat(200) },
    { bytes: Buffer.alloc(0) },
    { bytes: bytesOf(rand, 5000) },
    { boolList: { vals: [true, false, true] } },
    { stringList: { vals: ["", "a", "é".repeat(100)] } },
    { bytesList: { vals: [Buffer.alloc(0), bytesOf(rand, 3), bytesOf(rand, 2048)] } },
  ];
  const metrics = new Map<string, { data: Map<string, object> }>();
  const configs = new Map<string, { data: Map<string, object> }>();
  for (let r = 0; r < Math.floor(rand() * 3); r++) {
    const data = new Map<string, object>();
    for (let i = 0; i < Math.floor(rand() * 5); i++) data.set(i === 0 ? "" : `m${i}`, pick(metricChoices));
    metrics.set(`metrics-${r}`, { data });
  }
  for (let r = 0; r < Math.floor(rand() * 3); r++) {
    const data = new Map<string, object>();
    for (let i = 0; i < Math.floor(rand() * 8); i++) data.set(`c${i}`, pick(configChoices));
    configs.set(r === 0 ? "" : `configs-${r}`, { data });
  }
  return RecordSet.fromPartial({ parameters, metrics, configs } as never);
}

function randomTask(rand: () => number): TaskIns {
  const pick = <T>(xs: T[]): T => xs[Math.floor(rand() * xs.length)]!;
  return TaskIns.fromPartial({
    taskId: pick(["", "5f1c9b3e-0000-4000-8000-000000000000"]),
    groupId: pick(["", "1", "grøup"]),
    runId: pick([0n, -1n, 1n, -9_223_372_036_854_775_808n, 9_223_372_036_854_775_807n]),
    task: pick([
      undefined,
      {},
      {
        producer: pick([undefined, { nodeId: 0n, anonymous: true }, { nodeId: -42n, anonymous: false }]),
        consumer: { nodeId: pick([0n, 123_456_789_012_345n, -7n]), anonymous: false },
        createdAt: pick([0, -0, 1_700_000_000.123]),
        deliveredAt: pick(["", "2026-11-23T01:52:47.000000+00:00"]),
        pushedAt: pick([0, 1.25]),
        ttl: pick([0, 3600, -1]),
        ancestry: pick([[], ["a"], ["", "b", "c"]]),
        taskType: pick(["", "train", "query"]),
        recordset: pick([undefined, randomRecordSet(rand)]),
        error: pick([undefined, {}, { code: -3n, reason: "boom" }]),
      },
    ]),
  });
}

function expectSameBytes<T>(encoder: { encode(m: T): { finish(): Uint8Array } }, message: T): Buffer {
  const expected = Buffer.from(encoder.encode(message).finish());
  const actual = encodeMessage(encoder as never, message);
  expect(Buffer.isBuffer(actual)).toBe(true);
  expect(actual.length).toBe(expected.length);
  expect(actual.equals(expected)).toBe(true);
  const { chunks, length } = encodeMessageChunks(encoder as never, message);
  expect(length).toBe(expected.length);
  expect(Buffer.concat(chunks).equals(expected)).toBe(true);
  return actual;
}

test("the four task messages encode byte for byte as the generated encoder, on 200 random shapes", () => {
  const rand = prng(20261123);
  for (let i = 0; i < 50; i++) {
    const list = Array.from({ length: Math.floor(rand() * 3) }, () => randomTask(rand));
    const asRes = list.map((t) => TaskRes.fromPartial(t));
    expectSameBytes(
      PullTaskInsResponse,
      PullTaskInsResponse.fromPartial({ taskInsList: list, reconnect: rand() < 0.5 ? { reconnect: 5n } : undefined }),
    );
    expectSameBytes(PushTaskInsRequest, PushTaskInsRequest.fromPartial({ taskInsList: list }));
    expectSameBytes(PushTaskResRequest, PushTaskResRequest.fromPartial({ taskResList: asRes }));
    expectSameBytes(PullTaskResResponse, PullTaskResResponse.fromPartial({ taskResList: asRes }));
  }
});

test("an empty message and a multi-megabyte record round-trip through the generated decoder", () => {
  expect(expectSameBytes(PullTaskInsResponse, PullTaskInsResponse.create()).length).toBe(0);
  const data = bytesOf(prng(1), 3 * 1024 * 1024 + 17);
  const message = PullTaskInsResponse.fromPartial({
    taskInsList: [
      {
        taskId: "t",
        runId: -5n,
        task: {
          consumer: { nodeId: 9n },
          recordset: {
            parameters: new Map([
              [
                "p",
                {
                  dataKeys: ["a", "b"],
                  dataValues: [
                    { dtype: "float32", shape: [786436], stype: "", data },
                    { dtype: "", shape: [], stype: "", data },
                  ],
                },
              ],
            ]),
          },
        },
      },
    ],
  });
  const bytes = expectSameBytes(PullTaskInsResponse, message);
  const decoded = PullTaskInsResponse.decode(bytes);
  const values = decoded.taskInsList[0]!.task!.recordset!.parameters.get("p")!.dataValues;
  expect(values.map((v) => v.data.equals(data))).toEqual([true, true]);
  expect(decoded.taskInsList[0]!.runId).toBe(-5n);
});

test("a fork that is never joined is refused at finish", () => {
  const writer = new ChunkedWriter();
  writer.uint32(10).fork().string("x");
  expect(() => writer.finish()).toThrow("unjoined fork");
  expect(() => new ChunkedWriter().join()).toThrow("fork stack empty");
});

test("withChunkedSerializers replaces only the named serializers and leaves the input alone", () => {
  const fleet = withChunkedSerializers(FleetService, { responses: { pullTaskIns: PullTaskInsResponse } });
  expect(fleet.pullTaskIns.responseSerialize).not.toBe(FleetService.pullTaskIns.responseSerialize);
  expect(fleet.pullTaskIns.requestSerialize).toBe(FleetService.pullTaskIns.requestSerialize);
  expect(fleet.pullTaskIns.path).toBe(FleetService.pullTaskIns.path);
  expect(fleet.ping).toEqual(FleetService.ping);
  const message = PullTaskInsResponse.fromPartial({ taskInsList: [randomTask(prng(7))] });
  expect(fleet.pullTaskIns.responseSerialize(message).equals(FleetService.pullTaskIns.responseSerialize(message))).toBe(
    true,
  );

  const driver = withChunkedSerializers(DriverService, { requests: { pushTaskIns: PushTaskInsRequest } });
  const request = PushTaskInsRequest.fromPartial({ taskInsList: [randomTask(prng(8))] });
  // A client request serializes to a stand-in that the patched grpc-js sends as chunks.
  expect(
    requestBytes(driver.pushTaskIns.requestSerialize(request)).equals(
      DriverService.pushTaskIns.requestSerialize(request),
    ),
  ).toBe(true);
  expect(driver.pushTaskIns.responseSerialize).toBe(DriverService.pushTaskIns.responseSerialize);

  expect(() => withChunkedSerializers(FleetService, { responses: { noSuchMethod: PullTaskInsResponse } })).toThrow(
    'no method "noSuchMethod"',
  );
});

/** A one-record PushTaskResRequest with the given array bytes. */
function pushWith(taskId: string, ...arrays: Buffer[]): PushTaskResRequest {
  const dataValues = arrays.map((data) => ({ dtype: "float32", shape: [data.length / 4], stype: "", data }));
  const parameters = new Map([["p", { dataKeys: arrays.map((_, i) => `a${i}`), dataValues }]]);
  return PushTaskResRequest.fromPartial({ taskResList: [{ taskId, task: { recordset: { parameters } } }] });
}

test("finishChunks references large bytes values and joins runs of small chunks", () => {
  const data = bytesOf(prng(2), 200_000);
  const { chunks } = encodeMessageChunks(PushTaskResRequest, pushWith("t", data, data.subarray(0, 5000)));
  // The values are the caller's own memory, not copies.
  expect(chunks.filter((c) => c.buffer === data.buffer).map((c) => c.length)).toEqual([200_000, 5000]);
  // Small chunks between and around them are joined: header, value, header, value, trailer.
  expect(chunks.length).toBeLessThanOrEqual(5);
});

test("large outputs have headroom in front for a frame header; small ones and other buffers do not", () => {
  const big = encodeMessage(PushTaskResRequest, pushWith("x".repeat(100), bytesOf(prng(3), 100_000)));
  const framed = withHeadroom(big, 5)!;
  expect(framed.buffer).toBe(big.buffer);
  expect(framed.length).toBe(big.length + 5);
  expect(framed.subarray(5).equals(big)).toBe(true);
  expect(withHeadroom(big, HEADROOM_BYTES + 1)).toBeUndefined();
  // Another view of the same memory with the same start but another length is not the output.
  expect(withHeadroom(big.subarray(0, 10), 5)).toBeUndefined();
  expect(withHeadroom(Buffer.from(big), 5)).toBeUndefined();
  const small = encodeMessage(PushTaskResRequest, pushWith("x", bytesOf(prng(4), 2000)));
  expect(withHeadroom(small, 5)).toBeUndefined();
});
