/**
 * Retrying Fleet calls the way a SuperNode must: capped exponential backoff with full jitter
 * (base 1 s, x2, each wait drawn uniformly from [0, ceiling]), optional give-up limits by number
 * of tries and by total time, and a classification that stops at once on failures retrying
 * cannot fix (refused credentials, a certificate the CA does not vouch for, wrong service).
 *
 * Flower 1.10 retries every gRPC error forever with an uncapped ceiling (docs/protocol.md, "SuperNode"); the cap
 * (default 30 s) and the non-retryable classes are flwr-ts choices. Randomness, sleeping and the
 * clock are injectable so the policy is testable without waiting.
 *
 * Shared by the SuperNode (Fleet calls, `classifyFleetError`) and the ServerApp's Driver, which
 * passes its own classification (`classifyDriverError`).
 */
import { AuthenticationError, ConnectionError, FlwrError, InvalidConfigError, errorMessage } from "../core/errors";
import { GrpcStatus, cleanDetails, fromServiceError, isCallFailure, statusName, tlsSetupError } from "./call-errors";

export { isCertificateFailure } from "./call-errors";

/** Default first backoff ceiling (Flower: 1 s). */
const DEFAULT_BASE_DELAY_MS = 1_000;
/** Default ceiling growth per retry (Flower: x2). */
const DEFAULT_BACKOFF_MULTIPLIER = 2;
/** Default cap of the ceiling (flwr-ts; Flower has none). */
export const DEFAULT_MAX_BACKOFF_MS = 30_000;

export interface RetryPolicy {
  /** Retries after the first try; undefined = unlimited (Flower's `--max-retries`). */
  maxRetries?: number;
  /** Stop retrying once this much time has passed since the first try; undefined = unlimited. */
  maxWaitTimeMs?: number;
  baseDelayMs?: number;
  multiplier?: number;
  maxBackoffMs?: number;
}

/** Where one retry loop stands; handed to the hooks. */
export interface RetryState {
  /** What is being tried, e.g. "CreateNode". */
  what: string;
  /** Tries made so far, including the one that just ended. */
  tries: number;
  /** Time since the first try started. */
  elapsedMs: number;
  /** The error of the last try (undefined in onSuccess after a first-try success). */
  error?: unknown;
  /** The wait before the next try (onBackoff only). */
  waitMs?: number;
}

/** How a failed call should be treated. */
export type Classification =
  | { kind: "retryable" }
  /** Retrying cannot help: stop with this error. */
  | { kind: "fatal"; error: unknown };

export interface RetryDeps {
  /** Uniform in [0, 1); default Math.random. */
  random?: () => number;
  /** Waits `ms`; must reject when `signal` aborts. Default: an abortable timer. */
  sleep?: (ms: number, signal?: AbortSignal) => Promise<void>;
  /** A monotonic clock in ms; default performance.now. */
  now?: () => number;
  /** Decides retry vs stop; default `classifyFleetError`. */
  classify?: (err: unknown, what: string) => Classification;
  onBackoff?: (state: RetryState) => void;
  /** Called when the limits are reached, just before the give-up error is thrown. */
  onGiveUp?: (state: RetryState) => void;
  onSuccess?: (state: RetryState) => void;
}

export interface InvokeOptions {
  /** Aborting cancels the wait between tries; the invoke then rejects with `signal.reason`. */
  signal?: AbortSignal;
  /** Adjusts a computed wait (e.g. the ping loop shortens waits after a deadline). */
  adjustWaitMs?: (waitMs: number, error: unknown) => number;
}

/** The ceiling of the n-th wait (n = 1 after the first failure): base * multiplier^(n-1), capped. */
export function backoffCeilingMs(n: number, policy: RetryPolicy = {}): number {
  const base = policy.baseDelayMs ?? DEFAULT_BASE_DELAY_MS;
  const multiplier = policy.multiplier ?? DEFAULT_BACKOFF_MULTIPLIER;
  const cap = policy.maxBackoffMs ?? DEFAULT_MAX_BACKOFF_MS;
  const ceiling = base * Math.pow(multiplier, Math.max(0, n - 1));
  return Math.min(ceiling, cap);
}

