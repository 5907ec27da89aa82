/**
 * The SuperNode's registration with the SuperLink: CreateNode (retried), the current node id,
 * registering again when the SuperLink forgot the node (single flight), and DeleteNode. The ping
 * loop and the task runner wait here for a usable registration.
 */
import { AuthenticationError, FlwrError } from "../core/errors";
import type { Logger } from "../core/logger";
import type { Node } from "../proto/flwr/proto/node";
import { ACCESS_DENIED_HINT, type RetryInvoker, describeFailure } from "../transport/retry";
import { GrpcStatus, isCallFailure as isServiceError } from "../transport/call-errors";
import type { CallControl, FleetTransport } from "./fleet-transport";

/** Thrown by a loop that saw the node being stopped; never escapes the SuperNode. */
export class Stopped extends Error {}

/** Our own stop, or a call it cancelled. */
export function isCancellation(err: unknown): boolean {
  return err instanceof Stopped || (isServiceError(err) && err.code === GrpcStatus.CANCELLED);
}

/** An UNAUTHENTICATED answer to a call other than CreateNode (classified as AuthenticationError). */
export function isRefusal(err: unknown): boolean {
  return FlwrError.isFlwrError(err) && err.code === "FLWR_AUTHENTICATION_FAILED" && isServiceError(err.cause);
}

export interface RegistrationOptions {
  connection: FleetTransport;
  /** Retries CreateNode (the node's give-up limits apply). */
  retry: RetryInvoker;
  /** Ping interval announced in CreateNode, in seconds. */
  pingInterval: number;
  /** Aborted when the node stops taking work: cancels CreateNode and the waits for a node. */
  stopSignal: AbortSignal;
  /** Aborted when the grace time is over: bounds DeleteNode. */
  abortSignal: AbortSignal;
  logger: Logger;
  /** Called with every new registration, before the waiting loops resume. */
  onRegistered?: (node: Node) => void;
  /** The grpc-js extensions in use, for the ready line (Node only; the browser has no grpc-js). */
  grpcExtensions?: () => readonly string[];
}

export class Registration {
  /** The current registration; undefined while (re-)registering or disconnected. */
  private current: Node | undefined;
  /** The id of the latest registration (kept while re-registering). */
  private lastId = 0n;
  /** Loops waiting for a registration. */
  private readonly waiters = new Set<(node: Node) => void>();
  private reregistering: Promise<Node> | undefined;

  constructor(private readonly options: RegistrationOptions) {}

  get node(): Node | undefined {
    return this.current;
  }

  get lastNodeId(): bigint {
    return this.lastId;
  }

  /** The first CreateNode; logs the readiness line. */
  async registerFirst(): Promise<void> {
    const node = await this.createNode();
    this.set(node);
    const target = this.options.connection.target;
    const grpcExtensions = this.options.grpcExtensions?.();
    this.options.logger.info(
      {
        event: "supernode.ready",
        nodeId: node.nodeId.toString(),
        superlink: target,
        ...(grpcExtensions !== undefined ? { grpcExtensions } : {}),
      },
      `SuperNode registered with the SuperLink at ${target} as node ${node.nodeId}` +
        (grpcExtensions !== undefined ? `; grpc-js extensions: ${grpcExtensions.join(", ") || "none"}` : ""),
    );
  }

  /** CreateNode, retried; does not make the node current (see set). */
  createNode(): Promise<Node> {
    const { connection, pingInterval, stopSignal: signal } = this.options;
    return this.options.retry.invoke("CreateNode", () => connection.createNode(pingInterval, { signal }), { signal });
  }

  /** Makes `node` the current registration and wakes the loops waiting for one. */
  set(node: Node): void {
    this.current = node;
    this.lastId = node.nodeId;
    this.options.onRegistered?.(node);
    for (const wake of this.waiters) wake(node);
    this.waiters.clear();
  }

