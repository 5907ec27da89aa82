/**
 * Durable SuperLink state in one SQLite file (`--database <path>`), on better-sqlite3.
 *
 * Same contract as the in-memory state (the conformance suite runs on both). Differences from
 * Flower 1.10's `SqliteState`, all deliberate:
 * - one connection per process, opened once, statements prepared once (Flower reconnects and
 *   re-runs CREATE TABLE on every RPC, which also made `:memory:` useless);
 * - `Task.error` is stored (Flower dropped it), an absent RecordSet stays absent, ancestry is
 *   stored losslessly (JSON) with its first entry indexed as `reply_to`;
 * - `acknowledgePing` is false for an unknown node, `getRun` of an unknown id is undefined,
 *   `getTaskRes` synthesizes error replies only for the requested ids;
 * - the schema is versioned and a foreign or newer database is refused instead of altered.
 *
 * Node liveness (`online_until`) is wall-clock time, so after a restart nodes stay valid for
 * the rest of their ping interval and reconnecting SuperNodes keep their ids.
 */
import Database from "better-sqlite3";
import {
  FlwrError,
  NotFoundError,
  StateCorruptError,
  StateError,
  StateLockedError,
  errorMessage,
} from "../core/errors";
import { RecordSet } from "../proto/flwr/proto/recordset";
import { Run } from "../proto/flwr/proto/run";
import type { TaskIns, TaskRes } from "../proto/flwr/proto/task";
import type { Scalar } from "../proto/flwr/proto/transport";
import { randomId, uuid4 } from "./ids";
import { NODE_UNAVAILABLE_REASON } from "../core/constants";
import type {
  PurgeOptions,
  PurgeResult,
  RunRecord,
  SharedContent,
  StateEvents,
  StateLogger,
  StateOptions,
  SyncState,
} from "./state";
import {
  DEFAULT_MAX_LEASE_SECONDS,
  DEFAULT_MIN_LEASE_SECONDS,
  RESULT_LEASE_SECONDS,
  StateEventHub,
  StorageUsage,
  TASK_EXPIRED_REASON,
  refuseTaskRes,
  taskBytes,
  checkLease,
  checkLimit,
  checkPingInterval,
  isoTimestamp,
  makeNodeUnavailableTaskRes,
  normalizeTaskId,
  systemNow,
  arrivedExpired,
  isValidTask,
  sharedTaskBytes,
  asBuffer,
} from "./state-support";

/** Marks a database as ours (`PRAGMA application_id`): ASCII "flwt". */
export const SQLITE_APPLICATION_ID = 0x666c7774;
/** Version of the schema below (`PRAGMA user_version`); bump it with every change. */
export const SQLITE_SCHEMA_VERSION = 3;

/** Attempts at drawing an unused random id before giving up (a collision is ~2^-64 likely). */
const MAX_ID_ATTEMPTS = 16;

/**
 * The columns of Flower 1.10's SQLite schema, plus: `seq` (FIFO order that survives VACUUM), `recordset` NULL for an
 * absent RecordSet, `error_code`/`error_reason` NULL for an absent error, `reply_to` (normalized
 * `ancestry[0]`), ancestry as a JSON array, and `run.override_config` as a serialized
 * `flwr.proto.Run` (only its override_config set) so ints, floats and bytes stay distinct.
 * Flower's `credential`/`public_key` tables are not here: auth keys are not part of State.
 */
const TASK_COLUMNS = `
    seq                 INTEGER PRIMARY KEY,
    task_id             TEXT NOT NULL UNIQUE,
    group_id            TEXT NOT NULL,
    run_id              INTEGER NOT NULL REFERENCES run(run_id),
    producer_anonymous  INTEGER NOT NULL,
    producer_node_id    INTEGER NOT NULL,
    consumer_anonymous  INTEGER NOT NULL,
    consumer_node_id    INTEGER NOT NULL,
    created_at          REAL NOT NULL,
    delivered_at        TEXT NOT NULL,
    pushed_at           REAL NOT NULL,
    ttl                 REAL NOT NULL,
    ancestry            TEXT NOT NULL,
    task_type           TEXT NOT NULL,
    recordset           BLOB,
    error_code          INTEGER,
    error_reason        TEXT,
    size_bytes          INTEGER NOT NULL DEFAULT 0,
    content_digest      TEXT`;

/**
 * flwr-ts shared content (docs/protocol.md, "Shared content"): one row per run and digest, the
 * encoded RecordSet that TaskIns rows with that `content_digest` (and a NULL `recordset`) share.
 */
const SHARED_CONTENT_SCHEMA = `
CREATE TABLE shared_content (
    run_id          INTEGER NOT NULL REFERENCES run(run_id),
    digest          TEXT NOT NULL,
    recordset       BLOB NOT NULL,
    size_bytes      INTEGER NOT NULL,
    PRIMARY KEY (run_id, digest)
);
CREATE INDEX idx_task_ins_content ON task_ins (run_id, content_digest);
`;

