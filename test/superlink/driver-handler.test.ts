import { MalformedMessageError } from "../../src/core/errors";
import { ErrorCode, IN_MEMORY_DATABASE, NODE_UNAVAILABLE_REASON } from "../../src/core/constants";
import { createState } from "../../src/state/state-factory";
import type { State } from "../../src/state/state";
import { LongPollHub } from "../../src/superlink/long-poll";
import * as driver from "../../src/superlink/driver/driver-handler";
import { memoryLogger, validTaskIns, validTaskRes } from "./helpers";

describe("driver handler (over InMemoryState)", () => {
  let clock: number;
  let state: State;
  let hub: LongPollHub;

  beforeEach(async () => {
    clock = 1_720_000_000;
    state = await createState(IN_MEMORY_DATABASE, { now: () => clock });
    hub = new LongPollHub(state);
  });
  afterEach(async () => {
    hub.close();
    await state.close();
  });

  test("createRun accepts empty fab id/version and getRun reads it back", async () => {
    const { runId } = await driver.createRun({ fabId: "", fabVersion: "", overrideConfig: new Map() }, state);
    expect(runId).not.toBe(0n);
    expect((await driver.getRun({ runId }, state)).run).toMatchObject({ runId, fabId: "", fabVersion: "" });
  });

  test("getNodes lists online nodes for an existing run and nothing for an unknown run", async () => {
    const { runId } = await driver.createRun({ fabId: "f", fabVersion: "v", overrideConfig: new Map() }, state);
    const a = await state.createNode(30);
    const b = await state.createNode(5);
    clock += 10; // b is now offline
    const res = await driver.getNodes({ runId }, state);
    expect(res.nodes).toEqual([{ nodeId: a, anonymous: false }]);
    expect((await driver.getNodes({ runId: runId + 1n }, state)).nodes).toEqual([]);
    expect(res.nodes.map((n) => n.nodeId)).not.toContain(b);
  });

  test("pushTaskIns stamps pushed_at, stores in order and returns aligned ids", async () => {
    const { runId } = await driver.createRun({ fabId: "f", fabVersion: "v", overrideConfig: new Map() }, state);
    const nodeId = await state.createNode(30);
    const res = await driver.pushTaskIns(
      {
        taskInsList: [
          validTaskIns(runId, nodeId, { taskType: "train" }),
          validTaskIns(runId, nodeId, { taskType: "evaluate" }),
        ],
      },
      state,
      { now: () => clock },
    );
    expect(res.taskIds).toHaveLength(2);
    const pulled = [...(await state.getTaskIns(nodeId, 5))];
    expect(pulled.map((t) => t.taskId)).toEqual(res.taskIds);
    expect(pulled.map((t) => t.task!.taskType)).toEqual(["train", "evaluate"]);
    expect(pulled[0]!.task!.pushedAt).toBe(clock);
  });

  test("pushTaskIns with an empty list is a MalformedMessageError", async () => {
    await expect(driver.pushTaskIns({ taskInsList: [] }, state)).rejects.toThrow(/`task_ins_list` must not be empty/);
  });

  test("one malformed TaskIns fails the whole request, names it, and stores nothing", async () => {
    const { runId } = await driver.createRun({ fabId: "f", fabVersion: "v", overrideConfig: new Map() }, state);
    const nodeId = await state.createNode(30);
    const bad = validTaskIns(runId, nodeId);
    bad.task!.ttl = -1;
    bad.task!.taskType = "";
    let error: unknown;
    try {
      await driver.pushTaskIns({ taskInsList: [validTaskIns(runId, nodeId), bad] }, state);
    } catch (err) {
      error = err;
    }
    expect(error).toBeInstanceOf(MalformedMessageError);
    const message = (error as Error).message;
    expect(message).toContain("Malformed PushTaskInsRequest");
    expect(message).toContain("task_ins_list[1]");
    expect(message).toContain("`ttl` must be higher than zero");
    expect(message).toContain("`task_type` MUST be set");
    expect(message).not.toContain("task_ins_list[0]");
    expect(await state.numTaskIns()).toBe(0);
  });

  test('a TaskIns for an unknown run gets "" (as Flower) and a warning', async () => {
    const { logger, lines } = memoryLogger();
    const { runId } = await driver.createRun({ fabId: "f", fabVersion: "v", overrideConfig: new Map() }, state);
    const nodeId = await state.createNode(30);
    const res = await driver.pushTaskIns(
      { taskInsList: [validTaskIns(runId, nodeId), validTaskIns(runId + 1n, nodeId)] },
      state,
      {
        logger,
      },
    );
    expect(res.taskIds[0]).not.toBe("");
    expect(res.taskIds[1]).toBe("");
    expect(lines.some((l) => l["event"] === "driver.push-task-ins.not-stored")).toBe(true);
  });

  test("canonicalUuid accepts what Python's uuid.UUID accepts and canonicalizes it", async () => {
    const id = "4f1c2b4e-9c7e-4a59-9a8e-2b1d0c3e4f5a";
    expect(driver.canonicalUuid(id)).toBe(id);
    expect(driver.canonicalUuid(id.toUpperCase())).toBe(id);
    expect(driver.canonicalUuid(`{${id}}`)).toBe(id);
    expect(driver.canonicalUuid(`urn:uuid:${id}`)).toBe(id);
    expect(driver.canonicalUuid(id.replace(/-/g, ""))).toBe(id);
    expect(driver.canonicalUuid("not-a-uuid")).toBeUndefined();
    expect(driver.canonicalUuid("")).toBeUndefined();
    expect(driver.canonicalUuid(id + "0")).toBeUndefined();
  });

  test("pullTaskRes with a malformed id is a MalformedMessageError naming the id", async () => {
    await expect(
      driver.pullTaskRes({ node: undefined, taskIds: ["4f1c2b4e-9c7e-4a59-9a8e-2b1d0c3e4f5a", "bogus-id"] }, state),
    ).rejects.toThrow(/task_ids are not UUIDs: "bogus-id"/);
  });

  test("pullTaskRes returns the results once; deleting afterwards removes the pair", async () => {
    const { runId } = await driver.createRun({ fabId: "f", fabVersion: "v", overrideConfig: new Map() }, state);
    const nodeId = await state.createNode(30);
    const [insId] = (await driver.pushTaskIns({ taskInsList: [validTaskIns(runId, nodeId)] }, state)).taskIds;
    await state.getTaskIns(nodeId, 1);
    const resTask = validTaskRes(runId, nodeId, insId!);
    resTask.task!.pushedAt = clock;
    await state.storeTaskRes(resTask);

    const first = await driver.pullTaskRes({ node: undefined, taskIds: [insId!.toUpperCase()] }, state);
    expect(first.response.taskResList.map((t) => t.task!.ancestry[0])).toEqual([insId]);
    expect(first.taskIds).toEqual(new Set([insId]));
    expect((await driver.pullTaskRes({ node: undefined, taskIds: [insId!] }, state)).response.taskResList).toEqual([]);
    await state.deleteTasks(first.taskIds);
    expect(await state.numTaskIns()).toBe(0);
    expect(await state.numTaskRes()).toBe(0);
  });

  test("long-poll pullTaskRes receives a result stored while it waits", async () => {
    const { runId } = await driver.createRun({ fabId: "f", fabVersion: "v", overrideConfig: new Map() }, state);
    const nodeId = await state.createNode(30);
    const [insId] = (await driver.pushTaskIns({ taskInsList: [validTaskIns(runId, nodeId)] }, state)).taskIds;
    const pending = driver.pullTaskResLongPoll(
      { node: undefined, taskIds: [insId!] },
      state,
      { hub, maxWaitMs: 60_000 },
      60_000,
    );
    await new Promise((r) => setImmediate(r));
    expect(hub.waiting).toBe(1);
    const resTask = validTaskRes(runId, nodeId, insId!);
    resTask.task!.pushedAt = clock;
    await state.storeTaskRes(resTask);
    const result = await pending;
    expect(result.aborted).toBe(false);
    expect(result.response.taskResList).toHaveLength(1);
    expect(hub.waiting).toBe(0);
  });

  test("long-poll pullTaskRes picks up the NODE_UNAVAILABLE error once the consumer goes offline", async () => {
    const { runId } = await driver.createRun({ fabId: "f", fabVersion: "v", overrideConfig: new Map() }, state);
    const nodeId = await state.createNode(30);
    const [insId] = (await driver.pushTaskIns({ taskInsList: [validTaskIns(runId, nodeId)] }, state)).taskIds;
    const pending = driver.pullTaskResLongPoll(
      { node: undefined, taskIds: [insId!] },
      state,
      { hub, maxWaitMs: 60_000 },
      5,
    );
    clock += 60; // the node's ping interval has run out; only the periodic re-check can notice
    const result = await pending;
    expect(result.response.taskResList).toHaveLength(1);
    const task = result.response.taskResList[0]!.task!;
    expect(task.error).toEqual({ code: BigInt(ErrorCode.NODE_UNAVAILABLE), reason: NODE_UNAVAILABLE_REASON });
    expect(task.producer).toEqual({ nodeId, anonymous: false });
    expect(task.ancestry).toEqual([insId]);
  });

  test("a cancelled long-poll pullTaskRes takes nothing", async () => {
    const { runId } = await driver.createRun({ fabId: "f", fabVersion: "v", overrideConfig: new Map() }, state);
    const nodeId = await state.createNode(30);
    const [insId] = (await driver.pushTaskIns({ taskInsList: [validTaskIns(runId, nodeId)] }, state)).taskIds;
    const controller = new AbortController();
    const pending = driver.pullTaskResLongPoll(
      { node: undefined, taskIds: [insId!] },
      state,
      { hub, maxWaitMs: 60_000, signal: controller.signal },
      60_000,
    );
    controller.abort();
    const result = await pending;
    expect(result.aborted).toBe(true);
    expect(hub.waiting).toBe(0);
    const resTask = validTaskRes(runId, nodeId, insId!);
    resTask.task!.pushedAt = clock;
    await state.storeTaskRes(resTask);
    expect((await driver.pullTaskRes({ node: undefined, taskIds: [insId!] }, state)).response.taskResList).toHaveLength(
      1,
    );
  });

  test("closing the hub ends a waiting pullTaskRes at once with what is there", async () => {
    const { runId } = await driver.createRun({ fabId: "f", fabVersion: "v", overrideConfig: new Map() }, state);
    const nodeId = await state.createNode(30);
    const [insId] = (await driver.pushTaskIns({ taskInsList: [validTaskIns(runId, nodeId)] }, state)).taskIds;
    const pending = driver.pullTaskResLongPoll(
      { node: undefined, taskIds: [insId!] },
      state,
      { hub, maxWaitMs: 60_000 },
      60_000,
    );
    await new Promise((r) => setImmediate(r));
    hub.close();
    const result = await pending;
    expect(result).toMatchObject({ aborted: false, response: { taskResList: [] } });
    expect(hub.waiting).toBe(0);
  });
});
