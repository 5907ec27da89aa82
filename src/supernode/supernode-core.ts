/**
 * The SuperNode loop, platform-neutral (the Node programs and the browser SuperNode share it; no
 * Node or grpc-js import): `startSuperNodeOn(connection, config, deps)` registers with the
 * SuperLink (CreateNode, retried; registration.ts), then runs two loops until `close()`: the ping
 * loop (ping-loop.ts) and the task loop (task-runner.ts), which pulls TaskIns, runs the ClientApp
 * and pushes the checked reply (reply-check.ts). This module wires them together, owns the retry
 * policy and its log lines, and shuts down.
 *
 * Failures retrying cannot fix (refused key, untrusted certificate, give-up limits reached) end
 * the node: `done` rejects with a typed error.
 */
import { ClientApp } from "../client/client-app";
import { DEFAULT_SHUTDOWN_GRACE_MS, PING_DEFAULT_INTERVAL } from "../core/constants";
import { InvalidConfigError } from "../core/errors";
import type { Logger } from "../core/logger";
import type { ConfigsScalar } from "../core/records/types";
import {
  type RetryPolicy,
  type RetryState,
  RetryInvoker,
  classifyFleetError,
  describeFailure,
} from "../transport/retry";
import { GrpcStatus, isCallFailure as isServiceError } from "../transport/call-errors";
import type { FleetTransport } from "./fleet-transport";
import { PingLoop } from "./ping-loop";
import { Registration, Stopped, isCancellation } from "./registration";
import { type AppSource, TaskRunner } from "./task-runner";

/** flwr-ts default: after an empty pull that came back at once, wait this long (Flower: 3 s). */
export const DEFAULT_POLL_INTERVAL_MS = 1_000;

/** What the SuperNode loop needs, whatever carries its calls (supernode.ts opens the Node transports). */
export interface SuperNodeCoreConfig {
  /** The connection is plaintext (--insecure): enables the "it probably serves TLS" hint. */
  insecure?: boolean;
  /**
   * The app to run: a ClientApp, or a factory called for every message with the run's FAB id and
   * version (Flower reloads the app per message; flower-supernode picks it by FAB); a factory that throws or returns something else is answered with error code 1.
   */
  app: ClientApp | ((run: { fabId: string; fabVersion: string }) => ClientApp);
  /** Handed to the ClientApp as `context.nodeConfig` (e.g. `partition-id`). */
  nodeConfig?: Record<string, ConfigsScalar>;
  /** Retries of a failing call before giving up; default unlimited. */
  maxRetries?: number;
  /** Total time a failing call is retried before giving up, in ms; default unlimited. */
  maxWaitTimeMs?: number;
  /** Cap of the retry backoff ceiling, in ms (default 30 s). */
  maxBackoffMs?: number;
  /**
   * After an empty pull that came back faster than half of this (a Python SuperLink answers at
   * once), wait this long before pulling again. Default 1000 ms. Our SuperLink holds empty
   * pulls open, so the node pulls again immediately.
   */
  pollIntervalMs?: number;
  /** Ping interval announced to the SuperLink, in seconds (default 30, as Flower). */
  pingIntervalSeconds?: number;
}

export interface SuperNodeDeps {
  logger: Logger;
  /** The grpc-js extensions in use, named in the ready line; startSuperNode (Node) fills it in. */
  grpcExtensions?: () => readonly string[];
  /** Uniform in [0, 1) for backoff jitter and ping scheduling; default Math.random. */
  random?: () => number;
  /**
   * Aborting it while the node is still registering (e.g. retrying a SuperLink that is not up)
   * makes startSuperNode reject with the abort reason at once. Once started, use close().
   */
  signal?: AbortSignal;
}

