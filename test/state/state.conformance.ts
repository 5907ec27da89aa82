/**
 * The State contract, as one suite every backend runs (src/state/state.ts). A behaviour
 * that is not tested here is not part of the contract.
 *
 * Time is a TestClock the suite moves by hand, so liveness is tested without sleeping.
 */
import { ErrorCode, MIN_TASK_TIMESTAMP, NODE_UNAVAILABLE_REASON } from "../../src/core/constants";
import { MalformedMessageError, NotFoundError, ResourceExhaustedError } from "../../src/core/errors";
import type { Node } from "../../src/proto/flwr/proto/node";
import { RecordSet } from "../../src/proto/flwr/proto/recordset";
import type { Task, TaskIns, TaskRes } from "../../src/proto/flwr/proto/task";
import type { Scalar } from "../../src/proto/flwr/proto/transport";
import type { SharedContent, State, StateEvents, StateLimits } from "../../src/state/state";
import {
  TASK_EXPIRED_REASON,
  TASK_OVERHEAD_BYTES,
  contentDigest,
  isoTimestamp,
  taskBytes,
} from "../../src/state/state-support";

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

/** Runs `fn` on each item one after the other (order matters: FIFO queues, ids). */
export async function inOrder<T, R>(items: readonly T[], fn: (item: T, index: number) => Promise<R>): Promise<R[]> {
  const out: R[] = [];
  for (const [i, item] of items.entries()) out.push(await fn(item, i));
  return out;
}

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

/** Shared content as the SuperLink makes it from received bytes: digest and decoded RecordSet. */
export function makeSharedContent(recordset: RecordSet): SharedContent {
  const encoded = Buffer.from(RecordSet.encode(recordset).finish());
  return { digest: contentDigest(encoded), encoded, recordset: RecordSet.decode(encoded) };
}

