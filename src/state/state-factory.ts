/**
 * The one place that picks a state backend from the `--database` value (Flower's
 * `StateFactory`), and the only importer of the concrete State classes. The SQLite and
 * PostgreSQL backends (with better-sqlite3 and pg) are loaded only when chosen: every module
 * a process loads stays in its V8 heap, and each full GC (one per ~64 MB of received chunks
 * while relaying large messages) marks all of it.
 */
import { IN_MEMORY_DATABASE } from "../core/constants";
import { InMemoryState, type InMemoryStateOptions } from "./in-memory-state";
import type * as PostgresBackend from "./postgres-state";
import { isPostgresUrl, redactPostgresUrl } from "./postgres-url";
import type * as SqliteBackend from "./sqlite-state";
import type { State } from "./state";
import { promisedState } from "./sync-state";

/**
 * `":flwr-in-memory-state:"` (IN_MEMORY_DATABASE) gives a fresh InMemoryState; anything else
 * is a SQLite path (":memory:" gives a private in-memory SQLite database, useful in tests),
 * except a `postgresql://` (or `postgres://`) URL, which gives a PostgresState that several
 * SuperLink replicas may share. Create one State per SuperLink process and share it across all
 * RPCs. Rejects with StateError when the database cannot be used. `contentSpill` applies to the
 * in-memory backend only.
 */
export async function createState(database: string, options: InMemoryStateOptions = {}): Promise<State> {
  if (database === IN_MEMORY_DATABASE) return promisedState(new InMemoryState(options));
  if (isPostgresUrl(database)) {
    // eslint-disable-next-line @typescript-eslint/no-require-imports -- loaded only for a PostgreSQL database (see above)
    const { PostgresState } = require("./postgres-state") as typeof PostgresBackend;
    return PostgresState.open(database, options);
  }
  // eslint-disable-next-line @typescript-eslint/no-require-imports -- loaded only for a SQLite database (see above)
  const { SqliteState } = require("./sqlite-state") as typeof SqliteBackend;
  return promisedState(new SqliteState(database, options));
}

/** The `--database` value as it may be logged (a PostgreSQL URL without its password). */
export function databaseForLogs(database: string): string {
  return isPostgresUrl(database) ? redactPostgresUrl(database) : database;
}
