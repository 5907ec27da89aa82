/**
 * An in-memory Driver for testing the ServerApp side without a network: messages go straight
 * to fake SuperNodes (functions from Message to reply), replies come back through pull.
 * Mirrors the SuperLink rules the loop depends on: ids assigned on push, each reply delivered
 * once, NODE_UNAVAILABLE error replies for nodes that went offline.
 */
import { randomUUID } from "node:crypto";
import { ErrorCode, NODE_UNAVAILABLE_REASON } from "../../src/core/constants";
import {
  fitResToRecordSet,
  evaluateResToRecordSet,
  getParametersResToRecordSet,
  recordSetToEvaluateIns,
  recordSetToFitIns,
} from "../../src/core/records/compat";
import type { EvaluateIns, EvaluateRes, FitIns, FitRes, Parameters } from "../../src/core/records/legacy-types";
import { createReply } from "../../src/core/records/serde";
import type { Message, RecordSet } from "../../src/core/records/types";
import {
  type Driver,
  type RunInfo,
  type SendAndReceiveOptions,
  buildDriverMessage,
  checkOutgoingMessage,
} from "../../src/server/driver";

/** A fake SuperNode: returns the reply content (or an error), or "silent" to never answer. */
export type FakeNode = (msg: Message) => Promise<RecordSet | { code: number; reason: string } | "silent">;

export class FakeDriver implements Driver {
  readonly runId = -1234567890123456789n;
  readonly nodes = new Map<bigint, FakeNode>();
  /** Every message pushed, in order. */
  readonly sent: Message[] = [];
  private readonly replies = new Map<string, Message>();
  private readonly waiters = new Set<() => void>();
  getNodeIdsCalls = 0;
  failGetNodes: Error | undefined;
  closed = false;

  addNode(nodeId: bigint, node: FakeNode): void {
    this.nodes.set(nodeId, node);
  }

  /** The node goes offline: it is no longer listed and its pending messages get NODE_UNAVAILABLE. */
  killNode(nodeId: bigint): void {
    this.nodes.delete(nodeId);
    for (const msg of this.sent) {
      if (msg.metadata.dstNodeId === nodeId && !this.replies.has(msg.metadata.messageId)) {
        this.deliver(createReply(msg, { code: ErrorCode.NODE_UNAVAILABLE, reason: NODE_UNAVAILABLE_REASON }));
      }
    }
  }

  async run(): Promise<RunInfo> {
    return { runId: this.runId, fabId: "", fabVersion: "", overrideConfig: {} };
  }

  async getNodeIds(): Promise<bigint[]> {
    this.getNodeIdsCalls++;
    if (this.failGetNodes) throw this.failGetNodes;
    return [...this.nodes.keys()];
  }

  createMessage(content: RecordSet, messageType: string, dstNodeId: bigint, groupId: string, ttl?: number): Message {
    return buildDriverMessage(this.runId, content, messageType, dstNodeId, groupId, ttl);
  }

  async pushMessages(msgs: Message[]): Promise<string[]> {
    return msgs.map((m) => {
      checkOutgoingMessage(this.runId, m);
      const stored: Message = { ...m, metadata: { ...m.metadata, messageId: randomUUID() } };
      this.sent.push(stored);
      const node = this.nodes.get(m.metadata.dstNodeId);
      if (node === undefined) {
        this.deliver(createReply(stored, { code: ErrorCode.NODE_UNAVAILABLE, reason: NODE_UNAVAILABLE_REASON }));
      } else {
        void node(stored).then(
          (out) => {
            if (out === "silent" || this.replies.has(stored.metadata.messageId)) return;
            this.deliver(createReply(stored, out));
          },
          (err: unknown) =>
            this.deliver(createReply(stored, { code: ErrorCode.CLIENT_APP_RAISED_EXCEPTION, reason: String(err) })),
        );
      }
      return stored.metadata.messageId;
    });
  }

  async pullMessages(ids: string[]): Promise<Message[]> {
    const out: Message[] = [];
    for (const id of ids) {
      const reply = this.replies.get(id);
      if (reply !== undefined && !reply.metadata.messageId.startsWith("taken:")) {
        out.push(reply);
        this.replies.set(id, {
          ...reply,
          metadata: { ...reply.metadata, messageId: "taken:" + reply.metadata.messageId },
        });
      }
    }
    return out;
  }

  async sendAndReceive(msgs: Message[], opts: SendAndReceiveOptions = {}): Promise<Message[]> {
    const pending = new Set(await this.pushMessages(msgs));
    const deadline = opts.timeoutMs === undefined ? Infinity : Date.now() + opts.timeoutMs;
    const out: Message[] = [];
    for (;;) {
      const seen = this.deliveries;
      for (const m of await this.pullMessages([...pending])) {
        pending.delete(m.metadata.replyToMessage);
        out.push(m);
      }
      if (pending.size === 0 || Date.now() >= deadline) return out;
      if (this.deliveries === seen) await this.waitForReply(Math.min(deadline - Date.now(), 1000), opts.signal);
    }
  }

  close(): void {
    this.closed = true;
  }

  sentOfType(type: string): Message[] {
    return this.sent.filter((m) => m.metadata.messageType === type);
  }

  private deliveries = 0;

  private deliver(reply: Message): void {
    this.deliveries++;
    this.replies.set(reply.metadata.replyToMessage, {
      ...reply,
      metadata: { ...reply.metadata, messageId: randomUUID() },
    });
    for (const w of [...this.waiters]) w();
  }

  private waitForReply(ms: number, signal?: AbortSignal): Promise<void> {
    return new Promise<void>((resolve, reject) => {
      signal?.throwIfAborted();
      const done = (): void => {
        clearTimeout(timer);
        this.waiters.delete(done);
        signal?.removeEventListener("abort", onAbort);
        resolve();
      };
      const onAbort = (): void => {
        clearTimeout(timer);
        this.waiters.delete(done);
        reject(signal!.reason);
      };
      const timer = setTimeout(done, ms);
      this.waiters.add(done);
      signal?.addEventListener("abort", onAbort, { once: true });
    });
  }
}

export interface NumPyLikeClient {
  getParameters?: () => Parameters;
  fit?: (ins: FitIns) => FitRes | Promise<FitRes>;
  evaluate?: (ins: EvaluateIns) => EvaluateRes | Promise<EvaluateRes>;
}

/** A FakeNode speaking Flower's legacy RecordSet protocol, like a NumPyClient behind a ClientApp. */
export function legacyNode(client: NumPyLikeClient): FakeNode {
  return async (msg) => {
    const content = msg.content!;
    switch (msg.metadata.messageType) {
      case "get_parameters":
        if (!client.getParameters) throw new Error("get_parameters not implemented");
        return getParametersResToRecordSet({
          status: { code: 0, message: "Success" },
          parameters: client.getParameters(),
        });
      case "train":
        if (!client.fit) throw new Error("fit not implemented");
        return fitResToRecordSet(await client.fit(recordSetToFitIns(content)));
      case "evaluate":
        if (!client.evaluate) throw new Error("evaluate not implemented");
        return evaluateResToRecordSet(await client.evaluate(recordSetToEvaluateIns(content)));
      default:
        throw new Error(`unknown message type ${msg.metadata.messageType}`);
    }
  };
}
