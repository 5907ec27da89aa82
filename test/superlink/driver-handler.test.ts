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

  beforeEach(() => {
    clock = 1_720_000_000;
    state = createState(IN_MEMORY_DATABASE, { now: () => clock });
    hub = new LongPollHub(state);
  });
  afterEach(() => {
    hub.close();
    state.close();
  });

  test("createRun accepts empty fab id/version and getRun reads it back", () => {
    const { runId } = driver.createRun({ fabId: "", fabVersion: "", overrideConfig: new Map() }, state);
    expect(runId).not.toBe(0n);
    expect(driver.getRun({ runId }, state).run).toMatchObject({ runId, fabId: "", fabVersion: "" });
  });

  test("getNodes lists online nodes for an existing run and nothing for an unknown run", () => {
    const { runId } = driver.createRun({ fabId: "f", fabVersion: "v", overrideConfig: new Map() }, state);
    const a = state.createNode(30);
    const b = state.createNode(5);
    clock += 10; // b is now offline
    const res = driver.getNodes({ runId }, state);
    expect(res.nodes).toEqual([{ nodeId: a, anonymous: false }]);
    expect(driver.getNodes({ runId: runId + 1n }, state).nodes).toEqual([]);
    expect(res.nodes.map((n) => n.nodeId)).not.toContain(b);
  });

  test("pushTaskIns stamps pushed_at, stores in order and returns aligned ids", () => {
    const { runId } = driver.createRun({ fabId: "f", fabVersion: "v", overrideConfig: new Map() }, state);
    const nodeId = state.createNode(30);
    const res = driver.pushTaskIns(
      { taskInsList: [validTaskIns(runId, nodeId, { taskType: "train" }), validTaskIns(runId, nodeId, { taskType: "evaluate" })] },
      state,
      { now: () => clock },
    );
    expect(res.taskIds).toHaveLength(2);
    const pulled = [...state.getTaskIns(nodeId, 5)];
    expect(pulled.map((t) => t.taskId)).toEqual(res.taskIds);
    expect(pulled.map((t) => t.task!.taskType)).toEqual(["train", "evaluate"]);
    expect(pulled[0]!.task!.pushedAt).toBe(clock);
  });

  test("pushTaskIns with an empty list is a MalformedMessageError", () => {
    expect(() => driver.pushTaskIns({ taskInsList: [] }, state)).toThrow(/`task_ins_list` must not be empty/);
  });

  test("one malformed TaskIns fails the whole request, names it, and stores nothing", () => {
    const { runId } = driver.createRun({ fabId: "f", fabVersion: "v", overrideConfig: new Map() }, state);
    const nodeId = state.createNode(30);
    const bad = validTaskIns(runId, nodeId);
    bad.task!.ttl = -1;
    bad.task!.taskType = "";
    let error: unknown;
    try {
      driver.pushTaskIns({ taskInsList: [validTaskIns(runId, nodeId), bad] }, state);
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
    expect(state.numTaskIns()).toBe(0);
  });

  test("a TaskIns for an unknown run gets \"\" (as Flower) and a warning", () => {
    const { logger, lines } = memoryLogger();
    const { runId } = driver.createRun({ fabId: "f", fabVersion: "v", overrideConfig: new Map() }, state);
    const nodeId = state.createNode(30);
    const res = driver.pushTaskIns({ taskInsList: [validTaskIns(runId, nodeId), validTaskIns(runId + 1n, nodeId)] }, state, {
      logger,
    });
    expect(res.taskIds[0]).not.toBe("");
    expect(res.taskIds[1]).toBe("");
    expect(lines.some((l) => l["event"] === "driver.push-task-ins.not-stored")).toBe(true);
  });

  test("canonicalUuid accepts what Python's uuid.UUID accepts and canonicalizes it", () => {
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

  test("pullTaskRes with a malformed id is a MalformedMessageError naming the id", () => {
    expect(() =>
      driver.pullTaskRes({ node: undefined, taskIds: ["4f1c2b4e-9c7e-4a59-9a8e-2b1d0c3e4f5a", "bogus-id"] }, state),
    ).toThrow(/task_ids are not UUIDs: "bogus-id"/);
  });

  test("pullTaskRes returns the results once; deleting afterwards removes the pair", () => {
    const { runId } = driver.createRun({ fabId: "f", fabVersion: "v", overrideConfig: new Map() }, state);
    const nodeId = state.createNode(30);
    const [insId] = driver.pushTaskIns({ taskInsList: [validTaskIns(runId, nodeId)] }, state).taskIds;
    state.getTaskIns(nodeId, 1);
    const resTask = validTaskRes(runId, nodeId, insId!);
    resTask.task!.pushedAt = clock;
    state.storeTaskRes(resTask);

    const first = driver.pullTaskRes({ node: undefined, taskIds: [insId!.toUpperCase()] }, state);
    expect(first.response.taskResList.map((t) => t.task!.ancestry[0])).toEqual([insId]);
    expect(first.taskIds).toEqual(new Set([insId]));
    expect(driver.pullTaskRes({ node: undefined, taskIds: [insId!] }, state).response.taskResList).toEqual([]);
    state.deleteTasks(first.taskIds);
    expect(state.numTaskIns()).toBe(0);
    expect(state.numTaskRes()).toBe(0);
  });

  test("long-poll pullTaskRes receives a result stored while it waits", async () => {
    const { runId } = driver.createRun({ fabId: "f", fabVersion: "v", overrideConfig: new Map() }, state);
    const nodeId = state.createNode(30);
    const [insId] = driver.pushTaskIns({ taskInsList: [validTaskIns(runId, nodeId)] }, state).taskIds;
    const pending = driver.pullTaskResLongPoll({ node: undefined, taskIds: [insId!] }, state, { hub, maxWaitMs: 60_000 }, 60_000);
    await Promise.resolve();
    expect(hub.waiting).toBe(1);
    const resTask = validTaskRes(runId, nodeId, insId!);
    resTask.task!.pushedAt = clock;
    state.storeTaskRes(resTask);
    const result = await pending;
    expect(result.aborted).toBe(false);
    expect(result.response.taskResList).toHaveLength(1);
    expect(hub.waiting).toBe(0);
  });

  test("long-poll pullTaskRes picks up the NODE_UNAVAILABLE error once the consumer goes offline", async () => {
    const { runId } = driver.createRun({ fabId: "f", fabVersion: "v", overrideConfig: new Map() }, state);
    const nodeId = state.createNode(30);
    const [insId] = driver.pushTaskIns({ taskInsList: [validTaskIns(runId, nodeId)] }, state).taskIds;
    const pending = driver.pullTaskResLongPoll({ node: undefined, taskIds: [insId!] }, state, { hub, maxWaitMs: 60_000 }, 5);
    clock += 60; // the node's ping interval has run out; only the periodic re-check can notice
    const result = await pending;
    expect(result.response.taskResList).toHaveLength(1);
    const task = result.response.taskResList[0]!.task!;
    expect(task.error).toEqual({ code: BigInt(ErrorCode.NODE_UNAVAILABLE), reason: NODE_UNAVAILABLE_REASON });
    expect(task.producer).toEqual({ nodeId, anonymous: false });
    expect(task.ancestry).toEqual([insId]);
  });

  test("a cancelled long-poll pullTaskRes takes nothing", async () => {
    const { runId } = driver.createRun({ fabId: "f", fabVersion: "v", overrideConfig: new Map() }, state);
    const nodeId = state.createNode(30);
    const [insId] = driver.pushTaskIns({ taskInsList: [validTaskIns(runId, nodeId)] }, state).taskIds;
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
    state.storeTaskRes(resTask);
    expect(driver.pullTaskRes({ node: undefined, taskIds: [insId!] }, state).response.taskResList).toHaveLength(1);
  });

  test("closing the hub ends a waiting pullTaskRes at once with what is there", async () => {
    const { runId } = driver.createRun({ fabId: "f", fabVersion: "v", overrideConfig: new Map() }, state);
    const nodeId = state.createNode(30);
    const [insId] = driver.pushTaskIns({ taskInsList: [validTaskIns(runId, nodeId)] }, state).taskIds;
    const pending = driver.pullTaskResLongPoll({ node: undefined, taskIds: [insId!] }, state, { hub, maxWaitMs: 60_000 }, 60_000);
    await Promise.resolve();
    hub.close();
    const result = await pending;
    expect(result).toMatchObject({ aborted: false, response: { taskResList: [] } });
    expect(hub.waiting).toBe(0);
  });
});