/** A timer that rejects with `signal.reason` when the signal aborts (and cleans up after itself). */
export function abortableSleep(ms: number, signal?: AbortSignal): Promise<void> {
  if (signal?.aborted) return Promise.reject(signal.reason);
  return new Promise((resolve, reject) => {
    const onAbort = (): void => {
      clearTimeout(timer);
      reject(signal?.reason);
    };
    const timer = setTimeout(
      () => {
        signal?.removeEventListener("abort", onAbort);
        resolve();
      },
      Math.max(0, ms),
    );
    signal?.addEventListener("abort", onAbort, { once: true });
  });
}

/** Message for a SuperNode key the SuperLink does not accept. */
export const ACCESS_DENIED_HINT = "access denied: is this node's public key in the SuperLink's allowlist?";

/**
 * Classifies a failed Fleet call. Retryable: UNAVAILABLE (connection failures), DEADLINE_EXCEEDED,
 * RESOURCE_EXHAUSTED, UNKNOWN, INTERNAL, ABORTED and CANCELLED (we only get CANCELLED without
 * asking for it when the peer goes away). Fatal: UNAUTHENTICATED (AuthenticationError), TLS
 * certificate failures and UNIMPLEMENTED (InvalidConfigError), other statuses (typed errors),
 * and every non-gRPC error (e.g. a SuperLink without authentication, a local bug).
 */
export function classifyFleetError(
  err: unknown,
  context: { what?: string; target?: string; authenticated?: boolean } = {},
): Classification {
  const what = context.what ?? "Fleet call";
  const at = context.target ? ` at ${context.target}` : "";
  if (!isCallFailure(err)) {
    if (FlwrError.isFlwrError(err) && err.code === "FLWR_CONNECTION_FAILED") return { kind: "retryable" };
    return { kind: "fatal", error: err };
  }
  const details = cleanDetails(err.details) || statusName(err.code) || String(err.code);
  switch (err.code) {
    case GrpcStatus.UNAVAILABLE:
      {
        const tlsError = tlsSetupError(err, `the SuperLink${at}`, "start this SuperNode with --insecure too");
        if (tlsError !== undefined) return { kind: "fatal", error: tlsError };
      }
      return { kind: "retryable" };
    case GrpcStatus.DEADLINE_EXCEEDED:
    case GrpcStatus.RESOURCE_EXHAUSTED:
    case GrpcStatus.UNKNOWN:
    case GrpcStatus.INTERNAL:
    case GrpcStatus.ABORTED:
    case GrpcStatus.CANCELLED:
      return { kind: "retryable" };
    case GrpcStatus.UNAUTHENTICATED:
      return {
        kind: "fatal",
        error: new AuthenticationError(
          context.authenticated === false
            ? `The SuperLink${at} refused ${what}: it requires node authentication. Start this SuperNode ` +
                "with --auth-supernode-private-key and --auth-supernode-public-key."
            : `The SuperLink${at} refused ${what}: ${ACCESS_DENIED_HINT}`,
          { cause: err },
        ),
      };
    case GrpcStatus.UNIMPLEMENTED:
      return {
        kind: "fatal",
        error: new InvalidConfigError(
          `The server${at} does not implement ${what} of the Flower Fleet API (${details}). ` +
            "Is --superlink the SuperLink's Fleet API address (default port 9092), not the Driver API (9091)?",
          { cause: err },
        ),
      };
    default:
      return { kind: "fatal", error: fromServiceError(err, what) };
  }
}

/** Describes a failure for logs: gRPC status name and details, or the error message. */
export function describeFailure(err: unknown): string {
  if (isCallFailure(err)) return `${statusName(err.code) ?? err.code}: ${cleanDetails(err.details)}`;
  return errorMessage(err);
}

