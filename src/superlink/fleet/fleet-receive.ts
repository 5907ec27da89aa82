/**
 * The Fleet API's receive limits (the mechanism is src/transport/receive-guard.ts):
 * - every request but PushTaskRes is a few ids (Flower's are under 100 bytes), so those methods
 *   accept at most FLEET_SMALL_REQUEST_MAX_BYTES; PushTaskRes keeps the 512 MiB of Flower;
 * - request bytes from calls that have not authenticated (with node authentication: no call on
 *   this connection has yet passed the MAC check for its public key; without it: every call)
 *   are held up to a budget per connection and one in total;
 * - a compressed request from such a call inflates to at most FLEET_SMALL_REQUEST_MAX_BYTES;
 * - large results (PushTaskRes messages of LARGE_RESULT_MIN_BYTES and more) are read while the
 *   ones admitted before them that are still in memory fit in a budget
 *   (src/transport/receive-admission.ts): when a broadcast makes every node upload at once, the
 *   SuperLink takes them a few at a time instead of holding all of them.
 */
import { GRPC_MAX_MESSAGE_LENGTH, PUBLIC_KEY_HEADER } from "../../core/constants";
import { InvalidConfigError } from "../../core/errors";
import { collectGarbageOnce } from "../../core/garbage-collection";
import type { Logger } from "../../core/logger";
import { FleetService } from "../../proto/flwr/proto/fleet";
import { ReceiveAdmission } from "../../transport/receive-admission";
import { ReceiveGuard } from "../../transport/receive-guard";

/** Largest CreateNode, DeleteNode, Ping, PullTaskIns or GetRun request. */
const FLEET_SMALL_REQUEST_MAX_BYTES = 64 * 1024;
/** Default unauthenticated bytes per connection: one message of the largest size. */
export const DEFAULT_UNAUTHENTICATED_BYTES_PER_CONNECTION = GRPC_MAX_MESSAGE_LENGTH;
/** Default unauthenticated bytes over all connections: 1 GiB. */
export const DEFAULT_UNAUTHENTICATED_BYTES_TOTAL = 1024 * 1024 * 1024;

/**
 * Default budget of large results in memory: two 100 MB results at a time. One at a time would
 * leave the SuperLink idle between an upload and the answer that frees it, and one upload stream
 * alone is slow (64 KiB stream windows): the 100 MB x 10 relay took 1.5-2x as long (bench/README.md).
 */
export const DEFAULT_LARGE_RESULT_BUDGET_BYTES = 256 * 1024 * 1024;
/** Results at least this large are admitted by the budget; smaller ones are read at once. */
const LARGE_RESULT_MIN_BYTES = 16 * 1024 * 1024;
/** A held result is read after this long even if the budget did not free (nobody pulls, say). */
const DEFAULT_LARGE_RESULT_MAX_WAIT_MS = 10_000;

export interface FleetReceiveLimits {
  /** Default DEFAULT_UNAUTHENTICATED_BYTES_PER_CONNECTION. */
  unauthenticatedBytesPerConnection?: number;
  /** Default DEFAULT_UNAUTHENTICATED_BYTES_TOTAL. */
  unauthenticatedBytesTotal?: number;
  /** Budget of large results in memory (default DEFAULT_LARGE_RESULT_BUDGET_BYTES; 0 = none). */
  largeResultBudgetBytes?: number;
  /** Longest wait of a held large result (default DEFAULT_LARGE_RESULT_MAX_WAIT_MS). */
  largeResultMaxWaitMs?: number;
}

const SMALL_REQUEST_LIMITS: ReadonlyMap<string, number> = new Map(
  Object.values(FleetService)
    .filter((method) => method.path !== FleetService.pushTaskRes.path)
    .map((method) => [method.path, FLEET_SMALL_REQUEST_MAX_BYTES]),
);

/**
 * The Fleet API's guard; its interceptor goes first on the Fleet server. With `nodeAuthentication`,
 * only calls on connections that passed a MAC check wait for the large-result budget: a peer that
 * proved nothing cannot hold it by declaring a large result and stalling (its bytes stay under the
 * unauthenticated budgets). Throws InvalidConfigError.
 */
export function createFleetReceiveGuard(
  limits: FleetReceiveLimits,
  logger: Logger,
  nodeAuthentication: boolean,
): ReceiveGuard {
  const perConnection = limits.unauthenticatedBytesPerConnection ?? DEFAULT_UNAUTHENTICATED_BYTES_PER_CONNECTION;
  const total = limits.unauthenticatedBytesTotal ?? DEFAULT_UNAUTHENTICATED_BYTES_TOTAL;
  for (const [what, value] of [
    ["per connection", perConnection],
    ["in total", total],
  ] as const) {
    if (!Number.isSafeInteger(value) || value < 1) {
      throw new InvalidConfigError(
        `The Fleet API's budget for unauthenticated bytes ${what} must be a positive integer, got ${value}`,
      );
    }
  }
  const budget = limits.largeResultBudgetBytes ?? DEFAULT_LARGE_RESULT_BUDGET_BYTES;
  const maxWaitMs = limits.largeResultMaxWaitMs ?? DEFAULT_LARGE_RESULT_MAX_WAIT_MS;
  for (const [what, value] of [
    ["budget of large results in memory", budget],
    ["longest wait of a held large result", maxWaitMs],
  ] as const) {
    if (!Number.isSafeInteger(value) || value < 0) {
      throw new InvalidConfigError(`The Fleet API's ${what} must be an integer >= 0, got ${value}`);
    }
  }
  return new ReceiveGuard({
    maxRequestBytes: SMALL_REQUEST_LIMITS,
    unauthenticatedBytesPerConnection: perConnection,
    unauthenticatedBytesTotal: total,
    unauthenticatedInflatedBytes: FLEET_SMALL_REQUEST_MAX_BYTES,
    identityHeader: PUBLIC_KEY_HEADER,
    largeMessageAdmissionAuthenticatedOnly: nodeAuthentication,
    ...(budget > 0
      ? {
          largeMessageAdmission: new ReceiveAdmission({
            budgetBytes: budget,
            minMessageBytes: LARGE_RESULT_MIN_BYTES,
            maxWaitMs,
            collect: collectGarbageOnce,
            onAdmittedAfterMaxWait: (bytes, stats) => {
              logger.info(
                { event: "superlink.large-result-admitted-after-wait", bytes, heldBytes: stats.heldBytes, maxWaitMs },
                `A result of ${bytes} bytes is read after waiting ${maxWaitMs} ms although ${stats.heldBytes} bytes of large results are still in memory (budget ${budget})`,
              );
            },
          }),
        }
      : {}),
    logger,
  });
}
