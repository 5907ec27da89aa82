/**
 * SuperLink state in PostgreSQL (`--database postgresql://...`), on `pg`, shared by any number
 * of SuperLink replicas (docs/postgresql.md).
 *
 * Same contract as the memory and SQLite backends (the conformance suite runs on all three).
 * What sharing one database with other replicas adds:
 * - every method is one transaction, committed before its Promise resolves, so a replica that
 *   dies loses nothing it answered;
 * - read-modify-writes stay atomic across replicas: deliveries take rows with
 *   `FOR UPDATE SKIP LOCKED`, "one result per task" is a unique index on `task_res.reply_to`,
 *   random ids are inserted with `ON CONFLICT DO NOTHING` and redrawn on a collision;
 * - changes are announced with NOTIFY on POSTGRES_CHANNEL, so `onTaskInsStored` /
 *   `onTaskResStored` fire on every replica (long polls wake wherever they wait);
 * - the schema is versioned (`flwr_schema_migrations`); migrations run under an advisory lock,
 *   so replicas starting together migrate once; a newer schema is refused.
 *
 * Times are the state clock (`StateOptions.now`), passed as parameters, never the database's
 * `now()`: replicas and tests agree on one clock source per process.
 */
import { randomUUID } from "node:crypto";
import pg from "pg";
import { NODE_UNAVAILABLE_REASON } from "../core/constants";
import { FlwrError, NotFoundError, StateError, errorMessage } from "../core/errors";
import { RecordSet } from "../proto/flwr/proto/recordset";
import { Run } from "../proto/flwr/proto/run";
import type { TaskIns, TaskRes } from "../proto/flwr/proto/task";
import type { Scalar } from "../proto/flwr/proto/transport";
import { randomId, uuid4 } from "./ids";
import { redactPostgresUrl } from "./postgres-url";
import type {
  PurgeOptions,
  PurgeResult,
  RunRecord,
  State,
  StateEvents,
  StateLimits,
  StateLogger,
  StateOptions,
  SharedContent,
} from "./state";
import {
  DEFAULT_MAX_LEASE_SECONDS,
  DEFAULT_MIN_LEASE_SECONDS,
  RESULT_LEASE_SECONDS,
  StateEventHub,
  StorageUsage,
  TASK_EXPIRED_REASON,
  checkLease,
  checkLimit,
  checkPingInterval,
  isoTimestamp,
  makeNodeUnavailableTaskRes,
  normalizeTaskId,
  refuseTaskRes,
  systemNow,
  taskBytes,
  arrivedExpired,
  isValidTask,
  sharedTaskBytes,
  asBuffer,
} from "./state-support";

/** The NOTIFY channel replicas announce stored tasks on. */
const POSTGRES_CHANNEL = "flwr_state_events";

/** Default number of pooled connections per replica (`?pool_max=` in the URL overrides it). */
const DEFAULT_POSTGRES_POOL_MAX = 10;

/** Attempts at drawing an unused random id before giving up (a collision is ~2^-64 likely). */
const MAX_ID_ATTEMPTS = 16;
/** Attempts of a transaction that PostgreSQL aborted for a serialization failure or deadlock. */
const MAX_TX_ATTEMPTS = 5;
/** Advisory lock key held while migrating ("flwt" as in the SQLite application id). */
const MIGRATION_LOCK_KEY = 0x666c7774;
/** Advisory lock key that serializes run creation when `maxRuns` is set. */
const RUN_CREATION_LOCK_KEY = 0x666c7775;
/** Delay before the LISTEN connection is reopened after it broke. */
const LISTEN_RETRY_MS = 1000;

const TASK_COLUMNS = `
    seq                 bigserial PRIMARY KEY,
    task_id             text NOT NULL UNIQUE,
    group_id            text NOT NULL,
    run_id              bigint NOT NULL REFERENCES run(run_id),
    producer_anonymous  boolean NOT NULL,
    producer_node_id    bigint NOT NULL,
    consumer_anonymous  boolean NOT NULL,
    consumer_node_id    bigint NOT NULL,
    created_at          double precision NOT NULL,
    delivered_at        text NOT NULL,
    delivered_unix      double precision,
    pushed_at           double precision NOT NULL,
    ttl                 double precision NOT NULL,
    ancestry            text NOT NULL,
    task_type           text NOT NULL,
    recordset           bytea,
    error_code          bigint,
    error_reason        text,
    size_bytes          bigint NOT NULL`;

/**
 * The schema history, oldest first: entry i brings the schema from version i to i + 1. Never
 * edit a released entry; append a new one. Like the SQLite schema, plus `delivered_unix` (the
 * delivery time as a number, for the leases) and a unique `reply_to` (one result per task).
 */
