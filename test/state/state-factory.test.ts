import { existsSync, mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { IN_MEMORY_DATABASE } from "../../src/core/constants";
import { StateError } from "../../src/core/errors";
import { InMemoryState } from "../../src/state/in-memory-state";
import { SqliteState } from "../../src/state/sqlite-state";
import { createState } from "../../src/state/state-factory";
import { TestClock } from "./state.conformance";

describe("createState", () => {
  let dir: string;
  beforeAll(() => {
    dir = mkdtempSync(join(tmpdir(), "flwr-ts-state-factory-"));
  });
  afterAll(() => rmSync(dir, { recursive: true, force: true }));

  test(`"${IN_MEMORY_DATABASE}" gives an InMemoryState, a fresh one each time`, () => {
    const a = createState(IN_MEMORY_DATABASE);
    const b = createState(IN_MEMORY_DATABASE);
    expect(a).toBeInstanceOf(InMemoryState);
    const runId = a.createRun("", "", new Map());
    expect(b.getRun(runId)).toBeUndefined();
    a.close();
    b.close();
  });

  test('":memory:" gives a SqliteState', () => {
    const state = createState(":memory:");
    expect(state).toBeInstanceOf(SqliteState);
    state.close();
  });

  test("a path gives a SqliteState on that file", () => {
    const path = join(dir, "superlink.db");
    const state = createState(path);
    expect(state).toBeInstanceOf(SqliteState);
    expect(existsSync(path)).toBe(true);
    state.close();
  });

  test.each([IN_MEMORY_DATABASE, ":memory:"])("options reach the backend (%s)", (database) => {
    const clock = new TestClock();
    const state = createState(database, { now: clock.now });
    const runId = state.createRun("", "", new Map());
    const nodeId = state.createNode(10);
    clock.advance(11);
    expect(state.getNodes(runId).has(nodeId)).toBe(false);
    state.close();
  });

  test("an unusable path is a StateError", () => {
    expect(() => createState(join(dir, "missing", "x.db"))).toThrow(StateError);
  });
});