/** grpc-js details without the empty "Resolution note" tail and OpenSSL's source location. */

/** Runs calls with the retry policy; one instance is shared by all calls of a SuperNode. */
export class RetryInvoker {
  private readonly random: () => number;
  private readonly sleep: (ms: number, signal?: AbortSignal) => Promise<void>;
  private readonly now: () => number;
  private readonly classify: (err: unknown, what: string) => Classification;

  constructor(
    private readonly policy: RetryPolicy = {},
    private readonly deps: RetryDeps = {},
  ) {
    checkPolicy(policy);
    this.random = deps.random ?? Math.random;
    this.sleep = deps.sleep ?? abortableSleep;
    this.now = deps.now ?? (() => performance.now());
    this.classify = deps.classify ?? ((err, what) => classifyFleetError(err, { what }));
  }

  /** Total tries allowed, or undefined for unlimited. */
  get maxTries(): number | undefined {
    return this.policy.maxRetries === undefined ? undefined : this.policy.maxRetries + 1;
  }

  /**
   * Calls `fn` until it succeeds, a failure is fatal (rethrown as classified), or the limits are
   * reached (ConnectionError "Giving up on …" with the last failure as cause).
   */
  async invoke<T>(what: string, fn: () => Promise<T>, options: InvokeOptions = {}): Promise<T> {
    const { signal } = options;
    const start = this.now();
    let tries = 0;
    for (;;) {
      signal?.throwIfAborted();
      tries += 1;
      let result: T;
      try {
        result = await fn();
      } catch (err) {
        // A call we cancelled ourselves is not a failure to retry.
        if (signal?.aborted) throw signal.reason;
        const elapsedMs = this.now() - start;
        const verdict = this.classify(err, what);
        if (verdict.kind === "fatal") throw verdict.error;
        const maxTries = this.maxTries;
        const maxWait = this.policy.maxWaitTimeMs;
        if ((maxTries !== undefined && tries >= maxTries) || (maxWait !== undefined && elapsedMs >= maxWait)) {
          const state: RetryState = { what, tries, elapsedMs, error: err };
          this.deps.onGiveUp?.(state);
          throw new ConnectionError(
            `Giving up on ${what} after ${tries} ${tries === 1 ? "try" : "tries"} in ` +
              `${(elapsedMs / 1000).toFixed(2)} s: ${describeFailure(err)}`,
            { cause: err },
          );
        }
        let waitMs = this.random() * backoffCeilingMs(tries, this.policy);
        if (options.adjustWaitMs) waitMs = options.adjustWaitMs(waitMs, err);
        if (maxWait !== undefined) waitMs = Math.min(waitMs, maxWait - elapsedMs);
        waitMs = Math.max(0, waitMs);
        this.deps.onBackoff?.({ what, tries, elapsedMs, error: err, waitMs });
        await this.sleep(waitMs, signal);
        continue;
      }
      this.deps.onSuccess?.({ what, tries, elapsedMs: this.now() - start });
      return result;
    }
  }
}

function checkPolicy(policy: RetryPolicy): void {
  const nonNegative = (name: string, value: number | undefined, integer = false): void => {
    if (value === undefined) return;
    if (!Number.isFinite(value) || value < 0 || (integer && !Number.isInteger(value))) {
      throw new InvalidConfigError(`${name} must be a non-negative ${integer ? "integer" : "number"}, got ${value}`);
    }
  };
  nonNegative("maxRetries", policy.maxRetries, true);
  nonNegative("maxWaitTimeMs", policy.maxWaitTimeMs);
  nonNegative("baseDelayMs", policy.baseDelayMs);
  nonNegative("maxBackoffMs", policy.maxBackoffMs);
  if (policy.multiplier !== undefined && !(Number.isFinite(policy.multiplier) && policy.multiplier >= 1)) {
    throw new InvalidConfigError(`multiplier must be >= 1, got ${policy.multiplier}`);
  }
}