const SCHEMA = `
CREATE TABLE run (
    run_id          INTEGER PRIMARY KEY,
    fab_id          TEXT NOT NULL,
    fab_version     TEXT NOT NULL,
    override_config BLOB NOT NULL,
    last_activity   REAL NOT NULL DEFAULT 0
);
CREATE TABLE node (
    node_id         INTEGER PRIMARY KEY,
    online_until    REAL NOT NULL,
    ping_interval   REAL NOT NULL,
    public_key      BLOB UNIQUE
);
CREATE INDEX idx_online_until ON node (online_until);
CREATE TABLE task_ins (${TASK_COLUMNS}
);
CREATE INDEX idx_task_ins_consumer ON task_ins (consumer_anonymous, consumer_node_id, delivered_at);
CREATE TABLE task_res (${TASK_COLUMNS},
    reply_to            TEXT NOT NULL
);
CREATE INDEX idx_task_res_reply_to ON task_res (reply_to);
${SHARED_CONTENT_SCHEMA}`;

/**
 * Version 1 -> 2 (flwr-ts storage limits and expiry): task sizes and run activity. Rows of a
 * version 1 file count 0 bytes and their runs as active now.
 */
const MIGRATE_1_TO_2 = `
ALTER TABLE task_ins ADD COLUMN size_bytes INTEGER NOT NULL DEFAULT 0;
ALTER TABLE task_res ADD COLUMN size_bytes INTEGER NOT NULL DEFAULT 0;
ALTER TABLE run ADD COLUMN last_activity REAL NOT NULL DEFAULT 0;
`;

/** Version 2 -> 3: shared content (task_res gets the column too: both tables share TASK_COLUMNS). */
const MIGRATE_2_TO_3 = `
ALTER TABLE task_ins ADD COLUMN content_digest TEXT;
ALTER TABLE task_res ADD COLUMN content_digest TEXT;
${SHARED_CONTENT_SCHEMA}`;

const INSERT_TASK_COLUMNS =
  "task_id, group_id, run_id, producer_anonymous, producer_node_id, consumer_anonymous, consumer_node_id, " +
  "created_at, delivered_at, pushed_at, ttl, ancestry, task_type, recordset, error_code, error_reason, size_bytes, " +
  "content_digest";
const INSERT_TASK_VALUES = INSERT_TASK_COLUMNS.split(", ")
  .map((c) => `@${c}`)
  .join(", ");
/**
 * The row's lease (state-support.ts `leaseSeconds`) and whether it has passed since
 * `delivered_at` (ISO text; @now_jd is the state clock as a Julian day). The millisecond of slack
 * absorbs the microsecond rounding of `delivered_at`.
 */
const LEASE_SQL = `COALESCE(@lease, MIN(${DEFAULT_MAX_LEASE_SECONDS}.0, MAX(${DEFAULT_MIN_LEASE_SECONDS}.0, ttl / 2.0)))`;
const LEASE_PASSED = `((@now_jd - julianday(delivered_at)) * 86400.0 >= ${LEASE_SQL} - 0.001)`;

/** Unix seconds as a SQLite Julian day number. */
const julianDay = (unixSeconds: number): number => unixSeconds / 86400 + 2440587.5;

/** Expands a JSON array parameter into rows, so set-valued queries can be prepared once. */
const IDS_IN_JSON = "(SELECT value FROM json_each(?))";

/** A `task_ins`/`task_res` row as read with safe integers. */
interface TaskRow {
  seq: bigint;
  task_id: string;
  group_id: string;
  run_id: bigint;
  producer_anonymous: bigint;
  producer_node_id: bigint;
  consumer_anonymous: bigint;
  consumer_node_id: bigint;
  created_at: number;
  delivered_at: string;
  pushed_at: number;
  ttl: number;
  ancestry: string;
  task_type: string;
  recordset: Buffer | null;
  /** The shared content's RecordSet, for a TaskIns row whose `recordset` is NULL. */
  shared_recordset?: Buffer | null;
  error_code: bigint | null;
  error_reason: string | null;
}

/** The columns of a `task_ins` row that decide whether a TaskRes may answer it. */
interface TaskInsHeader {
  run_id: bigint;
  consumer_anonymous: bigint;
  consumer_node_id: bigint;
  created_at: number;
  ttl: number;
}

function headerToTaskIns(row: TaskInsHeader): TaskIns {
  return {
    taskId: "",
    groupId: "",
    runId: row.run_id,
    task: {
      producer: undefined,
      consumer: { nodeId: row.consumer_node_id, anonymous: row.consumer_anonymous === 1n },
      createdAt: row.created_at,
      deliveredAt: "",
      pushedAt: 0,
      ttl: row.ttl,
      ancestry: [],
      taskType: "",
      recordset: undefined,
      error: undefined,
    },
  };
}

interface RunRow {
  run_id: bigint;
  fab_id: string;
  fab_version: string;
  override_config: Buffer;
}

type Statement = Database.Statement;
type Statements = ReturnType<typeof prepareStatements>;