const POSTGRES_MIGRATIONS: readonly string[] = [
  `CREATE TABLE run (
       run_id          bigint PRIMARY KEY,
       fab_id          text NOT NULL,
       fab_version     text NOT NULL,
       override_config bytea NOT NULL,
       last_activity   double precision NOT NULL
   );
   CREATE TABLE node (
       node_id         bigint PRIMARY KEY,
       online_until    double precision NOT NULL,
       ping_interval   double precision NOT NULL,
       public_key      bytea UNIQUE
   );
   CREATE INDEX node_online_until ON node (online_until);
   CREATE TABLE task_ins (${TASK_COLUMNS});
   CREATE INDEX task_ins_consumer ON task_ins (consumer_anonymous, consumer_node_id, seq);
   CREATE TABLE task_res (${TASK_COLUMNS},
       reply_to        text NOT NULL UNIQUE
   );`,
  // flwr-ts shared content (docs/protocol.md, "Shared content"): one row per run and digest,
  // shared by the TaskIns rows naming it in `content_digest` (their `recordset` is NULL).
  `CREATE TABLE shared_content (
       run_id          bigint NOT NULL REFERENCES run(run_id),
       digest          text NOT NULL,
       recordset       bytea NOT NULL,
       size_bytes      bigint NOT NULL,
       PRIMARY KEY (run_id, digest)
   );
   ALTER TABLE task_ins ADD COLUMN content_digest text;
   CREATE INDEX task_ins_content ON task_ins (run_id, content_digest);`,
];

/** The schema version this code reads and writes. */
export const POSTGRES_SCHEMA_VERSION = POSTGRES_MIGRATIONS.length;

const INSERT_TASK_COLUMNS = [
  "task_id",
  "group_id",
  "run_id",
  "producer_anonymous",
  "producer_node_id",
  "consumer_anonymous",
  "consumer_node_id",
  "created_at",
  "delivered_at",
  "delivered_unix",
  "pushed_at",
  "ttl",
  "ancestry",
  "task_type",
  "recordset",
  "error_code",
  "error_reason",
  "size_bytes",
] as const;
const INSERT_TASK_SQL = (table: "task_ins" | "task_res", extra = ""): string => {
  const columns = [...INSERT_TASK_COLUMNS, ...(extra ? [extra] : [])];
  return `INSERT INTO ${table} (${columns.join(", ")}) VALUES (${columns.map((_, i) => `$${i + 1}`).join(", ")})`;
};

/** A `task_ins`/`task_res` row (int8 parsed as bigint, see BIGINT_TYPES). */
interface TaskRow {
  seq: bigint;
  task_id: string;
  group_id: string;
  run_id: bigint;
  producer_anonymous: boolean;
  producer_node_id: bigint;
  consumer_anonymous: boolean;
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

/** int8 as bigint (ids are full signed 64-bit); everything else as pg parses it. */
const INT8_OID = 20;
const BIGINT_TYPES: pg.CustomTypesConfig = {
  getTypeParser: ((oid: number, format?: "text" | "binary") => {
    if (oid === INT8_OID && format !== "binary") return (text: string): bigint => BigInt(text);

    return pg.types.getTypeParser(oid, format ?? "text") as (value: string) => unknown;
  }) as pg.CustomTypesConfig["getTypeParser"],
};

/** Options of the PostgreSQL backend beyond the common ones. */
export interface PostgresStateOptions extends StateOptions {
  /** Connections in this replica's pool (default: `?pool_max=` of the URL, else DEFAULT_POSTGRES_POOL_MAX). */
  poolMax?: number;
}

/** The connection string without our own parameters, and the pool size it asked for. */
function splitUrl(database: string): { url: string; poolMax: number | undefined } {
  const url = new URL(database);
  const raw = url.searchParams.get("pool_max");
  url.searchParams.delete("pool_max");
  if (raw === null) return { url: url.toString(), poolMax: undefined };
  const poolMax = Number(raw);
  if (!Number.isInteger(poolMax) || poolMax < 1)
    throw new StateError(`PostgreSQL state: pool_max must be a positive integer, got "${raw}"`);
  return { url: url.toString(), poolMax };
}

type Queryable = Pick<pg.PoolClient, "query">;

/** What one transaction announces once it committed. */
interface Announcements {
  taskIns: Array<{ nodeId: bigint; anonymous: boolean }>;
  taskRes: string[];
}

/**
 * PostgreSQL-backed State. Open it with `PostgresState.open` (connects, migrates, starts
 * listening); any later database failure surfaces as StateError naming the operation.
 */
export class PostgresState implements State {
  readonly kind = "postgresql";
  /** Tells this replica's NOTIFYs apart from the others'. */
  private readonly replicaId = randomUUID();
  private readonly events: StateEventHub;
  private listener: pg.Client | undefined;
  private listenRetry: NodeJS.Timeout | undefined;
  private closed = false;

  private constructor(
    private readonly pool: pg.Pool,
    private readonly url: string,
    private readonly label: string,
    private readonly now: () => number,
    private readonly logger: StateLogger | undefined,
    private readonly limits: StateLimits,
    private readonly taskLeaseSeconds: number | undefined,
  ) {
    this.events = new StateEventHub(logger);
  }

