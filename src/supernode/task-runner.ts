/**
 * The SuperNode's task loop: pull a TaskIns, run the ClientApp, push the reply, one message at a
 * time (docs/protocol.md, "SuperNode" and "Messages and replies"). One Context per run (its state persists
 * across the run's messages), GetRun once per run, the `reconnect` control message (registering
 * again afterwards, which Flower 1.10 forgets), and no TaskIns run twice after its reply went out
 * (the SuperLink delivers at least once, docs/delivery.md).
 */
import * as grpc from "@grpc/grpc-js";
import { ClientApp, exceptionReason } from "../client/client-app";
import { ErrorCode, MessageType } from "../core/constants";
import { FlwrError, errorMessage } from "../core/errors";
import type { Logger } from "../core/logger";
import { createReply, messageFromTaskIns, messageToTaskRes, scalarMapToRecord } from "../core/records/serde";
import { type ConfigsScalar, type Context, type Message, type Metadata, RecordSet } from "../core/records/types";
import type { Node } from "../proto/flwr/proto/node";
import type { Run } from "../proto/flwr/proto/run";
import type { TaskIns } from "../proto/flwr/proto/task";
import { type RetryInvoker, abortableSleep } from "../transport/retry";
import { isServiceError } from "../transport/status";
import type { FleetTransport } from "./fleet-transport";
import type { Registration } from "./registration";
import { replyProblem } from "./reply-check";

/** flwr-ts: deadline of a PullTaskIns, so a silently dead connection cannot hang the node. */
const PULL_DEADLINE_MS = 60_000;
/** `Reason.RECONNECT` of Flower's DisconnectRes, sent in reply to a reconnect message. */
const REASON_RECONNECT = 1n;
/** Error reason Flower sends when the ClientApp could not be loaded. */
const LOAD_FAILED_REASON = "An exception was raised when attempting to load `ClientApp`";
/** How many answered TaskIns ids a SuperNode remembers (a redelivery comes within a lease). */
const ANSWERED_MEMORY = 1024;

/** Picks the ClientApp for a run (by its FAB id and version). */
export type AppSource = (run: { fabId: string; fabVersion: string }) => ClientApp;

export interface TaskRunnerOptions {
  connection: FleetTransport;
  registration: Registration;
  /** Retries a failing call within the node's give-up limits. */
  retry: RetryInvoker;
  appSource: AppSource;
  /** Wait after an empty pull that came back at once, in ms. */
  pollIntervalMs: number;
  /** Handed to the ClientApp as `context.nodeConfig`. */
  nodeConfig: Record<string, ConfigsScalar>;
  /** Aborted when the node stops taking work: cancels pulls and idle waits. */
  stopSignal: AbortSignal;
  /** Aborted when the grace time is over: cancels pushes and GetRun. */
  abortSignal: AbortSignal;
  /** Stops the node (a reconnect message with 0 seconds). */
  requestStop: () => void;
  logger: Logger;
}

/** What GetRun told us about a run. */
interface RunInfo {
  fabId: string;
  fabVersion: string;
  overrideConfig: Record<string, ConfigsScalar>;
}

export class TaskRunner {
  private readonly runs = new Map<bigint, RunInfo>();
  private readonly contexts = new Map<bigint, Context>();
  /** Ids of the TaskIns answered most recently (insertion order, at most ANSWERED_MEMORY). */
  private readonly answered = new Set<string>();
  private readonly logger: Logger;

  constructor(private readonly options: TaskRunnerOptions) {
    this.logger = options.logger;
  }

  /** A call, not a property: the signal changes across the awaits below. */
  private stopping(): boolean {
    return this.options.stopSignal.aborted;
  }

  /** After registering again, the runs' Contexts carry the new node id. */
  updateNodeId(nodeId: bigint): void {
    for (const context of this.contexts.values()) context.nodeId = nodeId;
  }

