/**
 * Typed errors. Every failure a user can meet has a class with a stable `code` (FLWR_*), a
 * message that says what to do, and the `cause` kept. Codes are never reused.
 * `docs/errors.md` lists every code; a test keeps the two in sync.
 */

const kFlwrError = Symbol.for("flwr-ts.error");

export class FlwrError extends Error {
  readonly code: string;

  constructor(code: string, message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = new.target.name;
    this.code = code;
    Object.defineProperty(this, kFlwrError, { value: true });
  }

  /** Brand check that also works across two loaded copies of this package. */
  static isFlwrError(value: unknown): value is FlwrError {
    return typeof value === "object" && value !== null && (value as Record<symbol, unknown>)[kFlwrError] === true;
  }
}

/** A command-line option or config value is missing, conflicting or malformed. */
export class InvalidConfigError extends FlwrError {
  constructor(message: string, options?: { cause?: unknown }) {
    super("FLWR_INVALID_CONFIG", message, options);
  }
}

/** A certificate, key or allowlist file could not be read or parsed. */
export class InvalidKeyFileError extends FlwrError {
  constructor(message: string, options?: { cause?: unknown }) {
    super("FLWR_INVALID_KEY_FILE", message, options);
  }
}

/** A protocol message broke the Flower rules (validator errors, malformed ids, bad arrays). */
export class MalformedMessageError extends FlwrError {
  constructor(message: string, options?: { cause?: unknown }) {
    super("FLWR_MALFORMED_MESSAGE", message, options);
  }
}

/** A node, run or task that the request names does not exist. */
export class NotFoundError extends FlwrError {
  constructor(message: string, options?: { cause?: unknown }) {
    super("FLWR_NOT_FOUND", message, options);
  }
}

/** Node authentication failed (unknown key, bad MAC, wrong node id). Maps to UNAUTHENTICATED. */
export class AuthenticationError extends FlwrError {
  constructor(message: string, options?: { cause?: unknown }) {
    super("FLWR_AUTHENTICATION_FAILED", message, options);
  }
}

/** The peer could not be reached, or the connection broke; retryable. */
export class ConnectionError extends FlwrError {
  constructor(message: string, options?: { cause?: unknown }) {
    super("FLWR_CONNECTION_FAILED", message, options);
  }
}

/** An operation did not finish in time (round timeout, pull timeout). */
export class TimeoutError extends FlwrError {
  constructor(message: string, options?: { cause?: unknown }) {
    super("FLWR_TIMEOUT", message, options);
  }
}

/** A ClientApp or ServerApp module could not be found or loaded. */
export class AppLoadError extends FlwrError {
  constructor(message: string, options?: { cause?: unknown }) {
    super("FLWR_APP_LOAD_FAILED", message, options);
  }
}

/** A state backend (SQLite file) could not be opened or has a foreign schema. */
export class StateError extends FlwrError {
  constructor(message: string, options?: { cause?: unknown }) {
    super("FLWR_STATE_ERROR", message, options);
  }
}

/** The `--database` file failed SQLite's integrity check (corrupt pages): restore or replace it. */
export class StateCorruptError extends FlwrError {
  constructor(message: string, options?: { cause?: unknown }) {
    super("FLWR_STATE_CORRUPT", message, options);
  }
}

/** The `--database` file is held by another process (a second SuperLink on the same file). */
export class StateLockedError extends FlwrError {
  constructor(message: string, options?: { cause?: unknown }) {
    super("FLWR_STATE_LOCKED", message, options);
  }
}

/** A training round could not proceed (too few results, all clients failed). */
export class RoundFailedError extends FlwrError {
  constructor(message: string, options?: { cause?: unknown }) {
    super("FLWR_ROUND_FAILED", message, options);
  }
}

/**
 * A SuperLink limit was hit (stored bytes per run or in total, TaskIns per PushTaskIns, live
 * runs). Maps to RESOURCE_EXHAUSTED; retrying later may succeed once results were pulled.
 */
export class ResourceExhaustedError extends FlwrError {
  constructor(message: string, options?: { cause?: unknown }) {
    super("FLWR_RESOURCE_EXHAUSTED", message, options);
  }
}

/**
 * A PushSharedTaskIns names shared content by a digest the SuperLink does not hold for that run
 * (never uploaded, or freed with its last TaskIns). Maps to FAILED_PRECONDITION; the flwr-ts
 * Driver then sends the content again.
 */
export class UnknownContentError extends FlwrError {
  constructor(message: string, options?: { cause?: unknown }) {
    super("FLWR_UNKNOWN_CONTENT", message, options);
  }
}

/** Reads a message from any caught value without assuming it is an Error. */
export function errorMessage(value: unknown): string {
  if (value instanceof Error) return value.message;
  return String(value);
}
