/**
 * The State contract on a real PostgreSQL server (started here, in a temporary directory), plus
 * what replicas sharing one database add: schema versioning, notifications across replicas,
 * and atomic read-modify-writes under concurrency. Skipped, saying why, where no server can start.
 */
import pg from "pg";
import { type LocalPostgres, localPostgresUnavailableReason, startLocalPostgres } from "../../src/cli/local-postgres";
import { StateError } from "../../src/core/errors";
import { POSTGRES_SCHEMA_VERSION, PostgresState } from "../../src/state/postgres-state";
import { redactPostgresUrl } from "../../src/state/postgres-url";
import type { State, StateOptions } from "../../src/state/state";
import { createState } from "../../src/state/state-factory";
import {
  TestClock,
  UUID4,
  describeStateConformance,
  describeStateLimits,
  makeTaskIns,
  makeTaskRes,
} from "./state.conformance";

const unavailable = localPostgresUnavailableReason();
if (unavailable !== undefined) {
  console.warn(`PostgreSQL state tests skipped: ${unavailable}`);
}
const describeIfPostgres = unavailable === undefined ? describe : describe.skip;

let server: LocalPostgres | undefined;
/** One connection for emptying the shared test database between tests. */
let admin: pg.Client | undefined;
beforeAll(async () => {
  if (unavailable === undefined) server = await startLocalPostgres();
}, 60_000);
afterAll(async () => {
  await admin?.end();
  await server?.stop();
}, 30_000);

/** A fresh, empty state on the shared database (schema kept, rows gone). */
async function freshState(options: StateOptions): Promise<State> {
  const state = await PostgresState.open(server!.url, options);
  if (admin === undefined) {
    admin = new pg.Client({ connectionString: server!.url });
    await admin.connect();
  }
  await admin.query(
    "DELETE FROM task_res; DELETE FROM task_ins; DELETE FROM shared_content; DELETE FROM node; DELETE FROM run",
  );
  return state;
}

