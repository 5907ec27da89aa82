/**
 * The Driver over the SuperLink's Driver API (Flower's `GrpcDriver`, docs/protocol.md, "Driver"), on one
 * grpc-js channel with Flower's 512 MiB limits and no interceptors.
 *
 * Differences from Flower 1.10, on purpose:
 *  - TLS follows the given credentials (Flower silently used plaintext without a CA file);
 *  - connecting waits up to `connectTimeoutMs` for the SuperLink to accept connections, so a
 *    ServerApp started right after its SuperLink works;
 *  - after that, a call that fails transiently (UNAVAILABLE: a SuperLink restarting on its
 *    database) is retried with capped, jittered backoff for up to
 *    `retryDeadlineMs`, keeping the task ids already held, so a run rides out a restart
 *    (docs/delivery.md). A PushTaskIns whose answer was lost is sent again: the first copy may
 *    then be stored as well, but results are matched by the ids the Driver holds, so that copy's
 *    result is never taken for the instruction's;
 *  - a second result for a message already answered is dropped (logged), so a strategy sees at
 *    most one result per message even from a SuperLink that delivers at least once;
 *  - waiting for replies re-pulls at once when the SuperLink held the pull open (a flwr-ts
 *    SuperLink long-polls), and sleeps `pollIntervalMs` only after a fast empty answer (a
 *    Python SuperLink), instead of always sleeping 3 s;
 *  - pushes go out one PushTaskIns at a time, each with at most PUSH_BATCH_BYTES of payload
 *    (or one message), so the first SuperNode gets its message while later ones are still on
 *    the wire, and many large messages never exceed the 512 MiB request limit together (if one
 *    request fails, the call rejects and the messages of the requests before it stay stored);
 *  - TaskIns with a large RecordSet go through the flwr-ts extension PushSharedTaskIns when the
 *    SuperLink has it: the same content (a broadcast) is uploaded once and later TaskIns refer to
 *    the digest the SuperLink answered (docs/protocol.md, "Shared content"); a SuperLink without
 *    it (Flower 1.10: UNIMPLEMENTED) gets plain PushTaskIns on this channel from then on;
 *  - a malformed TaskRes is logged and, when it names the message it answers, turned into an
 *    error reply for that message (so nothing waits for it forever); it never crashes the run.
 */
import * as grpc from "@grpc/grpc-js";
import { parseAddress } from "../core/address";
import { ConnectionError, FlwrError, MalformedMessageError, NotFoundError } from "../core/errors";
import { type Logger, silentLogger } from "../core/logger";
import { scalarMapToRecord } from "../core/records/serde";
import type { Message, RecordSet } from "../core/records/types";
import { InvalidConfigError } from "../core/errors";
import {
  type DriverClient,
  DriverService,
  type PullTaskResRequest,
  type PullTaskResResponse,
} from "../proto/flwr/proto/driver";
import type { TaskIns, TaskRes } from "../proto/flwr/proto/task";
import { createClient, unaryCall } from "../transport/channel";
import { type Classification, RetryInvoker, describeFailure } from "../transport/retry";
import { DRIVER_TASK_MESSAGES, withChunkedSerializers } from "../transport/chunked-serializers";
import { gatherRequestSerializer } from "../transport/grpc-zero-copy";
import { encodeMessageChunks } from "../core/wire/chunked-writer";
import { taskPayloadBytes } from "../core/wire/payload-bytes";
import { type PushSharedTaskInsResponse, SharedContentDriverService } from "../proto/flwr_ts/proto/shared_content";
import {
  AcknowledgedContents,
  type PushPart,
  SHARED_PUSH_REQUEST_ENCODER,
  type SharedPushRequest,
  planPush,
  sharedRequest,
} from "./shared-push";
import { fromServiceError, isServiceError, tlsSetupError, withoutResolutionNote } from "../transport/status";
import { type ClientCertificate, channelCredentials, checkClientCertificate } from "../transport/tls";
import { clientCertificateRefusal } from "../transport/client-certificate-refusal";
import {
  type Driver,
  type RunInfo,
  type SendAndReceiveOptions,
  buildDriverMessage,
  replyFromTaskRes,
  taskInsForPush,
} from "../server/driver";

