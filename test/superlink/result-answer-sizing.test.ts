import { createState } from "../../src/state/state-factory";
import type { State } from "../../src/state/state";
import { IN_MEMORY_DATABASE } from "../../src/core/constants";
import * as driver from "../../src/superlink/driver/driver-handler";
import { ResultAnswerSizing } from "../../src/superlink/driver/result-answer-sizing";
import { LongPollHub } from "../../src/superlink/long-poll";
import { TaskRes } from "../../src/proto/flwr/proto/task";
import { validTaskIns, validTaskRes } from "./helpers";

/** A TaskRes carrying `bytes` of tensor payload in one array. */
function resultOf(bytes: number): TaskRes {
  return TaskRes.fromPartial({
    task: {
      recordset: {
        parameters: new Map([
          [
            "p",
            {
              dataKeys: ["a"],
              dataValues: [{ dtype: "float32", shape: [bytes / 4], stype: "numpy.ndarray", data: Buffer.alloc(bytes) }],
            },
          ],
        ]),
      },
    },
  });
}

describe("ResultAnswerSizing", () => {
  test("no cap until a result was seen, one large result per answer after, no cap for small results", () => {
    const sizing = new ResultAnswerSizing(3 * 1024 * 1024);
    expect(sizing.limit()).toBeUndefined();
    sizing.observe([]);
    expect(sizing.limit()).toBeUndefined();
    sizing.observe([resultOf(2 * 1024 * 1024), resultOf(2 * 1024 * 1024)]);
    expect(sizing.limit()).toBe(1);
    sizing.observe([resultOf(1024 * 1024)]);
    expect(sizing.limit()).toBe(3);
    sizing.observe([resultOf(16)]);
    expect(sizing.limit()).toBeUndefined();
  });
});

describe("long-polled PullTaskRes with a result limit", () => {
  let state: State;
  let hub: LongPollHub;
  beforeEach(async () => {
    state = await createState(IN_MEMORY_DATABASE);
    hub = new LongPollHub(state);
  });
  afterEach(async () => {
    hub.close();
    await state.close();
  });

  test("results beyond the limit stay undelivered for the next pull, and nothing is lost", async () => {
    const { runId } = await driver.createRun({ fabId: "f", fabVersion: "v", overrideConfig: new Map() }, state);
    const nodeIds = [await state.createNode(30), await state.createNode(30), await state.createNode(30)];
    const insIds: string[] = [];
    for (const nodeId of nodeIds) {
      const [id] = (await driver.pushTaskIns({ taskInsList: [validTaskIns(runId, nodeId)] }, state)).taskIds;
      insIds.push(id!);
      await state.storeTaskRes(validTaskRes(runId, nodeId, id!));
    }
    const request = { node: undefined, taskIds: insIds };
    const seen: string[] = [];
    for (let pull = 0; pull < 3; pull++) {
      const result = await driver.pullTaskResLongPoll(request, state, { hub, maxWaitMs: 1_000 }, 50, 1);
      expect(result.response.taskResList).toHaveLength(1);
      seen.push(result.response.taskResList[0]!.task!.ancestry[0]!);
      await state.deleteTasks(result.taskIds); // as after the answer went out: only delivered pairs go
    }
    expect(seen.sort()).toEqual([...insIds].sort());
    expect(await state.numTaskRes()).toBe(0);
    expect(await state.numTaskIns()).toBe(0);
  });
});
