/**
 * The checks a SuperNode applies to a ClientApp's reply before pushing it: Flower 1.10's
 * `validate_out_message` (the reply must answer the message it replies to) plus the TTL rule the
 * SuperLink's validator applies (docs/protocol.md, "Messages and replies"). Pure functions, no I/O.
 */
import type { Message, Metadata } from "../core/records/types";

export interface ReplyProblem {
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
      fields: {
        replyCreatedAt: out.createdAt,
        messageCreatedAt: incoming.createdAt,
        ttl: out.ttl,
        messageTtl: incoming.ttl,
      },
    };
  }
  return undefined;
}