/** Default sleep after a fast empty pull (a SuperLink that does not long-poll). */
const DEFAULT_POLL_INTERVAL_MS = 500;
/** An empty pull that returns faster than this was not held open by the SuperLink. */
const FAST_PULL_MS = 100;
/** Default bound on waiting for the SuperLink to accept the first call. */
const DEFAULT_CONNECT_TIMEOUT_MS = 10_000;
const CONNECT_RETRY_MS = 250;
/** Default bound on retrying one call through a SuperLink outage (`--retry-deadline`). */
export const DEFAULT_RETRY_DEADLINE_MS = 120_000;
/** Backoff while the SuperLink is away: restarts take about a second, so start small. */
const RETRY_BASE_DELAY_MS = 100;
const RETRY_MAX_BACKOFF_MS = 2_000;
/** A push is split into PushTaskIns requests of at most this much payload (or one message). */
export const PUSH_BATCH_BYTES = 16 * 1024 * 1024;

export interface GrpcDriverConfig {
  /** Driver API address, HOST:PORT. */
  superlink: string;
  /** CA bundle (PEM) to verify the SuperLink; with neither this nor `insecure`, system roots. */
  rootCertificates?: Buffer;
  /** Plaintext. Conflicts with rootCertificates. */
  insecure?: boolean;
  /** Presented to a Driver API that requires client certificates (mutual TLS). */
  clientCertificate?: ClientCertificate;
  /** Sent to CreateRun; default "". */
  fabId?: string;
  fabVersion?: string;
  /** Use this existing run instead of creating one. */
  runId?: bigint;
  /** Sleep after a fast empty pull. Default 500 ms. */
  pollIntervalMs?: number;
  /** How long connecting may wait for the SuperLink. Default 10 s. */
  connectTimeoutMs?: number;
  /**
   * How long one call may keep retrying transient failures (SuperLink restarting) before the
   * run fails with ConnectionError. Default 120 s; 0 = no retries.
   */
  retryDeadlineMs?: number;
  /** Extra grpc-js channel options (e.g. `grpc.ssl_target_name_override` in tests). */
  channelOptions?: Partial<grpc.ChannelOptions>;
}

function sleep(ms: number, signal?: AbortSignal): Promise<void> {
  return new Promise<void>((resolve, reject) => {
    if (signal?.aborted) {
      reject(signal.reason);
      return;
    }
    const onAbort = (): void => {
      clearTimeout(timer);
      reject(signal!.reason);
    };
    const timer = setTimeout(() => {
      signal?.removeEventListener("abort", onAbort);
      resolve();
    }, ms);
    signal?.addEventListener("abort", onAbort, { once: true });
  });
}

// PushTaskIns may carry large records: written as chunks, the payload not copied (same bytes).
const FAST_DRIVER_CLIENT = grpc.makeGenericClientConstructor(
  withChunkedSerializers(DriverService, DRIVER_TASK_MESSAGES),
  "flwr.proto.Driver",
) as unknown as typeof DriverClient;

// PushSharedTaskIns writes each content's RecordSet in place as chunks (no copy of the payload).
const SHARED_CONTENT_CLIENT = grpc.makeGenericClientConstructor(
  {
    pushSharedTaskIns: {
      ...SharedContentDriverService.pushSharedTaskIns,
      requestSerialize: gatherRequestSerializer((value) =>
        encodeMessageChunks(SHARED_PUSH_REQUEST_ENCODER, value as SharedPushRequest),
      ),
    },
  },
  "flwr_ts.proto.SharedContentDriver",
);

interface SharedContentClient extends grpc.Client {
  pushSharedTaskIns(
    request: SharedPushRequest,
    metadata: grpc.Metadata,
    options: Partial<grpc.CallOptions>,
    callback: (err: grpc.ServiceError | null, response: PushSharedTaskInsResponse) => void,
  ): grpc.ClientUnaryCall;
}

export class GrpcDriver implements Driver {
  readonly runId: bigint;
  /** True when connect() created the run (CreateRun), false for an existing `runId`. */
  readonly runCreated: boolean;
  private readonly client: DriverClient;
  private readonly runInfo: RunInfo;
  private readonly target: string;
  private readonly pollIntervalMs: number;
  private readonly logger: Logger;
  private closed = false;
  private readonly retry: RetryInvoker;
  private readonly retryDeadlineMs: number;
  /** Messages (task ids) whose reply was handed out: a second reply to one is dropped. */
  private readonly answered = new Set<string>();
  /** Settles when the PushTaskIns requests queued so far have been answered. */
  private pushQueue: Promise<unknown> = Promise.resolve();
  /** PushSharedTaskIns on the same channel as `client`. */
  private readonly sharedClient: SharedContentClient;
  /** Whether the SuperLink has PushSharedTaskIns: undefined until the first shared push asks. */
  private sharedSupported: boolean | undefined;
  private readonly acknowledged = new AcknowledgedContents();

