/**
 * The one place that picks a state backend from the `--database` value (Flower's
 * `StateFactory`), and the only importer of the concrete State classes.
 */
import { IN_MEMORY_DATABASE } from "../core/constants";
import { InMemoryState } from "./in-memory-state";
import { PostgresState, isPostgresUrl, redactPostgresUrl } from "./postgres-state";
import { SqliteState } from "./sqlite-state";
import type { State, StateOptions } from "./state";
import { promisedState } from "./sync-state";

/**
 * `":flwr-in-memory-state:"` (IN_MEMORY_DATABASE) gives a fresh InMemoryState; anything else
 * is a SQLite path (":memory:" gives a private in-memory SQLite database, useful in tests),
 * except a `postgresql://` (or `postgres://`) URL, which gives a PostgresState that several
 * SuperLink replicas may share. Create one State per SuperLink process and share it across all
 * RPCs. Rejects with StateError when the database cannot be used.
 */
export async function createState(database: string, options: StateOptions = {}): Promise<State> {
  if (database === IN_MEMORY_DATABASE) return promisedState(new InMemoryState(options));
  if (isPostgresUrl(database)) return PostgresState.open(database, options);
  return promisedState(new SqliteState(database, options));
}

/** The `--database` value as it may be logged (a PostgreSQL URL without its password). */
export function databaseForLogs(database: string): string {
  return isPostgresUrl(database) ? redactPostgresUrl(database) : database;
}
