/**
 * The Fleet API's receive limits (the mechanism is src/transport/receive-guard.ts):
 * - every request but PushTaskRes is a few ids (Flower's are under 100 bytes), so those methods
 *   accept at most FLEET_SMALL_REQUEST_MAX_BYTES; PushTaskRes keeps the 512 MiB of Flower;
 * - request bytes from calls that have not authenticated (with node authentication: no call on
 *   this connection has yet passed the MAC check for its public key; without it: every call)
 *   are held up to a budget per connection and one in total;
 * - a compressed request from such a call inflates to at most FLEET_SMALL_REQUEST_MAX_BYTES.
 */
import { GRPC_MAX_MESSAGE_LENGTH, PUBLIC_KEY_HEADER } from "../../core/constants";
import { InvalidConfigError } from "../../core/errors";
import type { Logger } from "../../core/logger";
import { FleetService } from "../../proto/flwr/proto/fleet";
import { ReceiveGuard } from "../../transport/receive-guard";

/** Largest CreateNode, DeleteNode, Ping, PullTaskIns or GetRun request. */
const FLEET_SMALL_REQUEST_MAX_BYTES = 64 * 1024;
/** Default unauthenticated bytes per connection: one message of the largest size. */
export const DEFAULT_UNAUTHENTICATED_BYTES_PER_CONNECTION = GRPC_MAX_MESSAGE_LENGTH;
/** Default unauthenticated bytes over all connections: 1 GiB. */
export const DEFAULT_UNAUTHENTICATED_BYTES_TOTAL = 1024 * 1024 * 1024;

export interface FleetReceiveLimits {
  /** Default DEFAULT_UNAUTHENTICATED_BYTES_PER_CONNECTION. */
  unauthenticatedBytesPerConnection?: number;
  /** Default DEFAULT_UNAUTHENTICATED_BYTES_TOTAL. */
  unauthenticatedBytesTotal?: number;
}

const SMALL_REQUEST_LIMITS: ReadonlyMap<string, number> = new Map(
  Object.values(FleetService)
    .filter((method) => method.path !== FleetService.pushTaskRes.path)
    .map((method) => [method.path, FLEET_SMALL_REQUEST_MAX_BYTES]),
);

/** The Fleet API's guard; its interceptor goes first on the Fleet server. Throws InvalidConfigError. */
export function createFleetReceiveGuard(limits: FleetReceiveLimits, logger: Logger): ReceiveGuard {
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
  return new ReceiveGuard({
    maxRequestBytes: SMALL_REQUEST_LIMITS,
    unauthenticatedBytesPerConnection: perConnection,
    unauthenticatedBytesTotal: total,
    unauthenticatedInflatedBytes: FLEET_SMALL_REQUEST_MAX_BYTES,
    identityHeader: PUBLIC_KEY_HEADER,
    logger,
  });
}