  private constructor(
    client: DriverClient,
    runInfo: RunInfo,
    runCreated: boolean,
    target: string,
    pollIntervalMs: number,
    logger: Logger,
    retryDeadlineMs: number,
  ) {
    this.client = client;
    this.runInfo = runInfo;
    this.runId = runInfo.runId;
    this.runCreated = runCreated;
    this.target = target;
    this.pollIntervalMs = pollIntervalMs;
    this.logger = logger;
    this.retryDeadlineMs = retryDeadlineMs;
    this.sharedClient = new SHARED_CONTENT_CLIENT(target, grpc.credentials.createInsecure(), {
      channelOverride: client.getChannel(),
    }) as unknown as SharedContentClient;
    this.retry = new RetryInvoker(
      {
        maxWaitTimeMs: retryDeadlineMs,
        baseDelayMs: RETRY_BASE_DELAY_MS,
        maxBackoffMs: RETRY_MAX_BACKOFF_MS,
        ...(retryDeadlineMs === 0 ? { maxRetries: 0 } : {}),
      },
      {
        classify: (err) => classifyDriverError(err, target),
        onBackoff: (state) =>
          logger.warn(
            { event: "serverapp.retry", call: state.what, tries: state.tries, waitMs: Math.round(state.waitMs ?? 0) },
            `${state.what} failed (${describeFailure(state.error)}); retrying in ${Math.round(state.waitMs ?? 0)} ms`,
          ),
        onGiveUp: (state) => {
          throw new GaveUp(state.error);
        },
        onSuccess: (state) => {
          if (state.tries > 1) {
            logger.info(
              {
                event: "serverapp.reconnected",
                call: state.what,
                tries: state.tries,
                elapsedMs: Math.round(state.elapsedMs),
              },
              `${state.what} succeeded after ${state.tries} tries (${(state.elapsedMs / 1000).toFixed(2)} s)`,
            );
          }
        },
      },
    );
  }

  /**
   * Opens the channel, creates a run (CreateRun with the fab id/version, unless `runId` is
   * given) and fetches it (GetRun). Rejects with InvalidConfigError (bad address, conflicting
   * credentials), ConnectionError (SuperLink unreachable within connectTimeoutMs, or a failed
   * call) or NotFoundError (the SuperLink does not know the run). Nothing stays open on failure.
   */
  static async connect(config: GrpcDriverConfig, deps: { logger?: Logger } = {}): Promise<GrpcDriver> {
    const logger = deps.logger ?? silentLogger();
    parseAddress(config.superlink);
    const pollIntervalMs = config.pollIntervalMs ?? DEFAULT_POLL_INTERVAL_MS;
    const connectTimeoutMs = config.connectTimeoutMs ?? DEFAULT_CONNECT_TIMEOUT_MS;
    if (config.clientCertificate !== undefined) checkClientCertificate(config.clientCertificate);
    const clientCertificate =
      config.clientCertificate !== undefined ? { clientCertificate: config.clientCertificate } : {};
    const credentials = channelCredentials({
      ...(config.rootCertificates !== undefined ? { rootCertificates: config.rootCertificates } : {}),
      ...(config.insecure ? { insecure: true } : {}),
      ...clientCertificate,
    });
    const client = createClient(FAST_DRIVER_CLIENT, config.superlink, credentials, config.channelOptions ?? {});
    const target = config.superlink;
    try {
      const started = Date.now();
      let runId = config.runId;
      const created = runId === undefined;
      if (runId === undefined) {
        const request = { fabId: config.fabId ?? "", fabVersion: config.fabVersion ?? "", overrideConfig: new Map() };
        const response = await callWhileConnecting(() => unaryCall(client.createRun.bind(client), request), {
          target,
          what: "CreateRun",
          started,
          connectTimeoutMs,
          ...clientCertificate,
        });
        runId = response.response.runId;
        logger.debug({ runId: runId.toString() }, `CreateRun: run ${runId} created`);
      }
      const getRun = await callWhileConnecting(() => unaryCall(client.getRun.bind(client), { runId: runId }), {
        target,
        what: "GetRun",
        started,
        connectTimeoutMs,
        ...clientCertificate,
      });
      const run = getRun.response.run;
      if (run === undefined)
        throw new NotFoundError(`Cannot find the run with ID: ${runId} (the SuperLink does not know it)`);
      const runInfo: RunInfo = {
        runId: run.runId,
        fabId: run.fabId,
        fabVersion: run.fabVersion,
        overrideConfig: scalarMapToRecord(run.overrideConfig),
      };
      const retryDeadlineMs = config.retryDeadlineMs ?? DEFAULT_RETRY_DEADLINE_MS;
      return new GrpcDriver(client, runInfo, created, target, pollIntervalMs, logger, retryDeadlineMs);
    } catch (err) {
      client.close();
      throw err;
    }
  }

