/**
 * The SuperNode as an object: `startSuperNode(config, deps)` registers with the SuperLink
 * (CreateNode, retried), then runs two loops until `close()`:
 *
 * - the ping loop announces liveness (interval 30 s announced, next ping after 17.5-22.5 s,
 *   5 s deadline). A SuperLink that answers `success=false` (or, with authentication,
 *   UNAUTHENTICATED) has forgotten the node — it restarted with in-memory state or deleted the
 *   node — and the SuperNode registers again instead of dying as Flower 1.10 does;
 * - the main loop pulls TaskIns, runs the ClientApp and pushes the reply (spec §6.3-6.4): one
 *   Context per run (its state persists across the run's messages), GetRun once per run, the
 *   `reconnect` control message (re-registering afterwards, which Flower 1.10 forgets).
 *
 * Failures retrying cannot fix (refused key, untrusted certificate, give-up limits reached) end
 * the node: `done` rejects with a typed error. Signals, argv and exit codes belong to
 * src/cli/client-app.ts.
 */
import * as grpc from "@grpc/grpc-js";
import { SuperNodeAuth } from "../auth/client-auth";
import { ClientApp, exceptionReason } from "../client/client-app";
import {
  DEFAULT_SHUTDOWN_GRACE_MS,
  ErrorCode,
  MessageType,
  PING_BASE_MULTIPLIER,
  PING_CALL_TIMEOUT,
  PING_DEFAULT_INTERVAL,
  PING_RANDOM_RANGE,
} from "../core/constants";
import { AuthenticationError, FlwrError, InvalidConfigError, errorMessage } from "../core/errors";
import type { Logger } from "../core/logger";
import { createReply, messageFromTaskIns, messageToTaskRes, scalarMapToRecord } from "../core/records/serde";
import { type ConfigsScalar, type Context, type Message, type Metadata, RecordSet } from "../core/records/types";
import type { Node } from "../proto/flwr/proto/node";
import type { Run } from "../proto/flwr/proto/run";
import type { TaskIns } from "../proto/flwr/proto/task";
import { isServiceError } from "../transport/status";
import { FleetConnection } from "./fleet-connection";
import type { CallControl, FleetTransport } from "./fleet-transport";
import { createNodeRestPoster } from "./node-rest-poster";
import { RestFleetConnection } from "./rest-connection";
import {
  ACCESS_DENIED_HINT,
  DEFAULT_MAX_BACKOFF_MS,
  type RetryPolicy,
  type RetryState,
  RetryInvoker,
  abortableSleep,
  classifyFleetError,
  describeFailure,
} from "./retry";

/** flwr-ts default: after an empty pull that came back at once, wait this long (Flower: 3 s). */
export const DEFAULT_POLL_INTERVAL_MS = 1_000;
/** flwr-ts: deadline of a PullTaskIns, so a silently dead connection cannot hang the node. */
export const PULL_DEADLINE_MS = 60_000;
/** `Reason.RECONNECT` of Flower's DisconnectRes, sent in reply to a reconnect message. */
const REASON_RECONNECT = 1n;
/** Error reason Flower sends when the ClientApp could not be loaded (spec §6.5). */
const LOAD_FAILED_REASON = "An exception was raised when attempting to load `ClientApp`";

export interface SuperNodeAuthFiles {
  /** The SuperNode's OpenSSH (or PEM) EC private key. */
  privateKeyPath: string;
  /** Its public key; must belong to the private key. */
  publicKeyPath: string;
}

export interface SuperNodeConfig {
  /** HOST:PORT of the SuperLink's Fleet API; with `transport: "rest"`, its http(s):// URL. */
  superlink: string;
  /** "grpc-rere" (default) or "rest" (Flower's REST Fleet API; https:// or http:// in `superlink`). */
  transport?: "grpc-rere" | "rest";
  /** CA bundle (PEM) that signed the SuperLink's certificate; default: system roots. */
  rootCertificates?: Buffer;
  /** Plaintext connection (only with --insecure); excludes `rootCertificates` and `auth`. */
  insecure?: boolean;
  /** Node authentication (spec §4). */
  auth?: SuperNodeAuthFiles;
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
  /** Extra grpc-js channel options. */
  channelOptions?: grpc.ChannelOptions;
}