describeIfPostgres("PostgresState", () => {
  describeStateConformance("PostgresState", (clock) => freshState({ now: clock.now }));
  describeStateLimits("PostgresState", (clock, limits) => freshState({ now: clock.now, limits }));

  describe("schema and connection", () => {
    test("createState picks PostgreSQL for postgresql:// URLs and the schema is versioned", async () => {
      const state = await createState(server!.url);
      try {
        expect(state.kind).toBe("postgresql");
        const client = new pg.Client({ connectionString: server!.url });
        await client.connect();
        const rows = await client.query<{ version: number }>(
          "SELECT version FROM flwr_schema_migrations ORDER BY version",
        );
        await client.end();
        expect(rows.rows.map((r) => r.version)).toEqual(
          Array.from({ length: POSTGRES_SCHEMA_VERSION }, (_, i) => i + 1),
        );
      } finally {
        await state.close();
      }
    });

    test("replicas opening a new database at once migrate it once", async () => {
      const url = await server!.createDatabase("migrate_race");
      const states = await Promise.all([0, 1, 2].map(() => PostgresState.open(url)));
      const runId = await states[0]!.createRun("f", "v", new Map());
      for (const s of states) expect((await s.getRun(runId))?.runId).toBe(runId);
      await Promise.all(states.map((s) => s.close()));
    });

    test("a newer schema is refused, naming the versions", async () => {
      const url = await server!.createDatabase("newer_schema");
      const client = new pg.Client({ connectionString: url });
      await client.connect();
      await client.query(
        "CREATE TABLE flwr_schema_migrations (version integer PRIMARY KEY, applied_at double precision NOT NULL)",
      );
      await client.query("INSERT INTO flwr_schema_migrations VALUES ($1, 0)", [POSTGRES_SCHEMA_VERSION + 1]);
      await client.end();
      await expect(PostgresState.open(url)).rejects.toThrow(
        new RegExp(`schema version ${POSTGRES_SCHEMA_VERSION + 1}`),
      );
    });

    test("an unreachable server is a StateError that does not show the password", async () => {
      const url = "postgresql://flwr:s3cret@127.0.0.1:1/flwr?connect_timeout=2";
      const failure = PostgresState.open(url);
      await expect(failure).rejects.toThrow(StateError);
      await expect(failure).rejects.not.toThrow(/s3cret/);
      expect(redactPostgresUrl(url)).not.toContain("s3cret");
    });
  });

  describe("replicas on one database", () => {
    let clock: TestClock;
    let a: State;
    let b: State;
    beforeEach(async () => {
      clock = new TestClock();
      a = await freshState({ now: clock.now });
      b = await PostgresState.open(server!.url, { now: clock.now });
    });
    afterEach(async () => {
      await a.close();
      await b.close();
    });

    test("what one replica stores wakes the subscribers of the other", async () => {
      const runId = await a.createRun("f", "v", new Map());
      const seen = new Promise<{ ins: [bigint, boolean]; res: string }>((resolve) => {
        let ins: [bigint, boolean] | undefined;
        b.subscribe({
          onTaskInsStored: (nodeId, anonymous) => {
            ins = [nodeId, anonymous];
          },
          onTaskResStored: (taskInsId) => {
            resolve({ ins: ins!, res: taskInsId });
          },
        });
      });
      const nodeId = await a.createNode(30);
      const insId = (await a.storeTaskIns(makeTaskIns(clock, runId, { nodeId, anonymous: false })))!;
      await a.getTaskIns(nodeId, 1);
      await a.storeTaskRes(makeTaskRes(clock, runId, nodeId, insId));
      expect(await seen).toEqual({ ins: [nodeId, false], res: insId });
    });

    test("a TaskIns pulled on both replicas at once is delivered once", async () => {
      const runId = await a.createRun("f", "v", new Map());
      const nodeId = await a.createNode(30);
      for (let i = 0; i < 20; i++) await a.storeTaskIns(makeTaskIns(clock, runId, { nodeId, anonymous: false }));
      const pulls = await Promise.all(
        Array.from({ length: 40 }, (_, i) => (i % 2 === 0 ? a : b).getTaskIns(nodeId, 1)),
      );
      const ids = pulls.flat().map((t) => t.taskId);
      expect(ids).toHaveLength(20);
      expect(new Set(ids).size).toBe(20);
    });

    test("results pushed to both replicas at once: one is stored, both answers name it", async () => {
      const runId = await a.createRun("f", "v", new Map());
      const nodeId = await a.createNode(30);
      const insId = (await a.storeTaskIns(makeTaskIns(clock, runId, { nodeId, anonymous: false })))!;
      const answers = await Promise.all(
        Array.from({ length: 10 }, (_, i) =>
          (i % 2 === 0 ? a : b).storeTaskRes(makeTaskRes(clock, runId, nodeId, insId)),
        ),
      );
      expect(answers[0]).toMatch(UUID4);
      expect(new Set(answers).size).toBe(1);
      expect(await b.numTaskRes()).toBe(1);
    });

    test("one key registered on both replicas at once maps to one node", async () => {
      const key = Buffer.from("-----BEGIN PUBLIC KEY-----\nreplica-race\n-----END PUBLIC KEY-----\n");
      const created = await Promise.all(Array.from({ length: 8 }, (_, i) => (i % 2 === 0 ? a : b).createNode(30, key)));
      const winners = created.filter((id) => id !== 0n);
      expect(winners).toHaveLength(1);
      expect(await b.getNodeId(key)).toBe(winners[0]);
    });

    test("an error reply synthesized on both replicas at once is stored and delivered once", async () => {
      const runId = await a.createRun("f", "v", new Map());
      const insId = (await a.storeTaskIns(makeTaskIns(clock, runId, { nodeId: 4242n, anonymous: false })))!;
      const pulls = await Promise.all([a, b, a, b].map((s) => s.getTaskRes(new Set([insId]))));
      expect(pulls.flat()).toHaveLength(1);
      expect(await a.numTaskRes()).toBe(1);
    });
  });
});