  /**
   * Connects to `database` (a postgresql:// URL), brings the schema to POSTGRES_SCHEMA_VERSION
   * and starts listening for the other replicas' changes. Rejects with StateError when the
   * server cannot be reached or holds a newer schema.
   */
  static async open(database: string, options: PostgresStateOptions = {}): Promise<PostgresState> {
    checkLease(options.taskLeaseSeconds);
    const label = redactPostgresUrl(database);
    const { url, poolMax } = splitUrl(database);
    const pool = new pg.Pool({
      connectionString: url,
      max: options.poolMax ?? poolMax ?? DEFAULT_POSTGRES_POOL_MAX,
      types: BIGINT_TYPES,
    });
    // An idle pooled connection that breaks (server restart) must not crash the process.
    pool.on("error", (err) =>
      options.logger?.warn({ err }, `PostgreSQL state: idle connection failed: ${errorMessage(err)}`),
    );
    const state = new PostgresState(
      pool,
      url,
      label,
      options.now ?? systemNow,
      options.logger,
      options.limits ?? {},
      options.taskLeaseSeconds,
    );
    try {
      await state.migrate();
      await state.listen();
    } catch (err) {
      await state.close();
      if (FlwrError.isFlwrError(err)) throw err;
      throw new StateError(`Cannot open PostgreSQL state ${label}: ${errorMessage(err)}`, { cause: err });
    }
    return state;
  }

  private async migrate(): Promise<void> {
    await this.tx("migrate", async (db) => {
      await db.query("SELECT pg_advisory_xact_lock($1)", [MIGRATION_LOCK_KEY]);
      await db.query(
        "CREATE TABLE IF NOT EXISTS flwr_schema_migrations (version integer PRIMARY KEY, applied_at double precision NOT NULL)",
      );
      const found = await db.query<{ version: number | null }>(
        "SELECT max(version) AS version FROM flwr_schema_migrations",
      );
      const version = found.rows[0]?.version ?? 0;
      if (version > POSTGRES_SCHEMA_VERSION) {
        throw new StateError(
          `PostgreSQL state ${this.label} holds flwr-ts schema version ${version}, but this flwr-ts reads only up to ` +
            `${POSTGRES_SCHEMA_VERSION}: run the release that migrated it (all replicas must run the same release)`,
        );
      }
      for (let v = version; v < POSTGRES_SCHEMA_VERSION; v++) {
        await db.query(POSTGRES_MIGRATIONS[v]!);
        await db.query("INSERT INTO flwr_schema_migrations (version, applied_at) VALUES ($1, $2)", [
          v + 1,
          Date.now() / 1000,
        ]);
        this.logger?.debug({ version: v + 1 }, "PostgreSQL state: schema migrated");
      }
    });
  }

  /** LISTENs on its own connection; reconnects after a failure while the state is open. */
  private async listen(): Promise<void> {
    const client = new pg.Client({ connectionString: this.url, types: BIGINT_TYPES });
    client.on("notification", (message) => {
      this.onNotification(message.payload);
    });
    client.on("error", (err) => {
      this.logger?.warn({ err }, `PostgreSQL state: the LISTEN connection failed (${errorMessage(err)}); reconnecting`);
      if (this.listener === client) this.listener = undefined;
      client.end().catch(() => undefined);
      this.scheduleListen();
    });
    await client.connect();
    await client.query(`LISTEN ${POSTGRES_CHANNEL}`);
    if (this.closed) {
      await client.end();
      return;
    }
    this.listener = client;
  }

  private scheduleListen(): void {
    if (this.closed || this.listenRetry !== undefined) return;
    this.listenRetry = setTimeout(() => {
      this.listenRetry = undefined;
      this.listen().catch((err: unknown) => {
        this.logger?.warn({ err }, `PostgreSQL state: cannot LISTEN yet (${errorMessage(err)}); retrying`);
        this.scheduleListen();
      });
    }, LISTEN_RETRY_MS);
    this.listenRetry.unref();
  }

  /** Another replica's change: notify local subscribers as if it had been made here. */
  private onNotification(payload: string | undefined): void {
    if (payload === undefined) return;
    let event: { r?: unknown; k?: unknown; n?: unknown; a?: unknown; t?: unknown };
    try {
      event = JSON.parse(payload) as typeof event;
    } catch {
      return;
    }
    if (event.r === this.replicaId) return; // ours: already announced when it committed
    if (event.k === "ins" && typeof event.n === "string") this.events.taskInsStored(BigInt(event.n), event.a === true);
    else if (event.k === "res" && typeof event.t === "string") this.events.taskResStored(event.t);
  }

