import { closeSync, mkdtempSync, openSync, rmSync, truncateSync, writeSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { collectGarbage } from "../../src/core/garbage-collection";
import { deferredChunkOf, encodeMessage, joinChunks } from "../../src/core/wire/chunked-writer";
import { encodePullTaskInsResponseChunks } from "../../src/core/wire/deferred-recordset";
import { taskPayloadBytes } from "../../src/core/wire/payload-bytes";
import { PullTaskInsResponse } from "../../src/proto/flwr/proto/fleet";
import { RecordSet } from "../../src/proto/flwr/proto/recordset";
import type { TaskIns } from "../../src/proto/flwr/proto/task";
import { InMemoryState, type InMemoryStateOptions } from "../../src/state/in-memory-state";
import type { State } from "../../src/state/state";
import { TASK_OVERHEAD_BYTES } from "../../src/state/state-support";
import { promisedState } from "../../src/state/sync-state";
import { type BatchWritable, writeInBatches } from "../../src/transport/grpc-zero-copy";
import { memoryLogger } from "../server/helpers";
import { openFdsUnder } from "../helpers/open-files";
import {
  TestClock,
  describeStateConformance,
  describeStateLimits,
  makeSharedContent,
  makeTaskIns,
} from "./state.conformance";

describeStateConformance("InMemoryState", (clock) => promisedState(new InMemoryState({ now: clock.now })));
describeStateLimits("InMemoryState", (clock, limits) => promisedState(new InMemoryState({ now: clock.now, limits })));

/**
 * Every shared content spilled once delivered and read back from its file on every later use;
 * each pull waits for the spill it starts, so the suite sees the spilled state.
 */
function spillingState(options: InMemoryStateOptions): State {
  const sync = new InMemoryState({ ...options, contentSpill: { minBytes: 0, alwaysReadBack: true } });
  const state = promisedState(sync);
  return {
    ...state,
    getTaskIns: async (nodeId, limit) => {
      const taskIns = await state.getTaskIns(nodeId, limit);
      await sync.contentSpillsSettled();
      return taskIns;
    },
  };
}
describeStateConformance("InMemoryState, shared content spilled", (clock) => spillingState({ now: clock.now }));
describeStateLimits("InMemoryState, shared content spilled", (clock, limits) =>
  spillingState({ now: clock.now, limits }),
);

describe("InMemoryState: delivered shared content leaves memory", () => {
  const MIN_BYTES = 64 * 1024;
  let dir: string;
  let clock: TestClock;
  const states: InMemoryState[] = [];
  const open = (options: InMemoryStateOptions["contentSpill"] = {}, logger?: InMemoryStateOptions["logger"]) => {
    const state = new InMemoryState({
      now: clock.now,
      contentSpill: { minBytes: MIN_BYTES, dir, ...options },
      ...(logger !== undefined ? { logger } : {}),
    });
    states.push(state);
    return state;
  };
  beforeAll(() => {
    dir = mkdtempSync(join(tmpdir(), "flwr-content-spill-test-"));
  });
  beforeEach(() => {
    clock = new TestClock();
  });
  afterEach(async () => {
    for (const state of states.splice(0)) {
      state.close();
      // A spill write in progress opens and closes its file later.
      await state.contentSpillsSettled();
    }
    // Spill files close asynchronously: the next test must not find (and spoil) this one's.
    const stillOpen = await openSpillFiles(0);
    if (stillOpen !== 0) throw new Error(`${stillOpen} spill file(s) still open after the states were closed`);
  });
  afterAll(() => rmSync(dir, { recursive: true, force: true }));

  /** The open descriptors of spill files under `dir` (unlinked files: "... (deleted)"). */
  const spillFds = (): string[] => openFdsUnder(dir);
  /** Waits (boundedly) for the asynchronous closes of spill files. */
  const openSpillFiles = async (expected: number): Promise<number> => {
    for (let i = 0; i < 500 && spillFds().length !== expected; i++) await new Promise((r) => setTimeout(r, 10));
    return spillFds().length;
  };
  /** The descriptor of the one spill file open now (the one a test spoils). */
  const onlySpillFd = (): string => {
    const fds = spillFds();
    expect(fds).toHaveLength(1);
    return fds[0]!;
  };
  const payload = (size: number, fill: number): RecordSet => ({
    parameters: new Map([
      [
        "w",
        { dataKeys: ["a"], dataValues: [{ dtype: "u8", shape: [size], stype: "raw", data: Buffer.alloc(size, fill) }] },
      ],
    ]),
    metrics: new Map(),
    configs: new Map(),
  });

  /**
   * Stores one shared content for each node and returns its digest, a copy of its bytes and weak
   * references to the stored bytes and RecordSet (the test itself keeps no strong one).
   */
  function broadcast(state: InMemoryState, runId: bigint, nodes: bigint[], size: number, fill = 3) {
    const shared = makeSharedContent(payload(size, fill));
    for (const nodeId of nodes) {
      const taskIns = makeTaskIns(clock, runId, { nodeId, anonymous: false }, { recordset: shared.recordset });
      expect(state.storeTaskIns(taskIns, shared)).toBeDefined();
    }
    return {
      digest: shared.digest,
      expected: Buffer.from(shared.encoded),
      encoded: new WeakRef(shared.encoded),
      recordset: new WeakRef(shared.recordset),
    };
  }
  /** The PullTaskIns answer bytes of `taskIns` (delivered_at left out), as the Fleet API writes them. */
  const answerBytes = (taskIns: TaskIns): Buffer =>
    encodeMessage(PullTaskInsResponse, {
      reconnect: undefined,
      taskInsList: [{ ...taskIns, task: { ...taskIns.task!, deliveredAt: "" } }],
    });
  /** Pulls one TaskIns of `nodeId`; returns its answer bytes, keeping nothing else. */
  const pull = (state: InMemoryState, nodeId: bigint): Buffer | undefined => {
    const [taskIns] = state.getTaskIns(nodeId, 1);
    return taskIns === undefined ? undefined : answerBytes(taskIns);
  };
  const recordsetBytes = (taskIns: TaskIns | undefined): Buffer =>
    Buffer.from(RecordSet.encode(taskIns!.task!.recordset!).finish());
  /**
   * A full collection once the current job has ended (WeakRef targets stay alive until then);
   * repeated, a bounded number of times, while one of `gone` still answers: on a loaded machine
   * a first collection has been seen to leave a dropped Buffer for the next one.
   */
  const collect = async (...gone: WeakRef<object>[]): Promise<void> => {
    for (let i = 0; i < 5; i++) {
      await new Promise((r) => setImmediate(r));
      expect(collectGarbage()).toBe(true);
      if (gone.every((ref) => ref.deref() === undefined)) return;
    }
  };

  test("is spilled once its last undelivered TaskIns was delivered, and then nothing holds it", async () => {
    const state = open();
    const runId = state.createRun("fab", "1.0", new Map());
    const nodes = [state.createNode(3600), state.createNode(3600), state.createNode(3600)];
    const content = broadcast(state, runId, nodes, 256 * 1024);
    const bytes = state.storedBytes(runId);
    expect(recordsetBytes(state.getTaskIns(nodes[0], 1)[0]).equals(content.expected)).toBe(true);
    expect(recordsetBytes(state.getTaskIns(nodes[1], 1)[0]).equals(content.expected)).toBe(true);
    await state.contentSpillsSettled();
    expect(state.contentMemory()).toMatchObject({ contents: 1, inMemory: 1, spilled: 0 });
    expect(recordsetBytes(state.getTaskIns(nodes[2], 1)[0]).equals(content.expected)).toBe(true);
    await state.contentSpillsSettled();
    expect(state.contentMemory()).toEqual({ contents: 1, inMemory: 0, inMemoryBytes: 0, spilled: 1, readBacks: 0 });
    expect(await openSpillFiles(1)).toBe(1);
    expect(state.storedBytes(runId)).toBe(bytes);
    await collect(content.encoded, content.recordset);
    expect(content.encoded.deref()).toBeUndefined();
    expect(content.recordset.deref()).toBeUndefined();
  });

  test("a pulled TaskIns does not hold a delivered large content: its answer is read from the file", async () => {
    const state = open();
    const runId = state.createRun("fab", "1.0", new Map());
    const nodes = [state.createNode(3600), state.createNode(3600)];
    const size = 300 * 1024;
    const content = broadcast(state, runId, nodes, size, 5);
    const pulled = nodes.map((nodeId) => state.getTaskIns(nodeId, 1)[0]!);
    await state.contentSpillsSettled();
    await collect(content.encoded);
    // Answers waiting to be written hold the TaskIns, and so nothing of the content.
    expect(content.encoded.deref()).toBeUndefined();
    expect(pulled.map((t) => taskPayloadBytes(t))).toEqual([size, size]);
    const answer = { reconnect: undefined, taskInsList: [pulled[0]!] };
    const chunks = encodePullTaskInsResponseChunks(answer);
    expect(chunks.chunks.some((c) => deferredChunkOf(c) !== undefined)).toBe(true);
    expect(state.contentMemory().readBacks).toBe(0);
    const plain = { ...pulled[0]!, task: { ...pulled[0]!.task!, recordset: RecordSet.decode(content.expected) } };
    const expected = encodeMessage(PullTaskInsResponse, { reconnect: undefined, taskInsList: [plain] });
    expect(joinChunks(chunks).equals(expected)).toBe(true);
    expect(chunks.length).toBe(expected.length);
    expect(state.contentMemory().readBacks).toBe(0);
    // Any other reader gets the RecordSet itself, read back whole.
    expect(recordsetBytes(pulled[1]).equals(content.expected)).toBe(true);
    expect(state.contentMemory().readBacks).toBe(1);
    expect(encodeMessage(PullTaskInsResponse, answer).equals(expected)).toBe(true);
  });

  test("contents below the spill size stay in memory", async () => {
    const state = open();
    const runId = state.createRun("fab", "1.0", new Map());
    const nodeId = state.createNode(3600);
    const content = broadcast(state, runId, [nodeId], MIN_BYTES / 2);
    expect(pull(state, nodeId)).toBeDefined();
    await state.contentSpillsSettled();
    expect(state.contentMemory()).toMatchObject({ contents: 1, inMemory: 1, spilled: 0 });
    await collect();
    expect(content.encoded.deref()).toBeDefined();
  });

  test("a redelivery after the lease reads it back: the same pull answer, byte for byte", async () => {
    const state = open();
    const runId = state.createRun("fab", "1.0", new Map());
    const nodes = [state.createNode(3600), state.createNode(3600)];
    const content = broadcast(state, runId, nodes, 300 * 1024 + 7);
    const first = nodes.map((nodeId) => pull(state, nodeId)!);
    await state.contentSpillsSettled();
    await collect(content.encoded);
    expect(content.encoded.deref()).toBeUndefined();
    clock.advance(61);
    const again = nodes.map((nodeId) => pull(state, nodeId)!);
    expect(again.map((bytes, i) => bytes.equals(first[i]!))).toEqual([true, true]);
    // Read once: the second redelivery used the copy the first one still held.
    expect(state.contentMemory()).toMatchObject({ inMemory: 0, spilled: 1 });
    expect(state.contentMemory().readBacks).toBeGreaterThanOrEqual(1);
    expect(first[0]!.includes(content.expected)).toBe(true);
  });

  test("found by digest after every delivery; a new TaskIns holds it until delivered, with no second write", async () => {
    const state = open();
    const runId = state.createRun("fab", "1.0", new Map());
    const [a, b] = [state.createNode(3600), state.createNode(3600)];
    const content = broadcast(state, runId, [a], 200 * 1024);
    const pulledA = pull(state, a)!;
    await state.contentSpillsSettled();
    await collect();
    const found = state.sharedContent(runId, content.digest)!;
    expect(state.contentMemory().readBacks).toBe(1);
    expect(Buffer.from(found.encoded).equals(content.expected)).toBe(true);
    const taskIns = makeTaskIns(clock, runId, { nodeId: b, anonymous: false }, { recordset: found.recordset });
    expect(state.storeTaskIns(taskIns, found)).toBeDefined();
    expect(state.contentMemory()).toMatchObject({ contents: 1, inMemory: 1, spilled: 1 });
    const pulledB = pull(state, b)!;
    expect(pulledB.includes(content.expected)).toBe(true);
    expect(pulledA.includes(content.expected)).toBe(true);
    await state.contentSpillsSettled();
    expect(state.contentMemory()).toMatchObject({ contents: 1, inMemory: 0, spilled: 1 });
    expect(await openSpillFiles(1)).toBe(1);
  });

  test("the last TaskIns removed closes its file, close() the others", async () => {
    const state = open();
    const [runA, runB] = [state.createRun("fab", "1.0", new Map()), state.createRun("fab", "1.0", new Map())];
    const nodeId = state.createNode(3600);
    broadcast(state, runA, [nodeId], 100 * 1024, 1);
    broadcast(state, runB, [nodeId], 100 * 1024, 2);
    const [insA] = state.getTaskIns(nodeId, 1);
    expect(state.getTaskIns(nodeId, 1)).toHaveLength(1);
    await state.contentSpillsSettled();
    expect(state.contentMemory().spilled).toBe(2);
    expect(await openSpillFiles(2)).toBe(2);
    const res = {
      taskId: "",
      groupId: "",
      runId: runA,
      task: {
        producer: { nodeId, anonymous: false },
        consumer: { nodeId: 0n, anonymous: true },
        createdAt: clock.now(),
        deliveredAt: "",
        pushedAt: clock.now(),
        ttl: 3600,
        ancestry: [insA!.taskId],
        taskType: "train",
        recordset: { parameters: new Map(), metrics: new Map(), configs: new Map() },
        error: undefined,
      },
    };
    expect(state.storeTaskRes(res)).toBeDefined();
    state.getTaskRes(new Set([insA!.taskId]));
    state.deleteTasks(new Set([insA!.taskId]));
    expect(state.contentMemory()).toMatchObject({ contents: 1, spilled: 1 });
    expect(state.storedBytes(runA)).toBe(0);
    expect(await openSpillFiles(1)).toBe(1);
    state.close();
    expect(await openSpillFiles(0)).toBe(0);
  });

  test("a spill that cannot be written leaves the content in memory, logged once", async () => {
    const { logger, lines } = memoryLogger();
    const state = open({ dir: join(dir, "missing") }, logger);
    const runId = state.createRun("fab", "1.0", new Map());
    const nodeId = state.createNode(3600);
    const first = broadcast(state, runId, [nodeId], 100 * 1024, 1);
    const second = broadcast(state, runId, [nodeId], 100 * 1024, 2);
    expect(pull(state, nodeId)).toBeDefined();
    expect(pull(state, nodeId)).toBeDefined();
    await state.contentSpillsSettled();
    expect(state.contentMemory()).toMatchObject({ contents: 2, inMemory: 2, spilled: 0 });
    const failures = lines.filter((l) => l.event === "state.shared-content-spill-failed");
    expect(failures.map((l) => l.level)).toEqual([40, 20]);
    clock.advance(61);
    const again = state.getTaskIns(nodeId, 2);
    expect(again.map(recordsetBytes).map((bytes, i) => bytes.equals([first, second][i]!.expected))).toEqual([
      true,
      true,
    ]);
  });

  test("a spill file that cannot be read back: no redelivery, no digest match, until the content comes again", async () => {
    const { logger, lines } = memoryLogger();
    const state = open({}, logger);
    const runId = state.createRun("fab", "1.0", new Map());
    const [a, b] = [state.createNode(3600), state.createNode(3600)];
    const content = broadcast(state, runId, [a], 128 * 1024);
    expect(pull(state, a)).toBeDefined();
    await state.contentSpillsSettled();
    await collect();
    truncateSync(`/proc/self/fd/${onlySpillFd()}`, 1000);
    clock.advance(61);
    const bytes = state.storedBytes(runId);
    expect(state.getTaskIns(a, 1)).toEqual([]);
    expect(lines.filter((l) => l.event === "state.shared-content-unreadable")).toHaveLength(1);
    expect(state.sharedContent(runId, content.digest)).toBeUndefined();
    expect([state.numSharedContents(), state.numTaskIns(), state.storedBytes(runId)]).toEqual([1, 1, bytes]);
    expect(await openSpillFiles(0)).toBe(0);
    // The Driver, told the digest is unknown, uploads the content again.
    const upload = makeSharedContent(RecordSet.decode(content.expected));
    const taskIns = makeTaskIns(clock, runId, { nodeId: b, anonymous: false }, { recordset: upload.recordset });
    expect(state.storeTaskIns(taskIns, upload)).toBeDefined();
    expect(state.storedBytes(runId)).toBe(bytes + TASK_OVERHEAD_BYTES);
    expect(recordsetBytes(state.getTaskIns(a, 1)[0]).equals(content.expected)).toBe(true);
    expect(recordsetBytes(state.getTaskIns(b, 1)[0]).equals(content.expected)).toBe(true);
  });
  /**
   * A PullTaskIns answer for `taskIns` written as the gRPC Fleet API writes it (writeInBatches,
   * 64 KiB batches) to a stream whose handovers complete only on `step()`, and the bytes it
   * should be.
   */
  const BATCH = 64 * 1024;
  function streamedAnswer(taskIns: TaskIns, expectedRecordSet: Buffer) {
    const answer = { reconnect: undefined, taskInsList: [taskIns] };
    const plain = { ...taskIns, task: { ...taskIns.task!, recordset: RecordSet.decode(expectedRecordSet) } };
    const expected = encodeMessage(PullTaskInsResponse, { reconnect: undefined, taskInsList: [plain] });
    const received: Buffer[] = [];
    let pending: ((error?: Error | null) => void) | undefined;
    let outcome: Error | "written" | undefined;
    const stream: BatchWritable = {
      cork: () => undefined,
      uncork: () => undefined,
      write: (chunk, callback) => {
        received.push(Buffer.from(chunk));
        pending = callback ?? pending;
        return true;
      },
    };
    const chunks = encodePullTaskInsResponseChunks(answer);
    expect(chunks.chunks.some((c) => deferredChunkOf(c) !== undefined)).toBe(true);
    writeInBatches(stream, chunks.chunks, BATCH, (e) => {
      expect(outcome).toBeUndefined();
      outcome = e ?? "written";
    });
    const step = (): boolean => {
      const callback = pending;
      pending = undefined;
      callback?.();
      return callback !== undefined;
    };
    return {
      expected,
      step,
      /** Completes every handover; the outcome. */
      finish: (): Error | "written" | undefined => {
        for (let i = 0; i < 10_000 && step(); i++);
        return outcome;
      },
      received: () => Buffer.concat(received),
    };
  }
  const unreadableLogs = (lines: ReturnType<typeof memoryLogger>["lines"]) =>
    lines.filter((l) => l.event === "state.shared-content-unreadable");
  /** Writes `bytes` into the spill file at `position`, through another descriptor of it. */
  const overwriteSpillFile = (position: number, bytes: Buffer): void => {
    const other = openSync(`/proc/self/fd/${onlySpillFd()}`, "r+");
    try {
      writeSync(other, bytes, 0, bytes.length, position);
    } finally {
      closeSync(other);
    }
  };
  const SIZE = 600 * 1024 + 3;

  test.each([
    ["garbage in the file", () => overwriteSpillFile(SIZE / 2, Buffer.from("garbage"))],
    ["the file cut short", () => truncateSync(`/proc/self/fd/${onlySpillFd()}`, SIZE - 1000)],
  ])(
    "answers streamed from a bad spill file (%s) end short of their last byte; later deliveries as after a read failure",
    async (_, spoil) => {
      const { logger, lines } = memoryLogger();
      const state = open({}, logger);
      const runId = state.createRun("fab", "1.0", new Map());
      const nodes = [state.createNode(3600), state.createNode(3600)];
      const content = broadcast(state, runId, nodes, SIZE, 7);
      const pulled = nodes.map((nodeId) => state.getTaskIns(nodeId, 1)[0]!);
      await state.contentSpillsSettled();
      await collect(content.encoded);
      expect(content.encoded.deref()).toBeUndefined();
      spoil();
      // Two answers at once from the same file: both fail, the file is dropped and logged once.
      const answers = pulled.map((taskIns) => streamedAnswer(taskIns, content.expected));
      for (let i = 0; i < 10_000 && answers.map((a) => a.step()).some(Boolean); i++);
      for (const answer of answers) {
        const outcome = answer.finish();
        expect(outcome).toBeInstanceOf(Error);
        expect((outcome as Error).message).toMatch(/cannot be read/);
        expect(answer.received().length).toBeLessThan(answer.expected.length);
      }
      expect(unreadableLogs(lines)).toHaveLength(1);
      expect(await openSpillFiles(0)).toBe(0);
      // The in-flight deliveries stay leased; once the lease runs out they are not delivered again.
      clock.advance(61);
      expect(state.getTaskIns(nodes[0], 1)).toEqual([]);
      expect(state.sharedContent(runId, content.digest)).toBeUndefined();
      expect(state.numTaskIns()).toBe(2);
      expect(unreadableLogs(lines)).toHaveLength(1);
      // Uploaded again: delivered again.
      const upload = makeSharedContent(RecordSet.decode(content.expected));
      const node = state.createNode(3600);
      const taskIns = makeTaskIns(clock, runId, { nodeId: node, anonymous: false }, { recordset: upload.recordset });
      expect(state.storeTaskIns(taskIns, upload)).toBeDefined();
      const again = streamedAnswer(state.getTaskIns(nodes[1], 1)[0]!, content.expected);
      expect(again.finish()).toBe("written");
      expect(again.received().equals(again.expected)).toBe(true);
    },
  );

  test.each([
    ["an intact file", undefined],
    ["garbage where the file was not read yet", SIZE - 100],
    ["garbage where the answer came from memory", 1000],
  ])("an answer begun from memory and ended from the file (%s) is checked on the whole content", async (_, spoilAt) => {
    const { logger, lines } = memoryLogger();
    const state = open({}, logger);
    const runId = state.createRun("fab", "1.0", new Map());
    const [a, b] = [state.createNode(3600), state.createNode(3600)];
    const content = broadcast(state, runId, [a, b], SIZE, 9);
    const answer = streamedAnswer(state.getTaskIns(a, 1)[0]!, content.expected);
    for (let i = 0; i < 3; i++) expect(answer.step()).toBe(true);
    // The last delivery: the content is spilled and leaves memory while the answer is written.
    const answerB = streamedAnswer(state.getTaskIns(b, 1)[0]!, content.expected);
    await state.contentSpillsSettled();
    await collect(content.encoded);
    expect(content.encoded.deref()).toBeUndefined();
    if (spoilAt !== undefined) overwriteSpillFile(spoilAt, Buffer.from("garbage"));
    const outcome = answer.finish();
    if (spoilAt === undefined) {
      expect(outcome).toBe("written");
      expect(answer.received().equals(answer.expected)).toBe(true);
      expect(answerB.finish()).toBe("written");
      expect(answerB.received().equals(answerB.expected)).toBe(true);
      expect(unreadableLogs(lines)).toHaveLength(0);
      expect(await openSpillFiles(1)).toBe(1);
    } else {
      expect(outcome).toBeInstanceOf(Error);
      expect(answer.received().length).toBeLessThan(answer.expected.length);
      expect(answerB.finish()).toBeInstanceOf(Error);
      expect(unreadableLogs(lines)).toHaveLength(1);
      expect(await openSpillFiles(0)).toBe(0);
    }
  });

  /** Removes every TaskIns of the state (expired: purged). */
  const purgeAll = (state: InMemoryState): void => {
    clock.advance(3600);
    state.purge({ expiredGraceSeconds: 0, runIdleSeconds: 1e9 });
    expect(state.numTaskIns()).toBe(0);
  };

  test("a content removed while an answer is written from its file: the answer ends whole, then the file closes", async () => {
    const state = open();
    const runId = state.createRun("fab", "1.0", new Map());
    const nodeId = state.createNode(3600);
    const content = broadcast(state, runId, [nodeId], SIZE, 4);
    const [taskIns] = state.getTaskIns(nodeId, 1);
    await state.contentSpillsSettled();
    await collect(content.encoded);
    expect(content.encoded.deref()).toBeUndefined();
    const answer = streamedAnswer(taskIns!, content.expected);
    expect(answer.step()).toBe(true);
    purgeAll(state);
    expect([state.numSharedContents(), state.storedBytes(runId)]).toEqual([0, 0]);
    expect(spillFds()).toHaveLength(1);
    expect(answer.finish()).toBe("written");
    expect(answer.received().equals(answer.expected)).toBe(true);
    expect(await openSpillFiles(0)).toBe(0);
  });

  test("a content removed while an answer is written from memory: the answer ends whole, then it is freed", async () => {
    const state = open();
    const runId = state.createRun("fab", "1.0", new Map());
    const [a, b] = [state.createNode(3600), state.createNode(3600)];
    const content = broadcast(state, runId, [a, b], SIZE, 6);
    const answer = streamedAnswer(state.getTaskIns(a, 1)[0]!, content.expected);
    expect(answer.step()).toBe(true);
    purgeAll(state);
    await collect();
    expect(content.encoded.deref()).toBeDefined();
    expect(answer.finish()).toBe("written");
    expect(answer.received().equals(answer.expected)).toBe(true);
    await state.contentSpillsSettled();
    await collect(content.encoded);
    expect(content.encoded.deref()).toBeUndefined();
    expect(await openSpillFiles(0)).toBe(0);
  });

  test("close() during an answer from a spill file closes the file at once; the answer fails", async () => {
    const state = open();
    const runId = state.createRun("fab", "1.0", new Map());
    const nodeId = state.createNode(3600);
    const content = broadcast(state, runId, [nodeId], SIZE, 2);
    const [taskIns] = state.getTaskIns(nodeId, 1);
    await state.contentSpillsSettled();
    await collect();
    const answer = streamedAnswer(taskIns!, content.expected);
    expect(answer.step()).toBe(true);
    state.close();
    expect(await openSpillFiles(0)).toBe(0);
    expect(answer.finish()).toBeInstanceOf(Error);
    expect(answer.received().length).toBeLessThan(answer.expected.length);
  });
});
