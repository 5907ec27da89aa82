import { AuthenticationError, MalformedMessageError, NotFoundError } from "../../src/core/errors";
import { IN_MEMORY_DATABASE } from "../../src/core/constants";
import { createState } from "../../src/state/state-factory";
import type { State } from "../../src/state/state";
import { LongPollHub } from "../../src/superlink/long-poll";
import * as fleet from "../../src/superlink/fleet/fleet-handler";
import { memoryLogger, validTaskIns, validTaskRes } from "./helpers";

describe("fleet handler (over InMemoryState)", () => {
  let clock: number;
  let state: State;
  let hub: LongPollHub;
  let runId: bigint;

  beforeEach(async () => {
    clock = 1_720_000_000;
    state = await createState(IN_MEMORY_DATABASE, { now: () => clock });
    hub = new LongPollHub(state);
    runId = await state.createRun("fab", "1.0", new Map());
  });
  afterEach(async () => {
    hub.close();
    await state.close();
  });

  test("createNode registers an online, non-anonymous node", async () => {
    const res = await fleet.createNode({ pingInterval: 30 }, state);
    expect(res.node?.anonymous).toBe(false);
    expect(res.node?.nodeId).not.toBe(0n);
    expect((await state.getNodes(runId)).has(res.node!.nodeId)).toBe(true);
  });

  test("ping extends liveness of a known node and reports false for an unknown one", async () => {
    const nodeId = (await fleet.createNode({ pingInterval: 10 }, state)).node!.nodeId;
    clock += 8;
    expect((await fleet.ping({ node: { nodeId, anonymous: false }, pingInterval: 10 }, state)).success).toBe(true);
    clock += 8; // 16 s after creation: only online because of the ping
    expect((await state.getNodes(runId)).has(nodeId)).toBe(true);
    expect((await fleet.ping({ node: { nodeId: 12345n, anonymous: false }, pingInterval: 10 }, state)).success).toBe(
      false,
    );
  });

  test("deleteNode removes the node; anonymous and node 0 are no-ops; unknown -> NotFoundError", async () => {
    const nodeId = (await fleet.createNode({ pingInterval: 30 }, state)).node!.nodeId;
    expect(await fleet.deleteNode({ node: { nodeId: 0n, anonymous: false } }, state)).toEqual({});
    expect(await fleet.deleteNode({ node: { nodeId, anonymous: true } }, state)).toEqual({});
    expect((await state.getNodes(runId)).has(nodeId)).toBe(true);
    expect(await fleet.deleteNode({ node: { nodeId, anonymous: false } }, state)).toEqual({});
    expect((await state.getNodes(runId)).has(nodeId)).toBe(false);
    await expect(fleet.deleteNode({ node: { nodeId, anonymous: false } }, state)).rejects.toThrow(NotFoundError);
  });

  test("pullTaskIns returns at most one task, FIFO, marked delivered, each only once", async () => {
    const nodeId = (await fleet.createNode({ pingInterval: 30 }, state)).node!.nodeId;
    const first = (await state.storeTaskIns(validTaskIns(runId, nodeId, { taskType: "train" })))!;
    const second = (await state.storeTaskIns(validTaskIns(runId, nodeId, { taskType: "evaluate" })))!;
    const req = { node: { nodeId, anonymous: false }, taskIds: [] };
    const a = await fleet.pullTaskIns(req, state);
    expect(a.taskInsList.map((t) => t.taskId)).toEqual([first]);
    expect(a.taskInsList[0]!.task!.deliveredAt).not.toBe("");
    expect(a.reconnect).toBeUndefined();
    expect((await fleet.pullTaskIns(req, state)).taskInsList.map((t) => t.taskId)).toEqual([second]);
    expect((await fleet.pullTaskIns(req, state)).taskInsList).toEqual([]);
  });

  test("pullTaskIns of an anonymous node only sees tasks for anonymous consumers", async () => {
    const nodeId = (await fleet.createNode({ pingInterval: 30 }, state)).node!.nodeId;
    await state.storeTaskIns(validTaskIns(runId, nodeId));
    const anon = validTaskIns(runId, 0n);
    anon.task!.consumer = { nodeId: 0n, anonymous: true };
    const anonId = (await state.storeTaskIns(anon))!;
    const res = await fleet.pullTaskIns({ node: { nodeId: 0n, anonymous: true }, taskIds: [] }, state);
    expect(res.taskInsList.map((t) => t.taskId)).toEqual([anonId]);
  });

  test("long-poll pull receives a task stored while it waits", async () => {
    const nodeId = (await fleet.createNode({ pingInterval: 30 }, state)).node!.nodeId;
    const pending = fleet.pullTaskInsLongPoll({ node: { nodeId, anonymous: false }, taskIds: [] }, state, {
      hub,
      maxWaitMs: 60_000,
    });
    await new Promise((r) => setImmediate(r)); // the pull is now waiting
    expect(hub.waiting).toBe(1);
    const taskId = (await state.storeTaskIns(validTaskIns(runId, nodeId)))!;
    const res = await pending;
    expect(res.taskInsList.map((t) => t.taskId)).toEqual([taskId]);
    expect(hub.waiting).toBe(0);
  });

  test("long-poll pull is not woken by a task for another node, and answers empty at the end", async () => {
    const nodeId = (await fleet.createNode({ pingInterval: 30 }, state)).node!.nodeId;
    const other = (await fleet.createNode({ pingInterval: 30 }, state)).node!.nodeId;
    const pending = fleet.pullTaskInsLongPoll({ node: { nodeId, anonymous: false }, taskIds: [] }, state, {
      hub,
      maxWaitMs: 50,
    });
    await new Promise((r) => setImmediate(r)); // the pull is now waiting
    await state.storeTaskIns(validTaskIns(runId, other));
    expect(hub.waiting).toBe(1);
    expect((await pending).taskInsList).toEqual([]);
    expect(hub.waiting).toBe(0);
  });

  test("a cancelled long-poll pull takes nothing: the task stays for the next pull", async () => {
    const nodeId = (await fleet.createNode({ pingInterval: 30 }, state)).node!.nodeId;
    const controller = new AbortController();
    const req = { node: { nodeId, anonymous: false }, taskIds: [] };
    const pending = fleet.pullTaskInsLongPoll(req, state, { hub, maxWaitMs: 60_000, signal: controller.signal });
    controller.abort();
    expect((await pending).taskInsList).toEqual([]);
    expect(hub.waiting).toBe(0);
    const taskId = (await state.storeTaskIns(validTaskIns(runId, nodeId)))!;
    expect((await fleet.pullTaskIns(req, state)).taskInsList.map((t) => t.taskId)).toEqual([taskId]);
  });

  test("a waiting pull of a revoked node rejects with the revocation error", async () => {
    const nodeId = (await fleet.createNode({ pingInterval: 30 }, state)).node!.nodeId;
    const pending = fleet.pullTaskInsLongPoll({ node: { nodeId, anonymous: false }, taskIds: [] }, state, {
      hub,
      maxWaitMs: 60_000,
    });
    await new Promise((r) => setImmediate(r)); // the pull is now waiting
    expect(hub.revokeNode(nodeId, new AuthenticationError("revoked"))).toBe(1);
    await expect(pending).rejects.toBeInstanceOf(AuthenticationError);
    expect(hub.waiting).toBe(0);
  });

  test("pushTaskRes stores the first result with pushed_at = now and answers Flower's response", async () => {
    const nodeId = (await fleet.createNode({ pingInterval: 30 }, state)).node!.nodeId;
    const insId = (await state.storeTaskIns(validTaskIns(runId, nodeId)))!;
    const res = await fleet.pushTaskRes({ taskResList: [validTaskRes(runId, nodeId, insId)] }, state, {
      now: () => clock,
    });
    expect(res.reconnect).toEqual({ reconnect: 5n });
    const [taskId, value] = [...res.results][0] ?? [];
    expect(taskId).toMatch(/^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/);
    expect(value).toBe(0);
    const stored = await state.getTaskRes(new Set([insId]));
    expect(stored.map((t) => t.taskId)).toEqual([taskId]);
    expect(stored[0]!.task!.pushedAt).toBe(clock);
  });

  test('pushTaskRes of an invalid result answers OK with key "None" and logs why', async () => {
    const { logger, lines } = memoryLogger();
    const nodeId = (await fleet.createNode({ pingInterval: 30 }, state)).node!.nodeId;
    const insId = (await state.storeTaskIns(validTaskIns(runId, nodeId)))!;
    const bad = validTaskRes(runId, nodeId, insId);
    bad.task!.ttl = 0;
    const res = await fleet.pushTaskRes({ taskResList: [bad] }, state, { logger });
    expect([...res.results]).toEqual([["None", 0]]);
    expect(await state.numTaskRes()).toBe(0);
    const warning = lines.find((l) => l["event"] === "fleet.push-task-res.dropped");
    expect(String(warning?.["reason"])).toContain("`ttl` must be higher than zero");
  });

  test('pushTaskRes for an unknown run answers "None" and logs that the run does not exist', async () => {
    const { logger, lines } = memoryLogger();
    const nodeId = (await fleet.createNode({ pingInterval: 30 }, state)).node!.nodeId;
    const res = await fleet.pushTaskRes(
      { taskResList: [validTaskRes(runId + 1n, nodeId, "4f1c2b4e-9c7e-4a59-9a8e-2b1d0c3e4f5a")] },
      state,
      {
        logger,
      },
    );
    expect([...res.results]).toEqual([["None", 0]]);
    expect(String(lines.find((l) => l["event"] === "fleet.push-task-res.dropped")?.["reason"])).toContain(
      "does not exist",
    );
  });

  test("pushTaskRes with an empty list is a MalformedMessageError (Flower crashed with IndexError)", async () => {
    await expect(fleet.pushTaskRes({ taskResList: [] }, state)).rejects.toThrow(MalformedMessageError);
  });

  test("pushTaskRes stores only the first of several results, as Flower, and warns", async () => {
    const { logger, lines } = memoryLogger();
    const nodeId = (await fleet.createNode({ pingInterval: 30 }, state)).node!.nodeId;
    const a = (await state.storeTaskIns(validTaskIns(runId, nodeId)))!;
    const b = (await state.storeTaskIns(validTaskIns(runId, nodeId)))!;
    await fleet.pushTaskRes({ taskResList: [validTaskRes(runId, nodeId, a), validTaskRes(runId, nodeId, b)] }, state, {
      logger,
    });
    expect(await state.numTaskRes()).toBe(1);
    expect(lines.some((l) => l["event"] === "fleet.push-task-res.extra-ignored")).toBe(true);
  });

  test("getRun returns the stored run, or an empty response for an unknown id", async () => {
    const config = new Map([["lr", { double: 0.1 }]]);
    const id = await state.createRun("fab-x", "2.0", config);
    const res = await fleet.getRun({ runId: id }, state);
    expect(res.run?.runId).toBe(id);
    expect(res.run?.fabId).toBe("fab-x");
    expect(res.run?.fabVersion).toBe("2.0");
    expect(res.run?.overrideConfig.get("lr")).toMatchObject({ double: 0.1 });
    expect(await fleet.getRun({ runId: id + 1n }, state)).toEqual({ run: undefined });
  });
});