/**
 * SQLite-backed State on one better-sqlite3 connection. The constructor opens (or creates)
 * the database and throws StateError naming the path when the file is not a SQLite database,
 * cannot be written, or holds another schema or schema version. Any later SQLite failure
 * surfaces as StateError too. Every method runs in one transaction.
 */
export class SqliteState implements SyncState {
  readonly kind = "sqlite";
  /** The database path as given (":memory:" for a private in-memory database). */
  readonly path: string;
  private readonly db: Database.Database;
  private readonly now: () => number;
  private readonly logger: StateLogger | undefined;
  private readonly events: StateEventHub;
  private readonly sql: Statements;
  private readonly usage: StorageUsage;
  private readonly taskLeaseSeconds: number | undefined;

  constructor(path: string, options: StateOptions = {}) {
    this.path = path;
    checkLease(options.taskLeaseSeconds);
    this.taskLeaseSeconds = options.taskLeaseSeconds;
    this.now = options.now ?? systemNow;
    this.logger = options.logger;
    this.events = new StateEventHub(this.logger);
    this.usage = new StorageUsage(options.limits ?? {});
    let db: Database.Database | undefined;
    try {
      db = new Database(path);
      db.defaultSafeIntegers(true);
      db.pragma("foreign_keys = ON");
      // One process per file: SQLite's exclusive lock, taken by the first read below and held
      // until close. It is an OS file lock, so the kernel drops it when the process dies (even
      // by SIGKILL) and a restart can open the file at once. No busy wait: a holder is reported.
      if (path !== ":memory:") {
        db.pragma("busy_timeout = 0");
        db.pragma("locking_mode = EXCLUSIVE");
      }
      // Refuse foreign files before writing anything to them (the WAL switch is a write).
      checkSchema(db, path, false);
      checkIntegrity(db, path);
      db.pragma("journal_mode = WAL");
      // WAL + NORMAL: a committed transaction survives a process crash; only an OS crash or
      // power loss may lose the last few commits.
      db.pragma("synchronous = NORMAL");
      const open = db;
      open
        .transaction(() => {
          const found = checkSchema(open, path, true);
          if (found === "empty") {
            open.exec(SCHEMA);
            open.pragma(`application_id = ${SQLITE_APPLICATION_ID}`);
          } else if (found === "version-1") {
            open.exec(MIGRATE_1_TO_2);
            open.exec(MIGRATE_2_TO_3);
            open.prepare("UPDATE run SET last_activity = ?").run(this.now());
          } else if (found === "version-2") {
            open.exec(MIGRATE_2_TO_3);
          }
          // Rewritten on every open: a write, so an unwritable file fails here, not mid-run. In
          // exclusive mode this write also takes the lock for good.
          open.pragma(`user_version = ${SQLITE_SCHEMA_VERSION}`);
        })
        .immediate();
      this.sql = prepareStatements(db);
      // Crash recovery: content is stored and dropped in the transactions of its TaskIns, but a
      // file written otherwise must not keep unreferenced content forever.
      this.sql.deleteUnreferencedContent.run();
      for (const row of this.sql.selectUsage.all() as Array<{ run_id: bigint; size_bytes: bigint; tasks: bigint }>) {
        this.usage.add(row.run_id, Number(row.size_bytes ?? 0n), Number(row.tasks ?? 0n));
      }
    } catch (err) {
      db?.close();
      if (FlwrError.isFlwrError(err)) throw err;
      if ((err as { code?: unknown } | null)?.code === "SQLITE_BUSY") throw lockedError(path, err);
      throw new StateError(openFailureMessage(path, err), { cause: err });
    }
    this.db = db;
  }

  storeTaskIns(taskIns: TaskIns, shared?: SharedContent): string | undefined {
    if (!isValidTask(taskIns, "ins", this.logger)) return undefined;
    const now = this.now();
    if (arrivedExpired(taskIns, now, this.logger)) return undefined;
    const bytes = shared === undefined ? taskBytes(taskIns) : sharedTaskBytes();
    const stored = this.guard("storeTaskIns", () =>
      this.db
        .transaction(() => {
          if (this.sql.runExists.get(taskIns.runId) === undefined) return undefined;
          let contentBytes = 0;
          if (shared !== undefined && this.sql.sharedContentExists.get(taskIns.runId, shared.digest) === undefined) {
            contentBytes = shared.encoded.length;
          }
          this.usage.check(new Map([[taskIns.runId, bytes + contentBytes]]));
          if (contentBytes > 0 && shared !== undefined) {
            this.sql.insertSharedContent.run(taskIns.runId, shared.digest, asBuffer(shared.encoded), contentBytes);
          }
          const id = uuid4();
          this.sql.insertTaskIns.run(taskParams({ ...taskIns, taskId: id }, bytes, shared?.digest));
          this.sql.touchRun.run(now, taskIns.runId);
          return { id, contentBytes };
        })
        .immediate(),
    );
    if (stored === undefined) {
      this.logger?.warn({ runId: String(taskIns.runId) }, "TaskIns rejected: unknown run_id");
      return undefined;
    }
    const taskId = stored.id;
    if (stored.contentBytes > 0) this.usage.add(taskIns.runId, stored.contentBytes, 0);
    this.usage.add(taskIns.runId, bytes);
    const consumer = taskIns.task!.consumer!;
    this.events.taskInsStored(consumer.nodeId, consumer.anonymous);
    return taskId;
  }

