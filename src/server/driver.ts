/**
 * The Driver: what a ServerApp uses to talk to SuperNodes through the SuperLink (Flower's
 * `flwr.server.Driver`). `GrpcDriver` (src/serverapp) implements it over the Driver API; tests
 * implement it in memory. Helpers here hold the rules every implementation shares (docs/protocol.md, "Driver").
 */
import { DEFAULT_TTL, ErrorCode } from "../core/constants";
import { MalformedMessageError, errorMessage } from "../core/errors";
import type { Logger } from "../core/logger";
import { messageFromTaskRes, messageToTaskIns } from "../core/records/serde";
import type { ConfigsScalar, Message, RecordSet } from "../core/records/types";
import type { TaskIns, TaskRes } from "../proto/flwr/proto/task";

/** The run a Driver works in (Flower's `Run`). */
export interface RunInfo {
  runId: bigint;
  fabId: string;
  fabVersion: string;
  overrideConfig: Record<string, ConfigsScalar>;
}

export interface SendAndReceiveOptions {
  /** Stop waiting after this long and return the replies received so far. Default: no limit. */
  timeoutMs?: number;
  /** Stop waiting when aborted; the returned promise rejects with the abort reason. */
  signal?: AbortSignal;
}

export interface Driver {
  readonly runId: bigint;
  /** The run's info (GetRun). */
  run(): Promise<RunInfo>;
  /** Ids of the SuperNodes currently online (GetNodes). */
  getNodeIds(): Promise<bigint[]>;
  /**
   * A message to `dstNodeId` in this run: message id and reply-to empty, source node 0,
   * `ttl` seconds (default 3600), `createdAt` = now.
   */
  createMessage(content: RecordSet, messageType: string, dstNodeId: bigint, groupId: string, ttl?: number): Message;
  /**
   * Sends messages made by createMessage (MalformedMessageError for any other) and returns
   * their ids, aligned with the input; "" marks a message the SuperLink did not store. The
   * records' array bytes are sent from where they are, not copied first: do not modify them
   * until the returned promise settles.
   */
  pushMessages(msgs: Message[]): Promise<string[]>;
  /** Replies available now for the given message ids (each is returned once). */
  pullMessages(ids: string[]): Promise<Message[]>;
  /**
   * pushMessages, then pulls until every stored message has a reply, the timeout passes, or
   * the signal aborts (rejects). Returns the replies received, in arrival order.
   */
  sendAndReceive(msgs: Message[], opts?: SendAndReceiveOptions): Promise<Message[]>;
  /** Releases the connection. Idempotent. */
  close(): void;
}

/** Current time as Unix seconds (float), the unit of Message `createdAt`. */
export function nowSeconds(): number {
  return Date.now() / 1000;
}

/** The message `Driver.createMessage` returns (docs/protocol.md, "Driver"). */
export function buildDriverMessage(
  runId: bigint,
  content: RecordSet,
  messageType: string,
  dstNodeId: bigint,
  groupId: string,
  ttl?: number,
): Message {
  return {
    metadata: {
      runId,
      messageId: "",
      srcNodeId: 0n,
      dstNodeId,
      replyToMessage: "",
      groupId,
      ttl: ttl === undefined ? DEFAULT_TTL : ttl,
      messageType,
      createdAt: nowSeconds(),
    },
    content,
  };
}

/**
 * Flower's push check: the message belongs to this run, comes from node 0, has no id and no
 * reply-to yet, and a positive TTL. Throws MalformedMessageError saying which rule failed.
 */
export function checkOutgoingMessage(runId: bigint, msg: Message): void {
  const m = msg.metadata;
  const problems: string[] = [];
  if (m.runId !== runId) problems.push(`run_id is ${m.runId}, expected ${runId}`);
  if (m.srcNodeId !== 0n) problems.push(`src_node_id is ${m.srcNodeId}, expected 0`);
  if (m.messageId !== "") problems.push("message_id must be empty (the SuperLink assigns it)");
  if (m.replyToMessage !== "") problems.push("reply_to_message must be empty");
  if (!(m.ttl > 0)) problems.push(`ttl must be > 0, got ${m.ttl}`);
  if (problems.length > 0) {
    throw new MalformedMessageError(`Invalid message to node ${m.dstNodeId}: ${problems.join("; ")}`);
  }
}

/**
 * A pulled TaskRes as the reply Message. One that cannot be read becomes an error reply
 * (code UNKNOWN) so the waiting round counts a failure instead of hanging, or is dropped when it
 * does not even say what it answers; either way it is logged with `event`.
 */
export function replyFromTaskRes(taskRes: TaskRes, logger: Logger, event: string): Message | undefined {
  try {
    return messageFromTaskRes(taskRes);
  } catch (err) {
    const replyTo = taskRes.task?.ancestry[0];
    const nodeId = taskRes.task?.producer?.nodeId ?? 0n;
    logger.warn(
      { event, taskId: taskRes.taskId, replyTo: replyTo ?? null, nodeId: nodeId.toString() },
      `Malformed reply ${taskRes.taskId || "(no id)"} from node ${nodeId}: ${errorMessage(err)}` +
        (replyTo ? "; treating it as an error reply" : "; dropped"),
    );
    if (!replyTo) return undefined;
    return {
      metadata: {
        runId: taskRes.runId,
        messageId: taskRes.taskId,
        srcNodeId: nodeId,
        dstNodeId: 0n,
        replyToMessage: replyTo,
        groupId: taskRes.groupId,
        ttl: taskRes.task?.ttl ?? 0,
        messageType: taskRes.task?.taskType ?? "",
        createdAt: taskRes.task?.createdAt ?? 0,
      },
      error: { code: ErrorCode.UNKNOWN, reason: `Malformed reply: ${errorMessage(err)}` },
    };
  }
}

/** The TaskIns a Driver pushes for `msgs`, each checked against the run's rules first. */
export function taskInsForPush(runId: bigint, msgs: Message[]): TaskIns[] {
  return msgs.map((m) => {
    checkOutgoingMessage(runId, m);
    return messageToTaskIns(m);
  });
}