  /**
   * Runs `fn` in one transaction (retried on serialization failures and deadlocks), then
   * announces what it stored: to local subscribers after the commit, to other replicas by
   * NOTIFY (sent by PostgreSQL at the commit).
   */
  private async tx<T>(operation: string, fn: (db: Queryable, announce: Announcements) => Promise<T>): Promise<T> {
    if (this.closed) throw new StateError(`PostgreSQL state ${this.label}: ${operation} after close`);
    for (let attempt = 1; ; attempt++) {
      const announce: Announcements = { taskIns: [], taskRes: [] };
      let client: pg.PoolClient;
      try {
        client = await this.pool.connect();
      } catch (err) {
        throw new StateError(
          `PostgreSQL state ${this.label}: ${operation} failed: cannot connect: ${errorMessage(err)}`,
          { cause: err },
        );
      }
      let result: T;
      try {
        await client.query("BEGIN");
        result = await fn(client, announce);
        const payloads = [
          ...announce.taskIns.map((e) =>
            JSON.stringify({ r: this.replicaId, k: "ins", n: e.nodeId.toString(), a: e.anonymous }),
          ),
          ...announce.taskRes.map((t) => JSON.stringify({ r: this.replicaId, k: "res", t })),
        ];
        if (payloads.length > 0)
          await client.query("SELECT pg_notify($1, p) FROM unnest($2::text[]) AS p", [POSTGRES_CHANNEL, payloads]);
        await client.query("COMMIT");
        client.release();
      } catch (err) {
        await client.query("ROLLBACK").catch(() => undefined);
        const code = (err as { code?: unknown } | null)?.code;
        // A broken connection must not go back to the pool.
        client.release(typeof code === "string" ? undefined : true);
        if (FlwrError.isFlwrError(err) || err instanceof RangeError) throw err;
        if ((code === "40001" || code === "40P01") && attempt < MAX_TX_ATTEMPTS) continue;
        throw new StateError(`PostgreSQL state ${this.label}: ${operation} failed: ${errorMessage(err)}`, {
          cause: err,
        });
      }
      for (const e of announce.taskIns) this.events.taskInsStored(e.nodeId, e.anonymous);
      for (const t of announce.taskRes) this.events.taskResStored(t);
      return result;
    }
  }

  /** One statement on its own (PostgreSQL runs it as its own transaction): one round trip. */
  private async single<R extends pg.QueryResultRow>(
    operation: string,
    sql: string,
    params: unknown[],
  ): Promise<pg.QueryResult<R>> {
    if (this.closed) throw new StateError(`PostgreSQL state ${this.label}: ${operation} after close`);
    try {
      return await this.pool.query<R>(sql, params);
    } catch (err) {
      throw new StateError(`PostgreSQL state ${this.label}: ${operation} failed: ${errorMessage(err)}`, { cause: err });
    }
  }

  /** Current storage accounting of `runIds` (and the total), read in the caller's transaction. */
  private async usage(db: Queryable): Promise<StorageUsage> {
    const usage = new StorageUsage(this.limits);
    if (this.limits.maxRunBytes === undefined && this.limits.maxStoredBytes === undefined) return usage;
    const rows = await db.query<{ run_id: bigint; size_bytes: bigint; tasks: bigint }>(
      `SELECT run_id, sum(size_bytes)::bigint AS size_bytes, sum(task)::bigint AS tasks FROM
         (SELECT run_id, size_bytes, 1 AS task FROM task_ins UNION ALL SELECT run_id, size_bytes, 1 FROM task_res
          UNION ALL SELECT run_id, size_bytes, 0 FROM shared_content) t GROUP BY run_id`,
    );
    for (const row of rows.rows) usage.add(row.run_id, Number(row.size_bytes), Number(row.tasks));
    return usage;
  }

  async storeTaskIns(taskIns: TaskIns, shared?: SharedContent): Promise<string | undefined> {
    if (!isValidTask(taskIns, "ins", this.logger)) return undefined;
    const now = this.now();
    if (arrivedExpired(taskIns, now, this.logger)) return undefined;
    const bytes = shared === undefined ? taskBytes(taskIns) : sharedTaskBytes();
    const taskId = await this.tx("storeTaskIns", async (db, announce) => {
      // The run row lock serializes stores of one run, so its byte limit holds across replicas
      // (and shared content is dropped only under it: see dropUnreferencedContent).
      const run = await db.query("SELECT 1 FROM run WHERE run_id = $1 FOR UPDATE", [taskIns.runId]);
      if (run.rowCount === 0) return undefined;
      let contentBytes = 0;
      if (shared !== undefined) {
        const found = await db.query("SELECT 1 FROM shared_content WHERE run_id = $1 AND digest = $2", [
          taskIns.runId,
          shared.digest,
        ]);
        if (found.rowCount === 0) contentBytes = shared.encoded.length;
      }
      (await this.usage(db)).check(new Map([[taskIns.runId, bytes + contentBytes]]));
      if (shared !== undefined && contentBytes > 0) {
        await db.query("INSERT INTO shared_content (run_id, digest, recordset, size_bytes) VALUES ($1, $2, $3, $4)", [
          taskIns.runId,
          shared.digest,
          asBuffer(shared.encoded),
          contentBytes,
        ]);
      }
      const id = uuid4();
      await db.query(INSERT_TASK_SQL("task_ins", "content_digest"), [
        ...taskParams({ ...taskIns, taskId: id }, bytes, null, shared !== undefined),
        shared?.digest ?? null,
      ]);
      await db.query("UPDATE run SET last_activity = $1 WHERE run_id = $2", [now, taskIns.runId]);
      const consumer = taskIns.task!.consumer!;
      announce.taskIns.push({ nodeId: consumer.nodeId, anonymous: consumer.anonymous });
      return id;
    });
    if (taskId === undefined) this.logger?.warn({ runId: String(taskIns.runId) }, "TaskIns rejected: unknown run_id");
    return taskId;
  }