  getTaskIns(nodeId: bigint | undefined, limit: number): TaskIns[] {
    checkLimit(limit);
    return this.guard("getTaskIns", () =>
      this.db
        .transaction(() => {
          const now = this.now();
          const rows = this.sql.selectDeliverableTaskIns.all({
            anonymous: nodeId === undefined ? 1 : 0,
            node: nodeId ?? 0n,
            limit,
            now,
            now_jd: julianDay(now),
            lease: this.taskLeaseSeconds ?? null,
          }) as TaskRow[];
          const deliveredAt = isoTimestamp(now);
          return rows.map((row) => {
            this.sql.markTaskInsDelivered.run(deliveredAt, row.seq);
            return rowToTask({ ...row, delivered_at: deliveredAt });
          });
        })
        .immediate(),
    );
  }

  storeTaskRes(taskRes: TaskRes): string | undefined {
    if (!isValidTask(taskRes, "res", this.logger)) return undefined;
    const replyTo = normalizeTaskId(taskRes.task!.ancestry[0]!);
    const bytes = taskBytes(taskRes);
    const outcome = this.guard("storeTaskRes", () =>
      this.db
        .transaction((): { stored: string } | { duplicateOf: string } | { refused: string } => {
          if (this.sql.runExists.get(taskRes.runId) === undefined) return { refused: "unknown run_id" };
          const now = this.now();
          const insRow = this.sql.selectTaskInsHeader.get(replyTo) as TaskInsHeader | undefined;
          const refusal = refuseTaskRes(taskRes, insRow === undefined ? undefined : headerToTaskIns(insRow), now);
          if (refusal !== undefined) return { refused: refusal };
          const existing = this.sql.selectFirstReplyId.get(replyTo) as string | undefined;
          if (existing !== undefined) return { duplicateOf: existing };
          this.usage.check(new Map([[taskRes.runId, bytes]]));
          const id = uuid4();
          this.sql.insertTaskRes.run({ ...taskParams({ ...taskRes, taskId: id }, bytes), reply_to: replyTo });
          this.sql.touchRun.run(now, taskRes.runId);
          return { stored: id };
        })
        .immediate(),
    );
    if ("refused" in outcome) {
      this.logger?.warn({ runId: String(taskRes.runId), taskInsId: replyTo }, `TaskRes rejected: ${outcome.refused}`);
      return undefined;
    }
    if ("duplicateOf" in outcome) {
      this.logger?.warn(
        { event: "state.task-res-duplicate", taskInsId: replyTo },
        `TaskRes ignored: TaskIns ${replyTo} already has a result (a re-push or a replay); nothing stored`,
      );
      return outcome.duplicateOf;
    }
    this.usage.add(taskRes.runId, bytes);
    this.events.taskResStored(replyTo);
    return outcome.stored;
  }

  getTaskRes(taskIds: Set<string>, limit?: number): TaskRes[] {
    if (limit !== undefined) checkLimit(limit);
    if (taskIds.size === 0) return [];
    const requested = JSON.stringify([...new Set([...taskIds].map(normalizeTaskId))]);
    const sqlLimit = limit ?? -1; // SQLite: a negative LIMIT means none
    const synthesizedFor: string[] = [];
    const result = this.guard("getTaskRes", () =>
      this.db
        .transaction(() => {
          const now = this.now();
          const deliveredAt = isoTimestamp(now);
          const rows = this.sql.selectDeliverableReplies.all({
            ids: requested,
            limit: sqlLimit,
            now_jd: julianDay(now),
          }) as TaskRow[];
          const out: TaskRes[] = rows.map((row) => {
            this.sql.markTaskResDelivered.run(deliveredAt, row.seq);
            return rowToTask({ ...row, delivered_at: deliveredAt });
          });
          if (limit !== undefined && out.length >= limit) return out;
          const remaining = limit === undefined ? -1 : limit - out.length;
          const orphans = this.sql.selectOrphanTaskIns.all(now, requested, now, remaining) as Array<
            TaskRow & { consumer_offline: bigint }
          >;
          for (const row of orphans) {
            const reason = row.consumer_offline === 1n ? NODE_UNAVAILABLE_REASON : TASK_EXPIRED_REASON;
            const errorRes = makeNodeUnavailableTaskRes(rowToTask(row), now, reason);
            errorRes.task!.deliveredAt = deliveredAt;
            const bytes = taskBytes(errorRes);
            this.sql.insertTaskRes.run({ ...taskParams(errorRes, bytes), reply_to: row.task_id });
            this.usage.add(errorRes.runId, bytes);
            out.push(errorRes);
            synthesizedFor.push(row.task_id);
          }
          return out;
        })
        .immediate(),
    );
    for (const taskInsId of synthesizedFor) this.events.taskResStored(taskInsId);
    return result;
  }