  async run(): Promise<RunInfo> {
    return { ...this.runInfo, overrideConfig: { ...this.runInfo.overrideConfig } };
  }

  async getNodeIds(): Promise<bigint[]> {
    const { response } = await this.call("GetNodes", () =>
      unaryCall(this.client.getNodes.bind(this.client), { runId: this.runId }),
    );
    return response.nodes.map((n) => n.nodeId);
  }

  createMessage(content: RecordSet, messageType: string, dstNodeId: bigint, groupId: string, ttl?: number): Message {
    return buildDriverMessage(this.runId, content, messageType, dstNodeId, groupId, ttl);
  }

  async pushMessages(msgs: Message[]): Promise<string[]> {
    if (msgs.length === 0) return [];
    const taskInsList = taskInsForPush(this.runId, msgs);
    // All batches are queued now, so a concurrent call's pushes go after this call's, and a
    // batch is sent only if the one before it succeeded.
    let previous: Promise<unknown> = Promise.resolve();
    const parts = planPush(taskInsList, PUSH_BATCH_BYTES).map((planned) => {
      const part = this.pushInTurn(planned, previous);
      previous = part;
      return part;
    });
    const taskIds = (await Promise.all(parts)).flat();
    taskIds.forEach((id, i) => {
      if (id === "") {
        this.logger.warn(
          { event: "serverapp.message-not-stored", nodeId: msgs[i]!.metadata.dstNodeId.toString() },
          `The SuperLink did not store the message to node ${msgs[i]!.metadata.dstNodeId}`,
        );
      }
    });
    return taskIds;
  }

  /**
   * One PushTaskIns, sent once every push queued before it was answered and `after` succeeded
   * (rejects with its error otherwise). Concurrent pushes share one HTTP/2 connection, and
   * interleaved they would all arrive only at the very end.
   */
  private pushInTurn(part: PushPart, after: Promise<unknown>): Promise<string[]> {
    const push = this.pushQueue.then(async () => {
      await after;
      if (part.kind === "shared" && (await this.hasSharedContent())) return this.pushShared(part);
      // Plain (or no extension): PUSH_BATCH_BYTES per request, one after the other.
      const taskIds: string[] = [];
      for (const batch of batchesByPayload(part.taskInsList, PUSH_BATCH_BYTES)) {
        taskIds.push(...(await this.pushPlain(batch)));
      }
      return taskIds;
    });
    this.pushQueue = push.catch(() => undefined);
    return push;
  }

  private async pushPlain(taskInsList: TaskIns[]): Promise<string[]> {
    const { response } = await this.call("PushTaskIns", () =>
      unaryCall(this.client.pushTaskIns.bind(this.client), { taskInsList }),
    );
    if (response.taskIds.length !== taskInsList.length) {
      throw new MalformedMessageError(
        `The SuperLink answered PushTaskIns with ${response.taskIds.length} task ids for ${taskInsList.length} messages`,
      );
    }
    return response.taskIds;
  }

