/** The Fleet and Driver handlers' side of the state rules: ping bounds, one result per task, limits. */
import { MalformedMessageError, ResourceExhaustedError } from "../../src/core/errors";
import { boundedPingInterval } from "../../src/core/ping-interval";
import { InMemoryState } from "../../src/state/in-memory-state";
import type { State } from "../../src/state/state";
import { promisedState } from "../../src/state/sync-state";
import * as driver from "../../src/superlink/driver/driver-handler";
import * as fleet from "../../src/superlink/fleet/fleet-handler";
import { memoryLogger, validTaskIns, validTaskRes } from "./helpers";

let clock: number;
let state: State;
let runId: bigint;

beforeEach(async () => {
  clock = Date.now() / 1000;
  state = promisedState(new InMemoryState({ now: () => clock, limits: { maxRunBytes: 50_000 } }));
  runId = await state.createRun("fab", "1.0", new Map());
});
afterEach(async () => await state.close());

test("ping_interval: finite positive values are clamped to 10..1800 s, others refused", async () => {
  expect([5, 10, 30, 1800, 1e9].map((v) => boundedPingInterval(v))).toEqual([10, 10, 30, 1800, 1800]);
  for (const bad of [0, -1, -1e9, Number.NaN, Number.POSITIVE_INFINITY]) {
    expect(() => boundedPingInterval(bad)).toThrow(MalformedMessageError);
    await expect(fleet.createNode({ pingInterval: bad }, state)).rejects.toThrow(MalformedMessageError);
  }
  expect(boundedPingInterval(0.5, { min: 0.1, max: 2 })).toBe(0.5);
});

test("a CreateNode asking for 1e9 s is online for 1800 s only; a Ping asking for 1 s gets 10 s", async () => {
  const nodeId = (await fleet.createNode({ pingInterval: 1e9 }, state)).node!.nodeId;
  clock += 1801;
  expect((await state.getNodes(runId)).has(nodeId)).toBe(false);
  await fleet.ping({ node: { nodeId, anonymous: false }, pingInterval: 1 }, state);
  clock += 9;
  expect((await state.getNodes(runId)).has(nodeId)).toBe(true);
});

test('PushTaskRes: a re-push gets the stored id, a reply to nothing or to another node\'s task gets "None"', async () => {
  const { logger, lines } = memoryLogger();
  const nodeId = (await fleet.createNode({ pingInterval: 30 }, state)).node!.nodeId;
  const [insId] = (await driver.pushTaskIns({ taskInsList: [validTaskIns(runId, nodeId)] }, state)).taskIds;
  const push = () => fleet.pushTaskRes({ taskResList: [validTaskRes(runId, nodeId, insId!)] }, state, { logger });
  const [first] = [...(await push()).results.keys()];
  expect([...(await push()).results.keys()]).toEqual([first]);
  expect(await state.numTaskRes()).toBe(1);
  const foreign = await fleet.pushTaskRes({ taskResList: [validTaskRes(runId, nodeId + 1n, insId!)] }, state, {
    logger,
  });
  expect([...foreign.results.keys()]).toEqual(["None"]);
  const unknown = await fleet.pushTaskRes(
    { taskResList: [validTaskRes(runId, nodeId, "00000000-0000-4000-8000-000000000000")] },
    state,
    { logger },
  );
  expect([...unknown.results.keys()]).toEqual(["None"]);
  expect(lines.filter((l) => l["event"] === "fleet.push-task-res.dropped")).toHaveLength(2);
});

test("PushTaskIns: the per-push count and the byte limits refuse the whole request", async () => {
  const tiny = () => validTaskIns(runId, 7n);
  await expect(
    driver.pushTaskIns({ taskInsList: [tiny(), tiny(), tiny()] }, state, { maxTaskInsPerPush: 2 }),
  ).rejects.toThrow(ResourceExhaustedError);
  const big = () => {
    const t = tiny();
    t.task!.recordset = {
      parameters: new Map([
        ["w", { dataKeys: ["a"], dataValues: [{ dtype: "u8", shape: [], stype: "", data: Buffer.alloc(20_000) }] }],
      ]),
      metrics: new Map(),
      configs: new Map(),
    };
    return t;
  };
  await expect(driver.pushTaskIns({ taskInsList: [big(), big(), big()] }, state)).rejects.toThrow(
    ResourceExhaustedError,
  );
  expect(await state.numTaskIns()).toBe(0);
  expect((await driver.pushTaskIns({ taskInsList: [big(), big()] }, state)).taskIds).toHaveLength(2);
});