  deleteTasks(taskIds: Set<string>): void {
    if (taskIds.size === 0) return;
    const ids = JSON.stringify([...new Set([...taskIds].map(normalizeTaskId))]);
    this.guard("deleteTasks", () =>
      this.db
        .transaction(() => {
          // TaskIns first: it finds its victims through the delivered TaskRes deleted next.
          this.release(this.sql.deleteAnsweredTaskIns.all(ids));
          this.release(this.sql.deleteDeliveredTaskRes.all(ids));
          this.releaseContent(this.sql.deleteUnreferencedContent.all());
        })
        .immediate(),
    );
  }

  checkStorage(bytesByRun: Map<bigint, number>): void {
    this.usage.check(bytesByRun);
  }

  storedBytes(runId?: bigint): number {
    return this.usage.bytes(runId);
  }

  purge(options: PurgeOptions): PurgeResult {
    return this.guard("purge", () =>
      this.db
        .transaction(() => {
          const cutoff = this.now() - options.expiredGraceSeconds;
          // Replies first: they are found through the expired TaskIns deleted next.
          const replies = this.sql.deleteRepliesOfExpiredTaskIns.all(cutoff);
          const taskIns = this.sql.deleteExpiredTaskIns.all(cutoff);
          const orphans = this.sql.deleteExpiredOrphanTaskRes.all(cutoff);
          this.release(replies);
          this.release(taskIns);
          this.release(orphans);
          this.releaseContent(this.sql.deleteUnreferencedContent.all());
          let runs = 0;
          const idleSince = this.now() - options.runIdleSeconds;
          for (const runId of this.sql.selectIdleRunIds.all(idleSince) as bigint[]) {
            if (this.usage.tasks(runId) > 0) continue;
            runs += this.sql.deleteRun.run(runId).changes;
          }
          return { taskIns: taskIns.length, taskRes: replies.length + orphans.length, runs };
        })
        .immediate(),
    );
  }

  /** Takes deleted rows (`RETURNING run_id, size_bytes`) off the storage accounting. */
  private release(rows: unknown[]): void {
    for (const row of rows as Array<{ run_id: bigint; size_bytes: bigint }>)
      this.usage.remove(row.run_id, Number(row.size_bytes));
  }

  /** Takes deleted shared content (`RETURNING run_id, size_bytes`) off the storage accounting. */
  private releaseContent(rows: unknown[]): void {
    for (const row of rows as Array<{ run_id: bigint; size_bytes: bigint }>)
      this.usage.remove(row.run_id, Number(row.size_bytes), 0);
  }

  sharedContent(runId: bigint, digest: string): SharedContent | undefined {
    const encoded = this.guard("sharedContent", () => this.sql.selectSharedContent.get(runId, digest)) as
      Buffer | undefined;
    if (encoded === undefined) return undefined;
    return { digest, encoded, recordset: RecordSet.decode(encoded) };
  }

  numSharedContents(): number {
    return this.guard("numSharedContents", () => Number(this.sql.countSharedContents.get() as bigint));
  }

  numTaskIns(): number {
    return this.guard("numTaskIns", () => Number(this.sql.countTaskIns.get() as bigint));
  }

  numTaskRes(): number {
    return this.guard("numTaskRes", () => Number(this.sql.countTaskRes.get() as bigint));
  }

  createNode(pingInterval: number, publicKey?: Uint8Array): bigint {
    checkPingInterval(pingInterval);
    const nodeId = this.guard("createNode", () =>
      this.db
        .transaction((): bigint | string => {
          if (publicKey !== undefined && this.sql.selectNodeIdByKey.get(publicKey) !== undefined) {
            return "public key already mapped to a node";
          }
          for (let attempt = 0; attempt < MAX_ID_ATTEMPTS; attempt++) {
            const id = randomId();
            if (this.sql.nodeExists.get(id) !== undefined) continue;
            this.sql.insertNode.run(id, this.now() + pingInterval, pingInterval, publicKey ?? null);
            return id;
          }
          return "no unused node id drawn";
        })
        .immediate(),
    );
    if (typeof nodeId === "string") {
      this.logger?.error(`node registration failed: ${nodeId}`);
      return 0n;
    }
    return nodeId;
  }

  deleteNode(nodeId: bigint): void {
    const changes = this.guard("deleteNode", () => this.sql.deleteNode.run(nodeId).changes);
    if (changes === 0) throw new NotFoundError(`Node ${nodeId} not found`);
  }

  getNodes(runId: bigint): Set<bigint> {
    return this.guard("getNodes", () =>
      this.db.transaction(() => {
        if (this.sql.runExists.get(runId) === undefined) return new Set<bigint>();
        return new Set(this.sql.selectOnlineNodeIds.all(this.now()) as bigint[]);
      })(),
    );
  }

  getNodeId(publicKey: Uint8Array): bigint | undefined {
    return this.guard("getNodeId", () => this.sql.selectNodeIdByKey.get(publicKey) as bigint | undefined);
  }

