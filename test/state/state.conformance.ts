/**
 * The State contract, as one suite every backend runs (src/state/state.ts). A behaviour
 * that is not tested here is not part of the contract.
 *
 * Time is a TestClock the suite moves by hand, so liveness is tested without sleeping.
 */
import { ErrorCode, MIN_TASK_TIMESTAMP, NODE_UNAVAILABLE_REASON } from "../../src/core/constants";
import { MalformedMessageError, NotFoundError, ResourceExhaustedError } from "../../src/core/errors";
import type { Node } from "../../src/proto/flwr/proto/node";
import type { RecordSet } from "../../src/proto/flwr/proto/recordset";
import type { Task, TaskIns, TaskRes } from "../../src/proto/flwr/proto/task";
import type { Scalar } from "../../src/proto/flwr/proto/transport";
import type { State, StateEvents, StateLimits } from "../../src/state/state";
import { TASK_EXPIRED_REASON, TASK_OVERHEAD_BYTES, isoTimestamp, taskBytes } from "../../src/state/state-support";

/** A clock the test moves by hand; `now` is bound so it can be passed as `{ now: clock.now }`. */
export class TestClock {
  /** A fixed start with a fraction, so `delivered_at` strings carry microseconds. */
  t = 1_750_000_000.25;
  readonly now = (): number => this.t;
  advance(seconds: number): void {
    this.t += seconds;
  }
}

export const UUID4 = /^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/;
const INT64_MIN = -(2n ** 63n);
const INT64_MAX = 2n ** 63n - 1n;
const BEYOND_2_53 = 2n ** 53n + 1n;

/** A RecordSet using every kind of value, including the ones protobuf omits by default. */
export function sampleRecordSet(): RecordSet {
  return {
    parameters: new Map([
      [
        "weights",
        {
          dataKeys: ["b", "a"],
          dataValues: [
            { dtype: "float32", shape: [2], stype: "numpy.ndarray", data: Buffer.from([1, 2, 3, 4, 5, 6, 7, 8]) },
            { dtype: "", shape: [], stype: "", data: Buffer.alloc(0) },
          ],
        },
      ],
    ]),
    metrics: new Map([
      [
        "m",
        {
          data: new Map([
            ["acc", { double: 0.5 }],
            ["zero", { double: 0 }],
            ["n", { sint64: INT64_MIN }],
            ["list", { sint64List: { vals: [1n, -2n, INT64_MAX] } }],
          ]),
        },
      ],
    ]),
    configs: new Map([
      [
        "c",
        {
          data: new Map([
            ["flag", { bool: false }],
            ["empty", { string: "" }],
            ["bytes", { bytes: Buffer.from([0, 255]) }],
            ["strings", { stringList: { vals: ["x", ""] } }],
          ]),
        },
      ],
    ]),
  };
}

const emptyRecordSet = (): RecordSet => ({ parameters: new Map(), metrics: new Map(), configs: new Map() });

/** A valid TaskIns from the Driver (anonymous node 0) to `consumer`. */
export function makeTaskIns(clock: TestClock, runId: bigint, consumer: Node, task: Partial<Task> = {}): TaskIns {
  return {
    taskId: "",
    groupId: "group-1",
    runId,
    task: {
      producer: { nodeId: 0n, anonymous: true },
      consumer,
      createdAt: clock.now(),
      deliveredAt: "",
      pushedAt: clock.now(),
      ttl: 3600,
      ancestry: [],
      taskType: "train",
      recordset: emptyRecordSet(),
      error: undefined,
      ...task,
    },
  };
}

/** A valid TaskRes from node `producerId` answering TaskIns `taskInsId`. */
export function makeTaskRes(
  clock: TestClock,
  runId: bigint,
  producerId: bigint,
  taskInsId: string,
  task: Partial<Task> = {},
): TaskRes {
  return {
    taskId: "",
    groupId: "group-1",
    runId,
    task: {
      producer: { nodeId: producerId, anonymous: false },
      consumer: { nodeId: 0n, anonymous: true },
      createdAt: clock.now(),
      deliveredAt: "",
      pushedAt: clock.now(),
      ttl: 3600,
      ancestry: [taskInsId],
      taskType: "train",
      recordset: emptyRecordSet(),
      error: undefined,
      ...task,
    },
  };
}

const named = (nodeId: bigint): Node => ({ nodeId, anonymous: false });
const ANONYMOUS: Node = { nodeId: 0n, anonymous: true };

type Mutation<T> = [string, (m: T) => void];

/** One mutation per validator rule of TaskIns (docs/protocol.md, "Validation"). */
export const INVALID_TASK_INS: Array<Mutation<TaskIns>> = [
  ["non-empty task_id", (m) => void (m.taskId = "a")],
  ["no task", (m) => void (m.task = undefined)],
  ["created_at too old", (m) => void (m.task!.createdAt = MIN_TASK_TIMESTAMP - 1)],
  ["created_at NaN", (m) => void (m.task!.createdAt = NaN)],
  ["delivered_at set", (m) => void (m.task!.deliveredAt = "2024-07-08T10:11:12+00:00")],
  ["ttl zero", (m) => void (m.task!.ttl = 0)],
  ["ttl negative", (m) => void (m.task!.ttl = -1)],
  ["pushed_at unset", (m) => void (m.task!.pushedAt = 0)],
  ["no producer", (m) => void (m.task!.producer = undefined)],
  ["producer with node id", (m) => void (m.task!.producer = { nodeId: 5n, anonymous: true })],
  ["producer not anonymous", (m) => void (m.task!.producer = { nodeId: 0n, anonymous: false })],
  ["no consumer", (m) => void (m.task!.consumer = undefined)],
  ["anonymous consumer with node id", (m) => void (m.task!.consumer = { nodeId: 5n, anonymous: true })],
  ["named consumer without node id", (m) => void (m.task!.consumer = { nodeId: 0n, anonymous: false })],
  ["empty task_type", (m) => void (m.task!.taskType = "")],
  ["recordset and error", (m) => void (m.task!.error = { code: 0n, reason: "" })],
  ["neither recordset nor error", (m) => void (m.task!.recordset = undefined)],
  ["non-empty ancestry", (m) => void (m.task!.ancestry = ["x"])],
];

