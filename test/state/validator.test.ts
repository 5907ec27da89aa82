import { validateTaskInsOrRes } from "../../src/state/validator";
import { INVALID_TASK_INS, INVALID_TASK_RES, TestClock, makeTaskIns, makeTaskRes } from "./state.conformance";

const clock = new TestClock();
const validIns = () => makeTaskIns(clock, 1n, { nodeId: 5n, anonymous: false });
const validRes = () => makeTaskRes(clock, 1n, 5n, "c9a4b7a4-6f39-4e8e-9bb4-0d2f5c1e7a10");

const CREATED_AT =
  "`created_at` must be a float that records the unix timestamp in seconds when the message was created.";

/** Flower 1.10's exact messages (flwr/server/utils/validator.py) for each broken rule. */
const INS_MESSAGES: Record<string, string[]> = {
  "non-empty task_id": ["non-empty `task_id`"],
  "no task": [
    "`task` does not set field `task`",
    CREATED_AT,
    "`ttl` must be higher than zero",
    "`pushed_at` is not a recent timestamp",
    "`producer` does not set field `producer`",
    "`producer` is not anonymous",
    "`consumer` does not set field `consumer`",
    "non-anonymous consumer MUST provide a `node_id`",
    "`task_type` MUST be set",
    "Either `recordset` or `error` MUST be set",
  ],
  "created_at too old": [CREATED_AT],
  "created_at NaN": [CREATED_AT],
  "delivered_at set": ["`delivered_at` must be an empty str"],
  "ttl zero": ["`ttl` must be higher than zero"],
  "ttl negative": ["`ttl` must be higher than zero"],
  "pushed_at unset": ["`pushed_at` is not a recent timestamp"],
  "no producer": ["`producer` does not set field `producer`", "`producer` is not anonymous"],
  "producer with node id": ["`producer.node_id` is not 0"],
  "producer not anonymous": ["`producer` is not anonymous"],
  "no consumer": ["`consumer` does not set field `consumer`", "non-anonymous consumer MUST provide a `node_id`"],
  "anonymous consumer with node id": ["anonymous consumers MUST NOT set a `node_id`"],
  "named consumer without node id": ["non-anonymous consumer MUST provide a `node_id`"],
  "empty task_type": ["`task_type` MUST be set"],
  "recordset and error": ["Either `recordset` or `error` MUST be set"],
  "neither recordset nor error": ["Either `recordset` or `error` MUST be set"],
  "non-empty ancestry": ["`ancestry` is not empty"],
};

const RES_MESSAGES: Record<string, string[]> = {
  "non-empty task_id": ["non-empty `task_id`"],
  "no task": [
    "`task` does not set field `task`",
    CREATED_AT,
    "`ttl` must be higher than zero",
    "`pushed_at` is not a recent timestamp",
    "`producer` does not set field `producer`",
    "non-anonymous producer MUST provide a `node_id`",
    "`consumer` does not set field `consumer`",
    "non-anonymous consumer MUST provide a `node_id`",
    "`task_type` MUST be set",
    "Either `recordset` or `error` MUST be set",
    "`ancestry` is empty",
  ],
  "created_at too old": [CREATED_AT],
  "delivered_at set": ["`delivered_at` must be an empty str"],
  "ttl zero": ["`ttl` must be higher than zero"],
  "ttl NaN": ["`ttl` must be higher than zero"],
  "pushed_at too old": ["`pushed_at` is not a recent timestamp"],
  "no producer": ["`producer` does not set field `producer`", "non-anonymous producer MUST provide a `node_id`"],
  "anonymous producer with node id": ["anonymous producers MUST NOT set a `node_id`"],
  "named producer without node id": ["non-anonymous producer MUST provide a `node_id`"],
  "no consumer": ["`consumer` does not set field `consumer`", "non-anonymous consumer MUST provide a `node_id`"],
  "anonymous consumer with node id": ["anonymous consumers MUST NOT set a `node_id`"],
  "named consumer without node id": ["non-anonymous consumer MUST provide a `node_id`"],
  "empty task_type": ["`task_type` MUST be set"],
  "recordset and error": ["Either `recordset` or `error` MUST be set"],
  "neither recordset nor error": ["Either `recordset` or `error` MUST be set"],
  "empty ancestry": ["`ancestry` is empty"],
};

describe("validateTaskInsOrRes", () => {
  test("valid TaskIns and TaskRes have no errors", () => {
    expect(validateTaskInsOrRes(validIns(), "ins")).toEqual([]);
    expect(validateTaskInsOrRes(validRes(), "res")).toEqual([]);
    const anonymousIns = makeTaskIns(clock, 1n, { nodeId: 0n, anonymous: true });
    expect(validateTaskInsOrRes(anonymousIns, "ins")).toEqual([]);
    const errorRes = makeTaskRes(clock, 1n, 5n, "x", { recordset: undefined, error: { code: 0n, reason: "" } });
    expect(validateTaskInsOrRes(errorRes, "res")).toEqual([]);
  });

  test("the timestamp bound is inclusive (2024-03-27T00:00:00Z)", () => {
    const ins = validIns();
    ins.task!.createdAt = 1711497600.0;
    ins.task!.pushedAt = 1711497600.0;
    expect(validateTaskInsOrRes(ins, "ins")).toEqual([]);
  });

  test("every TaskIns rule has a message case", () => {
    expect(INVALID_TASK_INS.map(([name]) => name).sort()).toEqual(Object.keys(INS_MESSAGES).sort());
    expect(INVALID_TASK_RES.map(([name]) => name).sort()).toEqual(Object.keys(RES_MESSAGES).sort());
  });

  test.each(INVALID_TASK_INS)("TaskIns: %s", (name, mutate) => {
    const ins = validIns();
    mutate(ins);
    expect(validateTaskInsOrRes(ins, "ins")).toEqual(INS_MESSAGES[name]);
  });

  test.each(INVALID_TASK_RES)("TaskRes: %s", (name, mutate) => {
    const res = validRes();
    mutate(res);
    expect(validateTaskInsOrRes(res, "res")).toEqual(RES_MESSAGES[name]);
  });

  test("the rule set follows `kind`, not the message's shape", () => {
    expect(validateTaskInsOrRes(validRes(), "ins")).toEqual([
      "`producer.node_id` is not 0",
      "`producer` is not anonymous",
      "`ancestry` is not empty",
    ]);
    expect(validateTaskInsOrRes(validIns(), "res")).toEqual(["`ancestry` is empty"]);
  });

  test("several broken rules are all reported, in Flower's order", () => {
    const ins = validIns();
    ins.taskId = "x";
    ins.task!.ttl = 0;
    ins.task!.taskType = "";
    expect(validateTaskInsOrRes(ins, "ins")).toEqual([
      "non-empty `task_id`",
      "`ttl` must be higher than zero",
      "`task_type` MUST be set",
    ]);
  });
});