export interface SuperNodeHandle {
  /** The node id the SuperLink gave this node (changes if the node had to register again). */
  readonly nodeId: bigint;
  /**
   * Resolves when the node stopped (close(), or a reconnect message with 0 seconds);
   * rejects with a typed error when it had to stop on a failure.
   */
  done: Promise<void>;
  /**
   * Stops taking work, lets a message being handled finish and its reply go out for up to most
   * of `graceMs` (default 5 s), sends DeleteNode (best effort, within the grace time) and closes
   * the channel. Idempotent.
   */
  close(graceMs?: number): Promise<void>;
}

/**
 * Starts the SuperNode loop on a connection (any FleetTransport; it is closed when the node
 * stops); resolves once registered. Rejects with a typed error otherwise, closing the connection.
 */
export async function startSuperNodeOn(
  connection: FleetTransport,
  config: SuperNodeCoreConfig,
  deps: SuperNodeDeps,
): Promise<SuperNodeHandle> {
  let checked: CheckedConfig;
  try {
    checked = checkConfig(config);
  } catch (err) {
    connection.close();
    throw err;
  }
  const { signal } = deps;
  let node: SuperNode | undefined;
  const onAbort = (): void => node?.stopRegistering();
  signal?.addEventListener("abort", onAbort, { once: true });
  try {
    signal?.throwIfAborted();
    node = new SuperNode(config, checked, deps, connection);
    await node.registerFirst();
  } catch (err) {
    connection.close();
    throw signal?.aborted ? signal.reason : err;
  } finally {
    signal?.removeEventListener("abort", onAbort);
  }
  return node.start();
}

interface CheckedConfig {
  pollIntervalMs: number;
  pingInterval: number;
  appSource: AppSource;
}

function checkConfig(config: SuperNodeCoreConfig): CheckedConfig {
  const pollIntervalMs = config.pollIntervalMs ?? DEFAULT_POLL_INTERVAL_MS;
  if (!Number.isFinite(pollIntervalMs) || pollIntervalMs < 0) {
    throw new InvalidConfigError(`Poll interval must be a non-negative number of ms, got ${pollIntervalMs}`);
  }
  const pingInterval = config.pingIntervalSeconds ?? PING_DEFAULT_INTERVAL;
  if (!Number.isFinite(pingInterval) || pingInterval <= 0) {
    throw new InvalidConfigError(`Ping interval must be a positive number of seconds, got ${pingInterval}`);
  }
  const app = config.app;
  let appSource: CheckedConfig["appSource"];
  if (ClientApp.isClientApp(app)) {
    appSource = () => app;
  } else if (typeof app === "function") {
    appSource = app;
  } else {
    throw new InvalidConfigError("SuperNode: `app` must be a ClientApp or a function returning one");
  }
  return { pollIntervalMs, pingInterval, appSource };
}

/**
 * A plaintext HTTP/2 client dialling a TLS server: TCP connects, then the server drops the
 * session, which grpc-js reports as "Failed to connect" (a server that is down is ECONNREFUSED).
 */
function looksLikeTlsOnlyPeer(err: unknown): boolean {
  if (!isServiceError(err) || err.code !== GrpcStatus.UNAVAILABLE) return false;
  return /Last error: Failed to connect/.test(err.details) && !/ECONNREFUSED/.test(err.details);
}

class SuperNode {
  private readonly logger: Logger;
  /** Aborted on close() or failure: stop taking work (cancels pulls, idle waits, pings). */
  private readonly stopController = new AbortController();
  /** Aborted when the grace time is over: cancels pushes and everything else. */
  private readonly abortController = new AbortController();
  private readonly registration: Registration;
  private readonly pingLoop: PingLoop;
  private readonly tasks: TaskRunner;
  /** Flower sends DeleteNode on exit only when the last call went through. */
  private connected = false;
  /** The error that stopped the node, if any. */
  private failure: unknown;
  /** --insecure: a TLS-only SuperLink then fails every call; hinted at once (see onBackoff). */
  private readonly insecure: boolean;
  private tlsServerHinted = false;
  private loops: Promise<void> | undefined;
  private closing: Promise<void> | undefined;