export interface SuperNodeDeps {
  logger: Logger;
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

/** Starts a SuperNode; resolves once it is registered. Rejects with a typed error otherwise. */
export async function startSuperNode(config: SuperNodeConfig, deps: SuperNodeDeps): Promise<SuperNodeHandle> {
  const checked = checkConfig(config);
  const auth = config.auth ? SuperNodeAuth.fromFiles(config.auth.privateKeyPath, config.auth.publicKeyPath) : undefined;
  const connection: FleetTransport =
    config.transport === "rest"
      ? new RestFleetConnection({
          baseUrl: config.superlink,
          poster: createNodeRestPoster(config.rootCertificates !== undefined ? { rootCertificates: config.rootCertificates } : {}),
          ...(auth !== undefined ? { auth } : {}),
          logger: deps.logger,
        })
      : grpcConnection(config, auth, deps.logger);
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

/** The grpc-rere connection, with the channel's reconnect backoff kept in step with ours. */
function grpcConnection(config: SuperNodeConfig, auth: SuperNodeAuth | undefined, logger: Logger): FleetConnection {
  return new FleetConnection({
    superlink: config.superlink,
    ...(config.rootCertificates !== undefined ? { rootCertificates: config.rootCertificates } : {}),
    ...(config.insecure !== undefined ? { insecure: config.insecure } : {}),
    ...(auth !== undefined ? { auth } : {}),
    channelOptions: {
      // grpc-js retries the connection on its own backoff (up to 120 s by default); keep it in
      // step with ours so a SuperLink that comes back is seen within one backoff ceiling.
      "grpc.initial_reconnect_backoff_ms": Math.min(1_000, config.maxBackoffMs ?? DEFAULT_MAX_BACKOFF_MS),
      "grpc.max_reconnect_backoff_ms": config.maxBackoffMs ?? DEFAULT_MAX_BACKOFF_MS,
      ...config.channelOptions,
    },
    logger: logger,
  });
}

interface CheckedConfig {
  pollIntervalMs: number;
  pingInterval: number;
  appSource: (run: { fabId: string; fabVersion: string }) => ClientApp;
}

function checkConfig(config: SuperNodeConfig): CheckedConfig {
  if (config.insecure && config.auth !== undefined) {
    throw new InvalidConfigError(
      "Node authentication requires a secure (TLS) connection: drop --insecure or the --auth-supernode-* keys",
    );
  }
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

/** What GetRun told us about a run. */
interface RunInfo {
  fabId: string;
  fabVersion: string;
  overrideConfig: Record<string, ConfigsScalar>;
}

/**
 * A plaintext HTTP/2 client dialling a TLS server: TCP connects, then the server drops the
 * session, which grpc-js reports as "Failed to connect" (a server that is down is ECONNREFUSED).
 */
function looksLikeTlsOnlyPeer(err: unknown): boolean {
  if (!isServiceError(err) || err.code !== grpc.status.UNAVAILABLE) return false;
  return /Last error: Failed to connect/.test(err.details) && !/ECONNREFUSED/.test(err.details);
}

/** Thrown by a loop that saw the node being stopped; never escapes this module. */
class Stopped extends Error {}

class SuperNode {
  private readonly logger: Logger;
  private readonly random: () => number;
  private readonly retry: RetryInvoker;
  private readonly pingRetry: RetryInvoker;
  /** Aborted on close() or failure: stop taking work (cancels pulls, idle waits, pings). */
  private readonly stopController = new AbortController();
  /** Aborted when the grace time is over: cancels pushes and everything else. */
  private readonly abortController = new AbortController();
  private readonly runs = new Map<bigint, RunInfo>();
  private readonly contexts = new Map<bigint, Context>();
  /**
   * Ids of the TaskIns answered most recently (insertion order, at most ANSWERED_MEMORY). The
   * SuperLink delivers at least once (docs/delivery.md): a TaskIns seen again after its reply
   * went out is not run a second time.
   */
  private readonly answered = new Set<string>();
  private readonly nodeConfig: Record<string, ConfigsScalar>;

  /** The current registration; undefined while (re-)registering or disconnected. */
  private node: Node | undefined;
  /** The id of the latest registration (kept while re-registering). */
  private lastNodeId = 0n;
  /** Loops waiting for a registration. */
  private readonly nodeWaiters = new Set<(node: Node) => void>();
  private reregistering: Promise<Node> | undefined;
  /** Flower sends DeleteNode on exit only when the last call went through. */
  private connected = false;
  /** The error that stopped the node, if any. */
  private failure: unknown;
  private wakePing: (() => void) | undefined;
  /** --insecure: a TLS-only SuperLink then fails every call; hinted at once (see onBackoff). */
  private readonly insecure: boolean;
  private tlsServerHinted = false;
  private loops: Promise<void> | undefined;
  private closing: Promise<void> | undefined;

  constructor(
    config: SuperNodeConfig,
    private readonly checked: CheckedConfig,
    deps: SuperNodeDeps,
    private readonly connection: FleetTransport,
  ) {
    this.logger = deps.logger;
    this.random = deps.random ?? Math.random;
    this.nodeConfig = { ...(config.nodeConfig ?? {}) };
    this.insecure = config.insecure === true;
    const policy: RetryPolicy = {
      ...(config.maxRetries !== undefined ? { maxRetries: config.maxRetries } : {}),
      ...(config.maxWaitTimeMs !== undefined ? { maxWaitTimeMs: config.maxWaitTimeMs } : {}),
      ...(config.maxBackoffMs !== undefined ? { maxBackoffMs: config.maxBackoffMs } : {}),
    };
    const classify = (err: unknown, what: string) =>
      classifyFleetError(err, { what, target: connection.target, authenticated: connection.authenticated });
    this.retry = new RetryInvoker(policy, {
      random: this.random,
      classify,
      onBackoff: (s) => this.onBackoff(s),
      onSuccess: (s) => this.onSuccess(s),
      onGiveUp: (s) =>
        this.logger.warn(
          { event: "supernode.give-up", call: s.what, tries: s.tries },
          `Giving up reconnection after ${(s.elapsedMs / 1000).toFixed(2)} seconds and ${s.tries} tries.`,
        ),
    });
    // The ping loop retries without limit, as Flower's; the main loop's limits end the node.
    this.pingRetry = new RetryInvoker(
      { ...(config.maxBackoffMs !== undefined ? { maxBackoffMs: config.maxBackoffMs } : {}) },
      {
        random: this.random,
        classify,
        onSuccess: (s) => this.onSuccess(s),
        onBackoff: (s) => {
          this.connected = false;
          this.logger.debug(
            { event: "supernode.ping-retry", tries: s.tries, waitMs: Math.round(s.waitMs ?? 0), error: describeFailure(s.error) },
            `Ping failed (${describeFailure(s.error)}), retrying`,
          );
        },
      },
    );
  }

  private get stopping(): boolean {
    return this.stopController.signal.aborted;
  }

  /** The first CreateNode; logs the readiness line. */
  /** Cancels a registration in progress (the retry wait and the call in flight). */
  stopRegistering(): void {
    this.stopController.abort(new Stopped());
  }

  async registerFirst(): Promise<void> {
    const node = await this.createNode();
    this.setNode(node);
    this.logger.info(
      { event: "supernode.ready", nodeId: node.nodeId.toString(), superlink: this.connection.target },
      `SuperNode registered with the SuperLink at ${this.connection.target} as node ${node.nodeId}`,
    );
  }

  start(): SuperNodeHandle {
    this.loops = this.runLoops();
    const done = this.loops;
    done.catch(() => undefined); // the handle's owner gets the rejection; never unhandled here
    const currentNodeId = (): bigint => this.lastNodeId;
    return {
      get nodeId() {
        return currentNodeId();
      },
      done,
      close: (graceMs = DEFAULT_SHUTDOWN_GRACE_MS) => this.close(graceMs),
    };
  }

  private setNode(node: Node): void {
    this.node = node;
    this.lastNodeId = node.nodeId;
    for (const context of this.contexts.values()) context.nodeId = node.nodeId;
    for (const wake of this.nodeWaiters) wake(node);
    this.nodeWaiters.clear();
  }

  private createNode(): Promise<Node> {
    return this.retry.invoke(
      "CreateNode",
      () => this.connection.createNode(this.checked.pingInterval, { signal: this.stopController.signal }),
      { signal: this.stopController.signal },
    );
  }

  private onBackoff(s: RetryState): void {
    this.connected = false;
    const wait = ((s.waitMs ?? 0) / 1000).toFixed(2);
    this.logger.warn(
      { event: "supernode.retry", call: s.what, tries: s.tries, waitMs: Math.round(s.waitMs ?? 0), error: describeFailure(s.error) },
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
      this.wakePing?.();
    }
  }

  /** Waits for a usable registration; rejects with Stopped when the node stops meanwhile. */
  private awaitNode(): Promise<Node> {
    if (this.node !== undefined) return Promise.resolve(this.node);
    const signal = this.stopController.signal;
    if (signal.aborted) return Promise.reject(new Stopped());
    return new Promise((resolve, reject) => {
      const onAbort = (): void => {
        this.nodeWaiters.delete(waiter);
        reject(new Stopped());
      };
      const waiter = (node: Node): void => {
        signal.removeEventListener("abort", onAbort);
        resolve(node);
      };
      this.nodeWaiters.add(waiter);
      signal.addEventListener("abort", onAbort, { once: true });
    });
  }

  /**
   * Registers again because the SuperLink no longer knows `stale` (single flight: callers that
   * saw the same stale registration share one CreateNode).
   */
  private reregister(stale: Node, why: string): Promise<Node> {
    if (this.node !== stale && this.node !== undefined) return Promise.resolve(this.node);
    if (this.reregistering) return this.reregistering;
    this.node = undefined;
    this.logger.warn(
      { event: "supernode.node-unknown", nodeId: stale.nodeId.toString(), reason: why },
      `The SuperLink no longer knows node ${stale.nodeId} (${why}); registering again`,
    );
    const attempt = this.createNode().then((node) => {
      this.setNode(node);
      if (node.nodeId === stale.nodeId) {
        // Flower 1.10's in-memory SuperLink keeps the key -> id mapping after DeleteNode but not the
        // node, so the same key gets back a dead id (spec §2.4); only a SuperLink restart helps.
        this.logger.warn(
          { event: "supernode.same-node-id", nodeId: node.nodeId.toString() },
          `The SuperLink gave back the same node id ${node.nodeId}; if pings keep failing, restart the SuperLink`,
        );
      }
      this.logger.info(
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
  private async withRegistration<T>(what: string, fn: (node: Node) => Promise<T>): Promise<T> {
    const node = await this.awaitNode();
    try {
      return await fn(node);
    } catch (err) {
      if (!isRefusal(err) || this.stopping) throw err;
      const fresh = await this.reregister(node, `${what} was refused`);
      try {
        return await fn(fresh);
      } catch (again) {
        if (!isRefusal(again)) throw again;
        throw new AuthenticationError(
          `The SuperLink at ${this.connection.target} refused ${what} even right after registering again: ` +
            ACCESS_DENIED_HINT,
          { cause: again },
        );
      }
    }
  }

  private async runLoops(): Promise<void> {
    const ping = this.pingLoop().catch((err: unknown) => this.fail(err));
    try {
      await this.mainLoop();
    } catch (err) {
      this.fail(err);
    }
    this.stopController.abort(new Stopped());
    this.wakePing?.();
    await ping;
    // close() still needs the channel for DeleteNode and closes it itself.
    if (this.closing === undefined) this.connection.close();
    if (this.failure !== undefined) throw this.failure;
  }

  /** Records the first fatal error and stops the node (our own cancellations are not failures). */
  private fail(err: unknown): void {
    if (err instanceof Stopped || (this.stopping && isCancellation(err))) return;
    if (this.failure === undefined) this.failure = err;
    this.stopController.abort(new Stopped());
  }

  // ---- ping loop -------------------------------------------------------------------------

  private async pingLoop(): Promise<void> {
    const interval = this.checked.pingInterval;
    const signal = this.stopController.signal;
    while (!this.stopping) {
      let node: Node;
      try {
        node = await this.awaitNode();
      } catch (err) {
        if (err instanceof Stopped) return;
        throw err;
      }
      let known: boolean;
      try {
        known = await this.pingRetry.invoke(
          "Ping",
          () => this.connection.ping(node, interval, { signal, deadlineMs: PING_CALL_TIMEOUT * 1000 }),
          {
            signal,
            // A ping that hit its deadline already waited 5 s (as Flower's heartbeat).
            adjustWaitMs: (waitMs, err) =>
              isServiceError(err) && err.code === grpc.status.DEADLINE_EXCEEDED
                ? Math.max(waitMs - PING_CALL_TIMEOUT * 1000, 0)
                : waitMs,
          },
        );
      } catch (err) {
        if (this.stopping) return;
        if (!isRefusal(err)) throw err;
        known = false;
      }
      if (!known) {
        if (this.node === node) {
          try {
            await this.reregister(node, "Ping was answered with success=false");
          } catch (err) {
            if (err instanceof Stopped || this.stopping) return;
            throw err;
          }
        }
        continue;
      }
      await this.waitUntilNextPing(interval);
    }
  }

  /** Sleeps (interval - 5 s) * (0.8 +- 0.1) as Flower does; wakePing() ends the sleep early. */
  private async waitUntilNextPing(interval: number): Promise<void> {
    const base = Math.max(interval - PING_CALL_TIMEOUT, interval / 2);
    const factor = PING_BASE_MULTIPLIER + (this.random() * 2 - 1) * PING_RANDOM_RANGE;
    const wake = new AbortController();
    this.wakePing = () => wake.abort();
    const stop = (): void => wake.abort();
    this.stopController.signal.addEventListener("abort", stop, { once: true });
    try {
      await abortableSleep(base * factor * 1000, wake.signal);
    } catch {
      // woken early: ping now
    } finally {
      this.stopController.signal.removeEventListener("abort", stop);
      this.wakePing = undefined;
    }
  }

  // ---- main loop -------------------------------------------------------------------------

  private async mainLoop(): Promise<void> {
    const stop = this.stopController.signal;
    while (!this.stopping) {
      const startedAt = performance.now();
      let taskIns: TaskIns | undefined;
      let node: Node;
      try {
        [node, taskIns] = await this.withRegistration("PullTaskIns", async (n) => {
          const response = await this.retry.invoke(
            "PullTaskIns",
            () => this.connection.pullTaskIns(n, { signal: stop, deadlineMs: PULL_DEADLINE_MS, longPollMs: PULL_DEADLINE_MS }),
            { signal: stop },
          );
          return [n, response.taskInsList[0]] as const;
        });
      } catch (err) {
        if (this.stopping) return;
        throw err;
      }
      const task = taskIns?.task;
      if (taskIns === undefined || task === undefined || task.recordset === undefined || task.consumer?.nodeId !== node.nodeId) {
        if (taskIns !== undefined) {
          this.logger.warn(
            { event: "supernode.task-ignored", taskId: taskIns.taskId },
            `Ignoring TaskIns ${taskIns.taskId}: ${task === undefined ? "no task" : task.recordset === undefined ? "no recordset" : `addressed to node ${task.consumer?.nodeId ?? "(none)"}`}`,
          );
        }
        // A Python SuperLink answers an empty pull at once; ours holds it open for new work.
        if (performance.now() - startedAt < this.checked.pollIntervalMs / 2) {
          try {
            await abortableSleep(this.checked.pollIntervalMs, stop);
          } catch {
            return;
          }
        }
        continue;
      }
      if (this.answered.has(taskIns.taskId.toLowerCase())) {
        this.logger.warn(
          { event: "supernode.task-repeated", taskId: taskIns.taskId },
          `TaskIns ${taskIns.taskId} was delivered again after its reply was sent; not running it twice`,
        );
        continue;
      }
      const outcome = await this.handleTaskIns(taskIns);
      if (outcome === "stop") {
        this.stopController.abort(new Stopped());
        return;
      }
    }
  }

  /** Runs one TaskIns through the app and sends the reply. "stop" ends the node (reconnect 0). */
  private async handleTaskIns(taskIns: TaskIns): Promise<"continue" | "stop"> {
    let message: Message;
    try {
      message = messageFromTaskIns(taskIns);
    } catch (err) {
      this.logger.error(
        { event: "supernode.task-malformed", taskId: taskIns.taskId, err },
        `Dropping malformed TaskIns ${taskIns.taskId}: ${errorMessage(err)}`,
      );
      return "continue";
    }
    const meta = message.metadata;
    if (meta.groupId !== "") this.logger.info(`[RUN ${meta.runId}, ROUND ${meta.groupId}]`);
    this.logger.info(
      { event: "supernode.message-received", messageType: meta.messageType, messageId: meta.messageId, runId: meta.runId.toString() },
      `Received: ${meta.messageType} message ${meta.messageId}`,
    );

    if (meta.messageType === MessageType.RECONNECT) return this.handleReconnect(message);

    const run = await this.runInfo(meta.runId);
    const context = this.contextFor(meta.runId, run);
    let reply: Message;
    let app: ClientApp | undefined;
    try {
      app = this.checked.appSource(run);
      if (!ClientApp.isClientApp(app)) throw new TypeError("the app factory did not return a ClientApp");
    } catch (err) {
      this.logger.error({ event: "supernode.app-load-failed", err }, `Loading the ClientApp failed: ${errorMessage(err)}`);
      app = undefined;
    }
    if (app === undefined) {
      reply = createReply(message, { code: ErrorCode.LOAD_CLIENT_APP_EXCEPTION, reason: LOAD_FAILED_REASON });
    } else {
      try {
        reply = await app.handle(message, context, { logger: this.logger });
      } catch (err) {
        // handle() of this package never rejects; an app from another copy might.
        this.logger.error({ err }, "ClientApp raised an exception");
        reply = createReply(message, { code: ErrorCode.CLIENT_APP_RAISED_EXCEPTION, reason: exceptionReason(err) });
      }
    }
    await this.sendReply(meta, reply);
    return "continue";
  }

  /**
   * `reconnect`: reply with reason RECONNECT, unregister, wait `seconds`, register again
   * (Flower 1.10 never calls CreateNode again and stalls); 0 seconds ends the node.
   */
  private async handleReconnect(message: Message): Promise<"continue" | "stop"> {
    const raw = message.content?.configsRecords.get("config")?.["seconds"];
    const seconds = typeof raw === "bigint" || typeof raw === "number" ? Math.max(0, Number(raw)) : 0;
    const content = new RecordSet({ configsRecords: new Map([["config", { reason: REASON_RECONNECT }]]) });
    await this.sendReply(message.metadata, createReply(message, content));
    const node = this.node;
    this.node = undefined;
    if (node !== undefined) await this.deleteNode(node);
    if (seconds === 0) {
      this.logger.info({ event: "supernode.disconnect" }, "Disconnect and shut down");
      return "stop";
    }
    this.logger.info(
      { event: "supernode.reconnect", seconds },
      `Disconnect, then re-establish connection after ${seconds} second(s)`,
    );
    try {
      await abortableSleep(seconds * 1000, this.stopController.signal);
    } catch {
      return "stop";
    }
    const fresh = await this.createNode();
    this.setNode(fresh);
    this.logger.info(
      { event: "supernode.reregistered", nodeId: fresh.nodeId.toString(), previousNodeId: node?.nodeId.toString() },
      `SuperNode registered again as node ${fresh.nodeId}`,
    );
    return "continue";
  }

  /** GetRun on first sight of a run; an unknown run gives empty details, as Flower. */
  private async runInfo(runId: bigint): Promise<RunInfo> {
    const cached = this.runs.get(runId);
    if (cached !== undefined) return cached;
    let info: RunInfo = { fabId: "", fabVersion: "", overrideConfig: {} };
    try {
      const run = await this.withRegistration("GetRun", () =>
        this.retry.invoke("GetRun", () => this.connection.getRun(runId, { signal: this.abortController.signal }), {
          signal: this.abortController.signal,
        }),
      );
      if (run !== undefined) info = { fabId: run.fabId, fabVersion: run.fabVersion, overrideConfig: this.overrideConfigOf(run) };
    } catch (err) {
      // A Python SuperLink with authentication refuses GetRun for a run it does not know.
      if (!FlwrError.isFlwrError(err) || err.code !== "FLWR_AUTHENTICATION_FAILED") throw err;
      this.logger.warn({ event: "supernode.get-run-refused", runId: runId.toString() }, `GetRun for run ${runId} was refused; using empty run details`);
    }
    this.runs.set(runId, info);
    return info;
  }

  private overrideConfigOf(run: Run): Record<string, ConfigsScalar> {
    try {
      return scalarMapToRecord(run.overrideConfig);
    } catch (err) {
      this.logger.warn(
        { event: "supernode.bad-run-config", runId: run.runId.toString() },
        `Ignoring the malformed override config of run ${run.runId}: ${errorMessage(err)}`,
      );
      return {};
    }
  }

  /** One Context per run; its `state` persists across the run's messages. */
  private contextFor(runId: bigint, run: RunInfo): Context {
    let context = this.contexts.get(runId);
    if (context === undefined) {
      context = {
        nodeId: this.node?.nodeId ?? this.lastNodeId,
        nodeConfig: { ...this.nodeConfig },
        state: new RecordSet(),
        runConfig: { ...run.overrideConfig },
      };
      this.contexts.set(runId, context);
    }
    return context;
  }

  /** Checks the reply as Flower does (spec §6.4), then pushes it. */
  private async sendReply(incoming: Metadata, reply: Message): Promise<void> {
    const problem = replyProblem(incoming, reply);
    if (problem !== undefined) {
      if (problem.kind === "clock") this.logger.warn({ event: "supernode.reply-dropped", ...problem.fields }, problem.text);
      else this.logger.error({ event: "supernode.reply-dropped", ...problem.fields }, problem.text);
      return;
    }
    const taskRes = messageToTaskRes(reply);
    const abort = this.abortController.signal;
    let stored: boolean;
    try {
      const response = await this.withRegistration("PushTaskRes", (node) => {
        // After registering again, the result goes out under the new node id.
        if (taskRes.task?.producer !== undefined) taskRes.task.producer = { nodeId: node.nodeId, anonymous: false };
        return this.retry.invoke("PushTaskRes", () => this.connection.pushTaskRes(taskRes, { signal: abort }), { signal: abort });
      });
      stored = !response.results.has("None");
    } catch (err) {
      if (abort.aborted) {
        this.logger.warn({ event: "supernode.reply-abandoned" }, "Shutting down: the reply could not be sent within the grace time");
        return;
      }
      if (FlwrError.isFlwrError(err) && err.code === "FLWR_MALFORMED_MESSAGE") {
        this.remember(incoming.messageId);
        this.logger.error({ event: "supernode.reply-rejected" }, `The SuperLink rejected the reply: ${err.message}`);
        return;
      }
      // A re-push after a lost answer: the SuperLink already holds this result.
      if (isAlreadyStored(err)) {
        this.remember(incoming.messageId);
        this.logger.info({ event: "supernode.reply-already-stored", replyTo: reply.metadata.replyToMessage }, "The SuperLink already had this reply");
        return;
      }
      throw err;
    }
    this.remember(incoming.messageId);
    if (!stored) {
      // The SuperLink answers "None" (status OK, as Flower) for a result it dropped: the message
      // expired, was completed already (a re-push after a lost answer), or is unknown to it.
      this.logger.warn(
        { event: "supernode.reply-not-stored", replyTo: reply.metadata.replyToMessage },
        "The SuperLink did not store the reply (the message expired, already has a reply, or is unknown); carrying on",
      );
      return;
    }
    this.logger.info(
      { event: "supernode.reply-sent", messageType: reply.metadata.messageType, replyTo: reply.metadata.replyToMessage, error: reply.error !== undefined },
      "Sent reply",
    );
  }

  /** Records a TaskIns as answered, forgetting the oldest beyond ANSWERED_MEMORY. */
  private remember(taskInsId: string): void {
    this.answered.add(taskInsId.toLowerCase());
    if (this.answered.size > ANSWERED_MEMORY) this.answered.delete(this.answered.values().next().value!);
  }

  /** DeleteNode, best effort: failures are logged, never thrown. */
  private async deleteNode(node: Node, control: CallControl = { signal: this.abortController.signal }): Promise<void> {
    try {
      await this.connection.deleteNode(node, control);
      this.logger.info({ event: "supernode.node-deleted", nodeId: node.nodeId.toString() }, `Node ${node.nodeId} unregistered (DeleteNode)`);
    } catch (err) {
      this.logger.warn(
        { event: "supernode.delete-node-failed", nodeId: node.nodeId.toString() },
        `DeleteNode for node ${node.nodeId} failed: ${describeFailure(err)}`,
      );
    }
  }

  private close(graceMs: number): Promise<void> {
    this.closing ??= (async () => {
      const grace = Math.max(0, graceMs);
      const started = performance.now();
      // Keep part of the grace for DeleteNode.
      const deleteBudget = Math.min(grace / 2, 2_000);
      this.stopController.abort(new Stopped());
      this.wakePing?.();
      const hardStop = setTimeout(() => this.abortController.abort(new Stopped()), Math.max(0, grace - deleteBudget));
      try {
        await waitAtMost(this.loops ?? Promise.resolve(), grace - deleteBudget);
      } finally {
        clearTimeout(hardStop);
      }
      this.abortController.abort(new Stopped());
      const node = this.node;
      const remaining = grace - (performance.now() - started);
      if (node !== undefined && this.connected && this.failure === undefined && remaining > 0) {
        // The abort signal is already set: DeleteNode is bounded by the deadline instead.
        await this.deleteNode(node, { deadlineMs: remaining });
      }
      this.connection.close();
    })();
    return this.closing;
  }
}

/** Resolves when `promise` settles or `ms` passed, whichever is first; never rejects. */
/** How many answered TaskIns ids a SuperNode remembers (a redelivery comes within a lease). */
const ANSWERED_MEMORY = 1024;

/** ALREADY_EXISTS from PushTaskRes (directly or as the cause of a typed error). */
function isAlreadyStored(err: unknown): boolean {
  const cause = FlwrError.isFlwrError(err) ? (err as Error).cause : err;
  return isServiceError(cause) && cause.code === grpc.status.ALREADY_EXISTS;
}

async function waitAtMost(promise: Promise<unknown>, ms: number): Promise<void> {
  let timer: NodeJS.Timeout | undefined;
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

/** An UNAUTHENTICATED answer to a call other than CreateNode (classified as AuthenticationError). */
function isRefusal(err: unknown): boolean {
  return FlwrError.isFlwrError(err) && err.code === "FLWR_AUTHENTICATION_FAILED" && isServiceError(err.cause);
}

function isCancellation(err: unknown): boolean {
  return err instanceof Stopped || (isServiceError(err) && err.code === grpc.status.CANCELLED);
}

interface ReplyProblem {
  kind: "invalid" | "clock";
  text: string;
  fields: Record<string, unknown>;
}

/**
 * Flower's `validate_out_message` plus the TTL rule the SuperLink's validator applies, each
 * failure explained (Flower drops such replies without saying why).
 */
export function replyProblem(incoming: Metadata, reply: Message): ReplyProblem | undefined {
  const out = reply.metadata;
  const expected: Array<[keyof Metadata, unknown, unknown]> = [
    ["runId", out.runId, incoming.runId],
    ["messageId", out.messageId, ""],
    ["srcNodeId", out.srcNodeId, incoming.dstNodeId],
    ["dstNodeId", out.dstNodeId, incoming.srcNodeId],
    ["replyToMessage", out.replyToMessage, incoming.messageId],
    ["groupId", out.groupId, incoming.groupId],
    ["messageType", out.messageType, incoming.messageType],
  ];
  for (const [field, actual, wanted] of expected) {
    if (actual !== wanted) {
      return {
        kind: "invalid",
        text:
          `Invalid out message: metadata.${field} is ${JSON.stringify(String(actual))}, expected ` +
          `${JSON.stringify(String(wanted))}; build replies with createReply(message, content). Reply dropped.`,
        fields: { field, actual: String(actual), expected: String(wanted) },
      };
    }
  }
  if ((reply.content === undefined) === (reply.error === undefined)) {
    return {
      kind: "invalid",
      text: "Invalid out message: a reply needs exactly one of content and error. Reply dropped.",
      fields: {},
    };
  }
  if (!(out.createdAt > incoming.createdAt)) {
    return {
      kind: "clock",
      text:
        `Reply dropped: its created_at (${out.createdAt}) is not after the message's created_at ` +
        `(${incoming.createdAt}). This node's clock is probably behind the ServerApp's; synchronise the clocks (NTP).`,
      fields: { replyCreatedAt: out.createdAt, messageCreatedAt: incoming.createdAt },
    };
  }
  if (!(out.ttl > 0)) {
    return {
      kind: "clock",
      text:
        `Reply dropped: its TTL is ${out.ttl} s (message created_at ${incoming.createdAt}, ttl ${incoming.ttl} s; ` +
        `reply created_at ${out.createdAt}). The message expired before the reply was ready, or this node's clock ` +
        "is ahead of the ServerApp's by more than the TTL; the SuperLink would reject it.",
      fields: { replyCreatedAt: out.createdAt, messageCreatedAt: incoming.createdAt, ttl: out.ttl, messageTtl: incoming.ttl },
    };
  }
  return undefined;
}