  /** Forgets the current registration (the caller unregisters it) and returns it. */
  release(): Node | undefined {
    const node = this.current;
    this.current = undefined;
    return node;
  }

  /** Waits for a usable registration; rejects with Stopped when the node stops meanwhile. */
  awaitNode(): Promise<Node> {
    if (this.current !== undefined) return Promise.resolve(this.current);
    const signal = this.options.stopSignal;
    if (signal.aborted) return Promise.reject(new Stopped());
    return new Promise((resolve, reject) => {
      const onAbort = (): void => {
        this.waiters.delete(waiter);
        reject(new Stopped());
      };
      const waiter = (node: Node): void => {
        signal.removeEventListener("abort", onAbort);
        resolve(node);
      };
      this.waiters.add(waiter);
      signal.addEventListener("abort", onAbort, { once: true });
    });
  }

  /**
   * Registers again because the SuperLink no longer knows `stale` (single flight: callers that
   * saw the same stale registration share one CreateNode).
   */
  reregister(stale: Node, why: string): Promise<Node> {
    if (this.current !== stale && this.current !== undefined) return Promise.resolve(this.current);
    if (this.reregistering) return this.reregistering;
    this.current = undefined;
    const { logger } = this.options;
    logger.warn(
      { event: "supernode.node-unknown", nodeId: stale.nodeId.toString(), reason: why },
      `The SuperLink no longer knows node ${stale.nodeId} (${why}); registering again`,
    );
    const attempt = this.createNode().then((node) => {
      this.set(node);
      if (node.nodeId === stale.nodeId) {
        // Flower 1.10's in-memory SuperLink keeps the key -> id mapping after DeleteNode but not
        // the node, so the same key gets back a dead id (docs/protocol.md, "Flower 1.10 bugs");
        // only a SuperLink restart helps.
        logger.warn(
          { event: "supernode.same-node-id", nodeId: node.nodeId.toString() },
          `The SuperLink gave back the same node id ${node.nodeId}; if pings keep failing, restart the SuperLink`,
        );
      }
      logger.info(
        { event: "supernode.reregistered", nodeId: node.nodeId.toString(), previousNodeId: stale.nodeId.toString() },
        `SuperNode registered again as node ${node.nodeId}`,
      );
      return node;
    });
    this.reregistering = attempt.finally(() => {
      this.reregistering = undefined;
    });
    return this.reregistering;
  }

  /**
   * Runs `fn` with the current registration. An AuthenticationError (UNAUTHENTICATED) means the
   * SuperLink forgot the node: register again and retry once; refused again is fatal.
   */
  async withRegistration<T>(what: string, fn: (node: Node) => Promise<T>): Promise<T> {
    const node = await this.awaitNode();
    try {
      return await fn(node);
    } catch (err) {
      if (!isRefusal(err) || this.options.stopSignal.aborted) throw err;
      const fresh = await this.reregister(node, `${what} was refused`);
      try {
        return await fn(fresh);
      } catch (again) {
        if (!isRefusal(again)) throw again;
        throw new AuthenticationError(
          `The SuperLink at ${this.options.connection.target} refused ${what} even right after registering again: ` +
            ACCESS_DENIED_HINT,
          { cause: again },
        );
      }
    }
  }

  /** DeleteNode, best effort: failures are logged, never thrown. */
  async deleteNode(node: Node, control: CallControl = { signal: this.options.abortSignal }): Promise<void> {
    const { connection, logger } = this.options;
    try {
      await connection.deleteNode(node, control);
      logger.info(
        { event: "supernode.node-deleted", nodeId: node.nodeId.toString() },
        `Node ${node.nodeId} unregistered (DeleteNode)`,
      );
    } catch (err) {
      logger.warn(
        { event: "supernode.delete-node-failed", nodeId: node.nodeId.toString() },
        `DeleteNode for node ${node.nodeId} failed: ${describeFailure(err)}`,
      );
    }
  }
}