/** One mutation per validator rule of TaskRes (docs/protocol.md, "Validation"). */
export const INVALID_TASK_RES: Array<Mutation<TaskRes>> = [
  ["non-empty task_id", (m) => void (m.taskId = "a")],
  ["no task", (m) => void (m.task = undefined)],
  ["created_at too old", (m) => void (m.task!.createdAt = MIN_TASK_TIMESTAMP - 1)],
  ["delivered_at set", (m) => void (m.task!.deliveredAt = "x")],
  ["ttl zero", (m) => void (m.task!.ttl = 0)],
  ["ttl NaN", (m) => void (m.task!.ttl = NaN)],
  ["pushed_at too old", (m) => void (m.task!.pushedAt = MIN_TASK_TIMESTAMP - 0.5)],
  ["no producer", (m) => void (m.task!.producer = undefined)],
  ["anonymous producer with node id", (m) => void (m.task!.producer = { nodeId: 5n, anonymous: true })],
  ["named producer without node id", (m) => void (m.task!.producer = { nodeId: 0n, anonymous: false })],
  ["no consumer", (m) => void (m.task!.consumer = undefined)],
  ["anonymous consumer with node id", (m) => void (m.task!.consumer = { nodeId: 5n, anonymous: true })],
  ["named consumer without node id", (m) => void (m.task!.consumer = { nodeId: 0n, anonymous: false })],
  ["empty task_type", (m) => void (m.task!.taskType = "")],
  ["recordset and error", (m) => void (m.task!.error = { code: 2n, reason: "boom" })],
  ["neither recordset nor error", (m) => void (m.task!.recordset = undefined)],
  ["empty ancestry", (m) => void (m.task!.ancestry = [])],
];

/** Records every notification. */
function recorder(): { events: StateEvents; ins: Array<[bigint, boolean]>; res: string[] } {
  const ins: Array<[bigint, boolean]> = [];
  const res: string[] = [];
  return {
    events: {
      onTaskInsStored: (nodeId, anonymous) => ins.push([nodeId, anonymous]),
      onTaskResStored: (taskInsId) => res.push(taskInsId),
    },
    ins,
    res,
  };
}

/**
 * Registers the whole State contract under `describe(name)`. `makeState` is called once per
 * test with a fresh TestClock and must return a fresh, empty State using that clock; the suite
 * closes it after the test.
 */