  acknowledgePing(nodeId: bigint, pingInterval: number): boolean {
    checkPingInterval(pingInterval);
    return this.guard(
      "acknowledgePing",
      () => this.sql.updatePing.run(this.now() + pingInterval, pingInterval, nodeId).changes > 0,
    );
  }

  createRun(fabId: string, fabVersion: string, overrideConfig: Map<string, Scalar>): bigint {
    const config = Buffer.from(Run.encode(Run.fromPartial({ overrideConfig })).finish());
    const runId = this.guard("createRun", () =>
      this.db
        .transaction(() => {
          this.usage.checkRuns(Number(this.sql.countRuns.get()));
          for (let attempt = 0; attempt < MAX_ID_ATTEMPTS; attempt++) {
            const id = randomId();
            if (this.sql.runExists.get(id) !== undefined) continue;
            this.sql.insertRun.run(id, fabId, fabVersion, config, this.now());
            return id;
          }
          return 0n;
        })
        .immediate(),
    );
    if (runId === 0n) this.logger?.error("run creation failed: no unused run id drawn");
    return runId;
  }

  getRun(runId: bigint): RunRecord | undefined {
    return this.guard("getRun", () => {
      const row = this.sql.selectRun.get(runId) as RunRow | undefined;
      if (row === undefined) return undefined;
      return {
        runId: row.run_id,
        fabId: row.fab_id,
        fabVersion: row.fab_version,
        overrideConfig: Run.decode(row.override_config).overrideConfig,
      };
    });
  }

  subscribe(events: StateEvents): () => void {
    return this.events.subscribe(events);
  }

  /** Closes the connection (checkpointing the WAL). Calling it again does nothing. */
  close(): void {
    if (this.db.open) this.db.close();
  }

  /** Runs `fn`, turning a SQLite failure into a StateError that names the file and operation. */
  private guard<T>(operation: string, fn: () => T): T {
    try {
      return fn();
    } catch (err) {
      if (FlwrError.isFlwrError(err)) throw err;
      throw new StateError(`SQLite state "${this.path}": ${operation} failed: ${errorMessage(err)}`, { cause: err });
    }
  }
}

/**
 * SQLite's `quick_check` (page structure, no index cross-check: fast even on large files). A
 * corrupt file would otherwise open, report ready, and then fail every RPC.
 */
function checkIntegrity(db: Database.Database, path: string): void {
  let problems: string[];
  try {
    problems = (db.pragma("quick_check(5)") as Array<{ quick_check: string }>).map((r) => r.quick_check);
  } catch (err) {
    const code = (err as { code?: unknown } | null)?.code;
    if (code === "SQLITE_BUSY") throw lockedError(path, err);
    if (code !== "SQLITE_CORRUPT") throw err;
    problems = [errorMessage(err)];
  }
  if (problems.length === 1 && problems[0] === "ok") return;
  throw new StateCorruptError(
    `SQLite state database "${path}" is corrupt (${problems.join("; ")}). Restore it from a backup or give --database a new file.`,
  );
}

/** The error for a file another process holds. */
function lockedError(path: string, cause: unknown): StateLockedError {
  return new StateLockedError(
    `SQLite state database "${path}" is locked by another process: is another flower-superlink running on it? ` +
      "Stop it, or give this one another --database file.",
    { cause },
  );
}

/** Says what is wrong with the file, in terms of what the user can do about it. */
function openFailureMessage(path: string, err: unknown): string {
  const code = (err as { code?: unknown } | null)?.code;
  const detail = errorMessage(err);
  if (code === "SQLITE_NOTADB") {
    return `"${path}" is not a SQLite database (${detail}). Give --database a new file or a flwr-ts state database.`;
  }
  const ioError = typeof code === "string" && code.startsWith("SQLITE_IOERR");
  if (
    code === "SQLITE_READONLY" ||
    code === "SQLITE_CANTOPEN" ||
    code === "SQLITE_PERM" ||
    ioError ||
    code === undefined
  ) {
    return `Cannot open SQLite state database "${path}" for writing (${detail}). Check that the directory exists and the file and directory are writable.`;
  }
  return `Cannot open SQLite state database "${path}": ${detail}`;
}

/**
 * Classifies the database: "empty" (no tables and no marks: ours to create) or "current".
 * Throws StateError for anything else. `strict` runs inside the creating transaction, where an
 * empty-but-marked state cannot be left half-made by a concurrent opener.
 */
