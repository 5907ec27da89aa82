import Database from "better-sqlite3";
import { execFileSync } from "node:child_process";
import { chmodSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { ErrorCode } from "../../src/core/constants";
import { StateCorruptError, StateError, StateLockedError } from "../../src/core/errors";
import { SQLITE_APPLICATION_ID, SQLITE_SCHEMA_VERSION, SqliteState } from "../../src/state/sqlite-state";
import {
  TestClock,
  describeStateConformance,
  describeStateLimits,
  makeTaskIns,
  makeTaskRes,
  sampleRecordSet,
} from "./state.conformance";
import { promisedState } from "../../src/state/sync-state";

/** Turns a current schema back into version 2's (before shared content). */
const WITHOUT_SHARED_CONTENT =
  "DROP INDEX idx_task_ins_content; DROP TABLE shared_content; " +
  "ALTER TABLE task_ins DROP COLUMN content_digest; ALTER TABLE task_res DROP COLUMN content_digest;";

/**
 * Makes `path` unwritable for this process and returns the undo, or undefined where this system
 * cannot: file modes for ordinary users; for root (which ignores modes) the immutable attribute.
 */
function makeReadOnly(path: string): (() => void) | undefined {
  if (process.getuid?.() !== 0) {
    chmodSync(path, 0o444);
    return () => chmodSync(path, 0o644);
  }
  try {
    execFileSync("chattr", ["+i", path], { stdio: "pipe" });
    return () => execFileSync("chattr", ["-i", path], { stdio: "pipe" });
  } catch {
    return undefined;
  }
}

/** Probed once, so the read-only test is skipped (visibly) rather than passing vacuously. */
const canMakeReadOnly = ((): boolean => {
  const probeDir = mkdtempSync(join(tmpdir(), "flwr-ts-ro-probe-"));
  try {
    const probe = join(probeDir, "probe");
    writeFileSync(probe, "");
    const undo = makeReadOnly(probe);
    undo?.();
    return undo !== undefined;
  } finally {
    rmSync(probeDir, { recursive: true, force: true });
  }
})();

let dir: string;
let fileCount = 0;
const freshPath = (): string => join(dir, `state-${++fileCount}.db`);

beforeAll(() => {
  dir = mkdtempSync(join(tmpdir(), "flwr-ts-sqlite-state-"));
});
afterAll(() => {
  rmSync(dir, { recursive: true, force: true });
});

describeStateConformance("SqliteState(:memory:)", (clock) =>
  promisedState(new SqliteState(":memory:", { now: clock.now })),
);
describeStateConformance("SqliteState(file)", (clock) =>
  promisedState(new SqliteState(freshPath(), { now: clock.now })),
);
describeStateLimits("SqliteState(file)", (clock, limits) =>
  promisedState(new SqliteState(freshPath(), { now: clock.now, limits })),
);

describe("SqliteState on a file", () => {
  test("runs, nodes, key mappings and undelivered tasks (errors included) survive reopening", () => {
    const path = freshPath();
    const clock = new TestClock();
    const key = new TextEncoder().encode("-----BEGIN PUBLIC KEY-----\nKEY\n-----END PUBLIC KEY-----\n");
    const error = { code: BigInt(ErrorCode.CLIENT_APP_RAISED_EXCEPTION), reason: "ZeroDivisionError" };

    const first = new SqliteState(path, { now: clock.now });
    const config = new Map([
      ["rounds", { sint64: 3n }],
      ["lr", { double: 0.01 }],
    ]);
    const runId = first.createRun("flwr/demo", "1.0", config);
    const nodeId = first.createNode(30, key);
    const otherNode = first.createNode(30);
    const delivered = first.storeTaskIns(makeTaskIns(clock, runId, { nodeId, anonymous: false }))!;
    expect(first.getTaskIns(nodeId, 1).map((t) => t.taskId)).toEqual([delivered]);
    const taskIns = makeTaskIns(clock, runId, { nodeId, anonymous: false }, { recordset: sampleRecordSet() });
    const pending = first.storeTaskIns(taskIns)!;
    const answered = first.storeTaskIns(makeTaskIns(clock, runId, { nodeId: otherNode, anonymous: false }))!;
    const taskRes = makeTaskRes(clock, runId, otherNode, answered, { recordset: undefined, error });
    const resId = first.storeTaskRes(taskRes)!;
    first.close();

    clock.advance(10);
    const second = new SqliteState(path, { now: clock.now });
    try {
      expect(second.getRun(runId)).toEqual({ runId, fabId: "flwr/demo", fabVersion: "1.0", overrideConfig: config });
      expect(second.getNodes(runId)).toEqual(new Set([nodeId, otherNode]));
      expect(second.getNodeId(key)).toBe(nodeId);
      expect([second.numTaskIns(), second.numTaskRes()]).toEqual([3, 1]);
      const [got, ...rest] = second.getTaskIns(nodeId, 10); // the delivered one stays delivered
      expect(rest).toEqual([]);
      expect(got!.taskId).toBe(pending);
      expect(got!.task!.recordset).toEqual(sampleRecordSet());
      expect(second.getTaskRes(new Set([answered]))).toEqual([
        { ...taskRes, taskId: resId, task: { ...taskRes.task, deliveredAt: expect.any(String) } },
      ]);
      // Liveness is wall-clock: once the interval passes, the node is offline after a restart too.
      clock.advance(30);
      expect(second.getNodes(runId)).toEqual(new Set());
    } finally {
      second.close();
    }
  });

  test("a new file is created with the versioned schema", () => {
    const path = freshPath();
    new SqliteState(path).close();
    const raw = new Database(path, { readonly: true });
    try {
      expect(raw.pragma("application_id", { simple: true })).toBe(SQLITE_APPLICATION_ID);
      expect(raw.pragma("user_version", { simple: true })).toBe(SQLITE_SCHEMA_VERSION);
      expect(raw.pragma("journal_mode", { simple: true })).toBe("wal");
      const tables = raw.prepare("SELECT name FROM sqlite_schema WHERE type = 'table' ORDER BY name").pluck().all();
      expect(tables).toEqual(["node", "run", "shared_content", "task_ins", "task_res"]);
    } finally {
      raw.close();
    }
  });

  test("an empty existing file is initialized", () => {
    const path = freshPath();
    writeFileSync(path, "");
    const state = new SqliteState(path);
    expect(state.createRun("", "", new Map())).not.toBe(0n);
    state.close();
  });

  test("a file that is not a SQLite database gives StateError naming the path, and is left as it was", () => {
    const path = freshPath();
    const garbage = Buffer.from("this is not a database, just some bytes\n".repeat(64));
    writeFileSync(path, garbage);
    expect(() => new SqliteState(path)).toThrow(StateError);
    expect(() => new SqliteState(path)).toThrow(path);
    expect(() => new SqliteState(path)).toThrow(/not a database/);
    expect(readFileSync(path)).toEqual(garbage);
  });

  test("a path that cannot be created gives StateError naming the path", () => {
    const path = join(dir, "no-such-dir", "state.db");
    expect(() => new SqliteState(path)).toThrow(StateError);
    expect(() => new SqliteState(path)).toThrow(path);
  });

  const testIfReadOnly = canMakeReadOnly ? test : test.skip;
  testIfReadOnly("an unwritable database file gives StateError naming the path", () => {
    const path = freshPath();
    new SqliteState(path).close();
    const undo = makeReadOnly(path)!;
    try {
      expect(() => new SqliteState(path)).toThrow(StateError);
      expect(() => new SqliteState(path)).toThrow(`"${path}"`);
      expect(() => new SqliteState(path)).toThrow(/writ/);
    } finally {
      undo();
    }
  });

  test("a directory is not a usable database file", () => {
    expect(() => new SqliteState(dir)).toThrow(StateError);
  });

  test("a schema version this build does not know is refused, untouched", () => {
    const path = freshPath();
    new SqliteState(path).close();
    const raw = new Database(path);
    raw.pragma(`user_version = ${SQLITE_SCHEMA_VERSION + 1}`);
    raw.close();
    expect(() => new SqliteState(path)).toThrow(StateError);
    expect(() => new SqliteState(path)).toThrow(
      new RegExp(`schema version ${SQLITE_SCHEMA_VERSION + 1}.*only version ${SQLITE_SCHEMA_VERSION}`),
    );
    const check = new Database(path, { readonly: true });
    expect(check.pragma("user_version", { simple: true })).toBe(SQLITE_SCHEMA_VERSION + 1);
    check.close();
  });

  test("a version 1 database (before sizes and run activity) is migrated, its tasks kept", () => {
    const path = freshPath();
    const clock = new TestClock();
    const first = new SqliteState(path, { now: clock.now });
    const runId = first.createRun("f", "v", new Map());
    const insId = first.storeTaskIns(makeTaskIns(clock, runId, { nodeId: 7n, anonymous: false }))!;
    first.close();
    const raw = new Database(path);
    raw.exec(WITHOUT_SHARED_CONTENT);
    raw.exec(
      "ALTER TABLE task_ins DROP COLUMN size_bytes; ALTER TABLE task_res DROP COLUMN size_bytes; ALTER TABLE run DROP COLUMN last_activity;",
    );
    raw.pragma("user_version = 1");
    raw.close();
    const migrated = new SqliteState(path, { now: clock.now });
    try {
      expect(migrated.getTaskIns(7n, 10).map((t) => t.taskId)).toEqual([insId]);
      expect(migrated.storedBytes()).toBe(0); // version 1 rows were not measured
      expect(migrated.storeTaskRes(makeTaskRes(clock, runId, 7n, insId))).toBeDefined();
      // Its runs count as active from the migration on.
      clock.advance(10);
      expect(migrated.purge({ expiredGraceSeconds: 0, runIdleSeconds: 100 }).runs).toBe(0);
    } finally {
      migrated.close();
    }
    const check = new Database(path, { readonly: true });
    expect(check.pragma("user_version", { simple: true })).toBe(SQLITE_SCHEMA_VERSION);
    check.close();
  });

  test("a version 2 database (before shared content) is migrated, its tasks kept", () => {
    const path = freshPath();
    const clock = new TestClock();
    const first = new SqliteState(path, { now: clock.now });
    const runId = first.createRun("f", "v", new Map());
    const insId = first.storeTaskIns(makeTaskIns(clock, runId, { nodeId: 7n, anonymous: false }))!;
    const bytes = first.storedBytes();
    first.close();
    const raw = new Database(path);
    raw.exec(WITHOUT_SHARED_CONTENT);
    raw.pragma("user_version = 2");
    raw.close();
    const migrated = new SqliteState(path, { now: clock.now });
    try {
      expect(migrated.getTaskIns(7n, 10).map((t) => t.taskId)).toEqual([insId]);
      expect(migrated.storedBytes()).toBe(bytes);
      expect(migrated.numSharedContents()).toBe(0);
    } finally {
      migrated.close();
    }
  });

  test("a database of Flower's Python SuperLink (unversioned tables) is refused", () => {
    const path = freshPath();
    const raw = new Database(path);
    raw.exec("CREATE TABLE run(run_id INTEGER UNIQUE, fab_id TEXT, fab_version TEXT, override_config TEXT)");
    raw.close();
    expect(() => new SqliteState(path)).toThrow(/another program/);
  });

  test("a SQLite database of another application is refused", () => {
    const path = freshPath();
    const raw = new Database(path);
    raw.pragma("application_id = 1234");
    raw.close();
    expect(() => new SqliteState(path)).toThrow(/another application/);
  });

  test("a second state on a file in use is refused at once (StateLockedError); after close it opens and sees the writes", () => {
    const path = freshPath();
    const a = new SqliteState(path);
    const runId = a.createRun("f", "v", new Map());
    const started = Date.now();
    expect(() => new SqliteState(path)).toThrow(StateLockedError);
    expect(() => new SqliteState(path)).toThrow(/locked by another process.*another flower-superlink/);
    expect(Date.now() - started).toBeLessThan(2_000); // no busy wait
    a.close();
    const b = new SqliteState(path);
    try {
      expect(b.getRun(runId)?.runId).toBe(runId);
    } finally {
      b.close();
    }
  });

  test("a file with corrupt pages is refused at open (StateCorruptError), not served", () => {
    const path = freshPath();
    const state = new SqliteState(path);
    const runId = state.createRun("f", "v", new Map());
    const nodeId = state.createNode(30);
    for (let i = 0; i < 200; i++)
      state.storeTaskIns(
        makeTaskIns(new TestClock(), runId, { nodeId, anonymous: false }, { recordset: sampleRecordSet() }),
      );
    state.close();
    // Scribble over a page in the middle of the file (not the header, so it still opens).
    const bytes = readFileSync(path);
    const pageSize = bytes.readUInt16BE(16) === 1 ? 65536 : bytes.readUInt16BE(16);
    const pages = bytes.length / pageSize;
    expect(pages).toBeGreaterThan(4);
    const at = Math.floor(pages / 2) * pageSize;
    bytes.fill(0xa5, at, at + pageSize);
    writeFileSync(path, bytes);
    expect(() => new SqliteState(path)).toThrow(StateCorruptError);
    expect(() => new SqliteState(path)).toThrow(/is corrupt [\s\S]*new file/);
  });

  test("expired tasks (a crashed run's leftovers) are purged after the file is reopened", () => {
    const path = freshPath();
    const clock = new TestClock();
    const state = new SqliteState(path, { now: clock.now });
    const runId = state.createRun("f", "v", new Map());
    const nodeId = state.createNode(30);
    const node = { nodeId, anonymous: false };
    const shortId = state.storeTaskIns(makeTaskIns(clock, runId, node, { ttl: 10 }))!;
    state.storeTaskRes(makeTaskRes(clock, runId, nodeId, shortId, { ttl: 10 }));
    state.storeTaskIns(makeTaskIns(clock, runId, node, { ttl: 3600 }));
    state.close();
    clock.advance(11);
    const reopened = new SqliteState(path, { now: clock.now });
    try {
      // The SuperLink purges at start and then every --purge-interval.
      expect(reopened.purge({ expiredGraceSeconds: 0, runIdleSeconds: 86_400 })).toEqual({
        taskIns: 1,
        taskRes: 1,
        runs: 0,
      });
      expect([reopened.numTaskIns(), reopened.numTaskRes()]).toEqual([1, 0]);
      expect(reopened.getRun(runId)?.runId).toBe(runId);
    } finally {
      reopened.close();
    }
  });

  test("close is idempotent; use after close is a StateError", () => {
    const state = new SqliteState(":memory:");
    state.close();
    state.close();
    expect(() => state.numTaskIns()).toThrow(StateError);
  });
});