  /** Pulls and handles TaskIns until the node stops; rejects on a failure retrying cannot fix. */
  async run(): Promise<void> {
    const { connection, registration, retry, stopSignal: stop, pollIntervalMs } = this.options;
    while (!this.stopping()) {
      const startedAt = performance.now();
      let taskIns: TaskIns | undefined;
      let node: Node;
      try {
        [node, taskIns] = await registration.withRegistration("PullTaskIns", async (n) => {
          const response = await retry.invoke(
            "PullTaskIns",
            () =>
              connection.pullTaskIns(n, { signal: stop, deadlineMs: PULL_DEADLINE_MS, longPollMs: PULL_DEADLINE_MS }),
            { signal: stop },
          );
          return [n, response.taskInsList.at(0)] as const;
        });
      } catch (err) {
        if (this.stopping()) return;
        throw err;
      }
      const task = taskIns?.task;
      if (
        taskIns === undefined ||
        task === undefined ||
        task.recordset === undefined ||
        task.consumer?.nodeId !== node.nodeId
      ) {
        if (taskIns !== undefined) {
          this.logger.warn(
            { event: "supernode.task-ignored", taskId: taskIns.taskId },
            `Ignoring TaskIns ${taskIns.taskId}: ${task === undefined ? "no task" : task.recordset === undefined ? "no recordset" : `addressed to node ${String(task.consumer?.nodeId)}`}`,
          );
        }
        // A Python SuperLink answers an empty pull at once; ours holds it open for new work.
        if (performance.now() - startedAt < pollIntervalMs / 2) {
          try {
            await abortableSleep(pollIntervalMs, stop);
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
        this.options.requestStop();
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
      {
        event: "supernode.message-received",
        messageType: meta.messageType,
        messageId: meta.messageId,
        runId: meta.runId.toString(),
      },
      `Received: ${meta.messageType} message ${meta.messageId}`,
    );

    if (meta.messageType === MessageType.RECONNECT) return this.handleReconnect(message);

    const run = await this.runInfo(meta.runId);
    const context = this.contextFor(meta.runId, run);
    let reply: Message;
    let app: ClientApp | undefined;
    try {
      app = this.options.appSource(run);
      if (!ClientApp.isClientApp(app)) throw new TypeError("the app factory did not return a ClientApp");
    } catch (err) {
      this.logger.error(
        { event: "supernode.app-load-failed", err },
        `Loading the ClientApp failed: ${errorMessage(err)}`,
      );
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
    const { registration } = this.options;
    const raw = message.content?.configsRecords.get("config")?.["seconds"];
    const seconds = typeof raw === "bigint" || typeof raw === "number" ? Math.max(0, Number(raw)) : 0;
    const content = new RecordSet({ configsRecords: new Map([["config", { reason: REASON_RECONNECT }]]) });
    await this.sendReply(message.metadata, createReply(message, content));
    const node = registration.release();
    if (node !== undefined) await registration.deleteNode(node);
    if (seconds === 0) {
      this.logger.info({ event: "supernode.disconnect" }, "Disconnect and shut down");
      return "stop";
    }
    this.logger.info(
      { event: "supernode.reconnect", seconds },
      `Disconnect, then re-establish connection after ${seconds} second(s)`,
    );
    try {
      await abortableSleep(seconds * 1000, this.options.stopSignal);
    } catch {
      return "stop";
    }
    const fresh = await registration.createNode();
    registration.set(fresh);
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
    const { connection, registration, retry, abortSignal: signal } = this.options;
    let info: RunInfo = { fabId: "", fabVersion: "", overrideConfig: {} };
    try {
      const run = await registration.withRegistration("GetRun", () =>
        retry.invoke("GetRun", () => connection.getRun(runId, { signal }), { signal }),
      );
      if (run !== undefined)
        info = { fabId: run.fabId, fabVersion: run.fabVersion, overrideConfig: this.overrideConfigOf(run) };
    } catch (err) {
      // A Python SuperLink with authentication refuses GetRun for a run it does not know.
      if (!FlwrError.isFlwrError(err) || err.code !== "FLWR_AUTHENTICATION_FAILED") throw err;
      this.logger.warn(
        { event: "supernode.get-run-refused", runId: runId.toString() },
        `GetRun for run ${runId} was refused; using empty run details`,
      );
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
      const { registration } = this.options;
      context = {
        nodeId: registration.node?.nodeId ?? registration.lastNodeId,
        nodeConfig: { ...this.options.nodeConfig },
        state: new RecordSet(),
        runConfig: { ...run.overrideConfig },
      };
      this.contexts.set(runId, context);
    }
    return context;
  }

  /** Checks the reply as Flower does (reply-check.ts), then pushes it. */
  private async sendReply(incoming: Metadata, reply: Message): Promise<void> {
    const problem = replyProblem(incoming, reply);
    if (problem !== undefined) {
      if (problem.kind === "clock")
        this.logger.warn({ event: "supernode.reply-dropped", ...problem.fields }, problem.text);
      else this.logger.error({ event: "supernode.reply-dropped", ...problem.fields }, problem.text);
      return;
    }
    const taskRes = messageToTaskRes(reply);
    const { connection, registration, retry, abortSignal: abort } = this.options;
    let stored: boolean;
    try {
      const response = await registration.withRegistration("PushTaskRes", (node) => {
        // After registering again, the result goes out under the new node id.
        if (taskRes.task?.producer !== undefined) taskRes.task.producer = { nodeId: node.nodeId, anonymous: false };
        return retry.invoke("PushTaskRes", () => connection.pushTaskRes(taskRes, { signal: abort }), { signal: abort });
      });
      stored = !response.results.has("None");
    } catch (err) {
      if (abort.aborted) {
        this.logger.warn(
          { event: "supernode.reply-abandoned" },
          "Shutting down: the reply could not be sent within the grace time",
        );
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
        this.logger.info(
          { event: "supernode.reply-already-stored", replyTo: reply.metadata.replyToMessage },
          "The SuperLink already had this reply",
        );
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
      {
        event: "supernode.reply-sent",
        messageType: reply.metadata.messageType,
        replyTo: reply.metadata.replyToMessage,
        error: reply.error !== undefined,
      },
      "Sent reply",
    );
  }

  /** Records a TaskIns as answered, forgetting the oldest beyond ANSWERED_MEMORY. */
  private remember(taskInsId: string): void {
    this.answered.add(taskInsId.toLowerCase());
    if (this.answered.size <= ANSWERED_MEMORY) return;
    const oldest = this.answered.values().next();
    if (oldest.done !== true) this.answered.delete(oldest.value);
  }
}

/** ALREADY_EXISTS from PushTaskRes (directly or as the cause of a typed error). */
function isAlreadyStored(err: unknown): boolean {
  const cause = FlwrError.isFlwrError(err) ? (err as Error).cause : err;
  return isServiceError(cause) && cause.code === grpc.status.ALREADY_EXISTS;
}