/** A RecordSet with one array of `size` bytes of `fill`. */
function payloadRecordSet(size: number, fill = 1): RecordSet {
  return {
    parameters: new Map([
      [
        "w",
        { dataKeys: ["a"], dataValues: [{ dtype: "u8", shape: [size], stype: "raw", data: Buffer.alloc(size, fill) }] },
      ],
    ]),
    metrics: new Map(),
    configs: new Map([["c", { data: new Map([["round", { sint64: 3n }]]) }]]),
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
export function describeStateConformance(name: string, makeState: (clock: TestClock) => State | Promise<State>): void {
  describe(`State contract: ${name}`, () => {
    let clock: TestClock;
    let state: State;

    beforeEach(async () => {
      clock = new TestClock();
      state = await makeState(clock);
    });
    afterEach(async () => await state.close());

    const newRun = (): Promise<bigint> => state.createRun("fab", "1.0", new Map());
    const storeIns = async (runId: bigint, consumer: Node, task: Partial<Task> = {}): Promise<string> => {
      const id = await state.storeTaskIns(makeTaskIns(clock, runId, consumer, task));
      if (id === undefined) throw new Error("test setup: TaskIns was not stored");
      return id;
    };
    const storeRes = async (
      runId: bigint,
      producerId: bigint,
      taskInsId: string,
      task: Partial<Task> = {},
    ): Promise<string> => {
      const id = await state.storeTaskRes(makeTaskRes(clock, runId, producerId, taskInsId, task));
      if (id === undefined) throw new Error("test setup: TaskRes was not stored");
      return id;
    };

    describe("runs", () => {
      test("createRun returns a non-zero id and getRun returns the run with its config", async () => {
        const config = new Map<string, Scalar>([
          ["lr", { double: 0.1 }],
          ["one-float", { double: 1 }],
          ["rounds", { sint64: 3n }],
          ["big", { sint64: INT64_MIN }],
          ["flag", { bool: false }],
          ["name", { string: "" }],
        ]);
        const runId = await state.createRun("flwr/demo", "1.0.0", config);
        expect(typeof runId).toBe("bigint");
        expect(runId).not.toBe(0n);
        const run = await state.getRun(runId);
        expect(run).toEqual({ runId, fabId: "flwr/demo", fabVersion: "1.0.0", overrideConfig: config });
        // ints and floats stay distinct
        expect(run!.overrideConfig.get("one-float")!.double).toBe(1);
        expect(run!.overrideConfig.get("one-float")!.sint64).toBeUndefined();
        expect(run!.overrideConfig.get("rounds")!.sint64).toBe(3n);
      });

      test("empty fab id and version are accepted (what flower-server-app sends by default)", async () => {
        const runId = await state.createRun("", "", new Map());
        expect(await state.getRun(runId)).toEqual({ runId, fabId: "", fabVersion: "", overrideConfig: new Map() });
      });

      test("getRun of an unknown id is undefined, not an error", async () => {
        expect(await state.getRun(12345n)).toBeUndefined();
        expect(await state.getRun(0n)).toBeUndefined();
      });

      test("the stored config is not changed by mutating the map given or returned", async () => {
        const config = new Map<string, Scalar>([["a", { sint64: 1n }]]);
        const runId = await state.createRun("f", "v", config);
        config.set("b", { bool: true });
        (await state.getRun(runId))!.overrideConfig.set("c", { bool: true });
        expect([...(await state.getRun(runId))!.overrideConfig.keys()]).toEqual(["a"]);
      });

      test("run ids are random signed 64-bit values: negative and beyond 2^53 round-trip", async () => {
        const ids = await inOrder(Array.from({ length: 32 }), () => newRun());
        expect(new Set(ids).size).toBe(ids.length);
        for (const id of ids) {
          expect(id >= INT64_MIN && id <= INT64_MAX && id !== 0n).toBe(true);
          expect((await state.getRun(id))?.runId).toBe(id);
        }
        // 32 fair draws: all non-negative, or all within 2^53, has probability < 2^-32.
        expect(ids.some((id) => id < 0n)).toBe(true);
        expect(ids.some((id) => id > BEYOND_2_53 || id < -BEYOND_2_53)).toBe(true);
      });
    });

    describe("nodes and liveness", () => {
      test("a new node is online and listed by getNodes of an existing run", async () => {
        const runId = await newRun();
        const nodeId = await state.createNode(30);
        expect(typeof nodeId).toBe("bigint");
        expect(nodeId).not.toBe(0n);
        expect(await state.getNodes(runId)).toEqual(new Set([nodeId]));
      });

      test("getNodes of an unknown run is empty even with online nodes", async () => {
        await state.createNode(30);
        expect(await state.getNodes(987654321n)).toEqual(new Set());
      });

      test("getNodes is not filtered by run", async () => {
        const a = await state.createNode(30);
        const b = await state.createNode(30);
        expect(await state.getNodes(await newRun())).toEqual(new Set([a, b]));
      });

      test("a node goes offline when its ping interval passes and comes back on ping", async () => {
        const runId = await newRun();
        const nodeId = await state.createNode(30);
        clock.advance(29);
        expect((await state.getNodes(runId)).has(nodeId)).toBe(true);
        clock.advance(2);
        expect((await state.getNodes(runId)).has(nodeId)).toBe(false);
        expect(await state.acknowledgePing(nodeId, 10)).toBe(true);
        expect((await state.getNodes(runId)).has(nodeId)).toBe(true);
        clock.advance(11); // the new interval applies
        expect((await state.getNodes(runId)).has(nodeId)).toBe(false);
      });

      test("only online nodes are listed", async () => {
        const runId = await newRun();
        const shortLived = await state.createNode(5);
        const longLived = await state.createNode(60);
        clock.advance(10);
        expect(await state.getNodes(runId)).toEqual(new Set([longLived]));
        expect(await state.acknowledgePing(shortLived, 30)).toBe(true);
        expect(await state.getNodes(runId)).toEqual(new Set([shortLived, longLived]));
      });

      test("acknowledgePing of an unknown node is false", async () => {
        expect(await state.acknowledgePing(424242n, 30)).toBe(false);
      });

      test("a NaN ping interval is rejected", async () => {
        await expect(state.createNode(NaN)).rejects.toThrow(MalformedMessageError);
        const nodeId = await state.createNode(30);
        await expect(state.acknowledgePing(nodeId, NaN)).rejects.toThrow(MalformedMessageError);
        expect(await state.getNodes(await newRun())).toEqual(new Set([nodeId]));
      });

      test("deleteNode removes the node; an unknown node throws NotFoundError", async () => {
        const runId = await newRun();
        const nodeId = await state.createNode(30);
        await state.deleteNode(nodeId);
        expect(await state.getNodes(runId)).toEqual(new Set());
        expect(await state.acknowledgePing(nodeId, 30)).toBe(false);
        await expect(state.deleteNode(nodeId)).rejects.toThrow(NotFoundError);
        await expect(state.deleteNode(777n)).rejects.toThrow(NotFoundError);
      });

      test("node ids are random signed 64-bit values: negative and beyond 2^53 round-trip", async () => {
        const runId = await newRun();
        const ids = await inOrder(Array.from({ length: 32 }), () => state.createNode(30));
        expect(await state.getNodes(runId)).toEqual(new Set(ids));
        expect(ids.some((id) => id < 0n)).toBe(true);
        expect(ids.some((id) => id > BEYOND_2_53 || id < -BEYOND_2_53)).toBe(true);
        for (const id of ids) expect(await state.acknowledgePing(id, 30)).toBe(true);
      });
    });

    describe("public keys", () => {
      const keyA = (): Uint8Array =>
        new TextEncoder().encode("-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----\n");
      const keyB = (): Uint8Array =>
        new TextEncoder().encode("-----BEGIN PUBLIC KEY-----\nBBBB\n-----END PUBLIC KEY-----\n");

      test("a node created with a key is found by the key's bytes", async () => {
        const nodeId = await state.createNode(30, keyA());
        expect(nodeId).not.toBe(0n);
        expect(await state.getNodeId(keyA())).toBe(nodeId); // a different array with the same bytes
        expect(await state.getNodeId(keyB())).toBeUndefined();
      });

      test("a key already mapped to a node cannot create another (0n)", async () => {
        const runId = await newRun();
        const nodeId = await state.createNode(30, keyA());
        expect(await state.createNode(30, keyA())).toBe(0n);
        expect(await state.getNodes(runId)).toEqual(new Set([nodeId]));
        expect(await state.createNode(30, keyB())).not.toBe(0n);
      });

      test("the key mapping outlives the node's liveness", async () => {
        const nodeId = await state.createNode(5, keyA());
        clock.advance(100);
        expect(await state.getNodeId(keyA())).toBe(nodeId);
        expect(await state.acknowledgePing(nodeId, 30)).toBe(true);
      });

      test("deleteNode drops the key mapping, so the same key can create a node again", async () => {
        const runId = await newRun();
        const first = await state.createNode(30, keyA());
        await state.deleteNode(first);
        expect(await state.getNodeId(keyA())).toBeUndefined();
        const second = await state.createNode(30, keyA());
        expect(second).not.toBe(0n);
        expect(await state.getNodeId(keyA())).toBe(second);
        expect(await state.getNodes(runId)).toEqual(new Set([second]));
        expect(await state.acknowledgePing(second, 30)).toBe(true);
      });
    });

    describe("TaskIns", () => {
      test("storeTaskIns returns a fresh uuid4 and leaves its argument untouched", async () => {
        const runId = await newRun();
        const taskIns = makeTaskIns(clock, runId, named(5n));
        const before = makeTaskIns(clock, runId, named(5n)); // an equal, separate copy
        const a = await state.storeTaskIns(taskIns);
        const b = await state.storeTaskIns(taskIns);
        expect(a).toMatch(UUID4);
        expect(b).toMatch(UUID4);
        expect(a).not.toBe(b);
        expect(taskIns).toEqual(before);
        expect(await state.numTaskIns()).toBe(2);
      });

      test("an unknown run is rejected and nothing is stored", async () => {
        await newRun();
        expect(await state.storeTaskIns(makeTaskIns(clock, 31337n, named(5n)))).toBeUndefined();
        expect(await state.numTaskIns()).toBe(0);
      });

      test("the consumer node need not exist", async () => {
        const runId = await newRun();
        expect(await state.storeTaskIns(makeTaskIns(clock, runId, named(99n)))).toMatch(UUID4);
      });

      test.each(INVALID_TASK_INS)("invalid TaskIns (%s) is rejected and nothing is stored", async (_, mutate) => {
        const runId = await newRun();
        const taskIns = makeTaskIns(clock, runId, named(5n));
        mutate(taskIns);
        expect(await state.storeTaskIns(taskIns)).toBeUndefined();
        expect(await state.numTaskIns()).toBe(0);
        expect(await state.getTaskIns(5n, 10)).toEqual([]);
      });

      test("getTaskIns returns the task as stored, with its id and delivered_at set", async () => {
        const runId = await newRun();
        const recordset = sampleRecordSet();
        const stored = makeTaskIns(clock, runId, named(7n), { recordset });
        const taskId = (await state.storeTaskIns(stored))!;
        clock.advance(1.5);
        const [got, ...rest] = await state.getTaskIns(7n, 1);
        expect(rest).toEqual([]);
        expect(got).toEqual({
          ...stored,
          taskId,
          task: { ...stored.task, deliveredAt: isoTimestamp(clock.now()) },
        });
        expect(got!.task!.deliveredAt).toMatch(/^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}\+00:00$/);
        expect(got!.task!.recordset).toEqual(sampleRecordSet());
      });

      test("an empty RecordSet stays present and an error TaskIns keeps its error", async () => {
        const runId = await newRun();
        await storeIns(runId, named(7n));
        await storeIns(runId, named(7n), { recordset: undefined, error: { code: 0n, reason: "" } });
        const [withRecordSet, withError] = await state.getTaskIns(7n, 2);
        expect(withRecordSet!.task!.recordset).toEqual(emptyRecordSet());
        expect(withRecordSet!.task!.error).toBeUndefined();
        expect(withError!.task!.recordset).toBeUndefined();
        expect(withError!.task!.error).toEqual({ code: 0n, reason: "" });
      });

      test("delivery is FIFO and at most once, up to `limit` per pull", async () => {
        const runId = await newRun();
        const ids = await inOrder([0, 1, 2, 3, 4], (i) => storeIns(runId, named(7n), { taskType: `t${i}` }));
        expect((await state.getTaskIns(7n, 2)).map((t) => t.taskId)).toEqual(ids.slice(0, 2));
        expect((await state.getTaskIns(7n, 1)).map((t) => t.taskId)).toEqual(ids.slice(2, 3));
        expect((await state.getTaskIns(7n, 10)).map((t) => t.taskId)).toEqual(ids.slice(3));
        expect(await state.getTaskIns(7n, 10)).toEqual([]);
        expect(await state.numTaskIns()).toBe(5); // delivered tasks stay until deleteTasks
      });

      test("addressed tasks go only to their node; anonymous ones only to anonymous pulls", async () => {
        const runId = await newRun();
        const forSeven = await storeIns(runId, named(7n));
        const forAnyone = await storeIns(runId, ANONYMOUS);
        const forEight = await storeIns(runId, named(8n));
        expect(await state.getTaskIns(9n, 10)).toEqual([]);
        expect((await state.getTaskIns(undefined, 10)).map((t) => t.taskId)).toEqual([forAnyone]);
        expect((await state.getTaskIns(7n, 10)).map((t) => t.taskId)).toEqual([forSeven]);
        expect((await state.getTaskIns(8n, 10)).map((t) => t.taskId)).toEqual([forEight]);
        expect(await state.getTaskIns(undefined, 10)).toEqual([]);
        expect(await state.getTaskIns(0n, 10)).toEqual([]);
      });

      test("tasks from several runs queue in one FIFO per node", async () => {
        const runA = await newRun();
        const runB = await newRun();
        const first = await storeIns(runA, named(7n));
        const second = await storeIns(runB, named(7n));
        const got = await state.getTaskIns(7n, 10);
        expect(got.map((t) => [t.taskId, t.runId])).toEqual([
          [first, runA],
          [second, runB],
        ]);
      });

      test("a limit below 1 is a caller bug (RangeError)", async () => {
        await expect(state.getTaskIns(7n, 0)).rejects.toThrow(RangeError);
        await expect(state.getTaskIns(undefined, -1)).rejects.toThrow(RangeError);
      });

      test("extreme 64-bit consumer ids round-trip exactly", async () => {
        const runId = await newRun();
        const ids = [INT64_MIN, INT64_MAX, BEYOND_2_53, -BEYOND_2_53, -1n, 1n];
        const taskIds = await inOrder(ids, (id) => storeIns(runId, named(id)));
        await inOrder(ids, async (id, i) => {
          const got = await state.getTaskIns(id, 10);
          expect(got.map((t) => t.taskId)).toEqual([taskIds[i]]);
          expect(got[0]!.task!.consumer).toEqual({ nodeId: id, anonymous: false });
          expect(got[0]!.runId).toBe(runId);
        });
      });
    });

    describe("TaskRes", () => {
      test("storeTaskRes returns a fresh uuid4; an unknown run is rejected", async () => {
        const runId = await newRun();
        const insId = await storeIns(runId, named(7n));
        const taskRes = makeTaskRes(clock, runId, 7n, insId);
        const resId = await state.storeTaskRes(taskRes);
        expect(resId).toMatch(UUID4);
        expect(resId).not.toBe(insId);
        expect(taskRes.taskId).toBe("");
        expect(await state.storeTaskRes(makeTaskRes(clock, 31337n, 7n, insId))).toBeUndefined();
        expect(await state.numTaskRes()).toBe(1);
      });

      test.each(INVALID_TASK_RES)("invalid TaskRes (%s) is rejected and nothing is stored", async (_, mutate) => {
        const runId = await newRun();
        const insId = await storeIns(runId, named(7n));
        const taskRes = makeTaskRes(clock, runId, 7n, insId);
        mutate(taskRes);
        expect(await state.storeTaskRes(taskRes)).toBeUndefined();
        expect(await state.numTaskRes()).toBe(0);
      });

      test("getTaskRes returns replies to the requested TaskIns only, once, marked delivered", async () => {
        const runId = await newRun();
        const nodeId = await state.createNode(30);
        const insA = await storeIns(runId, named(nodeId));
        const insB = await storeIns(runId, named(nodeId));
        const resA = makeTaskRes(clock, runId, nodeId, insA, { recordset: sampleRecordSet() });
        const resAId = (await state.storeTaskRes(resA))!;
        await storeRes(runId, nodeId, insB);
        clock.advance(2);
        const got = await state.getTaskRes(new Set([insA]));
        expect(got).toEqual([
          { ...resA, taskId: resAId, task: { ...resA.task, deliveredAt: isoTimestamp(clock.now()) } },
        ]);
        expect(await state.getTaskRes(new Set([insA]))).toEqual([]);
        expect((await state.getTaskRes(new Set([insB]))).map((r) => r.task!.ancestry)).toEqual([[insB]]);
      });

      test("an error reply keeps its error and stays without a RecordSet", async () => {
        const runId = await newRun();
        const nodeId = await state.createNode(30);
        const insId = await storeIns(runId, named(nodeId));
        const error = { code: BigInt(ErrorCode.CLIENT_APP_RAISED_EXCEPTION), reason: "ValueError: boom" };
        await storeRes(runId, nodeId, insId, { recordset: undefined, error });
        const [got] = await state.getTaskRes(new Set([insId]));
        expect(got!.task!.error).toEqual(error);
        expect(got!.task!.recordset).toBeUndefined();
      });

      test("extreme 64-bit producer ids and error codes round-trip exactly", async () => {
        const runId = await newRun();
        for (const id of [INT64_MIN, INT64_MAX, BEYOND_2_53]) {
          const insId = await storeIns(runId, named(id));
          await storeRes(runId, id, insId, { recordset: undefined, error: { code: id, reason: "r" } });
          const [got] = await state.getTaskRes(new Set([insId]));
          expect(got!.task!.producer).toEqual({ nodeId: id, anonymous: false });
          expect(got!.task!.error!.code).toBe(id);
        }
      });

      test("replies come oldest first, and `limit` caps a pull", async () => {
        const runId = await newRun();
        const nodeId = await state.createNode(30);
        const ins = await inOrder([0, 1, 2], () => storeIns(runId, named(nodeId)));
        const res = await inOrder([2, 0, 1], (i) => storeRes(runId, nodeId, ins[i]!));
        const all = new Set(ins);
        expect((await state.getTaskRes(all, 2)).map((r) => r.taskId)).toEqual(res.slice(0, 2));
        expect((await state.getTaskRes(all)).map((r) => r.taskId)).toEqual(res.slice(2));
        await expect(state.getTaskRes(all, 0)).rejects.toThrow(RangeError);
      });

      test("requested ids match case-insensitively, like parsed UUIDs", async () => {
        const runId = await newRun();
        const nodeId = await state.createNode(30);
        const insId = await storeIns(runId, named(nodeId));
        await storeRes(runId, nodeId, insId.toUpperCase());
        expect((await state.getTaskRes(new Set([insId]))).length).toBe(1);
      });

      test("a reply whose ancestry is not a UUID is refused and breaks no pull", async () => {
        const runId = await newRun();
        const nodeId = await state.createNode(30);
        const insId = await storeIns(runId, named(nodeId));
        expect(await state.storeTaskRes(makeTaskRes(clock, runId, nodeId, "not-a-uuid"))).toBeUndefined();
        await storeRes(runId, nodeId, insId);
        expect((await state.getTaskRes(new Set([insId]))).map((r) => r.task!.ancestry[0])).toEqual([insId]);
        expect(await state.getTaskRes(new Set(["not-a-uuid"]))).toEqual([]);
      });

      test("getTaskRes of no ids, or of unknown ids, is empty", async () => {
        expect(await state.getTaskRes(new Set())).toEqual([]);
        expect(await state.getTaskRes(new Set(["00000000-0000-4000-8000-000000000000"]))).toEqual([]);
      });
    });

    describe("error replies for offline consumers", () => {
      test("an unanswered TaskIns for an offline node gets exactly Flower's NODE_UNAVAILABLE reply", async () => {
        const runId = await newRun();
        const nodeId = await state.createNode(5);
        const taskIns = makeTaskIns(clock, runId, named(nodeId), { ttl: 100, taskType: "evaluate" });
        taskIns.groupId = "round-3";
        const insId = (await state.storeTaskIns(taskIns))!;
        clock.advance(4);
        expect(await state.getTaskRes(new Set([insId]))).toEqual([]); // still online: just no reply yet
        clock.advance(12);
        const got = await state.getTaskRes(new Set([insId]));
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
        expect(await state.numTaskRes()).toBe(1);
      });

      test("the synthesized reply is stored once and delivered once", async () => {
        const runId = await newRun();
        const nodeId = await state.createNode(5);
        const insId = await storeIns(runId, named(nodeId));
        clock.advance(10);
        expect(await state.getTaskRes(new Set([insId]))).toHaveLength(1);
        expect(await state.getTaskRes(new Set([insId]))).toEqual([]);
        expect(await state.numTaskRes()).toBe(1);
        await state.deleteTasks(new Set([insId]));
        expect([await state.numTaskIns(), await state.numTaskRes()]).toEqual([0, 0]);
      });

      test("the remaining ttl is clamped at 0", async () => {
        const runId = await newRun();
        const nodeId = await state.createNode(5);
        const insId = await storeIns(runId, named(nodeId), { ttl: 3 });
        clock.advance(10);
        expect((await state.getTaskRes(new Set([insId])))[0]!.task!.ttl).toBe(0);
      });

      test("a deleted consumer counts as offline", async () => {
        const runId = await newRun();
        const nodeId = await state.createNode(30);
        const insId = await storeIns(runId, named(nodeId));
        await state.deleteNode(nodeId);
        const got = await state.getTaskRes(new Set([insId]));
        expect(got.map((r) => [r.task!.producer!.nodeId, r.task!.error!.code])).toEqual([[nodeId, 3n]]);
      });

      test("a consumer that never existed counts as offline", async () => {
        const runId = await newRun();
        const insId = await storeIns(runId, named(4242n));
        expect((await state.getTaskRes(new Set([insId]))).map((r) => r.task!.error!.code)).toEqual([3n]);
      });

      test("only the requested TaskIns get error replies", async () => {
        const runId = await newRun();
        const nodeId = await state.createNode(5);
        const requested = await storeIns(runId, named(nodeId));
        const other = await storeIns(runId, named(nodeId));
        clock.advance(10);
        expect((await state.getTaskRes(new Set([requested]))).map((r) => r.task!.ancestry)).toEqual([[requested]]);
        expect(await state.numTaskRes()).toBe(1);
        expect((await state.getTaskRes(new Set([other]))).map((r) => r.task!.ancestry)).toEqual([[other]]);
      });

      test("a TaskIns that already has a reply, even a delivered one, gets no error reply", async () => {
        const runId = await newRun();
        const nodeId = await state.createNode(5);
        const insId = await storeIns(runId, named(nodeId));
        await storeRes(runId, nodeId, insId);
        expect(await state.getTaskRes(new Set([insId]))).toHaveLength(1);
        clock.advance(10);
        // Asked for again, the stored reply may come again (delivery lease), never an error.
        expect((await state.getTaskRes(new Set([insId]))).filter((r) => r.task!.error !== undefined)).toEqual([]);
        expect(await state.numTaskRes()).toBe(1);
      });

      test("a pending real reply of an offline node is delivered instead of an error", async () => {
        const runId = await newRun();
        const nodeId = await state.createNode(5);
        const insId = await storeIns(runId, named(nodeId));
        await storeRes(runId, nodeId, insId);
        clock.advance(10);
        const got = await state.getTaskRes(new Set([insId]));
        expect(got.map((r) => r.task!.error)).toEqual([undefined]);
      });

      test("TaskIns for anonymous consumers get no error reply", async () => {
        const runId = await newRun();
        const insId = await storeIns(runId, ANONYMOUS);
        clock.advance(3000); // within its ttl of 3600 s
        expect(await state.getTaskRes(new Set([insId]))).toEqual([]);
      });

      test("error replies come after real ones, oldest TaskIns first, within `limit`", async () => {
        const runId = await newRun();
        const online = await state.createNode(1000);
        const offline = await state.createNode(5);
        const lost1 = await storeIns(runId, named(offline));
        const answered = await storeIns(runId, named(online));
        const lost2 = await storeIns(runId, named(offline));
        await storeRes(runId, online, answered);
        clock.advance(10);
        const all = new Set([lost2, answered, lost1]);
        expect((await state.getTaskRes(all, 2)).map((r) => r.task!.ancestry[0])).toEqual([answered, lost1]);
        expect((await state.getTaskRes(all, 2)).map((r) => r.task!.ancestry[0])).toEqual([lost2]);
      });
    });

    describe("deleteTasks", () => {
      test("deletes a TaskIns and its reply only once the reply was delivered", async () => {
        const runId = await newRun();
        const nodeId = await state.createNode(30);
        const insId = await storeIns(runId, named(nodeId));
        await state.deleteTasks(new Set([insId]));
        expect([await state.numTaskIns(), await state.numTaskRes()]).toEqual([1, 0]);
        await storeRes(runId, nodeId, insId);
        await state.deleteTasks(new Set([insId]));
        expect([await state.numTaskIns(), await state.numTaskRes()]).toEqual([1, 1]);
        await state.getTaskRes(new Set([insId]));
        await state.deleteTasks(new Set([insId]));
        expect([await state.numTaskIns(), await state.numTaskRes()]).toEqual([0, 0]);
      });

      test("touches only the requested pairs", async () => {
        const runId = await newRun();
        const nodeId = await state.createNode(30);
        const a = await storeIns(runId, named(nodeId));
        const b = await storeIns(runId, named(nodeId));
        await storeRes(runId, nodeId, a);
        await storeRes(runId, nodeId, b);
        await state.getTaskRes(new Set([a, b]));
        await state.deleteTasks(new Set([a]));
        expect([await state.numTaskIns(), await state.numTaskRes()]).toEqual([1, 1]);
        await state.deleteTasks(new Set(["00000000-0000-4000-8000-000000000000"]));
        await state.deleteTasks(new Set());
        expect([await state.numTaskIns(), await state.numTaskRes()]).toEqual([1, 1]);
      });

      test("after deletion, a late reply for the deleted TaskIns is refused", async () => {
        const runId = await newRun();
        const nodeId = await state.createNode(30);
        const insId = await storeIns(runId, named(nodeId));
        await storeRes(runId, nodeId, insId);
        await state.getTaskRes(new Set([insId]));
        await state.deleteTasks(new Set([insId]));
        expect(await state.storeTaskRes(makeTaskRes(clock, runId, nodeId, insId))).toBeUndefined();
        expect([await state.numTaskIns(), await state.numTaskRes()]).toEqual([0, 0]);
      });

      test("a delivered TaskIns stays delivered after its pair is deleted elsewhere", async () => {
        const runId = await newRun();
        const nodeId = await state.createNode(30);
        const a = await storeIns(runId, named(nodeId));
        const b = await storeIns(runId, named(nodeId));
        expect((await state.getTaskIns(nodeId, 1)).map((t) => t.taskId)).toEqual([a]);
        await storeRes(runId, nodeId, a);
        await state.getTaskRes(new Set([a]));
        await state.deleteTasks(new Set([a]));
        expect((await state.getTaskIns(nodeId, 10)).map((t) => t.taskId)).toEqual([b]);
      });
    });

    describe("shared content", () => {
      const storeShared = async (runId: bigint, consumer: Node, shared: SharedContent): Promise<string> => {
        const id = await state.storeTaskIns(
          makeTaskIns(clock, runId, consumer, { recordset: shared.recordset }),
          shared,
        );
        if (id === undefined) throw new Error("test setup: shared TaskIns was not stored");
        return id;
      };

      test("is stored once, counted once, and every consumer pulls the same RecordSet", async () => {
        const runId = await newRun();
        const nodes = [await state.createNode(30), await state.createNode(30), await state.createNode(30)];
        const shared = makeSharedContent(payloadRecordSet(5000));
        for (const nodeId of nodes) await storeShared(runId, named(nodeId), makeSharedContent(payloadRecordSet(5000)));
        expect(await state.numSharedContents()).toBe(1);
        expect(await state.numTaskIns()).toBe(3);
        expect(await state.storedBytes(runId)).toBe(shared.encoded.length + 3 * TASK_OVERHEAD_BYTES);
        for (const nodeId of nodes) {
          const [pulled] = await state.getTaskIns(nodeId, 1);
          expect(pulled?.task?.consumer?.nodeId).toBe(nodeId);
          // Byte-identical to the content, as an unshared TaskIns would be.
          expect(Buffer.from(RecordSet.encode(pulled!.task!.recordset!).finish())).toEqual(shared.encoded);
        }
        const found = await state.sharedContent(runId, shared.digest);
        expect(found?.digest).toBe(shared.digest);
        expect(Buffer.from(found!.encoded)).toEqual(shared.encoded);
      });

      test("is scoped to its run: another run neither sees it nor shares it", async () => {
        const runA = await newRun();
        const runB = await newRun();
        const nodeId = await state.createNode(30);
        const shared = makeSharedContent(payloadRecordSet(3000));
        await storeShared(runA, named(nodeId), shared);
        expect(await state.sharedContent(runB, shared.digest)).toBeUndefined();
        expect(await state.sharedContent(runA, "00".repeat(32))).toBeUndefined();
        await storeShared(runB, named(nodeId), shared);
        expect(await state.numSharedContents()).toBe(2);
        expect(await state.storedBytes(runB)).toBe(shared.encoded.length + TASK_OVERHEAD_BYTES);
      });

      test("is freed with the last TaskIns referencing it (deleteTasks)", async () => {
        const runId = await newRun();
        const [a, b] = [await state.createNode(30), await state.createNode(30)];
        const shared = makeSharedContent(payloadRecordSet(4000));
        const insA = await storeShared(runId, named(a), shared);
        const insB = await storeShared(runId, named(b), shared);
        await storeRes(runId, a, insA);
        await state.getTaskRes(new Set([insA]));
        await state.deleteTasks(new Set([insA]));
        expect(await state.numSharedContents()).toBe(1);
        expect((await state.getTaskIns(b, 1))[0]?.task?.recordset).toBeDefined();
        await storeRes(runId, b, insB);
        await state.getTaskRes(new Set([insB]));
        await state.deleteTasks(new Set([insB]));
        expect(await state.numSharedContents()).toBe(0);
        expect(await state.sharedContent(runId, shared.digest)).toBeUndefined();
        expect(await state.storedBytes()).toBe(0);
      });

      test("is freed when its TaskIns expire and are purged, and its run can then go", async () => {
        const runId = await newRun();
        const nodeId = await state.createNode(30);
        const shared = makeSharedContent(payloadRecordSet(2000));
        const ttl = { ttl: 10 };
        await state.storeTaskIns(
          makeTaskIns(clock, runId, named(nodeId), { ...ttl, recordset: shared.recordset }),
          shared,
        );
        await state.storeTaskIns(
          makeTaskIns(clock, runId, named(nodeId), { ...ttl, recordset: shared.recordset }),
          shared,
        );
        clock.advance(20);
        const removed = await state.purge({ expiredGraceSeconds: 0, runIdleSeconds: 5 });
        expect(removed).toEqual({ taskIns: 2, taskRes: 0, runs: 1 });
        expect([await state.numSharedContents(), await state.storedBytes()]).toEqual([0, 0]);
      });

      test("once every TaskIns was delivered, a redelivery after the lease is the same TaskIns", async () => {
        const runId = await newRun();
        const nodes = [await state.createNode(3600), await state.createNode(3600)];
        const shared = makeSharedContent(payloadRecordSet(6000, 7));
        const ids = await inOrder(nodes, (nodeId) =>
          storeShared(runId, named(nodeId), makeSharedContent(payloadRecordSet(6000, 7))),
        );
        const first = await inOrder(nodes, async (nodeId) => (await state.getTaskIns(nodeId, 1))[0]!);
        const bytesBefore = await state.storedBytes(runId);
        // TTL 3600 s: a 60 s lease.
        clock.advance(61);
        for (const [i, nodeId] of nodes.entries()) {
          const [again] = await state.getTaskIns(nodeId, 1);
          expect(again?.taskId).toBe(ids[i]);
          expect(Buffer.from(RecordSet.encode(again!.task!.recordset!).finish())).toEqual(shared.encoded);
          expect({ ...again!.task!, deliveredAt: "", recordset: undefined }).toEqual({
            ...first[i]!.task!,
            deliveredAt: "",
            recordset: undefined,
          });
        }
        expect(await state.storedBytes(runId)).toBe(bytesBefore);
        expect(await state.storedBytes(runId)).toBe(shared.encoded.length + 2 * TASK_OVERHEAD_BYTES);
      });

      test("once every TaskIns was delivered, it is still found by digest and shared by a new TaskIns", async () => {
        const runId = await newRun();
        const [a, b] = [await state.createNode(3600), await state.createNode(3600)];
        const shared = makeSharedContent(payloadRecordSet(5000, 9));
        const insA = await storeShared(runId, named(a), makeSharedContent(payloadRecordSet(5000, 9)));
        expect(await state.getTaskIns(a, 1)).toHaveLength(1);
        const found = await state.sharedContent(runId, shared.digest);
        expect(found?.digest).toBe(shared.digest);
        expect(Buffer.from(found!.encoded)).toEqual(shared.encoded);
        expect(Buffer.from(RecordSet.encode(found!.recordset).finish())).toEqual(shared.encoded);
        // A push by digest (the next round's fit reusing this round's evaluate parameters).
        await storeShared(runId, named(b), found!);
        expect(await state.numSharedContents()).toBe(1);
        expect(await state.storedBytes(runId)).toBe(shared.encoded.length + 2 * TASK_OVERHEAD_BYTES);
        const [pulled] = await state.getTaskIns(b, 1);
        expect(Buffer.from(RecordSet.encode(pulled!.task!.recordset!).finish())).toEqual(shared.encoded);
        // Still found after that delivery too, and freed with its last TaskIns.
        expect(Buffer.from((await state.sharedContent(runId, shared.digest))!.encoded)).toEqual(shared.encoded);
        await storeRes(runId, a, insA);
        await state.getTaskRes(new Set([insA]));
        await state.deleteTasks(new Set([insA]));
        expect(await state.numSharedContents()).toBe(1);
        expect(await state.storedBytes(runId)).toBe(shared.encoded.length + TASK_OVERHEAD_BYTES);
      });
    });

    describe("delivery lease (at-least-once)", () => {
      // Default lease: half the TTL within [5 s, 60 s]; TTL 20 s gives 10 s.
      test("an unanswered TaskIns is offered again once its lease passed, not before", async () => {
        const runId = await newRun();
        const nodeId = await state.createNode(3600);
        const insId = await storeIns(runId, named(nodeId), { ttl: 20 });
        expect((await state.getTaskIns(nodeId, 10)).map((t) => t.taskId)).toEqual([insId]);
        clock.advance(9.5);
        expect(await state.getTaskIns(nodeId, 10)).toEqual([]);
        clock.advance(0.5);
        const again = await state.getTaskIns(nodeId, 10);
        expect(again.map((t) => t.taskId)).toEqual([insId]);
        expect(again[0]!.task!.deliveredAt).toBe(isoTimestamp(clock.now()));
        // A new lease starts with each delivery.
        clock.advance(5);
        expect(await state.getTaskIns(nodeId, 10)).toEqual([]);
      });

      test("an answered or expired TaskIns is never offered again; FIFO order and the limit hold", async () => {
        const runId = await newRun();
        const nodeId = await state.createNode(3600);
        const answered = await storeIns(runId, named(nodeId), { ttl: 20 });
        const expiring = await storeIns(runId, named(nodeId), { ttl: 11 });
        const lost = await storeIns(runId, named(nodeId), { ttl: 20 });
        expect(await state.getTaskIns(nodeId, 10)).toHaveLength(3);
        await storeRes(runId, nodeId, answered);
        const fresh = await storeIns(runId, named(nodeId), { ttl: 20 });
        clock.advance(11);
        expect((await state.getTaskIns(nodeId, 1)).map((t) => t.taskId)).toEqual([lost]);
        expect((await state.getTaskIns(nodeId, 10)).map((t) => t.taskId)).toEqual([fresh]);
        expect(expiring).not.toBe(lost);
      });

      test("the default lease is capped at 60 s", async () => {
        const runId = await newRun();
        const nodeId = await state.createNode(3600);
        const insId = await storeIns(runId, named(nodeId), { ttl: 3600 });
        await state.getTaskIns(nodeId, 1);
        clock.advance(59);
        expect(await state.getTaskIns(nodeId, 1)).toEqual([]);
        clock.advance(1);
        expect((await state.getTaskIns(nodeId, 1)).map((t) => t.taskId)).toEqual([insId]);
      });

      test("a delivered TaskRes whose pair was not deleted is offered again when asked for 2 s later", async () => {
        const runId = await newRun();
        const nodeId = await state.createNode(3600);
        const insId = await storeIns(runId, named(nodeId));
        const resId = await storeRes(runId, nodeId, insId);
        expect((await state.getTaskRes(new Set([insId]))).map((r) => r.taskId)).toEqual([resId]);
        expect(await state.getTaskRes(new Set([insId]))).toEqual([]);
        clock.advance(1.9);
        expect(await state.getTaskRes(new Set([insId]))).toEqual([]);
        clock.advance(0.1);
        expect((await state.getTaskRes(new Set([insId]))).map((r) => r.taskId)).toEqual([resId]);
        await state.deleteTasks(new Set([insId]));
        clock.advance(10);
        expect(await state.getTaskRes(new Set([insId]))).toEqual([]);
        expect([await state.numTaskIns(), await state.numTaskRes()]).toEqual([0, 0]);
      });
    });

    // flwr-ts security rules (not in Flower 1.10): one result per task, TTLs, storage limits.
    describe("one result per task", () => {
      test("a second reply stores nothing and returns the first reply's id", async () => {
        const runId = await newRun();
        const nodeId = await state.createNode(30);
        const insId = await storeIns(runId, named(nodeId));
        const rec = recorder();
        state.subscribe(rec.events);
        const first = await storeRes(runId, nodeId, insId);
        expect(await state.storeTaskRes(makeTaskRes(clock, runId, nodeId, insId))).toBe(first);
        expect(await state.storeTaskRes(makeTaskRes(clock, runId, nodeId, insId.toUpperCase()))).toBe(first);
        expect(await state.numTaskRes()).toBe(1);
        expect(rec.res).toEqual([insId]);
        expect((await state.getTaskRes(new Set([insId]))).map((r) => r.taskId)).toEqual([first]);
      });

      test("a replay after delivery changes nothing; after deletion it is refused", async () => {
        const runId = await newRun();
        const nodeId = await state.createNode(30);
        const insId = await storeIns(runId, named(nodeId));
        const first = await storeRes(runId, nodeId, insId);
        expect(await state.getTaskRes(new Set([insId]))).toHaveLength(1);
        for (let i = 0; i < 5; i++)
          expect(await state.storeTaskRes(makeTaskRes(clock, runId, nodeId, insId))).toBe(first);
        expect(await state.getTaskRes(new Set([insId]))).toEqual([]);
        await state.deleteTasks(new Set([insId]));
        for (let i = 0; i < 5; i++)
          expect(await state.storeTaskRes(makeTaskRes(clock, runId, nodeId, insId))).toBeUndefined();
        expect([await state.numTaskIns(), await state.numTaskRes(), await state.storedBytes()]).toEqual([0, 0, 0]);
      });

      test("a real reply after a synthesized error reply is ignored", async () => {
        const runId = await newRun();
        const nodeId = await state.createNode(5);
        const insId = await storeIns(runId, named(nodeId));
        clock.advance(10);
        const [errorRes] = await state.getTaskRes(new Set([insId]));
        expect(await state.storeTaskRes(makeTaskRes(clock, runId, nodeId, insId))).toBe(errorRes!.taskId);
        expect(await state.numTaskRes()).toBe(1);
      });

      test("a reply naming no stored TaskIns is refused", async () => {
        const runId = await newRun();
        expect(
          await state.storeTaskRes(makeTaskRes(clock, runId, 7n, "00000000-0000-4000-8000-000000000000")),
        ).toBeUndefined();
        expect(await state.numTaskRes()).toBe(0);
      });

      test("a reply from another node than the TaskIns's consumer is refused", async () => {
        const runId = await newRun();
        const insId = await storeIns(runId, named(7n));
        expect(await state.storeTaskRes(makeTaskRes(clock, runId, 8n, insId))).toBeUndefined();
        const anonymousProducer = makeTaskRes(clock, runId, 0n, insId, { producer: ANONYMOUS });
        expect(await state.storeTaskRes(anonymousProducer)).toBeUndefined();
        expect(await state.numTaskRes()).toBe(0);
        expect(await storeRes(runId, 7n, insId)).toMatch(UUID4);
      });

      test("a reply in another run than its TaskIns is refused", async () => {
        const runA = await newRun();
        const runB = await newRun();
        const insId = await storeIns(runA, named(7n));
        expect(await state.storeTaskRes(makeTaskRes(clock, runB, 7n, insId))).toBeUndefined();
        expect(await state.numTaskRes()).toBe(0);
      });

      test("an anonymous TaskIns takes a reply from any producer, once", async () => {
        const runId = await newRun();
        const insId = await storeIns(runId, ANONYMOUS);
        const first = await storeRes(runId, 9n, insId);
        expect(await state.storeTaskRes(makeTaskRes(clock, runId, 10n, insId))).toBe(first);
        expect(await state.numTaskRes()).toBe(1);
      });
    });

    describe("expiry (TTL)", () => {
      test("an already expired TaskIns is not stored", async () => {
        const runId = await newRun();
        const stale = makeTaskIns(clock, runId, named(7n), { createdAt: clock.now() - 20, ttl: 10 });
        expect(await state.storeTaskIns(stale)).toBeUndefined();
        expect(await state.numTaskIns()).toBe(0);
      });

      test("an expired TaskIns is not delivered", async () => {
        const runId = await newRun();
        await storeIns(runId, named(7n), { ttl: 10 });
        const live = await storeIns(runId, named(7n), { ttl: 100 });
        clock.advance(10);
        expect((await state.getTaskIns(7n, 10)).map((t) => t.taskId)).toEqual([live]);
      });

      test("an expired unanswered TaskIns gets an expiry error reply, once (anonymous consumers too)", async () => {
        const runId = await newRun();
        const nodeId = await state.createNode(1000);
        const named1 = await storeIns(runId, named(nodeId), { ttl: 10 });
        const anon = await storeIns(runId, ANONYMOUS, { ttl: 10 });
        expect(await state.getTaskRes(new Set([named1, anon]))).toEqual([]);
        clock.advance(11);
        const got = await state.getTaskRes(new Set([named1, anon]));
        expect(got.map((r) => [r.task!.ancestry[0], r.task!.error])).toEqual([
          [named1, { code: BigInt(ErrorCode.NODE_UNAVAILABLE), reason: TASK_EXPIRED_REASON }],
          [anon, { code: BigInt(ErrorCode.NODE_UNAVAILABLE), reason: TASK_EXPIRED_REASON }],
        ]);
        expect(await state.getTaskRes(new Set([named1, anon]))).toEqual([]);
      });

      test("a reply to an expired TaskIns is refused", async () => {
        const runId = await newRun();
        const insId = await storeIns(runId, named(7n), { ttl: 10 });
        clock.advance(10);
        expect(await state.storeTaskRes(makeTaskRes(clock, runId, 7n, insId))).toBeUndefined();
        expect(await state.numTaskRes()).toBe(0);
      });

      test("purge removes TaskIns expired for longer than the grace, with their replies", async () => {
        const runId = await newRun();
        const nodeId = await state.createNode(1000);
        const answered = await storeIns(runId, named(nodeId), { ttl: 10 });
        await storeRes(runId, nodeId, answered);
        const unanswered = await storeIns(runId, named(nodeId), { ttl: 10 });
        const live = await storeIns(runId, named(nodeId), { ttl: 100 });
        const options = { expiredGraceSeconds: 5, runIdleSeconds: 1e6 };
        clock.advance(12);
        expect(await state.purge(options)).toEqual({ taskIns: 0, taskRes: 0, runs: 0 }); // within the grace
        clock.advance(5);
        expect(await state.purge(options)).toEqual({ taskIns: 2, taskRes: 1, runs: 0 });
        expect([await state.numTaskIns(), await state.numTaskRes()]).toEqual([1, 0]);
        expect(await state.getTaskRes(new Set([answered, unanswered]))).toEqual([]);
        expect((await state.getTaskIns(nodeId, 10)).map((t) => t.taskId)).toEqual([live]);
        expect(await state.storedBytes()).toBe(await state.storedBytes(runId));
        clock.advance(100);
        expect(await state.purge(options)).toEqual({ taskIns: 1, taskRes: 0, runs: 0 });
        expect(await state.storedBytes()).toBe(0);
      });

      test("purge removes runs idle for runIdleSeconds with no tasks, and keeps the others", async () => {
        const idle = await newRun();
        const busy = await newRun();
        await storeIns(busy, named(7n), { ttl: 1e6 });
        const options = { expiredGraceSeconds: 0, runIdleSeconds: 100 };
        clock.advance(99);
        expect((await state.purge(options)).runs).toBe(0);
        const fresh = await newRun();
        clock.advance(2);
        expect(await state.purge(options)).toEqual({ taskIns: 0, taskRes: 0, runs: 1 });
        expect(await state.getRun(idle)).toBeUndefined();
        expect(await state.getRun(busy)).toBeDefined();
        expect(await state.getRun(fresh)).toBeDefined();
        expect(await state.storeTaskIns(makeTaskIns(clock, idle, named(7n)))).toBeUndefined();
      });
    });

    describe("storage limits", () => {
      const payload = (size: number): RecordSet => ({
        parameters: new Map([
          [
            "w",
            {
              dataKeys: ["a"],
              dataValues: [{ dtype: "u8", shape: [size], stype: "raw", data: Buffer.alloc(size, 1) }],
            },
          ],
        ]),
        metrics: new Map(),
        configs: new Map(),
      });

      test("taskBytes charges the encoded RecordSet plus a fixed overhead", async () => {
        const small = makeTaskIns(clock, 1n, named(7n));
        const big = makeTaskIns(clock, 1n, named(7n), { recordset: payload(10_000) });
        expect(taskBytes(small)).toBe(TASK_OVERHEAD_BYTES);
        expect(taskBytes(big)).toBeGreaterThan(10_000 + TASK_OVERHEAD_BYTES);
        expect(taskBytes(big)).toBeLessThan(10_100 + TASK_OVERHEAD_BYTES);
      });
    });

    describe("notifications", () => {
      test("storing TaskIns and TaskRes notifies subscribers with consumer and TaskIns id", async () => {
        const runId = await newRun();
        const rec = recorder();
        state.subscribe(rec.events);
        const insId = await storeIns(runId, named(INT64_MIN));
        await storeIns(runId, ANONYMOUS);
        await storeRes(runId, INT64_MIN, insId);
        expect(rec.ins).toEqual([
          [INT64_MIN, false],
          [0n, true],
        ]);
        expect(rec.res).toEqual([insId]);
      });

      test("a synthesized error reply notifies too", async () => {
        const runId = await newRun();
        const nodeId = await state.createNode(5);
        const insId = await storeIns(runId, named(nodeId));
        const rec = recorder();
        state.subscribe(rec.events);
        clock.advance(10);
        await state.getTaskRes(new Set([insId]));
        expect(rec.res).toEqual([insId]);
      });

      test("rejected stores notify nobody", async () => {
        const runId = await newRun();
        const rec = recorder();
        state.subscribe(rec.events);
        const bad = makeTaskIns(clock, runId, named(7n), { ttl: 0 });
        expect(await state.storeTaskIns(bad)).toBeUndefined();
        expect(await state.storeTaskIns(makeTaskIns(clock, 31337n, named(7n)))).toBeUndefined();
        expect(await state.storeTaskRes(makeTaskRes(clock, runId, 7n, "x", { ancestry: [] }))).toBeUndefined();
        expect([rec.ins, rec.res]).toEqual([[], []]);
      });

      test("unsubscribe stops notifications", async () => {
        const runId = await newRun();
        const rec = recorder();
        const unsubscribe = state.subscribe(rec.events);
        await storeIns(runId, named(7n));
        unsubscribe();
        await storeIns(runId, named(7n));
        expect(rec.ins).toHaveLength(1);
      });

      test("a throwing listener neither fails the store nor starves other listeners", async () => {
        const runId = await newRun();
        state.subscribe({
          onTaskInsStored: () => {
            throw new Error("listener bug");
          },
        });
        const rec = recorder();
        state.subscribe(rec.events);
        expect(await storeIns(runId, named(7n))).toMatch(UUID4);
        expect(rec.ins).toEqual([[7n, false]]);
        expect(await state.getTaskIns(7n, 1)).toHaveLength(1);
      });

      test("a listener may read the state it is notified about", async () => {
        const runId = await newRun();
        let pulling: Promise<TaskIns[]> | undefined;
        state.subscribe({
          onTaskInsStored: (nodeId) => {
            pulling = state.getTaskIns(nodeId, 1);
          },
        });
        const insId = await storeIns(runId, named(7n));
        expect(pulling).toBeDefined();
        expect((await pulling!).map((t) => t.taskId)).toEqual([insId]);
      });
    });
  });
}

/**
 * The storage limits of the State contract. `makeState` must return a fresh, empty State with
 * the given limits and clock.
 */
export function describeStateLimits(
  name: string,
  makeState: (clock: TestClock, limits: StateLimits) => State | Promise<State>,
): void {
  describe(`State limits: ${name}`, () => {
    let clock: TestClock;
    const states: State[] = [];
    const open = async (limits: StateLimits): Promise<State> => {
      const state = await makeState(clock, limits);
      states.push(state);
      return state;
    };
    beforeEach(async () => {
      clock = new TestClock();
    });
    afterEach(async () => {
      for (const s of states.splice(0)) await s.close();
    });
    const payload = (size: number): RecordSet => ({
      parameters: new Map([
        [
          "w",
          { dataKeys: ["a"], dataValues: [{ dtype: "u8", shape: [size], stype: "raw", data: Buffer.alloc(size, 1) }] },
        ],
      ]),
      metrics: new Map(),
      configs: new Map(),
    });

    test("a TaskIns beyond the per-run byte limit throws ResourceExhaustedError and stores nothing", async () => {
      const state = await open({ maxRunBytes: 25_000 });
      const runA = await state.createRun("f", "v", new Map());
      const runB = await state.createRun("f", "v", new Map());
      expect(await state.storeTaskIns(makeTaskIns(clock, runA, named(7n), { recordset: payload(10_000) }))).toMatch(
        UUID4,
      );
      expect(await state.storeTaskIns(makeTaskIns(clock, runA, named(7n), { recordset: payload(10_000) }))).toMatch(
        UUID4,
      );
      const before = await state.storedBytes(runA);
      await expect(
        state.storeTaskIns(makeTaskIns(clock, runA, named(7n), { recordset: payload(10_000) })),
      ).rejects.toThrow(ResourceExhaustedError);
      expect([await state.numTaskIns(), await state.storedBytes(runA)]).toEqual([2, before]);
      // Another run has its own budget.
      expect(await state.storeTaskIns(makeTaskIns(clock, runB, named(7n), { recordset: payload(10_000) }))).toMatch(
        UUID4,
      );
    });

    test("the total byte limit spans runs, results count too, and pulling frees space", async () => {
      const state = await open({ maxStoredBytes: 25_000 });
      const runA = await state.createRun("f", "v", new Map());
      const runB = await state.createRun("f", "v", new Map());
      const insA = (await state.storeTaskIns(makeTaskIns(clock, runA, named(7n), { recordset: payload(10_000) })))!;
      await state.storeTaskIns(makeTaskIns(clock, runB, named(7n), { recordset: payload(10_000) }));
      await expect(
        state.storeTaskRes(makeTaskRes(clock, runA, 7n, insA, { recordset: payload(10_000) })),
      ).rejects.toThrow(ResourceExhaustedError);
      expect(await state.numTaskRes()).toBe(0);
      await expect(state.checkStorage(new Map([[runB, 10_000]]))).rejects.toThrow(ResourceExhaustedError);
      expect(await state.storeTaskRes(makeTaskRes(clock, runA, 7n, insA))).toMatch(UUID4);
      await state.getTaskRes(new Set([insA]));
      await state.deleteTasks(new Set([insA]));
      expect(await state.storedBytes()).toBe(await state.storedBytes(runB));
      await expect(state.checkStorage(new Map([[runB, 10_000]]))).resolves.toBeUndefined();
    });

    test("shared content counts once against the byte limits; new content over the limit is refused", async () => {
      const state = await open({ maxRunBytes: 25_000 });
      const runId = await state.createRun("f", "v", new Map());
      const shared = makeSharedContent(payload(10_000));
      // Ten copies would be 100 000 bytes; shared, they are one content plus ten envelopes.
      for (let i = 0; i < 10; i++) {
        const ins = makeTaskIns(clock, runId, named(BigInt(i + 1)), { recordset: shared.recordset });
        expect(await state.storeTaskIns(ins, shared)).toMatch(UUID4);
      }
      expect(await state.storedBytes(runId)).toBe(shared.encoded.length + 10 * TASK_OVERHEAD_BYTES);
      const other = makeSharedContent(payload(12_000));
      await expect(
        state.storeTaskIns(makeTaskIns(clock, runId, named(1n), { recordset: other.recordset }), other),
      ).rejects.toThrow(ResourceExhaustedError);
      expect([await state.numTaskIns(), await state.numSharedContents()]).toEqual([10, 1]);
    });

    test("createRun beyond maxRuns throws ResourceExhaustedError; purging an idle run makes room", async () => {
      const state = await open({ maxRuns: 2 });
      await state.createRun("f", "v", new Map());
      await state.createRun("f", "v", new Map());
      await expect(state.createRun("f", "v", new Map())).rejects.toThrow(ResourceExhaustedError);
      clock.advance(10);
      expect((await state.purge({ expiredGraceSeconds: 0, runIdleSeconds: 5 })).runs).toBe(2);
      expect(await state.createRun("f", "v", new Map())).not.toBe(0n);
    });
  });
}
