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

  beforeEach(() => {
    clock = 1_720_000_000;
    state = createState(IN_MEMORY_DATABASE, { now: () => clock });
    hub = new LongPollHub(state);
    runId = state.createRun("fab", "1.0", new Map());
  });
  afterEach(() => {
    hub.close();
    state.close();
  });

  test("createNode registers an online, non-anonymous node", () => {
    const res = fleet.createNode({ pingInterval: 30 }, state);
    expect(res.node?.anonymous).toBe(false);
    expect(res.node?.nodeId).not.toBe(0n);
    expect(state.getNodes(runId).has(res.node!.nodeId)).toBe(true);
  });

  test("ping extends liveness of a known node and reports false for an unknown one", () => {
    const nodeId = fleet.createNode({ pingInterval: 10 }, state).node!.nodeId;
    clock += 8;
    expect(fleet.ping({ node: { nodeId, anonymous: false }, pingInterval: 10 }, state).success).toBe(true);
    clock += 8; // 16 s after creation: only online because of the ping
    expect(state.getNodes(runId).has(nodeId)).toBe(true);
    expect(fleet.ping({ node: { nodeId: 12345n, anonymous: false }, pingInterval: 10 }, state).success).toBe(false);
  });

  test("deleteNode removes the node; anonymous and node 0 are no-ops; unknown -> NotFoundError", () => {
    const nodeId = fleet.createNode({ pingInterval: 30 }, state).node!.nodeId;
    expect(fleet.deleteNode({ node: { nodeId: 0n, anonymous: false } }, state)).toEqual({});
    expect(fleet.deleteNode({ node: { nodeId, anonymous: true } }, state)).toEqual({});
    expect(state.getNodes(runId).has(nodeId)).toBe(true);
    expect(fleet.deleteNode({ node: { nodeId, anonymous: false } }, state)).toEqual({});
    expect(state.getNodes(runId).has(nodeId)).toBe(false);
    expect(() => fleet.deleteNode({ node: { nodeId, anonymous: false } }, state)).toThrow(NotFoundError);
  });

  test("pullTaskIns returns at most one task, FIFO, marked delivered, each only once", () => {
    const nodeId = fleet.createNode({ pingInterval: 30 }, state).node!.nodeId;
    const first = state.storeTaskIns(validTaskIns(runId, nodeId, { taskType: "train" }))!;
    const second = state.storeTaskIns(validTaskIns(runId, nodeId, { taskType: "evaluate" }))!;
    const req = { node: { nodeId, anonymous: false }, taskIds: [] };
    const a = fleet.pullTaskIns(req, state);
    expect(a.taskInsList.map((t) => t.taskId)).toEqual([first]);
    expect(a.taskInsList[0]!.task!.deliveredAt).not.toBe("");
    expect(a.reconnect).toBeUndefined();
    expect(fleet.pullTaskIns(req, state).taskInsList.map((t) => t.taskId)).toEqual([second]);
    expect(fleet.pullTaskIns(req, state).taskInsList).toEqual([]);
  });

  test("pullTaskIns of an anonymous node only sees tasks for anonymous consumers", () => {
    const nodeId = fleet.createNode({ pingInterval: 30 }, state).node!.nodeId;
    state.storeTaskIns(validTaskIns(runId, nodeId));
    const anon = validTaskIns(runId, 0n);
    anon.task!.consumer = { nodeId: 0n, anonymous: true };
    const anonId = state.storeTaskIns(anon)!;
    const res = fleet.pullTaskIns({ node: { nodeId: 0n, anonymous: true }, taskIds: [] }, state);
    expect(res.taskInsList.map((t) => t.taskId)).toEqual([anonId]);
  });

  test("long-poll pull receives a task stored while it waits", async () => {
    const nodeId = fleet.createNode({ pingInterval: 30 }, state).node!.nodeId;
    const pending = fleet.pullTaskInsLongPoll({ node: { nodeId, anonymous: false }, taskIds: [] }, state, {
      hub,
      maxWaitMs: 60_000,
    });
    expect(hub.waiting).toBe(1);
    const taskId = state.storeTaskIns(validTaskIns(runId, nodeId))!;
    const res = await pending;
    expect(res.taskInsList.map((t) => t.taskId)).toEqual([taskId]);
    expect(hub.waiting).toBe(0);
  });

  test("long-poll pull is not woken by a task for another node, and answers empty at the end", async () => {
    const nodeId = fleet.createNode({ pingInterval: 30 }, state).node!.nodeId;
    const other = fleet.createNode({ pingInterval: 30 }, state).node!.nodeId;
    const pending = fleet.pullTaskInsLongPoll({ node: { nodeId, anonymous: false }, taskIds: [] }, state, {
      hub,
      maxWaitMs: 50,
    });
    state.storeTaskIns(validTaskIns(runId, other));
    expect(hub.waiting).toBe(1);
    expect((await pending).taskInsList).toEqual([]);
    expect(hub.waiting).toBe(0);
  });

  test("a cancelled long-poll pull takes nothing: the task stays for the next pull", async () => {
    const nodeId = fleet.createNode({ pingInterval: 30 }, state).node!.nodeId;
    const controller = new AbortController();
    const req = { node: { nodeId, anonymous: false }, taskIds: [] };
    const pending = fleet.pullTaskInsLongPoll(req, state, { hub, maxWaitMs: 60_000, signal: controller.signal });
    controller.abort();
    expect((await pending).taskInsList).toEqual([]);
    expect(hub.waiting).toBe(0);
    const taskId = state.storeTaskIns(validTaskIns(runId, nodeId))!;
    expect(fleet.pullTaskIns(req, state).taskInsList.map((t) => t.taskId)).toEqual([taskId]);
  });

  test("a waiting pull of a revoked node rejects with the revocation error", async () => {
    const nodeId = fleet.createNode({ pingInterval: 30 }, state).node!.nodeId;
    const pending = fleet.pullTaskInsLongPoll({ node: { nodeId, anonymous: false }, taskIds: [] }, state, {
      hub,
      maxWaitMs: 60_000,
    });
    expect(hub.revokeNode(nodeId, new AuthenticationError("revoked"))).toBe(1);
    await expect(pending).rejects.toBeInstanceOf(AuthenticationError);
    expect(hub.waiting).toBe(0);
  });

  test("pushTaskRes stores the first result with pushed_at = now and answers Flower's response", () => {
    const nodeId = fleet.createNode({ pingInterval: 30 }, state).node!.nodeId;
    const insId = state.storeTaskIns(validTaskIns(runId, nodeId))!;
    const res = fleet.pushTaskRes({ taskResList: [validTaskRes(runId, nodeId, insId)] }, state, { now: () => clock });
    expect(res.reconnect).toEqual({ reconnect: 5n });
    const [taskId, value] = [...res.results][0] ?? [];
    expect(taskId).toMatch(/^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/);
    expect(value).toBe(0);
    const stored = state.getTaskRes(new Set([insId]));
    expect(stored.map((t) => t.taskId)).toEqual([taskId]);
    expect(stored[0]!.task!.pushedAt).toBe(clock);
  });

  test("pushTaskRes of an invalid result answers OK with key \"None\" and logs why", () => {
    const { logger, lines } = memoryLogger();
    const nodeId = fleet.createNode({ pingInterval: 30 }, state).node!.nodeId;
    const insId = state.storeTaskIns(validTaskIns(runId, nodeId))!;
    const bad = validTaskRes(runId, nodeId, insId);
    bad.task!.ttl = 0;
    const res = fleet.pushTaskRes({ taskResList: [bad] }, state, { logger });
    expect([...res.results]).toEqual([["None", 0]]);
    expect(state.numTaskRes()).toBe(0);
    const warning = lines.find((l) => l["event"] === "fleet.push-task-res.dropped");
    expect(String(warning?.["reason"])).toContain("`ttl` must be higher than zero");
  });

  test("pushTaskRes for an unknown run answers \"None\" and logs that the run does not exist", () => {
    const { logger, lines } = memoryLogger();
    const nodeId = fleet.createNode({ pingInterval: 30 }, state).node!.nodeId;
    const res = fleet.pushTaskRes({ taskResList: [validTaskRes(runId + 1n, nodeId, "4f1c2b4e-9c7e-4a59-9a8e-2b1d0c3e4f5a")] }, state, {
      logger,
    });
    expect([...res.results]).toEqual([["None", 0]]);
    expect(String(lines.find((l) => l["event"] === "fleet.push-task-res.dropped")?.["reason"])).toContain("does not exist");
  });

  test("pushTaskRes with an empty list is a MalformedMessageError (Flower crashed with IndexError)", () => {
    expect(() => fleet.pushTaskRes({ taskResList: [] }, state)).toThrow(MalformedMessageError);
  });

  test("pushTaskRes stores only the first of several results, as Flower, and warns", () => {
    const { logger, lines } = memoryLogger();
    const nodeId = fleet.createNode({ pingInterval: 30 }, state).node!.nodeId;
    const a = state.storeTaskIns(validTaskIns(runId, nodeId))!;
    const b = state.storeTaskIns(validTaskIns(runId, nodeId))!;
    fleet.pushTaskRes({ taskResList: [validTaskRes(runId, nodeId, a), validTaskRes(runId, nodeId, b)] }, state, { logger });
    expect(state.numTaskRes()).toBe(1);
    expect(lines.some((l) => l["event"] === "fleet.push-task-res.extra-ignored")).toBe(true);
  });

  test("getRun returns the stored run, or an empty response for an unknown id", () => {
    const config = new Map([["lr", { double: 0.1 }]]);
    const id = state.createRun("fab-x", "2.0", config);
    const res = fleet.getRun({ runId: id }, state);
    expect(res.run?.runId).toBe(id);
    expect(res.run?.fabId).toBe("fab-x");
    expect(res.run?.fabVersion).toBe("2.0");
    expect(res.run?.overrideConfig.get("lr")).toMatchObject({ double: 0.1 });
    expect(fleet.getRun({ runId: id + 1n }, state)).toEqual({ run: undefined });
  });
});