function checkSchema(
  db: Database.Database,
  path: string,
  strict: boolean,
): "empty" | "current" | "version-1" | "version-2" {
  const applicationId = Number(db.pragma("application_id", { simple: true }));
  const version = Number(db.pragma("user_version", { simple: true }));
  const tables = Number(db.prepare("SELECT count(*) FROM sqlite_schema WHERE type = 'table'").pluck().get());
  if (applicationId === 0 && version === 0) {
    if (tables === 0) return "empty";
    throw new StateError(
      `"${path}" is a SQLite database with tables from another program (a Flower Python SuperLink ` +
        `database, for example), not a flwr-ts state database. Use a new file for --database.`,
    );
  }
  if (applicationId !== SQLITE_APPLICATION_ID) {
    throw new StateError(
      `"${path}" is a SQLite database of another application (application_id ` +
        `0x${applicationId.toString(16)}), not a flwr-ts state database. Use a new file for --database.`,
    );
  }
  if (version === 1 && tables > 0) return "version-1";
  if (version === 2 && tables > 0) return "version-2";
  if (version !== SQLITE_SCHEMA_VERSION) {
    throw new StateError(
      `"${path}" holds flwr-ts state schema version ${version}, but this flwr-ts reads only version ` +
        `${SQLITE_SCHEMA_VERSION}. Use the flwr-ts release that wrote it, or a new file for --database.`,
    );
  }
  if (strict && tables === 0) {
    throw new StateError(`"${path}" is marked as a flwr-ts state database but has no tables; use a new file.`);
  }
  return "current";
}

function prepareStatements(db: Database.Database) {
  const p = (sql: string): Statement => db.prepare(sql);
  // Single-column lookups return the bare value.
  const plucked = (sql: string): Statement => db.prepare(sql).pluck();
  return {
    runExists: p("SELECT 1 FROM run WHERE run_id = ?"),
    insertRun: p(
      "INSERT INTO run (run_id, fab_id, fab_version, override_config, last_activity) VALUES (?, ?, ?, ?, ?)",
    ),
    countRuns: plucked("SELECT count(*) FROM run"),
    touchRun: p("UPDATE run SET last_activity = ? WHERE run_id = ?"),
    selectIdleRunIds: plucked("SELECT run_id FROM run WHERE last_activity <= ?"),
    deleteRun: p("DELETE FROM run WHERE run_id = ?"),
    selectUsage: p(
      "SELECT run_id, sum(size_bytes) AS size_bytes, sum(task) AS tasks FROM " +
        "(SELECT run_id, size_bytes, 1 AS task FROM task_ins UNION ALL SELECT run_id, size_bytes, 1 FROM task_res " +
        "UNION ALL SELECT run_id, size_bytes, 0 FROM shared_content) GROUP BY run_id",
    ),
    sharedContentExists: p("SELECT 1 FROM shared_content WHERE run_id = ? AND digest = ?"),
    insertSharedContent: p("INSERT INTO shared_content (run_id, digest, recordset, size_bytes) VALUES (?, ?, ?, ?)"),
    selectSharedContent: plucked("SELECT recordset FROM shared_content WHERE run_id = ? AND digest = ?"),
    countSharedContents: plucked("SELECT count(*) FROM shared_content"),
    // Content no stored TaskIns references (its last one was deleted or purged).
    deleteUnreferencedContent: p(
      `DELETE FROM shared_content WHERE NOT EXISTS (SELECT 1 FROM task_ins ti
         WHERE ti.run_id = shared_content.run_id AND ti.content_digest = shared_content.digest)
       RETURNING run_id, size_bytes`,
    ),
    selectRun: p("SELECT * FROM run WHERE run_id = ?"),

    nodeExists: p("SELECT 1 FROM node WHERE node_id = ?"),
    insertNode: p("INSERT INTO node (node_id, online_until, ping_interval, public_key) VALUES (?, ?, ?, ?)"),
    deleteNode: p("DELETE FROM node WHERE node_id = ?"),
    selectNodeIdByKey: plucked("SELECT node_id FROM node WHERE public_key = ?"),
    selectOnlineNodeIds: plucked("SELECT node_id FROM node WHERE online_until > ?"),
    updatePing: p("UPDATE node SET online_until = ?, ping_interval = ? WHERE node_id = ?"),

    insertTaskIns: p(`INSERT INTO task_ins (${INSERT_TASK_COLUMNS}) VALUES (${INSERT_TASK_VALUES})`),
    // Unexpired, and never delivered, or delivered and still unanswered with its lease passed.
    selectDeliverableTaskIns: p(
      `SELECT *, (SELECT sc.recordset FROM shared_content sc
                  WHERE sc.run_id = task_ins.run_id AND sc.digest = task_ins.content_digest) AS shared_recordset
       FROM task_ins WHERE consumer_anonymous = @anonymous AND consumer_node_id = @node
         AND created_at + ttl > @now
         AND (delivered_at = '' OR (${LEASE_PASSED}
               AND NOT EXISTS (SELECT 1 FROM task_res tr WHERE tr.reply_to = task_ins.task_id)))
       ORDER BY seq LIMIT @limit`,
    ),
    // What refuseTaskRes needs, without reading the RecordSet.
    selectTaskInsHeader: p(
      "SELECT run_id, consumer_anonymous, consumer_node_id, created_at, ttl FROM task_ins WHERE task_id = ?",
    ),
    selectFirstReplyId: plucked("SELECT task_id FROM task_res WHERE reply_to = ? ORDER BY seq LIMIT 1"),
    markTaskInsDelivered: p("UPDATE task_ins SET delivered_at = ? WHERE seq = ?"),
    countTaskIns: plucked("SELECT count(*) FROM task_ins"),

    insertTaskRes: p(
      `INSERT INTO task_res (${INSERT_TASK_COLUMNS}, reply_to) VALUES (${INSERT_TASK_VALUES}, @reply_to)`,
    ),
    // Undelivered, or delivered with the lease passed and still not deleted (answer lost).
    selectDeliverableReplies: p(
      `SELECT * FROM task_res WHERE reply_to IN (SELECT value FROM json_each(@ids))
         AND (delivered_at = '' OR (@now_jd - julianday(delivered_at)) * 86400.0 >= ${RESULT_LEASE_SECONDS}.0 - 0.001)
       ORDER BY seq LIMIT @limit`,
    ),
    // Requested TaskIns with no reply at all, addressed to a node that is offline or deleted, or
    // expired. Parameters: now, ids, now, limit.
    selectOrphanTaskIns: p(
      `SELECT * FROM (
         SELECT ti.*, (ti.consumer_anonymous = 0 AND (n.node_id IS NULL OR NOT (n.online_until > ?))) AS consumer_offline
         FROM task_ins ti LEFT JOIN node n ON n.node_id = ti.consumer_node_id
         WHERE ti.task_id IN ${IDS_IN_JSON}
           AND NOT EXISTS (SELECT 1 FROM task_res tr WHERE tr.reply_to = ti.task_id))
       WHERE consumer_offline = 1 OR created_at + ttl <= ?
       ORDER BY seq LIMIT ?`,
    ),
    markTaskResDelivered: p("UPDATE task_res SET delivered_at = ? WHERE seq = ?"),
    countTaskRes: plucked("SELECT count(*) FROM task_res"),

    deleteAnsweredTaskIns: p(
      `DELETE FROM task_ins WHERE task_id IN (
         SELECT reply_to FROM task_res WHERE reply_to IN ${IDS_IN_JSON} AND delivered_at != '')
       RETURNING run_id, size_bytes`,
    ),
    deleteDeliveredTaskRes: p(
      `DELETE FROM task_res WHERE reply_to IN ${IDS_IN_JSON} AND delivered_at != '' RETURNING run_id, size_bytes`,
    ),
    deleteRepliesOfExpiredTaskIns: p(
      `DELETE FROM task_res WHERE reply_to IN (SELECT task_id FROM task_ins WHERE created_at + ttl <= ?)
       RETURNING run_id, size_bytes`,
    ),
    deleteExpiredTaskIns: p("DELETE FROM task_ins WHERE created_at + ttl <= ? RETURNING run_id, size_bytes"),
    deleteExpiredOrphanTaskRes: p(
      `DELETE FROM task_res WHERE created_at + ttl <= ?
         AND NOT EXISTS (SELECT 1 FROM task_ins ti WHERE ti.task_id = task_res.reply_to)
       RETURNING run_id, size_bytes`,
    ),
  };
}