  async getTaskIns(nodeId: bigint | undefined, limit: number): Promise<TaskIns[]> {
    checkLimit(limit);
    return this.tx("getTaskIns", async (db) => {
      const now = this.now();
      // Unexpired, and never delivered, or delivered and still unanswered with its lease passed.
      // SKIP LOCKED: a task another replica is handing out right now is not handed out twice.
      const rows = await db.query<TaskRow>(
        `SELECT *, (SELECT sc.recordset FROM shared_content sc
                    WHERE sc.run_id = ti.run_id AND sc.digest = ti.content_digest) AS shared_recordset
         FROM task_ins ti WHERE consumer_anonymous = $1 AND consumer_node_id = $2
           AND created_at + ttl > $3
           AND (delivered_unix IS NULL OR (
                 $3 - delivered_unix >= COALESCE($5::double precision,
                   LEAST(${DEFAULT_MAX_LEASE_SECONDS}.0, GREATEST(${DEFAULT_MIN_LEASE_SECONDS}.0, ttl / 2.0))) - 0.001
                 AND NOT EXISTS (SELECT 1 FROM task_res tr WHERE tr.reply_to = ti.task_id)))
         ORDER BY seq LIMIT $4 FOR UPDATE SKIP LOCKED`,
        [nodeId === undefined, nodeId ?? 0n, now, limit, this.taskLeaseSeconds ?? null],
      );
      if (rows.rows.length === 0) return [];
      const deliveredAt = isoTimestamp(now);
      await db.query("UPDATE task_ins SET delivered_at = $1, delivered_unix = $2 WHERE seq = ANY($3::bigint[])", [
        deliveredAt,
        now,
        rows.rows.map((r) => r.seq.toString()),
      ]);
      return rows.rows.map((row) => rowToTask({ ...row, delivered_at: deliveredAt }));
    });
  }

