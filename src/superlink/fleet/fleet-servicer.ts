/**
 * grpc-js implementation of the Fleet service: one thin adapter per RPC over fleet-handler.ts.
 * Authentication, when enabled, wraps this implementation (src/auth/server-auth.ts).
 */
import type * as grpc from "@grpc/grpc-js";
import type { Logger } from "../../core/logger";
import type { FleetServer } from "../../proto/flwr/proto/fleet";
import type { State } from "../../state/state";
import { LONG_POLL_HEADER } from "../../core/constants";
import { type LongPollHub, optedInWaitMs } from "../long-poll";
import { maxWaitFor, reply, serveUnary } from "../unary";
import * as fleet from "./fleet-handler";
import type { PingIntervalBounds } from "../../core/ping-interval";

export interface FleetServicerDeps {
  state: State;
  logger: Logger;
  hub: LongPollHub;
  /**
   * How long an empty PullTaskIns may wait for work; 0 answers at once (Flower behaviour). Only
   * pulls that carry LONG_POLL_HEADER wait (our SuperNode); others are answered at once.
   */
  longPollMs: number;
  /** Accepted ping_interval range (default DEFAULT_PING_INTERVAL_BOUNDS). */
  pingIntervalBounds?: PingIntervalBounds;
}

/** One info line per CreateNode (the authenticated path logs through src/auth/server-auth.ts). */
function logNodeRegistered(logger: Logger, nodeId: bigint, authenticated: boolean, peer: string): void {
  if (nodeId === 0n) return;
  logger.info(
    { event: "superlink.node-registered", nodeId: nodeId.toString(), authenticated, peer },
    `Node ${nodeId} registered (${authenticated ? "authenticated" : "not authenticated"}) from ${peer}`,
  );
}

/** The Fleet service implementation (unauthenticated; see withFleetAuthentication for auth). */
export function createFleetServicer(deps: FleetServicerDeps): FleetServer {
  const { state, logger, hub, longPollMs, pingIntervalBounds } = deps;
  const requestedWait = (metadata: grpc.Metadata): number => {
    const value = metadata.get(LONG_POLL_HEADER)[0];
    return optedInWaitMs(value === undefined ? undefined : value.toString(), longPollMs);
  };
  return {
    createNode: serveUnary(logger, "Fleet.CreateNode", async ({ request, call }) => {
      const response = await fleet.createNode(request, state, pingIntervalBounds);
      logNodeRegistered(logger, response.node?.nodeId ?? 0n, false, call.getPeer());
      return reply(response);
    }),
    deleteNode: serveUnary(logger, "Fleet.DeleteNode", async ({ request }) => {
      const response = await fleet.deleteNode(request, state);
      const nodeId = request.node?.nodeId ?? 0n;
      if (nodeId !== 0n && request.node?.anonymous !== true) {
        logger.info(
          { event: "superlink.node-left", nodeId: nodeId.toString(), reason: "DeleteNode" },
          `Node ${nodeId} left (DeleteNode)`,
        );
      }
      return reply(response);
    }),
    ping: serveUnary(logger, "Fleet.Ping", async ({ request }) =>
      reply(await fleet.ping(request, state, pingIntervalBounds)),
    ),
    pullTaskIns: serveUnary(logger, "Fleet.PullTaskIns", async ({ request, call, signal }) =>
      reply(
        await fleet.pullTaskInsLongPoll(request, state, {
          hub,
          maxWaitMs: maxWaitFor(call, requestedWait(call.metadata)),
          signal,
        }),
      ),
    ),
    pushTaskRes: serveUnary(logger, "Fleet.PushTaskRes", async ({ request }) =>
      reply(await fleet.pushTaskRes(request, state, { logger })),
    ),
    getRun: serveUnary(logger, "Fleet.GetRun", async ({ request }) => reply(await fleet.getRun(request, state))),
  };
}