/** Named parameters of a task row. Validated messages always have task, producer, consumer. */
function taskParams(message: TaskIns | TaskRes, sizeBytes: number, contentDigest?: string): Record<string, unknown> {
  const task = message.task!;
  return {
    task_id: message.taskId,
    group_id: message.groupId,
    run_id: message.runId,
    producer_anonymous: task.producer!.anonymous ? 1 : 0,
    producer_node_id: task.producer!.nodeId,
    consumer_anonymous: task.consumer!.anonymous ? 1 : 0,
    consumer_node_id: task.consumer!.nodeId,
    created_at: task.createdAt,
    delivered_at: task.deliveredAt,
    pushed_at: task.pushedAt,
    ttl: task.ttl,
    ancestry: JSON.stringify(task.ancestry),
    task_type: task.taskType,
    // Shared content is stored once, in `shared_content`.
    recordset:
      contentDigest !== undefined || task.recordset === undefined
        ? null
        : Buffer.from(RecordSet.encode(task.recordset).finish()),
    error_code: task.error === undefined ? null : task.error.code,
    error_reason: task.error === undefined ? null : task.error.reason,
    size_bytes: sizeBytes,
    content_digest: contentDigest ?? null,
  };
}

/** Rebuilds a TaskIns/TaskRes (same shape) from its row. */
function rowToTask(row: TaskRow): TaskIns {
  return {
    taskId: row.task_id,
    groupId: row.group_id,
    runId: row.run_id,
    task: {
      producer: { nodeId: row.producer_node_id, anonymous: row.producer_anonymous === 1n },
      consumer: { nodeId: row.consumer_node_id, anonymous: row.consumer_anonymous === 1n },
      createdAt: row.created_at,
      deliveredAt: row.delivered_at,
      pushedAt: row.pushed_at,
      ttl: row.ttl,
      ancestry: JSON.parse(row.ancestry) as string[],
      taskType: row.task_type,
      recordset: decodeRecordSet(row.recordset ?? row.shared_recordset ?? null),
      error: row.error_code === null ? undefined : { code: row.error_code, reason: row.error_reason ?? "" },
    },
  };
}

function decodeRecordSet(bytes: Buffer | null): RecordSet | undefined {
  return bytes === null ? undefined : RecordSet.decode(bytes);
}