  /**
   * One PushSharedTaskIns: new contents uploaded once, acknowledged ones by digest. If the
   * SuperLink no longer holds an acknowledged one (FAILED_PRECONDITION, FLWR_UNKNOWN_CONTENT: its
   * TaskIns were all done), they are forgotten and the request is sent again with the contents.
   */
  private async pushShared(part: Extract<PushPart, { kind: "shared" }>): Promise<string[]> {
    for (let attempt = 1; ; attempt++) {
      const { request, uploaded } = sharedRequest(part, attempt === 1 ? this.acknowledged : undefined);
      let response: PushSharedTaskInsResponse;
      try {
        ({ response } = await this.retry.invoke("PushSharedTaskIns", () =>
          unaryCall(this.sharedClient.pushSharedTaskIns.bind(this.sharedClient), request),
        ));
      } catch (err) {
        const cause = err instanceof GaveUp ? err.cause : err;
        if (attempt === 1 && isServiceError(cause) && cause.code === grpc.status.FAILED_PRECONDITION) {
          this.logger.debug(
            { event: "serverapp.shared-content-unknown" },
            `The SuperLink no longer holds shared content; sending it again (${withoutResolutionNote(cause.details)})`,
          );
          this.acknowledged.clear();
          continue;
        }
        throw this.failure(err, "PushSharedTaskIns");
      }
      if (response.taskIds.length !== part.taskInsList.length || response.contentDigests.length !== uploaded.length) {
        throw new MalformedMessageError(
          `The SuperLink answered PushSharedTaskIns with ${response.taskIds.length} task ids and ` +
            `${response.contentDigests.length} digests for ${part.taskInsList.length} messages and ${uploaded.length} contents`,
        );
      }
      uploaded.forEach((content, i) => this.acknowledged.remember(content, Buffer.from(response.contentDigests[i]!)));
      return response.taskIds;
    }
  }

  /**
   * Asks the SuperLink once per channel whether it has PushSharedTaskIns, with an empty request
   * (answered empty by flwr-ts, UNIMPLEMENTED by Flower 1.10), so no payload is sent in vain.
   */
  private async hasSharedContent(): Promise<boolean> {
    if (this.sharedSupported !== undefined) return this.sharedSupported;
    try {
      await this.retry.invoke("PushSharedTaskIns", () =>
        unaryCall(this.sharedClient.pushSharedTaskIns.bind(this.sharedClient), { contents: [], taskInsList: [] }),
      );
      this.sharedSupported = true;
      this.logger.debug(
        { event: "serverapp.shared-content", supported: true },
        "The SuperLink has PushSharedTaskIns: broadcasts are uploaded once",
      );
    } catch (err) {
      const cause = err instanceof GaveUp ? err.cause : err;
      if (!(isServiceError(cause) && cause.code === grpc.status.UNIMPLEMENTED))
        throw this.failure(err, "PushSharedTaskIns");
      this.sharedSupported = false;
      this.logger.info(
        { event: "serverapp.shared-content", supported: false },
        "The SuperLink does not implement PushSharedTaskIns (a Flower SuperLink): every message is uploaded in full",
      );
    }
    return this.sharedSupported;
  }

  async pullMessages(ids: string[]): Promise<Message[]> {
    return this.pullOnce(ids, {});
  }

  async sendAndReceive(msgs: Message[], opts: SendAndReceiveOptions = {}): Promise<Message[]> {
    const { signal } = opts;
    signal?.throwIfAborted();
    const pending = new Set((await this.pushMessages(msgs)).filter((id) => id !== ""));
    const deadline = opts.timeoutMs === undefined ? undefined : Date.now() + opts.timeoutMs;
    const replies: Message[] = [];
    while (pending.size > 0) {
      const remaining = deadline === undefined ? undefined : deadline - Date.now();
      if (remaining !== undefined && remaining <= 0) break;
      const started = Date.now();
      const got = await this.pullOnce([...pending], {
        ...(remaining !== undefined ? { timeoutMs: remaining } : {}),
        ...(signal ? { signal } : {}),
      });
      for (const m of got) {
        pending.delete(m.metadata.replyToMessage);
        replies.push(m);
      }
      if (pending.size === 0) break;
      if (got.length === 0 && Date.now() - started < FAST_PULL_MS) {
        const left =
          deadline === undefined ? this.pollIntervalMs : Math.min(this.pollIntervalMs, deadline - Date.now());
        if (left > 0) await sleep(left, signal);
      }
    }
    return replies;
  }

  close(): void {
    if (this.closed) return;
    this.closed = true;
    this.acknowledged.clear();
    this.client.close();
  }