  constructor(
    config: SuperNodeCoreConfig,
    checked: CheckedConfig,
    deps: SuperNodeDeps,
    private readonly connection: FleetTransport,
  ) {
    this.logger = deps.logger;
    const random = deps.random ?? Math.random;
    this.insecure = config.insecure === true;
    const policy: RetryPolicy = {
      ...(config.maxRetries !== undefined ? { maxRetries: config.maxRetries } : {}),
      ...(config.maxWaitTimeMs !== undefined ? { maxWaitTimeMs: config.maxWaitTimeMs } : {}),
      ...(config.maxBackoffMs !== undefined ? { maxBackoffMs: config.maxBackoffMs } : {}),
    };
    const classify = (err: unknown, what: string) =>
      classifyFleetError(err, { what, target: connection.target, authenticated: connection.authenticated });
    const retry = new RetryInvoker(policy, {
      random,
      classify,
      onBackoff: (s) => {
        this.onBackoff(s);
      },
      onSuccess: (s) => {
        this.onSuccess(s);
      },
      onGiveUp: (s) => {
        this.logger.warn(
          { event: "supernode.give-up", call: s.what, tries: s.tries },
          `Giving up reconnection after ${(s.elapsedMs / 1000).toFixed(2)} seconds and ${s.tries} tries.`,
        );
      },
    });
    // The ping loop retries without limit, as Flower's; the task loop's limits end the node.
    const pingRetry = new RetryInvoker(
      { ...(config.maxBackoffMs !== undefined ? { maxBackoffMs: config.maxBackoffMs } : {}) },
      {
        random,
        classify,
        onSuccess: (s) => {
          this.onSuccess(s);
        },
        onBackoff: (s) => {
          this.connected = false;
          this.logger.debug(
            {
              event: "supernode.ping-retry",
              tries: s.tries,
              waitMs: Math.round(s.waitMs ?? 0),
              error: describeFailure(s.error),
            },
            `Ping failed (${describeFailure(s.error)}), retrying`,
          );
        },
      },
    );
    const stopSignal = this.stopController.signal;
    const abortSignal = this.abortController.signal;
    this.registration = new Registration({
      connection,
      retry,
      pingInterval: checked.pingInterval,
      stopSignal,
      abortSignal,
      logger: this.logger,
      onRegistered: (node) => {
        this.tasks.updateNodeId(node.nodeId);
      },
      ...(deps.grpcExtensions !== undefined ? { grpcExtensions: deps.grpcExtensions } : {}),
    });
    this.pingLoop = new PingLoop({
      connection,
      registration: this.registration,
      retry: pingRetry,
      intervalSeconds: checked.pingInterval,
      random,
      stopSignal,
    });
    this.tasks = new TaskRunner({
      connection,
      registration: this.registration,
      retry,
      appSource: checked.appSource,
      pollIntervalMs: checked.pollIntervalMs,
      nodeConfig: { ...(config.nodeConfig ?? {}) },
      stopSignal,
      abortSignal,
      requestStop: () => {
        this.stopController.abort(new Stopped());
      },
      logger: this.logger,
    });
  }

  /** Cancels a registration in progress (the retry wait and the call in flight). */
  stopRegistering(): void {
    this.stopController.abort(new Stopped());
  }

  registerFirst(): Promise<void> {
    return this.registration.registerFirst();
  }

  start(): SuperNodeHandle {
    this.loops = this.runLoops();
    const done = this.loops;
    done.catch(() => undefined); // the handle's owner gets the rejection; never unhandled here
    const registration = this.registration;
    return {
      get nodeId() {
        return registration.lastNodeId;
      },
      done,
      close: (graceMs = DEFAULT_SHUTDOWN_GRACE_MS) => this.close(graceMs),
    };
  }

