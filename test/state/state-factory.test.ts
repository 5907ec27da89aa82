import { existsSync, mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { IN_MEMORY_DATABASE } from "../../src/core/constants";
import { StateError } from "../../src/core/errors";
import { createState } from "../../src/state/state-factory";
import { TestClock } from "./state.conformance";

describe("createState", () => {
  let dir: string;
  beforeAll(() => {
    dir = mkdtempSync(join(tmpdir(), "flwr-ts-state-factory-"));
  });
  afterAll(() => rmSync(dir, { recursive: true, force: true }));

  test(`"${IN_MEMORY_DATABASE}" gives an InMemoryState, a fresh one each time`, async () => {
    const a = await createState(IN_MEMORY_DATABASE);
    const b = await createState(IN_MEMORY_DATABASE);
    expect(a.kind).toBe("memory");
    const runId = await a.createRun("", "", new Map());
    expect(await b.getRun(runId)).toBeUndefined();
    await a.close();
    await b.close();
  });

  test('":memory:" gives a SqliteState', async () => {
    const state = await createState(":memory:");
    expect(state.kind).toBe("sqlite");
    await state.close();
  });

  test("a path gives a SqliteState on that file", async () => {
    const path = join(dir, "superlink.db");
    const state = await createState(path);
    expect(state.kind).toBe("sqlite");
    expect(existsSync(path)).toBe(true);
    await state.close();
  });

  test.each([IN_MEMORY_DATABASE, ":memory:"])("options reach the backend (%s)", async (database) => {
    const clock = new TestClock();
    const state = await createState(database, { now: clock.now });
    const runId = await state.createRun("", "", new Map());
    const nodeId = await state.createNode(10);
    clock.advance(11);
    expect((await state.getNodes(runId)).has(nodeId)).toBe(false);
    await state.close();
  });

  test("an unusable path is a StateError", async () => {
    await expect(createState(join(dir, "missing", "x.db"))).rejects.toThrow(StateError);
  });
});