  async storeTaskRes(taskRes: TaskRes): Promise<string | undefined> {
    if (!isValidTask(taskRes, "res", this.logger)) return undefined;
    const replyTo = normalizeTaskId(taskRes.task!.ancestry[0]!);
    const bytes = taskBytes(taskRes);
    const outcome = await this.tx(
      "storeTaskRes",
      async (db, announce): Promise<{ stored: string } | { duplicateOf: string } | { refused: string }> => {
        const run = await db.query("SELECT 1 FROM run WHERE run_id = $1 FOR UPDATE", [taskRes.runId]);
        if (run.rowCount === 0) return { refused: "unknown run_id" };
        const now = this.now();
        // FOR SHARE: the TaskIns cannot be deleted (deleteTasks, purge) while its reply goes in.
        const ins = await db.query<TaskRow>(
          "SELECT run_id, consumer_anonymous, consumer_node_id, created_at, ttl FROM task_ins WHERE task_id = $1 FOR SHARE",
          [replyTo],
        );
        const insRow = ins.rows[0];
        const refusal = refuseTaskRes(taskRes, insRow === undefined ? undefined : headerToTaskIns(insRow), now);
        if (refusal !== undefined) return { refused: refusal };
        const existing = await db.query<{ task_id: string }>("SELECT task_id FROM task_res WHERE reply_to = $1", [
          replyTo,
        ]);
        if (existing.rows[0] !== undefined) return { duplicateOf: existing.rows[0].task_id };
        (await this.usage(db)).check(new Map([[taskRes.runId, bytes]]));
        const id = uuid4();
        // A concurrent reply on another replica may have won meanwhile: the unique reply_to decides.
        const inserted = await db.query(
          `${INSERT_TASK_SQL("task_res", "reply_to")} ON CONFLICT (reply_to) DO NOTHING RETURNING task_id`,
          [...taskParams({ ...taskRes, taskId: id }, bytes, null), replyTo],
        );
        if (inserted.rowCount === 0) {
          const winner = await db.query<{ task_id: string }>("SELECT task_id FROM task_res WHERE reply_to = $1", [
            replyTo,
          ]);
          return { duplicateOf: winner.rows[0]?.task_id ?? id };
        }
        await db.query("UPDATE run SET last_activity = $1 WHERE run_id = $2", [now, taskRes.runId]);
        announce.taskRes.push(replyTo);
        return { stored: id };
      },
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
    return outcome.stored;
  }

  async getTaskRes(taskIds: Set<string>, limit?: number): Promise<TaskRes[]> {
    if (limit !== undefined) checkLimit(limit);
    if (taskIds.size === 0) return [];
    const requested = [...new Set([...taskIds].map(normalizeTaskId))];
    return this.tx("getTaskRes", async (db, announce) => {
      const now = this.now();
      const deliveredAt = isoTimestamp(now);
      // Undelivered, or delivered with the lease passed and still not deleted (answer lost).
      const rows = await db.query<TaskRow>(
        `SELECT * FROM task_res WHERE reply_to = ANY($1::text[])
           AND (delivered_unix IS NULL OR $2 - delivered_unix >= ${RESULT_LEASE_SECONDS}.0 - 0.001)
         ORDER BY seq LIMIT $3 FOR UPDATE SKIP LOCKED`,
        [requested, now, limit ?? null],
      );
      if (rows.rows.length > 0) {
        await db.query("UPDATE task_res SET delivered_at = $1, delivered_unix = $2 WHERE seq = ANY($3::bigint[])", [
          deliveredAt,
          now,
          rows.rows.map((r) => r.seq.toString()),
        ]);
      }
      const out: TaskRes[] = rows.rows.map((row) => rowToTask({ ...row, delivered_at: deliveredAt }));
      if (limit !== undefined && out.length >= limit) return out;
      // Requested TaskIns with no reply at all, addressed to a node that is offline or deleted,
      // or expired.
      const orphans = await db.query<TaskRow & { consumer_offline: boolean }>(
        `SELECT * FROM (
           SELECT ti.*, (NOT ti.consumer_anonymous AND (n.node_id IS NULL OR NOT (n.online_until > $1))) AS consumer_offline
           FROM task_ins ti LEFT JOIN node n ON n.node_id = ti.consumer_node_id
           WHERE ti.task_id = ANY($2::text[])
             AND NOT EXISTS (SELECT 1 FROM task_res tr WHERE tr.reply_to = ti.task_id)) o
         WHERE consumer_offline OR created_at + ttl <= $1
         ORDER BY seq LIMIT $3`,
        [now, requested, limit === undefined ? null : limit - out.length],
      );
      for (const row of orphans.rows) {
        const reason = row.consumer_offline ? NODE_UNAVAILABLE_REASON : TASK_EXPIRED_REASON;
        const errorRes = makeNodeUnavailableTaskRes(rowToTask(row), now, reason);
        errorRes.task!.deliveredAt = deliveredAt;
        const bytes = taskBytes(errorRes);
        // Another replica synthesizing the same reply at once: only one is stored and returned.
        const inserted = await db.query(
          `${INSERT_TASK_SQL("task_res", "reply_to")} ON CONFLICT (reply_to) DO NOTHING RETURNING task_id`,
          [...taskParams(errorRes, bytes, now), row.task_id],
        );
        if (inserted.rowCount === 0) continue;
        out.push(errorRes);
        announce.taskRes.push(row.task_id);
      }
      return out;
    });
  }

  async deleteTasks(taskIds: Set<string>): Promise<void> {
    if (taskIds.size === 0) return;
    const ids = [...new Set([...taskIds].map(normalizeTaskId))];
    await this.tx("deleteTasks", async (db) => {
      // Runs whose shared content may lose its last TaskIns here, locked first (as stores do).
      const sharing = await db.query<{ run_id: bigint }>(
        "SELECT DISTINCT run_id FROM task_ins WHERE task_id = ANY($1::text[]) AND content_digest IS NOT NULL",
        [ids],
      );
      const runIds = sharing.rows.map((r) => r.run_id.toString());
      if (runIds.length > 0) await lockRunsForContent(db, runIds);
      // TaskIns first: it finds its victims through the delivered TaskRes deleted next.
      await db.query(
        `DELETE FROM task_ins WHERE task_id IN (
           SELECT reply_to FROM task_res WHERE reply_to = ANY($1::text[]) AND delivered_unix IS NOT NULL)`,
        [ids],
      );
      await db.query("DELETE FROM task_res WHERE reply_to = ANY($1::text[]) AND delivered_unix IS NOT NULL", [ids]);
      if (runIds.length > 0) await dropUnreferencedContent(db, runIds);
    });
  }

  async numTaskIns(): Promise<number> {
    return Number(
      (await this.single<{ n: bigint }>("numTaskIns", "SELECT count(*) AS n FROM task_ins", [])).rows[0]!.n,
    );
  }

  async numTaskRes(): Promise<number> {
    return Number(
      (await this.single<{ n: bigint }>("numTaskRes", "SELECT count(*) AS n FROM task_res", [])).rows[0]!.n,
    );
  }

  async createNode(pingInterval: number, publicKey?: Uint8Array): Promise<bigint> {
    checkPingInterval(pingInterval);
    const nodeId = await this.tx("createNode", async (db): Promise<bigint | string> => {
      const key = publicKey === undefined ? null : Buffer.from(publicKey);
      for (let attempt = 0; attempt < MAX_ID_ATTEMPTS; attempt++) {
        const id = randomId();
        // Conflicts on the id (redraw) and on the key (taken, possibly by another replica just now).
        const inserted = await db.query(
          `INSERT INTO node (node_id, online_until, ping_interval, public_key) VALUES ($1, $2, $3, $4)
           ON CONFLICT DO NOTHING`,
          [id, this.now() + pingInterval, pingInterval, key],
        );
        if (inserted.rowCount === 1) return id;
        if (key !== null && (await db.query("SELECT 1 FROM node WHERE public_key = $1", [key])).rowCount !== 0) {
          return "public key already mapped to a node";
        }
      }
      return "no unused node id drawn";
    });
    if (typeof nodeId === "string") {
      this.logger?.error(`node registration failed: ${nodeId}`);
      return 0n;
    }
    return nodeId;
  }

  async deleteNode(nodeId: bigint): Promise<void> {
    const deleted = (await this.single("deleteNode", "DELETE FROM node WHERE node_id = $1", [nodeId])).rowCount;
    if (deleted === 0) throw new NotFoundError(`Node ${nodeId} not found`);
  }

  async getNodes(runId: bigint): Promise<Set<bigint>> {
    const rows = await this.single<{ node_id: bigint }>(
      "getNodes",
      "SELECT node_id FROM node WHERE online_until > $1 AND EXISTS (SELECT 1 FROM run WHERE run_id = $2)",
      [this.now(), runId],
    );
    return new Set(rows.rows.map((r) => r.node_id));
  }

  async getNodeId(publicKey: Uint8Array): Promise<bigint | undefined> {
    const rows = await this.single<{ node_id: bigint }>("getNodeId", "SELECT node_id FROM node WHERE public_key = $1", [
      Buffer.from(publicKey),
    ]);
    return rows.rows[0]?.node_id;
  }

  async acknowledgePing(nodeId: bigint, pingInterval: number): Promise<boolean> {
    checkPingInterval(pingInterval);
    const updated = await this.single(
      "acknowledgePing",
      "UPDATE node SET online_until = $1, ping_interval = $2 WHERE node_id = $3",
      [this.now() + pingInterval, pingInterval, nodeId],
    );
    return updated.rowCount === 1;
  }

  async createRun(fabId: string, fabVersion: string, overrideConfig: Map<string, Scalar>): Promise<bigint> {
    const config = Buffer.from(Run.encode(Run.fromPartial({ overrideConfig })).finish());
    const runId = await this.tx("createRun", async (db) => {
      if (this.limits.maxRuns !== undefined) {
        // Replicas count and insert one at a time, so the limit holds across them.
        await db.query("SELECT pg_advisory_xact_lock($1)", [RUN_CREATION_LOCK_KEY]);
        const count = await db.query<{ n: bigint }>("SELECT count(*) AS n FROM run");
        new StorageUsage(this.limits).checkRuns(Number(count.rows[0]!.n));
      }
      for (let attempt = 0; attempt < MAX_ID_ATTEMPTS; attempt++) {
        const id = randomId();
        const inserted = await db.query(
          `INSERT INTO run (run_id, fab_id, fab_version, override_config, last_activity) VALUES ($1, $2, $3, $4, $5)
           ON CONFLICT DO NOTHING`,
          [id, fabId, fabVersion, config, this.now()],
        );
        if (inserted.rowCount === 1) return id;
      }
      return 0n;
    });
    if (runId === 0n) this.logger?.error("run creation failed: no unused run id drawn");
    return runId;
  }

  async getRun(runId: bigint): Promise<RunRecord | undefined> {
    const rows = await this.single<{ run_id: bigint; fab_id: string; fab_version: string; override_config: Buffer }>(
      "getRun",
      "SELECT run_id, fab_id, fab_version, override_config FROM run WHERE run_id = $1",
      [runId],
    );
    const row = rows.rows[0];
    if (row === undefined) return undefined;
    return {
      runId: row.run_id,
      fabId: row.fab_id,
      fabVersion: row.fab_version,
      overrideConfig: Run.decode(row.override_config).overrideConfig,
    };
  }

  async sharedContent(runId: bigint, digest: string): Promise<SharedContent | undefined> {
    const rows = await this.single<{ recordset: Buffer }>(
      "sharedContent",
      "SELECT recordset FROM shared_content WHERE run_id = $1 AND digest = $2",
      [runId, digest],
    );
    const encoded = rows.rows[0]?.recordset;
    return encoded === undefined ? undefined : { digest, encoded, recordset: RecordSet.decode(encoded) };
  }

  async numSharedContents(): Promise<number> {
    const rows = await this.single<{ n: bigint }>("numSharedContents", "SELECT count(*) AS n FROM shared_content", []);
    return Number(rows.rows[0]?.n ?? 0n);
  }

  async checkStorage(bytesByRun: Map<bigint, number>): Promise<void> {
    await this.tx("checkStorage", async (db) => {
      (await this.usage(db)).check(bytesByRun);
    });
  }

  async storedBytes(runId?: bigint): Promise<number> {
    const rows = await this.single<{ n: bigint | null }>(
      "storedBytes",
      `SELECT sum(size_bytes)::bigint AS n FROM
         (SELECT run_id, size_bytes FROM task_ins UNION ALL SELECT run_id, size_bytes FROM task_res
          UNION ALL SELECT run_id, size_bytes FROM shared_content) t
       WHERE $1::bigint IS NULL OR run_id = $1`,
      [runId ?? null],
    );
    return Number(rows.rows[0]?.n ?? 0n);
  }

  async purge(options: PurgeOptions): Promise<PurgeResult> {
    return this.tx("purge", async (db) => {
      const cutoff = this.now() - options.expiredGraceSeconds;
      const sharing = await db.query<{ run_id: bigint }>("SELECT DISTINCT run_id FROM shared_content");
      const runIds = sharing.rows.map((r) => r.run_id.toString());
      if (runIds.length > 0) await lockRunsForContent(db, runIds);
      // Replies first: they are found through the expired TaskIns deleted next.
      const replies = await db.query(
        "DELETE FROM task_res WHERE reply_to IN (SELECT task_id FROM task_ins WHERE created_at + ttl <= $1)",
        [cutoff],
      );
      const taskIns = await db.query("DELETE FROM task_ins WHERE created_at + ttl <= $1", [cutoff]);
      const orphans = await db.query(
        `DELETE FROM task_res tr WHERE created_at + ttl <= $1
           AND NOT EXISTS (SELECT 1 FROM task_ins ti WHERE ti.task_id = tr.reply_to)`,
        [cutoff],
      );
      if (runIds.length > 0) await dropUnreferencedContent(db, runIds);
      const runs = await db.query(
        `DELETE FROM run r WHERE last_activity <= $1
           AND NOT EXISTS (SELECT 1 FROM task_ins ti WHERE ti.run_id = r.run_id)
           AND NOT EXISTS (SELECT 1 FROM task_res tr WHERE tr.run_id = r.run_id)`,
        [this.now() - options.runIdleSeconds],
      );
      return {
        taskIns: taskIns.rowCount ?? 0,
        taskRes: (replies.rowCount ?? 0) + (orphans.rowCount ?? 0),
        runs: runs.rowCount ?? 0,
      };
    });
  }

  subscribe(events: StateEvents): () => void {
    return this.events.subscribe(events);
  }

  /** Stops listening and closes the pool. Calling it again does nothing. */
  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    if (this.listenRetry !== undefined) clearTimeout(this.listenRetry);
    const listener = this.listener;
    this.listener = undefined;
    await listener?.end().catch(() => undefined);
    await this.pool.end().catch(() => undefined);
  }
}

function headerToTaskIns(
  row: Pick<TaskRow, "run_id" | "consumer_anonymous" | "consumer_node_id" | "created_at" | "ttl">,
): TaskIns {
  return {
    taskId: "",
    groupId: "",
    runId: row.run_id,
    task: {
      producer: undefined,
      consumer: { nodeId: row.consumer_node_id, anonymous: row.consumer_anonymous },
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

/** Positional parameters in INSERT_TASK_COLUMNS order. Validated messages have task, producer, consumer. */
function taskParams(
  message: TaskIns | TaskRes,
  sizeBytes: number,
  deliveredUnix: number | null,
  sharedRecordSet = false,
): unknown[] {
  const task = message.task!;
  return [
    message.taskId,
    message.groupId,
    message.runId,
    task.producer!.anonymous,
    task.producer!.nodeId,
    task.consumer!.anonymous,
    task.consumer!.nodeId,
    task.createdAt,
    task.deliveredAt,
    task.deliveredAt === "" ? null : deliveredUnix,
    task.pushedAt,
    task.ttl,
    JSON.stringify(task.ancestry),
    task.taskType,
    // Shared content is stored once, in `shared_content`.
    sharedRecordSet || task.recordset === undefined ? null : Buffer.from(RecordSet.encode(task.recordset).finish()),
    task.error === undefined ? null : task.error.code,
    task.error === undefined ? null : task.error.reason,
    sizeBytes,
  ];
}

/** Rebuilds a TaskIns/TaskRes (same shape) from its row. */
function rowToTask(row: TaskRow): TaskIns {
  return {
    taskId: row.task_id,
    groupId: row.group_id,
    runId: row.run_id,
    task: {
      producer: { nodeId: row.producer_node_id, anonymous: row.producer_anonymous },
      consumer: { nodeId: row.consumer_node_id, anonymous: row.consumer_anonymous },
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

/**
 * Locks the run rows before shared content of those runs is dropped. storeTaskIns holds its run
 * FOR UPDATE from its "is the content stored?" check to its commit, so a content row is never
 * dropped while another replica adds a TaskIns referencing it. NO KEY UPDATE, so inserts of
 * other tasks (which take KEY SHARE on the run) are not blocked.
 */
async function lockRunsForContent(db: Queryable, runIds: string[]): Promise<void> {
  await db.query("SELECT 1 FROM run WHERE run_id = ANY($1::bigint[]) ORDER BY run_id FOR NO KEY UPDATE", [runIds]);
}

/** Deletes the shared content of `runIds` that no stored TaskIns references any more. */
async function dropUnreferencedContent(db: Queryable, runIds: string[]): Promise<void> {
  await db.query(
    `DELETE FROM shared_content sc WHERE sc.run_id = ANY($1::bigint[])
       AND NOT EXISTS (SELECT 1 FROM task_ins ti WHERE ti.run_id = sc.run_id AND ti.content_digest = sc.digest)`,
    [runIds],
  );
}