export function describeStateConformance(name: string, makeState: (clock: TestClock) => State): void {
  describe(`State contract: ${name}`, () => {
    let clock: TestClock;
    let state: State;

    beforeEach(() => {
      clock = new TestClock();
      state = makeState(clock);
    });
    afterEach(() => state.close());

    const newRun = (): bigint => state.createRun("fab", "1.0", new Map());
    const storeIns = (runId: bigint, consumer: Node, task: Partial<Task> = {}): string => {
      const id = state.storeTaskIns(makeTaskIns(clock, runId, consumer, task));
      if (id === undefined) throw new Error("test setup: TaskIns was not stored");
      return id;
    };
    const storeRes = (runId: bigint, producerId: bigint, taskInsId: string, task: Partial<Task> = {}): string => {
      const id = state.storeTaskRes(makeTaskRes(clock, runId, producerId, taskInsId, task));
      if (id === undefined) throw new Error("test setup: TaskRes was not stored");
      return id;
    };

    describe("runs", () => {
      test("createRun returns a non-zero id and getRun returns the run with its config", () => {
        const config = new Map<string, Scalar>([
          ["lr", { double: 0.1 }],
          ["one-float", { double: 1 }],
          ["rounds", { sint64: 3n }],
          ["big", { sint64: INT64_MIN }],
          ["flag", { bool: false }],
          ["name", { string: "" }],
        ]);
        const runId = state.createRun("flwr/demo", "1.0.0", config);
        expect(typeof runId).toBe("bigint");
        expect(runId).not.toBe(0n);
        const run = state.getRun(runId);
        expect(run).toEqual({ runId, fabId: "flwr/demo", fabVersion: "1.0.0", overrideConfig: config });
        // ints and floats stay distinct
        expect(run!.overrideConfig.get("one-float")!.double).toBe(1);
        expect(run!.overrideConfig.get("one-float")!.sint64).toBeUndefined();
        expect(run!.overrideConfig.get("rounds")!.sint64).toBe(3n);
      });

      test("empty fab id and version are accepted (what flower-server-app sends by default)", () => {
        const runId = state.createRun("", "", new Map());
        expect(state.getRun(runId)).toEqual({ runId, fabId: "", fabVersion: "", overrideConfig: new Map() });
      });

      test("getRun of an unknown id is undefined, not an error", () => {
        expect(state.getRun(12345n)).toBeUndefined();
        expect(state.getRun(0n)).toBeUndefined();
      });

      test("the stored config is not changed by mutating the map given or returned", () => {
        const config = new Map<string, Scalar>([["a", { sint64: 1n }]]);
        const runId = state.createRun("f", "v", config);
        config.set("b", { bool: true });
        state.getRun(runId)!.overrideConfig.set("c", { bool: true });
        expect([...state.getRun(runId)!.overrideConfig.keys()]).toEqual(["a"]);
      });

      test("run ids are random signed 64-bit values: negative and beyond 2^53 round-trip", () => {
        const ids = Array.from({ length: 32 }, () => newRun());
        expect(new Set(ids).size).toBe(ids.length);
        for (const id of ids) {
          expect(id >= INT64_MIN && id <= INT64_MAX && id !== 0n).toBe(true);
          expect(state.getRun(id)?.runId).toBe(id);
        }
        // 32 fair draws: all non-negative, or all within 2^53, has probability < 2^-32.
        expect(ids.some((id) => id < 0n)).toBe(true);
        expect(ids.some((id) => id > BEYOND_2_53 || id < -BEYOND_2_53)).toBe(true);
      });
    });

    describe("nodes and liveness", () => {
      test("a new node is online and listed by getNodes of an existing run", () => {
        const runId = newRun();
        const nodeId = state.createNode(30);
        expect(typeof nodeId).toBe("bigint");
        expect(nodeId).not.toBe(0n);
        expect(state.getNodes(runId)).toEqual(new Set([nodeId]));
      });

      test("getNodes of an unknown run is empty even with online nodes", () => {
        state.createNode(30);
        expect(state.getNodes(987654321n)).toEqual(new Set());
      });

      test("getNodes is not filtered by run", () => {
        const a = state.createNode(30);
        const b = state.createNode(30);
        expect(state.getNodes(newRun())).toEqual(new Set([a, b]));
      });

      test("a node goes offline when its ping interval passes and comes back on ping", () => {
        const runId = newRun();
        const nodeId = state.createNode(30);
        clock.advance(29);
        expect(state.getNodes(runId).has(nodeId)).toBe(true);
        clock.advance(2);
        expect(state.getNodes(runId).has(nodeId)).toBe(false);
        expect(state.acknowledgePing(nodeId, 10)).toBe(true);
        expect(state.getNodes(runId).has(nodeId)).toBe(true);
        clock.advance(11); // the new interval applies
        expect(state.getNodes(runId).has(nodeId)).toBe(false);
      });

      test("only online nodes are listed", () => {
        const runId = newRun();
        const shortLived = state.createNode(5);
        const longLived = state.createNode(60);
        clock.advance(10);
        expect(state.getNodes(runId)).toEqual(new Set([longLived]));
        expect(state.acknowledgePing(shortLived, 30)).toBe(true);
        expect(state.getNodes(runId)).toEqual(new Set([shortLived, longLived]));
      });

      test("acknowledgePing of an unknown node is false", () => {
        expect(state.acknowledgePing(424242n, 30)).toBe(false);
      });

      test("a NaN ping interval is rejected", () => {
        expect(() => state.createNode(NaN)).toThrow(MalformedMessageError);
        const nodeId = state.createNode(30);
        expect(() => state.acknowledgePing(nodeId, NaN)).toThrow(MalformedMessageError);
        expect(state.getNodes(newRun())).toEqual(new Set([nodeId]));
      });

      test("deleteNode removes the node; an unknown node throws NotFoundError", () => {
        const runId = newRun();
        const nodeId = state.createNode(30);
        state.deleteNode(nodeId);
        expect(state.getNodes(runId)).toEqual(new Set());
        expect(state.acknowledgePing(nodeId, 30)).toBe(false);
        expect(() => state.deleteNode(nodeId)).toThrow(NotFoundError);
        expect(() => state.deleteNode(777n)).toThrow(NotFoundError);
      });

      test("node ids are random signed 64-bit values: negative and beyond 2^53 round-trip", () => {
        const runId = newRun();
        const ids = Array.from({ length: 32 }, () => state.createNode(30));
        expect(state.getNodes(runId)).toEqual(new Set(ids));
        expect(ids.some((id) => id < 0n)).toBe(true);
        expect(ids.some((id) => id > BEYOND_2_53 || id < -BEYOND_2_53)).toBe(true);
        for (const id of ids) expect(state.acknowledgePing(id, 30)).toBe(true);
      });
    });

    describe("public keys", () => {
      const keyA = (): Uint8Array => new TextEncoder().encode("-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----\n");
      const keyB = (): Uint8Array => new TextEncoder().encode("-----BEGIN PUBLIC KEY-----\nBBBB\n-----END PUBLIC KEY-----\n");

      test("a node created with a key is found by the key's bytes", () => {
        const nodeId = state.createNode(30, keyA());
        expect(nodeId).not.toBe(0n);
        expect(state.getNodeId(keyA())).toBe(nodeId); // a different array with the same bytes
        expect(state.getNodeId(keyB())).toBeUndefined();
      });

      test("a key already mapped to a node cannot create another (0n)", () => {
        const runId = newRun();
        const nodeId = state.createNode(30, keyA());
        expect(state.createNode(30, keyA())).toBe(0n);
        expect(state.getNodes(runId)).toEqual(new Set([nodeId]));
        expect(state.createNode(30, keyB())).not.toBe(0n);
      });

      test("the key mapping outlives the node's liveness", () => {
        const nodeId = state.createNode(5, keyA());
        clock.advance(100);
        expect(state.getNodeId(keyA())).toBe(nodeId);
        expect(state.acknowledgePing(nodeId, 30)).toBe(true);
      });

      test("deleteNode drops the key mapping, so the same key can create a node again", () => {
        const runId = newRun();
        const first = state.createNode(30, keyA());
        state.deleteNode(first);
        expect(state.getNodeId(keyA())).toBeUndefined();
        const second = state.createNode(30, keyA());
        expect(second).not.toBe(0n);
        expect(state.getNodeId(keyA())).toBe(second);
        expect(state.getNodes(runId)).toEqual(new Set([second]));
        expect(state.acknowledgePing(second, 30)).toBe(true);
      });
    });

    describe("TaskIns", () => {
      test("storeTaskIns returns a fresh uuid4 and leaves its argument untouched", () => {
        const runId = newRun();
        const taskIns = makeTaskIns(clock, runId, named(5n));
        const before = makeTaskIns(clock, runId, named(5n)); // an equal, separate copy
        const a = state.storeTaskIns(taskIns);
        const b = state.storeTaskIns(taskIns);
        expect(a).toMatch(UUID4);
        expect(b).toMatch(UUID4);
        expect(a).not.toBe(b);
        expect(taskIns).toEqual(before);
        expect(state.numTaskIns()).toBe(2);
      });

      test("an unknown run is rejected and nothing is stored", () => {
        newRun();
        expect(state.storeTaskIns(makeTaskIns(clock, 31337n, named(5n)))).toBeUndefined();
        expect(state.numTaskIns()).toBe(0);
      });

      test("the consumer node need not exist", () => {
        const runId = newRun();
        expect(state.storeTaskIns(makeTaskIns(clock, runId, named(99n)))).toMatch(UUID4);
      });

      test.each(INVALID_TASK_INS)("invalid TaskIns (%s) is rejected and nothing is stored", (_, mutate) => {
        const runId = newRun();
        const taskIns = makeTaskIns(clock, runId, named(5n));
        mutate(taskIns);
        expect(state.storeTaskIns(taskIns)).toBeUndefined();
        expect(state.numTaskIns()).toBe(0);
        expect(state.getTaskIns(5n, 10)).toEqual([]);
      });

      test("getTaskIns returns the task as stored, with its id and delivered_at set", () => {
        const runId = newRun();
        const recordset = sampleRecordSet();
        const stored = makeTaskIns(clock, runId, named(7n), { recordset });
        const taskId = state.storeTaskIns(stored)!;
        clock.advance(1.5);
        const [got, ...rest] = state.getTaskIns(7n, 1);
        expect(rest).toEqual([]);
        expect(got).toEqual({
          ...stored,
          taskId,
          task: { ...stored.task, deliveredAt: isoTimestamp(clock.now()) },
        });
        expect(got!.task!.deliveredAt).toMatch(/^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}\+00:00$/);
        expect(got!.task!.recordset).toEqual(sampleRecordSet());
      });

      test("an empty RecordSet stays present and an error TaskIns keeps its error", () => {
        const runId = newRun();
        storeIns(runId, named(7n));
        storeIns(runId, named(7n), { recordset: undefined, error: { code: 0n, reason: "" } });
        const [withRecordSet, withError] = state.getTaskIns(7n, 2);
        expect(withRecordSet!.task!.recordset).toEqual(emptyRecordSet());
        expect(withRecordSet!.task!.error).toBeUndefined();
        expect(withError!.task!.recordset).toBeUndefined();
        expect(withError!.task!.error).toEqual({ code: 0n, reason: "" });
      });

      test("delivery is FIFO and at most once, up to `limit` per pull", () => {
        const runId = newRun();
        const ids = [0, 1, 2, 3, 4].map((i) => storeIns(runId, named(7n), { taskType: `t${i}` }));
        expect(state.getTaskIns(7n, 2).map((t) => t.taskId)).toEqual(ids.slice(0, 2));
        expect(state.getTaskIns(7n, 1).map((t) => t.taskId)).toEqual(ids.slice(2, 3));
        expect(state.getTaskIns(7n, 10).map((t) => t.taskId)).toEqual(ids.slice(3));
        expect(state.getTaskIns(7n, 10)).toEqual([]);
        expect(state.numTaskIns()).toBe(5); // delivered tasks stay until deleteTasks
      });

      test("addressed tasks go only to their node; anonymous ones only to anonymous pulls", () => {
        const runId = newRun();
        const forSeven = storeIns(runId, named(7n));
        const forAnyone = storeIns(runId, ANONYMOUS);
        const forEight = storeIns(runId, named(8n));
        expect(state.getTaskIns(9n, 10)).toEqual([]);
        expect(state.getTaskIns(undefined, 10).map((t) => t.taskId)).toEqual([forAnyone]);
        expect(state.getTaskIns(7n, 10).map((t) => t.taskId)).toEqual([forSeven]);
        expect(state.getTaskIns(8n, 10).map((t) => t.taskId)).toEqual([forEight]);
        expect(state.getTaskIns(undefined, 10)).toEqual([]);
        expect(state.getTaskIns(0n, 10)).toEqual([]);
      });

      test("tasks from several runs queue in one FIFO per node", () => {
        const runA = newRun();
        const runB = newRun();
        const first = storeIns(runA, named(7n));
        const second = storeIns(runB, named(7n));
        const got = state.getTaskIns(7n, 10);
        expect(got.map((t) => [t.taskId, t.runId])).toEqual([
          [first, runA],
          [second, runB],
        ]);
      });

      test("a limit below 1 is a caller bug (RangeError)", () => {
        expect(() => state.getTaskIns(7n, 0)).toThrow(RangeError);
        expect(() => state.getTaskIns(undefined, -1)).toThrow(RangeError);
      });

      test("extreme 64-bit consumer ids round-trip exactly", () => {
        const runId = newRun();
        const ids = [INT64_MIN, INT64_MAX, BEYOND_2_53, -BEYOND_2_53, -1n, 1n];
        const taskIds = ids.map((id) => storeIns(runId, named(id)));
        ids.forEach((id, i) => {
          const got = state.getTaskIns(id, 10);
          expect(got.map((t) => t.taskId)).toEqual([taskIds[i]]);
          expect(got[0]!.task!.consumer).toEqual({ nodeId: id, anonymous: false });
          expect(got[0]!.runId).toBe(runId);
        });
      });
    });

    describe("TaskRes", () => {
      test("storeTaskRes returns a fresh uuid4; an unknown run is rejected", () => {
        const runId = newRun();
        const insId = storeIns(runId, named(7n));
        const taskRes = makeTaskRes(clock, runId, 7n, insId);
        const resId = state.storeTaskRes(taskRes);
        expect(resId).toMatch(UUID4);
        expect(resId).not.toBe(insId);
        expect(taskRes.taskId).toBe("");
        expect(state.storeTaskRes(makeTaskRes(clock, 31337n, 7n, insId))).toBeUndefined();
        expect(state.numTaskRes()).toBe(1);
      });

      test.each(INVALID_TASK_RES)("invalid TaskRes (%s) is rejected and nothing is stored", (_, mutate) => {
        const runId = newRun();
        const insId = storeIns(runId, named(7n));
        const taskRes = makeTaskRes(clock, runId, 7n, insId);
        mutate(taskRes);
        expect(state.storeTaskRes(taskRes)).toBeUndefined();
        expect(state.numTaskRes()).toBe(0);
      });

      test("getTaskRes returns replies to the requested TaskIns only, once, marked delivered", () => {
        const runId = newRun();
        const nodeId = state.createNode(30);
        const insA = storeIns(runId, named(nodeId));
        const insB = storeIns(runId, named(nodeId));
        const resA = makeTaskRes(clock, runId, nodeId, insA, { recordset: sampleRecordSet() });
        const resAId = state.storeTaskRes(resA)!;
        storeRes(runId, nodeId, insB);
        clock.advance(2);
        const got = state.getTaskRes(new Set([insA]));
        expect(got).toEqual([
          { ...resA, taskId: resAId, task: { ...resA.task, deliveredAt: isoTimestamp(clock.now()) } },
        ]);
        expect(state.getTaskRes(new Set([insA]))).toEqual([]);
        expect(state.getTaskRes(new Set([insB])).map((r) => r.task!.ancestry)).toEqual([[insB]]);
      });

      test("an error reply keeps its error and stays without a RecordSet", () => {
        const runId = newRun();
        const nodeId = state.createNode(30);
        const insId = storeIns(runId, named(nodeId));
        const error = { code: BigInt(ErrorCode.CLIENT_APP_RAISED_EXCEPTION), reason: "ValueError: boom" };
        storeRes(runId, nodeId, insId, { recordset: undefined, error });
        const [got] = state.getTaskRes(new Set([insId]));
        expect(got!.task!.error).toEqual(error);
        expect(got!.task!.recordset).toBeUndefined();
      });

      test("extreme 64-bit producer ids and error codes round-trip exactly", () => {
        const runId = newRun();
        for (const id of [INT64_MIN, INT64_MAX, BEYOND_2_53]) {
          const insId = storeIns(runId, named(id));
          storeRes(runId, id, insId, { recordset: undefined, error: { code: id, reason: "r" } });
          const [got] = state.getTaskRes(new Set([insId]));
          expect(got!.task!.producer).toEqual({ nodeId: id, anonymous: false });
          expect(got!.task!.error!.code).toBe(id);
        }
      });

      test("replies come oldest first, and `limit` caps a pull", () => {
        const runId = newRun();
        const nodeId = state.createNode(30);
        const ins = [0, 1, 2].map(() => storeIns(runId, named(nodeId)));
        const res = [2, 0, 1].map((i) => storeRes(runId, nodeId, ins[i]!));
        const all = new Set(ins);
        expect(state.getTaskRes(all, 2).map((r) => r.taskId)).toEqual(res.slice(0, 2));
        expect(state.getTaskRes(all).map((r) => r.taskId)).toEqual(res.slice(2));
        expect(() => state.getTaskRes(all, 0)).toThrow(RangeError);
      });

      test("requested ids match case-insensitively, like parsed UUIDs", () => {
        const runId = newRun();
        const nodeId = state.createNode(30);
        const insId = storeIns(runId, named(nodeId));
        storeRes(runId, nodeId, insId.toUpperCase());
        expect(state.getTaskRes(new Set([insId])).length).toBe(1);
      });

      test("a reply whose ancestry is not a UUID is refused and breaks no pull", () => {
        const runId = newRun();
        const nodeId = state.createNode(30);
        const insId = storeIns(runId, named(nodeId));
        expect(state.storeTaskRes(makeTaskRes(clock, runId, nodeId, "not-a-uuid"))).toBeUndefined();
        storeRes(runId, nodeId, insId);
        expect(state.getTaskRes(new Set([insId])).map((r) => r.task!.ancestry[0])).toEqual([insId]);
        expect(state.getTaskRes(new Set(["not-a-uuid"]))).toEqual([]);
      });

      test("getTaskRes of no ids, or of unknown ids, is empty", () => {
        expect(state.getTaskRes(new Set())).toEqual([]);
        expect(state.getTaskRes(new Set(["00000000-0000-4000-8000-000000000000"]))).toEqual([]);
      });
    });

    describe("error replies for offline consumers", () => {
      test("an unanswered TaskIns for an offline node gets exactly Flower's NODE_UNAVAILABLE reply", () => {
        const runId = newRun();
        const nodeId = state.createNode(5);
        const taskIns = makeTaskIns(clock, runId, named(nodeId), { ttl: 100, taskType: "evaluate" });
        taskIns.groupId = "round-3";
        const insId = state.storeTaskIns(taskIns)!;
        clock.advance(4);
        expect(state.getTaskRes(new Set([insId]))).toEqual([]); // still online: just no reply yet
        clock.advance(12);
        const got = state.getTaskRes(new Set([insId]));
        expect(got).toHaveLength(1);
        const res = got[0]!;
        expect(res.taskId).toMatch(UUID4);
        expect(res.taskId).not.toBe(insId);
        expect(res.groupId).toBe("round-3");
        expect(res.runId).toBe(runId);
        const { ttl, ...task } = res.task!;
        expect(task).toEqual({
          producer: { nodeId, anonymous: false },
          consumer: { nodeId: 0n, anonymous: false },
          createdAt: clock.now(),
          deliveredAt: isoTimestamp(clock.now()),
          pushedAt: 0,
          ancestry: [insId],
          taskType: "evaluate",
          recordset: undefined,
          error: { code: BigInt(ErrorCode.NODE_UNAVAILABLE), reason: NODE_UNAVAILABLE_REASON },
        });
        expect(ttl).toBeCloseTo(100 - 16, 6);
        expect(state.numTaskRes()).toBe(1);
      });

      test("the synthesized reply is stored once and delivered once", () => {
        const runId = newRun();
        const nodeId = state.createNode(5);
        const insId = storeIns(runId, named(nodeId));
        clock.advance(10);
        expect(state.getTaskRes(new Set([insId]))).toHaveLength(1);
        expect(state.getTaskRes(new Set([insId]))).toEqual([]);
        expect(state.numTaskRes()).toBe(1);
        state.deleteTasks(new Set([insId]));
        expect([state.numTaskIns(), state.numTaskRes()]).toEqual([0, 0]);
      });

      test("the remaining ttl is clamped at 0", () => {
        const runId = newRun();
        const nodeId = state.createNode(5);
        const insId = storeIns(runId, named(nodeId), { ttl: 3 });
        clock.advance(10);
        expect(state.getTaskRes(new Set([insId]))[0]!.task!.ttl).toBe(0);
      });

      test("a deleted consumer counts as offline", () => {
        const runId = newRun();
        const nodeId = state.createNode(30);
        const insId = storeIns(runId, named(nodeId));
        state.deleteNode(nodeId);
        const got = state.getTaskRes(new Set([insId]));
        expect(got.map((r) => [r.task!.producer!.nodeId, r.task!.error!.code])).toEqual([[nodeId, 3n]]);
      });

      test("a consumer that never existed counts as offline", () => {
        const runId = newRun();
        const insId = storeIns(runId, named(4242n));
        expect(state.getTaskRes(new Set([insId])).map((r) => r.task!.error!.code)).toEqual([3n]);
      });

      test("only the requested TaskIns get error replies", () => {
        const runId = newRun();
        const nodeId = state.createNode(5);
        const requested = storeIns(runId, named(nodeId));
        const other = storeIns(runId, named(nodeId));
        clock.advance(10);
        expect(state.getTaskRes(new Set([requested])).map((r) => r.task!.ancestry)).toEqual([[requested]]);
        expect(state.numTaskRes()).toBe(1);
        expect(state.getTaskRes(new Set([other])).map((r) => r.task!.ancestry)).toEqual([[other]]);
      });

      test("a TaskIns that already has a reply, even a delivered one, gets no error reply", () => {
        const runId = newRun();
        const nodeId = state.createNode(5);
        const insId = storeIns(runId, named(nodeId));
        storeRes(runId, nodeId, insId);
        expect(state.getTaskRes(new Set([insId]))).toHaveLength(1);
        clock.advance(10);
        // Asked for again, the stored reply may come again (delivery lease), never an error.
        expect(state.getTaskRes(new Set([insId])).filter((r) => r.task!.error !== undefined)).toEqual([]);
        expect(state.numTaskRes()).toBe(1);
      });

      test("a pending real reply of an offline node is delivered instead of an error", () => {
        const runId = newRun();
        const nodeId = state.createNode(5);
        const insId = storeIns(runId, named(nodeId));
        storeRes(runId, nodeId, insId);
        clock.advance(10);
        const got = state.getTaskRes(new Set([insId]));
        expect(got.map((r) => r.task!.error)).toEqual([undefined]);
      });

      test("TaskIns for anonymous consumers get no error reply", () => {
        const runId = newRun();
        const insId = storeIns(runId, ANONYMOUS);
        clock.advance(3000); // within its ttl of 3600 s
        expect(state.getTaskRes(new Set([insId]))).toEqual([]);
      });

      test("error replies come after real ones, oldest TaskIns first, within `limit`", () => {
        const runId = newRun();
        const online = state.createNode(1000);
        const offline = state.createNode(5);
        const lost1 = storeIns(runId, named(offline));
        const answered = storeIns(runId, named(online));
        const lost2 = storeIns(runId, named(offline));
        storeRes(runId, online, answered);
        clock.advance(10);
        const all = new Set([lost2, answered, lost1]);
        expect(state.getTaskRes(all, 2).map((r) => r.task!.ancestry[0])).toEqual([answered, lost1]);
        expect(state.getTaskRes(all, 2).map((r) => r.task!.ancestry[0])).toEqual([lost2]);
      });
    });

    describe("deleteTasks", () => {
      test("deletes a TaskIns and its reply only once the reply was delivered", () => {
        const runId = newRun();
        const nodeId = state.createNode(30);
        const insId = storeIns(runId, named(nodeId));
        state.deleteTasks(new Set([insId]));
        expect([state.numTaskIns(), state.numTaskRes()]).toEqual([1, 0]);
        storeRes(runId, nodeId, insId);
        state.deleteTasks(new Set([insId]));
        expect([state.numTaskIns(), state.numTaskRes()]).toEqual([1, 1]);
        state.getTaskRes(new Set([insId]));
        state.deleteTasks(new Set([insId]));
        expect([state.numTaskIns(), state.numTaskRes()]).toEqual([0, 0]);
      });

      test("touches only the requested pairs", () => {
        const runId = newRun();
        const nodeId = state.createNode(30);
        const a = storeIns(runId, named(nodeId));
        const b = storeIns(runId, named(nodeId));
        storeRes(runId, nodeId, a);
        storeRes(runId, nodeId, b);
        state.getTaskRes(new Set([a, b]));
        state.deleteTasks(new Set([a]));
        expect([state.numTaskIns(), state.numTaskRes()]).toEqual([1, 1]);
        state.deleteTasks(new Set(["00000000-0000-4000-8000-000000000000"]));
        state.deleteTasks(new Set());
        expect([state.numTaskIns(), state.numTaskRes()]).toEqual([1, 1]);
      });

      test("after deletion, a late reply for the deleted TaskIns is refused", () => {
        const runId = newRun();
        const nodeId = state.createNode(30);
        const insId = storeIns(runId, named(nodeId));
        storeRes(runId, nodeId, insId);
        state.getTaskRes(new Set([insId]));
        state.deleteTasks(new Set([insId]));
        expect(state.storeTaskRes(makeTaskRes(clock, runId, nodeId, insId))).toBeUndefined();
        expect([state.numTaskIns(), state.numTaskRes()]).toEqual([0, 0]);
      });

      test("a delivered TaskIns stays delivered after its pair is deleted elsewhere", () => {
        const runId = newRun();
        const nodeId = state.createNode(30);
        const a = storeIns(runId, named(nodeId));
        const b = storeIns(runId, named(nodeId));
        expect(state.getTaskIns(nodeId, 1).map((t) => t.taskId)).toEqual([a]);
        storeRes(runId, nodeId, a);
        state.getTaskRes(new Set([a]));
        state.deleteTasks(new Set([a]));
        expect(state.getTaskIns(nodeId, 10).map((t) => t.taskId)).toEqual([b]);
      });
    });

    describe("delivery lease (at-least-once)", () => {
      // Default lease: half the TTL within [5 s, 60 s]; TTL 20 s gives 10 s.
      test("an unanswered TaskIns is offered again once its lease passed, not before", () => {
        const runId = newRun();
        const nodeId = state.createNode(3600);
        const insId = storeIns(runId, named(nodeId), { ttl: 20 });
        expect(state.getTaskIns(nodeId, 10).map((t) => t.taskId)).toEqual([insId]);
        clock.advance(9.5);
        expect(state.getTaskIns(nodeId, 10)).toEqual([]);
        clock.advance(0.5);
        const again = state.getTaskIns(nodeId, 10);
        expect(again.map((t) => t.taskId)).toEqual([insId]);
        expect(again[0]!.task!.deliveredAt).toBe(isoTimestamp(clock.now()));
        // A new lease starts with each delivery.
        clock.advance(5);
        expect(state.getTaskIns(nodeId, 10)).toEqual([]);
      });

      test("an answered or expired TaskIns is never offered again; FIFO order and the limit hold", () => {
        const runId = newRun();
        const nodeId = state.createNode(3600);
        const answered = storeIns(runId, named(nodeId), { ttl: 20 });
        const expiring = storeIns(runId, named(nodeId), { ttl: 11 });
        const lost = storeIns(runId, named(nodeId), { ttl: 20 });
        expect(state.getTaskIns(nodeId, 10)).toHaveLength(3);
        storeRes(runId, nodeId, answered);
        const fresh = storeIns(runId, named(nodeId), { ttl: 20 });
        clock.advance(11);
        expect(state.getTaskIns(nodeId, 1).map((t) => t.taskId)).toEqual([lost]);
        expect(state.getTaskIns(nodeId, 10).map((t) => t.taskId)).toEqual([fresh]);
        expect(expiring).not.toBe(lost);
      });

      test("the default lease is capped at 60 s", () => {
        const runId = newRun();
        const nodeId = state.createNode(3600);
        const insId = storeIns(runId, named(nodeId), { ttl: 3600 });
        state.getTaskIns(nodeId, 1);
        clock.advance(59);
        expect(state.getTaskIns(nodeId, 1)).toEqual([]);
        clock.advance(1);
        expect(state.getTaskIns(nodeId, 1).map((t) => t.taskId)).toEqual([insId]);
      });

      test("a delivered TaskRes whose pair was not deleted is offered again when asked for 2 s later", () => {
        const runId = newRun();
        const nodeId = state.createNode(3600);
        const insId = storeIns(runId, named(nodeId));
        const resId = storeRes(runId, nodeId, insId);
        expect(state.getTaskRes(new Set([insId])).map((r) => r.taskId)).toEqual([resId]);
        expect(state.getTaskRes(new Set([insId]))).toEqual([]);
        clock.advance(1.9);
        expect(state.getTaskRes(new Set([insId]))).toEqual([]);
        clock.advance(0.1);
        expect(state.getTaskRes(new Set([insId])).map((r) => r.taskId)).toEqual([resId]);
        state.deleteTasks(new Set([insId]));
        clock.advance(10);
        expect(state.getTaskRes(new Set([insId]))).toEqual([]);
        expect([state.numTaskIns(), state.numTaskRes()]).toEqual([0, 0]);
      });
    });


    // flwr-ts security rules (not in Flower 1.10): one result per task, TTLs, storage limits.
    describe("one result per task", () => {
      test("a second reply stores nothing and returns the first reply's id", () => {
        const runId = newRun();
        const nodeId = state.createNode(30);
        const insId = storeIns(runId, named(nodeId));
        const rec = recorder();
        state.subscribe(rec.events);
        const first = storeRes(runId, nodeId, insId);
        expect(state.storeTaskRes(makeTaskRes(clock, runId, nodeId, insId))).toBe(first);
        expect(state.storeTaskRes(makeTaskRes(clock, runId, nodeId, insId.toUpperCase()))).toBe(first);
        expect(state.numTaskRes()).toBe(1);
        expect(rec.res).toEqual([insId]);
        expect(state.getTaskRes(new Set([insId])).map((r) => r.taskId)).toEqual([first]);
      });

      test("a replay after delivery changes nothing; after deletion it is refused", () => {
        const runId = newRun();
        const nodeId = state.createNode(30);
        const insId = storeIns(runId, named(nodeId));
        const first = storeRes(runId, nodeId, insId);
        expect(state.getTaskRes(new Set([insId]))).toHaveLength(1);
        for (let i = 0; i < 5; i++) expect(state.storeTaskRes(makeTaskRes(clock, runId, nodeId, insId))).toBe(first);
        expect(state.getTaskRes(new Set([insId]))).toEqual([]);
        state.deleteTasks(new Set([insId]));
        for (let i = 0; i < 5; i++) expect(state.storeTaskRes(makeTaskRes(clock, runId, nodeId, insId))).toBeUndefined();
        expect([state.numTaskIns(), state.numTaskRes(), state.storedBytes()]).toEqual([0, 0, 0]);
      });

      test("a real reply after a synthesized error reply is ignored", () => {
        const runId = newRun();
        const nodeId = state.createNode(5);
        const insId = storeIns(runId, named(nodeId));
        clock.advance(10);
        const [errorRes] = state.getTaskRes(new Set([insId]));
        expect(state.storeTaskRes(makeTaskRes(clock, runId, nodeId, insId))).toBe(errorRes!.taskId);
        expect(state.numTaskRes()).toBe(1);
      });

      test("a reply naming no stored TaskIns is refused", () => {
        const runId = newRun();
        expect(state.storeTaskRes(makeTaskRes(clock, runId, 7n, "00000000-0000-4000-8000-000000000000"))).toBeUndefined();
        expect(state.numTaskRes()).toBe(0);
      });

      test("a reply from another node than the TaskIns's consumer is refused", () => {
        const runId = newRun();
        const insId = storeIns(runId, named(7n));
        expect(state.storeTaskRes(makeTaskRes(clock, runId, 8n, insId))).toBeUndefined();
        const anonymousProducer = makeTaskRes(clock, runId, 0n, insId, { producer: ANONYMOUS });
        expect(state.storeTaskRes(anonymousProducer)).toBeUndefined();
        expect(state.numTaskRes()).toBe(0);
        expect(storeRes(runId, 7n, insId)).toMatch(UUID4);
      });

      test("a reply in another run than its TaskIns is refused", () => {
        const runA = newRun();
        const runB = newRun();
        const insId = storeIns(runA, named(7n));
        expect(state.storeTaskRes(makeTaskRes(clock, runB, 7n, insId))).toBeUndefined();
        expect(state.numTaskRes()).toBe(0);
      });

      test("an anonymous TaskIns takes a reply from any producer, once", () => {
        const runId = newRun();
        const insId = storeIns(runId, ANONYMOUS);
        const first = storeRes(runId, 9n, insId);
        expect(state.storeTaskRes(makeTaskRes(clock, runId, 10n, insId))).toBe(first);
        expect(state.numTaskRes()).toBe(1);
      });
    });

    describe("expiry (TTL)", () => {
      test("an already expired TaskIns is not stored", () => {
        const runId = newRun();
        const stale = makeTaskIns(clock, runId, named(7n), { createdAt: clock.now() - 20, ttl: 10 });
        expect(state.storeTaskIns(stale)).toBeUndefined();
        expect(state.numTaskIns()).toBe(0);
      });

      test("an expired TaskIns is not delivered", () => {
        const runId = newRun();
        storeIns(runId, named(7n), { ttl: 10 });
        const live = storeIns(runId, named(7n), { ttl: 100 });
        clock.advance(10);
        expect(state.getTaskIns(7n, 10).map((t) => t.taskId)).toEqual([live]);
      });

      test("an expired unanswered TaskIns gets an expiry error reply, once (anonymous consumers too)", () => {
        const runId = newRun();
        const nodeId = state.createNode(1000);
        const named1 = storeIns(runId, named(nodeId), { ttl: 10 });
        const anon = storeIns(runId, ANONYMOUS, { ttl: 10 });
        expect(state.getTaskRes(new Set([named1, anon]))).toEqual([]);
        clock.advance(11);
        const got = state.getTaskRes(new Set([named1, anon]));
        expect(got.map((r) => [r.task!.ancestry[0], r.task!.error])).toEqual([
          [named1, { code: BigInt(ErrorCode.NODE_UNAVAILABLE), reason: TASK_EXPIRED_REASON }],
          [anon, { code: BigInt(ErrorCode.NODE_UNAVAILABLE), reason: TASK_EXPIRED_REASON }],
        ]);
        expect(state.getTaskRes(new Set([named1, anon]))).toEqual([]);
      });

      test("a reply to an expired TaskIns is refused", () => {
        const runId = newRun();
        const insId = storeIns(runId, named(7n), { ttl: 10 });
        clock.advance(10);
        expect(state.storeTaskRes(makeTaskRes(clock, runId, 7n, insId))).toBeUndefined();
        expect(state.numTaskRes()).toBe(0);
      });

      test("purge removes TaskIns expired for longer than the grace, with their replies", () => {
        const runId = newRun();
        const nodeId = state.createNode(1000);
        const answered = storeIns(runId, named(nodeId), { ttl: 10 });
        storeRes(runId, nodeId, answered);
        const unanswered = storeIns(runId, named(nodeId), { ttl: 10 });
        const live = storeIns(runId, named(nodeId), { ttl: 100 });
        const options = { expiredGraceSeconds: 5, runIdleSeconds: 1e6 };
        clock.advance(12);
        expect(state.purge(options)).toEqual({ taskIns: 0, taskRes: 0, runs: 0 }); // within the grace
        clock.advance(5);
        expect(state.purge(options)).toEqual({ taskIns: 2, taskRes: 1, runs: 0 });
        expect([state.numTaskIns(), state.numTaskRes()]).toEqual([1, 0]);
        expect(state.getTaskRes(new Set([answered, unanswered]))).toEqual([]);
        expect(state.getTaskIns(nodeId, 10).map((t) => t.taskId)).toEqual([live]);
        expect(state.storedBytes()).toBe(state.storedBytes(runId));
        clock.advance(100);
        expect(state.purge(options)).toEqual({ taskIns: 1, taskRes: 0, runs: 0 });
        expect(state.storedBytes()).toBe(0);
      });

      test("purge removes runs idle for runIdleSeconds with no tasks, and keeps the others", () => {
        const idle = newRun();
        const busy = newRun();
        storeIns(busy, named(7n), { ttl: 1e6 });
        const options = { expiredGraceSeconds: 0, runIdleSeconds: 100 };
        clock.advance(99);
        expect(state.purge(options).runs).toBe(0);
        const fresh = newRun();
        clock.advance(2);
        expect(state.purge(options)).toEqual({ taskIns: 0, taskRes: 0, runs: 1 });
        expect(state.getRun(idle)).toBeUndefined();
        expect(state.getRun(busy)).toBeDefined();
        expect(state.getRun(fresh)).toBeDefined();
        expect(state.storeTaskIns(makeTaskIns(clock, idle, named(7n)))).toBeUndefined();
      });
    });

    describe("storage limits", () => {
      const payload = (size: number): RecordSet => ({
        parameters: new Map([["w", { dataKeys: ["a"], dataValues: [{ dtype: "u8", shape: [size], stype: "raw", data: Buffer.alloc(size, 1) }] }]]),
        metrics: new Map(),
        configs: new Map(),
      });

      test("taskBytes charges the encoded RecordSet plus a fixed overhead", () => {
        const small = makeTaskIns(clock, 1n, named(7n));
        const big = makeTaskIns(clock, 1n, named(7n), { recordset: payload(10_000) });
        expect(taskBytes(small)).toBe(TASK_OVERHEAD_BYTES);
        expect(taskBytes(big)).toBeGreaterThan(10_000 + TASK_OVERHEAD_BYTES);
        expect(taskBytes(big)).toBeLessThan(10_100 + TASK_OVERHEAD_BYTES);
      });
    });

    describe("notifications", () => {
      test("storing TaskIns and TaskRes notifies subscribers with consumer and TaskIns id", () => {
        const runId = newRun();
        const rec = recorder();
        state.subscribe(rec.events);
        const insId = storeIns(runId, named(INT64_MIN));
        storeIns(runId, ANONYMOUS);
        storeRes(runId, INT64_MIN, insId);
        expect(rec.ins).toEqual([
          [INT64_MIN, false],
          [0n, true],
        ]);
        expect(rec.res).toEqual([insId]);
      });

      test("a synthesized error reply notifies too", () => {
        const runId = newRun();
        const nodeId = state.createNode(5);
        const insId = storeIns(runId, named(nodeId));
        const rec = recorder();
        state.subscribe(rec.events);
        clock.advance(10);
        state.getTaskRes(new Set([insId]));
        expect(rec.res).toEqual([insId]);
      });

      test("rejected stores notify nobody", () => {
        const runId = newRun();
        const rec = recorder();
        state.subscribe(rec.events);
        const bad = makeTaskIns(clock, runId, named(7n), { ttl: 0 });
        expect(state.storeTaskIns(bad)).toBeUndefined();
        expect(state.storeTaskIns(makeTaskIns(clock, 31337n, named(7n)))).toBeUndefined();
        expect(state.storeTaskRes(makeTaskRes(clock, runId, 7n, "x", { ancestry: [] }))).toBeUndefined();
        expect([rec.ins, rec.res]).toEqual([[], []]);
      });

      test("unsubscribe stops notifications", () => {
        const runId = newRun();
        const rec = recorder();
        const unsubscribe = state.subscribe(rec.events);
        storeIns(runId, named(7n));
        unsubscribe();
        storeIns(runId, named(7n));
        expect(rec.ins).toHaveLength(1);
      });

      test("a throwing listener neither fails the store nor starves other listeners", () => {
        const runId = newRun();
        state.subscribe({
          onTaskInsStored: () => {
            throw new Error("listener bug");
          },
        });
        const rec = recorder();
        state.subscribe(rec.events);
        expect(storeIns(runId, named(7n))).toMatch(UUID4);
        expect(rec.ins).toEqual([[7n, false]]);
        expect(state.getTaskIns(7n, 1)).toHaveLength(1);
      });

      test("a listener may read the state it is notified about", () => {
        const runId = newRun();
        const pulled: TaskIns[] = [];
        state.subscribe({ onTaskInsStored: (nodeId) => pulled.push(...state.getTaskIns(nodeId, 1)) });
        const insId = storeIns(runId, named(7n));
        expect(pulled.map((t) => t.taskId)).toEqual([insId]);
      });
    });
  });
}