  /**
   * One PullTaskRes (retried through a SuperLink outage). With `timeoutMs`, the call's deadline
   * is set so a long-polling SuperLink answers in time; a deadline that still passes counts as
   * "nothing yet". Aborting cancels the call (a cancelled pull takes nothing from the
   * SuperLink) and rejects. Replies to messages already answered are dropped.
   */
  private async pullOnce(ids: string[], opts: { timeoutMs?: number; signal?: AbortSignal }): Promise<Message[]> {
    if (ids.length === 0) return [];
    const { signal } = opts;
    signal?.throwIfAborted();
    const deadline = opts.timeoutMs === undefined ? undefined : Date.now() + Math.max(opts.timeoutMs, 1);
    const taskResList = await this.retry
      .invoke(
        "PullTaskRes",
        async () => {
          if (deadline !== undefined && Date.now() >= deadline) return [];
          return this.pullAttempt(ids, deadline, signal);
        },
        signal ? { signal } : {},
      )
      .catch((err: unknown) => {
        signal?.throwIfAborted();
        throw this.failure(err, "PullTaskRes");
      });
    const messages: Message[] = [];
    for (const taskRes of taskResList) {
      const message = replyFromTaskRes(taskRes, this.logger, "serverapp.malformed-reply");
      if (message === undefined) continue;
      const replyTo = message.metadata.replyToMessage.toLowerCase();
      if (this.answered.has(replyTo)) {
        this.logger.warn(
          {
            event: "serverapp.duplicate-reply",
            replyTo,
            taskId: message.metadata.messageId,
            nodeId: message.metadata.srcNodeId.toString(),
          },
          `Dropping a second reply to message ${replyTo} from node ${message.metadata.srcNodeId}`,
        );
        continue;
      }
      this.answered.add(replyTo);
      messages.push(message);
    }
    return messages;
  }

  /** One PullTaskRes call; a passed `deadline` answers "nothing yet". */
  private async pullAttempt(ids: string[], deadline: number | undefined, signal?: AbortSignal): Promise<TaskRes[]> {
    let call: grpc.ClientUnaryCall | undefined;
    const onAbort = (): void => call?.cancel();
    signal?.addEventListener("abort", onAbort, { once: true });
    try {
      const callOptions: Partial<grpc.CallOptions> = deadline !== undefined ? { deadline } : {};
      const { response } = await unaryCall<PullTaskResRequest, PullTaskResResponse>(
        (req, md, options, cb) => {
          call = this.client.pullTaskRes(req, md, options, cb);
          return call;
        },
        { node: { nodeId: 0n, anonymous: true }, taskIds: ids },
        new grpc.Metadata(),
        callOptions,
      );
      // grpc-js keeps the response referenced until the HTTP/2 stream is torn down, a turn of the
      // event loop or more after the answer: emptied here, it no longer holds the results (whole
      // received messages of up to 100 MB) past their consumers, who may have written them out.
      const taskResList = response.taskResList;
      response.taskResList = [];
      return taskResList;
    } catch (err) {
      if (isServiceError(err) && err.code === grpc.status.DEADLINE_EXCEEDED && deadline !== undefined) return [];
      throw err;
    } finally {
      signal?.removeEventListener("abort", onAbort);
    }
  }

  /** `invoke`, retried through transient failures; fails with a typed error naming `what`. */
  private async call<T>(what: string, invoke: () => Promise<T>): Promise<T> {
    try {
      return await this.retry.invoke(what, invoke);
    } catch (err) {
      throw this.failure(err, what);
    }
  }

  /** A typed error for a call that failed for good (classified fatal, or retries spent). */
  private failure(err: unknown, what: string): Error {
    if (err instanceof GaveUp) {
      const typed = this.callError(err.cause, what);
      if (this.retryDeadlineMs > 0) {
        typed.message += `; gave up after retrying for ${this.retryDeadlineMs / 1000} s (--retry-deadline)`;
      }
      return typed;
    }
    if (FlwrError.isFlwrError(err)) return withoutNote(err);
    return this.callError(err, what);
  }

  private callError(err: unknown, what: string): Error {
    return withoutNote(fromServiceError(err, `${what} to the SuperLink Driver API at ${this.target}`));
  }
}

/** Consecutive runs of `list` with at most `maxBytes` of payload each (a larger item alone). */
function batchesByPayload(list: TaskIns[], maxBytes: number): TaskIns[][] {
  const batches: TaskIns[][] = [];
  let current: TaskIns[] = [];
  let bytes = 0;
  for (const taskIns of list) {
    const size = taskPayloadBytes(taskIns);
    if (current.length > 0 && bytes + size > maxBytes) {
      batches.push(current);
      current = [];
      bytes = 0;
    }
    current.push(taskIns);
    bytes += size;
  }
  if (current.length > 0) batches.push(current);
  return batches;
}