  private onBackoff(s: RetryState): void {
    this.connected = false;
    const wait = ((s.waitMs ?? 0) / 1000).toFixed(2);
    this.logger.warn(
      {
        event: "supernode.retry",
        call: s.what,
        tries: s.tries,
        waitMs: Math.round(s.waitMs ?? 0),
        error: describeFailure(s.error),
      },
      s.tries === 1
        ? `Connection attempt failed (${s.what}: ${describeFailure(s.error)}), retrying in ${wait} seconds...`
        : `Connection attempt failed, retrying in ${wait} seconds`,
    );
    if (this.insecure && !this.tlsServerHinted && s.tries >= 2 && looksLikeTlsOnlyPeer(s.error)) {
      this.tlsServerHinted = true;
      this.logger.warn(
        { event: "supernode.tls-hint", call: s.what, tries: s.tries },
        `The SuperLink at ${this.connection.target} accepts connections but no plaintext gRPC session starts: it probably ` +
          "serves TLS. Drop --insecure and pass --root-certificates with the SuperLink's CA certificate. " +
          "Still retrying (the SuperLink may also be starting up or behind a proxy).",
      );
    }
  }

  private onSuccess(s: RetryState): void {
    this.connected = true;
    if (s.tries > 1) {
      this.logger.info(
        { event: "supernode.reconnected", call: s.what, tries: s.tries },
        `Connection successful after ${(s.elapsedMs / 1000).toFixed(2)} seconds and ${s.tries} tries.`,
      );
      // The SuperLink may have restarted meanwhile: check the registration now, not in 20 s.
      this.pingLoop.wake();
    }
  }

  private async runLoops(): Promise<void> {
    const ping = this.pingLoop.run().catch((err: unknown) => {
      this.fail(err);
    });
    try {
      await this.tasks.run();
    } catch (err) {
      this.fail(err);
    }
    this.stopController.abort(new Stopped());
    this.pingLoop.wake();
    await ping;
    // close() still needs the channel for DeleteNode and closes it itself.
    if (this.closing === undefined) this.connection.close();
    // The failure is what a loop threw: a typed error, or the transport's rejection as it came.
    // eslint-disable-next-line @typescript-eslint/only-throw-error
    if (this.failure !== undefined) throw this.failure;
  }

  /** Records the first fatal error and stops the node (our own cancellations are not failures). */
  private fail(err: unknown): void {
    if (err instanceof Stopped || (this.stopController.signal.aborted && isCancellation(err))) return;
    if (this.failure === undefined) this.failure = err;
    this.stopController.abort(new Stopped());
  }

  private close(graceMs: number): Promise<void> {
    this.closing ??= (async () => {
      const grace = Math.max(0, graceMs);
      const started = performance.now();
      // Keep part of the grace for DeleteNode.
      const deleteBudget = Math.min(grace / 2, 2_000);
      this.stopController.abort(new Stopped());
      this.pingLoop.wake();
      const hardStop = setTimeout(
        () => {
          this.abortController.abort(new Stopped());
        },
        Math.max(0, grace - deleteBudget),
      );
      try {
        await waitAtMost(this.loops ?? Promise.resolve(), grace - deleteBudget);
      } finally {
        clearTimeout(hardStop);
      }
      this.abortController.abort(new Stopped());
      const node = this.registration.node;
      const remaining = grace - (performance.now() - started);
      if (node !== undefined && this.connected && this.failure === undefined && remaining > 0) {
        // The abort signal is already set: DeleteNode is bounded by the deadline instead.
        await this.registration.deleteNode(node, { deadlineMs: remaining });
      }
      this.connection.close();
    })();
    return this.closing;
  }
}

/** Resolves when `promise` settles or `ms` passed, whichever is first; never rejects. */
async function waitAtMost(promise: Promise<unknown>, ms: number): Promise<void> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  await Promise.race([
    promise.then(
      () => undefined,
      () => undefined,
    ),
    new Promise<void>((resolve) => {
      timer = setTimeout(resolve, Math.max(0, ms));
    }),
  ]);
  clearTimeout(timer);
}
