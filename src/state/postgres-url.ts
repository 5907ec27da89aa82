/**
 * What the state factory needs to know about a PostgreSQL `--database` value without loading
 * the PostgreSQL backend (and `pg`): a SuperLink on in-memory or SQLite state never loads them.
 */

/** Is `database` a PostgreSQL connection string? */
export function isPostgresUrl(database: string): boolean {
  return /^postgres(ql)?:\/\//i.test(database);
}

/** The URL with its password masked, for messages and logs. */
export function redactPostgresUrl(database: string): string {
  try {
    const url = new URL(database);
    if (url.password !== "") url.password = "***";
    return url.toString();
  } catch {
    return "postgresql://(unparsable URL)";
  }
}