/**
 * Makes a first call, retrying only while no connection to the SuperLink could be established
 * (UNAVAILABLE), up to `connectTimeoutMs` since `started`. The final error says what failed.
 */
async function callWhileConnecting<T>(
  invoke: () => Promise<T>,
  ctx: {
    target: string;
    what: string;
    started: number;
    connectTimeoutMs: number;
    clientCertificate?: ClientCertificate;
  },
): Promise<T> {
  for (;;) {
    try {
      return await invoke();
    } catch (err) {
      // A certificate the CA does not vouch for will not start working: fail now, as exit 2.
      const refused = await clientCertificateRefusal(err, {
        target: ctx.target,
        peer: `the SuperLink Driver API at ${ctx.target}`,
        flags: "--ssl-certfile/--ssl-keyfile (or the clientCertificate option)",
        ...(ctx.clientCertificate !== undefined ? { clientCertificate: ctx.clientCertificate } : {}),
      });
      if (refused !== undefined) throw refused;
      const tlsError = tlsSetupError(err, `the SuperLink at ${ctx.target}`, "start this ServerApp with --insecure too");
      if (tlsError !== undefined) throw tlsError;
      const unavailable = isServiceError(err) && err.code === grpc.status.UNAVAILABLE;
      const elapsed = Date.now() - ctx.started;
      if (unavailable && elapsed + CONNECT_RETRY_MS < ctx.connectTimeoutMs) {
        await sleep(CONNECT_RETRY_MS);
        continue;
      }
      if (isServiceError(err) && err.code === grpc.status.UNIMPLEMENTED) throw notTheDriverApi(err, ctx);
      if (unavailable) {
        throw new ConnectionError(
          `Cannot reach the SuperLink Driver API at ${ctx.target} (gave up after ${Math.round(elapsed / 1000)} s): ` +
            withoutResolutionNote(err.details),
          { cause: err },
        );
      }
      throw withoutNote(fromServiceError(err, `${ctx.what} to the SuperLink Driver API at ${ctx.target}`));
    }
  }
}

/** Retries are spent; `cause` is the last failure (turned into a typed error by the caller). */
class GaveUp extends Error {
  constructor(cause: unknown) {
    super("retries spent", { cause });
  }
}

/**
 * Driver calls worth retrying: the SuperLink is unreachable or the connection broke
 * (UNAVAILABLE other than a TLS verification failure, a CANCELLED we did not ask for, ABORTED),
 * or a call without a long-poll deadline timed out. Everything else is final: refused, invalid,
 * not found, too large (RESOURCE_EXHAUSTED), the SuperLink's own failures (INTERNAL, UNKNOWN:
 * a broken database does not heal by asking again), and every non-gRPC error.
 */
function classifyDriverError(err: unknown, target: string): Classification {
  if (!isServiceError(err)) return { kind: "fatal", error: err };
  switch (err.code) {
    case grpc.status.UNAVAILABLE: {
      const tlsError = tlsSetupError(err, `the SuperLink at ${target}`, "start this ServerApp with --insecure too");
      return tlsError === undefined ? { kind: "retryable" } : { kind: "fatal", error: tlsError };
    }
    case grpc.status.CANCELLED:
    case grpc.status.ABORTED:
    case grpc.status.DEADLINE_EXCEEDED:
      return { kind: "retryable" };
    default:
      return { kind: "fatal", error: err };
  }
}

/** The typed error with grpc-js's empty resolution note dropped from its message. */
function withoutNote<E extends Error>(err: E): E {
  err.message = withoutResolutionNote(err.message);
  return err;
}

/**
 * UNIMPLEMENTED for the first Driver call: a gRPC server, but not the Driver API, most likely
 * the SuperLink's Fleet API (both look alike on the wire; 9092 vs 9091 is an easy slip).
 */
function notTheDriverApi(err: grpc.ServiceError, ctx: { target: string; what: string }): InvalidConfigError {
  const { host, port } = parseAddress(ctx.target);
  const guess = port === 9092 ? `${host.includes(":") ? `[${host}]` : host}:9091` : "port 9091 by default";
  return new InvalidConfigError(
    `The server at ${ctx.target} does not implement ${ctx.what} (UNIMPLEMENTED: ${withoutResolutionNote(err.details)}): ` +
      `is that the Fleet API? The Driver API is on ${guess} (the SuperLink's --driver-api-address); pass it with --superlink.`,
    { cause: err },
  );
}