/**
 * The storage limits of the State contract. `makeState` must return a fresh, empty State with
 * the given limits and clock.
 */
export function describeStateLimits(name: string, makeState: (clock: TestClock, limits: StateLimits) => State): void {
  describe(`State limits: ${name}`, () => {
    let clock: TestClock;
    const states: State[] = [];
    const open = (limits: StateLimits): State => {
      const state = makeState(clock, limits);
      states.push(state);
      return state;
    };
    beforeEach(() => {
      clock = new TestClock();
    });
    afterEach(() => {
      for (const s of states.splice(0)) s.close();
    });
    const payload = (size: number): RecordSet => ({
      parameters: new Map([["w", { dataKeys: ["a"], dataValues: [{ dtype: "u8", shape: [size], stype: "raw", data: Buffer.alloc(size, 1) }] }]]),
      metrics: new Map(),
      configs: new Map(),
    });

    test("a TaskIns beyond the per-run byte limit throws ResourceExhaustedError and stores nothing", () => {
      const state = open({ maxRunBytes: 25_000 });
      const runA = state.createRun("f", "v", new Map());
      const runB = state.createRun("f", "v", new Map());
      expect(state.storeTaskIns(makeTaskIns(clock, runA, named(7n), { recordset: payload(10_000) }))).toMatch(UUID4);
      expect(state.storeTaskIns(makeTaskIns(clock, runA, named(7n), { recordset: payload(10_000) }))).toMatch(UUID4);
      const before = state.storedBytes(runA);
      expect(() => state.storeTaskIns(makeTaskIns(clock, runA, named(7n), { recordset: payload(10_000) }))).toThrow(ResourceExhaustedError);
      expect([state.numTaskIns(), state.storedBytes(runA)]).toEqual([2, before]);
      // Another run has its own budget.
      expect(state.storeTaskIns(makeTaskIns(clock, runB, named(7n), { recordset: payload(10_000) }))).toMatch(UUID4);
    });

    test("the total byte limit spans runs, results count too, and pulling frees space", () => {
      const state = open({ maxStoredBytes: 25_000 });
      const runA = state.createRun("f", "v", new Map());
      const runB = state.createRun("f", "v", new Map());
      const insA = state.storeTaskIns(makeTaskIns(clock, runA, named(7n), { recordset: payload(10_000) }))!;
      state.storeTaskIns(makeTaskIns(clock, runB, named(7n), { recordset: payload(10_000) }));
      expect(() => state.storeTaskRes(makeTaskRes(clock, runA, 7n, insA, { recordset: payload(10_000) }))).toThrow(ResourceExhaustedError);
      expect(state.numTaskRes()).toBe(0);
      expect(() => state.checkStorage(new Map([[runB, 10_000]]))).toThrow(ResourceExhaustedError);
      expect(state.storeTaskRes(makeTaskRes(clock, runA, 7n, insA))).toMatch(UUID4);
      state.getTaskRes(new Set([insA]));
      state.deleteTasks(new Set([insA]));
      expect(state.storedBytes()).toBe(state.storedBytes(runB));
      expect(() => state.checkStorage(new Map([[runB, 10_000]]))).not.toThrow();
    });

    test("createRun beyond maxRuns throws ResourceExhaustedError; purging an idle run makes room", () => {
      const state = open({ maxRuns: 2 });
      state.createRun("f", "v", new Map());
      state.createRun("f", "v", new Map());
      expect(() => state.createRun("f", "v", new Map())).toThrow(ResourceExhaustedError);
      clock.advance(10);
      expect(state.purge({ expiredGraceSeconds: 0, runIdleSeconds: 5 }).runs).toBe(2);
      expect(state.createRun("f", "v", new Map())).not.toBe(0n);
    });
  });
}
